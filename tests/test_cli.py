"""The `gateway` command as an operator uses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.db.migrate import head_revision
from gateway.demo.registry import DEFAULT_TERMINALS_PER_INSTITUTION, DEMO_INSTITUTIONS

ROOT = Path(__file__).resolve().parent.parent

COMMANDS = [[], ["serve"], ["db"], ["db", "upgrade"], ["db", "current"], ["registry"], ["registry", "import"],
            ["registry", "demo"]]


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(w) or "gateway" for w in COMMANDS])
def test_help_everywhere(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*words, "--help"])
    assert exited.value.code == 0
    assert "usage: gateway" in capsys.readouterr().out


@pytest.mark.parametrize("words", [["db", "upgrade"], ["db", "current"], ["registry", "demo"], ["serve"]])
def test_every_database_command_takes_db(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([*words, "--help"])
    assert "--db URL" in capsys.readouterr().out


def test_the_console_script_is_installed() -> None:
    result = subprocess.run([Path(sys.executable).parent / "gateway", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("gateway ")


def test_upgrade_demo_and_import_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["db", "upgrade", "--db", db]) == 0
    assert main(["registry", "demo", "--db", db]) == 0
    assert f"terminals: {len(DEMO_INSTITUTIONS) * DEFAULT_TERMINALS_PER_INSTITUTION} new" in capsys.readouterr().out
    bad = tmp_path / "terminals.csv"
    bad.write_text("terminal_id,institution_code,credential\nT-1,H33020300001,short\nT-2,NOPE,long-enough\n")
    assert main(["registry", "import", str(bad), "--db", db]) == 1
    err = capsys.readouterr().err
    assert "line 2: credential must be" in err and "line 3: institution_code 'NOPE'" in err
    assert "nothing was imported" in err


def test_registry_commands_refuse_an_unmigrated_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "demo", "--db", f"sqlite:///{tmp_path / 'new.db'}"]) == 1
    assert "gateway db upgrade" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["db", "upgrade"], ["registry", "demo"], ["ledger", "check"], ["agency", "report-lost", "N00000001"],
    ["reconcile", "--date", "2026-11-24", "--statement", "s.csv", "--out", "out"], ["day", "close", "--date",
                                                                                      "2026-11-23"],
    ["payout", "reconcile", "--batch", "B1", "--return", "r.csv"], ["simulate", "--verify", "/dev/null"],
], ids=lambda command: " ".join(command[:2]))
def test_a_bad_database_url_is_a_usage_error(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--db", "mysql://x@y/z"]) == 2
    assert "unsupported database" in capsys.readouterr().err


def test_a_bad_config_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[server]\nidle_timeout_s = 0\n")
    assert main(["db", "current", "--config", str(path)]) == 2
    assert "server.idle_timeout_s must be at least 1" in capsys.readouterr().err


@pytest.mark.postgres
def test_the_same_commands_work_on_postgresql(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--db", postgres_url]) == 0
    assert main(["registry", "demo", "--db", postgres_url]) == 0
    assert main(["db", "current", "--db", postgres_url]) == 0
    out = capsys.readouterr().out
    assert f"current: {head_revision()}; newest: {head_revision()}" in out

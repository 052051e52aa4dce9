"""The `gateway` command as an operator uses it."""

from __future__ import annotations

import os
import socket
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
    assert main(["registry", "import", str(bad), "--db", db]) == 2
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


# What goes wrong around a command is one line saying what, and the exit status of the README's convention.

def gateway_process(*args: str, **run: object) -> subprocess.CompletedProcess[str]:
    """The installed `gateway` command in a process of its own."""
    return subprocess.run([Path(sys.executable).parent / "gateway", *args], text=True, timeout=120,
                          **run)  # type: ignore[call-overload]


def only_line(text: str) -> str:
    """The one line of `text`; a traceback or a second message fails the test."""
    assert "Traceback" not in text and text.count("\n") == 1, text
    return text.strip()


@pytest.fixture
def migrated_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    assert main(["db", "upgrade", "--db", url]) == 0
    return url


UNWRITABLE_OUTPUTS = [
    ["ledger", "export", "--date", "2026-11-24", "--output", "{missing}/day.csv"],
    ["ledger", "export", "--date", "2026-11-24", "--format", "statement", "--output", "{missing}/day.csv"],
    ["reconcile", "--date", "2026-11-24", "--statement", "{statement}", "--out", "{file}"],
]


@pytest.mark.parametrize("words", UNWRITABLE_OUTPUTS, ids=["export csv", "export statement", "reconcile --out"])
def test_an_output_that_cannot_be_written_is_one_line_and_status_2(
    words: list[str], migrated_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    statement, file = tmp_path / "statement.csv", tmp_path / "a-file"
    assert main(["ledger", "export", "--date", "2026-11-24", "--format", "statement", "--output", str(statement),
                 "--db", migrated_url]) == 0
    file.write_text("not a directory\n")
    capsys.readouterr()
    command = [w.format(missing=tmp_path / "missing", statement=statement, file=file) for w in words]
    assert main([*command, "--db", migrated_url]) == 2
    line = only_line(capsys.readouterr().err)
    assert line.startswith("gateway: cannot write ") and str(tmp_path) in line
    assert not (tmp_path / "missing").exists()


CLOSED_OUTPUT_COMMANDS = [
    ["db", "current", "--db", "{url}"],
    ["ledger", "export", "--date", "2026-11-24", "--db", "{url}"],
    ["registry", "demo", "--persons", "5", "--db", "{url}"],
    ["card", "read", "--reader", "virtual:N00000001", "--json"],
]


@pytest.mark.parametrize("words", CLOSED_OUTPUT_COMMANDS, ids=lambda words: " ".join(words[:2]))
def test_a_reader_that_stops_reading_is_one_line_and_status_2(words: list[str], migrated_url: str) -> None:
    # `gateway ... | head`: the reading end of standard output is gone before the command writes.
    reading, writing = os.pipe()
    os.close(reading)
    try:
        ran = gateway_process(*(w.format(url=migrated_url) for w in words), stdout=writing, stderr=subprocess.PIPE)
    finally:
        os.close(writing)
    assert ran.returncode == 2
    assert only_line(ran.stderr) == "gateway: standard output was closed before everything was written"


@pytest.mark.parametrize("words", CLOSED_OUTPUT_COMMANDS, ids=lambda words: " ".join(words[:2]))
def test_standard_output_on_a_full_disk_is_one_line_and_status_2(words: list[str], migrated_url: str) -> None:
    with open("/dev/full", "w") as full:
        ran = gateway_process(*(w.format(url=migrated_url) for w in words), stdout=full, stderr=subprocess.PIPE)
    assert ran.returncode == 2
    assert only_line(ran.stderr) == "gateway: input/output error: No space left on device"


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("processes", ["1", "2"])
def test_simulate_where_nothing_listens_is_one_line_and_status_1(processes: str) -> None:
    port = unused_port()
    ran = gateway_process("simulate", "--target", f"127.0.0.1:{port}", "--terminals", "2", "--requests", "5",
                          "--processes", processes, capture_output=True)
    assert ran.returncode == 1 and ran.stdout == ""
    assert only_line(ran.stderr) == f"gateway: cannot connect to 127.0.0.1:{port}: Connection refused"


def test_simulate_refuses_an_outcomes_file_it_cannot_write_before_it_runs(tmp_path: Path) -> None:
    with socket.socket() as listening:  # something listens, so that only the outcomes file is wrong
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        ran = gateway_process("simulate", "--target", f"127.0.0.1:{port}", "--terminals", "1", "--requests", "1",
                              "--outcomes", str(tmp_path / "missing" / "outcomes.jsonl"), capture_output=True)
    assert ran.returncode == 2 and ran.stdout == ""
    assert only_line(ran.stderr).startswith(f"gateway: cannot write {tmp_path / 'missing'}")


MISSING_DATABASE_COMMANDS = [
    ["db", "current"], ["serve", "--listen", "tcp:0:interface=127.0.0.1"], ["ledger", "check"],
    ["registry", "demo"], ["agency", "report-lost", "N00000001"], ["day", "close", "--date", "2026-11-23"],
]


@pytest.mark.parametrize("words", MISSING_DATABASE_COMMANDS, ids=lambda words: " ".join(words[:2]))
def test_only_db_upgrade_creates_a_database(words: list[str], tmp_path: Path) -> None:
    mistyped = tmp_path / "varr" / "gateway.db"
    url = f"sqlite:///{mistyped}"
    ran = gateway_process(*words, "--db", url, capture_output=True)
    assert ran.returncode == 1
    assert only_line(ran.stderr).startswith(f"gateway: no database at {mistyped}: check --db")
    assert not mistyped.parent.exists()
    assert main(["db", "upgrade", "--db", url]) == 0 and mistyped.is_file()


def test_a_database_server_that_does_not_answer_is_one_line_and_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql+psycopg://gateway@127.0.0.1:{unused_port()}/gateway"
    assert main(["ledger", "check", "--db", url]) == 1
    assert only_line(capsys.readouterr().err).startswith(f"gateway: database error on {url}: OperationalError: ")


def test_serve_says_a_bad_database_url_in_one_line() -> None:
    ran = gateway_process("serve", "--db", "mysql://x@y/z", "--listen", "tcp:0:interface=127.0.0.1",
                          capture_output=True)
    assert ran.returncode == 2
    assert only_line(ran.stderr).startswith("gateway: unsupported database 'mysql'")


# One exit status for one situation, whichever command meets it (README, "Operating it"): 2 for a malformed
# request or a file that cannot be read, whether it is missing or has bad rows.

FILE_COMMANDS = {
    "registry import": ["registry", "import", "{file}"],
    "payout run": ["payout", "run", "--kind", "subsidy", "--batch", "B1", "--amounts", "{file}", "--out",
                   "{tmp}/bank.csv"],
    "payout reconcile": ["payout", "reconcile", "--batch", "B1", "--return", "{file}"],
    "reconcile": ["reconcile", "--date", "2026-11-24", "--statement", "{file}", "--out", "{tmp}/recon"],
    "simulate --verify": ["simulate", "--verify", "{file}"],
}
BAD_ROWS = {
    "registry import": "terminal_id,institution_code,credential\nT-1,H33020300001,short\n",
    "payout run": "social_security_number,amount\n330203198001010018,x\n",
    "payout reconcile": "line,card_number,amount,status\n1,N00000001,1.00,lost\n",
    "reconcile": ("setl_id,medins_setl_id,fixmedins_code,psn_no,setl_time,medfee_sumamt,fund_pay_sumamt,hifp_pay,"
                  "acct_pay_current,acct_pay_prior,psn_cash_pay,refd_setl_flag\nx,y,z\n"),
    "simulate --verify": "not json\n",
}


@pytest.mark.parametrize("command", FILE_COMMANDS)
@pytest.mark.parametrize("problem", ["missing", "bad rows"])
def test_an_input_file_that_cannot_be_read_is_status_2_in_every_command(
    command: str, problem: str, migrated_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "input.csv"
    if problem == "bad rows":
        file.write_text(BAD_ROWS[command], encoding="utf-8")
    words = [w.format(file=file, tmp=tmp_path) for w in FILE_COMMANDS[command]]
    assert main([*words, "--db", migrated_url]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(file) in err


def test_a_malformed_batch_id_is_status_2(migrated_url: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    amounts = tmp_path / "amounts.csv"
    amounts.write_text("social_security_number,amount\n330203198001010018,1.00\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(["payout", "run", "--kind", "subsidy", "--batch", "no spaces", "--amounts", str(amounts), "--out",
              str(tmp_path / "bank.csv"), "--db", migrated_url])
    assert exited.value.code == 2
    assert "argument --batch: batch id 'no spaces' must be 1 to 40 letters" in capsys.readouterr().err


def test_serve_with_a_policy_directory_it_cannot_read_is_status_2(migrated_url: str, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[ledger]\npolicy_dir = "{tmp_path / "no-policies"}"\n', encoding="utf-8")
    ran = gateway_process("serve", "--config", str(config), "--db", migrated_url, "--listen",
                          "tcp:0:interface=127.0.0.1", capture_output=True)
    assert ran.returncode == 2
    assert str(tmp_path / "no-policies") in only_line(ran.stderr)


DATE_OPTIONS = [
    ["ledger", "export", "--date", "{date}"],
    ["reconcile", "--date", "{date}", "--statement", "s.csv", "--out", "out"],
    ["day", "close", "--date", "{date}"],
    ["day", "list", "--from", "{date}"],
    ["day", "list", "--to", "{date}"],
    ["payout", "run", "--kind", "subsidy", "--batch", "B1", "--amounts", "a.csv", "--out", "b.csv", "--date",
     "{date}"],
    ["payout", "reconcile", "--batch", "B1", "--return", "r.csv", "--date", "{date}"],
    ["agency", "replace-card", "N00000001", "--new-card", "N00000002", "--issue-date", "{date}", "--expiry-date",
     "2036-11-25"],
    ["agency", "register-filing", "330203198001010018", "--kind", "residence", "--region", "330100", "--from",
     "2026-01-01", "--to", "{date}"],
]
BAD_DATES = {
    "2026-13-01": "'2026-13-01' is not a calendar date (YYYY-MM-DD or YYYYMMDD): month must be in 1..12",
    "2026-02-30": "'2026-02-30' is not a calendar date (YYYY-MM-DD or YYYYMMDD): day is out of range for month",
    "24.11.2026": "'24.11.2026' is not a calendar date (YYYY-MM-DD or YYYYMMDD)",
}


@pytest.mark.parametrize("words", DATE_OPTIONS, ids=lambda words: " ".join(words[:3]))
@pytest.mark.parametrize("bad", BAD_DATES)
def test_every_command_says_a_bad_date_the_same_way(words: list[str], bad: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([w.format(date=bad) for w in words])
    assert exited.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    option = words[words.index("{date}") - 1]
    assert last.endswith(f": error: argument {option}: {BAD_DATES[bad]}")

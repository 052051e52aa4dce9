"""The TOML configuration: every key has a default, every bad value a clear error."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from gateway.config import ConfigError, GatewayConfig, config_from_mapping, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_no_file_means_every_default() -> None:
    assert load_config(None) == GatewayConfig()


def test_the_example_file_lists_every_key_with_its_default() -> None:
    example = load_config(ROOT / "gateway.example.toml")
    assert example == GatewayConfig()
    text = (ROOT / "gateway.example.toml").read_text()
    docs = (ROOT / "docs/configuration.md").read_text()
    for section in (f.name for f in fields(GatewayConfig)):
        for field in fields(getattr(GatewayConfig(), section)):
            assert (f"\n{field.name} =" in text or f"[{section}.{field.name}]" in text), f"{section}.{field.name}"
            assert f"{section}.{field.name}" in docs, f"{section}.{field.name} is not documented"


def test_values_from_a_file_override_defaults(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[server]\nlisten = ["tcp:9501", "tcp:9502"]\nidle_timeout_s = 30\n'
                    '[database]\nurl = "postgresql+psycopg://gw@127.0.0.1/gw"\n[log]\nformat = "json"\n')
    config = load_config(path)
    assert config.server.listen == ("tcp:9501", "tcp:9502")
    assert config.server.idle_timeout_s == 30.0
    assert config.server.max_frame_bytes == 65536
    assert config.database.url.startswith("postgresql")
    assert config.log.format == "json"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"sever": {}}, "unknown section [sever]"),
        ({"server": {"max_frame": 1}}, "unknown key server.max_frame"),
        ({"server": {"max_frame_bytes": "big"}}, "server.max_frame_bytes must be a whole number"),
        ({"server": {"max_frame_bytes": 0}}, "server.max_frame_bytes must be greater than 0"),
        ({"server": {"max_frame_bytes": 1 << 30}}, "must be at most"),
        ({"server": {"idle_timeout_s": 0.5}}, "server.idle_timeout_s must be at least 1"),
        ({"server": {"max_in_flight_per_connection": True}}, "must be a whole number"),
        ({"server": {"listen": []}}, "server.listen must be a string or a non-empty list"),
        ({"database": {"sqlite_synchronous": "OFF"}}, "database.sqlite_synchronous must be one of"),
        ({"log": {"format": "xml"}}, "log.format must be one of"),
        ({"log": "json"}, "[log] must be a table"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        config_from_mapping(raw, source="gw.toml")
    assert message in str(refused.value)


def test_unreadable_and_invalid_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)

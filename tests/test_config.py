"""The TOML configuration: every key has a default, every bad value a clear error."""

from __future__ import annotations

import inspect
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, GatewayConfig, config_from_mapping, load_config
from gateway.db.engine import make_engine
from gateway.demo.card import card_from_population
from gateway.demo.population import demo_population
from gateway.ledger.writer import WriterLimits
from gateway.protocol.session import SessionLimits
from gateway.reader.pcsc import PcscReader

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


def _documented(cell: str) -> Any:
    """A default as docs/configuration.md writes it: a TOML value in backticks, a bare URL, or "empty table"."""
    if cell == "empty table":
        return ()
    inner = cell.strip("`")
    try:
        value = tomllib.loads(f"value = {inner}")["value"]
    except tomllib.TOMLDecodeError:
        return inner
    return tuple(value) if isinstance(value, list) else value


def test_the_documented_defaults_are_the_defaults() -> None:
    docs = (ROOT / "docs/configuration.md").read_text()
    documented = {key: _documented(cell.strip()) for key, cell in
                  re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \| ([^|]+) \|", docs, re.MULTILINE)}
    defaults = {f"{section.name}.{key.name}": getattr(getattr(GatewayConfig(), section.name), key.name)
                for section in fields(GatewayConfig) for key in fields(getattr(GatewayConfig(), section.name))}
    assert documented == defaults


def test_the_protocols_table_of_limits_gives_the_configured_defaults() -> None:
    # docs/protocol.md §7, which terminal vendors build from: "| limit | default | `section.key` ... |".
    protocol = (ROOT / "docs/protocol.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| [^|]+ \| ([0-9][0-9,.]*)[^|]* \| `([a-z_]+)\.([a-z_]+)`", protocol, re.MULTILINE)
    assert len(rows) >= 8
    for number, section, key in rows:
        assert float(number.replace(",", "")) == getattr(getattr(GatewayConfig(), section), key), f"{section}.{key}"


def _default(function: Any, parameter: str) -> Any:
    return inspect.signature(function).parameters[parameter].default


def test_with_no_file_the_limit_objects_keep_their_own_defaults() -> None:
    # Each default is defined once, beside the code that enforces it; the configuration takes it from there.
    config = GatewayConfig()
    assert config.server.session_limits() == SessionLimits()
    assert config.ledger.writer_limits() == WriterLimits()
    assert (config.reader.pcsc_timeout_s, config.reader.pcsc_close_timeout_s) == (
        _default(PcscReader, "transmit_timeout_s"), _default(PcscReader, "close_timeout_s"))
    for population in (demo_population, card_from_population):
        assert (config.reader.virtual_persons, config.reader.virtual_seed) == (
            _default(population, "persons"), _default(population, "seed")), population.__name__
    assert (_default(make_engine, "busy_timeout_ms"), _default(make_engine, "sqlite_synchronous")) == (
        config.database.busy_timeout_ms, config.database.sqlite_synchronous)


@pytest.mark.parametrize(
    ("raw", "built"),
    [
        ({"server": {"max_frame_bytes": 4096, "max_in_flight_per_connection": 2, "idle_timeout_s": 30}},
         lambda c: c.server.session_limits() == SessionLimits(max_frame_bytes=4096, max_in_flight=2,
                                                              idle_timeout_s=30.0)),
        ({"ledger": {"max_batch": 7, "max_queue": 70, "retry_attempts": 1, "known_accounts": 9}},
         lambda c: c.ledger.writer_limits() == WriterLimits(max_batch=7, max_queue=70, retry_attempts=1,
                                                            known_accounts=9)),
    ],
)
def test_the_file_feeds_the_limit_objects(raw: dict[str, Any], built: Any) -> None:
    assert built(config_from_mapping(raw))


def test_the_database_defaults_are_the_engines(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'gw.db'}")
    with engine.connect() as conn:
        busy_timeout_ms = conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
        synchronous = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
    engine.dispose()
    assert busy_timeout_ms == GatewayConfig().database.busy_timeout_ms
    assert {2: "FULL", 3: "EXTRA"}[synchronous] == GatewayConfig().database.sqlite_synchronous


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
        ({"server": {"listen": "ssl:9501:privateKey=k.pem"}}, "give TLS listeners as plain endpoints in tls.listen"),
        ({"tls": {"listen": ["SSL:9543"]}}, "tls.listen: 'SSL:9543'"),
        ({"server": {"allow_plaintext_on_network": "yes"}}, "server.allow_plaintext_on_network must be true or false"),
        ({"database": {"sqlite_synchronous": "OFF"}}, "database.sqlite_synchronous must be one of"),
        ({"log": {"format": "xml"}}, "log.format must be one of"),
        ({"log": "json"}, "[log] must be a table"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        config_from_mapping(raw, source="gw.toml")
    assert message in str(refused.value)


def test_a_gateway_may_serve_tls_alone() -> None:
    config = config_from_mapping({"server": {"listen": []}, "tls": {"listen": ["tcp:9543:interface=0.0.0.0"]}})
    assert (config.server.listen, config.tls.listen) == ((), ("tcp:9543:interface=0.0.0.0",))


def test_unreadable_and_invalid_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)

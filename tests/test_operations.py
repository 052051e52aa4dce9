"""What docs/operations/ ships is right: the Prometheus configuration and alert rules pass promtool (and the rules'
unit tests pass), and the dashboard, the alerts and docs/operations.md name only metrics the gateway exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.ops.metrics import GatewayMetrics

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "docs/operations"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is missing: Debian's `prometheus` package (`make setup` installs it as root)")
# The samples each type of family writes.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "info": ("_info",)}
METRIC_NAME = re.compile(r"\b(?:gateway|process|python)_[a-z0-9_]+\b")


def exported_samples() -> set[str]:
    """Every sample name the gateway's /metrics may hold."""
    return {family.name + suffix for family in GatewayMetrics().registry.collect()
            for suffix in SUFFIXES.get(family.type, ("",))}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((OPERATIONS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query", "definition") and isinstance(value, str) and "_" in value:
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    return found


def alert_expressions() -> list[str]:
    return re.findall(r"^\s+expr: (.+)$", (OPERATIONS / "alerts.yml").read_text(encoding="utf-8"), re.MULTILINE)


def test_the_exported_samples_are_the_ones_a_scrape_shows() -> None:
    # The list the checks below compare against is what prometheus_client writes, not a list of ours.
    samples = exported_samples()
    assert {"gateway_requests_total", "gateway_request_duration_seconds_bucket", "gateway_connections",
            "gateway_policy_remaining_seconds", "process_cpu_seconds_total", "python_info"} <= samples
    assert "gateway_requests" not in samples


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_expression_names_only_metrics_the_gateway_exports(source: str) -> None:
    expressions = dashboard_expressions() if source == "dashboard" else alert_expressions()
    assert len(expressions) >= (20 if source == "dashboard" else 8)
    exported = exported_samples() | {"up"}
    for expression in expressions:
        named = set(METRIC_NAME.findall(expression)) | ({"up"} if re.search(r"\bup\{", expression) else set())
        assert named, f"no metric in {expression!r}"
        assert named <= exported, (expression, named - exported)


def test_the_dashboard_shows_every_gateway_metric() -> None:
    shown = {name for expression in dashboard_expressions() for name in METRIC_NAME.findall(expression)}
    families = {name.removesuffix(suffix) for name in shown for suffix in ("_total", "_bucket", "_sum", "_count")
                if name.endswith(suffix)} | shown
    missing = {family.name for family in GatewayMetrics().registry.collect()
               if family.name.startswith("gateway_") and family.name not in families}
    assert missing == set()


def test_the_operations_document_describes_exactly_the_metrics_exported() -> None:
    text = (ROOT / "docs/operations.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(gateway_[a-z0-9_]+)` \|", text, re.MULTILINE))
    exported = {family.name + SUFFIXES[family.type][0] if family.type == "counter" else family.name
                for family in GatewayMetrics().registry.collect() if family.name.startswith("gateway_")}
    assert documented == exported
    alerts = set(re.findall(r"^\| `(Gateway[A-Za-z]+)` \|", text, re.MULTILINE))
    assert alerts == set(re.findall(r"^\s+- alert: (\w+)$", (OPERATIONS / "alerts.yml").read_text(), re.MULTILINE))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=OPERATIONS, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_accepts_the_alert_rules_and_the_configuration() -> None:
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0 and "SUCCESS: 8 rules found" in rules.stdout, rules.stdout + rules.stderr
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


@needs_promtool
def test_the_alert_rules_pass_their_unit_tests() -> None:
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


@needs_promtool
def test_the_alert_rules_unit_tests_can_fail(tmp_path: Path) -> None:
    """A rule made blind (a threshold no series reaches) fails its unit test: the tests test something."""
    rules = (OPERATIONS / "alerts.yml").read_text(encoding="utf-8")
    (tmp_path / "alerts.yml").write_text(rules.replace("gateway_ledger_queue_depth > 10000",
                                                       "gateway_ledger_queue_depth > 1e9"), encoding="utf-8")
    shutil.copy(OPERATIONS / "alerts.test.yml", tmp_path)
    assert PROMTOOL is not None
    tested = subprocess.run([PROMTOOL, "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert tested.returncode != 0 and "GatewayLedgerQueueFilling" in tested.stdout + tested.stderr

"""A real Prometheus (Debian's `prometheus`) scrapes a test gateway with docs/operations/prometheus.yml and its alert
rules; the counters read back through its HTTP API are the traffic the test sent, and every expression of the
dashboard and the alerts is a query it accepts."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.protocol.messages import pb
from tests.test_cli import unused_port
from tests.test_end_to_end import RunningGateway
from tests.test_operations import OPERATIONS, alert_expressions, dashboard_expressions
from tests.wire import request

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus is missing: Debian's `prometheus` package (`make setup` installs it as root)")
SHIPPED_TARGET = "127.0.0.1:9501"
HEARTBEATS = 40
# Grafana's own variables, as the dashboard's panels would get them.
GRAFANA = {"$__rate_interval": "1m", "$job": "gateway", "$instance": ".*"}


class Prometheus:
    def __init__(self, tmp: Path, target: str) -> None:
        shipped = (OPERATIONS / "prometheus.yml").read_text(encoding="utf-8")
        assert SHIPPED_TARGET in shipped and "scrape_interval: 15s" in shipped and "- alerts.yml" in shipped
        config = tmp / "prometheus.yml"
        config.write_text(shipped.replace(SHIPPED_TARGET, target).replace("15s", "1s")
                          .replace("- alerts.yml", f"- {OPERATIONS / 'alerts.yml'}"), encoding="utf-8")
        self.port = unused_port()
        assert PROMETHEUS is not None
        self.log = (tmp / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.log_path = tmp / "prometheus.log"
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("prometheus exited:\n" + self.log_path.read_text())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus was not ready within 60 s:\n" + self.log_path.read_text())

    def api(self, path: str, **parameters: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(parameters)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as refused:
            body = json.loads(refused.read())
        assert body["status"] == "success", (parameters, body)
        return body["data"]

    def value(self, query: str) -> float | None:
        result = self.api("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, query: str, expected: float, timeout_s: float = 30) -> float | None:
        deadline = time.monotonic() + timeout_s
        found = self.value(query)
        while found != expected and time.monotonic() < deadline:
            time.sleep(0.3)
            found = self.value(query)
        return found

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Prometheus]]:
    gateway = RunningGateway(tmp_path_factory.mktemp("scraped"))
    prometheus = Prometheus(tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{gateway.metrics_port}")
    try:
        yield gateway, prometheus
    finally:
        prometheus.stop()
        gateway.stop()


def test_prometheus_reads_back_the_heartbeats_the_test_sent(scraped: tuple[RunningGateway, Prometheus]) -> None:
    gateway, prometheus = scraped
    assert prometheus.wait_for('up{job="gateway"}', 1) == 1, "Prometheus never scraped the gateway"
    client = gateway.signed_in_client()
    for n in range(HEARTBEATS):
        assert client.call(request("heartbeat", f"beat-{n}")).status == pb.STATUS_CODE_OK
    query = 'gateway_requests_total{job="gateway", message="heartbeat", status="STATUS_CODE_OK"}'
    assert prometheus.wait_for(query, HEARTBEATS) == HEARTBEATS
    assert prometheus.wait_for('gateway_connections{state="signed_in"}', 1) == 1
    client.close()
    signed_in = prometheus.value('gateway_requests_total{message="sign_in", status="STATUS_CODE_OK"}')
    assert signed_in is not None and signed_in >= 1
    assert (prometheus.value('gateway_request_duration_seconds_count{message="heartbeat"}') or 0) >= HEARTBEATS


def test_prometheus_loads_the_alert_rules_and_evaluates_them(scraped: tuple[RunningGateway, Prometheus]) -> None:
    _, prometheus = scraped
    deadline = time.monotonic() + 30
    rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
    while {rule["health"] for rule in rules} != {"ok"} and time.monotonic() < deadline:  # "unknown" until evaluated
        time.sleep(0.5)
        rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
    assert len(rules) == 8
    assert {rule["health"] for rule in rules} == {"ok"}, rules
    firing = {rule["name"] for rule in rules if rule["state"] != "inactive"}
    assert "GatewayDown" not in firing and "GatewayLedgerUnavailable" not in firing


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_dashboard_and_alert_expression_is_a_query_prometheus_accepts(
    scraped: tuple[RunningGateway, Prometheus], source: str
) -> None:
    _, prometheus = scraped
    expressions = dashboard_expressions() if source == "dashboard" else alert_expressions()
    for expression in expressions:
        for variable, value in GRAFANA.items():
            expression = expression.replace(variable, value)
        if expression.startswith("label_values("):  # Grafana's, not PromQL: the metric it lists must have series
            metric = expression.removeprefix("label_values(").split(",")[0].split("{")[0]
            assert prometheus.api("series", **{"match[]": metric}), expression
            continue
        prometheus.api("query", query=expression)  # status "success", or the assertion in api() fails

"""Pass/fail limits on a run, as k6's thresholds: `gateway simulate` exits 1 when one fails, says which, with the
figure measured beside the limit, and the report marks each.

- `--max-p99-ms MS`: the p99 latency of every message type the run measured, SignIn excepted (it is connecting,
  before the measured run); `--max-p99-ms TYPE=MS` for one type (`Settle=10` or `settle=10`), which then takes
  the place of the bare limit for that type. A limit on a type the run never got an answer to fails.
- `--min-rate N`: requests answered per second of the run (`requests/s`: every request but SignIn).
- `--min-settle-rate N`: settlements answered OK per second of the run (`settlements/s`).
- `--max-unexpected N`: answers other than the scenario expected (default 0: any one fails the run).
- `--require-rate` (open loop): the achieved rate of scenario starts within 5 % of `--rate`.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from gateway.protocol.messages import pb
from simulators.load import RATE_SHORTFALL_WARNING
from simulators.recorder import NOT_COUNTED

MESSAGE_TYPES = tuple(field.name for field in pb.Request.DESCRIPTOR.oneofs_by_name["body"].fields)


class BadThreshold(ValueError):
    """A threshold option that names no message type or gives no number."""


@dataclass(frozen=True)
class Limit:
    kind: str          # max_p99_ms, min_rate, min_settle_rate, max_unexpected, require_rate
    value: float       # require_rate: the largest shortfall below --rate allowed (a fraction)
    option: str        # as given on the command line, for the message that names it
    body: str | None = None  # max_p99_ms of one message type; None: of every type measured but SignIn


@dataclass(frozen=True)
class Verdict:
    name: str
    option: str
    limit: float
    measured: float | None
    passed: bool
    limit_text: str
    measured_text: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def message(self) -> str:
        return f"{self.name} {self.measured_text}, limit {self.limit_text} ({self.option})"


def message_type(name: str) -> str:
    """`Settle`, `ReadCard` or `read_card` → the request body's name (`settle`, `read_card`)."""
    body = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name.strip()).lower()
    if body not in MESSAGE_TYPES:
        raise BadThreshold(f"{name!r} is no message type; one of {', '.join(MESSAGE_TYPES)}")
    return body


def _number(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadThreshold(f"{option}: {text!r} is not a number") from None
    return _at_least_zero(value, option)


def _at_least_zero(value: float, option: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise BadThreshold(f"{option}: {value:g} is not a number ≥ 0")
    return value


def max_p99(text: str) -> Limit:
    """`MS` or `TYPE=MS`."""
    option = f"--max-p99-ms {text}"
    name, sep, value = text.rpartition("=")
    if sep:
        return Limit("max_p99_ms", _number(value, option), option, message_type(name))
    return Limit("max_p99_ms", _number(text, option), option)


def parse(max_p99_ms: list[str], min_rate: float | None, min_settle_rate: float | None, max_unexpected: int,
          require_rate: bool) -> list[Limit]:
    limits = [max_p99(text) for text in max_p99_ms]
    if min_rate is not None:
        limits.append(Limit("min_rate", _at_least_zero(min_rate, "--min-rate"), f"--min-rate {min_rate:g}"))
    if min_settle_rate is not None:
        limits.append(Limit("min_settle_rate", _at_least_zero(min_settle_rate, "--min-settle-rate"),
                            f"--min-settle-rate {min_settle_rate:g}"))
    limits.append(Limit("max_unexpected", _at_least_zero(max_unexpected, "--max-unexpected"),
                        f"--max-unexpected {max_unexpected}"))
    if require_rate:
        limits.append(Limit("require_rate", RATE_SHORTFALL_WARNING, "--require-rate"))
    return limits


def _ms(value: float) -> str:
    return f"{value:g} ms"


def _p99(body: str, limit: Limit, latency: dict[str, dict[str, float]]) -> Verdict:
    row = latency.get(body)
    if not row or not row["count"]:
        return Verdict(f"{body} p99", limit.option, limit.value, None, False, f"≤ {_ms(limit.value)}",
                       f"no {body} answer measured")
    return Verdict(f"{body} p99", limit.option, limit.value, row["p99"], row["p99"] <= limit.value,
                   f"≤ {_ms(limit.value)}", _ms(row["p99"]))


def evaluate(limits: list[Limit], summary: dict[str, Any]) -> list[Verdict]:
    latency: dict[str, dict[str, float]] = summary["latency_ms"]
    verdicts: list[Verdict] = []
    named = {limit.body for limit in limits if limit.kind == "max_p99_ms" and limit.body}
    for limit in limits:
        if limit.kind == "max_p99_ms" and limit.body:
            verdicts.append(_p99(limit.body, limit, latency))
        elif limit.kind == "max_p99_ms":
            bodies = [b for b, row in latency.items() if b not in NOT_COUNTED and b not in named and row["count"]]
            if not bodies and not named:
                verdicts.append(Verdict("p99", limit.option, limit.value, None, False, f"≤ {_ms(limit.value)}",
                                        "no answer measured"))
            verdicts.extend(_p99(body, limit, latency) for body in bodies)
        elif limit.kind == "min_rate":
            measured = summary["requests_per_s"]
            verdicts.append(Verdict("requests/s", limit.option, limit.value, measured, measured >= limit.value,
                                    f"≥ {limit.value:g}/s", f"{measured:g}/s"))
        elif limit.kind == "min_settle_rate":
            measured = summary["settlements_per_s"]
            verdicts.append(Verdict("settlements/s", limit.option, limit.value, measured, measured >= limit.value,
                                    f"≥ {limit.value:g}/s", f"{measured:g}/s"))
        elif limit.kind == "max_unexpected":
            count = len(summary["unexpected"])
            verdicts.append(Verdict("unexpected answers", limit.option, limit.value, count, count <= limit.value,
                                    f"≤ {limit.value:g}", str(count)))
        elif limit.kind == "require_rate":
            target = summary.get("target_rate_per_s") or 0.0
            achieved = summary.get("achieved_rate_per_s", 0.0)
            floor = target * (1 - limit.value)
            verdicts.append(Verdict("achieved rate", limit.option, floor, achieved,
                                    bool(target) and summary["rate_shortfall"] <= limit.value,
                                    f"≥ {floor:g}/s ({limit.value:.0%} below --rate {target:g} at most)",
                                    f"{achieved:g}/s"))
        else:
            raise BadThreshold(f"unknown threshold {limit.kind}")
    return verdicts

"""What `gateway simulate` measures: latencies per message type in HdrHistograms, per wall-clock second and for the
whole run, and settlements answered OK per second.

Values are recorded in microseconds, from 1 µs to an hour at 3 significant digits: a percentile read back is within
0.1 % of the value recorded (HdrHistogram's contract), at a fixed cost per value whatever the run's length. A
latency above an hour is recorded as an hour. Intervals are whole seconds of the wall clock (time.time()), so the
recorders of several simulator processes merge second by second; a closed interval is kept in HdrHistogram's
compressed form (a few KB), and added into its message type's whole-run histogram.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogWriter

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
# What the summary and the report give of each distribution (percent).
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
# Requests before the measured run (connecting): their latencies are recorded, not counted in requests/s.
NOT_COUNTED = frozenset({"sign_in"})


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def to_us(seconds: float) -> int:
    return min(max(round(seconds * 1_000_000), LOWEST_US), HIGHEST_US)


def decode(encoded: str) -> HdrHistogram:
    return HdrHistogram.decode(encoded)


def _ms(value_us: float) -> float:
    return round(value_us / 1000, 3)


def percentile_key(percent: float) -> str:
    """50.0 → "p50", 99.9 → "p99_9"."""
    return "p" + f"{percent:g}".replace(".", "_")


def distribution(histogram: HdrHistogram) -> dict[str, float]:
    """count, min, mean, the PERCENTILES and max of a histogram, in milliseconds (zeros when it is empty)."""
    count = histogram.get_total_count()
    row: dict[str, float] = {"count": count}
    if not count:
        return {**row, "min": 0.0, "mean": 0.0, **{percentile_key(p): 0.0 for p in PERCENTILES}, "max": 0.0}
    values = histogram.get_percentile_to_value_dict(list(PERCENTILES))
    row.update({"min": _ms(histogram.get_min_value()), "mean": _ms(histogram.get_mean_value())})
    row.update({percentile_key(p): _ms(values[p]) for p in PERCENTILES})
    row["max"] = _ms(histogram.get_max_value())
    return row


@dataclass
class _Open:
    second: int
    histogram: HdrHistogram


class Recorder:
    """Latencies of one run (or of several processes' runs, merged)."""

    def __init__(self) -> None:
        self.totals: dict[str, HdrHistogram] = {}
        self.intervals: dict[str, dict[int, str]] = {}  # message type → second → encoded interval histogram
        self.settled_per_second: Counter[int] = Counter()
        self.start_lag = new_histogram()  # open loop: how late each scenario started, whole run
        self._open: dict[str, _Open] = {}

    def record(self, body: str, seconds: float, now_s: float) -> None:
        """One answer to a `body` request, `seconds` after its (intended) send, received at wall time `now_s`."""
        second = int(now_s)
        current = self._open.get(body)
        if current is None or current.second != second:
            if current is not None:
                self._close(body, current)
            current = self._open[body] = _Open(second, new_histogram())
        current.histogram.record_value(to_us(seconds))

    def settled(self, now_s: float) -> None:
        self.settled_per_second[int(now_s)] += 1

    def record_start_lag(self, seconds: float) -> None:
        self.start_lag.record_value(to_us(seconds))

    def _close(self, body: str, current: _Open) -> None:
        histogram = current.histogram
        histogram.set_start_time_stamp(current.second * 1000)
        histogram.set_end_time_stamp((current.second + 1) * 1000)
        self.totals.setdefault(body, new_histogram()).add(histogram)
        self.intervals.setdefault(body, {})[current.second] = histogram.encode().decode("ascii")

    def finish(self) -> None:
        """Close the intervals still open (the run's last second): afterwards the totals hold everything."""
        for body, current in sorted(self._open.items()):
            self._close(body, current)
        self._open.clear()

    # Between processes ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        self.finish()
        intervals = {body: {str(s): e for s, e in seconds.items()} for body, seconds in self.intervals.items()}
        return {"intervals": intervals,
                "settled_per_second": {str(s): n for s, n in self.settled_per_second.items()},
                "start_lag": self.start_lag.encode().decode("ascii")}

    def merge_json(self, data: dict[str, Any]) -> None:
        """Add another process's recorder (to_json): the same seconds of the wall clock add up."""
        self.finish()
        for body, seconds in data["intervals"].items():
            mine = self.intervals.setdefault(body, {})
            total = self.totals.setdefault(body, new_histogram())
            for key, encoded in seconds.items():
                other = decode(encoded)
                total.add(other)
                second = int(key)
                if second in mine:
                    merged = decode(mine[second])
                    merged.add(other)
                    encoded = merged.encode().decode("ascii")
                mine[second] = encoded
        self.settled_per_second.update({int(s): n for s, n in data["settled_per_second"].items()})
        self.start_lag.add(decode(data["start_lag"]))

    # What is reported ---------------------------------------------------------------------------

    def latency_ms(self) -> dict[str, dict[str, float]]:
        self.finish()
        return {body: distribution(histogram) for body, histogram in sorted(self.totals.items())}

    def timeline(self, window: tuple[float, float]) -> dict[str, Any]:
        """Per second of the wall clock: requests answered and settlements answered OK per second of the run
        (`window`, its wall-clock start and end) that the second covers, and each message type's count, p50, p99
        and max. Seconds before the run (connecting) have latencies but no rates."""
        self.finish()
        started, finished = window
        seconds = sorted({s for per_type in self.intervals.values() for s in per_type} | set(self.settled_per_second))
        rows = []
        for second in seconds:
            covered_s = max(0.0, min(second + 1, finished) - max(second, started))
            types: dict[str, dict[str, float]] = {}
            requests = 0
            for body, per_type in sorted(self.intervals.items()):
                if second in per_type:
                    histogram = decode(per_type[second])
                    values = histogram.get_percentile_to_value_dict([50.0, 99.0])
                    types[body] = {"count": histogram.get_total_count(), "p50": _ms(values[50.0]),
                                   "p99": _ms(values[99.0]), "max": _ms(histogram.get_max_value())}
                    if body not in NOT_COUNTED:
                        requests += histogram.get_total_count()
            settled = self.settled_per_second.get(second, 0)
            rows.append({"second": second, "t_s": round(second - started, 3), "covered_s": round(float(covered_s), 3),
                         "requests": requests, "settlements": settled,
                         "requests_per_s": round(requests / covered_s, 1) if covered_s else None,
                         "settlements_per_s": round(settled / covered_s, 1) if covered_s else None,
                         "latency_ms": types})
        return {"started": started, "finished": finished, "seconds": rows}

    def write_logs(self, directory: Path) -> dict[str, Path]:
        """One HdrHistogram log per message type (DIR/TYPE.hlog: an interval histogram per second, values in µs),
        readable by HdrHistogram's tools (HistogramLogProcessor, its plotter, hdrh.log.HistogramLogReader). Every
        log's timestamps count from the same base, the first second anything was recorded (the log format has no
        negative times)."""
        self.finish()
        directory.mkdir(parents=True, exist_ok=True)
        base = min((s for per_type in self.intervals.values() for s in per_type), default=0)
        moment = datetime.fromtimestamp(base, UTC).isoformat(sep=" ")
        written = {}
        for body, per_type in sorted(self.intervals.items()):
            path = directory / f"{body}.hlog"
            with path.open("w", encoding="ascii") as out:
                log = HistogramLogWriter(out)
                log.output_comment(f"gateway simulate: latencies of {body} answers in microseconds, one interval "
                                   "histogram per second of the wall clock")
                log.output_log_format_version()
                # HistogramLogWriter.output_start_time fails on its date: the same line written here.
                log.output_comment(f"[StartTime: {base:.3f} (seconds since epoch), {moment}]")
                log.output_base_time(base * 1000)
                log.base_time = base * 1000
                log.output_legend()
                for second in sorted(per_type):
                    histogram = decode(per_type[second])
                    histogram.set_start_time_stamp(second * 1000)
                    histogram.set_end_time_stamp((second + 1) * 1000)
                    log.output_interval_histogram(histogram, max_value_unit_ratio=1000.0)
            written[body] = path
        return written


def percentile_distribution(histogram: HdrHistogram, ticks_per_half_distance: int = 5) -> list[tuple[float, float]]:
    """(percentile, latency ms) pairs of HdrHistogram's percentile distribution (as its .hgrm output and its
    plotter show it: ever finer steps towards 100 %)."""
    if not histogram.get_total_count():
        return []
    points = [(item.percentile_level_iterated_to, item.value_iterated_to / 1000)
              for item in histogram.get_percentile_iterator(ticks_per_half_distance)]
    return points


def counts_by_value(histogram: HdrHistogram) -> list[tuple[float, int]]:
    """(latency ms, count) of every value bucket that holds a count."""
    return [(item.value_iterated_to / 1000, item.count_added_in_this_iter_step)
            for item in histogram.get_recorded_iterator()]


def log_bins(values_ms: Iterable[float], per_decade: int = 20) -> list[float]:
    """Edges of logarithmic bins covering `values_ms` (for a latency histogram whose values span decades)."""
    values = [v for v in values_ms if v > 0]
    if not values:
        return [0.001, 0.01]
    low, high = math.floor(math.log10(min(values)) * per_decade), math.ceil(math.log10(max(values)) * per_decade)
    return [10 ** (k / per_decade) for k in range(low, max(high, low + 1) + 1)]

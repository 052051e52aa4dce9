"""`gateway simulate --report DIR`: a page people can look at, and the raw data beside it.

DIR/index.html is one self-contained page (the figures are matplotlib PNGs inlined as data: URIs, no script, no
outside resource: it opens without a network): the run's parameters, the thresholds passed or failed, a summary
table, throughput and p50/p99 per second over the run, and per message type its latency histogram, its percentile
distribution and its p50/p99 per second. Beside it: summary.json (what --json writes), timeline.json (every second's
figures) and TYPE.hlog, the HdrHistogram log of each message type (an interval histogram per second, in µs).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import jinja2
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from simulators.recorder import (
    PERCENTILES,
    Recorder,
    counts_by_value,
    log_bins,
    percentile_distribution,
    percentile_key,
)

DPI = 90
# Percentile axis of the distribution plots: x = 1 / (1 - p), labelled at these percentiles.
PERCENTILE_TICKS = (0.0, 90.0, 99.0, 99.9, 99.99, 99.999)
# Seconds the run covers less of than this are left out of the throughput plot (a rate over a sliver of a second
# is noise); timeline.json has them all.
MIN_COVERED_S = 0.5


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _colours(bodies: list[str]) -> dict[str, str]:
    palette = [f"C{n}" for n in range(10)]
    return {body: palette[n % len(palette)] for n, body in enumerate(bodies)}


def _log_scale(axis: Any) -> None:
    """Ticks at 1, 2 and 5 of each decade, labelled as plain numbers (not 6×10¹)."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def _over_time(axes: Axes, rows: list[dict[str, Any]], bodies: list[str], colours: dict[str, str]) -> None:
    """p99 (solid) and p50 (dotted) per second of each message type, on a log scale."""
    for body in bodies:
        points = [(row["t_s"] + 0.5, row["latency_ms"][body]) for row in rows if body in row["latency_ms"]]
        if not points:
            continue
        times = [t for t, _ in points]
        # Markers: a type answered in one second only (SignIn, while connecting) is a point, not a line.
        axes.plot(times, [max(v["p99"], 0.001) for _, v in points], color=colours[body], marker=".",
                  label=f"{body} p99")
        axes.plot(times, [max(v["p50"], 0.001) for _, v in points], color=colours[body], linestyle=":", marker=".",
                  label=f"{body} p50")
    axes.set_yscale("log")
    _log_scale(axes.yaxis)
    axes.set_xlabel("seconds since the run's start")
    axes.set_ylabel("latency, ms")
    axes.grid(True, which="both", alpha=0.3)


def overview(timeline: dict[str, Any], bodies: list[str], colours: dict[str, str]) -> str:
    rows = timeline["seconds"]
    figure = Figure(figsize=(11, 6.4), layout="constrained")
    throughput, latency = figure.subplots(2, 1, sharex=True)
    measured = [row for row in rows if row["covered_s"] >= MIN_COVERED_S]
    times = [row["t_s"] + 0.5 for row in measured]
    throughput.plot(times, [row["requests_per_s"] for row in measured], color="C0", marker=".",
                    label="requests answered/s")
    throughput.set_ylabel("requests/s", color="C0")
    throughput.set_ylim(bottom=0)
    settlements = throughput.twinx()
    settlements.plot(times, [row["settlements_per_s"] for row in measured], color="C3", marker=".",
                     label="settlements answered OK/s")
    settlements.set_ylabel("settlements/s", color="C3")
    settlements.set_ylim(bottom=0)
    throughput.set_title("Throughput per second")
    handles = throughput.get_legend_handles_labels()[0] + settlements.get_legend_handles_labels()[0]
    throughput.legend(handles, [str(h.get_label()) for h in handles], loc="lower right", fontsize="small")
    throughput.grid(True, alpha=0.3)
    _over_time(latency, rows, bodies, colours)
    latency.set_title("Latency per second: p99 (solid), p50 (dotted)")
    latency.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return _png(figure)


def _percentile_axis(axes: Axes) -> None:
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(FixedLocator([1 / (1 - p / 100) for p in PERCENTILE_TICKS]))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 * (1 - 1 / x):g}%" if x >= 1 else ""))


def per_type(body: str, recorder: Recorder, timeline: dict[str, Any], colour: str) -> str:
    histogram = recorder.totals[body]
    figure = Figure(figsize=(11, 3.2), layout="constrained")
    counts_axes, distribution_axes, time_axes = figure.subplots(1, 3)

    counts = counts_by_value(histogram)
    bins = log_bins(value for value, _ in counts)
    counts_axes.hist([value for value, _ in counts], bins=bins, weights=[n for _, n in counts], color=colour)
    counts_axes.set_xscale("log")
    _log_scale(counts_axes.xaxis)
    counts_axes.set_xlabel("latency, ms")
    counts_axes.set_ylabel("answers")
    counts_axes.set_title("Latency histogram")
    counts_axes.grid(True, which="both", alpha=0.3)

    points = [(p, v) for p, v in percentile_distribution(histogram) if p < 100.0]
    if points:
        distribution_axes.plot([1 / (1 - p / 100) for p, _ in points], [v for _, v in points], color=colour)
    _percentile_axis(distribution_axes)
    distribution_axes.set_yscale("log")
    _log_scale(distribution_axes.yaxis)
    distribution_axes.set_xlabel("percentile")
    distribution_axes.set_ylabel("latency, ms")
    distribution_axes.set_title("Percentile distribution")
    distribution_axes.grid(True, which="both", alpha=0.3)

    _over_time(time_axes, timeline["seconds"], [body], {body: colour})
    time_axes.set_title("Per second: p99 solid, p50 dotted")
    return _png(figure)


def _environment() -> jinja2.Environment:
    # StrictUndefined: a name the template misspells fails the tests instead of printing nothing.
    environment = jinja2.Environment(loader=jinja2.PackageLoader("simulators", "templates"), autoescape=True,
                                     trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    environment.filters["ms"] = lambda value: f"{value:,.2f}"
    environment.filters["n"] = lambda value: f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"
    return environment


def type_anchor(body: str) -> str:
    return f"type-{body}"


def write(directory: Path, summary: dict[str, Any], recorder: Recorder, window: tuple[float, float],
          command: str | None = None) -> Path:
    """Write the page and its data into `directory` (created); the page's path."""
    directory.mkdir(parents=True, exist_ok=True)
    timeline = recorder.timeline(window)
    logs = recorder.write_logs(directory)
    (directory / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (directory / "timeline.json").write_text(json.dumps(timeline), encoding="utf-8")
    bodies = [body for body, row in summary["latency_ms"].items() if row["count"]]
    colours = _colours(bodies)
    sections = [{"body": body, "anchor": type_anchor(body), "row": summary["latency_ms"][body],
                 "figure": per_type(body, recorder, timeline, colours[body]), "log": logs[body].name}
                for body in bodies]
    verdicts = summary.get("thresholds", [])
    page = _environment().get_template("report.html").render(
        summary=summary, run=summary["run"], verdicts=verdicts, passed=all(v["passed"] for v in verdicts),
        percentiles=[(f"p{p:g}", percentile_key(p)) for p in PERCENTILES], sections=sections,
        overview=overview(timeline, bodies, colours) if timeline["seconds"] else None, command=command,
        seconds=len(timeline["seconds"]), min_covered_s=MIN_COVERED_S)
    path = directory / "index.html"
    path.write_text(page, encoding="utf-8")
    return path

"""Policy files: validated when loaded, with the file and key named; chosen by date."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from gateway.cli.main import main
from gateway.money import MAX_AMOUNT_FEN
from gateway.serve.policy_watch import PolicyWatch
from gateway.settlement.calendar import BEIJING, beijing_today
from gateway.settlement.policy import (
    PolicyBook,
    PolicyError,
    check_cover,
    load_builtin_policies,
    load_policy_directory,
    parse_policy,
)
from tests.test_end_to_end import RunningGateway

BUILT_IN = Path(__file__).resolve().parent.parent / "gateway/settlement/policies/2026.toml"
GOOD = BUILT_IN.read_text(encoding="utf-8")


def test_the_built_in_years_load_and_are_marked_illustrative() -> None:
    book = load_builtin_policies()
    assert book.years == [2025, 2026, 2027]
    for policy in book.policies:
        assert policy.illustrative
        assert policy.employee.deductible_fen == 75_000 and policy.employee.retired_deductible_fen == 30_000
        assert policy.employee.pooled_cap_fen == 2_000_000
        active = policy.employee.outpatient[0]
        assert (active.community, active.secondary, active.tertiary) == (8_600, 8_000, 7_500)
    assert "ILLUSTRATIVE" in GOOD


def test_the_built_in_years_cover_every_day_through_2027_without_a_gap() -> None:
    # 2027-01-01 is a business day like any other: a gateway must not answer TEMPORARILY_UNAVAILABLE then.
    book = load_builtin_policies()
    day, last = date(2025, 1, 1), date(2027, 12, 31)
    while day <= last:
        assert book.for_date(day) is not None, f"no built-in policy covers {day}"
        day += timedelta(days=1)
    assert book.for_date(date(2027, 1, 1)).version == "NB-2027-illustrative-1"  # type: ignore[union-attr]


def test_a_policy_is_chosen_by_date() -> None:
    book = load_builtin_policies()
    assert book.for_date(date(2026, 1, 1)).insurance_year == 2026  # type: ignore[union-attr]
    assert book.for_date(date(2025, 12, 31)).insurance_year == 2025  # type: ignore[union-attr]
    assert book.for_date(date(2024, 6, 1)) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("deductible_fen = 75_000", "deductible_fen = 750.0"), "employee.deductible_fen must be a whole number"),
        (("deductible_fen = 75_000", "deductible_fen = -1"), "employee.deductible_fen must be between 0"),
        (("tertiary = 7_500", "tertiary = 17_500"), "employee.ratio_bp.outpatient.active.tertiary must be between"),
        (("pooled_cap_fen = 2_000_000 ", "# "), "employee.pooled_cap_fen is missing"),
        (("illustrative = true", "illustrative = true\nsurprise = 1"), "surprise is not a known key"),
        (("valid_to = 2026-12-31", "valid_to = 2027-03-31"), "must lie in insurance year 2026"),
        (("valid_from = 2026-01-01", "valid_from = 2026-12-31\nvalid_to_ = 1"), "valid_to_ is not a known key"),
        (("min_total_fen = 1 ", "min_total_fen = 60_000_000 "), "min_total_fen is above max_total_fen"),
        (("personal_accounts = true", "personal_accounts = 1"), "employee.personal_accounts must be true or false"),
        (("insurance_year = 2026", "insurance_year = 2026\n[oops"), "not valid TOML"),
    ],
)
def test_inconsistent_files_are_refused_naming_the_key(change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in GOOD
    with pytest.raises(PolicyError) as refused:
        parse_policy(GOOD.replace(old, new, 1), "test.toml")
    assert message in str(refused.value) and "test.toml" in str(refused.value)


@pytest.mark.parametrize("key", ["max_total_fen", "deductible_fen", "retired_deductible_fen", "pooled_cap_fen"])
@pytest.mark.parametrize(("amount_fen", "accepted"), [(MAX_AMOUNT_FEN, True), (MAX_AMOUNT_FEN + 1, False)])
def test_policy_amounts_have_the_limit_of_every_amount_read_from_a_file(key: str, amount_fen: int,
                                                                        accepted: bool) -> None:
    # One limit for amounts (gateway.money), whether they come from a registry file, a statement or a policy.
    line = next(line for line in GOOD.splitlines() if line.startswith(f"{key} ="))
    text = GOOD.replace(line, f"{key} = {amount_fen}", 1)
    if accepted:
        parse_policy(text, "test.toml")
    else:
        with pytest.raises(PolicyError, match=rf"{key} must be between [01] and {MAX_AMOUNT_FEN} "):
            parse_policy(text, "test.toml")


def test_overlapping_years_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "b.toml").write_text(GOOD.replace("NB-2026-illustrative-1", "other"), encoding="utf-8")
    with pytest.raises(PolicyError, match="overlaps"):
        load_policy_directory(tmp_path)


def test_an_operator_directory_replaces_the_built_in_figures(tmp_path: Path) -> None:
    (tmp_path / "2026.toml").write_text(GOOD.replace("illustrative = true", "illustrative = false")
                                        .replace("deductible_fen = 75_000", "deductible_fen = 80_000"),
                                        encoding="utf-8")
    book = load_policy_directory(tmp_path)
    policy = book.for_date(date(2026, 5, 1))
    assert policy is not None and not policy.illustrative and policy.employee.deductible_fen == 80_000
    with pytest.raises(PolicyError, match="no policy files"):
        load_policy_directory(tmp_path / "empty-does-not-exist")


def _book_of(*years: tuple[str, str]) -> PolicyBook:
    """A book with one policy per (valid_from, valid_to), all with GOOD's figures."""
    return PolicyBook([parse_policy(_policy_file(first, last, f"v{index}"), f"{index}.toml")
                       for index, (first, last) in enumerate(years)])


@pytest.mark.parametrize(("years", "today", "covered_through", "days_remaining"), [
    # One year: the days left in it.
    ((("2026-01-01", "2026-12-31"),), date(2026, 12, 2), date(2026, 12, 31), 29),
    ((("2026-01-01", "2026-12-31"),), date(2026, 12, 31), date(2026, 12, 31), 0),
    # Two years back to back: the run goes on into the next.
    ((("2026-01-01", "2026-12-31"), ("2027-01-01", "2027-12-31")), date(2026, 12, 2), date(2027, 12, 31), 394),
    # A gap: the later year does not count for the days before it.
    ((("2026-01-01", "2026-12-31"), ("2027-01-02", "2027-12-31")), date(2026, 12, 2), date(2026, 12, 31), 29),
    # Today uncovered: nothing is settled.
    ((("2027-01-01", "2027-12-31"),), date(2026, 12, 2), None, -1),
    ((("2025-01-01", "2025-12-31"),), date(2026, 1, 1), None, -1),
])
def test_the_calendar_says_how_long_policies_still_cover(years: tuple[tuple[str, str], ...], today: date,
                                                         covered_through: date | None,
                                                         days_remaining: int) -> None:
    book = _book_of(*years)
    assert book.covered_through(today) == covered_through
    assert book.days_remaining(today) == days_remaining


@pytest.mark.parametrize(("years", "today", "days", "gaps"), [
    ((("2026-01-01", "2026-12-31"), ("2027-01-01", "2027-12-31")), date(2026, 12, 2), 30, []),
    ((("2026-01-01", "2026-12-31"),), date(2026, 12, 2), 30, [(date(2027, 1, 1), date(2027, 1, 1))]),
    ((("2026-01-01", "2026-12-31"),), date(2026, 12, 2), 60, [(date(2027, 1, 1), date(2027, 1, 31))]),
    ((("2026-01-01", "2026-12-31"), ("2027-01-10", "2027-12-31")), date(2026, 12, 20), 30,
     [(date(2027, 1, 1), date(2027, 1, 9))]),
    ((("2027-01-01", "2027-12-31"),), date(2026, 12, 30), 5, [(date(2026, 12, 30), date(2026, 12, 31))]),
])
def test_the_calendar_lists_the_uncovered_days_ahead(years: tuple[tuple[str, str], ...], today: date, days: int,
                                                     gaps: list[tuple[date, date]]) -> None:
    assert _book_of(*years).gaps(today, days) == gaps


def test_the_built_in_years_cover_the_next_thirty_days_of_2026() -> None:
    book = load_builtin_policies()
    assert book.gaps(date(2026, 12, 2), 30) == []
    assert book.covered_through(date(2026, 12, 2)) == date(2027, 12, 31)


# The policy calendar, checked: the gateway's warning and `gateway policy check` -----------------------------

def _policy_file(first: str, last: str, version: str = "v") -> str:
    return (GOOD.replace("insurance_year = 2026", f"insurance_year = {first[:4]}")
            .replace("valid_from = 2026-01-01", f"valid_from = {first}")
            .replace("valid_to = 2026-12-31", f"valid_to = {last}")
            .replace("NB-2026-illustrative-1", version))


@pytest.mark.parametrize(("years", "today", "days", "complete", "covers_today", "problem"), [
    # Covered beyond the horizon: nothing to say.
    ((("2026-01-01", "2026-12-31"), ("2027-01-01", "2027-12-31")), date(2026, 12, 2), 30, True, True, None),
    ((("2026-01-01", "2026-12-31"),), date(2026, 12, 1), 30, True, True, None),
    # The horizon reaches the next year, whose file is missing.
    ((("2026-01-01", "2026-12-31"),), date(2026, 12, 2), 30, False, True,
     "no policy covers 2027-01-01, within the next 30 days: PreSettle and Settle will be refused then; install "
     "2027.toml in ledger.policy_dir and restart"),
    ((("2026-01-01", "2026-12-31"), ("2027-01-10", "2027-12-31")), date(2026, 12, 20), 30, False, True,
     "no policy covers 2027-01-01 to 2027-01-09, within the next 30 days: PreSettle and Settle will be refused "
     "then; install 2027.toml in ledger.policy_dir and restart"),
    # Today itself: settlements are refused now.
    ((("2026-01-01", "2026-12-31"),), date(2027, 1, 1), 30, False, False,
     "no policy covers today, 2027-01-01: PreSettle and Settle are refused; days without a policy: 2027-01-01 to "
     "2027-01-31; install 2027.toml in ledger.policy_dir and restart"),
    ((("2027-01-01", "2027-12-31"),), date(2026, 12, 30), 5, False, False,
     "no policy covers today, 2026-12-30: PreSettle and Settle are refused; days without a policy: 2026-12-30 to "
     "2026-12-31; install 2026.toml in ledger.policy_dir and restart"),
])
def test_the_cover_check_says_which_days_lack_a_policy_and_what_to_install(
    years: tuple[tuple[str, str], ...], today: date, days: int, complete: bool, covers_today: bool,
    problem: str | None,
) -> None:
    cover = check_cover(_book_of(*years), today, days)
    assert (cover.complete, cover.covers_today, cover.problem()) == (complete, covers_today, problem)
    assert cover.gaps == tuple(_book_of(*years).gaps(today, days))


def _at(beijing: str) -> float:
    """A moment given as Beijing wall-clock time, as POSIX seconds (what a reactor's clock says)."""
    return datetime.fromisoformat(beijing).replace(tzinfo=BEIJING).timestamp()


class Warnings:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "gateway.serve.policy_watch":
            self.events.append(event)

    def warned(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"] == LogLevel.warn]


@pytest.fixture
def watched() -> Iterator[Warnings]:
    warnings = Warnings()
    globalLogPublisher.addObserver(warnings)
    yield warnings
    globalLogPublisher.removeObserver(warnings)


@pytest.mark.parametrize("hour", ["00:00:01", "07:59:59", "08:00:00", "12:00:00", "23:59:58"])
def test_the_gateway_warns_at_start_and_at_each_business_days_start_whatever_the_hour(
    watched: Warnings, hour: str
) -> None:
    """2026 alone is loaded. On 2026-12-01 (Beijing) the next 30 days are covered; at the start of 2026-12-02
    2027-01-01 comes within them, and the gateway says so, once that day and again the next."""
    clock = Clock()
    clock.advance(_at(f"2026-12-01T{hour}"))
    watch = PolicyWatch(_book_of(("2026-01-01", "2026-12-31")), 30, clock)
    assert watch.start().complete and watched.warned() == []
    assert [formatEvent(e) for e in watched.events] == [
        "policy calendar: today, 2026-12-01, and the 30 days after it have a policy (30 required)"]
    clock.advance(_at("2026-12-02T00:00:00") - clock.seconds())
    assert watched.warned() == []  # not before the first second of the day
    clock.advance(1.5)
    assert watched.warned() == ["policy calendar: no policy covers 2027-01-01, within the next 30 days: PreSettle "
                                "and Settle will be refused then; install 2027.toml in ledger.policy_dir and restart"]
    clock.advance(12 * 3600)
    assert len(watched.warned()) == 1  # once a day
    clock.advance(12 * 3600)
    assert len(watched.warned()) == 2 and "no policy covers 2027-01-01 to 2027-01-02" in watched.warned()[1]
    [pending] = clock.getDelayedCalls()
    watch.stop()
    assert not pending.active() and clock.getDelayedCalls() == []


def test_the_warning_names_its_fields_for_a_log_collector(watched: Warnings) -> None:
    clock = Clock()
    clock.advance(_at("2027-01-02T09:00:00"))
    cover = PolicyWatch(_book_of(("2026-01-01", "2026-12-31")), 30, clock).start()
    [event] = watched.events
    assert not cover.covers_today and event["log_level"] == LogLevel.warn
    assert (event["today"], event["days_remaining"], event["gaps"]) == ("2027-01-02", -1, [["2027-01-02",
                                                                                           "2027-02-01"]])


def _policy_check(capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, str, str]:
    code = main(["policy", "check", *options])
    out, err = capsys.readouterr()
    return code, out, err


def test_policy_check_lists_the_policies_and_exits_0_when_the_days_ahead_are_covered(
    capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _policy_check(capsys, "--date", "2026-12-02")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "policies (built in):"
    assert lines[1].split() == ["year", "version", "valid", "from", "valid", "to", "illustrative", "file"]
    assert lines[3].split() == ["2026", "NB-2026-illustrative-1", "2026-01-01", "2026-12-31", "yes",
                                "built-in:2026.toml"]
    assert "2026-12-02: covered without a gap through 2027-12-31 (394 days after it)" in lines
    assert lines[-1] == "every day from 2026-12-02 through 2027-01-01 (30 days after it) has a policy"


@pytest.mark.parametrize(("options", "code", "gap_lines"), [
    (["--date", "2026-12-20"], 1, ["no policy: 2027-01-01 to 2027-01-19 (19 days)"]),
    (["--date", "2026-12-20", "--days", "11"], 0, []),
    (["--date", "2026-12-20", "--days", "12"], 1, ["no policy: 2027-01-01 to 2027-01-01 (1 days)"]),
    (["--date", "2027-01-01", "--days", "0"], 1, ["no policy: 2027-01-01 to 2027-01-01 (1 days)"]),
    (["--date", "2025-12-31", "--days", "0"], 1, ["no policy: 2025-12-31 to 2025-12-31 (1 days)"]),
])
def test_policy_check_exits_1_on_a_gap_and_lists_it(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                    options: list[str], code: int, gap_lines: list[str]) -> None:
    (tmp_path / "2026.toml").write_text(_policy_file("2026-01-01", "2026-12-31", "mine")
                                        .replace("illustrative = true", "illustrative = false"), encoding="utf-8")
    found, out, err = _policy_check(capsys, "--policy-dir", str(tmp_path), *options)
    assert found == code
    lines = out.splitlines()
    assert lines[0] == f"policies in {tmp_path}:"
    assert lines[2].split() == ["2026", "mine", "2026-01-01", "2026-12-31", "no", str(tmp_path / "2026.toml")]
    assert [line for line in lines if line.startswith("no policy:")] == gap_lines
    assert (err.startswith("gateway: no policy covers") and "install" in err) == (code == 1)


def test_policy_check_reads_the_configured_directory_and_days(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "2026.toml").write_text(_policy_file("2026-01-01", "2026-12-31", "configured"), encoding="utf-8")
    config = tmp_path / "gateway.toml"
    config.write_text(f'[ledger]\npolicy_dir = "{policies}"\npolicy_warning_days = 5\n', encoding="utf-8")
    code, out, _ = _policy_check(capsys, "--config", str(config), "--date", "2026-12-26")
    assert code == 0 and "configured" in out and "through 2026-12-31 (5 days after it)" in out
    assert _policy_check(capsys, "--config", str(config), "--date", "2026-12-27")[0] == 1


@pytest.mark.parametrize(("options", "said"), [
    (["--days", "-1"], "--days must be between 0 and 3660"),
    (["--days", "3661"], "--days must be between 0 and 3660"),
    (["--date", "2026-13-01"], "is not a calendar date"),
    (["--policy-dir", "/nonexistent/policies"], "no policy files"),
])
def test_policy_check_refuses_bad_options_with_status_2(capsys: pytest.CaptureFixture[str], options: list[str],
                                                        said: str) -> None:
    try:
        code = main(["policy", "check", *options])
    except SystemExit as exit_:  # argparse's own refusals
        code = int(exit_.code or 0)
    assert code == 2 and said in capsys.readouterr().err


class ShortPolicyGateway(RunningGateway):
    """`gateway serve` with a policy directory whose one file ends today: tomorrow has no policy."""

    def serve_command(self) -> list[str]:
        today = beijing_today()
        policies = self.tmp / "policies"
        policies.mkdir(exist_ok=True)
        (policies / f"{today.year}.toml").write_text(_policy_file(f"{today.year}-01-01", today.isoformat()),
                                                    encoding="utf-8")
        config = self.tmp / "short.toml"
        config.write_text(f'[ledger]\npolicy_dir = "{policies}"\n', encoding="utf-8")
        return ["--config", str(config)]


def test_the_gateway_warns_at_start_when_the_policies_run_out_and_keeps_serving(tmp_path: Path) -> None:
    running = ShortPolicyGateway(tmp_path)
    try:
        running.assert_alive_and_serving()
    finally:
        assert running.stop() == 0
    events = [json.loads(line) for line in running.lines]
    [warning] = [e for e in events if e["namespace"] == "gateway.serve.policy_watch"]
    # Whatever the hour: tomorrow lacks a policy (or, past Beijing midnight since the file was written, today).
    assert warning["level"] == "warn" and "install" in warning["message"] and warning["days_remaining"] <= 0
    listening = next(i for i, e in enumerate(events) if e["message"].startswith("Gateway listening on "))
    assert events.index(warning) < listening

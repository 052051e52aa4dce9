"""Policy data: one TOML file per insurance year, validated when loaded, chosen by the settlement date.

The numbers live in `gateway/settlement/policies/YEAR.toml` (or an operator's directory), never in
code. A file with a missing, unknown or inconsistent key is refused with the file and key named.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from gateway.money import MAX_AMOUNT_FEN
from gateway.settlement.calendar import FIRST_INSURANCE_YEAR, LAST_INSURANCE_YEAR
from gateway.settlement.facts import InstitutionLevel, InsuranceType, MedicalType

BUILT_IN = "built-in"
BASIS_POINTS = 10_000


class PolicyError(ValueError):
    """A policy file is missing, unreadable or inconsistent; the message names the file and key."""


@dataclass(frozen=True)
class Ratios:
    """Pooled-fund ratios in basis points, by institution level."""

    community: int
    secondary: int
    tertiary: int

    def for_level(self, level: InstitutionLevel | None) -> int:
        # An institution without a level (a pharmacy) never reaches the pooled fund; tertiary is the
        # most conservative should one ever ask.
        return {InstitutionLevel.COMMUNITY: self.community, InstitutionLevel.SECONDARY: self.secondary}.get(
            level or InstitutionLevel.TERTIARY, self.tertiary
        )


@dataclass(frozen=True)
class SchemePolicy:
    """One scheme: employees or residents."""

    personal_accounts: bool
    deductible_fen: int
    retired_deductible_fen: int
    pooled_cap_fen: int
    outpatient: tuple[Ratios, Ratios]   # (active, retired)
    inpatient: tuple[Ratios, Ratios]

    def ratios(self, medical_type: int, retired: bool) -> Ratios:
        table = self.inpatient if medical_type == MedicalType.INPATIENT else self.outpatient
        return table[1] if retired else table[0]

    def deductible(self, retired: bool) -> int:
        return self.retired_deductible_fen if retired else self.deductible_fen


@dataclass(frozen=True)
class Policy:
    insurance_year: int
    version: str
    valid_from: date
    valid_to: date
    illustrative: bool
    min_total_fen: int
    max_total_fen: int
    max_items: int
    revoke_window_days: int
    employee: SchemePolicy
    resident: SchemePolicy
    source: str = BUILT_IN

    def covers(self, day: date) -> bool:
        return self.valid_from <= day <= self.valid_to

    def scheme_for(self, insurance_type: InsuranceType) -> SchemePolicy:
        return self.resident if insurance_type is InsuranceType.RESIDENT else self.employee

    def limits_for(self, insurance_type: InsuranceType) -> tuple[int, int]:
        """The year's deductible and pooled-fund cap, in fen, for a person insured so."""
        scheme = self.scheme_for(insurance_type)
        return scheme.deductible(insurance_type is InsuranceType.EMPLOYEE_RETIRED), scheme.pooled_cap_fen


class PolicyBook:
    """All loaded policies; picks the one in force on a day."""

    def __init__(self, policies: list[Policy]) -> None:
        ordered = sorted(policies, key=lambda p: p.valid_from)
        for earlier, later in itertools.pairwise(ordered):
            if later.valid_from <= earlier.valid_to:
                raise PolicyError(f"{later.source} ({later.valid_from}) overlaps {earlier.source} "
                                  f"(to {earlier.valid_to})")
        self.policies = tuple(ordered)

    def for_date(self, day: date) -> Policy | None:
        for policy in self.policies:
            if policy.covers(day):
                return policy
        return None

    @property
    def years(self) -> list[int]:
        return [p.insurance_year for p in self.policies]

    def covered_through(self, today: date) -> date | None:
        """The last day of the unbroken run of policies that starts with the one covering `today`.

        None when no policy covers `today` (settlements are refused). A gap after today ends the run: a
        policy for a later year does not help the days before it.
        """
        last: date | None = None
        for policy in self.policies:
            if last is None:
                if policy.covers(today):
                    last = policy.valid_to
            elif policy.valid_from == last + timedelta(days=1):
                last = policy.valid_to
            elif policy.valid_from > last:
                break
        return last

    def days_remaining(self, today: date) -> int:
        """Days after `today` that policies still cover without a gap: 0 when only today is covered, -1 when
        today is not."""
        last = self.covered_through(today)
        return -1 if last is None else (last - today).days

    def gaps(self, today: date, days: int) -> list[tuple[date, date]]:
        """The uncovered stretches (first, last day) within `today` .. `today + days`, in order."""
        end = today + timedelta(days=days)
        found: list[tuple[date, date]] = []
        cursor = today
        for policy in self.policies:
            if policy.valid_to < cursor:
                continue
            if policy.valid_from > end:
                break
            if policy.valid_from > cursor:
                found.append((cursor, policy.valid_from - timedelta(days=1)))
            cursor = policy.valid_to + timedelta(days=1)
            if cursor > end:
                return found
        if cursor <= end:
            found.append((cursor, end))
        return found


# How many days ahead of today the loaded policies must cover (`ledger.policy_warning_days`): fewer, and the gateway
# warns, at start and at each business day's start, and `gateway policy check` exits 1. An insurance year's file is
# published late in the year before; a month is time to install it.
DEFAULT_POLICY_WARNING_DAYS = 30
MAX_POLICY_WARNING_DAYS = 3660  # ten years: a larger number is a typo


@dataclass(frozen=True)
class PolicyCover:
    """How the loaded policies cover the days from `today` to `today + days`: what the gateway's warning, `gateway
    policy check`, the policy metric and /readyz all go by (`check_cover`)."""

    today: date
    days: int
    days_remaining: int                    # PolicyBook.days_remaining: -1 when no policy covers today
    gaps: tuple[tuple[date, date], ...]    # the uncovered stretches within those days, first and last day each

    @property
    def covers_today(self) -> bool:
        return self.days_remaining >= 0

    @property
    def complete(self) -> bool:
        """No day of the `days` ahead (nor today) lacks a policy."""
        return not self.gaps

    def problem(self) -> str | None:
        """What an operator is told when a day lacks a policy (None when none does)."""
        if self.complete:
            return None
        stretches = ", ".join(first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"
                              for first, last in self.gaps)
        years = sorted({day.year for first, last in self.gaps for day in (first, last)})
        files = " and ".join(f"{year}.toml" for year in years)
        if not self.covers_today:
            return (f"no policy covers today, {self.today.isoformat()}: PreSettle and Settle are refused; days "
                    f"without a policy: {stretches}; install {files} in ledger.policy_dir and restart")
        return (f"no policy covers {stretches}, within the next {self.days} days: PreSettle and Settle will be "
                f"refused then; install {files} in ledger.policy_dir and restart")


def check_cover(book: PolicyBook, today: date, days: int = DEFAULT_POLICY_WARNING_DAYS) -> PolicyCover:
    """How `book` covers `today` and the `days` after it."""
    return PolicyCover(today, days, book.days_remaining(today), tuple(book.gaps(today, days)))


def load_builtin_policies() -> PolicyBook:
    folder = resources.files("gateway.settlement").joinpath("policies")
    policies = [parse_policy(entry.read_text(encoding="utf-8"), f"{BUILT_IN}:{entry.name}")
                for entry in folder.iterdir() if entry.name.endswith(".toml")]
    return PolicyBook(policies)


def load_policy_directory(directory: Path) -> PolicyBook:
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise PolicyError(f"no policy files (*.toml) in {directory}")
    policies = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read: {exc.strerror}") from exc
        policies.append(parse_policy(text, str(path)))
    return PolicyBook(policies)


# Parsing ----------------------------------------------------------------------------------------

_TOP_KEYS = {"insurance_year", "version", "valid_from", "valid_to", "illustrative", "limits", "employee",
             "resident"}
_LIMIT_KEYS = {"min_total_fen", "max_total_fen", "max_items", "revoke_window_days"}
_SCHEME_KEYS = {"personal_accounts", "deductible_fen", "retired_deductible_fen", "pooled_cap_fen", "ratio_bp"}
_LEVELS = ("community", "secondary", "tertiary")


class _Reader:
    """Typed access to a TOML table that reports the file and dotted key of every problem."""

    def __init__(self, table: dict[str, Any], source: str, path: str = "") -> None:
        self.table = table
        self.source = source
        self.path = path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str) -> PolicyError:
        return PolicyError(f"{self.source}: {self.key(name)} {problem}")

    def only(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.table) - allowed)
        if unknown:
            raise self.fail(unknown[0], f"is not a known key (known: {', '.join(sorted(allowed))})")

    def get(self, name: str) -> Any:
        if name not in self.table:
            raise self.fail(name, "is missing")
        return self.table[name]

    def integer(self, name: str, low: int = 0, high: int = MAX_AMOUNT_FEN) -> int:
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be a whole number (got {value!r}); money is integer fen")
        if not low <= value <= high:
            raise self.fail(name, f"must be between {low} and {high} (got {value})")
        return value

    def boolean(self, name: str) -> bool:
        value = self.get(name)
        if not isinstance(value, bool):
            raise self.fail(name, "must be true or false")
        return value

    def day(self, name: str) -> date:
        value = self.get(name)
        if not isinstance(value, date) or hasattr(value, "hour"):
            raise self.fail(name, "must be a date like 2026-01-01")
        return value

    def text(self, name: str) -> str:
        value = self.get(name)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, "must be a non-empty string")
        return value

    def sub(self, name: str) -> _Reader:
        value = self.get(name)
        if not isinstance(value, dict):
            raise self.fail(name, "must be a table")
        return _Reader(value, self.source, self.key(name))


def parse_policy(text: str, source: str) -> Policy:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from exc
    top = _Reader(raw, source)
    top.only(_TOP_KEYS)
    year = top.integer("insurance_year", FIRST_INSURANCE_YEAR, LAST_INSURANCE_YEAR)
    valid_from, valid_to = top.day("valid_from"), top.day("valid_to")
    if valid_from > valid_to:
        raise top.fail("valid_from", f"is after valid_to ({valid_to})")
    if valid_from.year != year or valid_to.year != year:
        raise top.fail("valid_from", f"and valid_to must lie in insurance year {year}")
    limits = top.sub("limits")
    limits.only(_LIMIT_KEYS)
    min_total = limits.integer("min_total_fen", 1)
    max_total = limits.integer("max_total_fen", 1)
    if min_total > max_total:
        raise limits.fail("min_total_fen", f"is above max_total_fen ({max_total})")
    return Policy(
        insurance_year=year,
        version=top.text("version"),
        valid_from=valid_from,
        valid_to=valid_to,
        illustrative=top.boolean("illustrative"),
        min_total_fen=min_total,
        max_total_fen=max_total,
        max_items=limits.integer("max_items", 1, 10_000),
        revoke_window_days=limits.integer("revoke_window_days", 0, 366),
        employee=_scheme(top.sub("employee")),
        resident=_scheme(top.sub("resident")),
        source=source,
    )


def _scheme(table: _Reader) -> SchemePolicy:
    table.only(_SCHEME_KEYS)
    ratios = table.sub("ratio_bp")
    ratios.only({"outpatient", "inpatient"})
    return SchemePolicy(
        personal_accounts=table.boolean("personal_accounts"),
        deductible_fen=table.integer("deductible_fen"),
        retired_deductible_fen=table.integer("retired_deductible_fen"),
        pooled_cap_fen=table.integer("pooled_cap_fen"),
        outpatient=_ratio_pair(ratios.sub("outpatient")),
        inpatient=_ratio_pair(ratios.sub("inpatient")),
    )


def _ratio_pair(table: _Reader) -> tuple[Ratios, Ratios]:
    table.only({"active", "retired"})
    return _ratios(table.sub("active")), _ratios(table.sub("retired"))


def _ratios(table: _Reader) -> Ratios:
    table.only(set(_LEVELS))
    values = [table.integer(level, 0, BASIS_POINTS) for level in _LEVELS]
    return Ratios(*values)

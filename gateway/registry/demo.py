"""`gateway registry demo`: a consistent demo registry, written through the importer's checks.

Demo terminals all share the credential DEMO_CREDENTIAL (documented in the README); a production
registry gives every terminal its own secret.
"""

from __future__ import annotations

import csv
import io

from sqlalchemy import Engine

from gateway.registry.importer import ImportReport, RowError, import_tables, read_table

DEMO_CREDENTIAL = "demo-secret"
DEFAULT_TERMINALS_PER_INSTITUTION = 4
MAX_TERMINALS_PER_INSTITUTION = 9999

# code, name, region, kind, level, designated for cross-region settlement
DEMO_INSTITUTIONS: tuple[tuple[str, str, str, str, str, bool], ...] = (
    ("H33020300001", "宁波演示第一医院", "330203", "hospital", "tertiary", True),
    ("H33021200002", "鄞州演示人民医院", "330212", "hospital", "secondary", False),
    ("H33020500003", "江北演示社区卫生服务中心", "330205", "hospital", "community", True),
    ("P33020300004", "海曙演示大药房", "330203", "pharmacy", "", True),
    ("P33028200005", "慈溪演示药店", "330282", "pharmacy", "", False),
    ("K33020300006", "宁波演示自助服务终端", "330203", "kiosk", "", True),
)


# Terminal -03 of each demo institution reads an in-process virtual card of the demo population
# (`virtual:CARD`); the others use their own reader at the counter, by APDU relay.
VIRTUAL_READER_TERMINAL = 3
DEMO_VIRTUAL_CARDS: tuple[str, ...] = (
    "N00000001",  # in Ningbo, no PIN
    "Z00000101",  # another Zhejiang city, filed: PIN 000000
    "N00000301",  # retired employee in Ningbo
    "Z00000401",  # another Zhejiang city, not filed
    "W00000701",  # outside the province
    "N00001101",  # reported lost
)


def demo_reader(institution_index: int, number: int) -> str:
    if number == VIRTUAL_READER_TERMINAL:
        return f"virtual:{DEMO_VIRTUAL_CARDS[institution_index % len(DEMO_VIRTUAL_CARDS)]}"
    return "terminal"


def demo_terminal_id(institution_code: str, number: int) -> str:
    return f"{institution_code}-{number:02d}"


def demo_csv(terminals_per_institution: int = DEFAULT_TERMINALS_PER_INSTITUTION) -> tuple[str, str]:
    institutions = io.StringIO()
    writer = csv.writer(institutions, lineterminator="\n")
    writer.writerow(["code", "name", "region_code", "kind", "level", "cross_region_designated"])
    for code, name, region, kind, level, designated in DEMO_INSTITUTIONS:
        writer.writerow([code, name, region, kind, level, "true" if designated else "false"])
    terminals = io.StringIO()
    writer = csv.writer(terminals, lineterminator="\n")
    writer.writerow(["terminal_id", "institution_code", "credential", "enabled", "reader"])
    for index, (code, *_) in enumerate(DEMO_INSTITUTIONS):
        for number in range(1, terminals_per_institution + 1):
            writer.writerow([demo_terminal_id(code, number), code, DEMO_CREDENTIAL, "true", demo_reader(index, number)])
    return institutions.getvalue(), terminals.getvalue()


def write_demo_registry(
    engine: Engine, terminals_per_institution: int = DEFAULT_TERMINALS_PER_INSTITUTION
) -> ImportReport:
    if not 1 <= terminals_per_institution <= MAX_TERMINALS_PER_INSTITUTION:
        raise ValueError(f"terminals per institution must be 1 to {MAX_TERMINALS_PER_INSTITUTION}")
    institutions_csv, terminals_csv = demo_csv(terminals_per_institution)
    errors: list[RowError] = []
    tables = [read_table("demo institutions", institutions_csv, errors),
              read_table("demo terminals", terminals_csv, errors)]
    return import_tables(engine, [t for t in tables if t is not None], errors)

"""GB/T 2260 region codes the gateway knows (gateway/data/regions.csv, from shared/domain)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

ZHEJIANG_PROVINCE_PREFIX = "33"
NINGBO_CITY_PREFIX = "3302"


@dataclass(frozen=True)
class Region:
    code: str
    name_zh: str
    name_en: str
    level: str
    parent: str | None
    status: str

    @property
    def retired(self) -> bool:
        return self.status.startswith("retired")


@cache
def known_regions() -> dict[str, Region]:
    text = resources.files("gateway").joinpath("data/regions.csv").read_text(encoding="utf-8")
    regions = {}
    for row in csv.DictReader(text.splitlines()):
        regions[row["code"]] = Region(
            code=row["code"], name_zh=row["name_zh"], name_en=row["name_en"], level=row["level"],
            parent=row["parent"] or None, status=row["status"],
        )
    return regions


def is_known_region(code: str) -> bool:
    return code in known_regions()


def city_prefix(code: str) -> str:
    """The city a region code belongs to: its first four digits."""
    return code[:4]

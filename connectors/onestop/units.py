"""Pre-2025 commune codes (63 provinces, three levels) mapped to the current two-level units.

Since 1 July 2025 many wards were merged; older district-era systems still send the GSO code of
a ward that no longer exists. `vietnamadminunits` converts old units to new ones by *name*
only, so the code-to-code table is built once, on first use, from its data files: each legacy
ward's (province, district, ward) key → the new ward it merged into (for a ward split between
several, the package's default one) → that ward's code in `vietnam-provinces`, the project's
unit authority (the two packages disagree on a few retained codes, so the match is by name).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sqlite3
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from vietnam_provinces import ProvinceCode, Ward

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LegacyWard:
    """A pre-2025 ward and the current commune it is part of now."""

    code: str
    name: str
    district: str
    province_code: int
    current_code: str


def _plain(name: str) -> str:
    """A name without accents or case, so "Thuận Hòa" and "Thuận Hoà" compare equal."""
    decomposed = unicodedata.normalize("NFD", name.replace("Đ", "D").replace("đ", "d"))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


@cache
def current_unit_codes() -> frozenset[str]:
    """Every current commune code (5 digits) of the 34 provinces."""
    return frozenset(f"{int(w.code):05d}" for p in ProvinceCode for w in Ward.iter_by_province(p))


@cache
def _current_by_name() -> dict[tuple[int, str], str]:
    """Current commune codes by (province code, plain name); ambiguous names are left out."""
    found: dict[tuple[int, str], set[str]] = {}
    for province in ProvinceCode:
        for ward in Ward.iter_by_province(province):
            key = (int(province), _plain(ward.name))
            found.setdefault(key, set()).add(f"{int(ward.code):05d}")
    return {key: next(iter(codes)) for key, codes in found.items() if len(codes) == 1}


def _data_dir() -> Path | None:
    # find_spec locates the package without importing it (its parser pulls in shapely, geopy)
    spec = importlib.util.find_spec("vietnamadminunits")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@cache
def legacy_wards() -> dict[str, LegacyWard]:
    """Pre-2025 ward codes that are not current codes, each with the commune it merged into."""
    data = _data_dir()
    if data is None:
        logger.warning("vietnamadminunits is not installed: pre-2025 unit codes stay unmapped")
        return {}
    converter = json.loads((data / "converter_2025.json").read_text(encoding="utf-8"))
    new_ward_of: dict[str, tuple[str, str]] = {}  # "oldprov_olddistrict_oldward" → new keys
    for province_key, wards in converter["DICT_PROVINCE_WARD_NO_DIVIDED"].items():
        for ward_key, old_keys in wards.items():
            for old_key in old_keys:
                new_ward_of.setdefault(old_key, (province_key, ward_key))
    for province_key, divided in converter["DICT_PROVINCE_WARD_DIVIDED"].items():
        for old_key, choices in divided.items():
            default = next((c["newWardKey"] for c in choices if c["isDefaultNewWard"]), None)
            if default is not None:
                new_ward_of.setdefault(old_key, (province_key, default))
    with sqlite3.connect(f"file:{data / 'dataset.db'}?mode=ro", uri=True) as db:
        new_wards = {
            (province_key, ward_key): (int(province_code), name)
            for province_key, ward_key, province_code, name in db.execute(
                "SELECT provinceKey, wardKey, provinceCode, ward FROM admin_units"
            )
        }
        legacy = db.execute(
            "SELECT provinceKey, districtKey, wardKey, wardCode, ward, district, provinceCode"
            " FROM admin_units_legacy"
        ).fetchall()
    current, by_name = current_unit_codes(), _current_by_name()
    table: dict[str, LegacyWard] = {}
    for province_key, district_key, ward_key, code, name, district, province_code in legacy:
        if not code or code in current:
            continue  # a retained unit kept its code: nothing to map
        new_keys = new_ward_of.get(f"{province_key}_{district_key}_{ward_key}")
        new_ward = new_wards.get(new_keys) if new_keys else None
        if new_ward is None:
            continue
        target = by_name.get((new_ward[0], _plain(new_ward[1])))
        if target is not None:
            table[code] = LegacyWard(code, name, district, int(province_code), target)
    return table


def to_current_unit(code: str) -> tuple[str, str | None]:
    """(current code, the original code when it was mapped); unknown codes stay as sent."""
    if code in current_unit_codes():
        return code, None
    legacy = legacy_wards().get(code)
    if legacy is None:
        return code, None
    return legacy.current_code, code


@cache
def _predecessors_by_commune() -> dict[str, tuple[LegacyWard, ...]]:
    found: dict[str, list[LegacyWard]] = {}
    for ward in legacy_wards().values():
        found.setdefault(ward.current_code, []).append(ward)
    return {code: tuple(sorted(wards, key=lambda w: w.code)) for code, wards in found.items()}


def predecessors(current_code: str) -> tuple[LegacyWard, ...]:
    """The pre-2025 wards (with codes no longer in use) merged into a current commune."""
    return _predecessors_by_commune().get(current_code, ())

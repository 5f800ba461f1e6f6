"""Loads the configured province from `vietnam-provinces` and answers unit questions."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from vietnam_provinces import Province, ProvinceCode, Ward

from ioc.kit.upsert import upsert
from ioc.units.models import AdminUnit
from ioc.units.schemas import UnitNode

PROVINCE_LEVEL = "province"
COMMUNE_LEVEL = "commune"


class UnknownProvince(ValueError):
    """The configured province code is not one of the 34 provinces."""


def province_rows(province_code: int) -> list[dict[str, str | None]]:
    """The province and its communes as `admin_units` rows, from the 2025 unit list."""
    try:
        province = Province.from_code(ProvinceCode(province_code))
    except ValueError as exc:
        raise UnknownProvince(f"unknown province code {province_code}") from exc
    code = province_code_str(province_code)
    rows: list[dict[str, str | None]] = [
        {
            "code": code,
            "name": province.name,
            "division_type": province.division_type.value,
            "level": PROVINCE_LEVEL,
            "parent_code": None,
        }
    ]
    for ward in Ward.iter_by_province(province.code):
        rows.append(
            {
                "code": f"{int(ward.code):05d}",
                "name": ward.name,
                "division_type": ward.division_type.value,
                "level": COMMUNE_LEVEL,
                "parent_code": code,
            }
        )
    return rows


def province_code_str(province_code: int) -> str:
    """A province code as stored: two digits."""
    return f"{province_code:02d}"


async def sync_units(session: AsyncSession, province_code: int) -> int:
    """Insert or refresh the province's units; returns how many there are."""
    rows = province_rows(province_code)
    await upsert(session, AdminUnit, rows, keys=("code",))
    return len(rows)


async def list_units(session: AsyncSession) -> Sequence[AdminUnit]:
    """Every stored unit, province first."""
    result = await session.scalars(
        select(AdminUnit).order_by(AdminUnit.level.desc(), AdminUnit.code)
    )
    return result.all()


async def unit_codes(session: AsyncSession, *, level: str | None = None) -> set[str]:
    """The codes of the stored units, optionally of one level."""
    query = select(AdminUnit.code)
    if level is not None:
        query = query.where(AdminUnit.level == level)
    return set((await session.scalars(query)).all())


async def unit_tree(session: AsyncSession, root_code: str) -> UnitNode | None:
    """The unit with `root_code` and everything below it."""
    units = await list_units(session)
    nodes = {
        u.code: UnitNode(code=u.code, name=u.name, division_type=u.division_type, level=u.level)
        for u in units
    }
    for unit in units:
        if unit.parent_code is not None and unit.parent_code in nodes:
            nodes[unit.parent_code].children.append(nodes[unit.code])
    for node in nodes.values():
        node.children.sort(key=lambda child: child.name)
    return nodes.get(root_code)

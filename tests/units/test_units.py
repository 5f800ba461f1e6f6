"""Administrative units: the configured province and its communes."""

from __future__ import annotations

import httpx
import pytest

from ioc.app import create_app
from ioc.context import AppContext
from ioc.units.service import UnknownProvince, province_rows, unit_tree


async def test_province_tree_holds_dong_nai_and_its_95_communes(ctx: AppContext) -> None:
    async with ctx.sessionmaker() as session:
        tree = await unit_tree(session, "75")
    assert tree is not None
    assert (tree.name, tree.level) == ("Đồng Nai", "province")
    assert len(tree.children) == 95
    assert {c.level for c in tree.children} == {"commune"}
    assert "Phường Biên Hòa" in {c.name for c in tree.children}
    assert all(len(c.code) == 5 for c in tree.children)


def test_unknown_province_code_is_refused() -> None:
    with pytest.raises(UnknownProvince, match="99"):
        province_rows(99)


async def test_units_api_returns_the_tree_and_404_for_unknown_root(ctx: AppContext) -> None:
    app = create_app(ctx.settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as client:
            tree = (await client.get("/api/v1/units")).json()
            missing = await client.get("/api/v1/units", params={"root": "00000"})
            commune = (await client.get("/api/v1/units", params={"root": "26068"})).json()
    assert tree["code"] == "75" and len(tree["children"]) == 95
    assert missing.status_code == 404
    assert "00000" in missing.json()["detail"]
    assert commune == {
        "code": "26068",
        "name": "Phường Biên Hòa",
        "division_type": "phường",
        "level": "commune",
        "children": [],
    }

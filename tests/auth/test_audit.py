"""The audit log: every mutation with who, what, when, before and after; read by admins."""

from __future__ import annotations

import httpx
import pytest

from ioc.auth.permissions import Role
from tests.auth.conftest import MakeToken, bearer

CONFIG = {"base_url": "http://127.0.0.1:9", "api_key": "s3cret-key"}


@pytest.fixture
async def integrator(make_token: MakeToken) -> dict[str, str]:
    return bearer(await make_token(Role.INTEGRATOR, name="tich-hop"))


@pytest.fixture
async def admin(make_token: MakeToken) -> dict[str, str]:
    return bearer(await make_token(Role.ADMIN, name="quan-tri"))


async def audit(http: httpx.AsyncClient, admin: dict[str, str], **params: object) -> dict:
    response = await http.get("/api/v1/audit", params=params, headers=admin)
    assert response.status_code == 200, response.text
    return response.json()


async def test_connector_mutations_are_audited_with_actor_and_before_after(
    http: httpx.AsyncClient, integrator: dict[str, str], admin: dict[str, str]
) -> None:
    body = {"name": "motcua", "kind": "onestop", "config": CONFIG}
    created = (await http.post("/api/v1/connectors", json=body, headers=integrator)).json()
    url = f"/api/v1/connectors/{created['id']}"
    await http.patch(url, json={"interval_seconds": 300}, headers=integrator)
    await http.post(f"{url}/disable", headers=integrator)
    await http.post(f"{url}/enable", headers=integrator)
    await http.post(f"{url}/test", headers=integrator)
    await http.post(f"{url}/run", headers=integrator)
    entries = (await audit(http, admin, target=f"connector:{created['id']}"))["items"]
    assert [e["action"] for e in reversed(entries)] == [
        "connector.create",
        "connector.update",
        "connector.disable",
        "connector.enable",
        "connector.test",
        "connector.run",
    ]
    assert {e["actor_name"] for e in entries} == {"tich-hop"}
    update = entries[4]
    assert (update["before"]["interval_seconds"], update["after"]["interval_seconds"]) == (60, 300)
    assert entries[3]["after"]["enabled"] is False
    assert entries[1]["after"]["ok"] is False  # the test reached no upstream, and says so
    assert "s3cret-key" not in str(entries)


async def test_a_refused_mutation_leaves_no_audit_entry(
    http: httpx.AsyncClient, integrator: dict[str, str], admin: dict[str, str]
) -> None:
    bad = {"name": "x", "kind": "onestop", "config": {"base_url": "ftp://nowhere"}}
    assert (await http.post("/api/v1/connectors", json=bad, headers=integrator)).status_code == 422
    assert (await audit(http, admin))["total"] == 0


async def test_reingesting_rejected_records_is_audited(
    http: httpx.AsyncClient, integrator: dict[str, str], admin: dict[str, str]
) -> None:
    response = await http.post(
        "/api/v1/rejected/reingest", json={"ids": [1, 2]}, headers=integrator
    )
    assert response.status_code == 200
    (entry,) = (await audit(http, admin, action="rejected.reingest"))["items"]
    assert entry["before"] == {"instance_id": None, "ids": [1, 2]}
    assert entry["after"]["tried"] == 0


async def test_the_audit_log_filters_by_action_prefix_and_actor_and_pages(
    http: httpx.AsyncClient, integrator: dict[str, str], admin: dict[str, str]
) -> None:
    for name in ("a", "b", "c"):
        body = {"name": name, "kind": "onestop", "config": CONFIG}
        await http.post("/api/v1/connectors", json=body, headers=integrator)
    await http.post("/api/v1/tokens", json={"name": "w", "roles": ["viewer"]}, headers=admin)
    connectors = await audit(http, admin, action="connector.*", limit=2)
    assert connectors["total"] == 3 and len(connectors["items"]) == 2
    assert [e["after"]["name"] for e in connectors["items"]] == ["c", "b"]  # newest first
    rest = await audit(http, admin, action="connector.*", limit=2, offset=2)
    assert [e["after"]["name"] for e in rest["items"]] == ["a"]
    tokens = await audit(http, admin, action="token.*")
    assert [(e["action"], e["actor_name"]) for e in tokens["items"]] == [
        ("token.create", "quan-tri")
    ]
    by_actor = await audit(http, admin, actor=tokens["items"][0]["actor"])
    assert by_actor["total"] == 1


async def test_the_audit_log_refuses_times_without_a_zone(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await http.get("/api/v1/audit?since=2026-11-25T00:00:00", headers=admin)
    assert response.status_code == 422 and "time zone" in response.json()["detail"]
    response = await http.get("/api/v1/audit?since=2026-11-25T00:00:00Z", headers=admin)
    assert response.status_code == 200

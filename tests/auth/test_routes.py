"""Every route's gate: which roles pass it, for the whole REST surface."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ioc.auth.permissions import Role
from tests.auth.conftest import MakeToken, bearer

ALL = frozenset(Role)
RECORDS = frozenset({Role.LEADER, Role.INTEGRATOR})
CONNECTORS = frozenset({Role.INTEGRATOR})
ADMIN = frozenset({Role.ADMIN})
ACKNOWLEDGE = frozenset({Role.OPERATOR, Role.LEADER})
RESOLVE = frozenset({Role.LEADER})
OPEN = None

KPI = "onestop.on_time_rate"
# (method, route path, concrete path, JSON body, roles that pass the gate; None: no gate)
TABLE: list[tuple[str, str, str, Any, frozenset[Role] | None]] = [
    ("GET", "/healthz", "/healthz", None, OPEN),
    ("GET", "/readyz", "/readyz", None, OPEN),
    ("GET", "/metrics", "/metrics", None, ALL),
    ("GET", "/api/v1/system", "/api/v1/system", None, ALL),
    ("GET", "/api/v1/units", "/api/v1/units", None, ALL),
    ("GET", "/api/v1/kpis", "/api/v1/kpis", None, ALL),
    ("GET", "/api/v1/kpis/catalog", "/api/v1/kpis/catalog", None, ALL),
    ("GET", "/api/v1/kpis/{kpi}/series", f"/api/v1/kpis/{KPI}/series", None, ALL),
    ("GET", "/api/v1/kpis/{kpi}/breakdown", f"/api/v1/kpis/{KPI}/breakdown", None, ALL),
    ("GET", "/api/v1/kpis/{kpi}/records", f"/api/v1/kpis/{KPI}/records", None, RECORDS),
    ("GET", "/api/v1/records/{record_type}", "/api/v1/records/feedback", None, RECORDS),
    ("GET", "/api/v1/connector-kinds", "/api/v1/connector-kinds", None, ALL),
    ("GET", "/api/v1/connectors", "/api/v1/connectors", None, ALL),
    ("POST", "/api/v1/connectors", "/api/v1/connectors", {}, CONNECTORS),
    ("GET", "/api/v1/connectors/{instance_id}", "/api/v1/connectors/999", None, ALL),
    ("PATCH", "/api/v1/connectors/{instance_id}", "/api/v1/connectors/999", {}, CONNECTORS),
    (
        "POST",
        "/api/v1/connectors/{instance_id}/enable",
        "/api/v1/connectors/999/enable",
        None,
        CONNECTORS,
    ),
    (
        "POST",
        "/api/v1/connectors/{instance_id}/disable",
        "/api/v1/connectors/999/disable",
        None,
        CONNECTORS,
    ),
    (
        "POST",
        "/api/v1/connectors/{instance_id}/test",
        "/api/v1/connectors/999/test",
        None,
        CONNECTORS,
    ),
    (
        "POST",
        "/api/v1/connectors/{instance_id}/run",
        "/api/v1/connectors/999/run",
        None,
        CONNECTORS,
    ),
    ("GET", "/api/v1/connectors/{instance_id}/runs", "/api/v1/connectors/999/runs", None, ALL),
    ("GET", "/api/v1/rejected", "/api/v1/rejected", None, CONNECTORS),
    ("POST", "/api/v1/rejected/reingest", "/api/v1/rejected/reingest", {"ids": []}, CONNECTORS),
    ("GET", "/api/v1/tokens", "/api/v1/tokens", None, ADMIN),
    ("POST", "/api/v1/tokens", "/api/v1/tokens", {"name": "x", "roles": []}, ADMIN),
    ("POST", "/api/v1/tokens/{token_id}/revoke", "/api/v1/tokens/999/revoke", None, ADMIN),
    ("GET", "/api/v1/audit", "/api/v1/audit", None, ADMIN),
    ("GET", "/api/v1/incidents", "/api/v1/incidents", None, ALL),
    ("GET", "/api/v1/incidents/counts", "/api/v1/incidents/counts", None, ALL),
    ("GET", "/api/v1/incidents/stats", "/api/v1/incidents/stats", None, ALL),
    ("POST", "/api/v1/incidents/evaluate", "/api/v1/incidents/evaluate", None, RESOLVE),
    ("GET", "/api/v1/incidents/{incident_id}", "/api/v1/incidents/999", None, ALL),
    (
        "GET",
        "/api/v1/incidents/{incident_id}/records",
        "/api/v1/incidents/999/records",
        None,
        RECORDS,
    ),
    (
        "POST",
        "/api/v1/incidents/{incident_id}/acknowledge",
        "/api/v1/incidents/999/acknowledge",
        {},
        ACKNOWLEDGE,
    ),
    (
        "POST",
        "/api/v1/incidents/{incident_id}/notes",
        "/api/v1/incidents/999/notes",
        {},
        ACKNOWLEDGE,
    ),
    ("POST", "/api/v1/incidents/{incident_id}/assign", "/api/v1/incidents/999/assign", {}, RESOLVE),
    (
        "POST",
        "/api/v1/incidents/{incident_id}/resolve",
        "/api/v1/incidents/999/resolve",
        {},
        RESOLVE,
    ),
    ("GET", "/api/v1/incident-rules", "/api/v1/incident-rules", None, ALL),
    ("POST", "/api/v1/incident-rules", "/api/v1/incident-rules", {}, ADMIN),
    ("GET", "/api/v1/incident-rules/{rule_id}", "/api/v1/incident-rules/999", None, ALL),
    ("PATCH", "/api/v1/incident-rules/{rule_id}", "/api/v1/incident-rules/999", {}, ADMIN),
    ("DELETE", "/api/v1/incident-rules/{rule_id}", "/api/v1/incident-rules/999", None, ADMIN),
    ("GET", "/api/v1/layouts", "/api/v1/layouts", None, ALL),
    ("POST", "/api/v1/layouts", "/api/v1/layouts", {}, ADMIN),
    ("GET", "/api/v1/layouts/{layout_id}", "/api/v1/layouts/nope", None, ALL),
    ("PATCH", "/api/v1/layouts/{layout_id}", "/api/v1/layouts/nope", {}, ADMIN),
    ("DELETE", "/api/v1/layouts/{layout_id}", "/api/v1/layouts/nope", None, ADMIN),
    ("GET", "/api/v1/layouts/{layout_id}/tiles", "/api/v1/layouts/nope/tiles", None, ALL),
]
UNGATED_PAGES = {"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
"""Served to anyone: the wall display's page (it asks for a token) and the API's docs."""


async def call(http: httpx.AsyncClient, method: str, path: str, body: Any, **kw: Any):
    return await http.request(method, path, json=body, **kw)


def test_the_access_table_covers_every_route_of_the_app(app: FastAPI) -> None:
    routes = {  # the schema's: FastAPI keeps included routers apart from `app.routes`
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert len(routes) > 40
    table = {(method, path) for method, path, *_ in TABLE}
    assert routes - table - {("GET", page) for page in UNGATED_PAGES} == set(), (
        "a new route needs a gate (see ioc/app.py) and a row here"
    )


@pytest.mark.parametrize("role", list(Role), ids=[role.value for role in Role])
async def test_each_role_passes_exactly_the_gates_of_its_permissions(
    http: httpx.AsyncClient, make_token: MakeToken, role: Role
) -> None:
    headers = bearer(await make_token(role, name=f"only-{role}"))
    wrong = []
    for method, _, path, body, allowed in TABLE:
        response = await call(http, method, path, body, headers=headers)
        passed = response.status_code not in (401, 403)
        if passed != (allowed is None or role in allowed):
            wrong.append((method, path, response.status_code, response.text[:80]))
        if response.status_code == 403:
            assert "permission" in response.json()["detail"]
    assert wrong == []


async def test_every_gated_route_answers_401_without_a_token(http: httpx.AsyncClient) -> None:
    for method, _, path, body, allowed in TABLE:
        response = await call(http, method, path, body)
        if allowed is None:
            assert response.status_code == 200, path
            continue
        assert response.status_code == 401, (method, path)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "bearer token is required" in response.json()["detail"]


async def test_an_unknown_token_is_refused_with_401(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/kpis", headers=bearer("ioc_not-a-real-token"))
    assert response.status_code == 401
    assert response.json()["detail"] == "unknown, revoked or expired token"


async def test_a_token_with_several_roles_holds_the_union_of_their_permissions(
    http: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = bearer(await make_token(Role.LEADER, Role.ADMIN))
    assert (await http.get("/api/v1/records/feedback", headers=headers)).status_code == 200
    assert (await http.get("/api/v1/audit", headers=headers)).status_code == 200
    assert (await http.get("/api/v1/rejected", headers=headers)).status_code == 403


async def test_the_wall_display_page_is_served_without_a_token(http: httpx.AsyncClient) -> None:
    assert (await http.get("/")).status_code == 200
    assert (await http.get("/static/app.js")).status_code == 200

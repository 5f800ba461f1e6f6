"""Structured logs: JSON lines carrying the request's and the connector run's context."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import orjson
import pytest

from ioc.context import AppContext
from ioc.ops.logs import JsonFormatter, configure_logging, log_context
from ioc.scheduler.runner import poll_instance
from tests.ops.conftest import JsonLines
from tests.support.upstream import running_upstream


def test_a_json_line_carries_the_context_and_the_extra_fields() -> None:
    record = logging.LogRecord("ioc.x", logging.WARNING, __file__, 1, "hello %s", ("tỉnh",), None)
    record.rows = 3
    with log_context(request_id="r1", route="/a"), log_context(status=200):
        line = JsonFormatter().format(record)
    entry = orjson.loads(line)
    assert {k: entry[k] for k in ("level", "logger", "message", "request_id", "status")} == {
        "level": "WARNING",
        "logger": "ioc.x",
        "message": "hello tỉnh",
        "request_id": "r1",
        "status": 200,
    }
    assert entry["route"] == "/a" and entry["rows"] == 3 and entry["time"].endswith("+00:00")


async def test_each_request_is_logged_once_with_its_id_route_status_and_duration(
    http: httpx.AsyncClient, json_logs: JsonLines
) -> None:
    response = await http.get("/api/v1/connectors/77", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    [entry] = json_logs.entries("ioc.http")
    assert {k: entry[k] for k in ("request_id", "method", "route", "status")} == {
        "request_id": "abc-123",
        "method": "GET",
        "route": "/api/v1/connectors/{instance_id}",
        "status": 404,
    }
    assert entry["duration_ms"] >= 0


async def test_a_request_without_an_id_gets_one(http: httpx.AsyncClient) -> None:
    first, second = (await http.get("/healthz")), (await http.get("/healthz"))
    assert len(first.headers["x-request-id"]) == 16
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_a_connector_failure_is_logged_with_the_instance_kind_and_run_id(
    ctx: AppContext, json_logs: JsonLines
) -> None:
    from tests.support.factories import make_instance

    async for upstream in running_upstream():
        instance_id = await make_instance(ctx, name="onestop-dn", config={"base_url": upstream.url})
        await upstream.set_faults(mode="error")
        await poll_instance(ctx, instance_id, force=True)
        await poll_instance(ctx, instance_id, force=True)
    failures = [e for e in json_logs.entries("ioc.scheduler.runner") if "failing" in e["message"]]
    assert len(failures) == 1
    assert (failures[0]["connector"], failures[0]["kind"]) == ("onestop-dn", "onestop")
    assert len(failures[0]["run_id"]) == 12


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put the root logger (and uvicorn's) back as they were after a test reconfigures them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger("uvicorn.access").disabled
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logging.getLogger("uvicorn.access").disabled = access


@pytest.mark.usefixtures("restored_logging")
def test_json_format_routes_every_logger_to_stderr_as_json_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(level="INFO", fmt="json")
    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("httpx").info("HTTP Request: GET …")  # quietened to warnings
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["logger"], e["message"]) for e in lines] == [
        ("uvicorn.error", "Started server process")
    ]
    assert logging.getLogger("uvicorn.access").disabled

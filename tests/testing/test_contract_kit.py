"""The contract kit itself: a well-behaved connector passes, each kind of misbehaviour fails the
test meant to catch it with a message that says what is wrong."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import httpx
import pytest
from pydantic import ConfigDict, SecretStr

from ioc.sdk import (
    Batch,
    Connector,
    ConnectorAuthError,
    ConnectorUnavailable,
    Cursor,
    Dossier,
    Observation,
    PeriodKindName,
    RecordRejected,
)
from ioc.testing import (
    ConnectorContract,
    PageBudgetExceeded,
    PollTimedOut,
    capture_payloads,
    poll_to_exhaustion,
    secret_fields,
    unused_local_url,
)

BASE = datetime(2025, 1, 1, tzinfo=UTC)
PAYLOADS = [
    {"id": f"m-{n}", "value": n, "at": (BASE + timedelta(hours=n // 2)).isoformat()}
    for n in range(10)
] + [{"id": "broken", "value": "n/a", "at": (BASE + timedelta(hours=9)).isoformat()}]
GOOD = {"source": "up", "page_size": 4}
UNREACHABLE = {"source": "down"}
REFUSED = {"source": "up", "api_key": "wrong"}

Failure = (AssertionError, pytest.fail.Exception)


def map_payload(payload: Mapping[str, Any]) -> Observation:
    """A payload as a yearly observation of the province."""
    if not isinstance(payload.get("value"), int):
        raise RecordRejected(f"value {payload.get('value')!r} is not a number")
    return Observation(
        external_id=payload["id"],
        unit_code="75",
        source_updated_at=datetime.fromisoformat(payload["at"]),
        metric="test_metric",
        period_kind=PeriodKindName.YEAR,
        period_start=date(2024, 1, 1),
        value=payload["value"],
    )


class ListConnector(Connector):
    """A well-behaved connector over an in-memory list, keyset-paged by position."""

    kind = "listed"
    title = "Danh sách thử"
    record_types: ClassVar[tuple[type, ...]] = (Observation,)

    class Config(Connector.Config):
        """Which in-memory source, and its page size."""

        source: str
        page_size: int = 4
        api_key: SecretStr | None = None

    config: Config

    async def poll(self, cursor: Cursor) -> Batch:
        """The next `page_size` payloads after the cursor's position."""
        if self.config.source == "down":
            raise ConnectorUnavailable("cannot reach the in-memory source")
        if self.config.api_key is not None and self.config.api_key.get_secret_value() != "key":
            raise ConnectorAuthError("credentials refused")
        start = self.start(cursor)
        page = PAYLOADS[start : start + self.config.page_size]
        end = start + len(page)
        return Batch.from_payloads(
            page,
            map_payload,
            cursor={"position": end} if page else dict(cursor),
            has_more=end < len(PAYLOADS),
            id_field="id",
        )

    def start(self, cursor: Cursor) -> int:
        """Where the cursor points."""
        return int(cursor.get("position", 0))

    def parse(self, payload: Mapping[str, Any]) -> Observation:
        """Map one payload."""
        return map_payload(payload)


class Contract(ConnectorContract):
    """The kit pointed at `ListConnector` (not collected: its name does not start with Test)."""

    connector_class = ListConnector


def contract_for(connector: type[Connector], **settings: Any) -> ConnectorContract:
    """A contract instance for `connector`, with class settings overridden."""
    return type("Contract", (ConnectorContract,), {"connector_class": connector, **settings})()


async def failure_of(action: Awaitable[Any] | Callable[[], Any]) -> str:
    """The message a contract test failed with; fails itself when the test passed."""
    try:
        result = action() if callable(action) else action
        if isinstance(result, Awaitable):
            await result
    except Failure as exc:
        return str(exc)
    pytest.fail("the contract test passed although the connector breaks it")


# ---------------------------------------------------------------- the good connector


async def test_a_well_behaved_connector_passes_every_contract_test() -> None:
    contract = Contract()

    contract.test_declares_a_kind_a_title_and_canonical_record_types()
    contract.test_config_is_a_pydantic_model_with_a_json_schema(GOOD)
    contract.test_config_refuses_an_unknown_key(GOOD)
    contract.test_config_refuses_to_go_without_a_required_field(GOOD)
    contract.test_secrets_are_secret_str_and_never_shown_in_plain(GOOD)
    await contract.test_check_passes_against_the_live_source(GOOD)
    await contract.test_polling_from_an_empty_cursor_ends_within_the_page_budget(GOOD)
    await contract.test_every_record_is_a_declared_type_and_survives_a_json_round_trip(GOOD)
    await contract.test_every_reject_keeps_its_payload_and_a_readable_reason(GOOD)
    await contract.test_every_cursor_is_small_json(GOOD)
    await contract.test_every_page_with_more_to_come_moves_the_cursor_and_holds_items(GOOD)
    await contract.test_a_walk_returns_each_version_once(GOOD)
    await contract.test_polling_from_the_final_cursor_never_goes_backwards(GOOD)
    await contract.test_polling_the_same_cursor_twice_returns_the_same_versions(GOOD)
    await contract.test_unreachable_source_raises_connector_unavailable(UNREACHABLE)
    await contract.test_refused_credentials_raise_connector_auth_error(REFUSED)
    await contract.test_parse_maps_a_raw_payload_exactly_as_poll_did(GOOD, [])
    contract.test_parse_refuses_an_empty_payload_with_a_mapping_error(GOOD)


async def test_poll_to_exhaustion_returns_records_rejects_final_cursor_and_pages() -> None:
    connector = ListConnector(ListConnector.Config(source="up", page_size=4))

    walk = await poll_to_exhaustion(connector, {}, max_pages=10)

    assert [len(page.records) + len(page.rejected) for page in walk.pages] == [4, 4, 3]
    assert [r.external_id for r in walk.records] == [f"m-{n}" for n in range(10)]
    assert [(r.external_id, r.reason) for r in walk.rejected] == [
        ("broken", "value 'n/a' is not a number")
    ]
    assert walk.cursor == {"position": 11}
    assert walk.cursors == [{}, {"position": 4}, {"position": 8}, {"position": 11}]


async def test_capture_payloads_pairs_each_raw_payload_with_what_it_became() -> None:
    connector = ListConnector(ListConnector.Config(source="up", page_size=20))

    with capture_payloads() as captured:
        await connector.poll({})

    assert [item.payload for item in captured] == PAYLOADS
    assert captured[0].record == map_payload(PAYLOADS[0])
    assert isinstance(captured[-1].error, RecordRejected)
    assert Batch.from_payloads.__func__ is Batch.__dict__["from_payloads"].__func__


def test_secret_fields_finds_optional_secret_str_fields() -> None:
    assert secret_fields(ListConnector.Config) == ["api_key"]


def test_unused_local_url_refuses_connections() -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(unused_local_url(), timeout=2)


# ---------------------------------------------------------------- each misbehaviour caught


async def test_page_budget_stops_a_connector_that_never_says_it_is_done() -> None:
    class Endless(ListConnector):
        async def poll(self, cursor: Cursor) -> Batch:
            return Batch(cursor={"n": int(cursor.get("n", 0)) + 1}, has_more=True)

    with pytest.raises(PageBudgetExceeded, match=r"still had more after 5 pages"):
        await poll_to_exhaustion(Endless(Endless.Config(source="up")), {}, max_pages=5)


async def test_poll_timeout_stops_a_connector_that_hangs() -> None:
    class Hanging(ListConnector):
        async def poll(self, cursor: Cursor) -> Batch:
            await __import__("asyncio").sleep(10)
            raise AssertionError("unreachable")

    with pytest.raises(PollTimedOut, match=r"did not return within 0.05s"):
        await poll_to_exhaustion(Hanging(Hanging.Config(source="up")), {}, poll_timeout=0.05)


async def test_cursor_that_goes_back_to_the_start_fails_the_backwards_test() -> None:
    class Forgetful(ListConnector):
        def start(self, cursor: Cursor) -> int:
            position = int(cursor.get("position", 0))
            return 0 if position >= len(PAYLOADS) else position

    message = await failure_of(
        contract_for(Forgetful).test_polling_from_the_final_cursor_never_goes_backwards(GOOD)
    )

    assert "'m-0'" in message and "came again" in message


async def test_inclusive_watermark_may_repeat_only_versions_stamped_at_it() -> None:
    class Inclusive(ListConnector):
        def start(self, cursor: Cursor) -> int:
            position = int(cursor.get("position", 0))
            return position - 2 if position >= len(PAYLOADS) else position

    strict = contract_for(Inclusive)
    lenient = contract_for(Inclusive, redelivers_at_watermark=True)

    message = await failure_of(strict.test_polling_from_the_final_cursor_never_goes_backwards(GOOD))
    await lenient.test_polling_from_the_final_cursor_never_goes_backwards(GOOD)
    assert "'broken'" not in message  # rejects are not versions; the last record repeats
    assert "'m-9'" in message


async def test_page_that_repeats_the_previous_one_fails_the_each_version_once_test() -> None:
    class Stuttering(ListConnector):
        def start(self, cursor: Cursor) -> int:
            return max(0, int(cursor.get("position", 0)) - 1)

    message = await failure_of(contract_for(Stuttering).test_a_walk_returns_each_version_once(GOOD))

    assert "page 2" in message and "'m-3'" in message


async def test_has_more_without_moving_the_cursor_fails_the_paging_test() -> None:
    class Stuck(ListConnector):
        async def poll(self, cursor: Cursor) -> Batch:
            batch = await super().poll(cursor)
            if cursor.get("position") == 4:
                return batch.model_copy(update={"cursor": dict(cursor)})
            return batch

    message = await failure_of(
        contract_for(Stuck).test_every_page_with_more_to_come_moves_the_cursor_and_holds_items(GOOD)
    )

    assert "page 2 says has_more but kept cursor {'position': 4}" in message


async def test_empty_page_with_more_to_come_fails_unless_documented() -> None:
    class Gappy(ListConnector):
        async def poll(self, cursor: Cursor) -> Batch:
            if cursor.get("position") == 4 and not cursor.get("gap"):
                return Batch(cursor={"position": 4, "gap": True}, has_more=True)
            return await super().poll({"position": cursor.get("position", 0)})

    message = await failure_of(
        contract_for(Gappy).test_every_page_with_more_to_come_moves_the_cursor_and_holds_items(GOOD)
    )
    documented = contract_for(Gappy, empty_pages_while_more=True)

    assert "page 2 is empty although has_more is true" in message
    await documented.test_every_page_with_more_to_come_moves_the_cursor_and_holds_items(GOOD)


async def test_a_poll_that_changes_on_a_second_call_fails_the_idempotence_test() -> None:
    class Drifting(ListConnector):
        calls = 0

        def start(self, cursor: Cursor) -> int:
            Drifting.calls += 1
            return int(cursor.get("position", 0)) + Drifting.calls % 2  # shifts every other call

    message = await failure_of(
        contract_for(Drifting).test_polling_the_same_cursor_twice_returns_the_same_versions(GOOD)
    )

    assert "a second poll of {}" in message


async def test_bare_transport_error_fails_the_unreachable_test_naming_the_error() -> None:
    class Leaky(ListConnector):
        async def poll(self, cursor: Cursor) -> Batch:
            raise httpx.ConnectError("All connection attempts failed")

    message = await failure_of(
        contract_for(Leaky).test_unreachable_source_raises_connector_unavailable(UNREACHABLE)
    )

    assert "httpx.ConnectError" in message and "instead of ConnectorUnavailable" in message


async def test_refused_credentials_mapped_to_unavailable_fail_the_auth_test() -> None:
    class Vague(ListConnector):
        async def poll(self, cursor: Cursor) -> Batch:
            raise ConnectorUnavailable("HTTP 401")

    message = await failure_of(
        contract_for(Vague).test_refused_credentials_raise_connector_auth_error(REFUSED)
    )

    assert "instead of ConnectorAuthError" in message


async def test_auth_test_is_skipped_only_when_no_failing_config_is_given() -> None:
    with pytest.raises(pytest.skip.Exception, match="no auth_failing_config"):
        await Contract().test_refused_credentials_raise_connector_auth_error(None)


async def test_undeclared_record_type_fails_the_record_test() -> None:
    class Mislabelled(ListConnector):
        record_types = (Dossier,)

    message = await failure_of(
        contract_for(
            Mislabelled
        ).test_every_record_is_a_declared_type_and_survives_a_json_round_trip(GOOD)
    )

    assert "Observation 'm-0' is not one of ['Dossier']" in message


async def test_parse_that_maps_differently_from_poll_fails_the_parse_test() -> None:
    class Inconsistent(ListConnector):
        def parse(self, payload: Mapping[str, Any]) -> Observation:
            return map_payload(payload).model_copy(update={"metric": "other"})

    await failure_of(
        contract_for(Inconsistent).test_parse_maps_a_raw_payload_exactly_as_poll_did(GOOD, [])
    )


async def test_connector_without_parse_passes_by_the_documented_default() -> None:
    class NoParse(ListConnector):
        parse = Connector.parse  # type: ignore[assignment]

    contract = contract_for(NoParse)

    await contract.test_parse_maps_a_raw_payload_exactly_as_poll_did(GOOD, [])
    contract.test_parse_refuses_an_empty_payload_with_a_mapping_error(GOOD)


async def test_parse_that_crashes_on_an_empty_payload_fails() -> None:
    class Crashing(ListConnector):
        def parse(self, payload: Mapping[str, Any]) -> Observation:
            if not payload:
                raise AttributeError("'NoneType' object has no attribute 'strip'")
            return map_payload(payload)

    await failure_of(
        lambda: contract_for(Crashing).test_parse_refuses_an_empty_payload_with_a_mapping_error(
            GOOD
        )
    )


async def test_plain_str_secret_fails_the_secrets_test() -> None:
    class PlainToken(ListConnector):
        class Config(ListConnector.Config):
            access_token: str = ""

    message = await failure_of(
        lambda: contract_for(PlainToken).test_secrets_are_secret_str_and_never_shown_in_plain(GOOD)
    )

    assert "access_token" in message


async def test_config_that_ignores_unknown_keys_fails_the_config_test() -> None:
    class Lax(ListConnector):
        class Config(ListConnector.Config):
            model_config = ConfigDict(extra="ignore")

    await failure_of(lambda: contract_for(Lax).test_config_refuses_an_unknown_key(GOOD))


async def test_bad_kind_fails_the_declaration_test() -> None:
    class Shouting(ListConnector):
        kind = "My Connector"

    message = await failure_of(
        contract_for(Shouting).test_declares_a_kind_a_title_and_canonical_record_types
    )

    assert "'My Connector'" in message


def test_kit_imports_without_fastapi_or_a_database() -> None:
    code = (
        "import sys\n"
        "for name in ('fastapi', 'starlette', 'uvicorn', 'sqlalchemy', 'asyncpg', 'aiosqlite'):\n"
        "    sys.modules[name] = None\n"
        "import ioc.testing\n"
        "print(ioc.testing.ConnectorContract.__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ConnectorContract"

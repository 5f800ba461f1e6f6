"""`ConnectorContract`: the tests every connector must pass, inherited by subclassing.

Definitions the tests hold a connector to (a *version* of a record is its
`(record_type, external_id, source_updated_at)`; a *walk* is polling from a cursor, following
`has_more`, until a page says there is no more):

- **Paging ends**: a walk from `{}` reaches `has_more=False` within `max_pages` pages, and every
  page that says `has_more=True` returns a cursor different from the one it was given (else the
  runtime would fetch the same page forever) and holds at least one fetched item, unless the
  class sets `empty_pages_while_more = True` (a source whose pages can be all filtered out).
- **Each version once**: no version comes twice in one walk.
- **Never backwards**: walking again from the final cursor of a walk returns no version the first
  walk returned and no older version of a record it returned. With `redelivers_at_watermark =
  True` (an inclusive `>=` watermark) a version may come again only when it is stamped exactly
  at the watermark, the latest `source_updated_at` returned before it.
  A protocol without a change filter that re-reads a window every cycle (Open311) sets
  `rereads_unchanged_versions = True`: versions may come again, never an older one.
- **Idempotent**: polling the same cursor again, on the same connector or a new one, returns the
  same versions and the same rejects (in any order) and the same `has_more`.

The source behind the `config` fixture must hold still for the length of a test (a simulator at
`speed=0`), hold at least one record, and answer within `poll_timeout_seconds`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError

from ioc.sdk import (
    RECORD_TYPES,
    Connector,
    ConnectorAuthError,
    ConnectorError,
    ConnectorUnavailable,
    Record,
    RecordRejected,
)
from ioc.testing.configs import (
    SECRET_NAME_PATTERN,
    plain_secret_suspects,
    secret_fields,
    unused_local_url,
)
from ioc.testing.polling import (
    Exhaustion,
    VersionKey,
    capture_payloads,
    poll_once,
    poll_to_exhaustion,
    version_key,
)

MAPPING_ERRORS = (RecordRejected, ValidationError, ValueError, TypeError, KeyError)
"""What a mapping function may raise for a bad payload: `Batch.from_payloads` turns these into
`Rejected` rows with a reason; anything else would break the whole page."""

KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
SECRET_SENTINEL = "contract-kit-secret-7f3a9c"
UNKNOWN_KEY = "contract_kit_unknown_key"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"


async def _expect_error(expected: type[ConnectorError], action: Awaitable[Any], hint: str) -> None:
    """Await `action` and fail unless it raises `expected` (or a subclass)."""
    try:
        await action
    except expected:
        return
    except Exception as exc:
        pytest.fail(f"raised {_describe(exc)} instead of {expected.__name__}: {hint}")
    pytest.fail(f"returned normally instead of raising {expected.__name__}: {hint}")


def _expect_mapping_error(connector: Connector, payload: Mapping[str, Any]) -> None:
    """Fail unless `parse(payload)` raises an error `Batch.from_payloads` turns into a reject."""
    try:
        record = connector.parse(payload)
    except MAPPING_ERRORS:
        return
    except Exception as exc:
        pytest.fail(
            f"parse({json.dumps(payload, default=str)[:200]}) raised {_describe(exc)}: raise "
            "RecordRejected with a reason instead, or the whole page fails"
        )
    pytest.fail(f"parse() mapped an unusable payload to {record!r}")


def _later_versions_only(
    walked: list[VersionKey],
    seen: list[VersionKey],
    *,
    watermark_repeats: bool,
    where: str,
    any_repeats: bool = False,
) -> None:
    """Fail when `walked` repeats a version of `seen` or goes back to an older one."""
    newest: dict[tuple[str, str], Any] = {}
    for record_type, external_id, updated in seen:
        key = (record_type, external_id)
        newest[key] = max(updated, newest.get(key, updated))
    watermark = max((updated for _, _, updated in seen), default=None)
    seen_set = set(seen)
    for version in walked:
        record_type, external_id, updated = version
        if version in seen_set:
            if any_repeats or (watermark_repeats and updated == watermark):
                continue
            pytest.fail(
                f"{where}: {record_type} {external_id!r} at {updated.isoformat()} came again "
                f"(the latest time delivered before it was {watermark})"
            )
        previous = newest.get((record_type, external_id))
        if previous is not None and updated < previous:
            pytest.fail(
                f"{where}: {record_type} {external_id!r} went back from {previous.isoformat()} "
                f"to an older version at {updated.isoformat()}"
            )


class ConnectorContract:
    """Base class of a connector's contract tests: subclass it as `Test<YourConnector>`.

    Set `connector_class` and define a `config` fixture (a config dict for a live source that
    holds still). Optional fixtures: `unreachable_config` (default: `config` with `base_url`
    pointing at a closed local port), `auth_failing_config` (default: None, which skips the one
    credentials test) and `sample_payloads` (raw upstream payloads `parse()` must map).
    """

    connector_class: ClassVar[type[Connector]]
    max_pages: ClassVar[int] = 200
    """Page budget of one walk."""
    poll_timeout_seconds: ClassVar[float] = 30.0
    """Longest one `poll()` may take."""
    max_cursor_bytes: ClassVar[int] = 2048
    """Largest a cursor may be, as compact JSON: a cursor is a position, not a cache."""
    empty_pages_while_more: ClassVar[bool] = False
    """Set (and say why) when a page may hold no item although `has_more` is true."""
    redelivers_at_watermark: ClassVar[bool] = False
    """Set when the cursor is an inclusive watermark that re-reads the versions stamped at it."""
    rereads_unchanged_versions: ClassVar[bool] = False
    """Set when the protocol has no change filter and every cycle re-reads a window (Open311):
    a later walk may bring versions again, but still never an older version of a record."""
    secret_name_pattern: ClassVar[re.Pattern[str]] = SECRET_NAME_PATTERN
    """Config fields whose names match must be typed `SecretStr`."""

    # ------------------------------------------------------------ fixtures to provide

    @pytest.fixture
    def config(self) -> dict[str, Any]:
        """A config for a live source holding at least one record; define it in your class."""
        pytest.fail(f"{type(self).__name__} must define a `config` fixture returning a dict")

    @pytest.fixture
    def unreachable_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """A config whose source cannot be reached; by default `base_url` on a closed port."""
        if "base_url" not in self.connector_class.Config.model_fields:
            pytest.fail(
                f"{self.connector_class.Config.__qualname__} has no base_url: define an "
                "`unreachable_config` fixture"
            )
        return {**config, "base_url": unused_local_url()}

    @pytest.fixture
    def auth_failing_config(self) -> dict[str, Any] | None:
        """A config whose credentials the source refuses; None when the source has none."""
        return None

    @pytest.fixture
    def sample_payloads(self) -> list[dict[str, Any]]:
        """Raw upstream payloads (e.g. recorded fixtures) that `parse()` must map."""
        return []

    # ------------------------------------------------------------ helpers

    def make(self, config: Mapping[str, Any]) -> Connector:
        """A connector built the way the runtime builds one: config validated, then passed."""
        cls = self.connector_class
        return cls(cls.Config.model_validate(dict(config)))

    @contextlib.asynccontextmanager
    async def opened(self, config: Mapping[str, Any]) -> AsyncIterator[Connector]:
        """A connector from `config`, closed (`aclose()`) when the block ends."""
        connector = self.make(config)
        try:
            yield connector
        finally:
            await connector.aclose()

    async def walk(
        self, connector: Connector, cursor: Mapping[str, Any] | None = None
    ) -> Exhaustion:
        """Poll from `cursor` to exhaustion within this class's page and time budgets."""
        return await poll_to_exhaustion(
            connector,
            dict(cursor or {}),
            max_pages=self.max_pages,
            poll_timeout=self.poll_timeout_seconds,
        )

    # ------------------------------------------------------------ declarations and config

    def test_declares_a_kind_a_title_and_canonical_record_types(self) -> None:
        """`kind` is a short lower-case slug, `title` a label, `record_types` canonical."""
        cls = self.connector_class
        assert isinstance(cls, type) and issubclass(cls, Connector), "must derive from Connector"
        kind = getattr(cls, "kind", None)
        assert isinstance(kind, str) and KIND_PATTERN.match(kind), (
            f"kind {kind!r} must be a lower-case slug of at most 50 characters ([a-z0-9_])"
        )
        assert isinstance(cls.title, str) and cls.title.strip(), "title must be a non-empty label"
        assert isinstance(cls.record_types, tuple) and cls.record_types, (
            "record_types must be a non-empty tuple of canonical record classes"
        )
        canonical = set(RECORD_TYPES.values())
        for record_type in cls.record_types:
            assert record_type in canonical, (
                f"{record_type!r} is not a canonical record type (ioc.sdk.RECORD_TYPES)"
            )

    def test_config_is_a_pydantic_model_with_a_json_schema(self, config: dict[str, Any]) -> None:
        """`Config` is a pydantic model, its JSON schema serialises, the fixture config fits."""
        model = self.connector_class.Config
        assert isinstance(model, type) and issubclass(model, BaseModel)
        schema = model.model_json_schema()
        assert schema.get("type") == "object"
        json.dumps(schema)
        for name in schema.get("properties", {}):
            assert name in model.model_fields
        assert isinstance(self.make(config), self.connector_class)

    def test_config_refuses_an_unknown_key(self, config: dict[str, Any]) -> None:
        """A misspelt setting is an error, never silently ignored (extra="forbid")."""
        with pytest.raises(ValidationError):
            self.connector_class.Config.model_validate({**config, UNKNOWN_KEY: 1})

    def test_config_refuses_to_go_without_a_required_field(self, config: dict[str, Any]) -> None:
        """`{}` and the config less any one required field are refused (when there are any)."""
        model = self.connector_class.Config
        required = [name for name, field in model.model_fields.items() if field.is_required()]
        if not required:
            model.model_validate({})  # a connector with no required setting accepts {}
            return
        with pytest.raises(ValidationError):
            model.model_validate({})
        for name in required:
            lacking = {key: value for key, value in config.items() if key != name}
            with pytest.raises(ValidationError):
                model.model_validate(lacking)

    def test_secrets_are_secret_str_and_never_shown_in_plain(self, config: dict[str, Any]) -> None:
        """Secret fields are `SecretStr`; no repr, str or JSON dump of the config shows one."""
        model = self.connector_class.Config
        suspects = plain_secret_suspects(model, self.secret_name_pattern)
        assert not suspects, f"fields named like secrets must be typed SecretStr: {suspects}"
        secrets = secret_fields(model)
        if not secrets:
            return
        with_secrets = {**config, **{name: SECRET_SENTINEL for name in secrets}}
        validated = model.model_validate(with_secrets)
        for name in secrets:
            assert isinstance(getattr(validated, name), SecretStr | SecretBytes), name
        shown = {
            "repr": repr(validated),
            "str": str(validated),
            "model_dump(mode='json')": json.dumps(validated.model_dump(mode="json")),
            "model_dump_json()": validated.model_dump_json(),
            "repr(connector)": repr(self.make(with_secrets)),
        }
        for how, text in shown.items():
            assert SECRET_SENTINEL not in text, f"a secret shows in plain in {how}"

    # ------------------------------------------------------------ against the live source

    @pytest.mark.asyncio
    async def test_check_passes_against_the_live_source(self, config: dict[str, Any]) -> None:
        """`check()` returns without error when the source is up and the config right."""
        async with self.opened(config) as connector:
            await connector.check()

    @pytest.mark.asyncio
    async def test_polling_from_an_empty_cursor_ends_within_the_page_budget(
        self, config: dict[str, Any]
    ) -> None:
        """A walk from `{}` reaches has_more=False within `max_pages`, and finds records."""
        async with self.opened(config) as connector:
            walk = await self.walk(connector)
        assert walk.pages[-1].has_more is False
        assert walk.records, "the source behind the `config` fixture must hold some records"

    @pytest.mark.asyncio
    async def test_every_record_is_a_declared_type_and_survives_a_json_round_trip(
        self, config: dict[str, Any]
    ) -> None:
        """Records are instances of `record_types`, and re-validate equal from their JSON."""
        async with self.opened(config) as connector:
            walk = await self.walk(connector)
        declared = self.connector_class.record_types
        for record in walk.records:
            assert isinstance(record, declared), (
                f"{type(record).__name__} {record.external_id!r} is not one of "
                f"{[t.__name__ for t in declared]}"
            )
            assert isinstance(record, Record)
            again = type(record).model_validate_json(record.model_dump_json())
            assert again == record, f"{record.external_id!r} changes in a JSON round trip"

    @pytest.mark.asyncio
    async def test_every_reject_keeps_its_payload_and_a_readable_reason(
        self, config: dict[str, Any]
    ) -> None:
        """Rejected items carry a non-blank reason and the raw payload as a JSON object."""
        async with self.opened(config) as connector:
            walk = await self.walk(connector)
        for reject in walk.rejected:
            assert reject.reason.strip(), f"reject {reject.external_id!r} has no reason"
            assert isinstance(reject.payload, dict)
            json.dumps(reject.payload, default=str)

    @pytest.mark.asyncio
    async def test_every_cursor_is_small_json(self, config: dict[str, Any]) -> None:
        """Each page's cursor is a dict that survives JSON unchanged and stays small."""
        async with self.opened(config) as connector:
            walk = await self.walk(connector)
        for cursor in walk.cursors[1:]:
            assert isinstance(cursor, dict)
            text = json.dumps(cursor, separators=(",", ":"))
            assert json.loads(text) == cursor, f"cursor {cursor!r} changes through JSON"
            assert len(text.encode()) <= self.max_cursor_bytes, f"cursor is {len(text)} bytes"

    @pytest.mark.asyncio
    async def test_every_page_with_more_to_come_moves_the_cursor_and_holds_items(
        self, config: dict[str, Any]
    ) -> None:
        """While has_more is true the cursor changes each page, and pages are not empty."""
        cursor: dict[str, Any] = {}
        async with self.opened(config) as connector:
            for number in range(1, self.max_pages + 1):
                page = await poll_once(connector, cursor, poll_timeout=self.poll_timeout_seconds)
                if not page.has_more:
                    return
                assert page.cursor != cursor, (
                    f"page {number} says has_more but kept cursor {cursor}: "
                    "the runtime would fetch it forever"
                )
                items = max(page.fetched, len(page.records) + len(page.rejected))
                assert items or self.empty_pages_while_more, (
                    f"page {number} is empty although has_more is true "
                    "(set empty_pages_while_more = True if the source documents this)"
                )
                cursor = page.cursor
        pytest.fail(f"still has_more after max_pages={self.max_pages} pages")

    @pytest.mark.asyncio
    async def test_a_walk_returns_each_version_once(self, config: dict[str, Any]) -> None:
        """No (record_type, external_id, source_updated_at) comes twice in one walk."""
        async with self.opened(config) as connector:
            walk = await self.walk(connector)
        seen: list[VersionKey] = []
        for number, page in enumerate(walk.pages, 1):
            versions = [version_key(record) for record in page.records]
            repeated = {v for v in versions if versions.count(v) > 1}
            assert not repeated, f"page {number} holds the same version twice: {repeated}"
            _later_versions_only(
                versions,
                seen,
                watermark_repeats=self.redelivers_at_watermark,
                where=f"page {number} of a walk from {{}}",
            )
            seen.extend(versions)

    @pytest.mark.asyncio
    async def test_polling_from_the_final_cursor_never_goes_backwards(
        self, config: dict[str, Any]
    ) -> None:
        """A walk from the final cursor returns no version already returned, nor an older one."""
        async with self.opened(config) as connector:
            first = await self.walk(connector)
            second = await self.walk(connector, first.cursor)
        _later_versions_only(
            second.versions,
            first.versions,
            watermark_repeats=self.redelivers_at_watermark,
            any_repeats=self.rereads_unchanged_versions,
            where=f"walk from the final cursor {json.dumps(first.cursor, default=str)}",
        )

    @pytest.mark.asyncio
    async def test_polling_the_same_cursor_twice_returns_the_same_versions(
        self, config: dict[str, Any]
    ) -> None:
        """Re-polling a cursor (same or new connector) gives the same versions and rejects."""

        def outcome(page: Any) -> tuple[list[VersionKey], list[tuple[str, str]], bool]:
            versions = sorted(version_key(record) for record in page.records)
            rejects = sorted((r.external_id or "", r.reason) for r in page.rejected)
            return versions, rejects, page.has_more

        limit = self.poll_timeout_seconds
        async with self.opened(config) as connector, self.opened(config) as fresh:
            first = await poll_once(connector, {}, poll_timeout=limit)
            cursors: list[dict[str, Any]] = [{}]
            if first.has_more:
                cursors.append(first.cursor)
            for cursor in cursors:
                once = outcome(await poll_once(connector, cursor, poll_timeout=limit))
                again = outcome(await poll_once(connector, cursor, poll_timeout=limit))
                elsewhere = outcome(await poll_once(fresh, cursor, poll_timeout=limit))
                where = json.dumps(cursor, default=str)
                assert again == once, f"a second poll of {where} returned something else"
                assert elsewhere == once, f"a new connector polling {where} got something else"

    # ------------------------------------------------------------ error mapping

    @pytest.mark.asyncio
    async def test_unreachable_source_raises_connector_unavailable(
        self, unreachable_config: dict[str, Any]
    ) -> None:
        """poll() and check() on an unreachable source raise `ConnectorUnavailable`."""
        hint = "wrap transport errors (httpx.HTTPError, OSError, timeouts) in ConnectorUnavailable"
        async with self.opened(unreachable_config) as connector:
            await _expect_error(
                ConnectorUnavailable,
                poll_once(connector, {}, poll_timeout=self.poll_timeout_seconds),
                f"poll({{}}): {hint}",
            )
            await _expect_error(ConnectorUnavailable, connector.check(), f"check(): {hint}")

    @pytest.mark.asyncio
    async def test_refused_credentials_raise_connector_auth_error(
        self, auth_failing_config: dict[str, Any] | None
    ) -> None:
        """With credentials the source refuses, poll() raises `ConnectorAuthError`."""
        if auth_failing_config is None:
            pytest.skip("no auth_failing_config fixture: the source has no credentials to refuse")
        async with self.opened(auth_failing_config) as connector:
            await _expect_error(
                ConnectorAuthError,
                poll_once(connector, {}, poll_timeout=self.poll_timeout_seconds),
                "map HTTP 401/403 to ConnectorAuthError",
            )

    # ------------------------------------------------------------ parse()

    def _parses(self) -> bool:
        return self.connector_class.parse is not Connector.parse

    @pytest.mark.asyncio
    async def test_parse_maps_a_raw_payload_exactly_as_poll_did(
        self, config: dict[str, Any], sample_payloads: list[dict[str, Any]]
    ) -> None:
        """`parse(payload)` equals the record poll() made of it; without parse(), the default
        raises NotImplementedError (the runtime then cannot re-ingest rejects)."""
        async with self.opened(config) as connector:
            if not self._parses():
                with pytest.raises(NotImplementedError):
                    connector.parse({})
                return
            with capture_payloads() as captured:
                await self.walk(connector)
            mapped = [item for item in captured if item.record is not None]
            assert mapped or sample_payloads, (
                "poll() mapped nothing through Batch.from_payloads: provide `sample_payloads`"
            )
            for item in mapped:
                assert connector.parse(item.payload) == item.record
            for item in captured:
                if item.record is None:
                    _expect_mapping_error(connector, item.payload)
            for payload in sample_payloads:
                assert isinstance(connector.parse(payload), self.connector_class.record_types)

    def test_parse_refuses_an_empty_payload_with_a_mapping_error(
        self, config: dict[str, Any]
    ) -> None:
        """`parse({})` raises what `Batch.from_payloads` turns into a reject (or the default)."""
        connector = self.make(config)
        if not self._parses():
            with pytest.raises(NotImplementedError):
                connector.parse({})
            return
        _expect_mapping_error(connector, {})

"""The WebSocket protocol fuzzed over a real connection: hypothesis sends malformed, mistyped and
oversized messages (text and binary); the server answers each with `error` messages (or what a
valid message earns), keeps the connection open, and keeps serving another client meanwhile."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from ioc.config import Settings
from tests.support.threaded import serve_service

WATCHED = "kpi:onestop.backlog:75"
SERVER_TYPES = {"error", "snapshot", "update", "ping", "pong"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
topic_names = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda kpi, unit: f"kpi:{kpi}:{unit}",
        st.sampled_from(["onestop.backlog", "health.bed_occupancy", "no.such", ""]) | st.text(),
        st.sampled_from(["75", "26068", "00000", ""]) | st.text(max_size=8),
    ),
)
protocol_shaped = st.fixed_dictionaries(
    {"type": st.sampled_from(["subscribe", "unsubscribe", "ping", "pong"]) | json_values},
    optional={
        "topics": st.lists(topic_names, max_size=5) | json_values,
        "resume": json_values,
    },
).map(json.dumps)

# What the server must refuse with an error whatever else it does.
never_valid = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=60).filter(lambda t: not _is_json_object(t)),
    st.integers(65 * 1024, 300 * 1024).map(lambda n: '{"type":"ping","pad":"' + "x" * n + '"}'),
)
messages = st.one_of(protocol_shaped, json_values.map(json.dumps))


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        return False


_sentinels = itertools.count()


def replies(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every frame the server sent before answering a sentinel (a subscription to a unique
    unknown topic, whose error ends the exchange)."""
    sentinel = f"sentinel-{next(_sentinels)}"
    ws.send(orjson.dumps({"type": "subscribe", "topics": [sentinel]}).decode())
    frames = []
    while True:
        frame = orjson.loads(ws.recv(timeout=10))
        if frame.get("topic") == sentinel:
            assert frame["type"] == "error"
            return frames
        frames.append(frame)


@pytest.fixture
def ws_url(settings: Settings) -> Iterator[str]:
    with serve_service(settings) as url:
        yield url.replace("http://", "ws://") + "/ws"


def test_fuzzed_messages_get_errors_and_every_client_keeps_being_served(ws_url: str) -> None:
    with connect(ws_url, max_size=None) as watcher, connect(ws_url, max_size=None) as fuzzer:
        watcher.send(orjson.dumps({"type": "subscribe", "topics": [WATCHED]}).decode())
        assert orjson.loads(watcher.recv(timeout=10))["type"] == "snapshot"

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(message=messages, bad=never_valid)
        def exchange(message: str, bad: str | bytes) -> None:
            fuzzer.send(bad)
            refused = replies(fuzzer)
            assert refused and all(f["type"] == "error" and f["message"] for f in refused)
            fuzzer.send(message)
            for frame in replies(fuzzer):
                assert frame.get("type") in SERVER_TYPES, frame
                if frame["type"] == "error":
                    assert isinstance(frame["message"], str) and frame["message"]

        exchange()
        # The other client was served all along and still is.
        assert all(f["type"] in {"ping", "update"} for f in replies(watcher))
        watcher.send(json.dumps({"type": "subscribe", "topics": ["kpi:onestop.due_soon:75"]}))
        assert orjson.loads(watcher.recv(timeout=10))["type"] == "snapshot"


@pytest.mark.parametrize(
    "topic",
    ["kpi:onestop.backlog:\x00", "kpi:onestop.backlog:75\n", "kpi:" + "x" * 300 + ":75"],
    ids=["nul", "newline", "too-long"],
)
def test_a_topic_with_control_characters_or_too_long_is_refused_clearly(
    ws_url: str, topic: str
) -> None:
    with connect(ws_url) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": [topic]}))
        error = orjson.loads(ws.recv(timeout=10))
    assert error["type"] == "error" and "printable text of at most 200" in error["message"]

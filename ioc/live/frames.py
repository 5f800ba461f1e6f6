"""One WebSocket frame, encoded once, written to many connections: the hub's fast path.

A server's frames are not masked, so without per-message compression the bytes of a text frame
are the same for every client. The hub encodes an update's frame once (`text_frame`) and hands
those bytes to each idle subscriber's transport (`DirectWriter.write`): less work than
`websockets.broadcast`, which frames the message again for every connection, and far less than
going through Starlette's and uvicorn's `send` for each client.

The fast path is taken only where it writes exactly what uvicorn would have written, in the same
order. `direct_writer` offers it only for uvicorn's `websockets-sansio` protocol (its default
with `websockets` installed) reached through nothing but Starlette's own pass-through `send`
wrappers (any other middleware wrapping `send` may want to see or change the messages), on an
accepted connection that negotiated no extension (permessage-deflate compresses each
connection's frames with its own context). `DirectWriter.write` then refuses, leaving the frame
to the ordinary `send_text` path, whenever the connection is not open, has begun or finished its
close, has output of its own not yet written, or has its transport paused (the socket buffer is
above uvicorn's high-water mark: the client is slow, and the hub's queue conflates for it).

Frames taken during one turn of the event loop are written per connection together at its end
(`FrameBatch`): a wall following several topics that move together (a province's backlog and
on-time rate, its commune's backlog: one ingest batch changes all three, in NOTIFY payloads
handled in the same turn) gets one socket write instead of one per frame, the kernel's `send`
being most of what a frame costs. Anything written the ordinary way to that connection flushes
its frames first (`Client` does), so the order is kept; a connection that closed before the
turn ends gets none of them.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from types import CodeType, FunctionType, MethodType
from typing import Any

from starlette.websockets import WebSocketState
from websockets.protocol import State

_OPEN = State.OPEN
_CONNECTED = WebSocketState.CONNECTED

HELD_BYTES = 65_536
"""Frames held for a connection past this many bytes are written at once (a turn publishing
large updates in a loop meets the transport's backpressure as it would unbatched)."""

OPCODE_TEXT_FIN = 0x81
"""FIN bit set, opcode 1 (text): a whole message in one frame."""


def text_frame(payload: bytes) -> bytes:
    """The unmasked frame carrying `payload` (UTF-8 text) as one whole text message."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", OPCODE_TEXT_FIN, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", OPCODE_TEXT_FIN, 126, length)
    else:
        header = struct.pack("!BBQ", OPCODE_TEXT_FIN, 127, length)
    return header + payload


class FrameBatch:
    """The connections given frames during this turn of the event loop, flushed at its end."""

    def __init__(self) -> None:
        self.waiting: list[DirectWriter] = []
        self.scheduled = False
        self.after: list[Callable[[], None]] = []
        """Called once this turn's frames are written (what reports or times the writes)."""

    def add(self, writer: DirectWriter) -> None:
        """`writer` holds frames to write: flush it once the current callbacks are done (the
        NOTIFY payloads asyncpg read together are callbacks queued before this one)."""
        self.waiting.append(writer)
        self._schedule()

    def after_writes(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this turn's frames are written."""
        self.after.append(callback)
        self._schedule()

    def _schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what every waiting connection holds, one write each; then the callbacks."""
        self.scheduled = False
        waiting, self.waiting = self.waiting, []
        for writer in waiting:
            writer.flush()
        after, self.after = self.after, []
        for callback in after:
            callback()


class DirectWriter:
    """Writes ready-made frames to one uvicorn `websockets-sansio` connection's transport, the
    frames of one event-loop turn in one write (see `FrameBatch`)."""

    __slots__ = (
        "batch",
        "connection",
        "held",
        "held_bytes",
        "protocol",
        "transport",
        "websocket",
        "writable",
    )

    def __init__(self, protocol: Any, websocket: Any, batch: FrameBatch) -> None:
        self.batch = batch
        self.held: list[bytes] = []
        """Frames taken this turn, not yet written."""
        self.held_bytes = 0
        self.protocol = protocol
        self.transport = protocol.transport
        self.writable = protocol.writable
        """Cleared by uvicorn while the transport is paused (buffer above its high-water mark)."""
        self.connection = protocol.conn
        """The sans-I/O `websockets.server.ServerProtocol`: the connection's state."""
        self.websocket = websocket
        """Starlette's `WebSocket`: the app's view of the state (closed once it sent a close)."""

    def write(self, frame: bytes) -> bool:
        """Take `frame` for this turn's write if the connection is open and its transport takes
        data at once; False (nothing taken) otherwise: the caller sends it the ordinary way."""
        if not (
            self.writable.is_set()
            and not self.connection.expect_continuation_frame
            and not self.connection.writes
            and self._open()
        ):
            return False
        if not self.held:
            self.batch.add(self)
        self.held.append(frame)
        self.held_bytes += len(frame)
        if self.held_bytes > HELD_BYTES:
            self.flush()
        return True

    def flush(self) -> None:
        """Write the frames taken, in order, unless the connection closed meanwhile."""
        if not self.held:
            return
        frames, self.held, self.held_bytes = self.held, [], 0
        if self._open():
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _open(self) -> bool:
        protocol = self.protocol
        return (
            not protocol.close_sent
            and not protocol.disconnected
            and self.connection.state is _OPEN
            and self.websocket.application_state is _CONNECTED
            and not self.transport.is_closing()
        )


def direct_writer(websocket: Any, batch: FrameBatch) -> DirectWriter | None:
    """A `DirectWriter` for an accepted Starlette `WebSocket`, flushed with `batch`, or None
    where the fast path is not provably what the ordinary path would write (see the module's
    docstring)."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:  # pragma: no cover - an older uvicorn, or another server
        return None
    if websocket.application_state is not WebSocketState.CONNECTED:
        return None
    send = _unwrap(getattr(websocket, "_send", None))
    if not (
        isinstance(send, MethodType)
        and send.__func__ is WebSocketsSansIOProtocol.send
        and isinstance(send.__self__, WebSocketsSansIOProtocol)
    ):
        return None
    protocol = send.__self__
    if (
        not protocol.handshake_complete
        or protocol.initial_response is not None
        or protocol.transport is None
        or protocol.conn.extensions
    ):
        return None
    return DirectWriter(protocol, websocket, batch)


def _unwrap(send: Any) -> Any:
    """Follow Starlette's pass-through `send` wrappers down to the server's own `send`."""
    for _ in range(8):  # Starlette adds two (the app's and the route's exception handling)
        if not (isinstance(send, FunctionType) and send.__code__ is _starlette_sender_code()):
            return send
        closure = send.__closure__ or ()
        names = send.__code__.co_freevars
        if "send" not in names:  # pragma: no cover - guarded by the code identity above
            return None
        send = closure[names.index("send")].cell_contents
    return None


_SENDER_CODE: list[CodeType | None] = []


def _starlette_sender_code() -> CodeType | None:
    """The code of the `sender` closure of `starlette._exception_handler`, which only notes
    whether an HTTP response started and passes every message on unchanged."""
    if not _SENDER_CODE:
        _SENDER_CODE.append(_find_sender_code())
    return _SENDER_CODE[0]


def _find_sender_code() -> CodeType | None:
    try:
        from starlette._exception_handler import wrap_app_handling_exceptions
    except ImportError:  # pragma: no cover - a Starlette that moved it: no fast path
        return None
    for outer in wrap_app_handling_exceptions.__code__.co_consts:
        if isinstance(outer, CodeType) and outer.co_name == "wrapped_app":
            for inner in outer.co_consts:
                if isinstance(inner, CodeType) and inner.co_name == "sender":
                    return inner
    return None  # pragma: no cover

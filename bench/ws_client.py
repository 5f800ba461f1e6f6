"""A minimal WebSocket client for load generation: many connections in one asyncio process.

The soak's 2,000 wall displays are 2,000 browsers on other machines; here they share the
server's two cores, so what each costs is CPU taken from the system under test, and a client
process that falls behind adds its own delay to every delivery it times. The `websockets`
library's client spent about 30 µs of CPU per message received (its frame reader, message
queue and a task per connection); this one is an `asyncio.Protocol` that parses the server's
frames straight from the bytes received (RFC 6455: unmasked frames from the server, masked
from the client; no extensions offered, so none is negotiated) and hands each message and its
receipt time to a callback. Like `bench/load_client.py` for HTTP: a load generator, not a
general client (no TLS, no proxies, no compression).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import time
from collections.abc import Callable
from typing import cast

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0

OnMessage = Callable[[bytes, float], None]
"""(message payload, receipt time from `time.time()`) for every text or binary message."""


class HandshakeFailed(Exception):
    """The server did not switch protocols as RFC 6455 asks."""


def frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame: masked, as every frame a client sends must be."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    mask = os.urandom(4)
    repeated = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big"
    )
    return header + mask + masked


class WsClient(asyncio.Protocol):
    """One client connection: `await opened` after connecting, then `send_text`; every message
    goes to `on_message`; `closed` completes when the connection ends."""

    def __init__(self, host: str, path: str, on_message: OnMessage) -> None:
        self.key = base64.b64encode(os.urandom(16))
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.on_message = on_message
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.fragments: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def send_text(self, text: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(TEXT, text.encode()))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        received = time.time()
        self.buffer += data
        if not self.opened.done() and not self._handshake():
            return
        self._frames(received)

    def _handshake(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest()).decode()
        if " 101 " not in f"{head[0]} " or headers.get("sec-websocket-accept") != accept:
            self.opened.set_exception(HandshakeFailed(head[0]))
            self.close()
            return False
        self.opened.set_result(None)
        return True

    def _frames(self, received: float) -> None:
        buffer, at = self.buffer, 0
        while len(buffer) - at >= 2:
            first, second = buffer[at], buffer[at + 1]
            length, start = second & 0x7F, at + 2
            if length == 126:
                if len(buffer) - at < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, start)
                start += 2
            elif length == 127:
                if len(buffer) - at < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            if second & 0x80:  # a server must not mask: drop the connection (RFC 6455 5.1)
                self.close()
                return
            end = start + length
            if end > len(buffer):
                break
            self._message(first & 0x80, first & 0x0F, bytes(buffer[start:end]), received)
            at = end
        del buffer[:at]

    def _message(self, final: int, opcode: int, payload: bytes, received: float) -> None:
        if opcode == PING:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(frame(PONG, payload))
        elif opcode == CLOSE:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(frame(CLOSE, payload[:2]))
            self.close()
        elif opcode in (TEXT, BINARY, CONTINUATION):
            self.fragments.append(payload)
            if final:
                message, self.fragments = b"".join(self.fragments), []
                self.on_message(message, received)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)


async def connect(host: str, port: int, path: str, on_message: OnMessage) -> WsClient:
    """Open a connection and complete the handshake."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: WsClient(f"{host}:{port}", path, on_message), host, port
    )
    await client.opened
    return client

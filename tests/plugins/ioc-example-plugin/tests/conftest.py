"""Serve the published indices document on a local port, as the province's portal would."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DOCUMENT = Path(__file__).with_name("indices.json")
TOKEN = "parindex-test-token"


class _Portal(BaseHTTPRequestHandler):
    """GET /indices.json with a bearer token; anything else is 404."""

    def do_GET(self) -> None:
        if self.path != "/indices.json":
            self._answer(404, b'{"error": "not found"}')
        elif self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, b'{"error": "token required"}')
        else:
            self._answer(200, DOCUMENT.read_bytes())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def portal_url() -> Iterator[str]:
    """Base URL of a portal serving `indices.json` (token `TOKEN`) until the test ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Portal)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

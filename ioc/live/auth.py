"""Who may open `/ws`: the one check the security work replaces with bearer tokens and roles."""

from __future__ import annotations

import secrets

from starlette.websockets import WebSocket

from ioc.config import Settings


def presented_token(websocket: WebSocket) -> str | None:
    """The token a client sent: `Authorization: Bearer …`, or `?token=…` (browsers cannot set
    headers on a WebSocket)."""
    header = websocket.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return websocket.query_params.get("token") or None


def authorize_websocket(websocket: WebSocket, settings: Settings) -> str | None:
    """None when the client may connect, else why not. Until tokens exist, the only rule is the
    shared `IOC_WS_TOKEN` setting; without it `/ws` is open (demo and single-room setups)."""
    if settings.ws_token is None:
        return None
    token = presented_token(websocket)
    if token is None:
        return "a token is required (Authorization: Bearer … or ?token=…)"
    if not secrets.compare_digest(token.encode(), settings.ws_token.get_secret_value().encode()):
        return "the token is not valid"
    return None

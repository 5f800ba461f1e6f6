"""Helpers about connector configs: which fields are secrets, an address nothing listens on."""

from __future__ import annotations

import re
import socket
import types
import typing
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

SECRET_NAME_PATTERN = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api_?key|credential|private_key", re.IGNORECASE
)
"""Field names that hold secrets and must therefore be typed `SecretStr`."""


def _mentions_secret_type(annotation: Any) -> bool:
    if annotation in (SecretStr, SecretBytes):
        return True
    if isinstance(annotation, type) and issubclass(annotation, SecretStr | SecretBytes):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _mentions_secret_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_mentions_secret_type(arg) for arg in typing.get_args(annotation))
    return False


def secret_fields(model: type[BaseModel]) -> list[str]:
    """Names of the fields typed `SecretStr` / `SecretBytes` (optional or not)."""
    return [
        name
        for name, field in model.model_fields.items()
        if _mentions_secret_type(field.annotation)
    ]


def plain_secret_suspects(
    model: type[BaseModel], pattern: re.Pattern[str] = SECRET_NAME_PATTERN
) -> list[str]:
    """Fields named like a secret (password, token, api_key…) that are not typed `SecretStr`."""
    secrets = set(secret_fields(model))
    return [name for name in model.model_fields if pattern.search(name) and name not in secrets]


def unused_local_url(scheme: str = "http") -> str:
    """`http://127.0.0.1:<port>` for a port that was free a moment ago: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}"

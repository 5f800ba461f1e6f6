"""Connector secrets encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256, `cryptography`).

With `IOC_SECRETS_KEY` set, the secret fields of a connector's config (its `SecretStr` fields)
are stored as `fernet:<token>` and decrypted only when a connector is built. Several keys,
comma-separated, rotate: the first encrypts, any decrypts. Values stored in clear before a key
was set keep working and are encrypted when the instance is next saved.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "fernet:"


class SecretsUnavailable(ValueError):
    """A stored secret cannot be decrypted: no key, or not the key it was encrypted with."""


class SecretBox:
    """Encrypts and decrypts the secret values of connector configs."""

    def __init__(self, keys: str) -> None:
        try:
            self._fernet = MultiFernet([Fernet(k.strip()) for k in keys.split(",") if k.strip()])
        except (ValueError, TypeError) as exc:
            raise ValueError(
                "IOC_SECRETS_KEY must be Fernet keys (32 url-safe base64 bytes each, "
                "comma-separated); make one with `ioc secrets-key`"
            ) from exc

    def seal(self, value: Any) -> Any:
        """A secret as stored: encrypted once (a sealed value is left as it is)."""
        if not isinstance(value, str) or value.startswith(PREFIX):
            return value
        return PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: Any) -> Any:
        """A stored secret in clear."""
        if not is_sealed(value):
            return value
        try:
            return self._fernet.decrypt(value[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretsUnavailable(
                "a connector secret was encrypted with another IOC_SECRETS_KEY"
            ) from None


def is_sealed(value: Any) -> bool:
    """Whether a stored value is an encrypted secret."""
    return isinstance(value, str) and value.startswith(PREFIX)


def new_key() -> str:
    """A fresh Fernet key."""
    return Fernet.generate_key().decode()


def seal_config(
    box: SecretBox | None, config: dict[str, Any], secrets: list[str]
) -> dict[str, Any]:
    """The config as stored: its secret fields encrypted when a key is configured."""
    if box is None:
        return config
    return {k: box.seal(v) if k in secrets else v for k, v in config.items()}


def open_config(box: SecretBox | None, config: dict[str, Any]) -> dict[str, Any]:
    """The config in clear, to build a connector from."""
    if not any(is_sealed(v) for v in config.values()):
        return config
    if box is None:
        raise SecretsUnavailable(
            "this connector's secrets are encrypted and IOC_SECRETS_KEY is not set"
        )
    return {k: box.open(v) for k, v in config.items()}

"""OpenID Connect: JWTs from the province's identity provider, checked against its JWKS.

PyJWT does the cryptography and the claim checks (signature, `exp`, `nbf`, `iss`, `aud`); its
`PyJWKClient` fetches the JWKS and caches the keys, fetching again when a JWT names an unknown
key id (the provider rotated its keys).
"""

from __future__ import annotations

import asyncio
from typing import Any

import jwt

from ioc.auth.permissions import Principal, Role
from ioc.config import Settings


class InvalidCredentials(Exception):
    """A token or JWT that does not authenticate anyone; the message says why."""


def looks_like_jwt(credential: str) -> bool:
    """Whether a bearer credential has a JWT's three dot-separated parts."""
    return credential.count(".") == 2


class OidcVerifier:
    """Checks JWTs against the configured JWKS, issuer and audience; maps a claim to roles."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.algorithms = settings.oidc_algorithms
        self.roles_claim = settings.oidc_roles_claim.split(".")
        self.role_map = {role.value: role for role in Role} | {
            external: Role(internal) for external, internal in settings.oidc_role_map.items()
        }
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if settings.oidc_jwks_url is not None:
            self._client = jwt.PyJWKClient(settings.oidc_jwks_url, cache_keys=True, timeout=10)
        elif settings.oidc_jwks_file is not None:
            self._keys = jwt.PyJWKSet.from_json(settings.oidc_jwks_file.read_text())

    async def verify(self, token: str) -> Principal:
        """The user a valid JWT names, with the IOC roles its claim maps to."""
        try:
            key = await self._signing_key(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
                leeway=30,
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise InvalidCredentials(
                f"the identity provider's keys are unreachable: {exc}"
            ) from None
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise InvalidCredentials(f"invalid JWT: {exc}") from None
        return Principal(
            subject=f"oidc:{claims['sub']}",
            name=str(claims.get("preferred_username") or claims.get("email") or claims["sub"]),
            roles=self.roles_of(claims),
        )

    def roles_of(self, claims: dict[str, Any]) -> frozenset[Role]:
        """The IOC roles the configured claim grants; unknown names are ignored."""
        value: Any = claims
        for part in self.roles_claim:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list):
            return frozenset()
        return frozenset(self.role_map[name] for name in value if name in self.role_map)

    async def _signing_key(self, token: str) -> jwt.PyJWK:
        if self._client is not None:
            # The first call (and a key rotation) fetches over HTTP: keep it off the event loop.
            return await asyncio.to_thread(self._client.get_signing_key_from_jwt, token)
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._keys.keys:
            if kid is None or key.key_id == kid:
                return key
        raise jwt.PyJWKClientError(f"no key {kid!r} in the JWKS file")

"""OpenID Connect: JWTs signed by a local RSA key, checked against a JWKS served over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from ioc.auth.oidc import InvalidCredentials, OidcVerifier
from ioc.auth.permissions import Role
from ioc.config import Settings
from tests.auth.conftest import bearer
from tests.support.servers import serve_app

ISSUER = "https://sso.dongnai.gov.vn/realms/ioc"
AUDIENCE = "ioc-backend"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks_of(key: rsa.RSAPrivateKey, kid: str = "k1") -> dict[str, Any]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {"keys": [public | {"kid": kid, "use": "sig", "alg": "RS256"}]}


@pytest.fixture
async def jwks_url(signing_key: rsa.RSAPrivateKey) -> AsyncIterator[str]:
    """The identity provider's JWKS endpoint on a local port."""
    document = jwks_of(signing_key)

    async def jwks(_: Any) -> JSONResponse:
        return JSONResponse(document)

    async with serve_app(Starlette(routes=[Route("/certs", jwks)])) as url:
        yield f"{url}/certs"


OIDC = {
    "oidc_issuer": ISSUER,
    "oidc_audience": AUDIENCE,
    "oidc_roles_claim": "realm_access.roles",
    "oidc_role_map": {"ioc-viewers": "viewer"},
}


@pytest.fixture
def settings(settings: Settings, jwks_url: str) -> Settings:
    return settings.model_copy(update={"oidc_jwks_url": jwks_url, **OIDC})


@pytest.fixture
def verifier(jwks_url: str) -> OidcVerifier:
    """The checks alone, without a database: they do not depend on one."""
    return OidcVerifier(Settings(environment="development", oidc_jwks_url=jwks_url, **OIDC))


def sign(key: rsa.RSAPrivateKey, *, kid: str = "k1", **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "c0ffee",
        "preferred_username": "nguyen.van.a",
        "iat": now,
        "exp": now + 300,
        "realm_access": {"roles": ["leader", "offline_access"]},
    }
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


async def test_a_valid_jwt_acts_with_the_roles_its_claim_names(
    http: httpx.AsyncClient, signing_key: rsa.RSAPrivateKey
) -> None:
    response = await http.get("/api/v1/records/feedback", headers=bearer(sign(signing_key)))
    assert response.status_code == 200


async def test_identity_provider_role_names_are_mapped_to_ioc_roles(
    http: httpx.AsyncClient, signing_key: rsa.RSAPrivateKey
) -> None:
    token = sign(signing_key, realm_access={"roles": ["ioc-viewers"]})
    assert (await http.get("/api/v1/kpis", headers=bearer(token))).status_code == 200
    assert (await http.get("/api/v1/records/feedback", headers=bearer(token))).status_code == 403


async def test_a_user_without_any_ioc_role_may_read_nothing(
    http: httpx.AsyncClient, signing_key: rsa.RSAPrivateKey
) -> None:
    token = sign(signing_key, realm_access={"roles": ["offline_access"]})
    response = await http.get("/api/v1/kpis", headers=bearer(token))
    assert response.status_code == 403 and "no role" in response.json()["detail"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": "another-app"}, "audience"),
        ({"iss": "https://evil.example/realms/ioc"}, "issuer"),
        ({"sub": None}, "sub"),
    ],
    ids=["expired", "wrong-audience", "wrong-issuer", "no-subject"],
)
async def test_a_jwt_failing_a_claim_check_is_refused(
    verifier: OidcVerifier, signing_key: rsa.RSAPrivateKey, overrides: dict, reason: str
) -> None:
    with pytest.raises(InvalidCredentials) as refused:
        await verifier.verify(sign(signing_key, **overrides))
    assert str(refused.value).startswith("invalid JWT") and reason in str(refused.value).lower()


async def test_a_jwt_signed_by_another_key_is_refused_with_401(
    http: httpx.AsyncClient, other_key: rsa.RSAPrivateKey
) -> None:
    response = await http.get("/api/v1/kpis", headers=bearer(sign(other_key)))
    assert response.status_code == 401
    assert response.json()["detail"] == "invalid JWT: Signature verification failed"


async def test_a_jwt_naming_a_key_the_provider_does_not_publish_is_refused(
    verifier: OidcVerifier, signing_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(InvalidCredentials, match="invalid JWT"):
        await verifier.verify(sign(signing_key, kid="rotated"))


async def test_keys_can_come_from_a_jwks_file(
    signing_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_of(signing_key)))
    verifier = OidcVerifier(Settings(environment="development", oidc_jwks_file=path, **OIDC))
    principal = await verifier.verify(sign(signing_key))
    assert principal.subject == "oidc:c0ffee" and principal.name == "nguyen.van.a"
    assert principal.roles == {Role.LEADER}
    with pytest.raises(InvalidCredentials):
        await verifier.verify(sign(signing_key, aud="another-app"))


def test_oidc_without_issuer_and_audience_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="IOC_OIDC_ISSUER"):
        Settings(oidc_jwks_url="https://sso.example/certs", environment="development")

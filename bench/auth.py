"""Access-control benchmark: what a token check, a JWT check and masking cost per request.

1. in process: `Authenticator.authenticate` with an IOC token (cached lookup + rate limiter),
   with an RS256 JWT (signature and claims checked on every request), and `mask_record` over a
   500-row page of feedback reports;
2. over HTTP: the app under uvicorn (one worker, a subprocess) on a fresh PostgreSQL database,
   a cached KPI series read (the hottest REST path, no database session on a hit) driven by
   `bench/load_client.py` with 64 keep-alive connections, closed loop, open vs. with a token.

    .venv/bin/python bench/auth.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).parent
sys.path.insert(0, str(BENCH.parent))

from bench.common import fresh_postgres, machine, write_results  # noqa: E402
from ioc.auth.authenticator import Authenticator  # noqa: E402
from ioc.auth.masking import mask_record  # noqa: E402
from ioc.auth.oidc import OidcVerifier  # noqa: E402
from ioc.auth.permissions import Role  # noqa: E402
from ioc.auth.schemas import TokenCreate  # noqa: E402
from ioc.auth.service import create_token  # noqa: E402
from ioc.config import Settings  # noqa: E402
from ioc.context import build_context  # noqa: E402
from ioc.migrations import upgrade  # noqa: E402

SERIES = "/api/v1/kpis/onestop.on_time_rate/series?unit=75&period=day&from=2026-10-01&to=2026-10-30"
UNLIMITED = {"rate_limit_per_minute": 1e12, "rate_limit_burst": 10**9}


def settings_for(url: str, *, open_access: bool) -> Settings:
    """The benchmark's settings: no scheduler, no rate limit in the way."""
    return Settings(
        database_url=url,
        scheduler_enabled=False,
        environment="development",
        auth_disabled=open_access,
        **UNLIMITED,
    )


async def make_token(url: str) -> str:
    """A viewer token stored in the database."""
    ctx = build_context(settings_for(url, open_access=False))
    try:
        async with ctx.sessionmaker() as session, session.begin():
            created = await create_token(
                session,
                TokenCreate(name="bench", roles=[Role.VIEWER]),
                created_by="bench",
                now=datetime.now(UTC),
            )
        return created.secret
    finally:
        await ctx.engine.dispose()


def per_call(count: int, body: Any) -> float:
    """Microseconds per call of a synchronous body."""
    started = time.perf_counter()
    for _ in range(count):
        body()
    return (time.perf_counter() - started) / count * 1e6


async def in_process(url: str, token: str) -> dict[str, Any]:
    """Token and JWT checks and page masking, timed in this process."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    ctx = build_context(settings_for(url, open_access=False))
    assert ctx.auth is not None
    authenticator: Authenticator = ctx.auth
    await authenticator.authenticate(token)  # fill the cache
    count = 200_000
    started = time.perf_counter()
    for _ in range(count):
        await authenticator.authenticate(token)
    token_us = (time.perf_counter() - started) / count * 1e6

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    with tempfile.TemporaryDirectory() as folder:
        jwks = Path(folder) / "jwks.json"
        jwks.write_text(json.dumps({"keys": [public | {"kid": "k", "alg": "RS256"}]}))
        verifier = OidcVerifier(
            Settings(
                environment="development",
                oidc_jwks_file=jwks,
                oidc_issuer="https://sso",
                oidc_audience="ioc",
            )
        )
        now = int(time.time())
        claims = {"iss": "https://sso", "aud": "ioc", "sub": "u", "exp": now + 3600}
        signed = jwt.encode(claims | {"roles": ["viewer"]}, key, "RS256", headers={"kid": "k"})
        jwt_count = 5_000
        started = time.perf_counter()
        for _ in range(jwt_count):
            await verifier.verify(signed)
        jwt_us = (time.perf_counter() - started) / jwt_count * 1e6
    await ctx.engine.dispose()

    item = {
        "external_id": "PA-1",
        "unit_code": "26068",
        "status": "open",
        "description": "Ông Trần Thị Bình (0912 345 678, a@b.vn) báo cống nghẹt trước nhà số 12",
        "status_notes": "Đã chuyển UBND phường xử lý",
        "address": "12 Phan Chu Trinh",
        "latitude": 10.957413,
        "longitude": 106.842687,
        "reporter_name": "Trần Thị Bình",
        "reporter_phone": "0912345678",
    }
    page = [dict(item, external_id=f"PA-{i}") for i in range(500)]
    mask_ms = per_call(200, lambda: [mask_record("feedback", row) for row in page]) / 1000
    return {
        "token_check_us": round(token_us, 2),
        "jwt_rs256_check_us": round(jwt_us, 1),
        "mask_500_feedback_rows_ms": round(mask_ms, 2),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(url: str, port: int, open_access: bool) -> None:
    """The app under uvicorn, one worker (run in a subprocess)."""
    import uvicorn

    from ioc.app import create_app

    app = create_app(settings_for(url, open_access=open_access))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _get(port: int, path: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def over_http(url: str, token: str | None, seconds: float) -> dict[str, Any]:
    """Cached series reads from a separate load process, closed loop."""
    port = _free_port()
    command = [sys.executable, str(BENCH / "auth.py"), "serve", "--url", url, "--port", str(port)]
    server = subprocess.Popen([*command, *([] if token else ["--open"])], cwd=BENCH.parent)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(port, "/healthz", {}) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the app did not start")
            time.sleep(0.3)
        assert _get(port, SERIES, headers) == 200  # also fills the series cache
        with tempfile.TemporaryDirectory() as folder:
            urls = Path(folder) / "urls.txt"
            urls.write_text(SERIES)
            extra = [arg for h in headers.items() for arg in ("--header", f"{h[0]}: {h[1]}")]
            load = [sys.executable, str(BENCH / "load_client.py"), "--port", str(port)]
            load += ["--urls", str(urls), "--connections", "64"]
            subprocess.run([*load, "--seconds", "2", *extra], check=True, capture_output=True)
            out = subprocess.run(
                [*load, "--seconds", str(seconds), *extra],
                check=True,
                capture_output=True,
                text=True,
            )
        return json.loads(out.stdout)
    finally:
        server.terminate()
        server.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    served = sub.add_parser("serve", help="internal: run the app")
    served.add_argument("--url", required=True)
    served.add_argument("--port", type=int, required=True)
    served.add_argument("--open", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.url, args.port, args.open)
        return
    with fresh_postgres() as (url, _):
        upgrade(url)
        token = asyncio.run(make_token(url))
        results: dict[str, Any] = {"machine": machine(), "path": SERIES}
        results["in_process"] = asyncio.run(in_process(url, token))
        print(f"  in process: {results['in_process']}", flush=True)
        for name, credential in (("open", None), ("token", token)):
            figures = over_http(url, credential, args.seconds)
            results[f"series_cached_{name}"] = figures
            print(f"  series, cached, {name}: {json.dumps(figures)}", flush=True)
    write_results("auth", results)


if __name__ == "__main__":
    main()

"""Bad input over HTTP: schemathesis generates requests from the OpenAPI schema, valid and
invalid, and sends them to the service on a real port. No request may cause a 5xx, and every
4xx must say what was wrong (`detail`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from ioc.app import create_app
from ioc.config import Settings
from tests.support.settings import OPEN_ACCESS
from tests.support.threaded import serve_service

# Operations that reach out to a connector's upstream: fuzzed configs must not make the test
# call arbitrary hosts, so these are left to the connector tests.
REACHES_UPSTREAM = r"/api/v1/connectors/\{instance_id\}/(test|run)$"

_APP = create_app(Settings(**OPEN_ACCESS))  # the gates have their own tests (tests/auth)
SCHEMA = schemathesis.openapi.from_dict(_APP.openapi()).exclude(path_regex=REACHES_UPSTREAM)
CASES = st.one_of(
    SCHEMA.as_strategy(GenerationMode.POSITIVE), SCHEMA.as_strategy(GenerationMode.NEGATIVE)
)


@pytest.fixture
def base_url(settings: Settings) -> Iterator[str]:
    """The service on a real port, on the test database, left clean afterwards."""
    with serve_service(settings) as url:
        yield url


def has_detail(response: requests.Response) -> bool:
    """A 4xx body is JSON with a non-empty `detail`."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and bool(body.get("detail"))


def test_generated_requests_get_no_5xx_and_every_4xx_explains_itself(base_url: str) -> None:
    http = requests.Session()

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=CASES)
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, session=http, timeout=10)
        case.validate_response(response, checks=[not_a_server_error])
        if 400 <= response.status_code < 500:
            assert has_detail(response), (
                f"{case.method} {case.formatted_path} -> {response.status_code} "
                f"without a detail: {response.text[:200]}"
            )

    check()

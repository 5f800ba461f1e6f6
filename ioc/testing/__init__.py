"""Contract test kit for connector authors: subclass `ConnectorContract` in your pytest suite.

Importable without FastAPI or a database: it needs only `ioc.sdk`, pydantic, pytest and httpx.
The async tests need pytest-asyncio (they carry the `asyncio` mark, so auto and strict modes
both run them).
"""

from ioc.testing.configs import (
    SECRET_NAME_PATTERN,
    plain_secret_suspects,
    secret_fields,
    unused_local_url,
)
from ioc.testing.contract import MAPPING_ERRORS, ConnectorContract
from ioc.testing.polling import (
    DEFAULT_MAX_PAGES,
    Exhaustion,
    MappedPayload,
    PageBudgetExceeded,
    PollTimedOut,
    VersionKey,
    capture_payloads,
    poll_once,
    poll_to_exhaustion,
    version_key,
)

__all__ = [
    "DEFAULT_MAX_PAGES",
    "MAPPING_ERRORS",
    "SECRET_NAME_PATTERN",
    "ConnectorContract",
    "Exhaustion",
    "MappedPayload",
    "PageBudgetExceeded",
    "PollTimedOut",
    "VersionKey",
    "capture_payloads",
    "plain_secret_suspects",
    "poll_once",
    "poll_to_exhaustion",
    "secret_fields",
    "unused_local_url",
    "version_key",
]

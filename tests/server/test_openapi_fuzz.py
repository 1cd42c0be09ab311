"""schemathesis against the app's own OpenAPI spec, with all of its checks: no 5xx, no
response off the spec, schema-valid data accepted or refused by a rule of the lab (400,
409) or for rights (401, 403, 404, 429), never by validation (422).

Every operation gets a bounded number of generated requests (valid and invalid), sent by
an admin so that no route is skipped for lack of rights. CI runs 15 examples per
operation; the full run (100 examples per operation on SQLite and PostgreSQL, 21 min on a
shared 2-core machine on 2026-11-22) is:

    FABLAB_FUZZ_EXAMPLES=100 .venv/bin/python -m pytest tests/server/test_openapi_fuzz.py -q
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig

from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.config import Settings
from tests.server.conftest import Headers

EXAMPLES_PER_OPERATION = int(os.environ.get("FABLAB_FUZZ_EXAMPLES", "15"))
# A schema-valid request may still break a rule of the lab (a password of 10+ characters,
# an expiry in the future…): 400 and 409 with a message are answers, not failures.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429"]
            }
        }
    }
)


def _operation_labels() -> list[str]:
    """The spec's operations, read from an app that needs no database to describe itself."""
    runtime = ServerRuntime(Settings(database_url="sqlite://"), mqtt_enabled=False)
    spec = schemathesis.openapi.from_asgi("/openapi.json", create_app(runtime))
    return sorted(result.ok().label for result in spec.get_all_operations())


@pytest.mark.parametrize("label", _operation_labels())
def test_openapi_fuzz_operation_never_errors_and_matches_spec(
    label: str, lab: ServerRuntime, auth: Headers
) -> None:
    method, path = label.split(" ", 1)
    spec = schemathesis.openapi.from_asgi("/openapi.json", create_app(lab), config=CONFIG)
    operation = spec[path][method]
    headers = auth("root")

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        # Every check schemathesis has; a generous timeout: CI machines are small and shared.
        case.call_and_validate(headers=headers, timeout=60)

    run()


def test_openapi_fuzz_covers_every_operation() -> None:
    assert len(_operation_labels()) >= 40

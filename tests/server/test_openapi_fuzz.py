"""schemathesis against the app's own OpenAPI spec: no 5xx, no response off the spec.

Every operation gets a bounded number of generated requests (valid and invalid),
sent by an admin so that no route is skipped for lack of rights.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from server.api.main import create_app
from server.bootstrap import ServerRuntime
from server.config import Settings
from tests.server.conftest import Headers

EXAMPLES_PER_OPERATION = 15


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
    operation = schemathesis.openapi.from_asgi("/openapi.json", create_app(lab))[path][method]
    headers = auth("root")

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        # Acceptance of schema-valid data is not asserted: the lab's rules (a password
        # of 10+ characters, an expiry in the future…) refuse some with a 400 and a message.
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

    run()


def test_openapi_fuzz_covers_every_operation() -> None:
    assert len(_operation_labels()) >= 40

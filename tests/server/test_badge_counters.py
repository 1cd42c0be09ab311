"""Anti-cloning on the server, event by event: protection and counters of a badge.

On PostgreSQL only: tests/server/test_anticlone_sync.py runs the same rules end to end
on SQLite."""

from __future__ import annotations

import pytest

from protocol import EventKind, Level
from server.api.routes.members import badge_public
from server.bootstrap import ServerRuntime
from server.service_layer.ingest import Outcome
from tests.server.conftest import EventFactory, Ingest


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    from server.adapters.migrations import upgrade

    url: str = request.getfixturevalue("fresh_postgres_url")
    upgrade(url)
    return url


def _protection(lab: ServerRuntime, uid: str) -> tuple[str, str, int | None]:
    with lab.new_uow() as uow:
        badge = uow.badges.by_uid(uid)
        assert badge is not None
        return badge.status, badge.protection, badge.counter_high


def test_badge_counters_enrollment_that_wrote_the_sector_marks_the_badge_protected(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    ingest(events(EventKind.BADGE_ENROLLED, badge_uid="04FFEE01", command_id="c-1",
                  protected=True))  # fmt: skip

    assert _protection(lab, "04FFEE01") == ("active", "protected", None)
    with lab.new_uow() as uow:
        badge = uow.badges.by_uid("04FFEE01")
        assert badge is not None and badge_public(badge).protection == "protected"  # API


def test_badge_counters_repeat_from_one_controller_blocks_and_unknown_badge_is_kept(
    ingest: Ingest, events: EventFactory, lab: ServerRuntime
) -> None:
    def start(session_id: str, uid: str, counter: int) -> object:
        return events(EventKind.SESSION_STARTED, session_id=session_id, badge_uid=uid,
                      member_id="ada", level=Level.AUTONOMOUS.value, snapshot_version=1,
                      badge_counter=counter)  # fmt: skip

    assert ingest(start("s1", "04A1B2C3", 4)).outcome is Outcome.ACCEPTED
    assert ingest(start("s2", "04BEEF00", 4)).outcome is Outcome.ACCEPTED  # no such badge
    assert _protection(lab, "04A1B2C3") == ("active", "protected", 4)

    # The session did happen (the copy was granted once): kept, and the badge blocked.
    assert ingest(start("s3", "04A1B2C3", 4)).outcome is Outcome.ACCEPTED

    assert _protection(lab, "04A1B2C3") == ("blocked", "protected", 4)

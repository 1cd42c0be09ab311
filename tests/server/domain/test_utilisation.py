"""Utilisation figures and the small-cell suppression of open data."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from server.domain.utilisation import (
    Contribution,
    Span,
    anonymised,
    contributions_per_month,
    heatmap,
    per_machine,
    trainings_per_month,
    weekly,
)

PARIS = ZoneInfo("Europe/Paris")
MONDAY = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)  # 10:00 in Paris


def _span(member: str, machine: str = "laser", start: datetime = MONDAY, hours: float = 1.0,
          busy: float = 0.5) -> Span:  # fmt: skip
    return Span(machine, member, start, hours * 3600, busy * 3600)


def test_utilisation_weekly_counts_hours_sessions_members() -> None:
    cells = weekly([_span("ada"), _span("ada"), _span("alan", hours=2)], PARIS)
    cell = cells[("laser", date(2026, 11, 16))]
    assert (cell.unlocked_s, cell.sessions, cell.members) == (4 * 3600, 3, {"ada", "alan"})


def test_utilisation_week_starts_monday_in_lab_time() -> None:
    sunday_night_utc = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)  # Monday 00:30 in Paris
    assert ("laser", date(2026, 11, 23)) in weekly([_span("ada", start=sunday_night_utc)], PARIS)


def test_utilisation_anonymised_suppresses_cells_below_threshold() -> None:
    cells = weekly([_span("ada"), _span("alan"), _span("ada", machine="cnc")], PARIS)
    published = {c.machine_id: c for c in anonymised(cells, min_members=2)}
    assert published["laser"].members == 2 and published["laser"].hours == 2.0
    cnc = published["cnc"]
    assert cnc.suppressed and (cnc.hours, cnc.sessions, cnc.members) == (None, None, None)


def test_utilisation_heatmap_splits_a_session_across_hours() -> None:
    grid = heatmap([_span("ada", start=datetime(2026, 11, 16, 9, 30, tzinfo=UTC))], PARIS)
    assert grid[0][10] == 0.5 and grid[0][11] == 0.5


def test_utilisation_per_machine_busy_and_unlocked() -> None:
    assert per_machine([_span("ada", hours=2, busy=1)]) == {"laser": (2.0, 1.0)}


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.floats(0, 10)), max_size=30),
       st.integers(1, 5))  # fmt: skip
def test_utilisation_anonymised_never_publishes_a_small_cell(
    rows: list[tuple[str, float]], threshold: int
) -> None:
    spans = [_span(member, hours=hours) for member, hours in rows]
    for cell in anonymised(weekly(spans, PARIS), threshold):
        assert cell.members is None or cell.members >= threshold


def test_utilisation_heatmap_total_equals_unlocked_hours() -> None:
    spans = [_span("ada", hours=5.25), _span("alan", start=datetime(2026, 11, 20, 22, 10,
             tzinfo=UTC), hours=3)]  # fmt: skip
    assert abs(sum(map(sum, heatmap(spans, PARIS))) - 8.25) < 1e-9


def test_utilisation_trainings_per_month_suppresses_small_counts() -> None:
    grants = [("laser", MONDAY), ("laser", MONDAY), ("cnc", MONDAY)]
    counts = {c.training_type_id: c for c in trainings_per_month(grants, PARIS, min_count=2)}
    assert counts["laser"].granted == 2 and counts["laser"].month == date(2026, 11, 1)
    assert counts["cnc"].granted is None


def test_utilisation_contributions_per_month_sums_hours_counts_and_members() -> None:
    given_ = [Contribution("teaching", "ada", MONDAY, 90),
              Contribution("teaching", "alan", MONDAY, 30),
              Contribution("teaching", "ada", MONDAY, 60)]  # fmt: skip
    [cell] = contributions_per_month(given_, PARIS, min_members=2)
    assert (cell.contribution_type_id, cell.month) == ("teaching", date(2026, 11, 1))
    assert (cell.hours, cell.contributions, cell.members) == (3.0, 3, 2)


def test_utilisation_contributions_per_month_suppresses_a_kind_given_by_few_members() -> None:
    given_ = [Contribution("recipe", "ada", MONDAY, 0), Contribution("recipe", "ada", MONDAY, 0)]
    [cell] = contributions_per_month(given_, PARIS, min_members=2)
    assert cell.suppressed and (cell.hours, cell.contributions, cell.members) == (None, None, None)


def test_utilisation_contributions_month_is_the_lab_s() -> None:
    new_year_utc = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)  # 1 January 00:30 in Paris
    [cell] = contributions_per_month([Contribution("x", "ada", new_year_utc, 60)], PARIS, 1)
    assert cell.month == date(2027, 1, 1)

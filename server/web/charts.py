"""Server-rendered SVG charts: the geometry here, the markup in dashboards/templates/charts."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH = 640
BAR_AREA_HEIGHT = 200
LEFT = 48
BOTTOM = 40
HEAT_LEVELS = 5


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: float
    css: str = "bar"


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    ticks: list[tuple[float, str]]  # (y, label) of the value axis
    labels: list[tuple[float, str]]  # (x, label) under the bars


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000):
        if value <= step:
            return float(step)
    return float(int(value) + 1)


def column_chart(series: list[tuple[str, float]], number: object = str) -> Chart:
    """Vertical bars, one per (label, value), with a value axis of 4 ticks."""
    top = _nice_max(max((v for _, v in series), default=0))
    slot = (WIDTH - LEFT - 8) / max(len(series), 1)
    bars, labels = [], []
    for index, (label, value) in enumerate(series):
        height = BAR_AREA_HEIGHT * value / top
        x = LEFT + index * slot + slot * 0.15
        bars.append(Bar(x, 10 + BAR_AREA_HEIGHT - height, slot * 0.7, height, label, value))
        # Every label while they fit (about 60 px each), else every other one.
        if slot >= 60 or index % 2 == 0:
            labels.append((x + slot * 0.35, label))
    ticks = [(10 + BAR_AREA_HEIGHT * (1 - i / 4), _fmt(number, top * i / 4)) for i in range(5)]
    return Chart(WIDTH, BAR_AREA_HEIGHT + BOTTOM + 10, bars, ticks, labels)


def paired_bars(rows: list[tuple[str, float, float]], number: object = str) -> Chart:
    """Horizontal bars per row: unlocked (light) and busy (dark) hours, one under the other."""
    top = _nice_max(max((max(a, b) for _, a, b in rows), default=0))
    row_height, label_width = 34, 170
    usable = WIDTH - label_width - 60
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    for index, (label, unlocked, busy) in enumerate(rows):
        y = 10 + index * row_height
        unlocked_width, busy_width = usable * unlocked / top, usable * busy / top
        bars.append(Bar(label_width, y, unlocked_width, 13, label, unlocked, "bar-unlocked"))
        bars.append(Bar(label_width, y + 14, busy_width, 13, label, busy, "bar-busy"))
        labels.append((float(y + 18), label))
    ticks = [(label_width + usable * i / 4, _fmt(number, top * i / 4)) for i in range(5)]
    return Chart(WIDTH, 10 + len(rows) * row_height + 30, bars, ticks, labels)


@dataclass(frozen=True)
class HeatCell:
    x: int
    y: int
    level: int
    hours: float
    weekday: int
    hour: int


def heat_cells(grid: list[list[float]]) -> list[HeatCell]:
    """A cell per weekday x hour, shaded in HEAT_LEVELS steps of the busiest cell."""
    top = max((v for row in grid for v in row), default=0.0)
    cells = []
    for weekday, row in enumerate(grid):
        for hour, hours in enumerate(row):
            level = 0 if hours <= 0 or top <= 0 else max(1, round(HEAT_LEVELS * hours / top))
            cells.append(HeatCell(60 + hour * 24, 20 + weekday * 24, level, hours, weekday, hour))
    return cells


def _fmt(number: object, value: float) -> str:
    return number(value) if callable(number) else str(value)

"""Bar charts drawn on the server as SVG: the geometry here, the markup in
templates/kickouts/_bar_chart.html, the colours in the stylesheet (classes, so the Content
Security Policy's `style-src 'self'` holds: no inline style, no script).

Each segment carries its own link and title: a click opens the rows it counts, and a hover or
a screen reader's focus says what it is. The numbers are also in a table beside each chart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils.text import Truncator

WIDTH = 720
HEIGHT = 240
LEFT = 44  # room for the axis labels
TOP = 8
BOTTOM = 40  # room for the bucket labels
GAP = 0.2  # of a column's width, between bars
TICKS = 4
MAX_SLOT = 90  # a chart of one or two bars keeps them bar-shaped
CHAR_WIDTH = 7  # of an 11px label, in the viewBox's units: a label is cut to fit its column


@dataclass(frozen=True)
class Segment:
    """One part of a bar: a series' value in one column."""

    series: int  # its colour: the series' place in the legend
    value: int
    title: str
    href: str = ""


@dataclass
class Column:
    label: str
    segments: list[Segment]

    @property
    def total(self) -> int:
        return sum(s.value for s in self.segments)


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    segment: Segment


@dataclass(frozen=True)
class Tick:
    y: float
    value: int


@dataclass(frozen=True)
class Label:
    x: float
    text: str


@dataclass
class BarChart:
    """A stacked bar chart ready to draw: rectangles, axis ticks and column labels."""

    title: str
    legend: list[str]
    rects: list[Rect] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    baseline: float = HEIGHT - BOTTOM

    @property
    def empty(self) -> bool:
        return not self.rects


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2, 2.5 or 5 × 10ⁿ at or above `value` (at least TICKS)."""
    if value <= TICKS:
        return TICKS
    step = 1
    while True:
        for factor in (1, 2, 2.5, 5):
            top = int(step * factor * TICKS)
            if top >= value and top % TICKS == 0:
                return top
        step *= 10


def stacked(title: str, legend: list[str], columns: list[Column]) -> BarChart:
    """Stack each column's segments from the baseline up, scaled to the largest column; at
    most a dozen column labels are written (every n-th), the rest are in the table."""
    chart = BarChart(title, legend)
    if not columns:
        return chart
    top = nice_ceiling(max(column.total for column in columns))
    plot = chart.baseline - TOP
    slot = min(MAX_SLOT, (WIDTH - LEFT) / len(columns))
    every = max(1, round(len(columns) / 12))
    for number, column in enumerate(columns):
        x = LEFT + number * slot + slot * GAP / 2
        bottom = chart.baseline
        for segment in column.segments:
            if segment.value <= 0:
                continue
            height = plot * segment.value / top
            bottom -= height
            chart.rects.append(
                Rect(
                    round(x, 1),
                    round(bottom, 1),
                    round(slot * (1 - GAP), 1),
                    round(height, 1),
                    segment,
                )
            )
        if number % every == 0:
            text = Truncator(column.label).chars(max(3, int(slot * every // CHAR_WIDTH)))
            chart.labels.append(Label(round(x + slot * (1 - GAP) / 2, 1), text))
    chart.ticks = [
        Tick(round(chart.baseline - plot * n / TICKS, 1), top * n // TICKS)
        for n in range(TICKS + 1)
    ]
    return chart

"""The health card's latency chart as plain numbers for an inline SVG (no chart library, no JS).

A gateway is checked every few seconds, so an hour holds hundreds of samples; the chart shows at
most MAX_POINTS, each the worst latency of its slice of time (a spike must not be averaged
away), a slice with a failed check drawn as down. The template draws the line, a y axis with ms
labels, an x axis with clock times, and one hover/focus target with a tooltip per point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

MAX_POINTS = 30
WIDTH, HEIGHT = 280, 84
# The plot area inside the SVG: room on the left for the ms labels, below for the times.
LEFT, RIGHT, TOP, BOTTOM = 34, 6, 8, 18


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float
    label: str  # the tooltip: "12:03:15 · 14 ms" or "12:03:15 · down"
    down: bool
    label_x: float  # where the hover label sits, kept inside the chart
    hit_x: float  # the left edge of its hover target (a column as wide as the gap between points)


@dataclass(frozen=True, slots=True)
class Tick:
    at: float  # y for the y axis, x for the x axis
    label: str


@dataclass(frozen=True, slots=True)
class Sparkline:
    width: int
    height: int
    left: int
    right_x: int
    top: int
    baseline: int
    plot_height: int
    hit_width: float
    label_x: int  # the right edge of the y axis labels
    line: str  # polyline points
    points: tuple[Point, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    summary: str  # the accessible name
    samples: int


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.1f} s"


def _bucket(samples: list[tuple[datetime, float | None]]) -> list[tuple[datetime, float | None, bool]]:
    """At most MAX_POINTS (time, worst latency, any down) slices, oldest first."""
    size = -(-len(samples) // MAX_POINTS)  # ceil
    out = []
    for i in range(0, len(samples), size):
        chunk = samples[i : i + size]
        latencies = [v for _, v in chunk if v is not None]
        out.append((chunk[-1][0], max(latencies, default=None), len(latencies) < len(chunk)))
    return out


def _nice_peak(value: float, floor: float = 10.0) -> float:
    """A round top for the y axis (10, 20, 50, 100, 200, 500 … ms), from ``floor`` up."""
    step = floor
    while True:
        for m in (1, 2, 5):
            if value <= step * m:
                return step * m
        step *= 10


def build(
    samples: list[tuple[datetime, float | None]],
    *,
    fmt: Callable[[float], str] = _ms,
    title: str = "Latency over the last hour",
    unit: str = "checks",
    floor: float = 10.0,
    words: tuple[str, str] = ("worst", "best"),
) -> Sparkline | None:
    """``samples`` are (checked_at, latency in ms or None when the check failed), oldest first.

    Other series (the queue page's runs per minute, wait) pass ``fmt`` for their values, a
    ``title`` and ``unit`` for the summary and a smaller ``floor`` for the y axis's top."""
    if not samples:
        return None
    buckets = _bucket(samples)
    latencies = [v for _, v, _ in buckets if v is not None]
    peak = _nice_peak(max(latencies, default=1.0) or 1.0, floor)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_h
    step = plot_w / max(1, len(buckets) - 1)
    points = []
    for i, (at, value, down) in enumerate(buckets):
        x = LEFT + (i * step if len(buckets) > 1 else plot_w)
        y = baseline if value is None else baseline - (value / peak) * plot_h
        clock = timezone.localtime(at).strftime("%H:%M:%S")
        text = f"{clock} · {fmt(value)}" if value is not None else f"{clock} · down"
        if down and value is not None:
            text += " (a check failed)"
        label_x = min(max(x, LEFT + 40), WIDTH - RIGHT - 40)
        hit = max(step, 6)
        points.append(Point(round(x, 1), round(y, 1), text, down, round(label_x, 1), round(x - hit / 2, 1)))
    first, last = timezone.localtime(samples[0][0]), timezone.localtime(samples[-1][0])
    x_ticks = (Tick(LEFT, first.strftime("%H:%M")), Tick(WIDTH - RIGHT, last.strftime("%H:%M")))
    y_ticks = (Tick(TOP, fmt(peak)), Tick(TOP + plot_h / 2, fmt(peak / 2)), Tick(baseline, "0"))
    downs = sum(1 for _, v in samples if v is None)
    if latencies:
        summary = (
            f"{title}, {len(samples)} {unit}: last {fmt(latencies[-1])}, "
            f"{words[0]} {fmt(max(latencies))}, {words[1]} {fmt(min(latencies))}"
        )
    else:
        summary = f"{title}, {len(samples)} {unit}: every check failed"
    if downs and latencies:
        summary += f", {downs} failed"
    return Sparkline(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right_x=WIDTH - RIGHT,
        top=TOP,
        baseline=baseline,
        plot_height=plot_h,
        hit_width=round(max(step, 6), 1),
        label_x=LEFT - 4,
        line=" ".join(f"{p.x},{p.y}" for p in points),
        points=tuple(points),
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        summary=summary,
        samples=len(samples),
    )

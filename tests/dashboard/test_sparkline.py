"""dashboard.sparkline: the health card's latency chart, drawn server-side."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dashboard import sparkline

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def samples(values):
    return [(T0 + timedelta(seconds=10 * i), v) for i, v in enumerate(values)]


def test_no_samples_no_chart():
    assert sparkline.build([]) is None


def test_an_hour_of_checks_is_at_most_thirty_points_and_a_spike_survives():
    values = [10.0] * 360
    values[200] = 480.0
    chart = sparkline.build(samples(values))
    assert chart.samples == 360 and len(chart.points) == sparkline.MAX_POINTS
    assert max(chart.points, key=lambda p: -p.y).label.endswith("· 480 ms")  # the highest point
    assert [t.label for t in chart.y_ticks] == ["500 ms", "250 ms", "0"]  # a round top
    assert [t.label for t in chart.x_ticks] == ["12:00", "12:59"]


def test_points_stay_inside_the_plot_and_a_failed_check_is_drawn_down():
    chart = sparkline.build(samples([12.0, None, 30.0]))
    assert all(
        chart.left <= p.x <= chart.right_x and chart.top <= p.y <= chart.baseline for p in chart.points
    )
    down = chart.points[1]
    assert down.down and down.y == chart.baseline and down.label.endswith("· down")
    assert (
        chart.summary == "Latency over the last hour, 3 checks: last 30 ms, worst 30 ms, best 12 ms, 1 failed"
    )


def test_every_check_failed():
    chart = sparkline.build(samples([None, None]))
    assert chart.summary.endswith("every check failed")
    assert all(p.down for p in chart.points)

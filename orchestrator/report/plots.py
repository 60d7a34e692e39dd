"""Line charts as inline SVG, drawn from the run's timeline: no library, no script, nothing fetched.

    timeline (t, cumulative done per stage, live replicas per stage)
        ─▶ throughput: items/s over a trailing window of RATE_WINDOW samples ─▶ polyline per stage
        ─▶ replicas: a step line per stage
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

WIDTH, HEIGHT = 760, 230
LEFT, RIGHT, TOP, BOTTOM = 52, 150, 14, 34
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
DASHES = ("none", "10 5", "3 4", "14 4 3 4")
"""Line patterns in turn, so stages whose lines coincide (they move together) stay told apart."""
Scale = Callable[[float], float]
"""A chart's map from a value to its pixel position on one axis."""
RATE_WINDOW = 5
"""Samples a throughput point averages over (about 5 s early in a run; more once a long run's timeline thins)."""


def throughput(t: Sequence[float], done: Mapping[str, Sequence[int]]) -> dict[str, list[float]]:
    """Items per second of each stage at each sample, over the RATE_WINDOW samples before it."""
    rates: dict[str, list[float]] = {}
    for name, values in done.items():
        series = [0.0]
        for i in range(1, len(t)):
            j = max(0, i - RATE_WINDOW)
            span = t[i] - t[j]
            series.append((values[i] - values[j]) / span if span > 0 else 0.0)
        rates[name] = series
    return rates


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above `value` (an axis' top)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value)


def palette(names: Sequence[str]) -> dict[str, str]:
    """A colour per name, so a stage has the same colour in every chart."""
    return {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(names)}


def line_chart(title: str, t: Sequence[float], series: Mapping[str, Sequence[float]], colours: Mapping[str, str],
               *, steps: bool = False) -> str:
    """An SVG chart of `series` over `t` (seconds), one line per name in its colour, with axes and a legend."""
    if len(t) < 2 or not series:
        return f'<p class="empty">{escape(title)}: not enough samples (the run was too short to plot).</p>'
    x_top = max(t[-1], 1e-9)
    y_top = nice_ceiling(max((max(v) for v in series.values() if v), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(value: float) -> float:
        return LEFT + plot_w * value / x_top

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / y_top)

    parts = [f'<figure class="chart"><figcaption>{escape(title)}</figcaption>',
             f'<svg role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}">',
             f"<title>{escape(title)}</title>", *_axes(x, y, x_top, y_top)]
    for index, (name, values) in enumerate(series.items()):
        colour = colours.get(name, COLOURS[0])
        # earlier lines drawn wider, so a line that another covers (stages moving together) still shows
        width = min(2 + 2 * (len(series) - 1 - index), 10)
        dash = DASHES[index % len(DASHES)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="{width}" stroke-dasharray="{dash}" '
                     f'stroke-linejoin="round" points="{_points(t, values, x, y, steps)}"/>')
        legend_y = TOP + 16 * index + 8
        parts.append(f'<line x1="{WIDTH - RIGHT + 10}" y1="{legend_y - 4}" x2="{WIDTH - RIGHT + 34}" '
                     f'y2="{legend_y - 4}" stroke="{colour}" stroke-width="3" stroke-dasharray="{dash}"/>'
                     f'<text x="{WIDTH - RIGHT + 40}" y="{legend_y}" class="legend">{escape(name)}</text>')
    parts.append("</svg></figure>")
    return "".join(parts)


def _points(t: Sequence[float], values: Sequence[float], x: Scale, y: Scale, steps: bool) -> str:
    points = []
    for i, (when, value) in enumerate(zip(t, values, strict=True)):
        if steps and i:
            points.append(f"{x(when):.1f},{y(values[i - 1]):.1f}")
        points.append(f"{x(when):.1f},{y(value):.1f}")
    return " ".join(points)


def _axes(x: Scale, y: Scale, x_top: float, y_top: float) -> list[str]:
    """Both axes with five ticks each, and faint grid lines across the plot."""
    lines = [f'<line x1="{LEFT}" y1="{y(0):.1f}" x2="{WIDTH - RIGHT}" y2="{y(0):.1f}" class="axis"/>',
             f'<line x1="{LEFT}" y1="{y(0):.1f}" x2="{LEFT}" y2="{y(y_top):.1f}" class="axis"/>',
             f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 4}" class="label">seconds since the run</text>']
    for k in range(5):
        value = y_top * k / 4
        lines.append(f'<line x1="{LEFT}" y1="{y(value):.1f}" x2="{WIDTH - RIGHT}" y2="{y(value):.1f}" '
                     f'class="gridline"/><text x="{LEFT - 6}" y="{y(value) + 4:.1f}" class="tick" '
                     f'text-anchor="end">{value:g}</text>')
        when = x_top * k / 4
        lines.append(f'<text x="{x(when):.1f}" y="{y(0) + 16:.1f}" class="tick" text-anchor="middle">'
                     f"{when:.0f}</text>")
    return lines

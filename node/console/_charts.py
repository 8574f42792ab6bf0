"""Charts of the console's history views, drawn on the server as inline SVG.

The console's Content-Security-Policy allows no inline script and no ``style=`` attribute, so a
chart is plain SVG elements with presentation attributes (``fill``, ``stroke``): it renders
without JavaScript and needs nothing vendored. Every caller-influenced text in it (labels,
dates) is escaped here, since the result is marked safe for the templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH = 640
HEIGHT = 200
_LEFT, _RIGHT, _TOP, _BOTTOM = 40, 12, 12, 36
#: Points a chart draws at most (a year of daily checks); older ones are left out.
MAX_POINTS = 400


@dataclass(frozen=True)
class Point:
    """One value of a series: its label on the x axis (a date) and the value, None where
    nothing was measured (a gap in the line)."""

    label: str
    value: float | None


def line_chart(points: Sequence[Point], *, title: str, maximum: float = 100.0) -> Markup:
    """An SVG line chart of ``points`` (oldest first) from 0 to ``maximum``, with a circle per
    measured point carrying its label and value as a tooltip (``<title>``)."""
    points = list(points)[-MAX_POINTS:]
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        'stroke="#cccccc"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = _TOP + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" '
            'stroke="#e0e0e0"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#555555">{maximum * fraction:g}</text>'
        )
    if not points:
        parts.append(
            f'<text x="{_LEFT + plot_w / 2}" y="{_TOP + plot_h / 2}" text-anchor="middle" '
            'font-size="13" fill="#777777">暂无历史数据</text></svg>'
        )
        return Markup("".join(parts))  # noqa: S704 (every text in it escaped above)
    step = plot_w / max(len(points) - 1, 1)
    segments: list[list[tuple[float, float]]] = [[]]
    for i, point in enumerate(points):
        x = _LEFT + (i * step if len(points) > 1 else plot_w / 2)
        if point.value is None:
            if segments[-1]:
                segments.append([])
            continue
        value = min(max(point.value, 0.0), maximum)
        y = _TOP + plot_h * (1 - value / maximum)
        segments[-1].append((x, y))
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#1f6fb2">'
            f"<title>{escape(point.label)}: {point.value:.1f}</title></circle>"
        )
    for segment in segments:
        if len(segment) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in segment)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="#1f6fb2" stroke-width="2"/>'
            )
    for i in sorted({0, len(points) - 1}):
        x = _LEFT + (i * step if len(points) > 1 else plot_w / 2)
        anchor = "start" if i == 0 and len(points) > 1 else "end" if i else "middle"
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 14}" text-anchor="{anchor}" font-size="11" '
            f'fill="#555555">{escape(points[i].label)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it escaped above)

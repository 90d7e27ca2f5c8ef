# -*- test-case-name: tests.test_charts -*-
"""
The stats page's charts, drawn as inline SVG (no script, nothing fetched
from elsewhere): per frontend and backend the request rate, the error
rate and the p50/p99 time to the response head over the last 15 minutes
(L{lbkit.stats._history}), and per server a band of its states.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from twisted.web.template import Tag, tags

from lbkit.stats._history import SPAN

__all__ = ["charts", "timeline", "STATE_COLOURS"]

#: The colour of each server state's band.
STATE_COLOURS = {"UP": "#43a047", "DOWN": "#e53935", "DRAIN": "#1e88e5", "MAINT": "#a1887f"}

_WIDTH, _HEIGHT, _TOP = 240, 64, 14


def _svg(kind: str, width: int, height: int, *children: Any, **data: str) -> Tag:
    attributes: dict[Any, Any] = {
        "xmlns": "http://www.w3.org/2000/svg", "width": str(width), "height": str(height),
        "viewBox": f"0 0 {width} {height}", "class": f"chart {kind}", "role": "img",
    }
    attributes.update({f"data-{k}": v for k, v in data.items()})
    return Tag("svg", attributes=attributes, children=list(children))


def _text(x: float, y: float, text: str, anchor: str = "start") -> Tag:
    return Tag("text", attributes={"x": f"{x:g}", "y": f"{y:g}", "font-size": "10", "text-anchor": anchor,
                                   "fill": "#333"}, children=[text])


def _format(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _lines(points: Sequence[Sequence[Any]], column: int, now: float, top: float) -> list[list[str]]:
    """The C{x,y} of each unbroken run of values in C{column}."""
    runs: list[list[str]] = []
    run: list[str] = []
    start = now - SPAN
    for point in points:
        value = point[column]
        if value is None:
            if run:
                runs.append(run)
            run = []
            continue
        x = max(0.0, (point[0] - start) / SPAN * _WIDTH)
        y = _HEIGHT - 2 - (value / top) * (_HEIGHT - _TOP - 4)
        run.append(f"{x:.1f},{y:.1f}")
    if run:
        runs.append(run)
    return runs


def chart(name: str, title: str, unit: str, points: Sequence[Sequence[Any]], now: float,
          columns: Sequence[tuple[int, str, str]]) -> Tag:
    """
    One chart: a line per C{(column, colour, label)} of C{points} over
    the last 15 minutes ending C{now}, scaled to the highest value.
    """
    values = [p[c] for p in points for c, _, _ in columns if p[c] is not None]
    top = max(values) if values else 0.0
    scale = top if top > 0 else 1.0
    children: list[Any] = [
        Tag("rect", attributes={"x": "0", "y": "0", "width": str(_WIDTH), "height": str(_HEIGHT),
                                "fill": "#fafafa", "stroke": "#bbb"}),
        _text(3, 11, title),
        _text(_WIDTH - 3, 11, f"max {_format(top)} {unit}" if values else "no data yet", "end"),
    ]
    for column, colour, label in columns:
        for run in _lines(points, column, now, scale):
            children.append(Tag("polyline", attributes={
                "points": " ".join(run), "fill": "none", "stroke": colour, "stroke-width": "1.5",
                "class": f"line {label}",
            }))
            x, y = run[-1].split(",")  # the newest point of a run, so that a lone one shows
            children.append(Tag("circle", attributes={"cx": x, "cy": y, "r": "2", "fill": colour}))
    return _svg("line", _WIDTH, _HEIGHT, *children, chart=name, points=str(len(points)), max=_format(top))


def charts(history: Optional[dict[str, Any]]) -> Tag:
    """The three charts of a frontend or backend row's C{history}."""
    points = history["points"] if history else []
    now = history["now"] if history else 0.0
    return tags.div(
        chart("requests", "requests/s, 15 min", "/s", points, now, [(1, "#1e88e5", "rate")]),
        " ",
        chart("errors", "errors/s", "/s", points, now, [(2, "#e53935", "rate")]),
        " ",
        chart("latency", "to response head: p50 p99", "ms", points, now,
              [(3, "#43a047", "p50"), (4, "#fb8c00", "p99")]),
        class_="charts",
    )


def timeline(name: str, bands: Sequence[Sequence[Any]]) -> Tag:
    """A server's state band over the last 15 minutes (C{[[from, to, state], ...]}, the last ending now)."""
    width, height = 480, 12
    now = bands[-1][1]
    start = now - SPAN
    children: list[Any] = [Tag("rect", attributes={"x": "0", "y": "0", "width": str(width), "height": str(height),
                                                   "fill": "#eee"})]
    for begin, end, state in bands:
        x0 = max(0.0, (begin - start) / SPAN * width)
        x1 = max(x0 + 1.0, (end - start) / SPAN * width)
        children.append(Tag("rect", attributes={
            "x": f"{x0:.1f}", "y": "0", "width": f"{x1 - x0:.1f}", "height": str(height),
            "fill": STATE_COLOURS.get(state, "#999"), "class": f"band {state}",
        }, children=[Tag("title", children=[f"{state}"])]))
    states = " ".join(band[2] for band in bands)
    return tags.div(tags.span(name, class_="server-name"), " ", _svg("timeline", width, height, *children, states=states),
                    class_="timeline", id=f"timeline-{name}")

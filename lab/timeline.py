"""Draw a failover as an SVG: one lane per probe (its state over time), the events as marked lines.

No plotting library: the picture is a few rectangles and lines, written by hand so the demo needs
nothing beyond the standard library.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

COLOURS = {"OK": "#4caf50", "WARNING": "#ffb300", "CRITICAL": "#e53935", "UNKNOWN": "#9e9e9e",
           "PENDING": "#eeeeee"}
LEFT, RIGHT, TOP, LANE, GAP = 210, 30, 60, 26, 8


def render(path: Path, title: str, lanes: dict[str, list[tuple[float, str]]],
           events: list[tuple[float, str]], end: float, origin: float = 0.0) -> Path:
    """lanes: name → [(seconds since start, state)] in time order; events: [(seconds, label)];
    times are labelled relative to `origin` (e.g. the fault)."""
    width = 1000
    plot = width - LEFT - RIGHT
    height = TOP + len(lanes) * (LANE + GAP) + 40 + 16 * len(events)
    scale = plot / max(end, 1.0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{LEFT}" y="24" font-size="15" font-weight="bold">{escape(title)}</text>']
    for index, (name, samples) in enumerate(lanes.items()):
        y = TOP + index * (LANE + GAP)
        out.append(f'<text x="{LEFT - 8}" y="{y + LANE * 0.65:.0f}" text-anchor="end">{escape(name)}</text>')
        for (start, state), following in zip(samples, [*samples[1:], (end, "")], strict=True):
            x0, x1 = LEFT + start * scale, LEFT + min(following[0], end) * scale
            out.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 0.8):.1f}" height="{LANE}" '
                       f'fill="{COLOURS.get(state, "#bdbdbd")}"><title>{escape(name)}: {state} '
                       f'at {start:.1f} s</title></rect>')
    axis_y = TOP + len(lanes) * (LANE + GAP)
    out.append(f'<line x1="{LEFT}" y1="{axis_y}" x2="{LEFT + plot}" y2="{axis_y}" stroke="black"/>')
    step = 5 if end <= 60 else 10 if end <= 150 else 30
    first = -(int(origin) // step) * step
    for second in range(first, int(end - origin) + 1, step):
        x = LEFT + (second + origin) * scale
        out.append(f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 4}" stroke="black"/>'
                   f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle">{second:+d}s</text>')
    for index, (at, label) in enumerate(events):
        x = LEFT + at * scale
        y = axis_y + 34 + 16 * index
        right = x > LEFT + plot * 0.6  # labels near the right edge grow leftwards
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{y - 10}" stroke="#1e88e5" '
                   f'stroke-dasharray="3,3"/>'
                   f'<text x="{x + (-3 if right else 3):.1f}" y="{y}" fill="#0d47a1" '
                   f'text-anchor="{"end" if right else "start"}">{escape(f"{at - origin:+.1f}s {label}")}</text>')
    legend_x = LEFT + plot - 4 * 80
    for index, (state, colour) in enumerate(list(COLOURS.items())[:4]):
        out.append(f'<rect x="{legend_x + index * 80}" y="34" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{legend_x + index * 80 + 16}" y="44">{state}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")
    return path

"""A self-contained HTML report: sections of text, tables and figures embedded as base64 PNG.

The page needs nothing beside it, so it can be mailed or opened from any folder. A report
holds matplotlib figures, not files: ``render`` encodes them itself unless it is given their
PNG bytes (``pipeline.publish`` passes the bytes it writes to ``figures/``).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from matplotlib.figure import Figure

from ssc_jax.pipeline.report.plots import encode_figure

CSS_PX_PER_INCH = 96

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
.table { overflow-x: auto; margin: .8em 0; }
table { border-collapse: collapse; font-size: .92em; }
caption { caption-side: bottom; text-align: left; color: #555; padding-top: .3em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .15em 1.2em;
           background: #f6f6f6; border: 1px solid #ddd; padding: .7em 1em; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; }
.note { color: #555; font-size: .92em; }
"""


class Text(NamedTuple):
    text: str
    note: bool


class Facts(NamedTuple):
    """What a report is about, as (name, value) pairs: the model, the data, N..."""

    pairs: Sequence[tuple[str, str]]


class Table(NamedTuple):
    headers: Sequence[str]
    rows: Sequence[Sequence[object]]
    caption: str


class Plot(NamedTuple):
    """A figure, published as ``figures/<stem>.png`` and ``.pdf``."""

    stem: str
    figure: Figure
    caption: str


class Section:
    """A heading (none for an introduction) and the blocks under it, in order."""

    def __init__(self, heading: str | None = None):
        self.heading = heading
        self.blocks: list[Text | Facts | Table | Plot] = []

    def text(self, text: str, *, note: bool = False) -> None:
        self.blocks.append(Text(text=text, note=note))

    def facts(self, pairs: Sequence[tuple[str, object]]) -> None:
        """A box of (name, value) pairs; values print as ``table`` cells do."""
        self.blocks.append(Facts(pairs=list(pairs)))

    def table(
        self, headers: Sequence[str], rows: Sequence[Sequence[object]], *, caption: str = ""
    ) -> None:
        """A table; floats print with 4 significant digits, booleans as yes/NO."""
        self.blocks.append(Table(headers=list(headers), rows=list(rows), caption=caption))

    def figure(self, stem: str, figure: Figure, caption: str = "") -> None:
        self.blocks.append(Plot(stem=stem, figure=figure, caption=caption))


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _td(value) -> str:
    """A table cell; numbers align right."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return f'<td class="num">{_cell(value)}</td>' if number else f"<td>{_cell(value)}</td>"


def _facts_html(facts: Facts) -> str:
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{_cell(v)}</dd>" for k, v in facts.pairs)
    return f'<dl class="facts">{items}</dl>'


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in table.rows)
    cap = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return (
        f'<div class="table"><table>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _figure_html(plot: Plot, png: bytes) -> str:
    """The figure at its size in inches (``CSS_PX_PER_INCH``), so its type keeps its size in
    points, whatever the PNG's resolution; narrower when the page is."""
    data = base64.b64encode(png).decode("ascii")
    alt = html.escape(plot.caption or plot.stem)
    width = round(plot.figure.get_figwidth() * CSS_PX_PER_INCH)
    cap = f"<figcaption>{html.escape(plot.caption)}</figcaption>" if plot.caption else ""
    return (
        f'<figure><img src="data:image/png;base64,{data}" width="{width}" alt="{alt}">'
        f"{cap}</figure>"
    )


class Report:
    """A title and sections, rendered as one HTML page."""

    def __init__(self, title: str, sections: Iterable[Section] = ()):
        self.title = title
        self.sections = list(sections)

    def figures(self) -> dict[str, Figure]:
        """Every figure by its stem, in order of appearance.

        Raises:
          ValueError: when two figures share a stem.
        """
        found: dict[str, Figure] = {}
        for section in self.sections:
            for block in section.blocks:
                if isinstance(block, Plot):
                    if block.stem in found:
                        raise ValueError(f"two figures of the report are named {block.stem!r}")
                    found[block.stem] = block.figure
        return found

    def render(self, png: Mapping[str, bytes] | None = None) -> str:
        """The page; ``png`` maps a figure's stem to its PNG bytes (encoded here if absent)."""
        png = dict(png or {})
        parts = []
        for section in self.sections:
            if section.heading is not None:
                parts.append(f"<h2>{html.escape(section.heading)}</h2>")
            for block in section.blocks:
                if isinstance(block, Text):
                    cls = ' class="note"' if block.note else ""
                    parts.append(f"<p{cls}>{html.escape(block.text)}</p>")
                elif isinstance(block, Facts):
                    parts.append(_facts_html(block))
                elif isinstance(block, Table):
                    parts.append(_table_html(block))
                else:
                    image = png.get(block.stem) or encode_figure(block.figure, "png")
                    parts.append(_figure_html(block, image))
        title = html.escape(self.title)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{title}</h1>\n" + "\n".join(parts) + "\n</body></html>\n"
        )

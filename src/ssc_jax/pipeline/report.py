"""A self-contained HTML report: headings, text, tables and figures embedded as base64 PNG.

The file needs nothing beside it, so it can be mailed or opened from any folder.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; }
.note { color: #555; font-size: .92em; }
"""


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


class Report:
    """Collects blocks in order and renders them as one HTML page."""

    def __init__(self, title: str):
        self.title = title
        self._blocks: list[str] = []

    def heading(self, text: str) -> None:
        self._blocks.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str, *, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self._blocks.append(f"<p{cls}>{html.escape(text)}</p>")

    def table(
        self, headers: Sequence[str], rows: Sequence[Sequence[object]], *, caption: str = ""
    ) -> None:
        """A table; floats print with 4 significant digits, booleans as yes/NO."""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r) + "</tr>" for r in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self._blocks.append(
            f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )

    def figure(self, png_path: str | Path, caption: str = "") -> None:
        """Embed the PNG at ``png_path`` (read now) with an optional caption."""
        data = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
        alt = html.escape(caption or Path(png_path).stem)
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._blocks.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">{cap}</figure>'
        )

    def render(self) -> str:
        title = html.escape(self.title)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{title}</h1>\n" + "\n".join(self._blocks) + "\n</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.render(), encoding="utf-8")
        return path

"""Self-contained HTML pages: inline CSS, plots as data: URIs, nothing fetched from a network."""

from __future__ import annotations

import html
from collections.abc import Sequence

from graphprune.report.format import printable

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f2f5f9; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.meta { color: #555; font-size: 0.9em; } .notice { color: #8a5a00; }
"""


def escape(value) -> str:
    """HTML-escaped text, control characters as visible escapes (names come from the model)."""
    return html.escape(printable(value), quote=True)


def table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """An HTML table; every cell is escaped."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(png_base64: str | None, alt: str) -> str:
    """An inline PNG (empty when there is no plot)."""
    if png_base64 is None:
        return ""
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{png_base64}">'


def section(title: str, *parts: str) -> str:
    return f"<h2>{escape(title)}</h2>\n" + "\n".join(p for p in parts if p)


def paragraph(text: str, cls: str = "meta") -> str:
    return f'<p class="{cls}">{escape(text)}</p>'


def page(title: str, sections: Sequence[str]) -> str:
    """A complete HTML document."""
    body = "\n".join(sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n"
            f"<body><h1>{escape(title)}</h1>\n{body}\n</body></html>\n")

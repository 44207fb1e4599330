"""A self-contained HTML page: inline CSS, images as base64 data URIs, no external reference.

Nothing in the page points outside it (no ``src``/``href`` to a file or URL, no script or
font from a CDN), so it can be mailed, attached to CI artefacts or opened offline. Text
given by callers is HTML-escaped and rendered by :func:`markdown_to_html`, a small
markdown subset (no links, on purpose):

* ``#``, ``##``, ``###`` headings (rendered one level below the page's own headings);
* paragraphs separated by blank lines; ``- `` / ``* `` bullet lists;
* tables of ``|``-separated rows (a ``|---|`` row marks the header);
* fenced code blocks (three backticks), inline ``code``, ``**bold**`` and ``*italic*``.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: center; }
th { background: #f3f3f3; }
td.name, th.name { text-align: left; font-weight: bold; }
td.diag { color: #999; }
.ci { color: #555; font-size: .85em; display: block; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
code, pre { background: #f6f8fa; border-radius: 3px; font-family: Menlo, Consolas, monospace; font-size: .9em; }
pre { padding: .6em; overflow-x: auto; white-space: pre-wrap; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .4em .8em; }
details { margin: .4em 0; }
summary { cursor: pointer; font-weight: bold; }
.response { white-space: pre-wrap; background: #fafafa; border: 1px solid #eee; padding: .3em .5em; margin: .2em 0; }
"""


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def data_uri(path: str | Path) -> str:
    """``data:<mime>;base64,...`` of an image file (png, jpg, gif, svg); ValueError for another type."""
    path = Path(path)
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(
            f"{path}: cannot embed a {path.suffix or 'suffix-less'} file as an image ({sorted(MIME)})"
        )
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def figure(path: str | Path, caption: str, alt: str | None = None) -> str:
    """An ``<figure>`` with the image embedded as a data URI."""
    return (
        f'<figure><img src="{data_uri(path)}" alt="{escape(alt or caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _inline(text: str) -> str:
    """Escape, then `code`, **bold**, *italic* (nothing else: no links)."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{escape(part[1:-1])}</code>")
            continue
        s = escape(part)
        s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", s)
        out.append(s)
    return "".join(out)


def _table(lines: Sequence[str]) -> str:
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    is_sep = [all(re.fullmatch(r":?-{3,}:?", c) for c in r) for r in rows]
    head: list[list[str]] = []
    body = rows
    if len(rows) > 1 and is_sep[1]:
        head, body = [rows[0]], rows[2:]
    body = [r for r, sep in zip(body, is_sep[len(rows) - len(body) :]) if not sep]
    out = ["<table>"]
    for r in head:
        out.append("<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in r) + "</tr>")
    for r in body:
        out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def markdown_to_html(text: str, heading_offset: int = 2) -> str:
    """Render the markdown subset of the module docstring to HTML (all text escaped)."""
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            i += 1
            continue
        if stripped.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            out.append("<pre>" + escape("\n".join(lines[i + 1 : j])) + "</pre>")
            i = j + 1
            continue
        m = re.match(r"(#{1,4})\s+(.*)", stripped)
        if m:
            level = min(6, len(m.group(1)) + heading_offset)
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
            continue
        if stripped.startswith("|"):
            j = i
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            out.append(_table(lines[i:j]))
            i = j
            continue
        if re.match(r"[-*]\s+", stripped):
            items = []
            while i < len(lines) and re.match(r"\s*[-*]\s+", lines[i]):
                item = re.sub(r"^\s*[-*]\s+", "", lines[i])
                i += 1
                while (
                    i < len(lines)
                    and lines[i].startswith("  ")
                    and lines[i].strip()
                    and not re.match(r"\s*[-*]\s+", lines[i])
                ):
                    item += " " + lines[i].strip()
                    i += 1
                items.append(f"<li>{_inline(item)}</li>")
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        para = []
        while i < len(lines) and lines[i].strip() and not re.match(r"\s*([-*]\s+|#{1,4}\s|\||```)", lines[i]):
            para.append(lines[i].strip())
            i += 1
        if not para:  # a line the loops above did not take (cannot happen, but never spin)
            para, i = [stripped], i + 1
        out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def page(title: str, body: str) -> str:
    """A complete HTML5 document with the inline stylesheet."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )

"""MkDocs hook: equations (`$...$`, `$$...$$`) as MathML, rendered with no script.

`pymdownx.arithmatex` (generic mode) wraps each equation in a
`span`/`div` of class `arithmatex`; this turns its LaTeX into MathML with
`latex2mathml`, which browsers display natively, so the pages need neither
MathJax nor a network connection.
"""

from __future__ import annotations

import html
import re

MATH = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">(?P<body>.*?)</(?P=tag)>', re.DOTALL
)
DELIMITERS = ((r"\[", r"\]"), (r"\(", r"\)"), ("$$", "$$"), ("$", "$"))


def to_mathml(match: re.Match) -> str:
    """One arithmatex element as a MathML `<math>` element."""
    from latex2mathml.converter import convert

    body = html.unescape(match.group("body")).strip()
    for opening, closing in DELIMITERS:
        if body.startswith(opening) and body.endswith(closing):
            body = body[len(opening) : len(body) - len(closing)]
            break
    display = "block" if match.group("tag") == "div" else "inline"
    return convert(body.strip(), display=display)


def on_page_content(html_text, page, config, files, **kwargs):
    """Replaces every equation of the page."""
    return MATH.sub(to_mathml, html_text)

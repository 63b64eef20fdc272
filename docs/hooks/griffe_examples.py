"""Griffe extension: a docstring's `Example:` section is read as an examples section.

keras-kd's docstrings end with an `Example:` heading followed by a blank line
and unindented `>>>` lines or a code fence. Griffe's Google-style parser knows
only `Examples:` followed directly by an indented block; anything else is
rendered as prose, where doctest output such as `[4, 4]` even reads as a
Markdown link. This rewrites each such section into that form before the
docstring is parsed, so the examples render as Python sessions and code.
"""

from __future__ import annotations

import re

import griffe

HEADING = re.compile(r"^(?P<indent>[ \t]*)Examples?:[ \t]*$")
SECTION = re.compile(r"^[A-Z][\w ]*:[ \t]*$")


def examples_section(text: str) -> str:
    """`text` with each `Example:` section as an indented `Examples:` block.

    The section runs to the next section heading at the same indentation (such
    as `Raises:`) or to the end of the docstring.
    """
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        heading = HEADING.match(lines[index])
        if not heading:
            out.append(lines[index])
            index += 1
            continue
        indent = heading.group("indent")
        out.append(f"{indent}Examples:")
        index += 1
        while index < len(lines) and not lines[index].strip():
            index += 1  # the parser wants the block right under the heading
        while index < len(lines):
            line = lines[index]
            body = line[len(indent):] if line.startswith(indent) else line.lstrip()
            if line.strip() and SECTION.match(body) and not body.startswith(" "):
                break
            out.append(f"{indent}    {body}" if line.strip() else "")
            index += 1
    return "\n".join(out)


class ExampleSections(griffe.Extension):
    """Applies `examples_section` to every docstring as it is loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = examples_section(obj.docstring.value)

"""Results tables (Markdown, JSON) and training-curve plots (PNG)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from keras_kd.files import atomic_path, atomic_write_json


def _format(value, digits):
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return "" if value is None else str(value)


def markdown_table(
    rows: Sequence[Mapping], columns: Sequence[str] | None = None, digits: int = 4
) -> str:
    """Renders rows of dicts as a GitHub Markdown table.

    Args:
        rows: One mapping per row; missing keys render as empty cells.
        columns: Column order; defaults to the keys of the first row, then any new
            keys in order of appearance.
        digits: Decimal places for floats.

    Returns:
        The table as a string, ending in a newline.

    Example:

    >>> print(markdown_table([{"model": "student", "errors": 74}]), end="")
    | model | errors |
    | --- | --- |
    | student | 74 |
    """
    if columns is None:
        columns = []
        for row in rows:
            columns.extend(key for key in row if key not in columns)
    lines = [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for row in rows:
        cells = [_format(row.get(column), digits) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_json(path: str | os.PathLike, payload) -> Path:
    """Writes `payload` as indented JSON (creating parent folders); returns the path.

    The file appears whole or not at all (`keras_kd.files.atomic_write_json`).
    """
    return atomic_write_json(path, payload)


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    title: str = "",
    xlabel: str = "epoch",
    ylabel: str = "",
) -> Path:
    """Plots named series (e.g. validation accuracy per epoch) into a PNG file.

    The file appears whole or not at all.

    Args:
        curves: Mapping of run name to its values, one per epoch.
        path: Where to write the PNG.
        title: Plot title.
        xlabel: Label of the x axis.
        ylabel: Label of the y axis.

    Returns:
        The path written.

    Example:

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp(), "curves.png")
    >>> plot_curves({"student": [0.9, 0.95], "teacher": [0.97, 0.98]}, path,
    ...             ylabel="validation accuracy").read_bytes()[1:4]
    b'PNG'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, values in curves.items():
        axes.plot(range(1, len(values) + 1), list(values), label=name, marker=".")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if title:
        axes.set_title(title)
    axes.grid(alpha=0.3)
    if curves:
        axes.legend()
    figure.tight_layout()
    try:
        with atomic_path(path) as partial:
            figure.savefig(partial, dpi=110)
    finally:
        plt.close(figure)
    return path

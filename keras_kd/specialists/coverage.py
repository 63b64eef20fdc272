"""The paper's Table 4: how the specialists change correct answers, by coverage."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from keras_kd.specialists.clustering import ConfusableSubsets


def coverage_table(
    labels,
    generalist_predictions,
    combined_predictions,
    subsets: ConfusableSubsets | Sequence[Sequence[int]],
    num_classes: int | None = None,
    max_coverage: int = 4,
) -> list[dict]:
    """The paper's Table 4: accuracy change by how many specialists cover the truth.

    Examples are grouped by the number of subsets that hold their correct class
    (`max_coverage` and more are pooled into one row `"k+"`), plus a `"total"`
    row. Per group: `examples`, `generalist_correct`, `combined_correct`,
    `correct_change` (combined minus generalist) and `relative_change`
    (`correct_change / generalist_correct`, NaN when that is 0).

    Args:
        labels: Int array `(examples,)` of true classes.
        generalist_predictions: Int array of the generalist's top-1 classes.
        combined_predictions: Int array of the combined top-1 classes.
        subsets: The specialists' subsets.
        num_classes: Needed only when `subsets` is a plain list.
        max_coverage: Coverage counts from here on share one row.

    Returns:
        A list of row dicts (for `keras_kd.reports.markdown_table`).

    Raises:
        ValueError: when `subsets` is a plain list and `num_classes` is missing,
            or the subsets are invalid.

    Example:

    >>> coverage_table([0, 1], [1, 1], [0, 1], [[0]], num_classes=2)[1]["correct_change"]
    1
    """
    if not isinstance(subsets, ConfusableSubsets):
        if num_classes is None:
            raise ValueError("`num_classes` is needed when `subsets` is a plain list.")
        subsets = ConfusableSubsets(tuple(tuple(s) for s in subsets), int(num_classes))
    labels = np.asarray(labels)
    coverage = np.minimum(subsets.coverage()[labels], max_coverage)
    right_g = np.asarray(generalist_predictions) == labels
    right_c = np.asarray(combined_predictions) == labels
    rows = []
    groups = [
        (str(k) if k < max_coverage else f"{k}+", coverage == k)
        for k in range(max_coverage + 1)
    ]
    for name, mask in [*groups, ("total", np.ones_like(right_g))]:
        if not mask.any() and name != "total":
            continue
        g, c = int(right_g[mask].sum()), int(right_c[mask].sum())
        rows.append(
            {
                "specialists covering": name,
                "examples": int(mask.sum()),
                "generalist_correct": g,
                "combined_correct": c,
                "correct_change": c - g,
                "relative_change": (c - g) / g if g else float("nan"),
            }
        )
    return rows

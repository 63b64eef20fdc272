"""Finding the classes a generalist confuses (paper section 5.2).

K-means on the columns of the covariance matrix of the generalist's predicted
probabilities groups classes that are often predicted together; each group
(`ConfusableSubsets`) gets one specialist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConfusableSubsets:
    """Subsets of classes that a generalist confuses, one specialist per subset.

    Plain data: `subsets` is a tuple of sorted tuples of class ids. Subsets may
    overlap (when several clusterings are pooled) and need not cover every class.

    Args:
        subsets: The class ids of each subset.
        num_classes: The number of classes of the full problem.

    Raises:
        ValueError: for an empty subset, a class id outside `[0, num_classes)`, a
            repeated id inside a subset, or a subset holding every class (its
            dustbin would be empty).

    Example:

    >>> clusters = ConfusableSubsets(((3, 8), (4, 9)), num_classes=10)
    >>> clusters.coverage().tolist()
    [0, 0, 0, 1, 1, 0, 0, 0, 1, 1]
    """

    subsets: tuple[tuple[int, ...], ...]
    num_classes: int

    def __post_init__(self):
        subsets = tuple(
            tuple(sorted(int(c) for c in subset)) for subset in self.subsets
        )
        object.__setattr__(self, "subsets", subsets)
        validate_subsets(subsets, self.num_classes)

    def coverage(self) -> np.ndarray:
        """The number of subsets that hold each class.

        Returns:
            An int array of shape `(num_classes,)`.
        """
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for subset in self.subsets:
            counts[list(subset)] += 1
        return counts

    def report(self, class_names: Sequence[str] | None = None) -> str:
        """A readable list of the subsets, one line each, and the uncovered classes.

        Args:
            class_names: Optional names, one per class; ids are shown otherwise.

        Returns:
            A multi-line string.

        Raises:
            ValueError: when `class_names` does not have `num_classes` entries.
        """
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(
                f"`class_names` has {len(class_names)} entries but there are "
                f"{self.num_classes} classes; give one name per class or None."
            )

        def name(c):
            return str(c) if class_names is None else str(class_names[c])

        lines = [f"{len(self.subsets)} subsets of {self.num_classes} classes:"]
        for index, subset in enumerate(self.subsets):
            members = ", ".join(name(c) for c in subset)
            lines.append(
                f"  specialist {index:2d} ({len(subset):3d} classes): {members}"
            )
        uncovered = np.flatnonzero(self.coverage() == 0)
        members = ", ".join(name(c) for c in uncovered) if len(uncovered) else "none"
        lines.append(f"  no specialist ({len(uncovered)} classes): {members}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The subsets as JSON-ready data; `from_dict` reverses it."""
        return {
            "num_classes": self.num_classes,
            "subsets": [list(s) for s in self.subsets],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> ConfusableSubsets:
        """Rebuilds the subsets from `to_dict`'s output."""
        return cls(tuple(tuple(s) for s in data["subsets"]), int(data["num_classes"]))


def validate_subsets(subsets: Sequence[Sequence[int]], num_classes: int) -> None:
    """Checks class subsets for specialists; raises a `ValueError` naming the fix.

    Args:
        subsets: Class ids of each subset.
        num_classes: The number of classes of the full problem.

    Raises:
        ValueError: for an empty subset, an id outside `[0, num_classes)`, a
            repeated id, or a subset holding every class.

    Example:

    >>> validate_subsets([[0, 1]], num_classes=3)
    """
    if int(num_classes) < 2:
        raise ValueError(f"`num_classes` must be >= 2, got {num_classes!r}.")
    for index, subset in enumerate(subsets):
        subset = list(subset)
        if not subset:
            raise ValueError(
                f"`subsets[{index}]` is empty; every subset needs a class."
            )
        bad = [c for c in subset if not 0 <= int(c) < num_classes]
        if bad:
            raise ValueError(
                f"`subsets[{index}]` holds class ids {bad} outside [0, {num_classes}); "
                f"use ids of the {num_classes} classes."
            )
        if len(set(subset)) != len(subset):
            raise ValueError(f"`subsets[{index}]` = {subset} repeats a class id.")
        if len(subset) == num_classes:
            raise ValueError(
                f"`subsets[{index}]` holds all {num_classes} classes, so its dustbin "
                "class would be empty; a specialist needs a strict subset."
            )


def prediction_covariance(probabilities) -> np.ndarray:
    """The covariance matrix of predicted class probabilities over a data set.

    Entry `(i, j)` is `Cov(p_i, p_j)` over the examples: positive when the
    generalist tends to give mass to classes `i` and `j` on the same examples.

    Args:
        probabilities: Array `(examples, classes)` of predicted probabilities.

    Returns:
        A float64 array `(classes, classes)`.

    Raises:
        ValueError: for fewer than two examples or a non-2-D array.

    Example:

    >>> prediction_covariance([[1.0, 0.0], [0.0, 1.0]]).tolist()
    [[0.5, -0.5], [-0.5, 0.5]]
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 2:
        raise ValueError(
            f"`probabilities` must be a 2-D array (examples, classes) with at least 2 "
            f"examples, got shape {p.shape}."
        )
    return np.cov(p, rowvar=False)


def find_confusable_subsets(
    probabilities,
    num_subsets: int | Sequence[int],
    *,
    seed: int = 0,
    min_size: int = 2,
    normalize: bool = True,
) -> ConfusableSubsets:
    """Clusters classes that a generalist confuses (the paper's section 5.2).

    K-means (scikit-learn, seeded) on the columns of `prediction_covariance`:
    classes whose probabilities rise and fall together across examples land in
    one subset. By default each column is first scaled to unit length, so that
    K-means compares the *pattern* of a class's covariances, not its variance:
    on the raw columns (`normalize=False`, the paper's literal recipe) a
    confident generalist's columns are dominated by their diagonal entries, and
    K-means then puts most classes into one large cluster around the origin
    and leaves the others alone (measured on two-digit MNIST: clusters of
    sizes 75, 13 and 5 plus singletons for K = 10, against 7 to 14 classes
    each with unit-length columns). With several cluster counts, e.g. `(10, 20)`, the clusterings
    are pooled (duplicates removed), which gives overlapping subsets: a class
    may then be covered by several specialists, as in the paper's Table 4.

    Args:
        probabilities: Array `(examples, classes)`: the generalist's predicted
            probabilities on held-out data.
        num_subsets: The number of clusters `K`, or several to pool.
        seed: Seed of K-means.
        min_size: Clusters smaller than this are dropped (a lone class has no
            confusion for a specialist to resolve); its classes get no
            specialist from that clustering.
        normalize: Scale the covariance columns to unit length first.

    Returns:
        A `ConfusableSubsets`, subsets ordered by their smallest class id.

    Raises:
        ValueError: for `num_subsets` outside `[1, classes]` or `min_size < 1`.

    Example:

    >>> p = np.array([[0.5, 0.5, 0.0], [0.4, 0.6, 0.0], [0.0, 0.1, 0.9]])
    >>> find_confusable_subsets(p, 2).subsets
    ((0, 1),)
    """
    from sklearn.cluster import KMeans

    covariance = prediction_covariance(probabilities)
    num_classes = covariance.shape[0]
    counts = (
        [num_subsets]
        if isinstance(num_subsets, int | np.integer)
        else list(num_subsets)
    )
    if not counts or any(not 1 <= int(k) <= num_classes for k in counts):
        raise ValueError(
            f"`num_subsets` must be an int (or ints) in [1, {num_classes}], got "
            f"{num_subsets!r}."
        )
    if int(min_size) < 1:
        raise ValueError(f"`min_size` must be >= 1, got {min_size!r}.")
    columns = covariance.T
    if normalize:
        norms = np.linalg.norm(columns, axis=1, keepdims=True)
        columns = columns / np.where(norms > 0, norms, 1.0)
    found = set()
    for k in counts:
        labels = KMeans(n_clusters=int(k), random_state=seed, n_init=10).fit_predict(
            columns
        )
        for cluster in range(int(k)):
            members = tuple(int(c) for c in np.flatnonzero(labels == cluster))
            if min_size <= len(members) < num_classes:
                found.add(members)
    return ConfusableSubsets(tuple(sorted(found)), num_classes)

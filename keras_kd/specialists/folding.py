"""Mapping between the full class space and a specialist's `subset + dustbin`.

A specialist predicts the classes of its subset plus one *dustbin* class that
stands for every other class. These helpers fold labels and logits of the full
problem onto that space, and lay the subsets out as a membership matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

# Stands for log(0) where a folded distribution has an empty dustbin: finite, so that
# 0 * (log 0) terms stay 0 instead of NaN.
_LOG_ZERO = -1e9


def fold_labels(labels, subset: Sequence[int]) -> np.ndarray:
    """Maps class ids to specialist ids: position in `subset`, else the dustbin.

    Args:
        labels: Int array of class ids.
        subset: The specialist's classes; the dustbin id is `len(subset)`.

    Returns:
        An int32 array like `labels`.

    Example:

    >>> fold_labels([4, 9, 0], [4, 9]).tolist()
    [0, 1, 2]
    """
    labels = np.asarray(labels).astype(np.int64)
    mapping = np.full(max(int(labels.max(initial=0)), max(subset)) + 1, len(subset))
    mapping[list(subset)] = np.arange(len(subset))
    return mapping[labels].astype(np.int32)


def fold_logits(logits, subset: Sequence[int]):
    """Logits over `subset + dustbin` whose softmax is the folded distribution.

    `softmax(fold_logits(z))` keeps `softmax(z)` on the subset's classes and puts
    the sum of the other classes' probabilities on the dustbin: the dustbin logit
    is `logsumexp` of the other logits.

    Args:
        logits: Tensor `(batch, classes)`.
        subset: The specialist's classes (a strict subset).

    Returns:
        Float32 tensor `(batch, len(subset) + 1)`.

    Example:

    >>> fold_logits(tf.math.log([[0.5, 0.3, 0.2]]), [0]).numpy().round(3)
    array([[-0.693, -0.693]], dtype=float32)
    """
    logits = tf.cast(logits, tf.float32)
    num_classes = logits.shape[-1]
    subset = list(subset)
    rest = [c for c in range(num_classes) if c not in set(subset)]
    inside = tf.gather(logits, subset, axis=-1)
    if not rest:
        dustbin = tf.fill(tf.shape(inside[..., :1]), _LOG_ZERO)
    else:
        dustbin = tf.reduce_logsumexp(
            tf.gather(logits, rest, axis=-1), -1, keepdims=True
        )
    return tf.concat([inside, dustbin], axis=-1)


def membership_matrix(subsets: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """`M[m, c] = 1` when class `c` is in subset `m`.

    Args:
        subsets: Class ids of each subset.
        num_classes: The number of classes.

    Returns:
        A float32 array `(len(subsets), num_classes)`.

    Example:

    >>> membership_matrix([[1]], 3).tolist()
    [[0.0, 1.0, 0.0]]
    """
    matrix = np.zeros((len(subsets), num_classes), dtype=np.float32)
    for m, subset in enumerate(subsets):
        matrix[m, list(subset)] = 1.0
    return matrix

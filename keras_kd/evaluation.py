"""Scoring a model or its logits: predictions, top-k accuracy, error counts."""

from __future__ import annotations

import numpy as np


def predict_logits(model, x, *, batch_size: int = 1000) -> np.ndarray:
    """The model's outputs on `x` (an array or a batched `tf.data.Dataset`).

    Args:
        model: A `keras.Model` that outputs logits.
        x: Inputs: an array (batched here) or a dataset of batches.
        batch_size: Batch size for arrays.

    Returns:
        A float32 NumPy array of logits.
    """
    if hasattr(x, "element_spec"):
        return np.asarray(model.predict(x, verbose=0), dtype=np.float32)
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), np.float32)


def _logits_and_labels(logits, labels):
    logits, labels = np.asarray(logits), np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(
            f"Expected (examples, classes) logits and one label per example; got "
            f"logits of shape {logits.shape} and {len(labels)} labels."
        )
    return logits, labels


def error_count(logits, labels, mask=None) -> int:
    """How many examples the arg-max of `logits` gets wrong (within `mask`).

    Example:

    >>> error_count([[2.0, 1.0], [0.0, 3.0]], [0, 0])
    1
    """
    logits, labels = _logits_and_labels(logits, labels)
    wrong = np.argmax(logits, axis=-1) != labels
    return int(wrong[mask].sum() if mask is not None else wrong.sum())


def top_k_accuracy(logits, labels, k: int = 1) -> float:
    """Share of examples whose label is among the `k` largest logits.

    Ties are broken by position, like `np.argsort`.

    Example:

    >>> top_k_accuracy([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0]], [1, 1], k=2)
    1.0
    """
    logits, labels = _logits_and_labels(logits, labels)
    if len(labels) == 0:
        raise ValueError("Cannot score zero examples: the evaluation set is empty.")
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=-1)))


def accuracy(logits, labels) -> float:
    """Top-1 accuracy of `logits` against integer `labels`.

    Example:

    >>> accuracy([[2.0, 1.0], [0.0, 3.0]], [0, 0])
    0.5
    """
    return top_k_accuracy(logits, labels, k=1)

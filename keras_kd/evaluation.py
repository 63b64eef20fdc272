"""Scoring a model or its logits: predictions, top-k accuracy, error counts,
and a language model's next-token likelihood (perplexity, bits per byte).

TensorFlow is imported on first use only: commands whose `--help` must not
start it (`keras-kd acoustic --help`) import this module.
"""

from __future__ import annotations

import dataclasses
import math
import weakref

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


@dataclasses.dataclass(frozen=True)
class TokenScores:
    """Next-token figures of a language model on token windows.

    Attributes:
        nll_sum: Summed negative log-likelihood (nats) over valid targets.
        tokens: Valid targets (target id != 0).
        bytes: Bytes those targets stand for (0 when not given).

    Example:

    >>> scores = TokenScores(nll_sum=6.0, tokens=3, bytes=12)
    >>> round(scores.mean_nll, 3), round(scores.perplexity, 3), round(scores.bits_per_byte, 3)
    (2.0, 7.389, 0.721)
    """

    nll_sum: float
    tokens: int
    bytes: int = 0

    @property
    def mean_nll(self) -> float:
        """Mean negative log-likelihood per token, in nats."""
        return self.nll_sum / self.tokens

    @property
    def perplexity(self) -> float:
        """`exp(mean_nll)`: perplexity per token of the tokenizer."""
        return math.exp(self.mean_nll)

    @property
    def bits_per_byte(self) -> float:
        """`nll_sum / ln 2 / bytes` (NaN without byte counts)."""
        return self.nll_sum / math.log(2) / self.bytes if self.bytes else math.nan


# One traced scoring function per model, so that scoring after every epoch
# does not trace again.
_SCORERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _batch_nll(model):
    """A traced `(x, y) -> summed NLL over targets != 0` for `model`."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, model.input_shape[1]], tf.int32)

    @tf.function(input_signature=[spec, spec])
    def batch_nll(x, y):
        logits = tf.cast(model(x, training=False), tf.float32)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        return tf.reduce_sum(nll * tf.cast(y != 0, tf.float32))

    return batch_nll


def token_scores(
    model,
    inputs,
    targets,
    *,
    batch_size: int = 64,
    token_bytes=None,
) -> TokenScores:
    """Summed next-token negative log-likelihood of `model` over valid targets.

    Computed batch by batch, so that a large vocabulary's logits never exist
    for all the windows at once.

    Args:
        model: A `keras.Model`, int token ids `(batch, time)` -> logits
            `(batch, time, vocab)`, such as `keras_kd.models.causal_transformer`.
        inputs: Int array `(windows, time)` of input ids.
        targets: Int array of the same shape: the next ids; positions whose
            target is 0 (padding) are not counted.
        batch_size: Windows per forward pass.
        token_bytes: Bytes each id stands for, indexed by id (e.g.
            `BytePairTokenizer.token_bytes()`), for bits per byte.

    Returns:
        `TokenScores` (`.perplexity`, `.bits_per_byte`, `.mean_nll`).

    Raises:
        ValueError: for arrays of different shapes or not 2-D, a `batch_size`
            below 1, or no valid target.

    Example:

    >>> import numpy as np
    >>> from keras_kd.models import causal_transformer
    >>> model = causal_transformer(20, 4, layers=1, width=8, heads=2)
    >>> x = np.array([[1, 5, 6, 0], [1, 9, 0, 0]])
    >>> y = np.array([[5, 6, 7, 0], [9, 4, 0, 0]])
    >>> scores = token_scores(model, x, y, token_bytes=np.full(20, 2))
    >>> scores.tokens, scores.bytes
    (5, 10)
    >>> bool(np.isclose(scores.perplexity, np.exp(scores.nll_sum / 5)))
    True
    """
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    if inputs.shape != targets.shape or inputs.ndim != 2:
        raise ValueError(
            f"inputs {inputs.shape} and targets {targets.shape} must be int arrays of "
            "the same shape (windows, time)."
        )
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size!r}.")
    tokens = int(np.count_nonzero(targets))
    if tokens == 0:
        raise ValueError(
            "No valid target token (every target is padding id 0): nothing to "
            "score. Check that the windows are not empty."
        )
    batch_nll = _SCORERS.get(model)
    if batch_nll is None:
        batch_nll = _SCORERS[model] = _batch_nll(model)
    inputs, targets = inputs.astype(np.int32), targets.astype(np.int32)
    total = 0.0
    for start in range(0, len(inputs), batch_size):
        end = start + batch_size
        total += float(batch_nll(inputs[start:end], targets[start:end]))
    valid = targets[targets != 0]
    byte_count = 0 if token_bytes is None else int(np.asarray(token_bytes)[valid].sum())
    return TokenScores(nll_sum=total, tokens=tokens, bytes=byte_count)


def perplexity(model, inputs, targets, *, batch_size: int = 64) -> float:
    """`exp` of the mean next-token negative log-likelihood over valid targets.

    Per token of the tokenizer that made the ids, so comparable only between
    models that share it (`token_scores(...).bits_per_byte` is not).

    Args:
        model: Int token ids `(batch, time)` -> logits `(batch, time, vocab)`.
        inputs: Int array `(windows, time)` of input ids.
        targets: Int array of the same shape; targets equal to 0 (padding)
            are not counted.
        batch_size: Windows per forward pass.

    Returns:
        The perplexity, a float >= 1.

    Raises:
        ValueError: as `token_scores`.

    Example:

    >>> import numpy as np
    >>> from keras_kd.models import causal_transformer
    >>> model = causal_transformer(20, 4, layers=1, width=8, heads=2)
    >>> x, y = np.array([[1, 5, 6, 7]]), np.array([[5, 6, 7, 8]])
    >>> bool(1.0 < perplexity(model, x, y) < 1000.0)
    True
    """
    return token_scores(model, inputs, targets, batch_size=batch_size).perplexity

"""The language-model experiment's models and its one figure: perplexity.

- `causal_transformer`: token ids -> masked embedding plus learned positions ->
  pre-norm Transformer blocks (causal self-attention, GELU feed-forward) ->
  logits per position. Id 0 is padding: `Embedding(mask_zero=True)` gives a
  Keras mask that reaches the logits, so a `keras_kd.Distiller` and Keras'
  own losses count valid tokens only.
- `token_scores`: the summed next-token negative log-likelihood over the
  valid targets (target id != 0) of token windows, computed batch by batch so
  that a large vocabulary's logits never exist for the whole split at once.
"""

from __future__ import annotations

import dataclasses
import math
import weakref

import keras
import numpy as np
import tensorflow as tf


def causal_transformer(
    vocab_size: int,
    sequence_length: int,
    *,
    layers: int,
    width: int,
    heads: int,
    dropout: float = 0.0,
    name: str = "language_model",
) -> keras.Model:
    """A causal Transformer language model that outputs logits per position.

    Args:
        vocab_size: Token ids `[0, vocab_size)`; 0 is padding (masked).
        sequence_length: Longest input (positions have learned embeddings).
        layers: Transformer blocks.
        width: Model width (`width % heads == 0`); the feed-forward layer is
            4 times wider.
        heads: Attention heads.
        dropout: Dropout after attention and feed-forward (training only).
        name: Model name.

    Returns:
        A functional `keras.Model`: int32 `(batch, time)` ->
        `(batch, time, vocab_size)` logits carrying the padding mask; the
        last layer is named `"logits"`.

    Raises:
        ValueError: when `width` is not a multiple of `heads`, or a size is < 1.

    Example:

    >>> model = causal_transformer(50, 8, layers=1, width=16, heads=2)
    >>> tuple(model.output_shape)
    (None, 8, 50)
    """
    for option, value in (("layers", layers), ("width", width), ("heads", heads)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{option}` must be a whole number >= 1, got {value!r}.")
    if width % heads:
        raise ValueError(
            f"The width {width} is not a multiple of the {heads} attention heads; "
            "choose a width divisible by the head count (e.g. 128 with 4 heads)."
        )
    tokens = keras.Input((sequence_length,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(vocab_size, width, mask_zero=True, name="token_embedding")(
        tokens
    )
    # Positions 1..time on valid ids, 0 on padding, computed from the ids so
    # that the embedding is a layer of the graph. Its mask equals the ids'
    # mask: Keras' Add ORs its inputs' masks, and drops them if one is None.
    valid = keras.ops.cast(keras.ops.not_equal(tokens, 0), "int32")
    positions = keras.ops.cumsum(keras.ops.ones_like(tokens), axis=1) * valid
    position_vectors = keras.layers.Embedding(
        sequence_length + 1, width, mask_zero=True, name="position_embedding"
    )(positions)
    h = keras.layers.Add(name="embeddings")([h, position_vectors])
    for block in range(layers):
        x = keras.layers.LayerNormalization(name=f"block{block}_attention_norm")(h)
        x = keras.layers.MultiHeadAttention(
            heads, width // heads, dropout=0.0, name=f"block{block}_attention"
        )(x, x, use_causal_mask=True)
        h = keras.layers.Add()([h, keras.layers.Dropout(dropout)(x)])
        x = keras.layers.LayerNormalization(name=f"block{block}_mlp_norm")(h)
        x = keras.layers.Dense(4 * width, activation="gelu", name=f"block{block}_mlp_in")(x)
        x = keras.layers.Dense(width, name=f"block{block}_mlp_out")(x)
        h = keras.layers.Add()([h, keras.layers.Dropout(dropout)(x)])
    h = keras.layers.LayerNormalization(name="final_norm")(h)
    logits = keras.layers.Dense(vocab_size, name="logits")(h)
    return keras.Model(tokens, logits, name=name)


@dataclasses.dataclass(frozen=True)
class TokenScores:
    """Next-token figures of a model on token windows.

    Attributes:
        nll_sum: Summed negative log-likelihood (nats) over valid targets.
        tokens: Valid targets (target id != 0).
        bytes: Bytes those targets stand for (0 when not given).
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


def _batch_nll(model: keras.Model):
    """A traced `(x, y) -> summed NLL over targets != 0` for `model`."""
    spec = tf.TensorSpec([None, model.input_shape[1]], tf.int32)

    @tf.function(input_signature=[spec, spec])
    def batch_nll(x, y):
        logits = tf.cast(model(x, training=False), tf.float32)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        return tf.reduce_sum(nll * tf.cast(y != 0, tf.float32))

    return batch_nll


def token_scores(
    model: keras.Model,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    batch_size: int = 64,
    token_bytes: np.ndarray | None = None,
) -> TokenScores:
    """Summed next-token negative log-likelihood of `model` over valid targets.

    Args:
        model: Token ids -> logits `(batch, time, vocab)`.
        inputs, targets: Int arrays `(windows, time)`; positions whose target
            is 0 (padding) are not counted.
        batch_size: Windows per forward pass.
        token_bytes: Bytes per id (`BytePairTokenizer.token_bytes()`), for
            bits per byte.

    Returns:
        `TokenScores`.

    Raises:
        ValueError: for arrays of different shapes or without a valid target.
    """
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    if inputs.shape != targets.shape or inputs.ndim != 2:
        raise ValueError(
            f"inputs {inputs.shape} and targets {targets.shape} must be int arrays of "
            "the same shape (windows, time)."
        )
    tokens = int(np.count_nonzero(targets))
    if tokens == 0:
        raise ValueError(
            "No valid target token (every target is padding id 0): nothing to "
            "score. Check that the windows are not empty."
        )

    batch_nll = _SCORERS.get(model)
    if batch_nll is None:
        batch_nll = _SCORERS[model] = _batch_nll(model)
    total = 0.0
    for start in range(0, len(inputs), batch_size):
        x = tf.constant(inputs[start : start + batch_size], tf.int32)
        y = tf.constant(targets[start : start + batch_size], tf.int32)
        total += float(batch_nll(x, y))
    byte_count = 0 if token_bytes is None else int(np.asarray(token_bytes)[targets].sum())
    return TokenScores(nll_sum=total, tokens=tokens, bytes=byte_count)

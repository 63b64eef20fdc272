"""Small model builders: an MLP classifier and a causal Transformer language model.

Both output logits (no softmax) from a last layer named `"logits"`, which is
what `keras_kd.Distiller` and the scores of `keras_kd.evaluation` take.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import keras


def mlp(
    input_shape: int | Sequence[int],
    hidden: Sequence[int],
    classes: int,
    *,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    max_norm: float | None = None,
    name: str = "mlp",
) -> keras.Sequential:
    """A ReLU multilayer perceptron that outputs logits (no softmax).

    The paper's MNIST nets (section 3) are `mlp((28, 28), (1200, 1200), 10,
    dropout=..., max_norm=...)` for the teacher and `mlp((28, 28), (800, 800), 10)`
    for the student; inputs of more than one axis are flattened first.

    Args:
        input_shape: The shape of one example, e.g. `(28, 28)` or `64`.
        hidden: Units of each hidden layer, e.g. `(800, 800)`; `()` gives a
            linear model.
        classes: Number of output logits.
        dropout: Dropout rate after each hidden layer (0: none).
        input_dropout: Dropout rate on the inputs (0: none).
        max_norm: Max-norm bound on each unit's incoming weights (None: none).
        name: Model name.

    Returns:
        A built, uncompiled `keras.Sequential` whose last layer, `"logits"`, is a
        `Dense(classes)`.

    Raises:
        ValueError: for a non-positive width or class count, or a dropout rate
            outside [0, 1).

    Example:

    >>> mlp((28, 28), (800, 800), 10).count_params()
    1276810
    """
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    if any(int(units) < 1 for units in hidden) or int(classes) < 1:
        raise ValueError(
            f"Layer widths and the class count must be positive integers, got "
            f"hidden={tuple(hidden)} and classes={classes}."
        )
    for label, rate in (("dropout", dropout), ("input_dropout", input_dropout)):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"`{label}` must be in [0, 1), got {rate!r}.")
    constraint = keras.constraints.MaxNorm(max_norm) if max_norm else None
    layers = [keras.Input(shape)]
    if len(shape) > 1:
        layers.append(keras.layers.Flatten())
    if input_dropout:
        layers.append(keras.layers.Dropout(input_dropout))
    for units in hidden:
        layers.append(
            keras.layers.Dense(
                int(units), activation="relu", kernel_constraint=constraint
            )
        )
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(
        keras.layers.Dense(int(classes), kernel_constraint=constraint, name="logits")
    )
    return keras.Sequential(layers, name=name)


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

    Token ids -> embedding plus learned positions -> pre-norm Transformer
    blocks (causal self-attention, GELU feed-forward) -> logits. Id 0 is
    padding: `Embedding(mask_zero=True)` gives a Keras mask that reaches the
    logits, so `keras_kd.Distiller` and Keras' own losses count valid tokens
    only.

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
        ValueError: when `width` is not a multiple of `heads`, or a size is
            not a whole number >= 1.

    Example:

    >>> import numpy as np
    >>> model = causal_transformer(50, 8, layers=1, width=16, heads=2)
    >>> tuple(model.output_shape)
    (None, 8, 50)
    >>> tuple(model(np.array([[1, 7, 3, 0, 0, 0, 0, 0]], "int32")).shape)
    (1, 8, 50)
    """
    sizes = {"vocab_size": vocab_size, "sequence_length": sequence_length,
             "layers": layers, "width": width, "heads": heads}  # fmt: skip
    for option, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
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

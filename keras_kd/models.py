"""Small model builders shared by the experiments, the demo and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

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

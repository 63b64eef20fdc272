"""Omitted-class bias correction (Hinton, Vinyals and Dean 2015, section 3).

A student distilled on a transfer set that lacks some classes learns those classes
only from the teacher's soft targets, and its logits for them come out too low (or,
for a transfer set of only those classes, too high). Adding one constant to the
final-layer bias of the affected classes corrects most of this. `choose_bias_shift`
picks the constant on held-out *training* data (never the test set) by a 1-D search
for the highest accuracy; `shift_class_bias` applies it to the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np


def _class_list(classes, num_classes: int) -> list[int]:
    """`classes` as a sorted list of distinct ints in `[0, num_classes)`."""
    values = sorted({int(c) for c in np.atleast_1d(classes)})
    if not values:
        raise ValueError("`classes` is empty; give at least one class index, e.g. [3].")
    bad = [c for c in values if not 0 <= c < num_classes]
    if bad:
        raise ValueError(
            f"`classes` {bad} are outside [0, {num_classes}): the model has "
            f"{num_classes} outputs. Give class indices of the final layer."
        )
    return values


def output_dense(model: keras.Model) -> keras.layers.Dense:
    """The `Dense` layer that produces `model`'s logits (its last layer).

    Args:
        model: A Keras model whose last layer is a `Dense` layer with a bias and
            no activation (or a linear one), e.g. a Sequential MLP.

    Returns:
        That layer.

    Raises:
        ValueError: when the last layer is not a `Dense` layer with a bias and a
            linear activation.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> output_dense(model).units
    3
    """
    if hasattr(model, "student") and hasattr(model, "teacher"):
        raise ValueError(
            "Got a Distiller (or another teacher/student wrapper), whose last layer "
            "may be the teacher. Pass its `.student`."
        )
    layer = model.layers[-1] if getattr(model, "layers", None) else None
    if isinstance(layer, keras.Model):
        return output_dense(layer)
    if not isinstance(layer, keras.layers.Dense):
        raise ValueError(
            f"The model's last layer is {type(layer).__name__}, not a Dense layer, so "
            "there is no class bias to shift. Bias correction needs a model ending in "
            "Dense(num_classes)."
        )
    try:  # a functional model may transform the Dense output further
        final = layer.output is model.outputs[0]
    except (AttributeError, IndexError, TypeError, ValueError):
        final = True  # no single symbolic output to compare (e.g. subclassed)
    if not final:
        raise ValueError(
            f"The model's output is not the output of its last Dense layer "
            f"{layer.name!r} (an operation follows it), so shifting that layer's bias "
            "would not shift the logits by the same amount. End the model in "
            "Dense(num_classes)."
        )
    if not layer.use_bias:
        raise ValueError(
            f"The last layer {layer.name!r} has use_bias=False; build it with a bias "
            "to shift class biases."
        )
    if layer.activation not in (keras.activations.linear, None):
        raise ValueError(
            f"The last layer {layer.name!r} has activation "
            f"{getattr(layer.activation, '__name__', layer.activation)!r}; bias "
            "correction shifts logits, so the layer must be linear."
        )
    return layer


def shift_class_bias(model: keras.Model, classes: Sequence[int] | int, shift: float):
    """Adds `shift` to the final-layer bias of `classes`, in place.

    Because the last layer is linear, this adds exactly `shift` to those classes'
    logits for every input and leaves the other logits unchanged.

    Args:
        model: A model whose last layer is a linear `Dense` layer with a bias.
        classes: One class index or several.
        shift: The constant to add (negative to lower the biases).

    Returns:
        `model`, modified.

    Raises:
        ValueError: for a model without such a last layer or classes out of range.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(10)])
    >>> model = shift_class_bias(model, [3], 3.5)  # class 3's logit is now 3.5 higher
    """
    layer = output_dense(model)
    indices = _class_list(classes, layer.units)
    bias = np.array(keras.ops.convert_to_numpy(layer.bias))
    bias[indices] += float(shift)
    layer.bias.assign(bias)
    return model


@dataclasses.dataclass(frozen=True)
class BiasShiftChoice:
    """The outcome of `choose_bias_shift`.

    Attributes:
        shift: The chosen constant.
        accuracy: Held-out accuracy with `shift` applied.
        unshifted_accuracy: Held-out accuracy with no shift.
        candidates: The shifts that were tried.
        accuracies: Held-out accuracy of each candidate.
    """

    shift: float
    accuracy: float
    unshifted_accuracy: float
    candidates: tuple[float, ...]
    accuracies: tuple[float, ...]

    def get_config(self) -> dict:
        """The choice as a JSON-ready dict."""
        return dataclasses.asdict(self)


def shifted_accuracy(logits, labels, classes, shift: float) -> float:
    """Accuracy of `argmax(logits)` after adding `shift` to the logits of `classes`.

    Args:
        logits: Array `(n, num_classes)`.
        labels: Integer array `(n,)`.
        classes: Class indices whose logits are shifted.
        shift: The constant added.

    Returns:
        The fraction of rows whose shifted argmax equals the label.

    Raises:
        ValueError: for mismatched shapes or classes out of range.

    Example:

    >>> shifted_accuracy([[0.0, 1.0]], [0], [0], 2.0)
    1.0
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(
            f"`logits` must have shape (n, classes) with n = len(labels) = "
            f"{len(labels)}, got {logits.shape}."
        )
    indices = _class_list(classes, logits.shape[1])
    shifted = logits.copy()
    shifted[:, indices] += shift
    return float(np.mean(np.argmax(shifted, axis=1) == labels))


def choose_bias_shift(
    logits,
    labels,
    classes: Sequence[int] | int,
    candidates: Sequence[float] | None = None,
) -> BiasShiftChoice:
    """Chooses the bias shift of `classes` that maximises held-out accuracy.

    Tries every candidate; among those with the highest accuracy it takes the
    middle of the longest run of consecutive best candidates, which keeps the
    choice away from the edges of the plateau. Use logits of held-out *training*
    examples: choosing on the test set would make the test figure optimistic.

    Args:
        logits: The model's logits on held-out data, `(n, num_classes)`.
        labels: Their integer labels, `(n,)`.
        classes: The class index or indices whose bias is shifted.
        candidates: Shifts to try, in increasing order; default -20 to 20 in steps
            of 0.1 (use only positive values to raise a bias, negative to lower).

    Returns:
        A `BiasShiftChoice`.

    Raises:
        ValueError: for empty or unsorted candidates, mismatched shapes, or classes
            out of range.

    Example:

    Held-out logits whose class 3 comes out 4 too low, as after a transfer set
    without any 3:

    >>> rng = np.random.default_rng(0)
    >>> heldout_labels = rng.integers(0, 4, size=400)
    >>> heldout_logits = 4.0 * np.eye(4)[heldout_labels] + rng.normal(size=(400, 4))
    >>> heldout_logits[:, 3] -= 4.0
    >>> choice = choose_bias_shift(heldout_logits, heldout_labels, [3],
    ...                            np.arange(0.0, 10.0, 0.1))
    >>> round(choice.shift), choice.unshifted_accuracy < choice.accuracy
    (4, True)
    >>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> student = shift_class_bias(student, [3], choice.shift)
    """
    if candidates is None:
        candidates = np.round(np.arange(-200, 201) * 0.1, 10)
    grid = np.asarray(candidates, dtype=np.float64).reshape(-1)
    if grid.size == 0:
        raise ValueError("`candidates` is empty; give the shifts to try, e.g. 0 to 10.")
    if np.any(np.diff(grid) <= 0):
        raise ValueError(
            "`candidates` must be strictly increasing, so that the plateau of best "
            "shifts is a run of neighbours; sort them first."
        )
    accuracies = np.array([shifted_accuracy(logits, labels, classes, s) for s in grid])
    is_best = accuracies == accuracies.max()
    best_start, best_length, start = 0, 0, None
    for index, flag in enumerate([*is_best, False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            if index - start > best_length:
                best_start, best_length = start, index - start
            start = None
    chosen = best_start + (best_length - 1) // 2
    return BiasShiftChoice(
        shift=float(grid[chosen]),
        accuracy=float(accuracies[chosen]),
        unshifted_accuracy=shifted_accuracy(logits, labels, classes, 0.0),
        candidates=tuple(float(s) for s in grid),
        accuracies=tuple(float(a) for a in accuracies),
    )

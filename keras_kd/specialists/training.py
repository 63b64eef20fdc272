"""Training one specialist: oversampled mix, soft targets, dustbin correction.

A specialist is a copy of the generalist with a new head over `subset + dustbin`
(`build_specialist`), trained on a mix in which half the examples come from the
subset (`oversample_indices`), optionally with the generalist's folded soft targets
as a regulariser (section 6.1), and finally corrected for the oversampling
(`dustbin_log_shift`, `correct_dustbin`). `train_specialist` does all of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from keras_kd import losses as kd_losses
from keras_kd.batch import make_batch
from keras_kd.distiller import Distiller, ends_in_softmax
from keras_kd.specialists.clustering import validate_subsets
from keras_kd.specialists.folding import fold_labels, fold_logits

# Name of the new output layer of a specialist (its last output is the dustbin).
HEAD_NAME = "specialist_head"


def oversample_indices(
    labels,
    subset: Sequence[int],
    num_examples: int,
    *,
    subset_fraction: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Indices of a training mix with a fixed share of examples from `subset`.

    `round(num_examples * subset_fraction)` indices are drawn uniformly from the
    examples whose label is in `subset` (without replacement while they last),
    the others uniformly from the rest; the result is shuffled. Drawing within
    each part uniformly keeps the class proportions inside the subset and inside
    the dustbin, which `dustbin_log_shift` relies on.

    Args:
        labels: Int array `(examples,)` of class ids.
        subset: The specialist's classes.
        num_examples: Length of the mix.
        subset_fraction: Share of the mix from the subset; the paper uses 0.5.
        seed: Seed of the draw.

    Returns:
        An int64 array `(num_examples,)` of indices into `labels`.

    Raises:
        ValueError: for a fraction outside (0, 1) or a subset (or its complement)
            with no examples.

    Example:

    >>> idx = oversample_indices(np.array([0, 1, 1, 1]), [0], 4)
    >>> int((np.array([0, 1, 1, 1])[idx] == 0).sum())
    2
    """
    if not 0.0 < float(subset_fraction) < 1.0:
        raise ValueError(
            f"`subset_fraction` must be in (0, 1), got {subset_fraction!r}; the paper "
            "uses 0.5."
        )
    labels = np.asarray(labels)
    inside = np.isin(labels, list(subset))
    pools = (np.flatnonzero(inside), np.flatnonzero(~inside))
    for pool, what in zip(pools, ("in the subset", "outside the subset")):
        if len(pool) == 0:
            raise ValueError(
                f"No training example has a label {what} {list(subset)}; the mix needs "
                "both. Check the labels or the subset."
            )
    rng = np.random.default_rng(seed)
    n_in = int(round(num_examples * float(subset_fraction)))
    parts = []
    for pool, count in zip(pools, (n_in, num_examples - n_in)):
        repeats = -(-count // len(pool))  # ceil
        draws = np.concatenate([rng.permutation(pool) for _ in range(max(repeats, 1))])
        parts.append(draws[:count])
    indices = np.concatenate(parts)
    return rng.permutation(indices)


def dustbin_log_shift(subset_prior: float, subset_fraction: float = 0.5) -> float:
    """The log of the proportion by which a specialist's classes were oversampled.

    If the subset's classes hold a share `pi` of the true data but `f` of the
    training mix, training multiplied their odds against the dustbin by

        r = (f / pi) / ((1 - f) / (1 - pi)),

    so the trained specialist's logits overstate the subset against the dustbin
    by `log r`. Adding `log r` to the dustbin logit (and leaving the subset's
    logits alone) undoes it: the corrected softmax is the specialist's estimate
    under the true class frequencies. With `f = 0.5`, `r = (1 - pi) / pi`.

    Args:
        subset_prior: `pi`, the share of the subset's classes in the data
            (e.g. the training labels).
        subset_fraction: `f`, their share of the training mix.

    Returns:
        `log r` (positive when the subset was oversampled).

    Raises:
        ValueError: when either share is outside (0, 1).

    Example:

    >>> round(dustbin_log_shift(0.1, 0.5), 4)  # log 9
    2.1972
    """
    for argument, value in (
        ("subset_prior", subset_prior),
        ("subset_fraction", subset_fraction),
    ):
        if not 0.0 < float(value) < 1.0:
            raise ValueError(f"`{argument}` must be in (0, 1), got {value!r}.")
    pi, f = float(subset_prior), float(subset_fraction)
    return float(np.log(f / pi) - np.log((1.0 - f) / (1.0 - pi)))


def _head(model: keras.Model) -> keras.layers.Dense:
    head = model.layers[-1] if getattr(model, "layers", None) else None
    if not isinstance(head, keras.layers.Dense) or ends_in_softmax(model):
        raise ValueError(
            f"The model's last layer must be a Dense layer that outputs logits, got "
            f"{type(head).__name__ if head is not None else None}"
            f"{' ending in a softmax' if ends_in_softmax(model) else ''}. Build the "
            "generalist as a functional or Sequential model whose last layer is "
            "Dense(num_classes)."
        )
    return head


def correct_dustbin(specialist: keras.Model, log_shift: float) -> None:
    """Adds `log_shift` to the dustbin logit of a specialist, in place.

    The shift goes into the bias of the dustbin unit of the last `Dense` layer, so
    the corrected specialist is still a plain model that saves as usual; every
    other logit is unchanged.

    Args:
        specialist: A model from `build_specialist` (last output = dustbin).
        log_shift: Usually `dustbin_log_shift(...)`.

    Raises:
        ValueError: when the last layer is not a `Dense` with a bias.

    Example:

    >>> generalist = keras.Sequential([keras.Input((8,)), keras.layers.Dense(10)])
    >>> specialist = build_specialist(generalist, [4, 9])
    >>> before = specialist.layers[-1].bias.numpy()
    >>> shift = dustbin_log_shift(0.1)  # subset prior 0.1, half of the mix
    >>> round(shift, 3)
    2.197
    >>> correct_dustbin(specialist, shift)
    >>> np.allclose(specialist.layers[-1].bias.numpy() - before, [0, 0, shift])
    True
    """
    head = _head(specialist)
    if not head.use_bias:
        raise ValueError(
            f"The specialist's last layer {head.name!r} has no bias to shift; build "
            "it with `build_specialist`, whose head has one."
        )
    bias = head.bias.numpy()
    bias[-1] += np.float32(log_shift)
    head.bias.assign(bias)


def build_specialist(
    generalist: keras.Model, subset: Sequence[int], *, name: str | None = None
) -> keras.Model:
    """A copy of the generalist with a head over `subset + dustbin`.

    The body is `keras.models.clone_model` with the generalist's weights copied.
    The new head `Dense(len(subset) + 1)` starts from the generalist's head: its
    columns for the subset's classes are copied, the dustbin column is the mean
    of the other columns with `log(#others)` added to the bias, a rough
    `logsumexp` of the other logits. The generalist is not changed.

    Args:
        generalist: A built functional or Sequential model whose last layer is
            `Dense(num_classes)` giving logits.
        subset: The specialist's classes (a strict subset of the classes).
        name: Model name; default `"specialist_<first class>"`.

    Returns:
        A new `keras.Model` with outputs `(batch, len(subset) + 1)`; the last
        output is the dustbin.

    Raises:
        ValueError: for a generalist without a logits `Dense` head, or an invalid
            subset.

    Example:

    >>> generalist = keras.Sequential([keras.Input((8,)), keras.layers.Dense(10)])
    >>> specialist = build_specialist(generalist, [4, 9])
    >>> specialist.output_shape  # classes 4 and 9, then the dustbin
    (None, 3)
    >>> x = np.ones((1, 8), "float32")
    >>> np.allclose(specialist(x)[:, :2], generalist(x).numpy()[:, [4, 9]])
    True
    """
    head = _head(generalist)
    kernel, *bias = head.get_weights()
    num_classes = kernel.shape[-1]
    validate_subsets([subset], num_classes)
    subset = [int(c) for c in subset]
    rest = [c for c in range(num_classes) if c not in set(subset)]
    bias = bias[0] if bias else np.zeros(num_classes, kernel.dtype)

    body = keras.models.clone_model(generalist)
    body.set_weights(generalist.get_weights())
    features = body.layers[-1].input
    new_head = keras.layers.Dense(len(subset) + 1, name=HEAD_NAME)
    outputs = new_head(features)
    specialist = keras.Model(
        body.inputs, outputs, name=name or f"specialist_{subset[0]}"
    )
    new_kernel = np.concatenate(
        [kernel[:, subset], kernel[:, rest].mean(axis=1, keepdims=True)], axis=1
    )
    new_bias = np.concatenate(
        [bias[subset], [bias[rest].mean() + np.log(len(rest))]]
    ).astype(kernel.dtype)
    new_head.set_weights([new_kernel, new_bias])
    return specialist


def train_specialist(
    generalist: keras.Model,
    subset: Sequence[int],
    x,
    y,
    *,
    generalist_logits=None,
    num_examples: int | None = None,
    epochs: int = 1,
    batch_size: int = 128,
    subset_fraction: float = 0.5,
    soft_weight: float = 0.0,
    temperature: float = 2.0,
    optimizer: str | keras.optimizers.Optimizer = "adam",
    seed: int = 0,
    verbose: int | str = "auto",
) -> tuple[keras.Model, dict]:
    """Builds, trains and dustbin-corrects one specialist.

    The mix holds `subset_fraction` of subset examples (`oversample_indices`).
    Training runs the `Distiller` with the generalist's soft targets in the
    batch: its logits folded onto `subset + dustbin` (`fold_logits`), with
    the dustbin logit lowered by `log r`, the `dustbin_log_shift` of the mix,
    and then softened at temperature `T` by the Distiller. The shift moves the
    targets to the mix's class frequencies, like the hard labels; without it
    the soft targets would pull the dustbin up to the true frequency and the
    final correction would count it twice. Folding comes before the softening
    because the specialist's own dustbin is one logit: folding `softmax(z / T)`
    instead would hand the dustbin the flattened mass of every other class.
    `soft_weight` is the Distiller's (0 trains on hard labels only, section 5;
    > 0 adds the soft-target regulariser of section 6.1). Afterwards the dustbin logit is raised by
    `log r` (`correct_dustbin`), with `r` from the subset's share of `y`.

    Args:
        generalist: The trained generalist (left unchanged).
        subset: The specialist's classes.
        x: Training inputs (array), the same the generalist takes.
        y: Int array of class ids.
        generalist_logits: The generalist's logits on `x`; computed if `None`.
        num_examples: Examples per epoch of the mix; default `len(x)`.
        epochs: Epochs over the mix.
        batch_size: Batch size.
        subset_fraction: Share of subset examples in the mix (paper: 0.5).
        soft_weight: Weight in `[0, 1]` of the soft term, as in `Distiller`.
        temperature: Temperature of the soft term.
        optimizer: Optimizer name or instance.
        seed: Seed of the mix.
        verbose: Keras progress-bar setting.

    Returns:
        `(specialist, info)` where `info` holds `subset`, `subset_prior`,
        `subset_fraction`, `dustbin_log_shift` and the Keras `history`.

    Raises:
        ValueError: for invalid subsets, shares or weights.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 10, size=64)
    >>> generalist = keras.Sequential([keras.Input((8,)), keras.layers.Dense(10)])
    >>> specialist, info = train_specialist(generalist, [4, 9], x, y, verbose=0)
    >>> specialist.output_shape, info["subset"], info["subset_fraction"]
    ((None, 3), [4, 9], 0.5)
    """
    y = np.asarray(y)
    subset = [int(c) for c in subset]
    if generalist_logits is None:
        generalist_logits = generalist.predict(x, batch_size=512, verbose=0)
    temperature = kd_losses.validate_temperature(temperature)
    indices = oversample_indices(
        y, subset, num_examples or len(y), subset_fraction=subset_fraction, seed=seed
    )
    prior = float(np.isin(y, subset).mean())
    fraction = float(np.isin(y[indices], subset).mean())
    shift = dustbin_log_shift(prior, fraction)
    folded_soft = fold_logits(generalist_logits, subset).numpy()
    folded_soft[:, -1] -= shift  # the Distiller then softens them at T
    specialist = build_specialist(generalist, subset)
    distiller = Distiller(
        student=specialist,
        teacher=None,
        temperature=temperature,
        soft_weight=soft_weight,
    )
    distiller.compile(optimizer=optimizer, metrics=["accuracy"])
    history = distiller.fit(
        make_batch(x[indices], folded_soft[indices]),
        fold_labels(y[indices], subset),
        batch_size=batch_size,
        epochs=epochs,
        shuffle=False,
        verbose=verbose,
    )
    correct_dustbin(specialist, shift)
    info = {
        "subset": subset,
        "subset_prior": prior,
        "subset_fraction": fraction,
        "dustbin_log_shift": shift,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    }
    return specialist, info

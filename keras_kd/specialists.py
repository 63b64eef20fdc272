"""Specialist models (Hinton, Vinyals and Dean 2015, section 5).

A generalist that confuses some classes with each other is helped by specialists,
each trained on one subset of confusable classes plus a *dustbin* class for
everything else. This module holds the four steps of the paper:

1. `find_confusable_subsets`: K-means on the columns of the covariance matrix of
   the generalist's predicted probabilities gives subsets of classes that are
   often predicted together (`ConfusableSubsets`, plain data with a report).
2. `train_specialist`: a copy of the generalist with a new head over
   `subset + dustbin`, trained on batches of which half come from the subset
   (`oversample_indices`), optionally with the generalist's soft targets folded
   onto `subset + dustbin` as a regulariser (section 6.1), and finally corrected
   for the oversampling (`dustbin_log_shift`, `correct_dustbin`).
3. `combine_distributions`: the full distribution `q` that minimises
   `KL(p_g || q) + sum_m KL(p_m || fold_m(q))` over the active specialists `m`
   (paper eq. 5), by batched gradient steps on the logits of `q`.
4. `SpecialistEnsemble`: generalist, specialists and solver as one savable
   `keras.Model` that maps inputs to the combined distribution.

Everything is on logits inside; probabilities appear only where the paper's
objective needs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from keras_kd import losses as kd_losses
from keras_kd.distiller import INPUTS, TEACHER_LOGITS, Distiller, ends_in_softmax

# Name of the new output layer of a specialist (its last output is the dustbin).
HEAD_NAME = "specialist_head"

# Stands for log(0) where a folded distribution has an empty dustbin: finite, so that
# 0 * (log 0) terms stay 0 instead of NaN.
_LOG_ZERO = -1e9

# Floor of probabilities before a log in the solver (float32 underflows below it).
_TINY = 1e-30


# ---------------------------------------------------------------------------
# 1. Confusable subsets
# ---------------------------------------------------------------------------


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
        subsets = tuple(tuple(sorted(int(c) for c in subset)) for subset in self.subsets)
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
            lines.append(f"  specialist {index:2d} ({len(subset):3d} classes): {members}")
        uncovered = np.flatnonzero(self.coverage() == 0)
        members = ", ".join(name(c) for c in uncovered) if len(uncovered) else "none"
        lines.append(f"  no specialist ({len(uncovered)} classes): {members}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The subsets as JSON-ready data; `from_dict` reverses it."""
        return {"num_classes": self.num_classes, "subsets": [list(s) for s in self.subsets]}

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
            raise ValueError(f"`subsets[{index}]` is empty; every subset needs a class.")
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
    counts = [num_subsets] if isinstance(num_subsets, int | np.integer) else list(num_subsets)
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


# ---------------------------------------------------------------------------
# 2. Specialists: folding, oversampling, dustbin correction, training
# ---------------------------------------------------------------------------


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
        dustbin = tf.reduce_logsumexp(tf.gather(logits, rest, axis=-1), -1, keepdims=True)
    return tf.concat([inside, dustbin], axis=-1)


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
    for argument, value in (("subset_prior", subset_prior), ("subset_fraction", subset_fraction)):
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

    >>> correct_dustbin(specialist, dustbin_log_shift(0.1))  # doctest: +SKIP
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

    >>> specialist = build_specialist(generalist, [4, 9])  # doctest: +SKIP
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

    >>> specialist, info = train_specialist(generalist, [4, 9], x, y)  # doctest: +SKIP
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
        student=specialist, teacher=None, temperature=temperature, soft_weight=soft_weight
    )
    distiller.compile(optimizer=optimizer, metrics=["accuracy"])
    history = distiller.fit(
        {INPUTS: x[indices], TEACHER_LOGITS: folded_soft[indices]},
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


# ---------------------------------------------------------------------------
# 3. Combining generalist and specialists (paper eq. 5)
# ---------------------------------------------------------------------------


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


def active_specialists(generalist_logits, membership, top_n: int):
    """Which specialists take part for each example.

    A specialist is active when its subset holds at least one of the
    generalist's `top_n` most probable classes (the paper's set `A_k`).

    Args:
        generalist_logits: Tensor `(batch, classes)`.
        membership: `(specialists, classes)` 0/1 matrix (`membership_matrix`).
        top_n: How many top classes to look at, >= 1.

    Returns:
        Float32 tensor `(batch, specialists)` of 0/1.

    Example:

    >>> active_specialists([[0.0, 5.0, 1.0]], [[0, 1, 0], [1, 0, 0]], 1).numpy()
    array([[1., 0.]], dtype=float32)
    """
    logits = tf.cast(generalist_logits, tf.float32)
    membership = tf.cast(membership, tf.float32)
    top = tf.math.top_k(logits, k=top_n).indices
    in_top = tf.reduce_sum(tf.one_hot(top, tf.shape(logits)[-1]), axis=1)
    return tf.cast(tf.matmul(in_top, membership, transpose_b=True) > 0, tf.float32)


def _spread(specialist_log_probs, subsets, num_classes):
    """Specialists' probabilities laid out over all classes.

    Returns `(inside, dustbin)`: `inside[b, m, c]` is specialist `m`'s probability
    of class `c` (0 outside its subset), `dustbin[b, m]` its dustbin probability.
    """
    inside, dustbin = [], []
    for log_p, subset in zip(specialist_log_probs, subsets):
        p = tf.exp(tf.cast(log_p, tf.float32))
        scatter = tf.constant(
            np.eye(num_classes, dtype=np.float32)[list(subset)]
        )  # (|S|, C)
        inside.append(tf.matmul(p[:, :-1], scatter))
        dustbin.append(p[:, -1])
    return tf.stack(inside, axis=1), tf.stack(dustbin, axis=1)


def _check_inputs(generalist_log_probs, specialist_log_probs, subsets, active):
    if len(specialist_log_probs) != len(subsets):
        raise ValueError(
            f"Got {len(specialist_log_probs)} specialist outputs for {len(subsets)} "
            "subsets; give one output per subset."
        )
    for m, (log_p, subset) in enumerate(zip(specialist_log_probs, subsets)):
        if log_p.shape[-1] != len(subset) + 1:
            raise ValueError(
                f"Specialist {m} gives {log_p.shape[-1]} outputs but its subset has "
                f"{len(subset)} classes; it needs len(subset) + 1 (the dustbin last)."
            )
    if active is not None and active.shape[-1] != len(subsets):
        raise ValueError(
            f"`active` has {active.shape[-1]} columns for {len(subsets)} subsets."
        )


def combination_objective(
    log_q, generalist_log_probs, specialist_log_probs, subsets, active
):
    """Per-example `KL(p_g || q) + sum_m active_m * KL(p_m || fold_m(q))` (eq. 5).

    Args:
        log_q: Tensor `(batch, classes)`, log-probabilities of `q` (or its
            logits: they are normalised first).
        generalist_log_probs: Tensor `(batch, classes)`, `log p_g`.
        specialist_log_probs: One tensor `(batch, len(subset) + 1)` per subset,
            `log p_m` with the dustbin last.
        subsets: Class ids of each specialist.
        active: Tensor `(batch, specialists)` of 0/1 weights.

    Returns:
        Float32 tensor `(batch,)`.

    Raises:
        ValueError: for outputs that do not match the subsets.

    Example:

    >>> lp = tf.math.log([[0.5, 0.5]])
    >>> combination_objective(lp, lp, [], [], tf.zeros([1, 0])).numpy()
    array([0.], dtype=float32)
    """
    _check_inputs(generalist_log_probs, specialist_log_probs, subsets, active)
    log_q = tf.nn.log_softmax(tf.cast(log_q, tf.float32), axis=-1)
    log_pg = tf.cast(generalist_log_probs, tf.float32)

    def kl(log_p, log_r):
        return tf.reduce_sum(tf.exp(log_p) * (log_p - log_r), axis=-1)

    total = kl(log_pg, log_q)
    active = tf.cast(active, tf.float32)
    for m, (log_pm, subset) in enumerate(zip(specialist_log_probs, subsets)):
        log_pm = tf.cast(log_pm, tf.float32)
        total += active[:, m] * kl(log_pm, fold_logits(log_q, subset))
    return total


def combine_distributions(
    generalist_log_probs,
    specialist_log_probs: Sequence,
    subsets: Sequence[Sequence[int]],
    active,
    *,
    steps: int = 50,
    step_size: float = 1.0,
):
    """The distribution `q` that the generalist and active specialists agree on.

    Minimises `combination_objective` over the logits `z` of `q`, batched, by
    `steps` preconditioned gradient steps from `z = log p_g`. The gradient is

        dL/dz = (1 + A) (q - t(q)),
        t(q) = (p_g + sum_m active_m * u_m(q)) / (1 + A),

    where `A` counts the active specialists and `u_m(q)` unfolds specialist `m`:
    `p_m(c)` on its classes and, outside them, its dustbin probability shared in
    proportion to `q` (`p_m(dustbin) * q_c / sum_{c' not in S_m} q_{c'}`); `t(q)`
    is a distribution. Each step is

        z <- z + step_size * (log t(q) - log q),

    i.e. `z - step_size * P dL/dz` with the positive diagonal preconditioner
    `P_cc = log(t_c / q_c) / ((1 + A) (t_c - q_c))` (`~ 1 / ((1 + A) q_c)`, the
    inverse-probability scaling that plain steps on `z` lack: they crawl where
    `q` is small). With `step_size = 1` a step is the EM update for the
    dustbins' unobserved split, which never increases the (convex) objective.
    With no active specialist `t(q) = p_g` and `q = p_g` exactly; with one, the
    first step already lands on the closed-form minimum (see the tests).

    Args:
        generalist_log_probs: Tensor `(batch, classes)`, `log p_g` (or logits).
        specialist_log_probs: One tensor `(batch, len(subset) + 1)` per subset,
            log-probabilities with the dustbin last.
        subsets: Class ids of each specialist.
        active: Tensor `(batch, specialists)` of 0/1 (`active_specialists`).
        steps: Number of steps; 50 reach float32 precision in the tests.
        step_size: Step size in `(0, 1]`; 1 is the EM update.

    Returns:
        Float32 tensor `(batch, classes)`: `log q`.

    Raises:
        ValueError: for mismatched outputs, `steps < 0` or a step size outside
            `(0, 1]`.

    Example:

    >>> log_pg = tf.math.log([[0.6, 0.3, 0.1]])
    >>> log_pm = tf.math.log([[0.2, 0.8]])  # specialist over class 0 + dustbin
    >>> q = tf.exp(combine_distributions(log_pg, [log_pm], [[0]], [[1.0]]))
    >>> q.numpy().round(3)  # class 0: (0.6 + 0.2) / 2; others: p_g * 0.6 / 0.4
    array([[0.4 , 0.45, 0.15]], dtype=float32)
    """
    if int(steps) < 0:
        raise ValueError(f"`steps` must be >= 0, got {steps!r}.")
    if not 0.0 < float(step_size) <= 1.0:
        raise ValueError(f"`step_size` must be in (0, 1], got {step_size!r}; use 1.0.")
    log_pg = tf.nn.log_softmax(tf.cast(generalist_log_probs, tf.float32), axis=-1)
    if not subsets:
        return log_pg
    specialist_log_probs = [tf.cast(p, tf.float32) for p in specialist_log_probs]
    active = tf.cast(active, tf.float32)
    _check_inputs(log_pg, specialist_log_probs, subsets, active)
    target, _ = _target_function(log_pg, specialist_log_probs, subsets, active)

    def step(i, z):
        log_q = tf.nn.log_softmax(z, axis=-1)
        log_t = tf.math.log(tf.maximum(target(tf.exp(log_q)), _TINY))
        return i + 1, z + float(step_size) * (log_t - log_q)

    _, z = tf.while_loop(lambda i, z: i < int(steps), step, (tf.constant(0), log_pg))
    return tf.nn.log_softmax(z, axis=-1)


def _target_function(log_pg, specialist_log_probs, subsets, active):
    """`(t, count)`: the map `q -> t(q)` of `combine_distributions` and `1 + A`."""
    num_classes = log_pg.shape[-1]
    inside, dustbin = _spread(specialist_log_probs, subsets, num_classes)
    outside = tf.constant(1.0 - membership_matrix(subsets, num_classes))  # (M, C)
    active_dustbin = active * dustbin  # (B, M)
    fixed = tf.exp(log_pg) + tf.einsum("bm,bmc->bc", active, inside)
    count = 1.0 + tf.reduce_sum(active, axis=-1, keepdims=True)

    def target(q):
        rest_mass = tf.matmul(q, outside, transpose_b=True)  # (B, M)
        share = tf.math.divide_no_nan(active_dustbin, rest_mass)  # (B, M)
        return (fixed + q * tf.matmul(share, outside)) / count

    return target, count


def combination_gradient(
    log_q, generalist_log_probs, specialist_log_probs, subsets, active
):
    """`dL/dz` of `combination_objective` at logits `z`: `(1 + A) (q - t(q))`.

    Args:
        log_q: Tensor `(batch, classes)`, logits or log-probabilities of `q`.
        generalist_log_probs: Tensor `(batch, classes)`, `log p_g`.
        specialist_log_probs: One tensor `(batch, len(subset) + 1)` per subset.
        subsets: Class ids of each specialist.
        active: Tensor `(batch, specialists)` of 0/1.

    Returns:
        Float32 tensor `(batch, classes)`; zero at the minimum.

    Raises:
        ValueError: for outputs that do not match the subsets.

    Example:

    >>> lp = tf.math.log([[0.5, 0.5]])
    >>> combination_gradient(lp, lp, [], [], tf.zeros([1, 0])).numpy()
    array([[0., 0.]], dtype=float32)
    """
    log_pg = tf.nn.log_softmax(tf.cast(generalist_log_probs, tf.float32), axis=-1)
    q = tf.nn.softmax(tf.cast(log_q, tf.float32), axis=-1)
    if not subsets:
        return q - tf.exp(log_pg)
    specialist_log_probs = [tf.cast(p, tf.float32) for p in specialist_log_probs]
    active = tf.cast(active, tf.float32)
    _check_inputs(log_pg, specialist_log_probs, subsets, active)
    target, count = _target_function(log_pg, specialist_log_probs, subsets, active)
    return count * (q - target(q))


# ---------------------------------------------------------------------------
# 4. The savable predictor
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_kd")
class SpecialistEnsemble(keras.Model):
    """Generalist plus specialists, combined per example as in the paper's eq. 5.

    For each input: the generalist's `top_n` classes select the active
    specialists (`active_specialists`), and `combine_distributions` finds the
    full distribution that agrees best (in KL) with the generalist and them.
    Calling the model returns that distribution's probabilities. Specialists
    should already be dustbin-corrected (`train_specialist` does it).

    Args:
        generalist: Model giving logits `(batch, classes)`.
        specialists: One model per subset giving logits `(batch, len(subset)+1)`.
        subsets: Class ids of each specialist (a `ConfusableSubsets` or lists).
        top_n: How many of the generalist's top classes select specialists.
        steps: Gradient steps of the solver.
        step_size: Step size of the solver.
        name: Model name.

    Raises:
        ValueError: for a mismatch between specialists and subsets, or a bad
            `top_n`.

    Example:

    ```python
    ensemble = SpecialistEnsemble(generalist, specialists, clusters, top_n=3)
    probabilities = ensemble.predict(x_test)
    ensemble.save("ensemble.keras")
    ```
    """

    def __init__(
        self,
        generalist: keras.Model,
        specialists: Sequence[keras.Model],
        subsets: ConfusableSubsets | Sequence[Sequence[int]],
        *,
        top_n: int = 1,
        steps: int = 50,
        step_size: float = 1.0,
        name: str = "specialist_ensemble",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if isinstance(subsets, ConfusableSubsets):
            subsets = subsets.subsets
        self.subsets = [[int(c) for c in subset] for subset in subsets]
        specialists = list(specialists)
        if len(specialists) != len(self.subsets):
            raise ValueError(
                f"Got {len(specialists)} specialists for {len(self.subsets)} subsets; "
                "give one specialist per subset, in the same order."
            )
        num_classes = generalist.output_shape[-1]
        validate_subsets(self.subsets, num_classes)
        for m, (specialist, subset) in enumerate(zip(specialists, self.subsets)):
            if specialist.output_shape[-1] != len(subset) + 1:
                raise ValueError(
                    f"Specialist {m} ({specialist.name!r}) has "
                    f"{specialist.output_shape[-1]} outputs but its subset has "
                    f"{len(subset)} classes; it needs len(subset) + 1."
                )
        if not 1 <= int(top_n) <= num_classes:
            raise ValueError(
                f"`top_n` must be in [1, {num_classes}], got {top_n!r}."
            )
        self.generalist = generalist
        self.specialists = specialists
        self.num_classes = int(num_classes)
        self.top_n = int(top_n)
        self.steps = int(steps)
        self.step_size = float(step_size)
        self._membership = membership_matrix(self.subsets, self.num_classes)
        self.built = True

    def combine(self, inputs, training=False):
        """The pieces of the combination for a batch.

        Args:
            inputs: A batch of inputs.
            training: Passed to the sub-models.

        Returns:
            A dict with `generalist_logits` `(batch, classes)`, `active`
            `(batch, specialists)` and `log_q` `(batch, classes)`.
        """
        logits = tf.cast(self.generalist(inputs, training=training), tf.float32)
        active = active_specialists(logits, self._membership, self.top_n)
        specialist_log_probs = [
            tf.nn.log_softmax(tf.cast(s(inputs, training=training), tf.float32))
            for s in self.specialists
        ]
        log_q = combine_distributions(
            tf.nn.log_softmax(logits),
            specialist_log_probs,
            self.subsets,
            active,
            steps=self.steps,
            step_size=self.step_size,
        )
        return {"generalist_logits": logits, "active": active, "log_q": log_q}

    def call(self, inputs, training=False):
        """The combined class probabilities `(batch, classes)`."""
        return tf.exp(self.combine(inputs, training=training)["log_q"])

    def get_config(self):
        return {
            "name": self.name,
            "generalist": keras.saving.serialize_keras_object(self.generalist),
            "specialists": [
                keras.saving.serialize_keras_object(s) for s in self.specialists
            ],
            "subsets": self.subsets,
            "top_n": self.top_n,
            "steps": self.steps,
            "step_size": self.step_size,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        generalist = keras.saving.deserialize_keras_object(
            config.pop("generalist"), custom_objects=custom_objects
        )
        specialists = [
            keras.saving.deserialize_keras_object(s, custom_objects=custom_objects)
            for s in config.pop("specialists")
        ]
        subsets = config.pop("subsets")
        return cls(generalist, specialists, subsets, **config)


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
    groups = [(str(k) if k < max_coverage else f"{k}+", coverage == k)
              for k in range(max_coverage + 1)]
    for name, mask in [*groups, ("total", np.ones_like(right_g))]:
        if not mask.any() and name != "total":
            continue
        g, c = int(right_g[mask].sum()), int(right_c[mask].sum())
        rows.append({
            "specialists covering": name,
            "examples": int(mask.sum()),
            "generalist_correct": g,
            "combined_correct": c,
            "correct_change": c - g,
            "relative_change": (c - g) / g if g else float("nan"),
        })
    return rows

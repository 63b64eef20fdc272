"""Combining a generalist and its specialists per example (paper eq. 5).

`combine_distributions` finds the full distribution `q` that minimises
`KL(p_g || q) + sum_m KL(p_m || fold_m(q))` over the active specialists `m`
(`active_specialists`), by batched preconditioned steps on the logits of `q`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_kd.specialists.folding import fold_logits, membership_matrix

# Floor of probabilities before a log in the solver (float32 underflows below it).
_TINY = 1e-30


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

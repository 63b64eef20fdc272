"""Sequence outputs `(batch, time, classes)`: which tokens count, and how many.

A `Distiller` whose student outputs one vector of logits per time step (frames
of an acoustic model, tokens of a language model) averages its losses over the
*valid* tokens of the *global* batch:

    loss = sum over valid tokens of weight * loss(token) / number of valid tokens

- A token is valid when the student's Keras mask (`Embedding(mask_zero=True)`,
  `Masking`, or any layer that propagates a mask to the output) is true for it
  and its sample weight is not 0. Padding given either way changes nothing:
  neither the loss nor its gradient.
- Sample weights are `(batch,)` (one per sequence, applied to its tokens) or
  `(batch, time)` (one per token); they multiply the token losses, as Keras'
  `"sum_over_batch_size"` losses do, and a weight of 0 marks padding.
- The count is summed over replicas under a `tf.distribute` strategy, so a
  replica whose share of the batch holds few (or no) valid tokens still
  contributes exactly what it would on one device. Only a global batch
  without any valid token is an error: it has no mean.

The Distiller divides the sum of its weighted per-sequence losses by the global
number of sequences; `mean_weights` scales the token weights by
`sequences / valid tokens` (the factor Keras' own `apply_mask` uses) so that
this division gives the mean over valid tokens.

Example:

>>> import numpy as np
>>> logits = tf.zeros((2, 3, 5))
>>> logits._keras_mask = tf.constant([[True, True, False], [True, False, False]])
>>> token_weights(logits, sample_weight=None).numpy().tolist()
[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
"""

from __future__ import annotations

import tensorflow as tf

from keras_kd import checks

# The attribute of a scaled weight tensor that holds the unscaled token weights.
TOKEN_WEIGHTS_ATTRIBUTE = "_keras_kd_token_weights"


def is_sequence(logits) -> bool:
    """Whether `logits` are sequence outputs `(batch, time, classes)`."""
    return logits.shape.rank == 3


def no_valid_token_message() -> str:
    """The message for a global batch whose tokens are all padding."""
    return (
        "The batch has no valid token: every position is masked (by the student's "
        "Keras mask, e.g. from Embedding(mask_zero=True) or Masking) or has sample "
        "weight 0, so the mean over valid tokens is undefined. Drop sequences that "
        "are all padding from the data, check that the padding id (0 for "
        "mask_zero=True) is not also a real token, and that the sample weights "
        "are not all 0."
    )


def check_pair(teacher_logits, student_logits) -> list:
    """Checks that teacher and student outputs have the same rank and time length.

    Args:
        teacher_logits: Teacher outputs `(batch, classes)` or
            `(batch, time, classes)`.
        student_logits: The student's outputs for the same batch.

    Returns:
        Assertions (traced, for a time length known only at run time), else `[]`.

    Raises:
        ValueError: for different ranks, or (statically or eagerly) different
            time lengths.

    Example:

    >>> check_pair(tf.zeros((2, 4, 3)), tf.zeros((2, 4, 3)))
    []
    """
    teacher_rank, student_rank = teacher_logits.shape.rank, student_logits.shape.rank
    if teacher_rank != student_rank:
        raise ValueError(
            f"Teacher and student outputs have different ranks: teacher "
            f"{tuple(teacher_logits.shape)}, student {tuple(student_logits.shape)}. "
            "Both must be (batch, classes) logits, or both (batch, time, classes) "
            "logits of the same sequences (a sequence teacher and a per-example "
            "student, or the reverse, cannot be distilled token by token)."
        )
    if teacher_rank != 3:
        return []
    teacher_time, student_time = teacher_logits.shape[1], student_logits.shape[1]
    message = (
        f"Teacher and student sequences have different lengths: teacher "
        f"{tuple(teacher_logits.shape)}, student {tuple(student_logits.shape)} "
        "(batch, time, classes). Give both the same padded inputs (cached teacher "
        "outputs must be padded to the student's input length)."
    )
    if None not in (teacher_time, student_time):
        if teacher_time != student_time:
            raise ValueError(message)
        return []
    ok = tf.equal(tf.shape(teacher_logits)[1], tf.shape(student_logits)[1])
    check = checks.require(ok, message)
    return [] if check is None else [check]


def _as_token_matrix(values, shape, name: str, fix: str):
    """`values` as `(batch, time)` or `(batch, 1)`, or a `ValueError` naming `name`."""
    values = tf.convert_to_tensor(values)
    if values.shape.rank == 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.shape.rank == 1:
        return tf.reshape(values, [-1, 1])  # one value per sequence
    if values.shape.rank != 2 or values.shape[1] not in (1, None, shape[1]) and (
        shape[1] is not None
    ):
        raise ValueError(
            f"{name} has shape {tuple(values.shape)}, but the student's outputs "
            f"{shape} need (batch,) or (batch, time) = (batch, {shape[1]}). {fix}"
        )
    return values


def token_weights(student_logits, sample_weight):
    """Per-token weights `(batch, time)`: 0 on padding, the sample weight elsewhere.

    Args:
        student_logits: Sequence logits `(batch, time, classes)`, with the
            student's Keras mask (`_keras_mask`, `(batch, time)`) if it has one.
        sample_weight: `None`, `(batch,)` or `(batch, time)` weights (a
            trailing axis of 1 is accepted).

    Returns:
        Float32 tensor `(batch, time)`; a token is valid where it is not 0.

    Raises:
        ValueError: for a mask or weights whose shape does not fit the
            outputs (statically known shapes; see `check_token_shapes` for the
            run-time check).

    Example:

    >>> logits = tf.zeros((1, 3, 2))
    >>> token_weights(logits, [[1.0, 0.5, 0.0]]).numpy().tolist()
    [[1.0, 0.5, 0.0]]
    """
    shape = tuple(student_logits.shape)
    time = tf.shape(student_logits)[1]
    batch = tf.shape(student_logits)[0]
    weights = tf.ones(tf.stack([batch, time]), tf.float32)
    mask = getattr(student_logits, "_keras_mask", None)
    if mask is not None:
        mask = _as_token_matrix(
            mask, shape, "The student's output mask",
            "The mask must mark each time step of the output (a layer after the "
            "masking layer may have changed the time axis; compute the mask on "
            "the output's time steps).",
        )
        weights *= tf.cast(mask, tf.float32)
    if sample_weight is not None:
        sample_weight = _as_token_matrix(
            sample_weight, shape, "`sample_weight`",
            "Give one weight per sequence or one per token of the padded output.",
        )
        weights *= tf.cast(sample_weight, tf.float32)
    return weights


def check_token_shapes(student_logits, sample_weight) -> list:
    """Run-time check that the mask and weights have the outputs' time length.

    Args:
        student_logits: Sequence logits (with their `_keras_mask`, if any).
        sample_weight: `None` or the batch's sample weights.

    Returns:
        Assertions when traced (empty eagerly or with nothing to check).

    Raises:
        ValueError: eagerly, for a mask or weights of another time length.
    """
    found = []
    time = tf.shape(student_logits)[1]
    for name, values in (
        ("The student's output mask", getattr(student_logits, "_keras_mask", None)),
        ("`sample_weight`", sample_weight),
    ):
        if values is None:
            continue
        values = tf.convert_to_tensor(values)
        if values.shape.rank is not None and values.shape.rank < 2:
            continue
        length = tf.shape(values)[1]
        ok = tf.logical_or(tf.equal(length, time), tf.equal(length, 1))
        check = checks.require(
            ok,
            f"{name} has another time length than the student's outputs "
            "(batch, time, classes); give one value per time step of the padded "
            "output, or one per sequence.",
        )
        if check is not None:
            found.append(check)
    return found


def with_mask(outputs, mask):
    """A copy of `outputs` carrying the Keras mask `mask` (`outputs` is unchanged).

    Keras metrics (and losses) skip the positions where an output's mask is
    false.

    Example:

    >>> masked = with_mask(tf.zeros((1, 2, 3)), tf.constant([[True, False]]))
    >>> masked._keras_mask.numpy().tolist()
    [[True, False]]
    """
    outputs = tf.identity(outputs)
    outputs._keras_mask = mask
    return outputs


def global_sum(value):
    """`value` summed over the replicas in sync (itself outside a strategy).

    Example:

    >>> float(global_sum(tf.constant(3.0)))
    3.0
    """
    value = tf.cast(value, tf.float32)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
    return value


def mean_weights(weights, global_sequences):
    """Token weights scaled so that `sum(loss * w) / global_sequences` is a token mean.

    Args:
        weights: Float32 `(batch, time)` from `token_weights` (this replica's).
        global_sequences: The global batch's number of sequences (the
            Distiller's divisor), a float32 scalar.

    Returns:
        `(scaled, check)`: `weights * global_sequences / global_valid_tokens`,
        carrying the unscaled `weights` as the attribute
        `TOKEN_WEIGHTS_ATTRIBUTE`, and the assertion that some token of the
        global batch is valid (`None` eagerly).

    Raises:
        ValueError: eagerly, when no token of the global batch is valid.

    Example:

    >>> scaled, _ = mean_weights(tf.constant([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), 2.0)
    >>> [[round(v, 3) for v in row] for row in scaled.numpy().tolist()]
    [[0.667, 0.667, 0.0], [0.667, 0.0, 0.0]]
    """
    valid = global_sum(tf.math.count_nonzero(weights, dtype=tf.float32))
    check = checks.require(valid > 0.0, no_valid_token_message())
    with tf.control_dependencies([] if check is None else [check]):
        # divide_no_nan keeps an all-padding batch at 0 where assertions do not
        # run (XLA): no update rather than NaN.
        scaled = weights * tf.math.divide_no_nan(
            tf.cast(global_sequences, tf.float32), valid
        )
    setattr(scaled, TOKEN_WEIGHTS_ATTRIBUTE, weights)
    return scaled, check


def unscaled_weights(weight):
    """The token weights `mean_weights` attached to `weight`, or `None`."""
    return None if weight is None else getattr(weight, TOKEN_WEIGHTS_ATTRIBUTE, None)


__all__ = [
    "check_pair",
    "check_token_shapes",
    "global_sum",
    "is_sequence",
    "mean_weights",
    "no_valid_token_message",
    "token_weights",
    "unscaled_weights",
    "with_mask",
]

"""Soft-target losses of Hinton, Vinyals and Dean (2015), on logits.

Everything here is pure math on logits: no models, no state. The functions return
one value per example so that callers (the `Distiller`, a custom training loop)
decide how to weight and reduce them.
"""

from __future__ import annotations

import keras
import tensorflow as tf

TEACHER_OUTPUT_KINDS = ("logits", "probabilities")

# Probabilities are clipped to this before the log so that a teacher which outputs an
# exact zero still gives a finite log-probability.
_PROBABILITY_FLOOR = 1e-12


def validate_temperature(temperature: float, argument: str = "temperature") -> float:
    """Returns `temperature` as a float, or raises a `ValueError` naming the fix."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{argument}` must be a positive number, got {temperature!r}. "
            "Pass a float such as 4.0."
        ) from None
    if not value > 0.0 or value != value or value == float("inf"):
        raise ValueError(
            f"`{argument}` must be a finite number > 0, got {temperature!r}. "
            "Hinton et al. use values from 1 to 20; try 2.0 to 5.0 for small students."
        )
    return value


def validate_teacher_outputs(teacher_outputs: str) -> str:
    """Returns `teacher_outputs` if it is `"logits"` or `"probabilities"`."""
    if teacher_outputs not in TEACHER_OUTPUT_KINDS:
        raise ValueError(
            f"`teacher_outputs` must be one of {TEACHER_OUTPUT_KINDS}, got "
            f"{teacher_outputs!r}. Use 'probabilities' only for a teacher whose last "
            "layer is a softmax."
        )
    return teacher_outputs


def teacher_log_probabilities(teacher_outputs, temperature, kind="logits"):
    """Log of the teacher's softened distribution `softmax(t / T)`.

    Args:
        teacher_outputs: Tensor `(batch, classes)`, logits or probabilities.
        temperature: Float > 0.
        kind: `"logits"` or `"probabilities"`. Probabilities are turned into
            logits with a (clipped) log, which equals the logits up to a
            per-example constant that the softmax removes.

    Returns:
        Float32 tensor `(batch, classes)` of log-probabilities at `temperature`.
    """
    outputs = tf.cast(teacher_outputs, tf.float32)
    if kind == "probabilities":
        outputs = tf.math.log(tf.maximum(outputs, _PROBABILITY_FLOOR))
    return tf.nn.log_softmax(outputs / temperature, axis=-1)


def tempered_kl(teacher_logits, student_logits, temperature, teacher_outputs="logits"):
    """Per-example `T^2 * KL(softmax(t / T) || softmax(s / T))`.

    The soft-target loss of Hinton et al. (2015), scaled by `T^2` so that its
    gradient keeps the same magnitude when the temperature changes: the gradient
    with respect to a student logit `s_i` is `T * (q_i - p_i)`, where `q` and `p`
    are the student's and teacher's softened distributions (their eq. 2 times
    `T^2`). It is computed from log-softmax in float32, so it stays finite for
    temperatures from 0.5 to 100 and logits up to +-1e4, also under mixed
    precision.

    Args:
        teacher_logits: Tensor `(batch, classes)` of teacher logits (or
            probabilities, with `teacher_outputs="probabilities"`).
        student_logits: Tensor `(batch, classes)` of student logits.
        temperature: Float > 0, the distillation temperature `T`.
        teacher_outputs: `"logits"` (default) or `"probabilities"`.

    Returns:
        Float32 tensor `(batch,)`: the loss of each example.

    Raises:
        ValueError: for a temperature <= 0 or an unknown `teacher_outputs`.

    Example:

    >>> t = tf.constant([[2.0, 0.0, -1.0]])
    >>> s = tf.constant([[0.5, 0.5, 0.0]])
    >>> tempered_kl(t, s, temperature=2.0).shape
    TensorShape([1])
    """
    temperature = validate_temperature(temperature)
    validate_teacher_outputs(teacher_outputs)
    log_p = teacher_log_probabilities(teacher_logits, temperature, teacher_outputs)
    log_q = tf.nn.log_softmax(tf.cast(student_logits, tf.float32) / temperature, -1)
    # p * (log p - log q); where p underflows to 0 the term is 0 * finite = 0.
    kl = tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)
    return (temperature**2) * kl


def logit_matching(teacher_logits, student_logits):
    """Per-example `0.5 * mean_i((z_i - mean z) - (v_i - mean v))^2`.

    Hinton et al. (2015, section 2.1) show that at high temperature, with
    zero-meaned logits, the soft-target gradient tends to `(z_i - v_i) / N` for
    `N` classes. This loss has exactly that gradient, so it is the
    `T -> infinity` limit of `tempered_kl` (Bucila et al.'s logit matching).

    Args:
        teacher_logits: Tensor `(batch, classes)` of teacher logits `v`.
        student_logits: Tensor `(batch, classes)` of student logits `z`.

    Returns:
        Float32 tensor `(batch,)`.

    Example:

    >>> logit_matching(tf.constant([[1.0, 2.0]]), tf.constant([[0.0, 1.0]]))
    <tf.Tensor: shape=(1,), dtype=float32, numpy=array([0.], dtype=float32)>
    """
    v = tf.cast(teacher_logits, tf.float32)
    z = tf.cast(student_logits, tf.float32)
    v = v - tf.reduce_mean(v, axis=-1, keepdims=True)
    z = z - tf.reduce_mean(z, axis=-1, keepdims=True)
    return 0.5 * tf.reduce_mean(tf.square(z - v), axis=-1)


@keras.saving.register_keras_serializable(package="keras_kd")
class TemperedKLDivergence(keras.losses.Loss):
    """`T^2 * KL(softmax(t / T) || softmax(s / T))` as a `keras.losses.Loss`.

    `y_true` holds the teacher's logits (or probabilities with
    `teacher_outputs="probabilities"`), `y_pred` the student's logits. Use it with
    `keras.Model.compile` when the teacher's outputs are already in the dataset,
    or in any loop that expects a Keras loss. Like every Keras loss it divides by
    the number of replicas under a `tf.distribute` strategy.

    Args:
        temperature: Float > 0.
        teacher_outputs: `"logits"` (default) or `"probabilities"`.
        reduction: Keras reduction, default `"sum_over_batch_size"`.
        name: Loss name.

    Example:

    >>> loss = TemperedKLDivergence(temperature=4.0)
    >>> float(loss(tf.constant([[1.0, 0.0]]), tf.constant([[1.0, 0.0]])))
    0.0
    """

    def __init__(
        self,
        temperature: float = 4.0,
        teacher_outputs: str = "logits",
        reduction="sum_over_batch_size",
        name: str = "tempered_kl_divergence",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = validate_temperature(temperature)
        self.teacher_outputs = validate_teacher_outputs(teacher_outputs)

    def call(self, y_true, y_pred):
        return tempered_kl(y_true, y_pred, self.temperature, self.teacher_outputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            temperature=self.temperature, teacher_outputs=self.teacher_outputs
        )
        return config

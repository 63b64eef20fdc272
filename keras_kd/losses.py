"""Soft-target losses of Hinton, Vinyals and Dean (2015), on logits.

Everything here is pure math on logits: no models, no state. The losses return
one value per example (per token for sequence outputs `(batch, time, classes)`)
so that callers (the `Distiller`, a custom training loop) decide how to weight,
mask and reduce them.

Two forms:

- `DistillationLoss` objects (`TemperedKL`, `LogitMatching`, or your own
  subclass) are what `Distiller(distillation_loss=...)` takes. Their math is
  written in `keras.ops`.
- `tempered_kl` and `logit_matching` are the same math as functions, and
  `TemperedKLDivergence` is the tempered KL as a `keras.losses.Loss`, for
  `keras.Model.compile` on data that already holds the teacher's logits.
"""

from __future__ import annotations

import re

import keras
from keras import ops

TEACHER_OUTPUT_KINDS = ("logits", "probabilities")

# Probabilities are clipped to this before the log so that a teacher which outputs an
# exact zero still gives a finite log-probability.
_PROBABILITY_FLOOR = 1e-12

# Names a DistillationLoss may not take: "<name>_loss" would hide a Distiller log.
_RESERVED_NAMES = ("soft", "hard", "")


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


def as_logits(teacher_outputs, kind: str = "logits"):
    """The teacher's outputs as float32 logits.

    Probabilities become their (clipped) log, which equals the logits up to a
    per-example constant; every loss here, and any loss that depends on the
    logits only through a softmax or through zero-meaned logits, is unchanged by
    that constant.

    Args:
        teacher_outputs: Tensor `(batch, classes)`, logits or probabilities.
        kind: `"logits"` or `"probabilities"`.

    Returns:
        Float32 tensor `(batch, classes)`.

    Raises:
        ValueError: for an unknown `kind`.

    Example:

    >>> logits = as_logits([[0.5, 0.5]], kind="probabilities")
    >>> [[round(float(v), 4) for v in row] for row in keras.ops.convert_to_numpy(logits)]
    [[-0.6931, -0.6931]]
    """
    outputs = ops.cast(teacher_outputs, "float32")
    if validate_teacher_outputs(kind) == "probabilities":
        outputs = ops.log(ops.maximum(outputs, _PROBABILITY_FLOOR))
    return outputs


def teacher_log_probabilities(teacher_outputs, temperature, kind="logits"):
    """Log of the teacher's softened distribution `softmax(t / T)`.

    Args:
        teacher_outputs: Tensor `(batch, classes)`, logits or probabilities.
        temperature: Float > 0.
        kind: `"logits"` or `"probabilities"` (see `as_logits`).

    Returns:
        Float32 tensor `(batch, classes)` of log-probabilities at `temperature`.
    """
    return ops.log_softmax(as_logits(teacher_outputs, kind) / temperature, axis=-1)


def _tempered_kl(teacher_logits, student_logits, temperature):
    log_p = ops.log_softmax(teacher_logits / temperature, axis=-1)
    log_q = ops.log_softmax(student_logits / temperature, axis=-1)
    # p * (log p - log q); where p underflows to 0 the term is 0 * finite = 0.
    kl = ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)
    return (temperature**2) * kl


def _tempered_kl_student_gradient(teacher_logits, student_logits, temperature, upstream):
    """d(upstream . tempered_kl) / d student logits: `T * upstream * (q - p)`."""
    p = ops.softmax(teacher_logits / temperature, axis=-1)
    q = ops.softmax(student_logits / temperature, axis=-1)
    return temperature * ops.expand_dims(upstream, -1) * (q - p)


def validate_chunk_size(chunk_size) -> int | None:
    """Returns `chunk_size` as an int >= 1 (or `None`), or raises a `ValueError`."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(
            f"`chunk_size` must be a whole number >= 1 (rows of logits computed at "
            f"once) or None (all at once), got {chunk_size!r}. For a 32k vocabulary, "
            "256 to 1024 keeps each chunk's temporaries at 32-128 MB."
        )
    return chunk_size


def _chunked_tempered_kl(teacher_logits, student_logits, temperature, chunk_size):
    """`_tempered_kl` computed `chunk_size` rows at a time, forward and backward.

    Only the per-row values and one chunk's temporaries are alive at once: the
    gradient is recomputed chunk by chunk instead of being derived through
    stored softmax outputs. A TensorFlow while-loop with one iteration in
    flight bounds the memory, so this needs the TensorFlow backend (which the
    Distiller needs anyway). The teacher's logits are constants here.
    """
    import tensorflow as tf  # the loop below has no keras.ops form with bounded memory

    classes = student_logits.shape[-1]
    leading = tf.shape(student_logits)[:-1]
    teacher = tf.stop_gradient(tf.reshape(teacher_logits, [-1, classes]))
    student = tf.reshape(student_logits, [-1, classes])
    rows = tf.shape(student)[0]
    chunks = (rows + chunk_size - 1) // chunk_size

    def over_chunks(compute, element_shape, dtype=tf.float32):
        """`compute(start, stop)` for each chunk, concatenated along rows."""
        parts = tf.TensorArray(dtype, size=chunks, element_shape=element_shape, infer_shape=False)

        def body(index, parts):
            start = index * chunk_size
            stop = tf.minimum(start + chunk_size, rows)
            return index + 1, parts.write(index, compute(start, stop))

        _, parts = tf.while_loop(
            lambda index, _: index < chunks, body, (0, parts), parallel_iterations=1
        )
        return parts.concat()

    @tf.custom_gradient
    def per_row(student):
        values = over_chunks(
            lambda a, b: _tempered_kl(teacher[a:b], student[a:b], temperature), [None]
        )

        def gradient(upstream):
            return over_chunks(
                lambda a, b: _tempered_kl_student_gradient(
                    teacher[a:b], student[a:b], temperature, upstream[a:b]
                ),
                [None, classes],
            )

        return values, gradient

    return tf.reshape(per_row(student), leading)


def _logit_matching(teacher_logits, student_logits):
    v = teacher_logits - ops.mean(teacher_logits, axis=-1, keepdims=True)
    z = student_logits - ops.mean(student_logits, axis=-1, keepdims=True)
    return 0.5 * ops.mean(ops.square(z - v), axis=-1)


def tempered_kl(teacher_logits, student_logits, temperature, teacher_outputs="logits"):
    """Per-example (or per-token) `T^2 * KL(softmax(t / T) || softmax(s / T))`.

    The soft-target loss of Hinton et al. (2015), scaled by `T^2` so that its
    gradient keeps the same magnitude when the temperature changes: the gradient
    with respect to a student logit `s_i` is `T * (q_i - p_i)`, where `q` and `p`
    are the student's and teacher's softened distributions (their eq. 2 times
    `T^2`). It is computed from log-softmax in float32, so it stays finite for
    temperatures from 0.5 to 100 and logits up to +-1e4, also under mixed
    precision. `TemperedKL` is the same loss as an object for the `Distiller`.

    Args:
        teacher_logits: Tensor `(batch, classes)` of teacher logits (or
            probabilities, with `teacher_outputs="probabilities"`), or
            `(batch, time, classes)` for sequences.
        student_logits: Tensor of student logits, the teacher's shape.
        temperature: Float > 0, the distillation temperature `T`.
        teacher_outputs: `"logits"` (default) or `"probabilities"`.

    Returns:
        Float32 tensor of the inputs' shape without the class axis: the loss
        of each example `(batch,)` or token `(batch, time)`.

    Raises:
        ValueError: for a temperature <= 0 or an unknown `teacher_outputs`.

    Example:

    >>> t = keras.ops.convert_to_tensor([[2.0, 0.0, -1.0]])
    >>> s = keras.ops.convert_to_tensor([[0.5, 0.5, 0.0]])
    >>> tuple(tempered_kl(t, s, temperature=2.0).shape)
    (1,)
    """
    temperature = validate_temperature(temperature)
    teacher = as_logits(teacher_logits, teacher_outputs)
    return _tempered_kl(teacher, ops.cast(student_logits, "float32"), temperature)


def logit_matching(teacher_logits, student_logits):
    """Per-example `0.5 * mean_i((z_i - mean z) - (v_i - mean v))^2`.

    Hinton et al. (2015, section 2.1) show that at high temperature, with
    zero-meaned logits, the soft-target gradient tends to `(z_i - v_i) / N` for
    `N` classes. This loss has exactly that gradient, so it is the
    `T -> infinity` limit of `tempered_kl` (Bucila et al.'s logit matching).
    `LogitMatching` is the same loss as an object for the `Distiller`.

    Args:
        teacher_logits: Tensor `(batch, classes)` of teacher logits `v`.
        student_logits: Tensor `(batch, classes)` of student logits `z`.

    Returns:
        Float32 tensor `(batch,)`.

    Example:

    >>> values = logit_matching([[1.0, 2.0]], [[0.0, 1.0]])
    >>> keras.ops.convert_to_numpy(values).tolist()
    [0.0]
    """
    return _logit_matching(
        ops.cast(teacher_logits, "float32"), ops.cast(student_logits, "float32")
    )


def _default_name(cls) -> str:
    """`SoftmaxMSELoss` -> `"softmax_mse"`: snake case, without a `_loss` suffix."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", cls.__name__)
    name = name.lower()
    return name[: -len("_loss")] if name.endswith("_loss") else name


@keras.saving.register_keras_serializable(package="keras_kd")
class DistillationLoss:
    """Base class of a distillation loss: per-example values from two sets of logits.

    Subclass it and implement `call(teacher_logits, student_logits)`, reducing
    the class axis (the last) only: logits `(batch, classes)` give one value per
    example `(batch,)`, sequence logits `(batch, time, classes)` one value per
    token `(batch, time)`; never their mean. The `Distiller` then weights those
    values by `sample_weight` (and, for sequences, the Keras mask), divides by
    the global number of examples (or valid tokens) under a `tf.distribute`
    strategy and logs them, exactly as it does the built-in losses. Both
    arguments arrive as float32 logits of the same shape (a teacher with
    `teacher_outputs="probabilities"` gives the log of its probabilities, see
    `as_logits`). Write the math in `keras.ops` to keep it backend-independent.

    A loss that softens both sides at a temperature sets the attribute
    `temperature`: the `Distiller` then asks an ensemble teacher for logits
    combined at that temperature and checks that cached ensemble logits were
    combined at it. It is `None` (no temperature) by default.

    Give constructor arguments to `get_config` (calling `super().get_config()`)
    and register the class with `keras.saving.register_keras_serializable` so
    that a saved `Distiller` reloads with it.

    Args:
        name: The loss's name; the `Distiller` logs it as `"<name>_loss"` when
            it combines several losses. Defaults to the class name in snake case
            without a trailing `_loss` (`SoftmaxMSE` -> `"softmax_mse"`).

    Example:

    >>> @keras.saving.register_keras_serializable(package="my_project")
    ... class SoftmaxMSE(DistillationLoss):
    ...     '''Squared distance between the two softmax distributions.'''
    ...
    ...     def call(self, teacher_logits, student_logits):
    ...         p = keras.ops.softmax(teacher_logits, axis=-1)
    ...         q = keras.ops.softmax(student_logits, axis=-1)
    ...         return keras.ops.sum(keras.ops.square(p - q), axis=-1)
    >>> loss = SoftmaxMSE()
    >>> loss.name
    'softmax_mse'
    >>> values = loss([[0.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]])
    >>> keras.ops.convert_to_numpy(values).tolist()
    [0.0, 0.0]

    Then `keras_kd.Distiller(student=..., teacher=..., distillation_loss=SoftmaxMSE())`.
    """

    temperature: float | None = None

    def __init__(self, name: str | None = None):
        if name is None:
            name = _default_name(type(self))
        if not isinstance(name, str) or name in _RESERVED_NAMES:
            raise ValueError(
                f"A distillation loss's `name` must be a non-empty string other than "
                f"{_RESERVED_NAMES[:2]} (the Distiller logs 'soft_loss' and "
                f"'hard_loss' itself), got {name!r}."
            )
        self.name = name

    def call(self, teacher_logits, student_logits):
        """Returns the per-example (or per-token) loss.

        Args:
            teacher_logits: Float32 tensor `(batch, classes)` or
                `(batch, time, classes)`.
            student_logits: Float32 tensor of the same shape.

        Returns:
            Tensor `(batch,)`, or `(batch, time)` for sequences.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement call(teacher_logits, "
            "student_logits), returning one value per example (per token for "
            "sequences)."
        )

    def __call__(self, teacher_logits, student_logits):
        """`call` on float32 logits, its result checked to drop the class axis only.

        Raises:
            ValueError: when `call` returns anything but one value per example
                (or per token).
        """
        teacher_logits = ops.cast(teacher_logits, "float32")
        student_logits = ops.cast(student_logits, "float32")
        values = ops.cast(self.call(teacher_logits, student_logits), "float32")
        shape = tuple(values.shape)
        expected = tuple(student_logits.shape)[:-1]
        if len(shape) != len(expected) or not all(
            None in (got, want) or got == want for got, want in zip(shape, expected)
        ):
            kind = "example, shape (batch,)" if len(expected) == 1 else (
                f"token, shape {expected}"
            )
            raise ValueError(
                f"Distillation loss {self.name!r} ({type(self).__name__}.call) returned "
                f"shape {shape} for logits of shape {tuple(student_logits.shape)}; it "
                f"must return one value per {kind}. Reduce the class axis only (e.g. "
                "keras.ops.sum(..., axis=-1)), not the batch or time: the Distiller "
                "weights, masks and averages the examples itself."
            )
        return values

    def get_config(self) -> dict:
        """The constructor arguments, for saving."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict):
        """Builds the loss from `get_config()`'s output."""
        return cls(**config)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


@keras.saving.register_keras_serializable(package="keras_kd")
class TemperedKL(DistillationLoss):
    """`T^2 * KL(softmax(t / T) || softmax(s / T))` per example (see `tempered_kl`).

    The paper's soft-target loss, and the `Distiller`'s default: its gradient
    with respect to a student logit is `T * (q_i - p_i)`. Computed from
    log-softmax in float32 (finite for `T` in `[0.5, 100]` and logits up to
    +-1e4). Sequence logits `(batch, time, classes)` give one value per token.

    With `chunk_size`, the loss and its gradient are computed `chunk_size`
    rows (examples or tokens) at a time, so that the temporaries of the
    softmax over a large vocabulary exist for one chunk only instead of for
    every token at once (see `benchmarks/sequence_loss_memory.py` for the
    memory measured at a 32,768 vocabulary). The values and the gradient with
    respect to the student are the unchunked ones up to float rounding; the
    teacher's logits are treated as constants (the `Distiller` does so
    anyway), and the loop needs the TensorFlow backend.

    Args:
        temperature: Float > 0, the distillation temperature `T`.
        chunk_size: Rows of logits per chunk, or `None` (default) for all at
            once. 256-1024 suits a vocabulary of 32k.
        name: Logged name (default `"tempered_kl"`).

    Raises:
        ValueError: for a temperature that is not a finite number > 0, or a
            `chunk_size` that is not a whole number >= 1.

    Example:

    >>> loss = TemperedKL(temperature=2.0)
    >>> values = loss([[2.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [1.0, 1.0]])
    >>> keras.ops.convert_to_numpy(values).tolist()
    [0.0, 0.0]
    >>> chunked = TemperedKL(temperature=2.0, chunk_size=1)
    >>> teacher, student = [[[2.0, 0.0], [0.0, 1.0]]], [[[0.0, 0.0], [0.0, 1.0]]]
    >>> tokens = keras.ops.convert_to_numpy(chunked(teacher, student))
    >>> tokens.shape, round(float(tokens[0, 0]), 4), float(tokens[0, 1])
    ((1, 2), 0.4438, 0.0)
    """

    def __init__(
        self,
        temperature: float = 4.0,
        name: str | None = None,
        chunk_size: int | None = None,
    ):
        super().__init__(name=name)
        self.temperature = validate_temperature(temperature)
        self.chunk_size = validate_chunk_size(chunk_size)

    def call(self, teacher_logits, student_logits):
        """Per-example (or per-token) tempered KL: the logits' shape without classes."""
        if self.chunk_size is None:
            return _tempered_kl(teacher_logits, student_logits, self.temperature)
        return _chunked_tempered_kl(
            teacher_logits, student_logits, self.temperature, self.chunk_size
        )

    def get_config(self) -> dict:
        """The temperature, the chunk size and the name."""
        config = {**super().get_config(), "temperature": self.temperature}
        if self.chunk_size is not None:
            config["chunk_size"] = self.chunk_size
        return config


@keras.saving.register_keras_serializable(package="keras_kd")
class LogitMatching(DistillationLoss):
    """Matching of zero-meaned logits per example (see `logit_matching`).

    The high-temperature limit of `TemperedKL` (the paper's eq. 4): it has no
    temperature.

    Args:
        name: Logged name (default `"logit_matching"`).

    Example:

    >>> values = LogitMatching()([[1.0, 2.0]], [[0.0, 1.0]])
    >>> keras.ops.convert_to_numpy(values).tolist()
    [0.0]
    """

    def call(self, teacher_logits, student_logits):
        """Per-example (or per-token) logit matching."""
        return _logit_matching(teacher_logits, student_logits)


@keras.saving.register_keras_serializable(package="keras_kd")
class TemperedKLDivergence(keras.losses.Loss):
    """`T^2 * KL(softmax(t / T) || softmax(s / T))` as a `keras.losses.Loss`.

    For `keras.Model.compile` on a plain student model when the teacher's
    outputs are already in the dataset: `y_true` holds the teacher's logits (or
    probabilities with `teacher_outputs="probabilities"`), `y_pred` the
    student's logits. Like every Keras loss it reduces over the batch and
    divides by the number of replicas under a `tf.distribute` strategy. For the
    `Distiller`, use `TemperedKL`, which returns per-example values and leaves
    the reduction to it.

    Args:
        temperature: Float > 0.
        teacher_outputs: `"logits"` (default) or `"probabilities"`.
        reduction: Keras reduction, default `"sum_over_batch_size"`.
        name: Loss name.

    Example:

    >>> loss = TemperedKLDivergence(temperature=4.0)
    >>> float(loss([[1.0, 0.0]], [[1.0, 0.0]]))
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
        """Per-example tempered KL of teacher outputs `y_true` and logits `y_pred`."""
        return tempered_kl(y_true, y_pred, self.temperature, self.teacher_outputs)

    def get_config(self):
        """The Keras loss config plus the temperature and `teacher_outputs`."""
        config = super().get_config()
        config.update(
            temperature=self.temperature, teacher_outputs=self.teacher_outputs
        )
        return config

"""Soft-target losses of Hinton, Vinyals and Dean (2015), on logits.

Everything here is pure math on logits: no models, no state. The losses return
one value per example so that callers (the `Distiller`, a custom training loop)
decide how to weight and reduce them.

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


def _logit_matching(teacher_logits, student_logits):
    v = teacher_logits - ops.mean(teacher_logits, axis=-1, keepdims=True)
    z = student_logits - ops.mean(student_logits, axis=-1, keepdims=True)
    return 0.5 * ops.mean(ops.square(z - v), axis=-1)


def tempered_kl(teacher_logits, student_logits, temperature, teacher_outputs="logits"):
    """Per-example `T^2 * KL(softmax(t / T) || softmax(s / T))`.

    The soft-target loss of Hinton et al. (2015), scaled by `T^2` so that its
    gradient keeps the same magnitude when the temperature changes: the gradient
    with respect to a student logit `s_i` is `T * (q_i - p_i)`, where `q` and `p`
    are the student's and teacher's softened distributions (their eq. 2 times
    `T^2`). It is computed from log-softmax in float32, so it stays finite for
    temperatures from 0.5 to 100 and logits up to +-1e4, also under mixed
    precision. `TemperedKL` is the same loss as an object for the `Distiller`.

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

    Subclass it and implement `call(teacher_logits, student_logits)`, returning
    a tensor of shape `(batch,)`: one value per example, not their mean. The
    `Distiller` then weights those values by `sample_weight`, divides by the
    global batch size under a `tf.distribute` strategy and logs them, exactly as
    it does the built-in losses. Both arguments arrive as float32
    `(batch, classes)` logits (a teacher with `teacher_outputs="probabilities"`
    gives the log of its probabilities, see `as_logits`). Write the math in
    `keras.ops` to keep it backend-independent.

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
        """Returns the per-example loss, a tensor of shape `(batch,)`.

        Args:
            teacher_logits: Float32 tensor `(batch, classes)`.
            student_logits: Float32 tensor `(batch, classes)`.

        Returns:
            Tensor `(batch,)`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement call(teacher_logits, "
            "student_logits), returning one value per example."
        )

    def __call__(self, teacher_logits, student_logits):
        """`call` on float32 logits, with its result checked to be `(batch,)`.

        Raises:
            ValueError: when `call` returns anything but one value per example.
        """
        teacher_logits = ops.cast(teacher_logits, "float32")
        student_logits = ops.cast(student_logits, "float32")
        values = ops.cast(self.call(teacher_logits, student_logits), "float32")
        shape = tuple(values.shape)
        batch = tuple(student_logits.shape)[:1]
        if len(shape) != 1 or None not in (shape[0], *batch) and shape != batch:
            raise ValueError(
                f"Distillation loss {self.name!r} ({type(self).__name__}.call) returned "
                f"shape {shape} for a batch of shape {tuple(student_logits.shape)}; it "
                "must return one value per example, shape (batch,). Reduce the class "
                "axis only (e.g. keras.ops.sum(..., axis=-1)), not the batch: the "
                "Distiller weights and averages the examples itself."
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
    +-1e4).

    Args:
        temperature: Float > 0, the distillation temperature `T`.
        name: Logged name (default `"tempered_kl"`).

    Raises:
        ValueError: for a temperature that is not a finite number > 0.

    Example:

    >>> loss = TemperedKL(temperature=2.0)
    >>> values = loss([[2.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [1.0, 1.0]])
    >>> keras.ops.convert_to_numpy(values).tolist()
    [0.0, 0.0]
    """

    def __init__(self, temperature: float = 4.0, name: str | None = None):
        super().__init__(name=name)
        self.temperature = validate_temperature(temperature)

    def call(self, teacher_logits, student_logits):
        """Per-example tempered KL, shape `(batch,)`."""
        return _tempered_kl(teacher_logits, student_logits, self.temperature)

    def get_config(self) -> dict:
        """The temperature and the name."""
        return {**super().get_config(), "temperature": self.temperature}


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
        """Per-example logit matching, shape `(batch,)`."""
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

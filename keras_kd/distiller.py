"""`Distiller`: a `keras.Model` that trains a student on a teacher's soft targets."""

from __future__ import annotations

import contextlib
import inspect

import keras
import tensorflow as tf

from keras_kd import losses as kd_losses

# Keys of a batch that carries precomputed teacher outputs (see `keras_kd.cache`):
# `x = {INPUTS: student_inputs, TEACHER_LOGITS: logits}`.
INPUTS = "inputs"
TEACHER_LOGITS = "teacher_logits"
# The temperature at which a cached arithmetic-mean ensemble was combined.
TEACHER_TEMPERATURE = "teacher_temperature"

DISTILLATION_LOSSES = ("tempered_kl", "logit_matching")

# Marks the assertions of `Distiller` so that `fit`/`evaluate` can turn the
# TensorFlow error they raise at run time into a plain `ValueError`.
_CHECK_MARKER = "[keras_kd check] "


def require_tensorflow_backend(what: str) -> None:
    """Raises a `ValueError` unless Keras runs on the TensorFlow backend."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(
            f"{what} needs the TensorFlow backend, but Keras is using {backend!r}. "
            "Set the environment variable KERAS_BACKEND=tensorflow before importing "
            "keras."
        )


def validate_soft_weight(soft_weight) -> float:
    """Returns `soft_weight` as a float in [0, 1] or raises a `ValueError`."""
    try:
        value = float(soft_weight)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"`soft_weight` (the weight of the soft-target term; the hard-label term "
            f"gets 1 - soft_weight) must be in [0, 1], got {soft_weight!r}. Hinton "
            "et al. put most weight on the soft term, e.g. 0.9."
        )
    return value


# Arguments of other distillers that a user may bring along, and where each went.
_PORTED_INIT_ARGUMENTS = {
    "alpha": (
        "keras_kd >= 0.2 calls the weight of the soft term `soft_weight`. keras_kd "
        "0.1's alpha was that weight (pass soft_weight=alpha); the keras.io example's "
        "and torchdistill's alpha weigh the *hard* loss (pass soft_weight=1 - alpha)"
    ),
    "student_loss_weight": (
        "keras.distillation's student_loss_weight weighs the hard-label loss; "
        "keras_kd weighs the soft term: pass soft_weight=1 - student_loss_weight"
    ),
    "distillation_losses": (
        "keras_kd takes one soft loss: distillation_loss='tempered_kl' (the "
        "equivalent of keras.distillation's LogitsDistillation(temperature, "
        "KLDivergence()) scaled by T^2) or 'logit_matching'"
    ),
    "distillation_loss_weights": (
        "weigh the soft term with soft_weight (the hard term gets 1 - soft_weight)"
    ),
}


def _refuse_ported_arguments(args, kwargs) -> None:
    """Turns arguments that would be misread into errors naming the keras_kd form."""
    if args:
        raise TypeError(
            "keras_kd.Distiller takes its models by keyword, so that they cannot be "
            "swapped: Distiller(student=student, teacher=teacher, ...). (keras_kd "
            "0.1 took (student, teacher) by position, keras.distillation.Distiller "
            "takes (teacher, student).)"
        )
    for name, advice in _PORTED_INIT_ARGUMENTS.items():
        if name in kwargs:
            raise ValueError(f"keras_kd.Distiller has no `{name}`: {advice}.")


# The keras.io example's `compile` arguments and their keras_kd equivalents.
_PORTED_COMPILE_ARGUMENTS = {
    "student_loss_fn": "compile(loss=...), the hard-label loss on the student's logits",
    "distillation_loss_fn": (
        "Distiller(distillation_loss='tempered_kl'), which already applies the "
        "temperature and the T^2 factor"
    ),
    "alpha": (
        "Distiller(soft_weight=...); the keras.io example's alpha weighs the hard "
        "loss, so soft_weight = 1 - alpha"
    ),
    "temperature": "Distiller(temperature=...)",
}


def ends_in_softmax(model) -> bool:
    """True if `model`'s output is produced by a softmax (layer or activation)."""
    layers = getattr(model, "layers", None)
    if not layers:
        return False
    last = layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    if getattr(last, "layers", None):
        return ends_in_softmax(last)
    activation = getattr(last, "activation", None)
    return activation is keras.activations.softmax or (
        getattr(activation, "__name__", None) == "softmax"
    )


def _output_classes(model):
    """The static size of `model`'s last output axis, or None if unknown."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        return None
    if isinstance(shape, list | tuple) and shape and isinstance(shape[0], tuple):
        return None  # several outputs: checked on the first batch instead
    return shape[-1] if shape else None


# Keras loss functions whose names mean their from-logits Loss class here.
_FROM_LOGITS_CLASSES = {
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "binary_crossentropy": keras.losses.BinaryCrossentropy,
    "categorical_focal_crossentropy": keras.losses.CategoricalFocalCrossentropy,
    "binary_focal_crossentropy": keras.losses.BinaryFocalCrossentropy,
}


def _logits_loss(loss):
    """The hard-label loss as an object that maps logits to per-example values."""
    if loss is None:
        return None
    if isinstance(loss, str):
        resolved = keras.losses.get(loss)  # also resolves aliases such as "bce"
        name = getattr(resolved, "__name__", None)
        if name in _FROM_LOGITS_CLASSES:
            # The student emits logits, so a name means the from-logits form.
            return _FROM_LOGITS_CLASSES[name](from_logits=True)
        loss = resolved
    if _takes_from_logits(loss):
        raise ValueError(
            f"`loss` {getattr(loss, '__name__', loss)!r} expects probabilities unless "
            "given from_logits=True, but the Distiller's student outputs logits. Pass "
            "its Loss class with from_logits=True, e.g. "
            "keras.losses.CategoricalCrossentropy(from_logits=True)."
        )
    fn_kwargs = getattr(loss, "_fn_kwargs", None) or {}
    if fn_kwargs.get("from_logits") is False:
        raise ValueError(
            f"`loss` {loss.__class__.__name__}(from_logits=False) expects "
            "probabilities, but the Distiller's student outputs logits. Pass "
            f"{loss.__class__.__name__}(from_logits=True) instead."
        )
    if not callable(loss):
        raise ValueError(f"`loss` must be a Keras loss or a callable, got {loss!r}.")
    return loss


def _takes_from_logits(loss) -> bool:
    """Whether `loss` is a plain function with a `from_logits` parameter."""
    if isinstance(loss, keras.losses.Loss) or not callable(loss):
        return False
    try:
        parameters = inspect.signature(loss).parameters
    except (TypeError, ValueError):
        return False
    return "from_logits" in parameters


def _per_example(values):
    """Reduces anything beyond the batch axis by its mean."""
    values = tf.cast(values, tf.float32)
    if values.shape.rank and values.shape.rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    return values


class Distiller(keras.Model):
    """Trains a student on a teacher's soft targets and on hard labels.

    The loss on a batch is Hinton et al.'s (2015) weighted sum

        soft_weight * T^2 * KL(softmax(t / T) || softmax(s / T))
            + (1 - soft_weight) * CE(y, s)

    where `t` and `s` are teacher and student logits and `CE` is the loss given to
    `compile`, applied to the student at `T = 1`. The teacher runs in inference
    mode, is frozen, and its outputs are constants of the gradient. Batches without labels (an
    unlabeled transfer set) train on the soft term alone, with weight 1.

    `fit` logs `loss` (what is minimised, with the student's regularisation
    losses), `soft_loss` (the `T^2 * KL` term), `hard_loss` (the `compile` loss)
    and the compiled metrics of the student at `T = 1`; `evaluate` logs the same.
    (A Distiller without a teacher evaluates data without cached teacher outputs
    on the hard term alone, so its `val_loss` is then the `compile` loss.) All are per-example means: under a
    `tf.distribute` strategy the loss is scaled so that an update equals the
    single-device update on the same global batch.

    Teacher outputs may also arrive with the data, precomputed (see
    `keras_kd.cache`): a batch `x = {"inputs": ..., "teacher_logits": ...}` is
    used as is and the teacher (which may then be `None`) is not run.

    Args:
        student: The `keras.Model` to train (keyword only, like `teacher`, so the
            two cannot be swapped). Must output logits.
        teacher: A trained `keras.Model` (or `keras_kd.TeacherEnsemble`), or
            `None` when every batch carries `teacher_logits`.
        temperature: Float > 0, the distillation temperature `T`.
        soft_weight: Weight in `[0, 1]` of the soft term; `1 - soft_weight`
            weighs the hard term. (The keras.io example's `alpha` and
            keras.distillation's `student_loss_weight` weigh the hard term: they
            equal `1 - soft_weight`, and passing either is an error that says so.)
        teacher_outputs: `"logits"` (default) or `"probabilities"` for a teacher
            that ends in a softmax.
        distillation_loss: `"tempered_kl"` (default) or `"logit_matching"`, the
            high-temperature limit (then `temperature` is not used).
        name: Model name.
        **kwargs: Passed to `keras.Model` (e.g. `dtype="mixed_float16"`).

    The student must output `(batch, classes)` logits; with `soft_weight` 0 or 1 the
    unused term is logged but does not enter the loss.

    Checks of values (teacher outputs with NaN/Inf, probabilities given as
    logits, a cached ensemble combined at another temperature) run inside the
    compiled step and surface from `fit`/`evaluate` as a `ValueError`. XLA
    compiles such assertions away: with `jit_compile=True`, which Keras picks
    by default on a GPU, they do not run, so compile with `jit_compile=False`
    for a first run on new data or a new teacher.

    Example:

    ```python
    distiller = keras_kd.Distiller(
        student=student, teacher=teacher, temperature=4.0, soft_weight=0.9
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(x_train, y_train, epochs=3)
    distiller.student.save("student.keras")
    ```
    """

    def __init__(
        self,
        *args,
        student: keras.Model | None = None,
        teacher: keras.Model | None = None,
        temperature: float = 4.0,
        soft_weight: float = 0.9,
        teacher_outputs: str = "logits",
        distillation_loss: str = "tempered_kl",
        name: str = "distiller",
        **kwargs,
    ):
        require_tensorflow_backend("keras_kd.Distiller")
        _refuse_ported_arguments(args, kwargs)
        if student is None:
            raise TypeError(
                "keras_kd.Distiller needs `student=`, the keras.Model to train: "
                "Distiller(student=student, teacher=teacher, temperature=4.0)."
            )
        super().__init__(name=name, **kwargs)
        self.temperature = kd_losses.validate_temperature(temperature)
        self.soft_weight = validate_soft_weight(soft_weight)
        self.teacher_outputs = kd_losses.validate_teacher_outputs(teacher_outputs)
        if distillation_loss not in DISTILLATION_LOSSES:
            raise ValueError(
                f"`distillation_loss` must be one of {DISTILLATION_LOSSES}, got "
                f"{distillation_loss!r}."
            )
        if distillation_loss == "logit_matching" and teacher_outputs != "logits":
            raise ValueError(
                "`distillation_loss='logit_matching'` needs teacher logits; it cannot "
                "be used with `teacher_outputs='probabilities'`."
            )
        self.distillation_loss = distillation_loss
        self._validate_models(student, teacher)
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False
        self.student_loss = None
        self.soft_loss_tracker = keras.metrics.Mean(name="soft_loss")
        self.hard_loss_tracker = keras.metrics.Mean(name="hard_loss")
        if student.built:
            self.built = True

    # ------------------------------------------------------------------ checks

    def _validate_models(self, student, teacher):
        if not isinstance(student, keras.Layer):
            raise ValueError(
                f"`student` must be a keras.Model, got {type(student).__name__}."
            )
        if ends_in_softmax(student):
            raise ValueError(
                "`student` ends in a softmax, but the Distiller needs its logits "
                "(it applies the softmax at temperature T itself). Remove the final "
                "softmax (e.g. Dense(n) instead of Dense(n, activation='softmax'))."
            )
        if teacher is None:
            return
        if not isinstance(teacher, keras.Layer):
            raise ValueError(
                f"`teacher` must be a keras.Model, got {type(teacher).__name__}."
            )
        if self.teacher_outputs == "logits" and ends_in_softmax(teacher):
            raise ValueError(
                "`teacher` ends in a softmax but `teacher_outputs='logits'`. Either "
                "pass teacher_outputs='probabilities', or (better, it keeps the "
                "precision of large logits) give the teacher without its softmax."
            )
        teacher_classes = _output_classes(teacher)
        student_classes = _output_classes(student)
        if None not in (teacher_classes, student_classes):
            if teacher_classes != student_classes:
                raise ValueError(
                    f"Teacher and student output shapes differ: the teacher has "
                    f"{teacher_classes} outputs, the student {student_classes}. Both "
                    "must give one logit per class of the same label set."
                )

    def _check_teacher_logits(self, teacher_logits, student_logits):
        """Static checks at trace time, run-time assertions on the values."""
        if teacher_logits.shape[-1] != student_logits.shape[-1]:
            raise ValueError(
                f"Teacher and student output shapes differ: teacher "
                f"{tuple(teacher_logits.shape)}, student "
                f"{tuple(student_logits.shape)}. Both must give one logit per class."
            )
        finite = tf.reduce_all(tf.math.is_finite(teacher_logits))
        checks = [
            tf.debugging.Assert(
                finite,
                [
                    _CHECK_MARKER + "The teacher's outputs contain NaN or Inf, so "
                    "the soft targets are undefined. Check the teacher (evaluate it "
                    "alone) or the cached teacher outputs."
                ],
            )
        ]
        if self.teacher_outputs == "logits" and teacher_logits.shape[-1] > 1:
            sums = tf.reduce_sum(teacher_logits, axis=-1)
            looks_like_probabilities = tf.reduce_all(
                (teacher_logits >= 0.0) & (teacher_logits <= 1.0)
            ) & tf.reduce_all(tf.abs(sums - 1.0) < 1e-3)
            checks.append(
                tf.debugging.Assert(
                    tf.logical_not(looks_like_probabilities),
                    [
                        _CHECK_MARKER + "The teacher's outputs look like "
                        "probabilities (each row is in [0, 1] and sums to 1) but "
                        "teacher_outputs='logits'. Pass "
                        "teacher_outputs='probabilities' or give logits."
                    ],
                )
            )
        return checks

    @contextlib.contextmanager
    def _plain_errors(self):
        try:
            yield
        except tf.errors.InvalidArgumentError as error:
            message = error.message
            if _CHECK_MARKER not in message:
                raise
            text = message.split(_CHECK_MARKER, 1)[1]
            text = text.split("\n", 1)[0].rstrip("'\" ]").replace("\\'", "'")
            raise ValueError(text) from None

    # ----------------------------------------------------------------- compile

    def compile(
        self,
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=None,
        **kwargs,
    ):
        """Configures training, like `keras.Model.compile`.

        Args:
            optimizer: Optimizer (name or instance) for the student's weights.
            loss: The hard-label loss on the student's logits at `T = 1`. The
                names of the cross-entropies (`"sparse_categorical_crossentropy"`,
                `"categorical_crossentropy"`, `"binary_crossentropy"`, their focal
                forms and aliases such as `"bce"`) mean their from-logits form;
                a loss function or class that expects probabilities is refused.
                `None` is allowed only with `soft_weight=1.0`.
            metrics: Metrics of the student at `T = 1` against the labels.
            **kwargs: Passed on to `keras.Model.compile` (e.g. `jit_compile`,
                `steps_per_execution`).

        Raises:
            ValueError: for a loss that expects probabilities, no loss with
                `soft_weight < 1`, or the keras.io example's arguments
                (`student_loss_fn`, `distillation_loss_fn`, `alpha`, `temperature`),
                naming where each went.
        """
        ported = [name for name in _PORTED_COMPILE_ARGUMENTS if name in kwargs]
        if ported:
            raise ValueError(
                "keras_kd.Distiller.compile does not take "
                + ", ".join(f"`{name}`" for name in ported)
                + " (the keras.io example's compile arguments). In keras_kd: "
                + "; ".join(
                    f"{name} -> {_PORTED_COMPILE_ARGUMENTS[name]}" for name in ported
                )
                + "."
            )
        if "loss_weights" in kwargs:
            raise ValueError(
                "`loss_weights` is not used by the Distiller; weigh the soft and hard "
                "terms with Distiller(soft_weight=...) instead."
            )
        self.student_loss = _logits_loss(loss)
        if self.student_loss is None and self.soft_weight < 1.0:
            raise ValueError(
                "`loss=None` leaves the hard term undefined but "
                f"soft_weight={self.soft_weight} gives it weight "
                f"{1.0 - self.soft_weight:g}. Pass a loss, or "
                "Distiller(soft_weight=1.0) to train on soft targets alone."
            )
        super().compile(optimizer=optimizer, loss=None, metrics=metrics, **kwargs)
        if self.student.built and not self.optimizer.built:
            # Creating the slots now keeps `fit` from tracing train_step twice
            # (once to create variables, once more without).
            self.optimizer.build(self.student.trainable_variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["loss"] = keras.saving.serialize_keras_object(self.student_loss)
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        config.pop("loss_weights", None)
        self.compile(**config)

    # -------------------------------------------------------------- training

    def call(self, inputs, training=False):
        """The student's logits at `T = 1`."""
        if isinstance(inputs, dict) and TEACHER_LOGITS in inputs:
            inputs = inputs[INPUTS]
        return self.student(inputs, training=training)

    def _split(self, x):
        """(student inputs, precomputed teacher outputs or None, their checks)."""
        if isinstance(x, dict) and TEACHER_LOGITS in x:
            if INPUTS not in x:
                raise ValueError(
                    f"A batch with {TEACHER_LOGITS!r} must hold the student's inputs "
                    f"under {INPUTS!r}; got keys {sorted(x)}."
                )
            checks = []
            if TEACHER_TEMPERATURE in x and self.distillation_loss == "tempered_kl":
                combined_at = tf.cast(x[TEACHER_TEMPERATURE], tf.float32)
                checks.append(
                    tf.debugging.Assert(
                        tf.reduce_all(tf.abs(combined_at - self.temperature) < 1e-6),
                        [
                            _CHECK_MARKER + "The cached ensemble was combined at "
                            "another temperature than the Distiller's "
                            f"temperature={self.temperature:g}. Pass the "
                            "Distiller's temperature to TeacherCache.dataset"
                            "(temperature=...).",
                        ],
                    )
                )
            return x[INPUTS], x[TEACHER_LOGITS], checks
        return x, None, []

    def _teacher_logits(self, inputs, cached):
        if cached is not None:
            return tf.stop_gradient(tf.cast(cached, tf.float32))
        if self.teacher is None:
            raise ValueError(
                "This Distiller has no teacher and the batch carries no "
                f"{TEACHER_LOGITS!r}. Pass `teacher=` or train on a dataset from "
                "keras_kd.cache, whose batches include the teacher's outputs."
            )
        if hasattr(self.teacher, "logits_at_temperature"):
            outputs = self.teacher.logits_at_temperature(
                inputs, self.temperature, training=False
            )
        else:
            outputs = self.teacher(inputs, training=False)
        return tf.stop_gradient(tf.cast(outputs, tf.float32))

    def _soft_term(self, teacher_logits, student_logits):
        if self.distillation_loss == "logit_matching":
            return kd_losses.logit_matching(teacher_logits, student_logits)
        return kd_losses.tempered_kl(
            teacher_logits, student_logits, self.temperature, self.teacher_outputs
        )

    def _hard_term(self, y, student_logits):
        if self.student_loss is None:
            raise ValueError(
                "The batch has labels but the Distiller was compiled with loss=None; "
                "compile with a loss to use them."
            )
        self._check_labels(y, student_logits)
        if isinstance(self.student_loss, keras.losses.Loss):
            # `call` gives per-example values; like `Loss.__call__`, cast the labels
            # to the loss dtype (integer one-hot labels, say).
            y = tf.cast(y, self.student_loss.dtype)
            values = self.student_loss.call(y, student_logits)
        else:
            values = self.student_loss(y, student_logits)
        return _per_example(values)

    def _check_labels(self, y, student_logits):
        classes = student_logits.shape[-1]
        rank = y.shape.rank
        if isinstance(self.student_loss, keras.losses.SparseCategoricalCrossentropy):
            if rank is not None and rank >= 2 and y.shape[-1] not in (1, None):
                raise ValueError(
                    f"Labels of shape {tuple(y.shape)} look one-hot, but the loss is "
                    "sparse categorical cross-entropy (integer labels). Pass "
                    "integer class ids, or compile with "
                    "loss='categorical_crossentropy'."
                )
        if isinstance(self.student_loss, keras.losses.CategoricalCrossentropy):
            if rank is not None and (rank < 2 or y.shape[-1] != classes):
                raise ValueError(
                    f"Labels of shape {tuple(y.shape)} are not one-hot over {classes} "
                    "classes, but the loss is categorical cross-entropy. Pass one-hot "
                    "labels or compile with loss='sparse_categorical_crossentropy'."
                )

    @staticmethod
    def _global_batch_size(local_size):
        """Examples in the global batch: summed over replicas when distributed."""
        local_size = tf.cast(local_size, tf.float32)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            return context.all_reduce(tf.distribute.ReduceOp.SUM, local_size)
        return local_size

    @staticmethod
    def _num_replicas():
        return tf.distribute.get_strategy().num_replicas_in_sync

    def _compute_terms(self, x, y, sample_weight, training):
        """Per-example soft, hard and weighted total losses, plus student logits."""
        inputs, cached, checks = self._split(x)
        teacher_logits = None
        if cached is not None or self.teacher is not None or training:
            teacher_logits = self._teacher_logits(inputs, cached)
        student_logits = self.student(inputs, training=training)
        if student_logits.shape.rank != 2:
            raise ValueError(
                f"The student's output has shape {tuple(student_logits.shape)}; the "
                "Distiller needs (batch, classes) logits. Flatten other axes into the "
                "batch (e.g. frames of a sequence) or pool them in the student."
            )
        soft = hard = None
        if teacher_logits is not None:
            checks = checks + self._check_teacher_logits(teacher_logits, student_logits)
            with tf.control_dependencies([c for c in checks if c is not None]):
                soft = self._soft_term(teacher_logits, student_logits)
        if y is not None and (self.student_loss is not None or self.soft_weight < 1.0):
            hard = self._hard_term(y, tf.cast(student_logits, tf.float32))
        if soft is not None and hard is not None:
            # A term of weight 0 is left out, so that its NaN cannot spoil the loss.
            if self.soft_weight == 1.0:
                total = soft
            elif self.soft_weight == 0.0:
                total = hard
            else:
                total = self.soft_weight * soft + (1.0 - self.soft_weight) * hard
        elif soft is not None:
            total = soft
        elif hard is not None:
            total = hard
        else:
            raise ValueError(
                "Nothing to evaluate: the batch has no labels and there is no teacher. "
                "Give labels, a teacher, or cached teacher outputs."
            )
        weight = None
        if sample_weight is not None:
            weight = tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        return soft, hard, total, weight, student_logits

    @staticmethod
    def _weighted(values, weight):
        return values if weight is None else values * weight

    def _update_trackers(self, soft, hard, total, weight, regularization):
        # Per-example values of the objective (Keras' "sum_over_batch_size"
        # convention: the mean of weight * loss). Metric variables sum over
        # replicas, so the logged figures are global means.
        self._loss_tracker.update_state(self._weighted(total, weight) + regularization)
        if soft is not None:
            self.soft_loss_tracker.update_state(self._weighted(soft, weight))
        if hard is not None:
            self.hard_loss_tracker.update_state(self._weighted(hard, weight))

    def _logs(self, x, y, student_logits, sample_weight, soft, hard):
        if y is not None and self._compile_metrics is not None:
            self._compile_metrics.update_state(y, student_logits, sample_weight)
        logs = {"loss": self._loss_tracker.result()}
        if soft is not None:
            logs["soft_loss"] = self.soft_loss_tracker.result()
        if hard is not None:
            logs["hard_loss"] = self.hard_loss_tracker.result()
        if y is not None and self._compile_metrics is not None:
            logs.update(self._compile_metrics.result())
        return logs

    def get_metrics_result(self):
        # Skips label metrics that were never built (an unlabeled transfer set).
        # Keras then falls back to the step's own logs, which leave out the terms
        # this run does not compute instead of reporting them as 0.
        results = {}
        for metric in self.metrics:
            if not getattr(metric, "built", True):
                continue
            result = metric.result()
            if isinstance(result, dict):
                results.update(result)
            else:
                results[metric.name] = result
        return results

    def _regularization(self):
        """The sum of the student's regularisation losses (0 without any)."""
        if not self.student.losses:
            return tf.constant(0.0)
        return tf.add_n([tf.cast(r, tf.float32) for r in self.student.losses])

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            soft, hard, total, weight, student_logits = self._compute_terms(
                x, y, sample_weight, training=True
            )
            global_size = self._global_batch_size(tf.shape(total)[0])
            # Each replica contributes sum(local) / global; the optimizer sums the
            # replicas' gradients, which gives the single-device update.
            loss = tf.math.divide_no_nan(
                tf.reduce_sum(self._weighted(total, weight)), global_size
            )
            regularization = self._regularization()
            loss += regularization / self._num_replicas()
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.student.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self._update_trackers(soft, hard, total, weight, regularization)
        return self._logs(x, y, student_logits, sample_weight, soft, hard)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        soft, hard, total, weight, student_logits = self._compute_terms(
            x, y, sample_weight, training=False
        )
        self._update_trackers(soft, hard, total, weight, self._regularization())
        return self._logs(x, y, student_logits, sample_weight, soft, hard)

    def fit(self, *args, **kwargs):
        with self._plain_errors():
            return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        with self._plain_errors():
            return super().evaluate(*args, **kwargs)

    # --------------------------------------------------------------- config

    def get_config(self):
        return {
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": (
                None
                if self.teacher is None
                else keras.saving.serialize_keras_object(self.teacher)
            ),
            "temperature": self.temperature,
            "soft_weight": self.soft_weight,
            "teacher_outputs": self.teacher_outputs,
            "distillation_loss": self.distillation_loss,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        student = keras.saving.deserialize_keras_object(
            config.pop("student"), custom_objects=custom_objects
        )
        teacher = config.pop("teacher")
        if teacher is not None:
            teacher = keras.saving.deserialize_keras_object(
                teacher, custom_objects=custom_objects
            )
        if "alpha" in config:  # saved by keras_kd 0.1, whose alpha was soft_weight
            config["soft_weight"] = config.pop("alpha")
        return cls(student=student, teacher=teacher, **config)


keras.saving.register_keras_serializable(package="keras_kd")(Distiller)

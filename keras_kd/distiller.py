"""`Distiller`: a `keras.Model` that trains a student on a teacher's soft targets."""

from __future__ import annotations

import inspect
import math

import keras
import numpy as np
import tensorflow as tf

from keras_kd import checks, sequences
from keras_kd import hints as kd_hints
from keras_kd import losses as kd_losses
from keras_kd.batch import INPUTS, TEACHER_LOGITS, TEACHER_TEMPERATURE, split_batch
from keras_kd.teacher_inference import (
    TeacherInference,
    TeacherOutputMemory,
    output_classes_of,
    validate_teacher_jit_compile,
    validate_validation_teacher,
    weights_digest,
)
from keras_kd.teacher_precision import forward_in, validate_teacher_dtype

# INPUTS, TEACHER_LOGITS and TEACHER_TEMPERATURE are defined in keras_kd.batch and
# re-exported here for modules written against keras_kd 0.1.
__all__ = [
    "INPUTS",
    "TEACHER_LOGITS",
    "TEACHER_TEMPERATURE",
    "Distiller",
    "NonFiniteLossError",
    "ends_in_softmax",
    "require_tensorflow_backend",
    "validate_soft_weight",
]

# The strings `distillation_loss` takes, and the loss object each one means.
DISTILLATION_LOSSES = ("tempered_kl", "logit_matching")
_DEFAULT_TEMPERATURE = 4.0


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
        "pass the soft loss as distillation_loss=, e.g. "
        "distillation_loss='tempered_kl' or keras_kd.losses.TemperedKL(temperature) "
        "(the equivalent of keras.distillation's LogitsDistillation(temperature, "
        "loss=keras.losses.KLDivergence()), whose T^2 factor it includes), or several with their weights as a list of "
        "(loss, weight) pairs: distillation_loss=[(TemperedKL(4.0), 0.7), "
        "(LogitMatching(), 0.3)]; a FeatureDistillation(teacher_layer_name=t, "
        "student_layer_name=s) is hints=[keras_kd.Hint(student_layer=s, "
        "teacher_layer=t)]"
    ),
    "distillation_loss_weights": (
        "give each soft loss its weight in a (loss, weight) pair, "
        "distillation_loss=[(TemperedKL(4.0), 0.7), (LogitMatching(), 0.3)]; their "
        "weighted sum is soft_loss, which soft_weight weighs against the hard term "
        "(which gets 1 - soft_weight)"
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


def _loss_object(loss, temperature):
    """A `DistillationLoss` for a string or an object, or a `TypeError`."""
    if isinstance(loss, kd_losses.DistillationLoss):
        return loss
    if isinstance(loss, kd_hints.Hint) or type(loss).__name__ == "FeatureDistillation":
        raise TypeError(
            f"`distillation_loss` got {type(loss).__name__}, a loss on intermediate "
            "features. Pass features as Distiller(hints=[keras_kd.Hint(student_layer=..., "
            "teacher_layer=...)]); `distillation_loss` compares logits."
        )
    if isinstance(loss, str):
        if loss == "tempered_kl":
            return kd_losses.TemperedKL(temperature=temperature or _DEFAULT_TEMPERATURE)
        if loss == "logit_matching":
            return kd_losses.LogitMatching()
        raise ValueError(
            f"`distillation_loss` must be one of {DISTILLATION_LOSSES} or a "
            f"keras_kd.losses.DistillationLoss, got {loss!r}."
        )
    raise TypeError(
        f"`distillation_loss` got {type(loss).__name__} {loss!r}, which is not a "
        f"distillation loss. Pass one of {DISTILLATION_LOSSES}, an instance of a "
        "keras_kd.losses.DistillationLoss subclass (TemperedKL, LogitMatching, or "
        "your own with call(teacher_logits, student_logits) -> (batch,) values), "
        "or a list of (loss, weight) pairs. A keras.losses.Loss reduces over the "
        "batch, so it is not accepted: wrap its math in a DistillationLoss."
    )


def _loss_weight(weight, loss) -> float:
    try:
        value = float(weight)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(weight, bool) or not 0.0 <= value < float("inf"):
        raise ValueError(
            f"The weight of distillation loss {loss.name!r} must be a finite number "
            f">= 0, got {weight!r}."
        )
    return value


def _resolve_distillation_losses(distillation_loss, temperature):
    """`(loss, weight)` pairs and the temperature of the soft term.

    Raises:
        ValueError, TypeError: for an unknown loss, a malformed list, a duplicate
            name, or temperatures that disagree.
    """
    if temperature is not None:
        temperature = kd_losses.validate_temperature(temperature)
    if isinstance(distillation_loss, list | tuple):
        if not distillation_loss:
            raise ValueError(
                "`distillation_loss` is an empty list; give at least one loss."
            )
        pairs = []
        for item in distillation_loss:
            if isinstance(item, list | tuple):
                if len(item) != 2:
                    raise ValueError(
                        "Each item of a `distillation_loss` list is a loss or a "
                        f"(loss, weight) pair, got {item!r} of length {len(item)}."
                    )
                loss = _loss_object(item[0], temperature)
                pairs.append((loss, _loss_weight(item[1], loss)))
            else:
                pairs.append((_loss_object(item, temperature), 1.0))
        if all(weight == 0.0 for _, weight in pairs):
            raise ValueError(
                "Every distillation loss has weight 0, so the soft term would be 0. "
                "Give at least one a positive weight (soft_weight=0.0 trains on the "
                "hard term alone)."
            )
    else:
        pairs = [(_loss_object(distillation_loss, temperature), 1.0)]
    names = [loss.name for loss, _ in pairs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"Several distillation losses are named {duplicates}; each is logged "
            "under its own name, so give them distinct ones, e.g. "
            "TemperedKL(2.0, name='kl_t2')."
        )
    own = sorted(
        {loss.temperature for loss, _ in pairs if loss.temperature is not None}
    )
    if len(own) > 1:
        raise ValueError(
            f"The distillation losses have different temperatures {own}. A Distiller "
            "has one temperature (at which ensembles are combined and cached "
            "outputs are checked); use one temperature for all of them."
        )
    if own and temperature is not None and own[0] != temperature:
        raise ValueError(
            f"`temperature={temperature:g}` differs from the distillation loss's own "
            f"temperature {own[0]:g}. Give the temperature once: in the loss "
            "(TemperedKL(temperature=...)) or as Distiller(temperature=...) with "
            "distillation_loss='tempered_kl'."
        )
    return pairs, (own[0] if own else None)


def _output_shape(model):
    """`model`'s static output shape, or None if unknown or several outputs."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        return None
    if isinstance(shape, list | tuple) and shape and isinstance(shape[0], tuple):
        return None  # several outputs: checked on the first batch instead
    return tuple(shape) if shape else None


def _output_classes(model):
    """The static size of `model`'s last output axis, or None if unknown."""
    shape = _output_shape(model)
    return shape[-1] if shape else None


def _check_output_rank(student_logits) -> None:
    """Refuses student outputs other than `(batch, classes)` or `(batch, time, classes)`."""
    if student_logits.shape.rank not in (2, 3):
        raise ValueError(
            f"The student's output has shape {tuple(student_logits.shape)}; the "
            "Distiller needs (batch, classes) logits, or (batch, time, classes) "
            "logits of a sequence. Flatten other axes (e.g. the pixels of a "
            "segmentation map) into the time axis, or pool them in the student."
        )


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


def _per_example(values, kept_axes: int = 1):
    """Reduces anything beyond the first `kept_axes` axes (batch[, time]) by its mean."""
    values = tf.cast(values, tf.float32)
    if values.shape.rank and values.shape.rank > kept_axes:
        values = tf.reduce_mean(values, axis=list(range(kept_axes, values.shape.rank)))
    return values


def _merge_time(labels):
    """Sequence labels `(batch, time, ...)` as `(batch * time, ...)`."""
    return tf.reshape(labels, tf.concat([[-1], tf.shape(labels)[2:]], axis=0))


def _sequence_weights(student_logits, sample_weight, total):
    """Token weights `(batch, time)` that make the Distiller's loss a token mean.

    The train step divides `sum(total * weight)` by the global number of
    sequences; see `keras_kd.sequences.mean_weights` for the scaling that turns
    it into the mean over the global batch's valid tokens.
    """
    with tf.control_dependencies(
        sequences.check_token_shapes(student_logits, sample_weight)
    ):
        tokens = sequences.token_weights(student_logits, sample_weight)
    global_sequences = sequences.global_sum(tf.shape(total)[0])
    weight, _ = sequences.mean_weights(tokens, global_sequences)
    return weight


def _defaults(function) -> dict:
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


_FIT_SIGNATURE = inspect.signature(keras.Model.fit)
_FIT_DEFAULTS = _defaults(keras.Model.fit)
_EVALUATE_SIGNATURE = inspect.signature(keras.Model.evaluate)
_EVALUATE_DEFAULTS = _defaults(keras.Model.evaluate)


class NonFiniteLossError(ValueError):
    """The training or validation loss became NaN/Inf during `Distiller.fit`."""


class _FiniteLossGuard(keras.callbacks.Callback):
    """Stops `fit` at the end of an epoch whose loss is NaN/Inf.

    The per-batch checks of inputs and teacher outputs do not run under XLA,
    and divergence passes them all; the epoch's mean loss is NaN/Inf after
    either, so this catches both at the cost of reading two floats per epoch.
    """

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                raise NonFiniteLossError(
                    f"`{key}` is {float(value)} at the end of epoch {epoch + 1}, so "
                    "the student's weights are no longer usable. The checks of the "
                    "first batch passed: either a later batch holds NaN/Inf (in the "
                    "inputs, labels or teacher outputs; under jit_compile=True the "
                    "per-batch checks do not run, compile with jit_compile=False to "
                    "have every batch checked), or training diverged (lower the "
                    "learning rate, or clip gradients with clipnorm=1.0)."
                )


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
    losses), `soft_loss` (the `T^2 * KL` term, or whatever `distillation_loss`
    gives: with several losses their weighted sum, each also logged as
    `<name>_loss`), `hard_loss` (the `compile` loss) and the compiled metrics
    of the student at `T = 1`; `evaluate` logs the same.
    (A Distiller without a teacher evaluates data without cached teacher outputs
    on the hard term alone, so its `val_loss` is then the `compile` loss.) All are per-example means: under a
    `tf.distribute` strategy the loss is scaled so that an update equals the
    single-device update on the same global batch.

    Validation (`evaluate`, and `fit(validation_data=...)`, which logs each
    figure of `evaluate` with a `val_` prefix) and `validation_teacher`:

    | key | `"reuse"` (default), `"always"` | `"never"` (labeled data) |
    | --- | --- | --- |
    | `val_loss` | `soft_weight * val_soft_loss + (1 - soft_weight) * val_hard_loss` + regularisation: the training objective, as keras.distillation's `val_loss` | `val_hard_loss` + regularisation: the student's own loss, as `student.evaluate` reports it |
    | `val_soft_loss`, `val_<name>_loss` | the soft term(s) against the teacher at `T` | absent (unless the batches carry teacher logits) |
    | `val_hard_loss` | the `compile` loss on the labels at `T = 1` | the same |
    | `val_<metric>` | the compiled metrics of the student at `T = 1` | the same |

    `"reuse"` and `"always"` log the same numbers; they differ in cost.
    `"always"` runs the teacher on every validation batch. `"reuse"` runs it
    once per validation example and remembers its outputs, keyed by a
    fingerprint of the example's input bytes: from the second validation pass
    on, validation costs what evaluating the student costs. The same examples
    reshuffled or rebatched are recognised; a batch holding any example not
    seen before (another validation set, random augmentation, different
    preprocessing) runs the teacher, so no figure is ever computed from the
    wrong teacher outputs. Remembered outputs are forgotten when the
    teacher's weights, the teacher object or the temperature change (checked
    at each `evaluate`; see `keras_kd.teacher_inference` for the memory
    budget and the fingerprint). Under `compile(jit_compile=True)` (Keras'
    `"auto"` on a single GPU) the test step is then compiled without XLA,
    since the memory's lookup cannot live in an XLA computation; training
    keeps XLA. The teacher runs every time for sequence outputs and with
    hints. `"never"` does not run the teacher on labeled
    validation data at all; unlabeled data is still scored against it.

    Teacher outputs may also arrive with the data, precomputed (see
    `keras_kd.cache`): a batch whose `x` is `keras_kd.batch.make_batch(inputs,
    logits)`, i.e. `{"inputs": ..., "teacher_logits": ...}`, is used as is and
    the teacher (which may then be `None`) is not run.

    Args:
        student: The `keras.Model` to train (keyword only, like `teacher`, so the
            two cannot be swapped). Must output logits.
        teacher: A trained `keras.Model` (or `keras_kd.TeacherEnsemble`), or
            `None` when every batch carries `teacher_logits`.
        temperature: Float > 0, the distillation temperature `T` (default 4.0,
            or the temperature of a `TemperedKL` given as `distillation_loss`;
            giving both with different values is an error). An ensemble
            teacher's logits are combined at it, and cached ensemble logits
            are checked to have been combined at it.
        soft_weight: Weight in `[0, 1]` of the soft term; `1 - soft_weight`
            weighs the hard term. (The keras.io example's `alpha` and
            keras.distillation's `student_loss_weight` weigh the hard term: they
            equal `1 - soft_weight`, and passing either is an error that says so.)
        teacher_outputs: `"logits"` (default) or `"probabilities"` for a teacher
            that ends in a softmax.
        distillation_loss: The soft loss: `"tempered_kl"` (default, that is
            `keras_kd.losses.TemperedKL(temperature)`), `"logit_matching"` (the
            high-temperature limit, `keras_kd.losses.LogitMatching()`), any
            `keras_kd.losses.DistillationLoss` object (your own subclass too),
            or a list of losses and `(loss, weight)` pairs (weight 1 when not
            given). With several, `soft_loss` is their weighted sum and each is
            also logged as `"<name>_loss"`; a loss of weight 0 is logged but
            not trained on. Each loss's per-example values are weighted,
            scaled and averaged like the built-in ones.
        validation_teacher: What validation does with the teacher: `"reuse"`
            (default: run it once per validation example, remember its
            outputs), `"always"` (run it on every batch, as keras-kd 0.2 and
            keras.distillation do) or `"never"` (score the student alone on
            labeled data). See the table above for what each `val_*` means.
        teacher_jit_compile: Compile the teacher's inference with XLA in its
            own function, whatever `compile(jit_compile=...)` says for the
            student's step: `"auto"` (default) does so on a GPU or TPU, and
            falls back with a warning when XLA cannot compile the teacher; on
            a CPU it leaves XLA off (in the Imagenette online benchmark a
            ResNet-50 teacher under XLA made no epoch faster, although XLA
            runs it 1.13x faster alone; see `keras_kd.teacher_inference`).
            `True` always (a `ValueError` if XLA cannot), `False` never.
            Under `compile(jit_compile=True)` the whole step is XLA already.
        teacher_dtype: The precision of the teacher's arithmetic, in training
            and validation: `None` (default: as the teacher was built),
            `"bfloat16"` or `"float16"`, on the teacher's own float32 weights
            and with its output layers kept float32 (see
            `keras_kd.teacher_precision`). The student's step keeps its own
            dtype policy. Faster where the hardware has fast lower-precision
            arithmetic (measured on a CPU with AMX; expected on a GPU with
            tensor cores); the soft targets then differ from float32 by
            rounding.
        hints: `keras_kd.Hint`s (FitNets): student layers trained to match
            teacher layers, each through a learned adapter when the shapes
            differ, its loss added with its weight and logged as
            `hint_<name>_loss`. The adapters are the Distiller's
            (`hint_adapters`), trained with the student and not part of it.
            Needs a functional or Sequential student and teacher, and a
            teacher that runs at every step (not cached logits; validation
            too runs it on every batch, as its features are not remembered).
            See `keras_kd.Hint`.
        name: Model name.
        **kwargs: Passed to `keras.Model` (e.g. `dtype="mixed_float16"`).

    The student outputs `(batch, classes)` logits, or `(batch, time, classes)` for
    sequences (frames, tokens): then the losses are means over the global batch's
    valid tokens, as `keras_kd.sequences` describes. With `soft_weight` 0 or 1 the
    unused term is logged but does not enter the loss.

    Before training, `fit` and `evaluate` check their data eagerly, whatever the
    compile mode (see `check_data`): arrays whole (lengths, NaN/Inf, label type
    and range), datasets by their first batch, and the teacher's outputs on the
    first batch (NaN/Inf, probabilities given as logits, class count, a cached
    ensemble combined at another temperature). Each problem is a `ValueError` or
    `TypeError` that names it and the fix. Every later batch is checked inside
    the compiled step for NaN/Inf in the inputs and the teacher's outputs and
    for the teacher's and the cache's checks above; a class id out of range
    there is TensorFlow's error, turned into the same `ValueError`. XLA
    (`jit_compile=True`, Keras' default on a GPU) compiles those assertions
    away; there, and after a divergence, a NaN/Inf first met in a later batch
    shows as a non-finite loss, which `fit` reports as a `NonFiniteLossError`
    at the end of that epoch, before later callbacks run. A data object is
    checked eagerly once per Distiller (the same arrays passed to `fit` again
    are not scanned again). Reading a dataset's first batch iterates it once
    more: a dataset that reshuffles on every iteration therefore trains on the
    order of its next reshuffle. Runs stay reproducible with the same seed, but
    their order differs from keras-kd 0.1, which did not read ahead.

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
        temperature: float | None = None,
        soft_weight: float = 0.9,
        teacher_outputs: str = "logits",
        distillation_loss: str | kd_losses.DistillationLoss | list = "tempered_kl",
        validation_teacher: str = "reuse",
        teacher_jit_compile: str | bool = "auto",
        teacher_dtype: str | None = None,
        hints: list | None = None,
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
        self.soft_weight = validate_soft_weight(soft_weight)
        self.validation_teacher = validate_validation_teacher(validation_teacher)
        self.teacher_jit_compile = validate_teacher_jit_compile(teacher_jit_compile)
        self._teacher_dtype = validate_teacher_dtype(teacher_dtype)
        if teacher_dtype is not None and teacher is None:
            raise ValueError(
                f"`teacher_dtype={teacher_dtype!r}` sets the precision of the teacher's "
                "inference, but this Distiller has no teacher (its batches carry cached "
                "outputs). Drop `teacher_dtype`, or pass `teacher=`; a cache is built "
                "at lower precision with build_teacher_cache(..., teacher_dtype=...)."
            )
        # Built on first use: the teacher's compiled inference, and (for
        # validation_teacher="reuse") its remembered validation outputs with
        # the state of the teacher they were computed for.
        self._teacher_inference = None
        self._teacher_inference_of = None
        self._validation_memory = None
        self._validation_memory_state = None
        self._in_test_step = False
        # True while the test function is one built without XLA for the
        # memory under compile(jit_compile=True) (see make_test_function).
        self._test_step_without_xla = False
        self.teacher_outputs = kd_losses.validate_teacher_outputs(teacher_outputs)
        pairs, loss_temperature = _resolve_distillation_losses(
            distillation_loss, temperature
        )
        self.temperature = loss_temperature or temperature or _DEFAULT_TEMPERATURE
        # The temperature the soft term depends on, or None (logit matching).
        self._soft_temperature = loss_temperature
        if teacher_outputs != "logits" and any(
            isinstance(loss, kd_losses.LogitMatching) for loss, _ in pairs
        ):
            raise ValueError(
                "`distillation_loss='logit_matching'` needs teacher logits; it cannot "
                "be used with `teacher_outputs='probabilities'`."
            )
        self.distillation_loss = distillation_loss
        # `(DistillationLoss, weight)` pairs whose weighted sum is the soft term.
        self.distillation_losses = tuple(pairs)
        self._validate_models(student, teacher)
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False
        self.hints = kd_hints.validate_hints(hints, teacher)
        # A plain object, so that Keras does not track the extractors (their
        # variables are the models').
        self._hint_plan = (
            kd_hints.HintPlan(self.hints, student, teacher) if self.hints else None
        )
        # One per hint (None where the shapes are equal): trained and saved with
        # the Distiller, not part of the student.
        self.hint_adapters = list(self._hint_plan.adapters) if self.hints else []
        self._hint_trackers = [keras.metrics.Mean(name=h.log_name) for h in self.hints]
        self.student_loss = None
        self._checked_data = checks.SeenData()
        self.soft_loss_tracker = keras.metrics.Mean(name="soft_loss")
        self.hard_loss_tracker = keras.metrics.Mean(name="hard_loss")
        self._part_trackers = (
            [keras.metrics.Mean(name=f"{loss.name}_loss") for loss, _ in pairs]
            if len(pairs) > 1
            else []
        )
        if student.built:
            self.built = True

    @property
    def _value_trackers(self) -> list:
        """Trackers of `_compute_terms`' parts: each soft loss (when several), each hint."""
        return [*self._part_trackers, *self._hint_trackers]

    def _trained_variables(self) -> list:
        """The student's trainable variables, and the hints' adapters'."""
        variables = list(self.student.trainable_variables)
        if self._hint_plan is not None:
            variables += self._hint_plan.trainable_variables
        return variables

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
        teacher_shape, student_shape = _output_shape(teacher), _output_shape(student)
        if None not in (teacher_shape, student_shape) and len(teacher_shape) != len(
            student_shape
        ):
            raise ValueError(
                f"Teacher and student outputs have different ranks: teacher "
                f"{teacher_shape}, student {student_shape}. Both must output "
                "(batch, classes) logits, or both (batch, time, classes) logits of "
                "the same sequences."
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
            self.optimizer.build(self._trained_variables())

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["loss"] = keras.saving.serialize_keras_object(self.student_loss)
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        config.pop("loss_weights", None)
        self.compile(**config)

    def call(self, inputs, training=False):
        """The student's logits at `T = 1`."""
        return self.student(split_batch(inputs)[0], training=training)

    def _teacher_logits(self, inputs, cached):
        """The batch's teacher outputs: carried, remembered, or computed.

        Returns `(logits, features)`: the features of the hints' teacher
        layers come from the same pass (an empty list without hints). The
        logits are None in a test step that scores the student alone
        (`validation_teacher="never"`); `_compute_terms` then leaves the soft
        term and the hints out.
        """
        if cached is not None:
            if self._hint_plan is not None:
                raise ValueError(
                    f"The batch carries cached {TEACHER_LOGITS!r}, but this Distiller "
                    "has hints, which need the teacher's features; a cache holds "
                    "logits only (see keras_kd.Hint). Train on the plain data "
                    "(inputs and labels) so that the teacher runs, or drop `hints`."
                )
            return tf.stop_gradient(tf.cast(cached, tf.float32)), []
        if self.teacher is None:
            raise ValueError(
                "This Distiller has no teacher and the batch carries no "
                f"{TEACHER_LOGITS!r}. Pass `teacher=` or train on a dataset from "
                "keras_kd.cache, whose batches include the teacher's outputs."
            )
        if self._in_test_step == "student_only":
            return None, []
        outer_xla = self._step_uses_xla()
        inference = self._teacher_pass()
        memory = self._validation_memory if self._in_test_step else None
        if memory is not None and not outer_xla:
            outputs = memory.outputs(inputs, inference)
        else:
            outputs = inference(inputs, outer_xla=outer_xla)
        features = []
        if self._hint_plan is not None:
            outputs, features = self._hint_plan.split_teacher(outputs)
        return tf.stop_gradient(tf.cast(outputs, tf.float32)), features

    def _step_uses_xla(self) -> bool:
        """Whether Keras compiles the step being traced with XLA (`compile(jit_compile=...)`)."""
        if self._in_test_step and self._test_step_without_xla:
            return False
        try:
            return bool(self.jit_compile)
        except AttributeError:  # not compiled yet
            return False

    def make_test_function(self, force=False):
        """Keras' test function; without XLA when validation outputs are remembered.

        The memory's lookup table cannot live in an XLA computation, so under
        `compile(jit_compile=True)` (Keras' `"auto"` on a single GPU) the test
        step is compiled without XLA while the memory is in use: validation
        then runs the student alone on remembered examples, and the teacher,
        for examples not seen before, in its own function
        (`teacher_jit_compile`). The training step keeps XLA.
        """
        if self.test_function is not None and not force:
            return self.test_function
        without_xla = self._validation_memory is not None and self._step_uses_xla()
        self._test_step_without_xla = without_xla
        if not without_xla:
            return super().make_test_function(force)
        wanted = self._jit_compile
        self._jit_compile = False
        try:
            return super().make_test_function(force)
        finally:
            self._jit_compile = wanted

    @property
    def teacher_dtype(self) -> str | None:
        """The precision of the teacher's arithmetic (`teacher_dtype=`; set only
        at construction: the compiled steps are traced with it)."""
        return self._teacher_dtype

    @property
    def teacher_uses_xla(self) -> bool | None:
        """Whether the teacher's inference runs under XLA.

        `None` when it does not apply (no teacher; `compile(jit_compile=True)`,
        where the whole step is XLA; `compile(run_eagerly=True)`) or is not
        known yet (XLA wanted, before the first `fit` or `evaluate` has
        checked that XLA compiles the teacher).
        """
        if self.teacher is None or self._step_uses_xla() or self._runs_eagerly():
            return None
        return self._teacher_pass().uses_xla

    def _runs_eagerly(self) -> bool:
        try:
            return bool(self.run_eagerly)
        except AttributeError:  # not compiled yet
            return False

    def _teacher_pass(self) -> TeacherInference:
        """The teacher's inference in its own tf.function (see `teacher_jit_compile`)."""
        teacher = self.teacher
        # An id, not the model: Keras would track another reference as a layer.
        key = (id(teacher), self.teacher_dtype)
        if self._teacher_inference is None or self._teacher_inference_of != key:
            if hasattr(teacher, "logits_at_temperature"):

                def forward(x):
                    return teacher.logits_at_temperature(
                        x, self.temperature, training=False
                    )

            elif self._hint_plan is not None:
                forward = self._hint_plan.teacher_forward  # logits and features
            else:

                def forward(x):
                    return teacher(x, training=False)

            self._teacher_inference = TeacherInference(
                forward_in(forward, teacher, self.teacher_dtype),
                jit_compile=self.teacher_jit_compile,
            )
            self._teacher_inference_of = key
        return self._teacher_inference

    def _soft_term(self, teacher_logits, student_logits):
        """The per-example soft term, and each loss's values when there are several."""
        teacher_logits = kd_losses.as_logits(teacher_logits, self.teacher_outputs)
        student_logits = tf.cast(student_logits, tf.float32)
        parts = [
            loss(teacher_logits, student_logits) for loss, _ in self.distillation_losses
        ]
        if len(parts) == 1:
            return parts[0], []
        # A loss of weight 0 is logged only, so that its NaN cannot spoil the loss.
        soft = tf.add_n(
            [
                weight * values
                for (_, weight), values in zip(self.distillation_losses, parts)
                if weight != 0.0
            ]
        )
        return soft, parts

    def _hard_term(self, y, student_logits):
        if self.student_loss is None:
            raise ValueError(
                "The batch has labels but the Distiller was compiled with loss=None; "
                "compile with a loss to use them."
            )
        sequence = sequences.is_sequence(student_logits)
        # The label checks know (batch, ...) labels; a sequence's time steps are
        # examples to them.
        checks.check_labels(
            _merge_time(y) if sequence else y,
            self.student_loss,
            student_logits.shape[-1],
        )
        if isinstance(self.student_loss, keras.losses.Loss):
            # `call` gives per-example values; like `Loss.__call__`, cast the labels
            # to the loss dtype (integer one-hot labels, say).
            y = tf.cast(y, self.student_loss.dtype)
            values = self.student_loss.call(y, student_logits)
        else:
            values = self.student_loss(y, student_logits)
        return _per_example(values, kept_axes=2 if sequence else 1)

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

    def _compute_terms(self, x, y, sample_weight, training, teacher_required=None):
        """Per-example soft, hard and weighted total losses, plus student logits.

        Eagerly (the checks before `fit`) a failed check raises at once; traced,
        the checks are assertions that the loss terms depend on, the inputs'
        first, so that a NaN input is not reported as a NaN teacher output.
        """
        if teacher_required is None:
            teacher_required = training
        inputs, cached, combined_at = split_batch(x)
        input_checks = checks.check_inputs(inputs)
        if combined_at is not None and self._soft_temperature is not None:
            input_checks.append(checks.check_temperature(combined_at, self.temperature))
        input_checks = [c for c in input_checks if c is not None]
        teacher_logits, teacher_features = None, []
        if cached is not None or self.teacher is not None or teacher_required:
            teacher_logits, teacher_features = self._teacher_logits(inputs, cached)
        if self._hint_plan is not None:
            student_logits, student_features = self._hint_plan.student_outputs(
                inputs, training=training
            )
        else:
            student_logits = self.student(inputs, training=training)
        _check_output_rank(student_logits)
        soft = hard = None
        parts = []
        if teacher_logits is not None:
            with tf.control_dependencies(input_checks):
                teacher_checks = sequences.check_pair(teacher_logits, student_logits)
                teacher_checks += checks.check_teacher_outputs(
                    teacher_logits, student_logits, self.teacher_outputs
                )
            with tf.control_dependencies(input_checks + teacher_checks):
                soft, parts = self._soft_term(teacher_logits, student_logits)
        if y is not None and (self.student_loss is not None or self.soft_weight < 1.0):
            with tf.control_dependencies(input_checks):
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
        if teacher_features:
            with tf.control_dependencies(input_checks):
                hint_values = self._hint_plan.loss_values(
                    teacher_features,
                    student_features,
                    kept_axes=2 if sequences.is_sequence(student_logits) else 1,
                )
            for hint, values in zip(self.hints, hint_values):
                if hint.weight != 0.0:  # a hint of weight 0 is logged only
                    total = total + hint.weight * values
            # Logged after the soft losses' parts, by `_value_trackers`.
            parts = [*parts, *hint_values]
        if sequences.is_sequence(student_logits):
            weight = _sequence_weights(student_logits, sample_weight, total)
        else:
            weight = None
            if sample_weight is not None:
                weight = tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        return soft, hard, total, weight, parts, student_logits

    @staticmethod
    def _weighted(values, weight):
        return values if weight is None else values * weight

    def _update_trackers(self, soft, hard, total, weight, parts, regularization):
        # Per-example values of the objective (Keras' "sum_over_batch_size"
        # convention: the mean of weight * loss). Metric variables sum over
        # replicas, so the logged figures are global means. For sequences the
        # mean is over valid tokens (the trackers' sample weight), which over an
        # epoch gives the mean of every valid token seen.
        tokens = sequences.unscaled_weights(weight)
        valid = None
        if tokens is not None:
            weight, valid = tokens, tf.cast(tf.not_equal(tokens, 0.0), tf.float32)
        self._loss_tracker.update_state(
            self._weighted(total, weight) + regularization, sample_weight=valid
        )
        if soft is not None:
            self.soft_loss_tracker.update_state(
                self._weighted(soft, weight), sample_weight=valid
            )
        for tracker, values in zip(self._value_trackers, parts):
            tracker.update_state(self._weighted(values, weight), sample_weight=valid)
        if hard is not None:
            self.hard_loss_tracker.update_state(
                self._weighted(hard, weight), sample_weight=valid
            )

    def _logs(self, x, y, student_logits, sample_weight, soft, hard, parts):
        if y is not None and self._compile_metrics is not None:
            if sequences.is_sequence(student_logits):
                # Metrics count valid tokens only: the Keras mask on the outputs
                # excludes padding (also padding given as weights of 0) from
                # `metrics`, and `weighted_metrics` get the token weights.
                sample_weight = sequences.token_weights(student_logits, sample_weight)
                student_logits = sequences.with_mask(student_logits, sample_weight != 0.0)
            self._compile_metrics.update_state(y, student_logits, sample_weight)
        logs = {"loss": self._loss_tracker.result()}
        if soft is not None:
            logs["soft_loss"] = self.soft_loss_tracker.result()
        for tracker in self._value_trackers[: len(parts)]:
            logs[tracker.name] = tracker.result()
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
            soft, hard, total, weight, parts, student_logits = self._compute_terms(
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
        variables = self._trained_variables()
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self._update_trackers(soft, hard, total, weight, parts, regularization)
        return self._logs(x, y, student_logits, sample_weight, soft, hard, parts)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        # "never" scores the student alone where there is a loss to score it on;
        # unlabeled data (or loss=None) is still scored against the teacher.
        student_only = (
            self.validation_teacher == "never"
            and y is not None
            and self.student_loss is not None
        )
        self._in_test_step = "student_only" if student_only else True
        try:
            soft, hard, total, weight, parts, student_logits = self._compute_terms(
                x, y, sample_weight, training=False
            )
        finally:
            self._in_test_step = False
        self._update_trackers(soft, hard, total, weight, parts, self._regularization())
        return self._logs(x, y, student_logits, sample_weight, soft, hard, parts)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, after checking the data (see `check_data`).

        Also checks `validation_data` before the first epoch, and stops with a
        `NonFiniteLossError` at the end of an epoch whose loss (or `val_loss`)
        is NaN/Inf, before later callbacks (a `ModelCheckpoint`, say) see it.

        Raises:
            ValueError, TypeError: from `check_data`, from the checks in the
                compiled step, or for `epochs` < 1.
            NonFiniteLossError: when the training or validation loss becomes
                NaN/Inf.
        """
        bound = _FIT_SIGNATURE.bind(self, *args, **kwargs)
        arguments = {**_FIT_DEFAULTS, **bound.arguments}
        epochs = arguments["epochs"]
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(
                f"`epochs` must be a whole number >= 1, got {epochs!r}: with fewer "
                "fit would return without training."
            )
        self._check_once(
            arguments["x"],
            arguments["y"],
            arguments["sample_weight"],
            arguments["batch_size"],
            training=True,
        )
        validation = arguments["validation_data"]
        if validation is not None:
            self._check_once(
                *keras.utils.unpack_x_y_sample_weight(validation),
                arguments["validation_batch_size"] or arguments["batch_size"],
                training=False,
                origin="validation_data",
            )
        callbacks = arguments["callbacks"]
        if not isinstance(callbacks, keras.callbacks.CallbackList):
            bound.arguments["callbacks"] = [_FiniteLossGuard(), *(callbacks or [])]
        with checks.plain_errors():
            return super().fit(*bound.args[1:], **bound.kwargs)

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate`, after checking the data (see `check_data`).

        What the teacher costs here, and what each logged figure means, depends
        on `validation_teacher` (see the class docstring). `fit` validates
        through this method, so the same holds for its `val_*` figures.
        """
        if not kwargs.get("_use_cached_eval_dataset"):  # inside fit: checked there
            arguments = {
                **_EVALUATE_DEFAULTS,
                **_EVALUATE_SIGNATURE.bind(self, *args, **kwargs).arguments,
            }
            self._check_once(
                arguments["x"],
                arguments["y"],
                arguments["sample_weight"],
                arguments["batch_size"],
                training=False,
            )
        self._prepare_validation_memory()
        with checks.plain_errors():
            return super().evaluate(*args, **kwargs)

    def _prepare_validation_memory(self) -> None:
        """Creates the memory of validation outputs, or empties it if stale.

        Remembered outputs belong to the teacher's weights (and, for an
        arithmetic ensemble, the temperature) they were computed with: a
        change of either (or another teacher object) forgets them all. Costs
        one SHA-256 of the teacher's weights per call while outputs are held.
        """
        if self.validation_teacher != "reuse" or self.teacher is None:
            return
        if self._hint_plan is not None:  # features are not remembered: run the teacher
            return
        if self._validation_memory is None:
            classes = output_classes_of(self.teacher)
            if classes is None:
                return  # sequence or unknown outputs: the teacher runs every time
            with self.distribute_strategy.scope():
                self._validation_memory = TeacherOutputMemory(classes)
            self.test_function = None  # traced without the memory: trace again
        state = (
            id(self.teacher),
            float(self.temperature),
            self.teacher_dtype,
            weights_digest(self.teacher),
        )
        if state != self._validation_memory_state:
            self._validation_memory.clear()
            self._validation_memory_state = state

    def train_on_batch(self, *args, **kwargs):
        with checks.plain_errors():
            return super().train_on_batch(*args, **kwargs)

    def test_on_batch(self, *args, **kwargs):
        with checks.plain_errors():
            return super().test_on_batch(*args, **kwargs)

    def check_data(
        self,
        x,
        y=None,
        sample_weight=None,
        *,
        batch_size: int | None = None,
        training: bool = True,
    ) -> None:
        """Checks data the way `fit` and `evaluate` do first, without training.

        Runs eagerly, whatever the compile mode: arrays are checked whole (the
        same number of examples in each, none empty, no NaN/Inf in inputs,
        cached teacher outputs, labels or weights, labels of a number type,
        class ids that are whole numbers in `[0, classes)` for a sparse loss),
        then the first batch goes through the teacher and the student (NaN/Inf
        in the teacher's outputs, probabilities given as logits, different
        class counts). A `tf.data.Dataset` or `keras.utils.PyDataset` is checked
        by its first batch only. Python generators are not checked here (the
        compiled step's checks still run on every batch without XLA). Nothing
        is trained; the student and its BatchNormalization statistics are
        unchanged.

        Args:
            x: Inputs as for `fit`: arrays (or a dict from
                `keras_kd.batch.make_batch`), a `tf.data.Dataset` or a
                `PyDataset`.
            y: Labels (arrays), or `None`.
            sample_weight: Per-example weights, or `None`.
            batch_size: Rows of arrays used as the first batch (default 32).
            training: Whether the data is for training, which needs teacher
                outputs (a teacher or cached logits); evaluation does not.

        Raises:
            ValueError: naming the problem and the fix.
            TypeError: for labels that are strings.

        Warns:
            UserWarning: when every label of a training set is the same class.

        Example:

        >>> import keras, numpy as np
        >>> def net(seed):
        ...     keras.utils.set_random_seed(seed)
        ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> distiller = Distiller(student=net(0), teacher=net(1))
        >>> distiller.compile(optimizer="adam")
        >>> x = np.random.default_rng(0).normal(size=(12, 4)).astype("float32")
        >>> distiller.check_data(x, np.arange(12) % 3)  # fine: returns None
        >>> try:
        ...     distiller.check_data(x, np.arange(12) % 3 + 3)  # ids 3-5, 3 classes
        ... except ValueError as error:
        ...     print("outside [0, 3)" in str(error))
        True
        """
        whole = checks.check_arrays(x, y, sample_weight)
        batch = checks.read_first_batch(x, y, sample_weight, batch_size or 32)
        if batch is None:
            return  # a generator or another source that cannot be read twice
        checks.check_batch_sizes(dict(zip(("inputs", "labels", "sample_weight"), batch)))
        *_, student_logits = self._compute_terms(
            *batch, training=False, teacher_required=training
        )
        if whole and y is not None and self.student_loss is not None:
            labels = tf.convert_to_tensor(np.asarray(y))
            if sequences.is_sequence(student_logits):
                labels = _merge_time(labels)  # each time step is an example here
            checks.check_labels(labels, self.student_loss, student_logits.shape[-1])
            if training:
                checks.warn_if_single_class(y, self.student_loss)

    def _check_once(self, x, y, sample_weight, batch_size, training, origin=None):
        """`check_data`, skipped for data objects this Distiller already checked."""
        leaves = keras.tree.flatten([a for a in (x, y, sample_weight) if a is not None])
        if leaves and self._checked_data.seen(leaves):
            return
        try:
            self.check_data(
                x, y, sample_weight, batch_size=batch_size, training=training
            )
        except (ValueError, TypeError) as error:
            if origin is None:
                raise
            raise type(error)(f"In `{origin}`: {error}") from None
        self._checked_data.add(leaves)

    def get_config(self):
        return {
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": None if self.teacher is None else teacher_config(self.teacher),
            "temperature": self.temperature,
            "soft_weight": self.soft_weight,
            "teacher_outputs": self.teacher_outputs,
            "distillation_loss": _serialize_distillation_loss(self.distillation_loss),
            "validation_teacher": self.validation_teacher,
            "teacher_jit_compile": self.teacher_jit_compile,
            "teacher_dtype": self.teacher_dtype,
            "hints": [keras.saving.serialize_keras_object(h) for h in self.hints],
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
                teacher_config(teacher), custom_objects=custom_objects
            )
        if "alpha" in config:  # saved by keras_kd 0.1, whose alpha was soft_weight
            config["soft_weight"] = config.pop("alpha")
        if "distillation_loss" in config:
            config["distillation_loss"] = _deserialize_distillation_loss(
                config["distillation_loss"], custom_objects
            )
        config["hints"] = [
            keras.saving.deserialize_keras_object(h, custom_objects=custom_objects)
            for h in config.get("hints", [])
        ]
        return cls(student=student, teacher=teacher, **config)


def teacher_config(teacher) -> dict:
    """A teacher's Keras config without its `compile()` settings.

    A teacher is not trained where it is saved (in a `Distiller`, an ensemble):
    reloaded compiled, it would get a new optimizer without slots, and Keras
    would warn on every `load_model` that it skips the saved optimizer's
    variables. Compile it again to train it further. The saved file still
    holds the teacher's optimizer variables (Keras saves what the live model
    has); they are not read back.

    Args:
        teacher: A `keras.Model` (or `keras_kd.TeacherEnsemble`), or a config
            already serialized (as files of keras-kd 0.2 and earlier hold it).

    Returns:
        `keras.saving.serialize_keras_object(teacher)` (or the given config)
        without `"compile_config"`.

    Example:

    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> teacher.compile("adam", "mse")
    >>> "compile_config" in teacher_config(teacher)
    False
    """
    config = teacher if isinstance(teacher, dict) else keras.saving.serialize_keras_object(teacher)
    return {key: value for key, value in config.items() if key != "compile_config"}


def _serialize_distillation_loss(loss):
    """Strings as they are, loss objects as Keras configs, pairs as lists."""
    if isinstance(loss, str):
        return loss
    if isinstance(loss, list | tuple):
        return [_serialize_distillation_loss(item) for item in loss]
    if isinstance(loss, kd_losses.DistillationLoss):
        return keras.saving.serialize_keras_object(loss)
    return loss  # a weight


def _deserialize_distillation_loss(config, custom_objects):
    if isinstance(config, list):
        return [_deserialize_distillation_loss(item, custom_objects) for item in config]
    if isinstance(config, dict):
        return keras.saving.deserialize_keras_object(
            config, custom_objects=custom_objects
        )
    return config


keras.saving.register_keras_serializable(package="keras_kd")(Distiller)

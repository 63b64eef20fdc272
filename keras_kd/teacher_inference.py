"""A teacher's inference pass: compiled on its own, and remembered per example.

Two costs of online distillation that do not depend on the student:

- **Compilation.** `TeacherInference` wraps a teacher's forward pass in its own
  `tf.function`, compiled with XLA (`jit_compile=True`) when asked, whatever
  the student's step uses. The `Distiller` calls it inside `train_step` and
  `test_step`; `keras_kd.cache.build_teacher_cache` calls it over the transfer
  set.
- **Validation.** `TeacherOutputMemory` keeps the teacher's outputs of the
  examples it has seen, keyed by a 64-bit fingerprint of each example's input
  bytes, so that evaluating the same validation examples again (in any order,
  in any batching) does not run the teacher again.

Decisions, documented here once:

- **When XLA compiles the teacher (`"auto"`).** On a GPU or TPU, where Keras'
  own `jit_compile="auto"` picks XLA too. On a CPU it depends on the teacher
  and on what runs beside it, so it is decided by measurement where a
  measurement predicts the outcome:
  - **The cache build** runs the teacher alone: it times its own first
    batches without and with XLA and keeps XLA when at least 3% faster
    (`XLA_MIN_GAIN`), unless a batch takes under 50 ms without XLA
    (`MEASURE_FROM_SECONDS`: compiling would cost more than it could save).
    Alone, on the idle 2-core CPU this project runs on
    (`benchmarks/imagenet_throughput.py --mode teacher-xla`, interleaved
    rounds), ResNet-50 at 112 px, batch 64, ran 1.13x faster under XLA, an
    MNIST MLP 784-1200-1200-10 at batch 256 0.76x; under heavy load every
    teacher measured ran slower (ResNet-50 0.83-0.85x, a two-layer MNIST CNN
    0.45-0.6x): no fixed rule by layer type holds.
  - **The Distiller's training step** runs the teacher beside the student,
    and there XLA did not pay even for the teacher it speeds up alone: in
    the Imagenette online benchmark (ResNet-50 teacher, MobileNetV2 x0.5
    student, 112 px, batch 64; `benchmarks/RESULTS.md`) epochs 2 and 3 took
    264.3 s and 264.0 s with the teacher under XLA against 247.2 s and
    264.1 s without. So `"auto"` leaves XLA off in the step on a CPU;
    `teacher_jit_compile=True` turns it on.
- **A teacher XLA cannot compile.** With `True` that is a `ValueError` naming
  the reason; with `"auto"` a warning, and the teacher runs without XLA. The
  check lowers the pass to XLA's HLO for a batch of one, without running it,
  the first time the teacher is needed (for `Distiller.fit` and `evaluate`,
  while they check the first batch eagerly).
- **Fingerprints.** `tf.fingerprint` (FarmHash64) of the bytes of each
  example's input tensors (all leaves of a structure, in order). Two different
  inputs share a key with probability about `n^2 / 2^65` for `n` remembered
  examples (3e-8 for a million). The same bytes always give the same key, so
  a reshuffled or rebatched validation set is recognised example by example,
  and any change to an input (preprocessing, augmentation, dtype) is a new
  example that runs the teacher.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

TEACHER_JIT_COMPILE = ("auto", True, False)
# What a Distiller does with its teacher on validation data (see its docstring).
VALIDATION_TEACHER = ("reuse", "always", "never")

# Errors TensorFlow raises when XLA cannot compile a function.
_XLA_ERRORS = (
    tf.errors.InvalidArgumentError,
    tf.errors.UnimplementedError,
    tf.errors.InternalError,
    ValueError,
)


def validate_teacher_jit_compile(value, option: str = "teacher_jit_compile") -> str | bool:
    """Returns `value` if it is `"auto"`, `True` or `False`, else raises.

    Args:
        value: The `teacher_jit_compile` setting.
        option: The setting's name, for the message (`"jit_compile"` for
            `build_teacher_cache`).

    Returns:
        `value`, unchanged.

    Raises:
        ValueError: for anything else.

    Example:

    >>> validate_teacher_jit_compile("auto")
    'auto'
    """
    if value is True or value is False or value == "auto":
        return value
    raise ValueError(
        f"`{option}` must be 'auto', True or False, got {value!r}. 'auto' uses XLA "
        "for the teacher's inference on a GPU or TPU (and in a cache build on a CPU "
        "when it measures faster); True or False force it."
    )


def validate_validation_teacher(value) -> str:
    """Returns `value` if it is one of `VALIDATION_TEACHER`, else raises.

    Args:
        value: The `validation_teacher` setting.

    Returns:
        `value`, unchanged.

    Raises:
        ValueError: for anything else.

    Example:

    >>> validate_validation_teacher("reuse")
    'reuse'
    """
    if isinstance(value, str) and value in VALIDATION_TEACHER:
        return value
    raise ValueError(
        f"`validation_teacher` must be one of {VALIDATION_TEACHER}, got {value!r}. "
        "'reuse' runs the teacher once per validation example and remembers its "
        "outputs, 'always' runs it on every validation batch, 'never' does not run "
        "it (validation then reports the student's own loss)."
    )


def xla_by_default() -> bool:
    """Whether `"auto"` compiles a teacher's inference with XLA here.

    True when TensorFlow sees a GPU or TPU (where Keras' own `jit_compile="auto"`
    also picks XLA); False on a CPU, where only the cache build tries XLA,
    timing it (see the module docstring).

    Returns:
        Whether to use XLA by default.

    Example:

    >>> xla_by_default() in (True, False)
    True
    """
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


# "auto" on a CPU, in a cache build: XLA is not tried for a pass faster than
# this (seconds per batch without XLA) ...
MEASURE_FROM_SECONDS = 0.05
# ... and kept when it is at least this much faster.
XLA_MIN_GAIN = 1.03


def _static_spec(inputs):
    """TensorSpecs of `inputs` with a batch of 1, or None if a shape is unknown."""
    specs = []
    for leaf in tf.nest.flatten(inputs):
        shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
        if shape is None or dtype is None:
            return None
        shape = tf.TensorShape(shape)
        if shape.rank is None or shape.rank == 0:
            return None
        rest = shape.as_list()[1:]
        if any(d is None for d in rest):
            return None
        specs.append(tf.TensorSpec([1, *rest], tf.as_dtype(dtype)))
    return tf.nest.pack_sequence_as(inputs, specs)


class TeacherInference:
    """A teacher's forward pass in its own `tf.function`, with or without XLA.

    Args:
        forward: `forward(inputs) -> outputs`, the teacher in inference mode
            (e.g. `lambda x: teacher(x, training=False)`).
        jit_compile: `"auto"`, `True` or `False` (see the module docstring).
        name: How to name the model in messages.
        option: The name of the user's setting, for messages.

    Raises:
        ValueError: for an invalid `jit_compile`.

    Example:

    >>> import keras
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> inference = TeacherInference(lambda x: teacher(x, training=False),
    ...                              jit_compile=False)
    >>> logits = inference(tf.ones((2, 4)))
    >>> tuple(logits.shape), inference.uses_xla
    ((2, 3), False)
    """

    def __init__(
        self,
        forward: Callable,
        *,
        jit_compile: str | bool = "auto",
        name: str = "teacher",
        option: str = "teacher_jit_compile",
    ):
        self.jit_compile = validate_teacher_jit_compile(jit_compile, option)
        self.name = name
        self.option = option
        self._forward = forward
        self._wanted = jit_compile is True or (jit_compile == "auto" and xla_by_default())
        # None until the XLA pass is known to compile (True) or not (False).
        self._xla_compiles: bool | None = None
        self._plain = tf.function(forward, reduce_retracing=True)
        self._xla = (
            tf.function(forward, jit_compile=True, reduce_retracing=True)
            if self.jit_compile is not False
            else None
        )

    @property
    def uses_xla(self) -> bool | None:
        """True or False once decided; None while XLA is wanted but not yet checked."""
        return self._xla_compiles if self._wanted else False

    @property
    def xla_compiles(self) -> bool | None:
        """Whether XLA compiles the pass: None until tried (or never tried)."""
        return self._xla_compiles

    @property
    def may_try_xla(self) -> bool:
        """Whether XLA is off by default only (`"auto"` on a CPU) and not known
        to fail, so a caller that times both passes (the cache build) may try
        it with `function(..., xla=True)`."""
        return (
            self.jit_compile == "auto" and not self._wanted and self._xla_compiles is not False
        )

    def _refuse(self, error: Exception) -> None:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reason = first_line[:400]
        if self.jit_compile is True:
            raise ValueError(
                f"XLA cannot compile the {self.name}'s inference "
                f"({self.option}=True): {type(error).__name__}: {reason}. "
                f"Pass {self.option}=False (or 'auto', which falls back with a "
                "warning)."
            ) from None
        warnings.warn(
            f"XLA cannot compile the {self.name}'s inference ({reason}); it runs "
            f"without XLA. Pass {self.option}=False to skip this attempt.",
            stacklevel=3,
        )
        self._xla_compiles = False

    def _decide(self, inputs) -> None:
        """Finds out once whether XLA compiles the forward pass (for `"auto"`/`True`).

        Lowers the pass to XLA's HLO for a batch of one, without running it;
        inputs whose shape is not static beyond the batch are not checked
        (then XLA compiles at run time, as asked).
        """
        if self._xla_compiles is not None:
            return
        spec = _static_spec(inputs)
        if spec is None:
            self._xla_compiles = True
            return
        with tf.init_scope():
            try:
                self._xla.experimental_get_compiler_ir(spec)(stage="hlo")
            except _XLA_ERRORS as error:
                self._refuse(error)
                return
        self._xla_compiles = True

    def __call__(self, inputs, *, outer_xla: bool = False):
        """The teacher's outputs for a batch, inside a model's step.

        Eagerly (the data checks before `fit`) the pass runs eagerly, after
        deciding whether XLA compiles it; traced, it is the XLA-compiled
        function, or inline without XLA.

        Args:
            inputs: A batch the teacher takes.
            outer_xla: Whether the caller is itself compiled with XLA; the
                forward pass then runs inline (XLA compiles it with the rest).

        Returns:
            The outputs of `forward`.

        Raises:
            ValueError: when `jit_compile=True` and XLA cannot compile it.
        """
        if outer_xla or not self._wanted or self._xla_compiles is False:
            return self._forward(inputs)
        self._decide(inputs)
        if tf.executing_eagerly() or not self._xla_compiles:
            return self._forward(inputs)
        return self._xla(inputs)

    def function(self, inputs, *, xla: bool | None = None):
        """The teacher's outputs for a batch, from a loop run eagerly (a cache build).

        Args:
            inputs: A batch the teacher takes.
            xla: `None` (default) follows `jit_compile`; `True` or `False`
                overrides it (`True` only when `jit_compile` is not `False`;
                a teacher XLA cannot compile then runs without it, as with
                `"auto"`).

        Returns:
            The outputs of `forward`, from its compiled `tf.function` (with XLA
            when on).

        Raises:
            ValueError: when `jit_compile=True` and XLA cannot compile it.
        """
        if xla is None:
            xla = self._wanted
        if xla and self._xla is not None:
            self._decide(inputs)
            if self._xla_compiles:
                try:
                    return self._xla(inputs)
                except _XLA_ERRORS as error:  # failed to compile or run
                    self._refuse(error)
        return self._plain(inputs)


def output_classes_of(model) -> int | None:
    """The class count of a model with `(batch, classes)` outputs, else None.

    None for outputs of another rank (sequences), several outputs, or a shape
    the model does not declare. An ensemble answers for its first member.

    Args:
        model: A `keras.Model` or `keras_kd.TeacherEnsemble`.

    Returns:
        The size of the last output axis, or None.

    Example:

    >>> output_classes_of(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    3
    """
    members = getattr(model, "members", None)
    if members:
        return output_classes_of(members[0])
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError, TypeError):
        return None
    if not isinstance(shape, tuple) or len(shape) != 2 or not isinstance(shape[-1], int):
        return None
    return shape[-1]


def weights_digest(model) -> str:
    """A SHA-256 of a model's weight values (and their shapes and dtypes), in order.

    Args:
        model: A `keras.Model` (or any layer).

    Returns:
        The hexadecimal digest; it changes when any weight changes.

    Example:

    >>> len(weights_digest(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])))
    64
    """
    digest = hashlib.sha256()
    for weight in model.weights:
        array = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def input_fingerprints(inputs) -> tf.Tensor:
    """One int64 key per example: FarmHash64 of the bytes of its input tensors.

    Args:
        inputs: A tensor (examples on axis 0) or a structure of them.

    Returns:
        Int64 tensor `(examples,)`.

    Example:

    >>> a = input_fingerprints(tf.constant([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0]]))
    >>> bool(a[0] == a[1]), bool(a[0] == a[2])
    (True, False)
    """
    leaves = [tf.convert_to_tensor(leaf) for leaf in tf.nest.flatten(inputs)]
    prints = [tf.fingerprint(leaf) for leaf in leaves]
    joined = prints[0] if len(prints) == 1 else tf.fingerprint(tf.concat(prints, axis=1))
    return tf.reshape(tf.bitcast(joined, tf.int64), [-1])


class TeacherOutputMemory:
    """Teacher outputs remembered per example, keyed by `input_fingerprints`.

    Lives on the CPU in a `tf.lookup.experimental.MutableHashTable` (usable in
    `tf.function`s and by every replica of a `tf.distribute` strategy, but not
    inside an XLA-compiled step). Holds at most `max_bytes` of outputs (float32
    plus an 8-byte key per example); examples beyond that are not remembered
    and run the teacher each time.

    Args:
        classes: Size of the teacher's output (its last axis).
        max_bytes: Memory budget (default 256 MiB: 6.6 million examples of 10
            classes, 67,000 of 1000).

    Example:

    >>> memory = TeacherOutputMemory(classes=3)
    >>> runs = []
    >>> def run_teacher(x):
    ...     runs.append(len(x))
    ...     return tf.random.normal((len(x), 3), seed=0)
    >>> x = tf.reshape(tf.range(8, dtype=tf.float32), (4, 2))
    >>> first = memory.outputs(x, run_teacher)
    >>> again = memory.outputs(x, run_teacher)  # answered from memory
    >>> memory.size, runs, bool(tf.reduce_all(first == again))
    (4, [4], True)
    """

    def __init__(self, classes: int, max_bytes: int = 256 * 2**20):
        self.classes = int(classes)
        self.capacity = max(1, int(max_bytes) // (4 * self.classes + 8))
        self._table = tf.lookup.experimental.MutableHashTable(
            tf.int64, tf.float32, default_value=tf.fill([self.classes], np.nan)
        )

    @property
    def size(self) -> int:
        """Examples remembered now."""
        return int(self._table.size())

    def clear(self) -> None:
        """Forgets every remembered output."""
        keys, _ = self._table.export()
        if int(tf.size(keys)):
            self._table.remove(keys)

    def outputs(self, inputs, run_teacher: Callable) -> tf.Tensor:
        """The teacher's float32 outputs for `inputs`: remembered, or computed.

        A batch whose examples are all remembered is answered from memory;
        otherwise `run_teacher(inputs)` runs on the whole batch and its outputs
        are remembered (while the budget allows).

        Args:
            inputs: A batch of the teacher's inputs.
            run_teacher: `run_teacher(inputs) -> (batch, classes)` outputs.

        Returns:
            Float32 tensor `(batch, classes)`.
        """
        keys = input_fingerprints(inputs)
        found = tf.ensure_shape(self._table.lookup(keys), [None, self.classes])
        # A remembered output is finite (NaN is the "absent" value; a teacher
        # output with NaN is never answered from memory, so its check still runs).
        known = tf.reduce_all(tf.math.is_finite(found))

        def compute():
            computed = tf.cast(run_teacher(inputs), tf.float32)
            room = self._table.size() + tf.size(keys, out_type=tf.int64) <= self.capacity

            def remember():
                with tf.control_dependencies([self._table.insert(keys, computed)]):
                    return tf.identity(computed)

            return tf.cond(room, remember, lambda: computed)

        return tf.cond(known, lambda: found, compute)


__all__ = [
    "TEACHER_JIT_COMPILE",
    "VALIDATION_TEACHER",
    "TeacherInference",
    "TeacherOutputMemory",
    "input_fingerprints",
    "output_classes_of",
    "validate_teacher_jit_compile",
    "validate_validation_teacher",
    "weights_digest",
    "xla_by_default",
]

"""Checks of training data and teacher outputs, written once for two settings.

Each check is a few TensorFlow ops. Run eagerly (on whole arrays, or on the
first batch before Keras compiles its step) a failed check raises a
`ValueError` at once and names the first offending example. Traced into a
compiled step it becomes a `tf.debugging.Assert` whose message carries a
marker; `plain_errors` turns the `InvalidArgumentError` it raises into the same
`ValueError`. XLA (`jit_compile=True`) compiles assertions away, so the eager
run is the one that holds whatever the compile mode.
"""

from __future__ import annotations

import contextlib
import re
import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_kd.batch import TEACHER_LOGITS

MARKER = "[keras_kd check] "

# Rows of a large array scanned at once for NaN/Inf (bounds the temporary memory).
_SCAN_ELEMENTS = 1 << 22


def require(ok, message: str):
    """Raises `ValueError(message)` now (eager) or returns an assertion (traced).

    Args:
        ok: Scalar boolean tensor (or bool).
        message: What is wrong and what to do instead.

    Returns:
        `None` when executing eagerly, else the `tf.debugging.Assert` op, to be
        used as a control dependency of what needs the check.

    Raises:
        ValueError: when executing eagerly and `ok` is false.
    """
    if tf.executing_eagerly():
        if not bool(ok):
            raise ValueError(message)
        return None
    return tf.debugging.Assert(ok, [MARKER + message])


# TensorFlow's error for a sparse label out of range (CPU kernels).
_TF_LABEL_RANGE = re.compile(
    r"Received a label value of (-?\d+) which is outside the valid range of \[0, (\d+)\)"
)


@contextlib.contextmanager
def plain_errors():
    """Turns a failed traced check (or TensorFlow's label range error) into a `ValueError`."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        message = error.message
        if MARKER in message:
            text = message.split(MARKER, 1)[1]
            text = text.split("\n", 1)[0].rstrip("'\" ]").replace("\\'", "'")
            raise ValueError(text) from None
        label = _TF_LABEL_RANGE.search(message)
        if label:
            raise ValueError(
                labels_outside_message(int(label[1]), int(label[2]))
            ) from None
        raise


def _first_row(bad) -> int:
    """Index of the first example (leading axis) where `bad` is true."""
    rows = tf.reduce_any(tf.reshape(bad, [tf.shape(bad)[0], -1]), axis=1)
    return int(tf.where(rows)[0, 0])


def _at(row) -> str:
    return "" if row is None else f" (first at example {row})"


def non_finite_message(what: str, row: int | None = None) -> str:
    """The message for NaN/Inf in data (`what`: e.g. "The inputs `x`")."""
    return (
        f"{what} hold NaN or Inf{_at(row)}, so the student's weights would become "
        "NaN. Drop or repair those examples before training (e.g. keep the rows "
        "where np.isfinite(x) holds everywhere)."
    )


def teacher_non_finite_message(row: int | None = None) -> str:
    """The message for NaN/Inf in teacher outputs (run online or cached)."""
    return (
        f"The teacher's outputs contain NaN or Inf{_at(row)} although its inputs "
        "are finite, so the soft targets are undefined. Check the teacher "
        "(evaluate it alone) or the cached teacher outputs."
    )


def check_finite(values, message) -> list:
    """Checks that a float tensor holds no NaN/Inf.

    Args:
        values: A tensor; integer and other non-float tensors pass.
        message: `row -> str` (row `None` when traced).

    Returns:
        A list of assertions (empty when eager or nothing to check).

    Raises:
        ValueError: eagerly, naming the first example with NaN/Inf.
    """
    if not values.dtype.is_floating or values.shape.rank == 0:
        return []
    finite = tf.math.is_finite(values)
    ok = tf.reduce_all(finite)
    if tf.executing_eagerly():
        if not bool(ok):
            raise ValueError(message(_first_row(tf.logical_not(finite))))
        return []
    return [require(ok, message(None))]


def check_inputs(inputs, what: str = "The inputs") -> list:
    """Checks every float tensor in the student's inputs for NaN/Inf."""
    checks = []
    for path, value in keras.tree.flatten_with_path(inputs):
        if tf.is_tensor(value):
            label = what + "".join(f"[{key!r}]" for key in path)
            checks += check_finite(
                value, lambda row, label=label: non_finite_message(label, row)
            )
    return checks


def _ignore_class(loss):
    kwargs = getattr(loss, "_fn_kwargs", None) or {}
    return kwargs.get("ignore_class", getattr(loss, "ignore_class", None))


def check_labels(y, loss, classes: int | None) -> None:
    """Checks labels against the hard-label loss and the student's class count.

    The type and shape checks hold at trace time too. The value checks run
    only eagerly (on whole arrays and first batches, see
    `Distiller.check_data`): in the compiled step TensorFlow's own error for a
    class id out of range is translated by `plain_errors`, and NaN labels make
    the loss NaN, which `fit` reports at the end of the epoch.

    Args:
        y: Label tensor.
        loss: The Distiller's hard-label loss object.
        classes: The student's number of outputs (static), or `None`.

    Raises:
        TypeError: for string labels.
        ValueError: for one-hot labels with a sparse loss and the reverse, and,
            eagerly, for NaN/Inf, fractional or out-of-range class ids.
    """
    if y.dtype == tf.string:
        raise TypeError(
            "The labels are strings; the Distiller needs integer class ids (or "
            "one-hot rows). Map them first, e.g. names, y = np.unique(y, "
            "return_inverse=True), or with keras.layers.StringLookup."
        )
    rank = y.shape.rank
    sparse = isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
    if sparse and rank is not None and rank >= 2 and y.shape[-1] not in (1, None):
        raise ValueError(
            f"Labels of shape {tuple(y.shape)} look one-hot, but the loss is "
            "sparse categorical cross-entropy (integer labels). Pass integer class "
            "ids, or compile with loss='categorical_crossentropy'."
        )
    if isinstance(loss, keras.losses.CategoricalCrossentropy):
        if rank is not None and (rank < 2 or y.shape[-1] != classes):
            raise ValueError(
                f"Labels of shape {tuple(y.shape)} are not one-hot over {classes} "
                "classes, but the loss is categorical cross-entropy. Pass one-hot "
                "labels or compile with loss='sparse_categorical_crossentropy'."
            )
    if not tf.executing_eagerly():
        return
    check_finite(y, lambda row: non_finite_message("The labels", row))
    if sparse and classes is not None and y.dtype != tf.bool:
        _check_class_ids(y, loss, classes)


def labels_outside_message(value, classes: int, row: int | None = None) -> str:
    """The message for a class id outside `[0, classes)`."""
    return (
        f"The labels hold the class id {value}{_at(row)} outside [0, {classes}): the "
        f"student has {classes} outputs, one per class, so labels must be 0 to "
        f"{classes - 1}. Map the labels to that range (e.g. np.unique(y, "
        "return_inverse=True)) or give the student and teacher one output per class."
    )


def _check_class_ids(y, loss, classes: int) -> None:
    """Eagerly: sparse labels are whole numbers in [0, classes) (or ignored)."""
    if y.dtype.is_floating:
        fractional = tf.not_equal(y, tf.round(y))
        if bool(tf.reduce_any(fractional)):
            row = _first_row(fractional)
            raise ValueError(
                f"The labels hold {float(tf.reshape(y[row], [-1])[0])}{_at(row)}, but "
                f"sparse categorical cross-entropy needs whole class ids in [0, "
                f"{classes}) (it would truncate them). Give integer labels, or "
                "one-hot / soft labels with loss='categorical_crossentropy'."
            )
    outside = tf.logical_or(y < 0, y >= classes)
    ignored = _ignore_class(loss)
    if ignored is not None:
        outside = tf.logical_and(outside, tf.not_equal(y, tf.cast(ignored, y.dtype)))
    if bool(tf.reduce_any(outside)):
        row = _first_row(outside)
        value = tf.reshape(y[row], [-1])[0].numpy().item()
        raise ValueError(labels_outside_message(value, classes, row))


def check_teacher_outputs(teacher_logits, student_logits, kind: str) -> list:
    """Static class-count check, and NaN/Inf or probabilities given as logits.

    Args:
        teacher_logits: Float tensor `(batch, classes)`.
        student_logits: The student's logits for the same batch.
        kind: The Distiller's `teacher_outputs` (`"logits"` or
            `"probabilities"`).

    Returns:
        A list of assertions (empty when eager).

    Raises:
        ValueError: for a class-count mismatch, and eagerly for the value checks.
    """
    if teacher_logits.shape[-1] != student_logits.shape[-1]:
        raise ValueError(
            f"Teacher and student output shapes differ: teacher "
            f"{tuple(teacher_logits.shape)}, student {tuple(student_logits.shape)}. "
            "Both must give one logit per class."
        )
    checks = check_finite(teacher_logits, teacher_non_finite_message)
    if kind == "logits" and teacher_logits.shape[-1] != 1:
        sums = tf.reduce_sum(teacher_logits, axis=-1)
        looks_like_probabilities = tf.reduce_all(
            (teacher_logits >= 0.0) & (teacher_logits <= 1.0)
        ) & tf.reduce_all(tf.abs(sums - 1.0) < 1e-3)
        with tf.control_dependencies(checks):
            checks.append(require(
                tf.logical_not(looks_like_probabilities),
                "The teacher's outputs look like probabilities (each row is in "
                "[0, 1] and sums to 1) but teacher_outputs='logits'. Pass "
                "teacher_outputs='probabilities' or give logits (remove the "
                "teacher's softmax, also one hidden behind another layer).",
            ))
    return [c for c in checks if c is not None]


def check_temperature(combined_at, temperature: float):
    """A cached arithmetic ensemble must be replayed at the Distiller's temperature."""
    combined_at = tf.cast(combined_at, tf.float32)
    return require(
        tf.reduce_all(tf.abs(combined_at - temperature) < 1e-6),
        "The cached ensemble was combined at another temperature than the "
        f"Distiller's temperature={temperature:g}. Pass the Distiller's "
        "temperature to TeacherCache.dataset(temperature=...).",
    )


def check_batch_sizes(named: dict) -> None:
    """Eagerly: every part of one batch has the same number of examples."""
    sizes = {}
    for name, structure in named.items():
        for value in keras.tree.flatten(structure):
            if tf.is_tensor(value) and value.shape.rank:
                sizes.setdefault(name, int(tf.shape(value)[0]))
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name} {size}" for name, size in sizes.items())
        raise ValueError(
            f"The parts of a batch have different numbers of examples ({listed}); "
            "every part needs one row per example."
        )


def is_array(value) -> bool:
    """An array-like with a leading example axis (numpy, tensor, pandas, ...)."""
    shape = getattr(value, "shape", None)
    return shape is not None and len(shape) >= 1 and not isinstance(value, tf.data.Dataset)


def array_leaves(structure) -> list | None:
    """The arrays in `structure`, or `None` if it holds something else."""
    if structure is None:
        return []
    if isinstance(structure, list | tuple) and structure and all(
        np.isscalar(item) for item in structure
    ):
        return None  # a plain list of numbers: left to Keras
    leaves = keras.tree.flatten(structure)
    return leaves if leaves and all(is_array(leaf) for leaf in leaves) else None


def _named_leaves(name: str, structure) -> list[tuple[str, object]]:
    """`[(label, array)]`: "`x`" for a single array, "`x['image']`" in a dict."""
    leaves = keras.tree.flatten_with_path(structure)
    return [
        (f"`{name}{''.join(f'[{key!r}]' for key in path)}`", leaf) for path, leaf in leaves
    ]


def check_lengths(named: dict) -> int:
    """Every array in `named` ({"x": structure, ...}) has the same, non-zero length.

    Returns:
        The number of examples.

    Raises:
        ValueError: naming each array's length, or the empty ones.
    """
    lengths = {
        label: int(leaf.shape[0])
        for name, structure in named.items()
        for label, leaf in _named_leaves(name, structure)
    }
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{label} has {n}" for label, n in lengths.items())
        raise ValueError(
            f"The arrays have different numbers of examples: {listed}. Give one row "
            "per example in each (check the slicing or the loading of each array)."
        )
    if not next(iter(lengths.values()), 0):
        raise ValueError(
            f"{', '.join(lengths)} hold no examples (0 rows): there is nothing to "
            "train or evaluate on. Check the data loading (an empty folder, a filter "
            "that kept nothing)."
        )
    return next(iter(lengths.values()))


def first_non_finite(array) -> int | None:
    """Index of the first example of a float array with NaN/Inf, or `None`."""
    if tf.is_tensor(array):
        if not array.dtype.is_floating:
            return None
        finite = tf.math.is_finite(array)
        return None if bool(tf.reduce_all(finite)) else _first_row(~finite)
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating) or array.size == 0:
        return None
    step = max(1, _SCAN_ELEMENTS // max(1, array[0].size))
    for start in range(0, len(array), step):
        chunk = np.isfinite(array[start : start + step]).reshape(
            min(step, len(array) - start), -1
        )
        bad = ~chunk.all(axis=1)
        if bad.any():
            return start + int(np.argmax(bad))
    return None


def _first_batch(dataset: tf.data.Dataset):
    """The first element of `dataset` (a new iterator; the dataset is not consumed).

    Raises:
        ValueError: when the dataset yields nothing.
    """
    empty = ValueError(
        "The dataset yields no batches: there is nothing to train or evaluate on. "
        "Check how it is built (an empty folder or array, a filter that keeps "
        "nothing, `take(0)`, or `batch(..., drop_remainder=True)` with fewer "
        "examples than one batch)."
    )
    if int(dataset.cardinality()) == 0:
        raise empty
    for element in dataset.take(1):
        return element
    raise empty


def read_first_batch(x, y, sample_weight, batch_size: int):
    """The first batch of data given as to `fit`, as tensors.

    Args:
        x: Inputs as given to `fit` (arrays, a dataset or a `PyDataset`).
        y: Labels (arrays) or `None`.
        sample_weight: Weights (arrays) or `None`.
        batch_size: Rows of arrays to take.

    Returns:
        `(x, y, sample_weight)` of the first batch (`y`, `sample_weight` may be
        `None`), or `None` for a source that cannot be read twice (a generator).

    Raises:
        ValueError: for a dataset that yields nothing.
    """
    if isinstance(x, tf.data.Dataset):
        return keras.utils.unpack_x_y_sample_weight(_first_batch(x))
    if isinstance(x, keras.utils.PyDataset):
        if x.num_batches == 0:
            raise ValueError(
                "The PyDataset has no batches (its __len__ is 0): there is nothing "
                "to train or evaluate on."
            )
        batch = keras.utils.unpack_x_y_sample_weight(x[0])
    elif any(array_leaves(part) is None for part in (x, y, sample_weight)):
        return None
    else:
        batch = [
            None if part is None else keras.tree.map_structure(lambda a: a[:batch_size], part)
            for part in (x, y, sample_weight)
        ]
    return tuple(
        None if part is None else keras.tree.map_structure(tf.convert_to_tensor, part)
        for part in batch
    )


def check_arrays(x, y, sample_weight) -> bool:
    """Checks data given as arrays whole: lengths, label type, NaN/Inf.

    Args:
        x: Inputs (a structure of arrays, maybe a `make_batch` dict).
        y: Labels or `None`.
        sample_weight: Weights or `None`.

    Returns:
        Whether the data were arrays (and so were checked); `False` for a
        dataset, a generator and other sources.

    Raises:
        ValueError: for different lengths, no examples, or NaN/Inf, naming the
            array and the first example concerned.
        TypeError: for labels that are strings or Python objects.
    """
    named = {"x": x, "y": y, "sample_weight": sample_weight}
    named = {name: part for name, part in named.items() if part is not None}
    if any(array_leaves(part) is None for part in named.values()):
        return False
    check_lengths(named)
    if y is not None:
        labels = np.asarray(y)
        if labels.dtype.kind in "USO":
            kind = "Python objects" if labels.dtype.kind == "O" else "strings"
            raise TypeError(
                f"The labels `y` are {kind} (dtype {labels.dtype}); the Distiller "
                "needs integer class ids (or one-hot rows). Map them first, e.g. "
                "names, y = np.unique(y, return_inverse=True)."
            )
    titles = {"x": "The inputs ", "y": "The labels ", "sample_weight": "The weights "}
    for name, structure in named.items():
        for label, leaf in _named_leaves(name, structure):
            row = first_non_finite(leaf)
            if row is None:
                continue
            if name == "x" and label.startswith(f"`x[{TEACHER_LOGITS!r}]"):
                raise ValueError(teacher_non_finite_message(row))
            raise ValueError(non_finite_message(titles[name] + label, row))
    return True


def warn_if_single_class(y, loss) -> None:
    """Warns when every label of a classification set is the same class."""
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        labels = np.asarray(y).reshape(len(y), -1)[:, 0]
    elif isinstance(loss, keras.losses.CategoricalCrossentropy):
        labels = np.asarray(y).reshape(len(y), -1).argmax(axis=-1)
    else:
        return
    classes = np.unique(labels)
    if len(labels) > 1 and len(classes) == 1:
        warnings.warn(
            f"Every label is class {classes[0].item()!r} ({len(labels)} examples): "
            "the hard-label term can only teach the student to predict that class, "
            "and accuracy on such data is 0 or 1. Check that the data holds every "
            "class (a folder with a single sub-folder, a filter that kept one "
            "class).",
            UserWarning,
            stacklevel=3,
        )


class SeenData:
    """Remembers (weakly) which data objects were already checked."""

    def __init__(self, capacity: int = 8):
        self._capacity = capacity
        self._entries: list[tuple] = []

    @staticmethod
    def _refs(objects):
        try:
            return tuple(weakref.ref(item) for item in objects)
        except TypeError:
            return None  # e.g. a Python list: always checked again

    def seen(self, objects) -> bool:
        objects = tuple(objects)
        return any(
            len(refs) == len(objects)
            and all(ref() is item for ref, item in zip(refs, objects, strict=True))
            for refs in self._entries
        )

    def add(self, objects) -> None:
        refs = self._refs(tuple(objects))
        if refs is not None:
            self._entries = [*self._entries[-(self._capacity - 1) :], refs]

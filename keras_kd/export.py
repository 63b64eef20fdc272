"""Exporting a student to a TF SavedModel and to TFLite, with a parity report.

`export_student` writes the requested formats and, for each, a parity report computed
on held-out data: the largest and mean |logit difference| against the Keras student
(int8 outputs dequantised), top-1 agreement, the exported model's accuracy, its file
size and its per-example latency (batch 1, one thread). Every TFLite conversion
happens in memory first: a model with ops TFLite cannot run is refused with a
`ValueError` before any file is written.

The output folder is checked before any conversion runs, and claimed with
`keras_kd.files.claim_folder` (kind `"export"`): a path under a regular file,
an existing file, a folder that cannot be written, or a folder holding files
keras-kd did not write is refused with a `ValueError` naming it. A folder
without keras-kd's marker is adopted only when it provably is an export of
keras-kd 0.1.0: export files only, and a `parity.json` of keras-kd's own layout
listing every exported model in the folder. A `saved_model/` that a user wrote
is never replaced. Every file appears whole or not at all: files are written
under a temporary name and renamed, and the SavedModel folder is written beside
the old one and swapped in.

| format | what |
| --- | --- |
| `saved_model` | TF SavedModel with a `serving_default` signature (TF Serving) |
| `tflite_float32` | TFLite, float32 weights and activations |
| `tflite_dynamic_int8` | TFLite, int8 weights, float activations (no calibration) |
| `tflite_int8` | TFLite, full-integer: int8 weights, activations, input, output |
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_kd import reports
from keras_kd._stderr import captured_fd2
from keras_kd.files import (
    OWNER_FILE,
    FolderNotOwnedError,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    check_claimable,
    claim_folder,
    remove_owned,
)
from keras_kd.teachers import check_input_shape

FORMATS = ("saved_model", "tflite_float32", "tflite_dynamic_int8", "tflite_int8")
TFLITE_FORMATS = FORMATS[1:]
_FILE_NAMES = {
    "saved_model": "saved_model",
    "tflite_float32": "student_float32.tflite",
    "tflite_dynamic_int8": "student_dynamic_int8.tflite",
    "tflite_int8": "student_int8.tflite",
}
_UNSUPPORTED_OP = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
KIND = "export"
_TEMPORARY_NAME = re.compile(r"\.(?P<name>[\w.]+)\.[a-z0-9_]+\.(?:tflite|json|md|partial|old)")


def _export_names() -> frozenset[str]:
    names = {"parity.json", "parity.md"}
    for file in _FILE_NAMES.values():
        stem = file.removesuffix(".tflite")
        names |= {file, f"{stem}.parity.json", f"{stem}.parity.md"}
    return frozenset(names)


_EXPORT_NAMES = _export_names()


def _check_student(student) -> None:
    if not isinstance(student, keras.Model):
        raise ValueError(
            f"`student` must be a keras.Model, got {type(student).__name__}."
        )
    try:  # subclassed and unbuilt models have no (or a raising) `inputs`
        inputs, outputs = student.inputs or (), student.outputs or ()
    except AttributeError:
        inputs = outputs = ()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            "`student` must be a built model with one input and one output (logits); "
            f"got {len(inputs)} input(s) and {len(outputs)} output(s). Call the model "
            "on data or wrap it in a functional keras.Model first."
        )


def export_saved_model(student: keras.Model, path: str | os.PathLike) -> Path:
    """Writes `student` as a TF SavedModel with a `serving_default` signature.

    Args:
        student: A built Keras model with one input and one output.
        path: The folder to create.

    Returns:
        The folder written.

    Raises:
        ValueError: for a model without exactly one input and one output.

    Example:

    >>> import tempfile
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> path = export_saved_model(student, Path(tempfile.mkdtemp(), "saved_model"))
    >>> serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    >>> [output.shape for output in serve(tf.zeros([2, 4])).values()]
    [TensorShape([2, 3])]
    """
    _check_student(student)
    path = Path(path)
    with captured_fd2():
        student.export(str(path), format="tf_saved_model", verbose=False)
    return path


def _calibration_rows(data, count: int, seed: int) -> np.ndarray:
    """Up to `count` randomly drawn input rows from an array or a tf.data dataset.

    From a dataset, the draw is among its first `count` or more rows: shuffle a
    class-sorted dataset before passing it.
    """
    if isinstance(data, tf.data.Dataset):
        rows, total = [], 0
        for element in data:
            batch = element[0] if isinstance(element, tuple | list) else element
            batch = np.asarray(batch)
            rows.append(batch)
            total += len(batch)
            if total >= count:
                break
        data = np.concatenate(rows) if rows else np.zeros((0,))
    data = np.asarray(data)
    if data.ndim == 0 or len(data) == 0:
        raise ValueError(
            "`representative_data` is empty; full-integer quantisation needs sample "
            "inputs from the transfer set to calibrate activation ranges."
        )
    rng = np.random.default_rng(seed)
    index = rng.choice(len(data), size=min(count, len(data)), replace=False)
    return data[np.sort(index)]


def _conversion_error(quantization: str, log: str) -> ValueError:
    ops = sorted(set(_UNSUPPORTED_OP.findall(log)))
    if ops:
        reason = f"TFLite has no builtin kernel for the op(s) {', '.join(ops)}"
    else:
        lines = [line.strip() for line in log.splitlines() if "error" in line.lower()]
        reason = lines[0] if lines else "the converter failed"
    return ValueError(
        f"`student` cannot be exported as TFLite {quantization}: {reason}. Replace "
        "those ops with TFLite builtins (see the TFLite op compatibility guide) or "
        "export only the SavedModel (formats=['saved_model']). No file was written."
    )


def convert_to_tflite(
    student: keras.Model,
    quantization: str = "float32",
    *,
    representative_data=None,
    calibration_examples: int = 500,
    seed: int = 0,
) -> bytes:
    """Converts `student` to a TFLite flatbuffer in memory and checks that it runs.

    Args:
        student: A built Keras model with one input and one output.
        quantization: `"float32"`, `"dynamic_int8"` (int8 weights, float
            activations) or `"int8"` (full-integer: int8 weights, activations,
            input and output).
        representative_data: Inputs from the transfer set (array or tf.data
            dataset of `x` or `(x, y)` batches); required for `"int8"`.
        calibration_examples: How many examples to draw for calibration.
        seed: Seed of that draw.

    Returns:
        The `.tflite` model as bytes.

    Raises:
        ValueError: for an unknown `quantization`, missing representative data
            or representative data the student cannot take (shape, NaN/Inf),
            or a model whose ops TFLite cannot convert or run.
        TypeError: for non-numeric representative data.

    Example:

    >>> import tempfile
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> flatbuffer = convert_to_tflite(student, "float32")
    >>> path = Path(tempfile.mkdtemp(), "student.tflite")
    >>> path.write_bytes(flatbuffer) == len(flatbuffer)
    True
    >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    >>> int8 = convert_to_tflite(student, "int8", representative_data=x)
    >>> TFLiteRunner(int8).interpreter.get_input_details()[0]["dtype"]
    <class 'numpy.int8'>
    """
    kinds = ("float32", "dynamic_int8", "int8")
    if quantization not in kinds:
        raise ValueError(
            f"`quantization` must be one of {kinds}, got {quantization!r}."
        )
    _check_student(student)
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "`representative_data` is required for quantization='int8': pass inputs "
            "from the transfer set to calibrate the activation ranges."
        )
    if quantization == "int8":
        rows = _calibration_rows(representative_data, calibration_examples, seed)
        _check_inputs(student, rows, "representative_data")
    with tempfile.TemporaryDirectory() as folder:
        saved = export_saved_model(student, Path(folder) / "saved_model")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if quantization != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "int8":
            dtype = student.inputs[0].dtype

            def representative():
                for row in rows:
                    yield [np.asarray(row[None], dtype=dtype)]

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        log: list[str] = []
        try:
            with captured_fd2() as log:
                flatbuffer = converter.convert()
        except Exception as error:  # ConverterError and friends
            raise _conversion_error(quantization, "".join(log) + str(error)) from None
    runner = TFLiteRunner(flatbuffer)
    # Dynamic axes (-1 in the signature) are tried at length 1.
    example = np.zeros(
        (1, *(max(int(d), 1) for d in runner.input_shape[1:])), runner.input_dtype_float
    )
    try:
        runner.predict(example)
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"The TFLite {quantization} model was converted but fails to run "
            f"({error}). No file was written."
        ) from None
    return flatbuffer


class TFLiteRunner:
    """Runs a TFLite model on float inputs and returns float outputs.

    Inputs are quantised and outputs dequantised with the model's own scales when
    its input or output is integer (full-integer models).

    Args:
        model: The flatbuffer (bytes) or the path of a `.tflite` file.
        num_threads: Interpreter threads; latency is measured with 1.

    Raises:
        ValueError: for a model without exactly one input and one output.

    Example:

    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> runner = TFLiteRunner(convert_to_tflite(student))  # or a .tflite file's path
    >>> x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    >>> runner.predict(x).shape
    (5, 3)
    >>> np.allclose(runner.predict(x), student.predict(x, verbose=0), atol=1e-5)
    True
    """

    def __init__(self, model: bytes | str | os.PathLike, num_threads: int = 1):
        content = model if isinstance(model, bytes) else Path(model).read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation note
            self.interpreter = tf.lite.Interpreter(
                model_content=content, num_threads=num_threads
            )
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                "TFLiteRunner needs a model with one input and one output; got "
                f"{len(inputs)} and {len(outputs)}."
            )
        self._input, self._output = inputs[0], outputs[0]
        self.input_shape = tuple(int(d) for d in self._input["shape_signature"])
        self.input_dtype_float = (
            np.float32 if np.issubdtype(self._input["dtype"], np.integer)
            else self._input["dtype"]
        )
        self._batch = None

    def _resize(self, shape: tuple) -> None:
        """Fits the input tensor to a batch's whole shape (dynamic axes too)."""
        if shape != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], list(shape))
            self.interpreter.allocate_tensors()
            self._batch = shape

    def _quantise(self, x: np.ndarray) -> np.ndarray:
        dtype = self._input["dtype"]
        if not np.issubdtype(dtype, np.integer):
            return np.asarray(x, dtype)
        scale, zero = self._input["quantization"]
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, np.float32) / scale + zero)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantise(self, y: np.ndarray) -> np.ndarray:
        if not np.issubdtype(self._output["dtype"], np.integer):
            return np.asarray(y, np.float32)
        scale, zero = self._output["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        self._resize(tuple(batch.shape))
        self.interpreter.set_tensor(self._input["index"], self._quantise(batch))
        self.interpreter.invoke()
        return self._dequantise(self.interpreter.get_tensor(self._output["index"]))

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Float outputs for the float inputs `x`, batch by batch.

        Args:
            x: Array of inputs, one row per example.
            batch_size: Rows per interpreter call.

        Returns:
            Float32 array of outputs (dequantised for integer models).
        """
        x = np.asarray(x)
        parts = [self._invoke(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(parts)

    def latency_ms(self, x, examples: int = 200, warmup: int = 10) -> float:
        """Mean milliseconds per example at batch size 1.

        Args:
            x: Inputs to time (the first `examples` rows are used).
            examples: How many single-example calls to time.
            warmup: Untimed calls before timing.

        Returns:
            The mean time of one call, in milliseconds.
        """
        return _latency_ms(self._invoke, np.asarray(x), examples, warmup)


def _latency_ms(call, x, examples, warmup) -> float:
    rows = x[: max(1, examples)]
    for i in range(min(warmup, len(rows))):
        call(rows[i : i + 1])
    start = time.perf_counter()
    for i in range(len(rows)):
        call(rows[i : i + 1])
    return 1000.0 * (time.perf_counter() - start) / len(rows)


def _folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def parity_metrics(reference, exported, y=None) -> dict:
    """Compares exported-model outputs with the Keras student's on the same inputs.

    Args:
        reference: Keras student logits, `(examples, classes)`.
        exported: The exported model's (dequantised) outputs, same shape.
        y: Optional integer labels, for the exported model's accuracy.

    Returns:
        A dict with `max_abs_logit_diff`, `mean_abs_logit_diff`,
        `top1_agreement`, `examples` and, with labels, `accuracy`.

    Raises:
        ValueError: when the shapes differ.

    Example:

    >>> parity_metrics(np.array([[1.0, 0.0]]), np.array([[0.9, 0.0]]))["top1_agreement"]
    1.0
    """
    reference = np.asarray(reference, np.float32)
    exported = np.asarray(exported, np.float32)
    if reference.shape != exported.shape:
        raise ValueError(
            f"Exported outputs have shape {exported.shape} but the Keras student's "
            f"have {reference.shape}; they must match."
        )
    difference = np.abs(reference - exported)
    metrics = {
        "examples": int(len(reference)),
        "max_abs_logit_diff": float(difference.max()),
        "mean_abs_logit_diff": float(difference.mean()),
        "top1_agreement": float(np.mean(reference.argmax(-1) == exported.argmax(-1))),
    }
    if y is not None:
        labels = _class_ids(y, len(exported), exported.shape[-1])
        metrics["accuracy"] = float(np.mean(exported.argmax(-1) == labels))
    return metrics


def _class_ids(y, examples: int, classes: int) -> np.ndarray:
    """Integer labels from integer or one-hot `y`, one per example, checked."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(
            f"`y_test` has dtype {y.dtype}; give integer class ids 0-{classes - 1} "
            "(or one-hot rows), e.g. encode string labels with np.unique(..., "
            "return_inverse=True)."
        )
    if y.ndim == 2 and y.shape[-1] == classes and classes > 1:
        y = y.argmax(-1)
    y = y.reshape(-1)
    if len(y) != examples:
        raise ValueError(
            f"`y_test` has {len(y)} labels for {examples} examples; give one integer "
            "label (or one one-hot row) per example."
        )
    bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)) | (y < 0) | (y >= classes))
    if len(bad):
        raise ValueError(
            f"`y_test[{bad[0]}]` is {y[bad[0]].item()!r}, not a class id of the student's "
            f"{classes} outputs (0-{classes - 1}); {len(bad)} label(s) are out of range "
            "or not whole numbers. Give the labels of the student's classes."
        )
    return y.astype(np.int64)


def _saved_model_predict(path: Path, x: np.ndarray, batch_size: int = 256):
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    ((name, spec),) = serve.structured_input_signature[1].items()

    def call(batch):
        # The signature accepts its own dtype only (float64 arrays are common).
        (output,) = serve(**{name: tf.constant(batch, dtype=spec.dtype)}).values()
        return output.numpy()

    outputs = np.concatenate(
        [call(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    )
    return outputs, call


def _check_inputs(student: keras.Model, x: np.ndarray, name: str) -> None:
    """Numeric, non-empty, finite inputs of the shape the student takes."""
    if x.dtype.kind not in "biuf":
        raise TypeError(
            f"`{name}` has dtype {x.dtype}; the student takes numeric inputs. Give "
            "the preprocessed arrays the student was trained on."
        )
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"`{name}` is empty; give at least one example.")
    check_input_shape(student, tuple(x.shape[1:]), model_role="student", data_name=name)
    if x.dtype.kind == "f":
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if not finite.all():
            raise ValueError(
                f"`{name}[{np.flatnonzero(~finite)[0]}]` contains NaN or Inf "
                f"({int((~finite).sum())} example(s)); the parity report and the "
                "calibration would be meaningless. Clean or drop those examples."
            )


def _is_legacy_export(folder: Path) -> bool:
    """Whether `folder`, which has no marker, provably is a keras-kd 0.1.0 export.

    That version wrote no marker, so a folder whose entries merely carry export
    names (a user's own `model.export("out/saved_model")`, say) proves nothing.
    Proof is a `parity.json` in keras-kd's layout (`{"exports": [rows]}`, each
    row naming a format and its file) that lists every exported model present.
    """
    if not folder.is_dir() or (folder / OWNER_FILE).exists():
        return False
    entries = {entry.name for entry in folder.iterdir()}
    if not entries <= _EXPORT_NAMES:
        return False
    try:
        payload = json.loads((folder / "parity.json").read_text())
        rows = payload["exports"]
        listed = {
            _FILE_NAMES[row["format"]]
            for row in rows
            if Path(row["path"]).name == _FILE_NAMES[row["format"]]
            and "top1_agreement" in row
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    if not rows or len(listed) != len(rows):
        return False
    return entries & set(_FILE_NAMES.values()) <= listed


def _export_folder(output_dir: Path, *, create: bool) -> Path:
    """Checks (or, with `create`, claims) the export folder, naming the argument."""
    allowed = _EXPORT_NAMES.__contains__ if _is_legacy_export(output_dir) else None
    claim = claim_folder if create else check_claimable
    try:
        return claim(output_dir, kind=KIND, allowed=allowed)
    except FolderNotOwnedError as error:
        raise FolderNotOwnedError(f"`output_dir`: {error}") from None


def _claim_output_dir(output_dir: Path) -> Path:
    """Claims the export folder and removes temporaries an interrupted export left."""
    folder = _export_folder(output_dir, create=True)
    for entry in folder.iterdir():
        match = _TEMPORARY_NAME.fullmatch(entry.name)
        if match is None or match.group("name") not in _EXPORT_NAMES:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            remove_owned(folder, KIND, [entry.name])
    return folder


def _write_saved_model(student: keras.Model, path: Path) -> None:
    """Exports the SavedModel beside `path` and swaps it in (whole or nothing)."""
    partial = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        export_saved_model(student, partial)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old)
            os.replace(partial, path)
            shutil.rmtree(old)
        else:
            os.replace(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def export_student(
    student: keras.Model,
    output_dir: str | os.PathLike,
    *,
    x_test,
    y_test=None,
    representative_data=None,
    formats: Sequence[str] = FORMATS,
    calibration_examples: int = 500,
    latency_examples: int = 200,
) -> dict[str, dict]:
    """Exports `student` in each of `formats` and writes a parity report for each.

    Files in `output_dir`: `saved_model/`, `student_float32.tflite`,
    `student_dynamic_int8.tflite`, `student_int8.tflite` (those requested), each
    with `<name>.parity.json` and `<name>.parity.md`, and `parity.md` /
    `parity.json` tabulating all of them against the Keras student. Every
    argument and the folder are checked before any conversion runs; the folder
    is created only once every conversion has succeeded.

    Args:
        student: The trained student (one input, one output of logits).
        output_dir: A new or empty folder, or an earlier export's folder
            (earlier exports in it are replaced; files of yours in it are
            kept). A folder without keras-kd's marker is refused unless it
            provably is a keras-kd 0.1.0 export.
        x_test: Held-out inputs (array) for the parity report, of the shape
            the student takes.
        y_test: Their labels (integer ids or one-hot rows), or `None` to skip
            accuracy.
        representative_data: Transfer-set inputs (array or tf.data dataset)
            for full-integer calibration; needed for `"tflite_int8"`.
        formats: Any of `FORMATS`.
        calibration_examples: Examples drawn for int8 calibration.
        latency_examples: Single-example calls timed for latency.

    Returns:
        Mapping of format to its report (see `parity_metrics`, plus `format`,
        `path`, `size_bytes`, `size_ratio_vs_float32_tflite`,
        `latency_ms_per_example`, `keras_accuracy`, `accuracy_drop_points`).

    Raises:
        ValueError: for unknown formats; `x_test` or `representative_data`
            that is empty, has NaN/Inf or another shape than the student takes;
            labels that are misaligned, out of range or not whole numbers; an
            `output_dir` that is a file, lies under a file, cannot be written,
            belongs to another keras-kd writer or holds files keras-kd did not
            write (`keras_kd.files.FolderNotOwnedError`; all before any
            conversion);
            an unconvertible model (before any file is written).
        TypeError: for non-numeric inputs or labels.

    Example:

    >>> import tempfile
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> rng = np.random.default_rng(0)
    >>> x_train = rng.normal(size=(64, 4)).astype("float32")
    >>> x_test, y_test = x_train[:32], rng.integers(0, 3, size=32)
    >>> output_dir = Path(tempfile.mkdtemp(), "export")
    >>> reports = export_student(student, output_dir, x_test=x_test, y_test=y_test,
    ...                          representative_data=x_train)
    >>> sorted(reports)
    ['saved_model', 'tflite_dynamic_int8', 'tflite_float32', 'tflite_int8']
    >>> reports["tflite_float32"]["top1_agreement"]
    1.0
    >>> sorted(p.name for p in output_dir.glob("*.tflite"))
    ['student_dynamic_int8.tflite', 'student_float32.tflite', 'student_int8.tflite']
    """
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(
            f"`formats` must be a non-empty list drawn from {FORMATS}; got {formats}."
        )
    _check_student(student)
    x_test = np.asarray(x_test)
    _check_inputs(student, x_test, "x_test")
    classes = student.outputs[0].shape[-1]
    if y_test is not None and classes is not None:
        _class_ids(y_test, len(x_test), int(classes))
    if representative_data is not None and "tflite_int8" in formats:
        # Drawn once here, so that bad calibration data fails before any conversion.
        representative_data = _calibration_rows(representative_data, calibration_examples, 0)
        _check_inputs(student, representative_data, "representative_data")
    output_dir = Path(output_dir)
    _export_folder(output_dir, create=False)
    flatbuffers = {
        name: convert_to_tflite(
            student,
            name.removeprefix("tflite_"),
            representative_data=representative_data,
            calibration_examples=calibration_examples,
        )
        for name in formats
        if name in TFLITE_FORMATS
    }
    output_dir = _claim_output_dir(output_dir)
    reference = np.asarray(student.predict(x_test, batch_size=256, verbose=0), np.float32)
    keras_accuracy = None
    if y_test is not None:
        labels = _class_ids(y_test, len(reference), reference.shape[-1])
        keras_accuracy = float(np.mean(reference.argmax(-1) == labels))
    float32_size = len(flatbuffers["tflite_float32"]) if "tflite_float32" in flatbuffers else None
    results = {}
    for name in formats:
        path = output_dir / _FILE_NAMES[name]
        if name == "saved_model":
            _write_saved_model(student, path)
            outputs, call = _saved_model_predict(path, x_test)
            runtime = "tf.saved_model (serving_default)"
        else:
            with atomic_path(path) as partial:
                partial.write_bytes(flatbuffers[name])
            runner = TFLiteRunner(path)
            outputs, call = runner.predict(x_test), runner._invoke
            runtime = "tf.lite.Interpreter, 1 thread"
        report = {"format": name, "path": str(path), **parity_metrics(reference, outputs, y_test)}
        size = _folder_size(path)
        report["size_bytes"] = size
        report["size_ratio_vs_float32_tflite"] = (
            None if float32_size is None or name == "saved_model" else float32_size / size
        )
        report["latency_ms_per_example"] = _latency_ms(call, x_test, latency_examples, 10)
        report["latency_runtime"] = runtime
        if keras_accuracy is not None:
            report["keras_accuracy"] = keras_accuracy
            report["accuracy_drop_points"] = 100.0 * (keras_accuracy - report["accuracy"])
        stem = _FILE_NAMES[name].removesuffix(".tflite") + ".parity"
        atomic_write_json(output_dir / f"{stem}.json", report)
        atomic_write_text(output_dir / f"{stem}.md", reports.markdown_table([report], digits=6))
        results[name] = report
    rows = list(results.values())
    atomic_write_json(output_dir / "parity.json", {"exports": rows})
    columns = [
        "format", "top1_agreement", "max_abs_logit_diff", "mean_abs_logit_diff",
        "accuracy", "keras_accuracy", "accuracy_drop_points", "size_bytes",
        "size_ratio_vs_float32_tflite", "latency_ms_per_example",
    ]
    columns = [c for c in columns if any(c in row for row in rows)]
    atomic_write_text(output_dir / "parity.md", reports.markdown_table(rows, columns, digits=6))
    return results

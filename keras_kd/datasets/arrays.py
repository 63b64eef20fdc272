"""Any labelled data set as checked in-memory arrays: `load_data`.

`load_data(spec)` reads one of three sources into `(x_train, y_train, x_test,
y_test)`:

- an `.npz` file holding `x_train`, `y_train`, `x_test` and `y_test`
  (`np.savez(path, x_train=..., ...)`);
- `tfds:NAME`, a tensorflow-datasets set already prepared under the data folder
  (nothing is downloaded), with `train` and `test` splits;
- an image folder with `train/` and `test/` (or `val/`) sub-folders, one folder
  of images per class (`.jpeg`, `.jpg`, `.png`; read by
  `keras_kd.datasets.imagenet.read_image_folder`, the package's one image
  reader). Images are resized (antialiased) to `image_size`, rounded to whole
  values and returned as float32 RGB in `[0, 255]`. Files that do not decode (a
  text file named `.JPEG`) are skipped, and a
  `keras_kd.datasets.SkippedImagesWarning` names them.

A relative path that is not found in the working directory is looked up in the
data folder (`data_dir`, or the `KERAS_KD_DATA_DIR` variable).

Every split is checked before it is returned (`check_split`), so a mistake in
the data is one `ValueError` naming the source, the array and the row, not a
TensorFlow error from inside a training step: no rows, `x` and `y` of different
lengths, labels that are strings, fractions, negative or one-hot, inputs that
are not numbers or hold NaN or infinity, and training labels of a single class.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from keras_kd.datasets.location import resolve_data_dir

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
TFDS_PREFIX = "tfds:"
# Rows checked for NaN at a time, so the check needs little extra memory.
_FINITE_CHECK_ROWS = 4096


class DataSplits(NamedTuple):
    """The four arrays `load_data` returns (unpacks like a 4-tuple)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_data(
    spec: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    image_size: Sequence[int] = (128, 128),
) -> DataSplits:
    """Reads a labelled data set into checked arrays (see the module docstring).

    Args:
        spec: `tfds:NAME`, an image folder, or an `.npz` file.
        data_dir: The data folder for `tfds:` sets and relative paths; `None`
            reads `KERAS_KD_DATA_DIR`.
        image_size: `(height, width)` that images from a folder are resized to.

    Returns:
        `DataSplits(x_train, y_train, x_test, y_test)`; labels are int32 class
        ids.

    Raises:
        FileNotFoundError: when the file, folder or prepared `tfds` set does not
            exist.
        ValueError: when the source is unreadable or incomplete, or a split
            fails `check_split`; the message names the source and the array.

    Example:

    >>> import numpy as np, tempfile
    >>> path = tempfile.mkdtemp() + "/blobs.npz"
    >>> np.savez(path, x_train=np.eye(4), y_train=[0, 1, 0, 1],
    ...          x_test=np.eye(4)[:2], y_test=[0, 1])
    >>> x_train, y_train, x_test, y_test = load_data(path)
    >>> x_train.shape, y_test.tolist()
    ((4, 4), [0, 1])
    """
    spec = os.fspath(spec)
    if spec.startswith(TFDS_PREFIX):
        source = spec
        arrays = _load_tfds(spec.removeprefix(TFDS_PREFIX), data_dir)
    else:
        path = locate_data(spec, data_dir)
        source = str(path)
        if path.is_dir():
            arrays = _load_folder(path, image_size)
        elif path.suffix == ".npz":
            arrays = _load_npz(path)
        else:
            raise ValueError(
                f"The data {spec!r} is neither `tfds:NAME`, an image folder, nor an "
                ".npz file."
            )
    x_train, y_train, x_test, y_test = arrays
    y_train = check_split(x_train, y_train, split="train", source=source)
    y_test = check_split(x_test, y_test, split="test", source=source)
    return DataSplits(x_train, y_train, x_test, y_test)


def check_split(
    x,
    y,
    *,
    split: str,
    source: str,
    num_classes: int | None = None,
) -> np.ndarray:
    """Checks one split's inputs and labels; returns the labels as int32 ids.

    Args:
        x: The inputs, one row per example.
        y: The labels: integer class ids (integral floats and `(n, 1)` columns
            are accepted).
        split: `"train"` or `"test"`, used in messages (`x_train`, `y_test`).
        source: The file or data set, named in messages.
        num_classes: When given, labels must lie in `[0, num_classes)`.

    Returns:
        The labels as a 1-D int32 array.

    Raises:
        ValueError: naming `source`, the array and the first offending row.

    Example:

    >>> check_split(np.zeros((2, 3)), [[1.0], [0.0]], split="train",
    ...             source="data.npz").tolist()
    [1, 0]
    >>> check_split(np.zeros((2, 3)), [0, 3], split="test", source="data.npz",
    ...             num_classes=3)
    Traceback (most recent call last):
    ...
    ValueError: data.npz: y_test holds the label 3 (row 1), outside the 3 classes 0..2 of the model's outputs. Labels must be class ids from 0 to 2.
    """
    x_name, y_name = f"x_{split}", f"y_{split}"
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(
            f"{source}: {x_name} has no rows; the {split} split needs examples."
        )
    if y.ndim == 0 or len(y) != len(x):
        rows = "a scalar" if y.ndim == 0 else f"{len(y)} rows"
        raise ValueError(
            f"{source}: {y_name} has {rows} but {x_name} has {len(x)}; they need "
            "one label per example."
        )
    _check_inputs(x, x_name, source)
    labels = _class_ids(y, y_name, source)
    if num_classes is not None:
        check_label_range(labels, num_classes, name=y_name, source=source)
    if split == "train" and np.unique(labels).size < 2:
        raise ValueError(
            f"{source}: {y_name} holds only the class {labels[0]}; a classifier "
            "cannot learn from one class. Check the labels (or the class folders)."
        )
    return labels


def check_label_range(labels, num_classes: int, *, name: str, source: str) -> None:
    """Checks that integer `labels` lie in `[0, num_classes)`.

    Args:
        labels: 1-D integer class ids (as `check_split` returns them).
        num_classes: The number of outputs of the model they train.
        name: The array's name in messages, e.g. `"y_train"`.
        source: The file or data set, named in messages.

    Raises:
        ValueError: naming the first label outside the range and its row.

    Example:

    >>> check_label_range(np.array([0, 2]), 3, name="y_train", source="d.npz")
    """
    labels = np.asarray(labels)
    outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if outside.size:
        row = int(outside[0])
        raise ValueError(
            f"{source}: {name} holds the label {labels[row]} (row {row}), outside "
            f"the {num_classes} classes 0..{num_classes - 1} of the model's "
            f"outputs. Labels must be class ids from 0 to {num_classes - 1}."
        )


def _check_inputs(x: np.ndarray, name: str, source: str) -> None:
    if x.dtype.kind not in "biuf":
        raise ValueError(
            f"{source}: {name} holds {x.dtype} values; inputs must be numbers."
        )
    if x.dtype.kind != "f":
        return
    for start in range(0, len(x), _FINITE_CHECK_ROWS):
        chunk = x[start : start + _FINITE_CHECK_ROWS]
        finite = np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            raise ValueError(
                f"{source}: {name} holds NaN or infinity (first in row {row}); "
                "training on it would make the model's weights NaN. Remove or "
                "repair those rows."
            )


def _class_ids(y: np.ndarray, name: str, source: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"{source}: {name} has shape {y.shape}; labels must be one class id per "
            "example (for one-hot rows, store y.argmax(-1))."
        )
    if y.dtype.kind in "USO":
        raise ValueError(
            f"{source}: {name} holds strings such as {str(y[0])!r}; labels must be "
            "integer class ids (map each class name to 0, 1, ...)."
        )
    if y.dtype.kind not in "biuf":
        raise ValueError(
            f"{source}: {name} holds {y.dtype} values; labels must be integer class "
            "ids."
        )
    if y.dtype.kind == "f":
        fractional = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if fractional.size:
            row = int(fractional[0])
            raise ValueError(
                f"{source}: {name} holds the label {y[row]} (row {row}); labels "
                "must be whole class ids, not fractions or NaN."
            )
    negative = np.flatnonzero(y < 0)
    if negative.size:
        row = int(negative[0])
        raise ValueError(
            f"{source}: {name} holds the label {y[row]} (row {row}); class ids "
            "start at 0."
        )
    return y.astype(np.int32)


def locate_data(spec: str | os.PathLike, data_dir=None) -> Path:
    """The file or folder `spec` names: as given, or inside the data folder.

    Args:
        spec: A path; a relative one not found in the working directory is
            looked up in the data folder.
        data_dir: The data folder; `None` reads `KERAS_KD_DATA_DIR`.

    Returns:
        The existing path.

    Raises:
        FileNotFoundError: when it is in neither place.

    Example:

    >>> locate_data(".").is_dir()
    True
    """
    spec = os.fspath(spec)
    path = Path(spec).expanduser()
    if path.exists() or path.is_absolute():
        if not path.exists():
            raise FileNotFoundError(f"The data {spec!r} does not exist.")
        return path
    root = resolve_data_dir(data_dir)
    if root is not None and (root / spec).exists():
        return root / spec
    where = "" if root is None else f" nor in the data folder {str(root)!r}"
    raise FileNotFoundError(
        f"The data {spec!r} was not found in the working directory{where}. Give a "
        "`tfds:NAME`, an image folder with train/ and test/, or an .npz file."
    )


def _load_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [key for key in NPZ_KEYS if key not in arrays.files]
            if missing:
                raise ValueError(
                    f"{path}: lacks the array(s) {missing}; it needs "
                    f"{list(NPZ_KEYS)} (np.savez(path, x_train=..., ...))."
                )
            return tuple(arrays[key] for key in NPZ_KEYS)
    except OSError as error:
        raise ValueError(f"{path}: not a readable .npz file ({error}).") from None
    except ValueError as error:
        if str(error).startswith(f"{path}:"):
            raise
        raise ValueError(f"{path}: not a readable .npz file ({error}).") from None


def _load_folder(path: Path, image_size: Sequence[int]):
    from keras_kd.datasets.imagenet import read_image_folder

    test_folder = next((path / n for n in ("test", "val") if (path / n).is_dir()), None)
    if not (path / "train").is_dir() or test_folder is None:
        raise ValueError(
            f"{path}: an image folder must hold train/ and test/ (or val/) folders, "
            "each with one sub-folder of images per class."
        )
    size = tuple(int(side) for side in image_size)
    train = read_image_folder(path / "train", size)
    test = read_image_folder(test_folder, size, class_names=train.class_names)
    # float32, as the other sources and the models' inputs are.
    return (
        train.images.astype(np.float32),
        train.labels,
        test.images.astype(np.float32),
        test.labels,
    )


def _load_tfds(name: str, data_dir):
    import tensorflow_datasets as tfds

    root = resolve_data_dir(data_dir)
    try:
        with _absl_errors_only():
            train, test = tfds.load(
                name,
                split=["train", "test"],
                as_supervised=True,
                batch_size=-1,
                data_dir=None if root is None else str(root),
                download=False,
            )
    except Exception as error:  # tfds raises many types (DatasetNotFoundError, ...)
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        raise FileNotFoundError(
            f"tfds:{name} could not be loaded without downloading ({first}). "
            "Prepare it under --data-dir / KERAS_KD_DATA_DIR first "
            "(tfds.builder(name, data_dir=...).download_and_prepare())."
        ) from None
    x_train, y_train = tfds.as_numpy(train)
    x_test, y_test = tfds.as_numpy(test)
    return x_train, y_train, x_test, y_test


@contextlib.contextmanager
def _absl_errors_only():
    """tensorflow-datasets logs a warning before the error this module reports."""
    from absl import logging as absl_logging

    previous = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(previous)

"""MNIST: reading the standard IDX files and a tf.data pipeline with the paper's jitter.

`load_mnist` reads the four files of the usual distribution (gzip-compressed or raw)
from the folder given by `--data-dir` / `KERAS_KD_DATA_DIR`, checks each file's
magic number, dimensions and length, and checks its content against the published
MD5 of the uncompressed file (`MD5`). `mnist_dataset` turns the arrays into batches
of floats in `[0, 1]`, optionally jittered by random shifts of up to two pixels as in
Hinton, Vinyals and Dean (2015, section 3), and optionally carrying precomputed
teacher logits in the batch layout the `Distiller` reads.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_kd.batch import make_batch
from keras_kd.datasets.location import DATA_DIR_VARIABLE, resolve_data_dir

IMAGE_SIZE = 28
NUM_CLASSES = 10

# (file stem, IDX magic number, expected dimensions) of the four standard files.
_FILES = {
    "train_images": ("train-images-idx3-ubyte", 2051, (60000, IMAGE_SIZE, IMAGE_SIZE)),
    "train_labels": ("train-labels-idx1-ubyte", 2049, (60000,)),
    "test_images": ("t10k-images-idx3-ubyte", 2051, (10000, IMAGE_SIZE, IMAGE_SIZE)),
    "test_labels": ("t10k-labels-idx1-ubyte", 2049, (10000,)),
}
# MD5 of each uncompressed file, as published with the data set.
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# The download of `keras.datasets.mnist`, and how long to wait for it to answer.
DOWNLOAD_HOST = "storage.googleapis.com"
CONNECT_TIMEOUT_SECONDS = 3.0
DOWNLOAD_TIMEOUT_SECONDS = 30.0
# Files whose checksum matched, by (path, device, inode, size, modification time),
# so that loading the same files again in a process does not hash them again.
_VERIFIED: set[tuple] = set()


def _find_file(folder: Path, stem: str) -> Path:
    """The gzip or raw IDX file for `stem` in `folder` (gzip preferred)."""
    candidates = [
        folder / f"{stem}.gz",
        folder / stem,
        folder / stem.replace("-idx", ".idx"),
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"MNIST file {stem}.gz (or raw {stem}) not found in {str(folder)!r}. Point "
        f"--data-dir or {DATA_DIR_VARIABLE} at the folder with the four standard IDX "
        "files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)."
    )


def read_idx(path: str | os.PathLike, magic: int, dims: tuple[int, ...]) -> np.ndarray:
    """Reads one IDX file of unsigned bytes and checks its header against expectations.

    Args:
        path: The file, gzip-compressed (name ends in `.gz`) or raw.
        magic: The expected magic number: 2049 for labels, 2051 for images.
        dims: The expected dimensions, e.g. `(60000, 28, 28)`.

    Returns:
        A uint8 array of shape `dims`.

    Raises:
        ValueError: naming the file when it is not valid gzip, its magic number or
            dimensions differ from the expected ones, or it is truncated or too long.

    Example:

    >>> import gzip, tempfile
    >>> path = Path(tempfile.mkdtemp(), "labels-idx1-ubyte.gz")  # 3 labels: 7, 2, 1
    >>> header = (2049).to_bytes(4, "big") + (3).to_bytes(4, "big")
    >>> _ = path.write_bytes(gzip.compress(header + bytes([7, 2, 1])))
    >>> read_idx(path, 2049, (3,))
    array([7, 2, 1], dtype=uint8)
    >>> read_idx(path, 2049, (10000,))
    Traceback (most recent call last):
    ...
    ValueError: MNIST file '...' declares dimensions (3,), expected (10000,). ...
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                data = handle.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as error:
        raise ValueError(
            f"MNIST file {str(path)!r} cannot be read ({error}); it is truncated or "
            "not gzip data. Download it again or decompress it and pass the raw file."
        ) from None
    header_size = 4 + 4 * len(dims)
    if len(data) < header_size:
        raise ValueError(
            f"MNIST file {str(path)!r} is truncated: {len(data)} bytes, fewer than its "
            f"{header_size}-byte header. Download it again."
        )
    found_magic = int.from_bytes(data[:4], "big")
    if found_magic != magic:
        raise ValueError(
            f"MNIST file {str(path)!r} has magic number {found_magic}, expected {magic} "
            f"(an IDX file of unsigned bytes with {len(dims)} dimension(s)). Check that "
            "the file is the right one and not corrupt."
        )
    found_dims = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(len(dims))
    )
    if found_dims != tuple(dims):
        raise ValueError(
            f"MNIST file {str(path)!r} declares dimensions {found_dims}, expected "
            f"{tuple(dims)}. Use the standard MNIST files."
        )
    expected_size = header_size + int(np.prod(dims))
    if len(data) != expected_size:
        state = (
            "truncated" if len(data) < expected_size else "longer than its header says"
        )
        raise ValueError(
            f"MNIST file {str(path)!r} is {state}: {len(data)} bytes, expected "
            f"{expected_size}. Download it again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _check_checksum(
    path: Path, key: tuple, array: np.ndarray, magic: int, expected: str
) -> None:
    """Compares the MD5 of the file's uncompressed bytes with the published one.

    `key` is the file's `_file_key` taken before `array` was read from it.
    """
    if key in _VERIFIED:
        return
    digest = hashlib.md5(usedforsecurity=False)
    digest.update(magic.to_bytes(4, "big"))
    for size in array.shape:
        digest.update(int(size).to_bytes(4, "big"))
    digest.update(np.ascontiguousarray(array))
    if digest.hexdigest() != expected:
        raise ValueError(
            f"MNIST file {str(path)!r} has a valid header and length but not the "
            f"published content: MD5 of its uncompressed bytes is {digest.hexdigest()}, "
            f"expected {expected}. The file is corrupt or is another data set with "
            "the same file names; download it again, or pass verify=False to read "
            "other IDX files (e.g. Fashion-MNIST) on purpose."
        )
    _VERIFIED.add(key)


def _keras_cache_file() -> Path:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets" / "mnist.npz"


def _tfds_prepared() -> bool:
    root = os.environ.get("TFDS_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), "tensorflow_datasets"
    )
    return (Path(root) / "mnist").is_dir()


def _reachable(host: str, port: int = 443, timeout: float = CONNECT_TIMEOUT_SECONDS) -> bool:
    """Whether a TCP connection to `host` (or the HTTPS proxy) opens within `timeout`.

    The attempt runs in a thread so that a slow name lookup cannot outlast it.
    """
    proxy = urllib.request.getproxies().get("https")
    if proxy:
        parsed = urllib.parse.urlsplit(proxy)
        host, port = parsed.hostname or host, parsed.port or 443
    opened, finished = [], threading.Event()

    def connect():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                opened.append(True)
        except OSError:
            pass
        finally:
            finished.set()

    threading.Thread(target=connect, daemon=True).start()
    finished.wait(timeout)
    return bool(opened)


def _load_online():
    """MNIST without a local folder: tensorflow-datasets' or Keras' copy, else a download.

    Never retries and never waits long: a copy already prepared by
    tensorflow-datasets or downloaded by Keras is used without the network; a
    download is attempted only when its host answers within
    `CONNECT_TIMEOUT_SECONDS`, and it fails after `DOWNLOAD_TIMEOUT_SECONDS`
    without data.
    """
    errors = []
    if _tfds_prepared():
        try:
            import tensorflow_datasets as tfds

            splits = tfds.load(
                "mnist", split=["train", "test"], batch_size=-1, as_supervised=True,
                download=False,
            )
            (x_train, y_train), (x_test, y_test) = tfds.as_numpy(splits)
            return (
                (x_train[..., 0].astype(np.uint8), y_train.astype(np.uint8)),
                (x_test[..., 0].astype(np.uint8), y_test.astype(np.uint8)),
            )
        except Exception as error:  # any failure: try the next source
            errors.append(f"tensorflow-datasets: {error}")
    if not _keras_cache_file().is_file() and not _reachable(DOWNLOAD_HOST):
        errors.append(
            f"no local copy, and {DOWNLOAD_HOST} could not be reached within "
            f"{CONNECT_TIMEOUT_SECONDS:g} s (offline?), so nothing was downloaded"
        )
    else:
        import keras

        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
        try:
            return keras.datasets.mnist.load_data()
        except Exception as error:
            errors.append(f"keras.datasets.mnist: {error}")
        finally:
            socket.setdefaulttimeout(previous)
    raise FileNotFoundError(
        "No MNIST folder is configured and MNIST could not be fetched ("
        + "; ".join(errors)
        + f"). Pass --data-dir or set {DATA_DIR_VARIABLE} to a folder with the four "
        "standard IDX files."
    )


def load_mnist(data_dir: str | os.PathLike | None = None, *, verify: bool = True):
    """Loads MNIST as uint8 arrays, from local IDX files when a folder is configured.

    The folder is `resolve_data_dir(data_dir, "mnist")`: `data_dir` or
    `KERAS_KD_DATA_DIR`, or its `mnist/` subfolder. It must hold the four standard
    files, gzip-compressed or raw; each is checked against the published MD5 of
    its uncompressed content (a file verified once is not hashed again in the
    same process while its size and modification time are unchanged).

    With no folder configured, MNIST comes from a copy that tensorflow-datasets
    prepared or Keras downloaded earlier, without the network; failing that, from
    the Keras download, attempted only if its host answers within 3 seconds (no
    retries). Offline, the call therefore fails within seconds.

    Args:
        data_dir: The data root or the MNIST folder; `None` reads
            `KERAS_KD_DATA_DIR`.
        verify: Check each local file's MD5 (default). `False` reads other IDX
            files with the standard names and shapes, such as Fashion-MNIST.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: uint8 arrays of shapes
        `(60000, 28, 28)`, `(60000,)`, `(10000, 28, 28)`, `(10000,)`.

    Raises:
        FileNotFoundError: when the folder or one of its files is missing, or no
            folder is configured and MNIST cannot be fetched.
        ValueError: when a file is corrupt, truncated, of the wrong shape, or
            does not match its published MD5 (naming the file).

    Example:

    ```python
    # data_dir (or KERAS_KD_DATA_DIR) names the folder of the four IDX files
    (x_train, y_train), (x_test, y_test) = load_mnist()
    x_train.shape  # (60000, 28, 28)
    ```

    A folder without them is refused, naming the file that is missing:

    >>> import tempfile
    >>> load_mnist(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    FileNotFoundError: MNIST file train-images-idx3-ubyte.gz (or raw ...) not found in '...'...
    """
    folder = resolve_data_dir(data_dir, "mnist")
    if folder is None:
        return _load_online()
    paths = {key: _find_file(folder, stem) for key, (stem, _, _) in _FILES.items()}
    file_keys = {key: _file_key(path) for key, path in paths.items()}
    arrays = {
        key: read_idx(paths[key], magic, dims)
        for key, (_, magic, dims) in _FILES.items()
    }
    for split in ("train", "test"):
        labels = arrays[f"{split}_labels"]
        if labels.max() >= NUM_CLASSES:
            raise ValueError(
                f"MNIST {split} labels in {str(folder)!r} contain {int(labels.max())}; "
                f"labels must be 0-{NUM_CLASSES - 1}. The label file is corrupt."
            )
    if verify:
        for key, (stem, magic, _) in _FILES.items():
            _check_checksum(paths[key], file_keys[key], arrays[key], magic, MD5[stem])
    return (
        (arrays["train_images"], arrays["train_labels"]),
        (arrays["test_images"], arrays["test_labels"]),
    )


def jitter_images(images: tf.Tensor, seed: tf.Tensor, max_shift: int = 2) -> tf.Tensor:
    """Shifts each image of a batch by its own random whole-pixel offset.

    Offsets are drawn independently per image and axis, uniformly from
    `[-max_shift, max_shift]`; pixels shifted in are 0 (background).

    Args:
        images: Float tensor `(batch, height, width)`.
        seed: Int tensor of shape `(2,)`, a stateless random seed.
        max_shift: The largest shift in pixels along each axis, >= 0.

    Returns:
        A tensor of the same shape and dtype.

    Raises:
        ValueError: for a negative `max_shift`.

    Example:

    >>> x = tf.zeros((4, 28, 28))
    >>> jitter_images(x, tf.constant([1, 2])).shape
    TensorShape([4, 28, 28])
    """
    if max_shift < 0:
        raise ValueError(f"`max_shift` must be >= 0 pixels, got {max_shift}.")
    if max_shift == 0:
        return images
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    shifts = tf.random.stateless_uniform(
        (2, batch), seed, minval=0, maxval=2 * max_shift + 1, dtype=tf.int32
    )
    padded = tf.pad(images, [[0, 0], [max_shift, max_shift], [max_shift, max_shift]])
    rows = shifts[0][:, None] + tf.range(height)[None, :]
    cols = shifts[1][:, None] + tf.range(width)[None, :]
    rows_taken = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(rows_taken, cols, axis=2, batch_dims=1)


def mnist_dataset(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    batch_size: int = 128,
    shuffle: bool = False,
    jitter: bool = False,
    max_shift: int = 2,
    teacher_logits: np.ndarray | None = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """A batched `tf.data.Dataset` of MNIST images scaled to `[0, 1]`.

    Batches are `(x, y)`, or `x` alone when `labels` is `None`. With
    `teacher_logits`, `x` is `{"inputs": images, "teacher_logits": logits}`, the
    layout in which the `Distiller` takes precomputed teacher outputs. Shuffling and
    jitter are seeded and differ from epoch to epoch.

    Args:
        images: uint8 (or float in `[0, 1]`) array `(n, 28, 28)`.
        labels: Integer array `(n,)`, or `None` for an unlabeled transfer set.
        batch_size: Examples per batch, > 0.
        shuffle: Whether to reshuffle the examples every epoch.
        jitter: Whether to shift each image by up to `max_shift` pixels (the
            paper's teacher input jitter).
        max_shift: The largest jitter shift in pixels.
        teacher_logits: Optional float array `(n, classes)` of teacher outputs for
            each image. Cannot be combined with `jitter` (the logits describe the
            unshifted images).
        seed: Seed of the shuffling and the jitter.

    Returns:
        The dataset.

    Raises:
        ValueError: for mismatched lengths, a bad `batch_size` or image shape, or
            `jitter` together with `teacher_logits`.

    Example:

    With `(x, y), _ = load_mnist()`; here ten blank images stand in:

    >>> x, y = np.zeros((10, 28, 28), np.uint8), np.arange(10)
    >>> train = mnist_dataset(x, y, batch_size=4, shuffle=True, jitter=True)
    >>> [tuple(images.shape) for images, labels in train]
    [(4, 28, 28), (4, 28, 28), (2, 28, 28)]
    """
    if batch_size <= 0:
        raise ValueError(f"`batch_size` must be > 0, got {batch_size}.")
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(
            f"`images` must have shape (n, height, width), got {images.shape}. Pass "
            "the arrays returned by load_mnist."
        )
    for name, other in (("labels", labels), ("teacher_logits", teacher_logits)):
        if other is not None and len(other) != len(images):
            raise ValueError(
                f"`{name}` has {len(other)} rows but `images` has {len(images)}; "
                "give one row per image."
            )
    if jitter and teacher_logits is not None:
        raise ValueError(
            "`jitter=True` with `teacher_logits`: the precomputed logits belong to the "
            "unshifted images. Run the teacher on the jittered batches instead, or "
            "pass jitter=False."
        )
    scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
    features = {"images": images}
    if teacher_logits is not None:
        features["teacher_logits"] = np.asarray(teacher_logits, dtype=np.float32)
    if labels is not None:
        features["labels"] = np.asarray(labels, dtype=np.int32)
    dataset = tf.data.Dataset.from_tensor_slices(features)
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if jitter:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip(dataset, seeds.batch(2))

    def to_batch(batch, batch_seed=None):
        x = tf.cast(batch["images"], tf.float32) * scale
        if batch_seed is not None:
            x = jitter_images(x, batch_seed, max_shift)
        if "teacher_logits" in batch:
            x = make_batch(x, batch["teacher_logits"])
        return x if "labels" not in batch else (x, batch["labels"])

    dataset = dataset.map(to_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)

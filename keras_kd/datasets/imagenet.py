"""Image folders and ImageNet as arrays and `tf.data` pipelines: the package's one reader.

Sources:

- a folder of class sub-folders, `<split>/<class>/*.JPEG` (PNG, GIF and BMP
  too; class names are the sorted sub-folder names). `list_image_folder` lists
  one, `read_image_folder` reads one into arrays (what `keras-kd distill --data`
  and the teacher cache use);
- an ImageNet-style folder, `train/<wnid>/` and `val/<wnid>/` (`load_imagenet`);
- `tensorflow-datasets`' `imagenet2012`, prepared from the official archives
  placed in its manual directory (`<data_dir>/downloads/manual/`).

Training batches use random-resized-crop (area 8-100 %, aspect 3/4-4/3) and a
horizontal flip; evaluation batches resize the shorter side to
`image_size / 0.875` and take the centre crop. Images come out as float32 RGB in
`[0, 255]`; each model applies its own normalization.

A file that cannot be decoded (a text file named `.JPEG`, a truncated
download) is skipped, never fatal: pipelines count it with a `DecodeCounter`;
`read_image_folder` and `eval_dataset` name it in a `SkippedImagesWarning`. A
folder with a single class is an error. Training randomness is *stateless*: the
order of each epoch and the crop of each example are functions of the seed and
the example's position in the stream, so a run resumed at step `k`
(`start_step=k`) sees exactly the batches the uninterrupted run saw (folder
source; see `train_dataset`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_kd.datasets.location import DATA_DIR_VARIABLE, resolve_data_dir

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".gif", ".bmp")
SOURCES = ("auto", "folder", "tfds")
TFDS_NAME = "imagenet2012"
TFDS_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
EVAL_CROP_FRACTION = 0.875
# Encoded training images are held in memory when they total at most this size.
DEFAULT_CACHE_BYTES = 512 * 2**20
_EPOCHS_IN_STREAM = 1_000_000  # effectively endless; fit stops it by steps


class DecodeCounter:
    """Counts images a pipeline tried to decode and images it decoded.

    The counts are exact once the pipeline has finished a pass (while it runs,
    images in flight are attempted but not yet decoded). They accumulate over
    passes: a training stream retries an undecodable file every epoch.

    Example:

    >>> counter = DecodeCounter()
    >>> counter.skipped
    0
    """

    def __init__(self):
        with tf.init_scope():
            self._attempted = tf.Variable(0, dtype=tf.int64, trainable=False)
            self._decoded = tf.Variable(0, dtype=tf.int64, trainable=False)

    @property
    def attempted(self) -> int:
        """Images handed to the decoder so far."""
        return int(self._attempted.numpy())

    @property
    def decoded(self) -> int:
        """Images decoded successfully so far."""
        return int(self._decoded.numpy())

    @property
    def skipped(self) -> int:
        """Images that failed to decode (and were dropped) so far."""
        return self.attempted - self.decoded

    def _wrap(self, decode):
        """`decode` with the counters updated around it (inside tf.data)."""

        def counted(*args):
            attempt = self._attempted.assign_add(1)
            with tf.control_dependencies([attempt]):
                image, label = decode(*args)
            with tf.control_dependencies([image]):
                done = self._decoded.assign_add(1)
            with tf.control_dependencies([done]):
                return tf.identity(image), label

        return counted


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG, PNG, GIF or BMP bytes into a `(height, width, 3)` uint8 image.

    Grey and CMYK JPEGs become RGB; a PNG named `.JPEG` (ImageNet has one) works.

    Args:
        encoded: Scalar string tensor of file contents.

    Returns:
        uint8 tensor `(height, width, 3)`.

    Raises:
        tf.errors.InvalidArgumentError: (at run time) for undecodable bytes.

    Example:

    >>> png = tf.io.encode_png(tf.zeros([4, 6, 3], tf.uint8))
    >>> decode_rgb(png).shape
    TensorShape([4, 6, 3])
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def random_resized_crop(
    image: tf.Tensor,
    size: int,
    seed: tf.Tensor,
    *,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> tf.Tensor:
    """Inception-style crop of a random area and aspect ratio, resized, maybe flipped.

    Stateless: the same `seed` gives the same crop and flip.

    Args:
        image: `(height, width, 3)` image of any dtype.
        size: Output height and width.
        seed: int64 tensor of shape `[2]`.
        area_range: Fraction of the image area the crop covers.
        aspect_ratio_range: Width / height of the crop.

    Returns:
        float32 `(size, size, 3)` in the input's value range.

    Example:

    >>> img = tf.zeros([37, 53, 3], tf.uint8)
    >>> random_resized_crop(img, 16, tf.constant([0, 1], tf.int64)).shape
    TensorShape([16, 16, 3])
    """
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seeds[0],
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    crop = tf.image.resize(crop, [size, size], method="bilinear", antialias=False)
    crop = tf.image.stateless_random_flip_left_right(crop, seed=seeds[1])
    crop.set_shape([size, size, 3])
    return tf.cast(crop, tf.float32)


def center_crop(
    image: tf.Tensor, size: int, crop_fraction: float = EVAL_CROP_FRACTION
) -> tf.Tensor:
    """Resizes the shorter side to `size / crop_fraction`, then takes the centre.

    Args:
        image: `(height, width, 3)` image of any dtype.
        size: Output height and width.
        crop_fraction: Fraction of the resized shorter side kept (0.875 is the
            usual 224-of-256).

    Returns:
        float32 `(size, size, 3)`.

    Raises:
        ValueError: when `crop_fraction` is not in `(0, 1]`.

    Example:

    >>> center_crop(tf.zeros([30, 70, 3]), 16).shape
    TensorShape([16, 16, 3])
    """
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"`crop_fraction` must be in (0, 1], got {crop_fraction!r}.")
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / crop_fraction) / tf.reduce_min(shape)
    resized_shape = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
    resized = tf.image.resize(image, resized_shape, method="bilinear")
    top = (resized_shape[0] - size) // 2
    left = (resized_shape[1] - size) // 2
    crop = resized[top : top + size, left : left + size, :]
    crop.set_shape([size, size, 3])
    return tf.cast(crop, tf.float32)


@dataclasses.dataclass(frozen=True)
class FolderSplit:
    """The image files of one split of an ImageNet-style folder.

    Attributes:
        root: The split's folder (e.g. `.../train`).
        files: Paths of the images, sorted by class then name.
        labels: Class index of each file (int64 array).
    """

    root: Path
    files: tuple[str, ...]
    labels: np.ndarray

    @property
    def num_examples(self) -> int:
        """Number of image files."""
        return len(self.files)

    def total_bytes(self) -> int:
        """Summed size of the files on disk."""
        return sum(os.path.getsize(path) for path in self.files)

    def fingerprint(self) -> str:
        """A short SHA-256 of the file names (relative to `root`) and labels.

        Two listings with the same files in the same classes have the same
        fingerprint wherever the folder lives, so a run folder can tell "the
        same data moved" from "other data".
        """
        digest = hashlib.sha256()
        for path, label in zip(self.files, self.labels.tolist(), strict=True):
            digest.update(f"{os.path.relpath(path, self.root)}\t{label}\n".encode())
        return digest.hexdigest()[:16]

    def take(self, classes: int = 0, per_class: int = 0) -> FolderSplit:
        """The files of the first `classes` classes, at most `per_class` each.

        Args:
            classes: Keep labels below this (0: every class).
            per_class: Keep the first this many files of each class (0: all).

        Returns:
            A `FolderSplit` (same root) with the kept files in their order.
        """
        keep, seen = [], {}
        for i, label in enumerate(self.labels.tolist()):
            if classes and label >= classes:
                continue
            if per_class and seen.get(label, 0) >= per_class:
                continue
            seen[label] = seen.get(label, 0) + 1
            keep.append(i)
        return FolderSplit(
            self.root, tuple(self.files[i] for i in keep), self.labels[keep]
        )


def _class_folders(root: Path) -> list[str]:
    """Sorted names of the sub-folders of `root`, hidden ones left out."""
    with os.scandir(root) as entries:
        return sorted(
            entry.name
            for entry in entries
            if entry.is_dir() and not entry.name.startswith(".")
        )


def _image_files(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(
            entry.path
            for entry in entries
            if entry.is_file()
            and not entry.name.startswith(".")
            and entry.name.lower().endswith(IMAGE_SUFFIXES)
        )


def list_image_folder(
    root: str | os.PathLike, class_names: Sequence[str] | None = None
) -> tuple[FolderSplit, list[str]]:
    """Lists the images of a folder with one sub-folder per class.

    `root/<class>/*.{JPEG,jpg,png,gif,bmp}` (any case); other files and hidden
    folders are ignored. Files are only listed here: an undecodable one is
    skipped (and counted) when a pipeline or `read_image_folder` reads it.

    Args:
        root: A split folder whose sub-folders are the classes.
        class_names: The label set to use (e.g. the training split's); default:
            the sorted sub-folder names of `root`, which must then be at least
            two, each holding at least one image.

    Returns:
        `(split, class_names)`.

    Raises:
        FileNotFoundError: when `root` is missing, has no class folders, holds
            no images, or has a class folder that is not in `class_names`.
        ValueError: when `root` defines the classes (`class_names=None`) and has
            a single class folder, or a class folder without images: a
            classifier cannot be trained or scored on that.

    Example:

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> write_synthetic_image_folder(root)  # a tiny stand-in for Imagenette
    {'train': 12, 'val': 6}
    >>> split, names = list_image_folder(f"{root}/train")
    >>> names[:2], split.num_examples
    (['n01440764', 'n02102040'], 12)
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"The image folder {str(root)!r} does not exist. An image folder holds one "
            "sub-folder of images per class: <folder>/<class>/*.JPEG."
        )
    found = _class_folders(root)
    if not found:
        raise FileNotFoundError(
            f"{str(root)!r} has no class sub-folders; expected one sub-folder of "
            f"images per class, {root}/<class>/*.JPEG."
        )
    if class_names is None and len(found) == 1:
        raise ValueError(
            f"{str(root)!r} has a single class folder, {found[0]!r}: a classifier "
            "needs at least two classes (its accuracy would be 0 or 1 whatever it "
            "learns). Add one sub-folder of images per class."
        )
    names = list(class_names) if class_names is not None else found
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(found) - set(index))
    if unknown:
        raise FileNotFoundError(
            f"{str(root)!r} has class folders that the training split lacks: "
            f"{unknown[:5]}. Both splits must use the same class folders."
        )
    files, labels, empty = [], [], []
    for name in found:
        images = _image_files(root / name)
        if not images:
            empty.append(name)
        files.extend(images)
        labels.extend([index[name]] * len(images))
    if not files:
        raise FileNotFoundError(
            f"No images ({', '.join(IMAGE_SUFFIXES)}) under {str(root)!r}/<class>/."
        )
    if empty and class_names is None:
        raise ValueError(
            f"The class folder(s) {empty[:5]} of {str(root)!r} hold no images "
            f"({', '.join(IMAGE_SUFFIXES)}): those classes could never be learned. "
            "Add their images or remove the folders."
        )
    return FolderSplit(root, tuple(files), np.asarray(labels, np.int64)), names


class SkippedImagesWarning(UserWarning):
    """Some files of an image folder are not decodable images and were skipped."""


@dataclasses.dataclass(frozen=True)
class ImageArrays:
    """The decodable images of a folder split, resized, as arrays.

    Attributes:
        images: uint8 array `(n, height, width, 3)`.
        labels: int64 array `(n,)`, indices into `class_names`.
        class_names: Class names in label order.
        skipped: Paths of the files that could not be decoded (left out of
            `images`).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    skipped: tuple[str, ...]


def decode_images(
    split: FolderSplit,
    image_size: int | Sequence[int],
    *,
    class_names: Sequence[str] = (),
    batch_size: int = 256,
) -> ImageArrays:
    """Decodes every file of `split` and resizes it (antialiased) to `image_size`.

    Files that cannot be decoded (a text file named `.JPEG`, a truncated
    download) are left out, listed in `ImageArrays.skipped` and reported with
    one `SkippedImagesWarning`; they never stop the read.

    Args:
        split: From `list_image_folder` (or `load_imagenet(...).train`).
        image_size: `size` for `(size, size)`, or `(height, width)`. The aspect
            ratio is not kept.
        class_names: Stored in the result (label order).
        batch_size: Images decoded per batch.

    Returns:
        An `ImageArrays`.

    Raises:
        ValueError: for a bad `image_size`, or when no file can be decoded.

    Example:

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> _ = write_synthetic_image_folder(root)  # 12 training images of odd sizes
    >>> split, names = list_image_folder(f"{root}/train")
    >>> decode_images(split, 32, class_names=names).images.shape
    (12, 32, 32, 3)
    """
    size = (
        [image_size] * 2
        if isinstance(image_size, int | np.integer)
        else list(image_size)
    )
    if len(size) != 2 or not all(
        isinstance(s, int | np.integer) and s > 0 for s in size
    ):
        raise ValueError(
            f"`image_size` must be a positive int or (height, width), got {image_size!r}."
        )

    def load(index, path, label):
        image = decode_rgb(tf.io.read_file(path))
        image = tf.image.resize(image, size, method="bilinear", antialias=True)
        return (
            index,
            tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8),
            label,
        )

    stream = (
        tf.data.Dataset.from_tensor_slices(
            (
                tf.range(split.num_examples, dtype=tf.int64),
                list(split.files),
                split.labels,
            )
        )
        .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors()
        .batch(batch_size)
    )
    indices, images, labels = [], [], []
    for i, x, y in stream:
        indices.append(i.numpy())
        images.append(x.numpy())
        labels.append(y.numpy())
    decoded = set(np.concatenate(indices).tolist()) if indices else set()
    skipped = tuple(p for i, p in enumerate(split.files) if i not in decoded)
    if not decoded:
        raise _nothing_decoded(split.num_examples, str(split.root))
    if skipped:
        _warn_skipped(
            [os.path.relpath(path, split.root) for path in skipped],
            split.num_examples,
            str(split.root),
            stacklevel=3,
        )
    return ImageArrays(
        np.concatenate(images),
        np.concatenate(labels).astype(np.int64),
        list(class_names),
        skipped,
    )


def read_image_folder(
    root: str | os.PathLike,
    image_size: int | Sequence[int],
    *,
    class_names: Sequence[str] | None = None,
) -> ImageArrays:
    """Reads a folder of class sub-folders into arrays (the package's one reader).

    `list_image_folder` then `decode_images`: undecodable files are skipped,
    listed and warned about; a single class folder is an error.

    Args:
        root: A split folder, `root/<class>/*.JPEG`.
        image_size: `size` or `(height, width)` every image is resized to.
        class_names: The label set (e.g. the training split's, when reading the
            test split); default: the sorted sub-folder names.

    Returns:
        An `ImageArrays` (uint8 images, int64 labels, class names, skipped files).

    Raises:
        FileNotFoundError, ValueError: see `list_image_folder` and `decode_images`.

    Example:

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> _ = write_synthetic_image_folder(root)  # train/ and val/, 3 classes
    >>> train = read_image_folder(f"{root}/train", 32)
    >>> test = read_image_folder(f"{root}/val", 32, class_names=train.class_names)
    >>> train.images.shape, test.labels.tolist()
    ((12, 32, 32, 3), [0, 0, 1, 1, 2, 2])
    """
    split, names = list_image_folder(root, class_names)
    return decode_images(split, image_size, class_names=names)


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
    """One split of the `tensorflow-datasets` `imagenet2012` data set.

    Attributes:
        name: The tfds split, `"train"` or `"validation"`.
        data_dir: tfds' data folder (`None`: tfds' default).
        num_examples: Examples in the split (`None` when tfds' metadata lacks
            it, as under `tfds.testing.mock_data`).
        dataset_name: The tfds name, `"imagenet2012"`.
    """

    name: str
    data_dir: str | None
    num_examples: int | None
    dataset_name: str = "imagenet2012"

    def encoded(self, *, shuffle_seed=None, input_context=None) -> tf.data.Dataset:
        """`(encoded image bytes, label)` pairs, sharded by `input_context`."""
        import tensorflow_datasets as tfds

        dataset = tfds.load(
            self.dataset_name,
            split=self.name,
            data_dir=self.data_dir,
            shuffle_files=shuffle_seed is not None,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(
                shuffle_seed=shuffle_seed, input_context=input_context
            ),
        )
        return dataset.map(lambda ex: (ex["image"], ex["label"]))


Split = FolderSplit | TfdsSplit


@dataclasses.dataclass(frozen=True)
class ImageNetData:
    """The training and validation splits of an ImageNet-like data set.

    Build it with `load_imagenet`; make pipelines with `train_dataset` and
    `eval_dataset`.

    Attributes:
        source: `"folder"` or `"tfds"`.
        class_names: Class names (wnids) in label order.
        train: The training split.
        val: The validation split.
    """

    source: str
    class_names: list[str]
    train: Split
    val: Split

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def subset(
        self, classes: int = 0, train_per_class: int = 0, val_per_class: int = 0
    ) -> ImageNetData:
        """The first `classes` classes and the first files of each (folder source).

        Args:
            classes: Keep this many classes, in label order (0: all).
            train_per_class: Training files kept per class (0: all).
            val_per_class: Validation files kept per class (0: all).

        Returns:
            An `ImageNetData` over the kept files.

        Raises:
            ValueError: for the tfds source, or fewer than two classes.

        Example:

        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = write_synthetic_image_folder(root)  # 3 classes, 4 + 2 images each
        >>> small = load_imagenet(root).subset(2, 3, 1)
        >>> small.num_classes, small.train.num_examples, small.val.num_examples
        (2, 6, 2)
        """
        if self.source != "folder":
            raise ValueError(
                "Only an image folder can be cut to fewer classes or images; the tfds "
                "source is read as a whole. Use an ImageNet-style folder (--data-dir)."
            )
        if classes == 1 or (classes == 0 and self.num_classes < 2):
            raise ValueError(
                f"A subset needs at least two classes, got classes={classes}."
            )
        names = self.class_names[:classes] if classes else self.class_names
        return ImageNetData(
            self.source,
            list(names),
            self.train.take(len(names), train_per_class),
            self.val.take(len(names), val_per_class),
        )


def _image_folder_in(root: Path | None) -> Path | None:
    """`root`, or its `imagenet/` or `imagenette/` sub-folder, that has `train/`."""
    if root is None:
        return None
    for folder in (root, root / "imagenet", root / "imagenette"):
        if (folder / "train").is_dir():
            return folder
    return None


def _tfds_builder(root: Path | None):
    import tensorflow_datasets as tfds

    return tfds.builder(TFDS_NAME, data_dir=None if root is None else str(root))


def _tfds_manual_dir(root: Path | None, builder) -> Path:
    """Where tfds looks for the official archives: `<data root>/downloads/manual`."""
    return (
        (root if root is not None else Path(builder.data_dir_root))
        / "downloads"
        / "manual"
    )


def _tfds_available(root: Path | None, builder) -> bool:
    """Whether tfds' imagenet2012 is prepared, or can be (archives in place)."""
    manual = _tfds_manual_dir(root, builder)
    return builder.is_prepared() or all((manual / a).is_file() for a in TFDS_ARCHIVES)


def _no_data_message(root: Path | None, given_by: str, builder) -> str:
    archives = " and ".join(TFDS_ARCHIVES)
    if root is None:
        return (
            "No ImageNet data: no data folder is configured (pass --data-dir or set "
            "KERAS_KD_DATA_DIR to a folder holding train/<class>/*.JPEG and "
            "val/<class>/*.JPEG), and tensorflow-datasets' imagenet2012 is neither "
            f"prepared in its default folder nor can be ({archives} are not in "
            f"{_tfds_manual_dir(root, builder)})."
        )
    return (
        f"No ImageNet data in {str(root)!r} (from {given_by}): looked for train/ and "
        f"val/ in it and in its imagenet/ and imagenette/ sub-folders, and for "
        f"tensorflow-datasets' imagenet2012 (prepared there, or {archives} in "
        f"{_tfds_manual_dir(root, builder)}). Expected an image folder with "
        "train/<class>/*.JPEG and val/<class>/*.JPEG."
    )


def load_imagenet(
    data_dir: str | os.PathLike | None = None, source: str = "auto"
) -> ImageNetData:
    """Finds an ImageNet-style folder or the tfds `imagenet2012` data set.

    Nothing is written into the data folder: the tfds source is prepared only
    when the official archives are in `<data_dir>/downloads/manual/` (it then
    writes `<data_dir>/imagenet2012/`, as tensorflow-datasets does); an empty or
    unrelated folder is refused with a message saying where this looked.

    Args:
        data_dir: The data folder (`--data-dir`); `None` reads
            `KERAS_KD_DATA_DIR`. For a folder source it is the folder holding
            `train/` and `val/` (or a root holding `imagenet/` or
            `imagenette/`); for tfds it is tfds' data folder (`None`: tfds'
            default).
        source: `"folder"`, `"tfds"` or `"auto"` (a folder when one is found,
            else tfds when it is prepared or its archives are in place).

    Returns:
        An `ImageNetData`.

    Raises:
        ValueError: for an unknown `source`, or a training split with a single
            class (see `list_image_folder`).
        FileNotFoundError: when no image folder (or tfds data) is found, or the
            folder lacks `val/`.

    Example:

    With `data_dir=None`, the folder named by `KERAS_KD_DATA_DIR` (e.g. one
    holding `imagenette/train` and `imagenette/val`) is read. Here, a tiny one:

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> write_synthetic_image_folder(root)
    {'train': 12, 'val': 6}
    >>> data = load_imagenet(root)
    >>> data.source, data.num_classes, data.train.num_examples
    ('folder', 3, 12)
    """
    if source not in SOURCES:
        raise ValueError(f"`source` must be one of {SOURCES}, got {source!r}.")
    given_by = "--data-dir" if data_dir is not None else DATA_DIR_VARIABLE
    root = resolve_data_dir(data_dir)
    folder = _image_folder_in(root)
    if source == "tfds" or (source == "auto" and folder is None):
        builder = _tfds_builder(root)
        if not _tfds_available(root, builder):
            raise FileNotFoundError(_no_data_message(root, given_by, builder))
        return _load_tfds(builder, root)
    if folder is None:
        where = (
            "no data folder is configured"
            if root is None
            else (
                f"{str(root)!r} (from {given_by}) has no train/ folder, nor has its "
                "imagenet/ or imagenette/ sub-folder"
            )
        )
        raise FileNotFoundError(
            f"No ImageNet-style folder: {where}. Pass --data-dir (or set "
            f"{DATA_DIR_VARIABLE}) to a folder holding train/<class>/*.JPEG and "
            "val/<class>/*.JPEG."
        )
    if not (folder / "val").is_dir():
        raise FileNotFoundError(
            f"{str(folder)!r} has train/ but no val/ folder. An ImageNet-style folder "
            "holds train/<class>/*.JPEG and val/<class>/*.JPEG, with the same class "
            "folders in both."
        )
    train, names = list_image_folder(folder / "train")
    val, _ = list_image_folder(folder / "val", class_names=names)
    return ImageNetData("folder", names, train, val)


def _load_tfds(builder, root: Path | None) -> ImageNetData:
    if not builder.is_prepared():
        builder.download_and_prepare()
    info = builder.info
    names = list(info.features["label"].names)
    folder = None if root is None else str(root)
    splits = {
        name: TfdsSplit(name, folder, _split_size(info, name))
        for name in ("train", "validation")
    }
    return ImageNetData("tfds", names, splits["train"], splits["validation"])


def _split_size(info, name: str) -> int | None:
    """Examples in a tfds split, `None` when the metadata does not say."""
    try:
        return info.splits[name].num_examples
    except KeyError:
        return None


def _folder_bytes_lookup(split: FolderSplit, cache_bytes: int):
    """A function index -> encoded bytes: from memory if small enough, else disk."""
    files = tf.constant(split.files)
    if cache_bytes and split.total_bytes() <= cache_bytes:
        contents = [Path(path).read_bytes() for path in split.files]
        table = tf.constant(contents)
        return lambda i: tf.gather(table, i)
    return lambda i: tf.io.read_file(tf.gather(files, i))


def _stream_indices(num_examples: int, seed: int, start_position: int):
    """`(position, file index)` of an endless stream of seeded per-epoch shuffles."""
    start_epoch, offset = divmod(start_position, num_examples)

    def epoch_order(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_examples, dtype=tf.int64),
            seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
        )
        return tf.data.Dataset.from_tensor_slices(order)

    indices = (
        tf.data.Dataset.range(start_epoch, _EPOCHS_IN_STREAM)
        .flat_map(epoch_order)
        .skip(offset)
    )
    positions = tf.data.Dataset.range(start_position, 2**62)
    return tf.data.Dataset.zip((positions, indices))


def _per_replica_batch(global_batch_size: int, input_context) -> int:
    if input_context is None:
        return global_batch_size
    return input_context.get_per_replica_batch_size(global_batch_size)


def train_dataset(
    data: ImageNetData,
    *,
    image_size: int,
    global_batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    counter: DecodeCounter | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> tf.data.Dataset:
    """An endless stream of augmented training batches.

    Folder source: epoch `e` visits the files in the order
    `stateless_shuffle(seed, e)`; example at stream position `p` is cropped and
    flipped with seed `(seed, p)`; global batch `k` holds positions
    `[k * B, (k + 1) * B)`, and a worker of a multi-worker run decodes only its
    slice of each global batch. So `start_step=k` continues exactly where step
    `k` of an earlier run stopped, and the global batches do not depend on the
    number of workers or replicas. (An undecodable file is dropped, which shifts
    the rest of its local batch stream by one example.)

    tfds source: files are shuffled with `seed` and examples through a buffer;
    `start_step` only offsets the augmentation seeds (a resumed run sees a new
    order).

    Args:
        data: From `load_imagenet`.
        image_size: Output height and width.
        global_batch_size: Examples per step over all replicas.
        seed: Seed of the order and the augmentation.
        start_step: Global step the stream starts at (for resuming).
        input_context: From `strategy.distribute_datasets_from_function`;
            `None` for one replica.
        counter: Counts undecodable images; `None` for no counting.
        cache_bytes: Hold the encoded files in memory when they total at most
            this many bytes (folder source); 0 never caches.

    Returns:
        A dataset of `(images float32 (b, size, size, 3), labels int64 (b,))`
        batches of the per-replica size `b`.

    Raises:
        ValueError: when the global batch does not divide over the replicas.

    Example:

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> _ = write_synthetic_image_folder(root)
    >>> data = load_imagenet(root)
    >>> ds = train_dataset(data, image_size=16, global_batch_size=4)
    >>> images, labels = next(iter(ds))
    >>> images.shape, labels.dtype
    (TensorShape([4, 16, 16, 3]), tf.int64)
    """
    batch = _per_replica_batch(global_batch_size, input_context)
    augment_seed = np.int64(seed) * 1_000_003 + 17

    def decode(position, encoded, label):
        aug = tf.stack([tf.constant(augment_seed, tf.int64), position])
        return random_resized_crop(decode_rgb(encoded), image_size, aug), label

    if counter is not None:
        decode = counter._wrap(decode)

    if isinstance(data.train, TfdsSplit):
        stream = data.train.encoded(shuffle_seed=seed, input_context=input_context)
        stream = stream.repeat().shuffle(max(16 * batch, 1024), seed=seed)
        positions = tf.data.Dataset.range(start_step * global_batch_size, 2**62)
        stream = tf.data.Dataset.zip((positions, stream)).map(
            lambda p, pair: (p, pair[0], pair[1])
        )
    else:
        split = data.train
        lookup = _folder_bytes_lookup(split, cache_bytes)
        labels = tf.constant(split.labels)
        stream = _stream_indices(
            split.num_examples, seed, start_step * global_batch_size
        ).batch(global_batch_size, drop_remainder=True)
        if input_context is not None and input_context.num_input_pipelines > 1:
            share = global_batch_size // input_context.num_input_pipelines
            lo = input_context.input_pipeline_id * share
            stream = stream.map(lambda p, i: (p[lo : lo + share], i[lo : lo + share]))
        stream = stream.unbatch().map(lambda p, i: (p, lookup(i), tf.gather(labels, i)))
    images = stream.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    images = images.ignore_errors()
    return images.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(
    data: ImageNetData,
    *,
    image_size: int,
    batch_size: int,
    counter: DecodeCounter | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    crop_fraction: float = EVAL_CROP_FRACTION,
) -> tf.data.Dataset:
    """One pass over the validation split, resized and centre-cropped.

    The split is decoded once here, to count its decodable images: the dataset
    then has a known length (`cardinality()`), so Keras shows a progress bar with
    a total and does not warn that the input "ran out of data" at the end of the
    first evaluation. Files that cannot be decoded are left out and named in one
    `SkippedImagesWarning` (when the split's size is known: always for a
    folder). When the crops are cached, that pass fills the cache
    and costs nothing extra; otherwise (a split too large for `cache_bytes`) it
    is one more decoding pass, once per call.

    Args:
        data: From `load_imagenet`.
        image_size: Output height and width.
        batch_size: Global batch size (the last batch may be smaller).
        counter: Counts undecodable images (the counting pass included); `None`
            for no counting.
        cache_bytes: Cache the cropped uint8 images in memory when they total
            at most this many bytes; 0 never caches.
        crop_fraction: See `center_crop`.

    Returns:
        A dataset of `(images float32, labels int64)` batches, of known length.

    Raises:
        ValueError: when no image of the split can be decoded.

    Example:

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> _ = write_synthetic_image_folder(root)  # 6 validation images
    >>> ds = eval_dataset(load_imagenet(root), image_size=16, batch_size=4)
    >>> int(ds.cardinality()), [tuple(images.shape) for images, labels in ds]
    (2, [(4, 16, 16, 3), (2, 16, 16, 3)])
    """

    def decode(encoded, label):
        image = center_crop(decode_rgb(encoded), image_size, crop_fraction)
        return tf.cast(tf.round(image), tf.uint8), label

    if counter is not None:
        decode = counter._wrap(decode)

    if isinstance(data.val, TfdsSplit):
        pairs = data.val.encoded()
    else:
        split = data.val
        pairs = tf.data.Dataset.from_tensor_slices(
            (list(split.files), split.labels)
        ).map(lambda path, label: (tf.io.read_file(path), label))
    indexed = tf.data.Dataset.zip((tf.data.Dataset.range(2**62), pairs)).map(
        lambda index, pair: (index, *decode(*pair)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    indexed = indexed.ignore_errors()
    size = data.val.num_examples
    if cache_bytes and size is not None and size * image_size**2 * 3 <= cache_bytes:
        indexed = indexed.cache()
    decoded = _count_decodable(indexed, data.val)
    images = indexed.map(lambda _, image, label: (tf.cast(image, tf.float32), label))
    images = images.apply(tf.data.experimental.assert_cardinality(decoded))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return images.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)


def _count_decodable(
    indexed: tf.data.Dataset, split: FolderSplit | TfdsSplit
) -> int:
    """Reads `(index, image, label)` elements once.

    Args:
        indexed: The decoded split, undecodable elements dropped.
        split: Where they come from (for the counts and the names).

    Returns:
        How many images decoded.

    Raises:
        ValueError: when none did.
    """
    seen = np.concatenate(
        [np.zeros(0, np.int64)]
        + [batch.numpy() for batch in indexed.map(lambda i, x, y: i).batch(4096)]
    )
    if isinstance(split, TfdsSplit):
        where, names = f"{split.dataset_name}/{split.name}", None
    else:
        where = str(split.root)
        names = [os.path.relpath(path, split.root) for path in split.files]
    if not seen.size:
        raise _nothing_decoded(split.num_examples, where)
    # Without tfds' split size (tfds.testing.mock_data), skips cannot be counted.
    total = split.num_examples if split.num_examples is not None else seen.size
    if seen.size < total:
        missing = np.setdiff1d(np.arange(total), seen)
        _warn_skipped(
            [names[i] if names else f"example {i}" for i in missing],
            total,
            where,
            stacklevel=4,
        )
    return int(seen.size)


def _nothing_decoded(total: int | None, where: str) -> ValueError:
    count = f"the {total} " if total is not None else "the "
    return ValueError(
        f"None of {count}image files under {where!r} could be decoded (JPEG, PNG, "
        "GIF or BMP expected)."
    )


def _warn_skipped(skipped: Sequence[str], total: int, where: str, stacklevel: int):
    """One `SkippedImagesWarning` for `skipped` (names relative to `where`)."""
    shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
    warnings.warn(
        f"{len(skipped)} of {total} files under {where!r} could not be decoded as "
        f"images and were skipped ({shown}).",
        SkippedImagesWarning,
        stacklevel=stacklevel,
    )


def crop_augment(image_size: int) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The training crop as a stateless `fn(image, seed)` for `keras_kd.cache`.

    The cache builds and replays its views with it, so a student trained from
    a K-view cache sees exactly the crops the teacher saw. The function's name
    (which the cache stores) includes `image_size`.

    Args:
        image_size: Output height and width.

    Returns:
        `fn(image, seed) -> float32 (image_size, image_size, 3)`: a
        `random_resized_crop` with its default ranges.

    Example:

    >>> augment = crop_augment(16)
    >>> augment(tf.zeros([20, 30, 3], tf.uint8), tf.constant([0, 1], tf.int64)).shape
    TensorShape([16, 16, 3])
    """

    def imagenette_random_resized_crop(image, seed):
        return random_resized_crop(image, image_size, seed)

    imagenette_random_resized_crop.__name__ = (
        f"imagenette_random_resized_crop_{image_size}"
    )
    return imagenette_random_resized_crop


def imagenet_class_indices(class_names: Sequence[str]) -> list[int]:
    """The ImageNet-1k logit index of each wnid in `class_names`.

    A 1000-class ImageNet model restricted to these indices is a teacher for a
    folder of ImageNet classes (Imagenette's ten, say).

    Args:
        class_names: wnids such as `"n01440764"`.

    Returns:
        One index per name, in the 1000-class order of `imagenet2012`.

    Raises:
        ValueError: naming the first names that are not ImageNet-1k wnids.

    Example:

    >>> imagenet_class_indices(["n01440764", "n02102040"])
    [0, 217]
    """
    import tensorflow_datasets as tfds

    labels = Path(tfds.__file__).parent / "datasets" / TFDS_NAME / "labels.txt"
    index = {wnid: i for i, wnid in enumerate(labels.read_text().split())}
    missing = [name for name in class_names if name not in index]
    if missing:
        raise ValueError(
            f"{missing[:3]} are not ImageNet-1k class ids (wnids such as 'n01440764'), "
            "so an ImageNet-trained teacher has no logits for them. Train the "
            "teacher on your folder instead."
        )
    return [index[name] for name in class_names]


SYNTHETIC_CLASSES = ("n01440764", "n02102040", "n02979186")
# Odd sizes on purpose: portrait, landscape, smaller than the crop, square.
_SYNTHETIC_SIZES = ((23, 41), (40, 17), (9, 12), (31, 31), (50, 29))


def write_synthetic_image_folder(
    root: str | os.PathLike,
    *,
    train_per_class: int = 4,
    val_per_class: int = 2,
    classes: Sequence[str] = SYNTHETIC_CLASSES,
    seed: int = 0,
) -> dict[str, int]:
    """Writes a tiny ImageNet-style folder of random images, to try the pipeline.

    `root/{train,val}/<wnid>/*.JPEG` (the second image of each class is a
    `.png`), small images of odd shapes whose mean colour depends on the class,
    so that a model can learn something. For tests and `--quick` runs.

    Args:
        root: The folder to write into (created if needed).
        train_per_class: Training images per class.
        val_per_class: Validation images per class.
        classes: Class folder names (by default three Imagenette wnids).
        seed: Seed of the pixels.

    Returns:
        `{"train": n, "val": m}`: the images written per split.

    Example:

    >>> import tempfile
    >>> write_synthetic_image_folder(tempfile.mkdtemp())
    {'train': 12, 'val': 6}
    """
    rng = np.random.default_rng(seed)
    counts = {}
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for c, wnid in enumerate(classes):
            folder = Path(root) / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                h, w = _SYNTHETIC_SIZES[(c + i) % len(_SYNTHETIC_SIZES)]
                pixels = rng.normal(60 + 70 * c, 30, size=(h, w, 3))
                image = tf.constant(np.clip(pixels, 0, 255).astype(np.uint8))
                if i == 1:
                    encoded, name = tf.io.encode_png(image), f"{wnid}_{i}.png"
                else:
                    encoded = tf.io.encode_jpeg(image, quality=90)
                    name = f"{wnid}_{i}.JPEG"
                (folder / name).write_bytes(encoded.numpy())
        counts[split] = per_class * len(classes)
    return counts

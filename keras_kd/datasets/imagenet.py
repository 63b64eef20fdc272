"""ImageNet (and ImageNet-style folders such as Imagenette) as `tf.data` pipelines.

Two sources give the same pipeline:

- a folder in the ImageNet layout, `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG`
  (class names are the sorted sub-folder names of `train/`);
- `tensorflow-datasets`' `imagenet2012`, prepared from the official archives
  placed in its manual directory (`<data_dir>/downloads/manual/`).

Training batches use random-resized-crop (area 8-100 %, aspect 3/4-4/3) and a
horizontal flip; evaluation batches resize the shorter side to
`image_size / 0.875` and take the centre crop. Images come out as float32 RGB in
`[0, 255]`; each model applies its own normalisation.

Images that cannot be decoded are dropped, not fatal, and counted by a
`DecodeCounter`. Training randomness is *stateless*: the order of each epoch and
the crop of each example are functions of the seed and the example's position in
the stream, so a run resumed at step `k` (`start_step=k`) sees exactly the
batches the uninterrupted run saw (folder source; see `train_dataset`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_kd.datasets.location import resolve_data_dir

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
SOURCES = ("auto", "folder", "tfds")
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


# ------------------------------------------------------------------ preprocessing


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


# ------------------------------------------------------------------ sources


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


def list_image_folder(
    root: str | os.PathLike, class_names: Sequence[str] | None = None
) -> tuple[FolderSplit, list[str]]:
    """Lists `root/<class>/*.{JPEG,jpg,png}`.

    Args:
        root: A split folder whose sub-folders are the classes.
        class_names: The label set to use (e.g. the training split's); default:
            the sorted sub-folder names of `root`.

    Returns:
        `(split, class_names)`.

    Raises:
        FileNotFoundError: when `root` is missing, has no class folders, holds
            no images, or has a class folder that is not in `class_names`.

    Example:

    >>> split, names = list_image_folder("imagenette/train")  # doctest: +SKIP
    >>> names[:2], split.num_examples  # doctest: +SKIP
    (['n01440764', 'n02102040'], 9469)
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"The image folder {str(root)!r} does not exist. An ImageNet-style data "
            "folder holds train/<class>/*.JPEG and val/<class>/*.JPEG."
        )
    found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not found:
        raise FileNotFoundError(
            f"{str(root)!r} has no class sub-folders; expected {root}/<wnid>/*.JPEG."
        )
    names = list(class_names) if class_names is not None else found
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(found) - set(index))
    if unknown:
        raise FileNotFoundError(
            f"{str(root)!r} has class folders that the training split lacks: "
            f"{unknown[:5]}. Both splits must use the same class folders."
        )
    files, labels = [], []
    for name in found:
        with os.scandir(root / name) as entries:
            images = sorted(
                entry.path
                for entry in entries
                if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES)
            )
        files.extend(images)
        labels.extend([index[name]] * len(images))
    if not files:
        raise FileNotFoundError(
            f"No images ({', '.join(IMAGE_SUFFIXES)}) under {str(root)!r}/<class>/."
        )
    return FolderSplit(root, tuple(files), np.asarray(labels, np.int64)), names


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


def load_imagenet(
    data_dir: str | os.PathLike | None = None, source: str = "auto"
) -> ImageNetData:
    """Finds an ImageNet-style folder or the tfds `imagenet2012` data set.

    Args:
        data_dir: The data folder (`--data-dir`); `None` reads
            `KERAS_KD_DATA_DIR`. For a folder source it is the folder holding
            `train/` and `val/` (or a root holding `imagenet/` or
            `imagenette/`); for tfds it is tfds' data folder (with the official
            archives in `downloads/manual/` the first time).
        source: `"folder"`, `"tfds"` or `"auto"` (a folder when
            `<data_dir>/train` exists, else tfds).

    Returns:
        An `ImageNetData`.

    Raises:
        ValueError: for an unknown `source`.
        FileNotFoundError: when the folder lacks `train/` or `val/`, or when no
            data folder is configured for the folder source.

    Example:

    >>> data = load_imagenet("../shared/data/imagenette")  # doctest: +SKIP
    >>> data.num_classes, data.train.num_examples  # doctest: +SKIP
    (10, 9469)
    """
    if source not in SOURCES:
        raise ValueError(f"`source` must be one of {SOURCES}, got {source!r}.")
    root = resolve_data_dir(data_dir)
    if root is not None and not (root / "train").is_dir():
        for name in ("imagenet", "imagenette"):
            if (root / name / "train").is_dir():
                root = root / name
                break
    if source == "auto":
        source = "folder" if root is not None and (root / "train").is_dir() else "tfds"
    if source == "tfds":
        return _load_tfds(root)
    if root is None:
        raise FileNotFoundError(
            "No data folder: pass --data-dir (or set KERAS_KD_DATA_DIR) to a folder "
            "holding train/<wnid>/*.JPEG and val/<wnid>/*.JPEG."
        )
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(
                f"{str(root)!r} has no {split}/ folder. An ImageNet-style folder "
                "holds train/<wnid>/*.JPEG and val/<wnid>/*.JPEG; for the "
                "tensorflow-datasets build use source='tfds'."
            )
    train, names = list_image_folder(root / "train")
    val, _ = list_image_folder(root / "val", class_names=names)
    return ImageNetData("folder", names, train, val)


def _load_tfds(root: Path | None) -> ImageNetData:
    import tensorflow_datasets as tfds

    builder = tfds.builder("imagenet2012", data_dir=None if root is None else str(root))
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


# ------------------------------------------------------------------ pipelines


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

    >>> ds = train_dataset(data, image_size=112, global_batch_size=64)  # doctest: +SKIP
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

    Args:
        data: From `load_imagenet`.
        image_size: Output height and width.
        batch_size: Global batch size (the last batch may be smaller).
        counter: Counts undecodable images; `None` for no counting.
        cache_bytes: Cache the cropped uint8 images in memory after the first
            pass when they total at most this many bytes; 0 never caches.
        crop_fraction: See `center_crop`.

    Returns:
        A dataset of `(images float32, labels int64)` batches.

    Example:

    >>> ds = eval_dataset(data, image_size=112, batch_size=128)  # doctest: +SKIP
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
    images = pairs.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    images = images.ignore_errors()
    size = data.val.num_examples
    if cache_bytes and size is not None and size * image_size**2 * 3 <= cache_bytes:
        images = images.cache()
    images = images.map(lambda image, label: (tf.cast(image, tf.float32), label))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return images.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)

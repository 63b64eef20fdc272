"""A teacher-output cache: run the teacher once, distil from disk.

Online distillation pays for a teacher forward pass on every student step; for
an ensemble of ten that dominates the cost. `build_teacher_cache` runs the
teacher (or `TeacherEnsemble`) once over a transfer set and writes its outputs
to disk; `TeacherCache.dataset` replays them as batches
`({"inputs": x, "teacher_logits": t}, y[, w])` that `keras_kd.Distiller`
(with `teacher=None`) trains from directly.

Layout of a cache folder::

    .keras-kd.json              marks the folder as a keras-kd teacher cache
    manifest.json               fingerprints, layout, one entry per shard
    shard-00000.logits.npy      full storage: (n, views, streams, [time,] classes)
    shard-00000.indices.npy     top-k storage: (n, views, streams, [time,] k) class ids
    shard-00000.values.npy      top-k storage: (n, views, streams, [time,] k) logits
    shard-00000.rest.npy        top-k storage: (n, views, streams, [time]) fill value

(`time` only for a teacher with sequence outputs, see *Sequences* below.)

Every array is a plain `.npy` file opened memory-mapped, and a shard holds
`shard_size` consecutive examples, so a transfer set larger than RAM works
(give the inputs as an `np.memmap` too). A shard's files are written to a
temporary name and renamed, and the manifest is rewritten after each shard, so
an interrupted build resumes at the first missing shard. The files on disk
(names, ownership, checksums) are `keras_kd.cache_storage`'s business.

Decisions, documented here once:

- **Precision.** Logits are stored in float16 by default (`storage_dtype="float32"`
  for exact replay). float16 keeps about 3 significant digits: a logit of 20 is
  stored to within 0.01.
- **Top-k.** With `top_k=k` each example keeps its `k` largest logits and their
  class ids, plus one fill value for the `C - k` dropped classes, which replay
  gives to every dropped class; with `k = C` replay gives back the full logits.
  By default the fill is the mean of the dropped logits: the mean of the logits
  stays exact (so `logit_matching`, which zero-means, sees the kept classes
  exactly) and the cache needs no temperature, but at temperature `T` the
  dropped classes' total mass `(C - k) * exp(mean / T)` is at most the true
  `sum exp(z_j / T)` (Jensen): the tail is under-weighted when the dropped
  logits are spread out, as they are over a language model's vocabulary. With
  `tail_temperature=T` the fill is `T * (logsumexp(z_dropped / T) - log(C - k))`
  instead: at that temperature the dropped classes keep their exact total mass
  and the kept classes their exact probabilities, so the soft loss's gradient
  `T * (q - p~)` errs only by how the tail's mass is spread. On the language
  model of `keras-kd language-model` (vocabulary 2,048, k = 64, T = 1) that cut
  the gradient's relative error from 0.16 to 0.03 (`benchmarks/top_k_replay.py`,
  `benchmarks/RESULTS.md`); yet the students distilled from it there at T = 2
  reached a worse test perplexity (60.49 against 59.24), so it is not the
  default. Use the Distiller's temperature; replay at another one warns. The
  price: the mean of the replayed logits is no longer the true one, so
  `logit_matching` sees the kept classes shifted by a constant.
- **Arithmetic ensembles.** Their combined distribution depends on `T`, so the
  cache stores every member's logits (`streams = members`) and combines them at
  replay, at the temperature given to `dataset(temperature=...)`, which must be
  the Distiller's. One cache then serves every temperature (e.g. a temperature
  search) at the price of `members` times the storage. A geometric ensemble
  (mean of logits) and a single model store one stream, independent of `T`.
- **Augmentation.** With `augment=fn` and `views=K`, the teacher sees `K`
  augmented views of each example. `fn(example, seed)` must be stateless
  (`tf.image.stateless_*`, `tf.random.stateless_*`) and is given the seed
  `[seed, example_index * K + view]`; replay recomputes the same view from the
  same seed, so the student sees exactly the input the teacher saw. `fn` is
  identified by its `__name__` (a lambda or a `functools.partial` is refused):
  rename it when you change what it does. The
  trade-off: the student sees only `K` distinct views of each example instead of
  a fresh one every epoch (less augmentation diversity over many epochs), the
  build runs the teacher `K` times per example and the cache is `K` times
  larger; in exchange the soft targets match the inputs, which fresh
  augmentation with a cached teacher cannot give.
- **Safety.** The manifest stores a fingerprint of the teacher's weights, of
  the stored content (layout, `top_k`, views, augmentation, seed and, per
  file, a SHA-256 of the whole file and of a fixed sample of it) and of the
  transfer set's order (a SHA-256 of each shard's inputs). `TeacherCache.open`
  and `dataset` check them and raise a `ValueError` naming the problem for
  reordered or different inputs, a truncated, missing, reshaped or altered
  file, a file changed after `open`, or a corrupt manifest (`open` states
  what each `verify` mode does not catch); `TeacherCache.open(teacher=...)` and
  `build_teacher_cache` also detect a stale teacher (`dataset` is not given
  one). An arithmetic-ensemble replay carries its temperature, and the
  Distiller refuses to train at another. The build refuses inputs with NaN or
  Inf (a teacher may map them to finite logits) and teacher outputs with NaN
  or Inf, naming the example.
- **Sequences.** A teacher with sequence outputs `(batch, time, classes)`
  (tokens, frames) is stored per token: `(time, classes)` logits per example,
  or per token its top `k` (and the mean of the rest, as above, along the
  class axis), and the manifest records `time` (`TeacherCache.time`). No mask
  or length is stored: the Distiller weighs tokens by the *student's* Keras
  mask and the sample weights only, online as from the cache, so the student's
  `Embedding(mask_zero=True)` or `Masking` recomputes the padding from the
  replayed inputs, and per-token weights (`(examples, time)`, e.g. 0 on
  padding for a student without a mask) are given to `dataset` like labels.
  The teacher's outputs at padded steps are stored (finite, never used): the
  price is `time / mean length` times the storage. Replay needs the inputs
  padded as at the build: `dataset` refuses another shape of `x`, and labels
  or weights of another length, naming the cached `time`; the Distiller
  refuses a per-example student (another rank) and a student whose outputs
  have another length. Top-k per token reconstructs the soft loss within
  `T^2 |H(p~) - H(p)| + T m (max s - min s)` per token (m: the dropped mass at
  `T`, s: the student's logits); measured, about 8% of the soft loss with the
  top 8 of 50 classes at `T = 2` on a teacher whose tail holds 63% of the mass,
  1-3% with a lighter tail or `k = 16` (`tests/test_sequence_cache.py`).
- **Your files.** The cache claims its folder (`keras_kd.files.claim_folder`):
  it refuses a folder holding files it did not write, naming them, and only
  ever removes or overwrites its own files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_kd import teacher_inference
from keras_kd.batch import make_batch
from keras_kd.cache_storage import (
    FORMAT,
    MANIFEST,
    cache_files_present,
    claim_cache_folder,
    file_identity,
    remove_cache_files,
    sample_sha256,
    shard_file,
    write_manifest,
    write_npy,
)
from keras_kd.distiller import ends_in_softmax
from keras_kd.files import sha256_file
from keras_kd.losses import validate_temperature
from keras_kd.teacher_inference import TeacherInference
from keras_kd.teacher_precision import forward_in, validate_teacher_dtype
from keras_kd.teachers import TeacherEnsemble, check_input_shape, combine_logits

VERSION = 1
# The most memory a shard's float32 outputs take while it is built.
SHARD_BUILD_BYTES = 256 * 2**20
STORAGE_DTYPES = ("float16", "float32")
VERIFY_MODES = ("full", "size")
_FULL_FILES = ("logits",)
_TOP_K_FILES = ("indices", "values", "rest")


def _hash_array(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def teacher_fingerprint(teacher: keras.Model) -> str:
    """A SHA-256 of the teacher's weights (and of an ensemble's combination).

    Two teachers with the same weight values in the same order, and the same
    ensemble `mean`, have the same fingerprint; retraining or changing any weight
    changes it. Layer names are not included, so a reloaded model matches.

    Args:
        teacher: A `keras.Model` or `TeacherEnsemble`.

    Returns:
        The hexadecimal digest.

    Example:

    >>> teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> copy = keras.models.clone_model(teacher)
    >>> copy.set_weights(teacher.get_weights())
    >>> teacher_fingerprint(copy) == teacher_fingerprint(teacher)
    True
    """
    digest = hashlib.sha256(type(teacher).__name__.encode())
    if isinstance(teacher, TeacherEnsemble):
        digest.update(f"{teacher.mean}:{teacher.num_members}".encode())
    for weight in teacher.weights:
        digest.update(_hash_array(keras.ops.convert_to_numpy(weight)).encode())
    return digest.hexdigest()


def _fingerprint(payload) -> str:
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _as_array(x):
    """`x` as NumPy can index and hash it (a tensor is converted, a memmap kept)."""
    if isinstance(x, tf.Tensor):
        return x.numpy()
    return x


def _num_examples(x) -> int:
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) < 1:
        raise ValueError(
            f"`x` must be an array (or np.memmap) of examples on axis 0, got "
            f"{type(x).__name__}. Convert it with np.asarray(x) or open it with "
            "np.load(path, mmap_mode='r')."
        )
    return int(shape[0])


def _check_aligned(name: str, values, size: int):
    if values is None:
        return None
    values = np.asanyarray(values)
    if len(values) != size:
        raise ValueError(
            f"`{name}` has {len(values)} entries but `x` has {size} examples; they "
            "must align one to one."
        )
    return values


def _view_seeds(rows, views: int, seed: int):
    """Stateless seeds `[seed, row]` for rows `example * views + view`."""
    rows = tf.cast(rows, tf.int64)
    return tf.stack([tf.fill(tf.shape(rows), tf.cast(seed, tf.int64)), rows], axis=1)


def _apply_augment(augment, x_batch, rows, views: int, seed: int, output_spec):
    seeds = _view_seeds(rows, views, seed)
    return tf.map_fn(
        lambda pair: augment(pair[0], pair[1]),
        (x_batch, seeds),
        fn_output_signature=output_spec,
    )


def expand_top_k(indices, values, rest, classes: int):
    """Full logits from top-k storage: kept logits in place, the rest filled.

    Args:
        indices: Integer tensor `(..., k)`, the kept class ids.
        values: Tensor `(..., k)`, their logits.
        rest: Tensor `(...)`, the value of every dropped class (the mean of
            the dropped logits, or the mass-keeping value of
            `tail_temperature`; ignored when `k == classes`).
        classes: Number of classes `C`.

    Returns:
        Float32 tensor `(..., classes)`.

    Example:

    >>> expand_top_k(tf.constant([[2]]), tf.constant([[5.0]]), tf.constant([1.0]), 3)
    <tf.Tensor: shape=(1, 3), dtype=float32, numpy=array([[1., 1., 5.]], dtype=float32)>
    """
    values = tf.cast(values, tf.float32)
    k = tf.shape(values)[-1]
    leading = tf.shape(values)[:-1]
    flat_values = tf.reshape(values, [-1, k])
    flat_indices = tf.reshape(tf.cast(indices, tf.int32), [-1, k])
    rows = tf.shape(flat_values)[0]
    base = tf.broadcast_to(tf.reshape(tf.cast(rest, tf.float32), [-1, 1]), [rows, classes])
    row_ids = tf.repeat(tf.range(rows), k)
    positions = tf.stack([row_ids, tf.reshape(flat_indices, [-1])], axis=1)
    full = tf.tensor_scatter_nd_update(base, positions, tf.reshape(flat_values, [-1]))
    return tf.reshape(full, tf.concat([leading, [classes]], axis=0))


def _teacher_layout(teacher) -> tuple[int, str, str | None]:
    """(streams, stream kind, ensemble mean) of what the cache stores."""
    if isinstance(teacher, TeacherEnsemble):
        if teacher.mean == "arithmetic":
            return teacher.num_members, "members", "arithmetic"
        return 1, "combined", "geometric"
    if hasattr(teacher, "logits_at_temperature"):
        raise ValueError(
            f"`teacher` ({type(teacher).__name__}) combines its outputs with a "
            "temperature (it has `logits_at_temperature`), which the cache cannot "
            "store independently of T. Cache a keras.Model or a TeacherEnsemble."
        )
    if not isinstance(teacher, keras.Model):
        raise ValueError(f"`teacher` must be a keras.Model, got {type(teacher).__name__}.")
    if ends_in_softmax(teacher):
        raise ValueError(
            "`teacher` ends in a softmax, but the cache stores logits (top-k and "
            "float16 storage assume them). Give the teacher without its final softmax."
        )
    return 1, "combined", None


def _output_layout(shape: tuple) -> tuple[int | None, int]:
    """(time steps or None, classes) of one example's teacher output `shape`."""
    if len(shape) == 1:
        return None, int(shape[0])
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    raise ValueError(
        f"The teacher outputs {shape} per example, but the cache stores logits "
        "(classes,) per example or (time, classes) per sequence. Flatten the other "
        "axes in the teacher (e.g. keras.layers.Reshape((-1, classes)))."
    )


def _augment_name(augment: Callable | None) -> str | None:
    """The name that identifies `augment` in the manifest (stable across processes)."""
    if augment is None:
        return None
    name = getattr(augment, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        raise ValueError(
            f"`augment` ({augment!r}) has no name of its own, so the cache could not "
            "tell it apart from another augmentation when it is reused or replayed. "
            "Define it with `def` and a name that says what it does (and rename it "
            "when you change it)."
        )
    return name


def build_teacher_cache(
    teacher: keras.Model,
    x,
    directory: str | os.PathLike,
    *,
    top_k: int | None = None,
    tail_temperature: float | None = None,
    views: int = 1,
    augment: Callable | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    shard_size: int = 16384,
    storage_dtype: str = "float16",
    teacher_jit_compile: str | bool = "auto",
    teacher_dtype: str | None = None,
    verbose: bool = True,
    dtype: str | None = None,
) -> TeacherCache:
    """Runs `teacher` once over the transfer set `x` and writes its outputs.

    Calling it again with the same teacher, inputs and arguments returns the
    existing cache (rebuilding only the shards that are missing or damaged, so an
    interrupted build resumes); a cache built with another teacher or other
    arguments in `directory` is replaced. Only files the cache wrote are ever
    removed or overwritten: a `directory` that holds anything else is refused
    before any work (a cache folder of keras-kd 0.1.0, without the ownership
    marker, is recognised by its manifest and adopted).

    Args:
        teacher: A `keras.Model` that outputs logits, or a `TeacherEnsemble`.
        x: The transfer set's inputs, an array with examples on axis 0 (an
            `np.memmap` works for data larger than RAM). Its order is part of the
            cache: replay must use the same inputs in the same order.
        directory: Folder for the cache: a new or empty folder, or one that
            holds a keras-kd teacher cache (created if needed).
        top_k: Keep only the `k` largest logits per example (plus one value
            that replay gives every dropped class); `None` (default) keeps all.
        tail_temperature: With `top_k`: `None` (default) stores the mean of
            the dropped logits; a temperature `T` (the Distiller's) stores the
            value that keeps the dropped classes' total probability mass exact
            at `T` (see "Top-k" in the module docstring: far closer replay
            for large vocabularies).
        views: Number of augmented views per example (needs `augment` if > 1).
        augment: `fn(example, seed) -> example`, stateless (see module docs).
        seed: Base seed of the augmentation.
        batch_size: Examples per teacher forward pass. `None` (default)
            picks it: with XLA the largest that fits (see `auto_batch_size`:
            up to 1024, within an eighth of the machine's memory by the
            teacher's largest layer output), one compiled shape; without
            XLA 256, or that largest if smaller; on a CPU with
            `teacher_jit_compile="auto"`, the first batches also decide whether XLA
            is faster (see `_PassTuner`). The batch is halved whenever the
            device runs out of memory. A given `batch_size` is used as is
            (and "auto" on a CPU then runs without XLA).
        shard_size: Examples per shard file, at most: lowered so that a
            shard's outputs, held in float32 while it is built, take at most
            `SHARD_BUILD_BYTES` (256 MiB; e.g. 256 windows of 128 tokens at
            2,048 classes).
        storage_dtype: `"float16"` (default) or `"float32"` for the stored
            logits (the teacher computes as `teacher_dtype` says).
        teacher_jit_compile: Compile the teacher's inference with XLA, as
            `Distiller(teacher_jit_compile=...)` does: `"auto"`
            (default: on a GPU or TPU; on a CPU when it measures faster on
            the build's first batches, see `batch_size`; falling back with a
            warning when XLA cannot compile it), `True` or `False`; see
            `keras_kd.teacher_inference`. With XLA the last, partial batch is
            padded to the batch size, so that XLA compiles one shape only.
            Where the choice is measured, two builds on a loaded and an idle
            machine may choose differently; their logits then differ by
            float rounding (about 1e-6). Pass `True` or `False` for
            bit-identical rebuilds.
        teacher_dtype: `None` (default: the teacher computes as built),
            `"bfloat16"` or `"float16"`: the precision of the teacher's
            arithmetic during the build, on its own float32 weights (see
            `keras_kd.teacher_precision`). Faster where the hardware has fast
            lower-precision arithmetic; part of the cache's identity, so a
            cache built at another precision is rebuilt.
        verbose: Show a progress bar.
        dtype: The name of `storage_dtype` in keras-kd 0.2, still accepted
            with a `FutureWarning` (it named the stored logits' type, not the
            teacher's precision, which is `teacher_dtype`).

    Returns:
        The opened `TeacherCache`.

    Raises:
        ValueError: for invalid arguments, an empty `x`, an example of `x`
            with NaN or Inf (named by index), inputs of another shape than the
            teacher takes, a teacher whose outputs cannot be cached (softmax
            output, T-dependent combination) or are NaN/Inf, or a `directory`
            that holds files the cache did not write
            (`keras_kd.files.FolderNotOwnedError`, naming them).
        TypeError: for an `x` that is not numeric (e.g. strings or objects).

    Example:

    ```python
    cache = build_teacher_cache(ensemble, x_train, "runs/cache", top_k=None)
    distiller = keras_kd.Distiller(student=student, teacher=None, temperature=4.0)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(cache.dataset(x_train, y_train, batch_size=128, temperature=4.0))
    ```

    A language model's outputs, top 8 of 50 classes per token (padding with 0
    is masked by the student's `Embedding(mask_zero=True)` at replay):

    >>> import tempfile
    >>> tokens = keras.Input((None,), dtype="int32")
    >>> lm = keras.Model(tokens, keras.layers.Embedding(50, 50, mask_zero=True)(tokens))
    >>> x = np.array([[3, 7, 9, 0], [4, 2, 0, 0]], "int32")
    >>> folder = tempfile.TemporaryDirectory()
    >>> cache = build_teacher_cache(lm, x, folder.name, top_k=8, verbose=False)
    >>> cache.time, cache.logits().shape
    (4, (2, 4, 50))
    >>> folder.cleanup()
    """
    streams, stream_kind, mean = _teacher_layout(teacher)
    x = _as_array(x)
    size = _num_examples(x)
    if size == 0:
        raise ValueError("`x` is empty; the transfer set needs at least one example.")
    _check_numeric(x)
    sizes = [("views", views), ("shard_size", shard_size)]
    if batch_size is not None:
        sizes.append(("batch_size", batch_size))
    for name, value in sizes:
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    if views > 1 and augment is None:
        raise ValueError(
            f"`views={views}` without `augment` would store {views} identical copies. "
            "Pass augment=fn(example, seed), or views=1."
        )
    if dtype is not None:
        if storage_dtype != "float16" and storage_dtype != dtype:
            raise ValueError(
                f"Both `dtype={dtype!r}` and `storage_dtype={storage_dtype!r}` were "
                "given; `dtype` is keras-kd 0.2's name of `storage_dtype`. Pass "
                "storage_dtype alone."
            )
        warnings.warn(
            "build_teacher_cache(dtype=...) is now `storage_dtype=` (the type of "
            "the stored logits; the teacher's arithmetic is `teacher_dtype=`); "
            "`dtype` will be removed in keras-kd 0.4.",
            FutureWarning,
            stacklevel=2,
        )
        storage_dtype = dtype
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(
            f"`storage_dtype` must be one of {STORAGE_DTYPES}, got {storage_dtype!r}."
        )
    validate_teacher_dtype(teacher_dtype)
    augment_name = _augment_name(augment)
    if augment is None:
        check_input_shape(teacher, tuple(x.shape[1:]), model_role="teacher", data_name="x")

    def forward_pass(batch):
        if stream_kind == "members":
            return teacher.member_logits(batch, training=False)
        if mean == "geometric":
            # The mean over the member axis (1), which for sequence members
            # `(batch, members, time, classes)` is not the second to last.
            return tf.reduce_mean(teacher.member_logits(batch, training=False), axis=1)[:, None]
        return tf.cast(teacher(batch, training=False), tf.float32)[:, None]

    forward_pass = forward_in(forward_pass, teacher, teacher_dtype)
    inference = TeacherInference(forward_pass, jit_compile=teacher_jit_compile)
    forward = inference.function

    output_spec = None
    if augment is not None:
        first = augment(tf.convert_to_tensor(x[:1])[0], _view_seeds([0], views, seed)[0])
        output_spec = tf.TensorSpec(first.shape, first.dtype)
        check_input_shape(
            teacher, tuple(first.shape), model_role="teacher", data_name="augment(x)"
        )
        augment_batch = tf.function(
            lambda batch, rows: _apply_augment(augment, batch, rows, views, seed, output_spec),
            reduce_retracing=True,
        )
    # One example, eagerly: XLA would compile a shape used only here.
    probe = forward_pass(x[:1] if augment is None else first[None])
    time_steps, classes = _output_layout(tuple(probe.shape[2:]))
    step_shape = (classes,) if time_steps is None else (time_steps, classes)
    # A shard's outputs are held in float32 while it is built (and copied again
    # to encode top-k): bound them, which matters for sequences of many classes.
    per_example = 4 * views * streams * int(np.prod(step_shape, dtype=np.int64))
    shard_size = max(1, min(shard_size, SHARD_BUILD_BYTES // per_example))
    tuner = None
    if batch_size is None:
        example_shape = tuple(x.shape[1:]) if augment is None else tuple(first.shape)
        # A pass never holds more than one shard's examples (one view at a time).
        batch_size = auto_batch_size(teacher, example_shape, min(size, shard_size))
        if inference.uses_xla is False:
            # For "auto" on a CPU: the first batches tell whether XLA is faster.
            # A lower-precision teacher is not tried under XLA: XLA's CPU
            # kernels do not use oneDNN's bfloat16 ones (a ResNet-50 in bfloat16
            # ran 1.3x and 2.3x slower with XLA than without, benchmarks/RESULTS.md).
            tuner = _PassTuner(
                batch_size, try_xla=inference.may_try_xla and teacher_dtype is None
            )
            batch_size = tuner.batch_size
    if top_k is not None and (
        not isinstance(top_k, int | np.integer) or not 1 <= top_k <= classes
    ):
        raise ValueError(
            f"`top_k` must be an integer in [1, {classes}] (the number of classes), "
            f"got {top_k!r}. Use top_k=None to keep every logit."
        )
    if tail_temperature is not None:
        if top_k is None:
            raise ValueError(
                "`tail_temperature` sets how the dropped logits of top-k storage are "
                "filled; without `top_k` nothing is dropped. Pass top_k=k too, or "
                "leave tail_temperature=None."
            )
        tail_temperature = validate_temperature(tail_temperature)
    content = {
        "storage": "full" if top_k is None else "top_k",
        "top_k": None if top_k is None else int(top_k),
        "classes": classes,
        "streams": streams,
        "stream_kind": stream_kind,
        "mean": mean,
        "views": int(views),
        "augment": augment_name,
        "seed": int(seed),
        "dtype": storage_dtype,
    }
    if time_steps is not None:
        # Only sequence caches carry the key, so a per-example cache of an
        # earlier version keeps its layout (and resumes instead of rebuilding).
        content["time"] = time_steps
    if teacher_dtype is not None:  # likewise: absent for a float32 teacher
        content["teacher_dtype"] = teacher_dtype
    if tail_temperature is not None:  # likewise: absent for the mean fill
        content["tail_temperature"] = tail_temperature
    layout = {
        "format": FORMAT,
        "version": VERSION,
        "teacher_fingerprint": teacher_fingerprint(teacher),
        "content": content,
        "num_examples": size,
        "shard_size": int(shard_size),
        "input_shape": list(x.shape[1:]),
        "input_dtype": np.dtype(x.dtype).str,
    }
    directory = claim_cache_folder(directory)
    previous = _read_manifest_if_compatible(directory, layout)
    done = {shard["index"]: shard for shard in previous}
    bounds = [(s, min(s + shard_size, size)) for s in range(0, size, shard_size)]
    files = _FULL_FILES if top_k is None else _TOP_K_FILES
    shards = []
    progress = keras.utils.Progbar(size * views, unit_name="example") if verbose else None
    for index, (start, stop) in enumerate(bounds):
        shard_inputs = np.asarray(x[start:stop])
        _check_finite_inputs(shard_inputs, start)
        inputs_sha256 = _hash_array(shard_inputs)
        kept = done.get(index)
        if (
            kept is not None
            and kept["start"] == start
            and kept["stop"] == stop
            and kept["inputs_sha256"] == inputs_sha256
            and all(_file_matches(shard_file(directory, index, k), kept["files"][k]) for k in files)
        ):
            for kind in files:  # caches of keras-kd 0.1.0 have no sampled checksum
                record = kept["files"][kind]
                record.setdefault("sample_sha256", sample_sha256(shard_file(directory, index, kind)))
            shards.append(kept)
            if progress is not None:
                progress.add((stop - start) * views)
            continue
        outputs = np.empty((stop - start, views, streams, *step_shape), np.float32)
        begin = start
        while begin < stop:
            end = min(begin + batch_size, stop)
            batch = shard_inputs[begin - start : end - start]
            xla = None if tuner is None else tuner.xla
            # Under XLA a short batch is padded, so that XLA compiles one shape.
            pad_to = batch_size if (xla or inference.uses_xla is not False) else None
            started = time.perf_counter()
            try:
                for view in range(views):
                    inputs = batch
                    if augment is not None:
                        rows = np.arange(begin, end, dtype=np.int64) * views + view
                        inputs = augment_batch(tf.convert_to_tensor(batch), rows)
                    outputs[begin - start : end - start, view] = _run_padded(
                        lambda b, xla=xla: forward(b, xla=xla), inputs, pad_to
                    )
            except tf.errors.ResourceExhaustedError:
                if batch_size == 1:
                    raise
                batch_size = max(1, batch_size // 2)
                if tuner is not None and not tuner.done:
                    tuner.out_of_memory(batch_size)
                    if progress is not None:
                        print(f"\nOut of memory: {tuner.describe()}")
                continue
            if progress is not None:
                progress.add((end - begin) * views)
            if tuner is not None and not tuner.done:
                if xla and inference.xla_compiles is False:  # it fell back: no XLA
                    tuner.xla_failed()
                else:
                    tuner.record(end - begin, time.perf_counter() - started)
                batch_size = tuner.batch_size
                if tuner.done and progress is not None:
                    print(f"\nTeacher pass chosen on the first batches: {tuner.describe()}")
            begin = end
        _check_finite_outputs(outputs, start)
        if storage_dtype == "float16" and np.abs(outputs).max() > np.finfo(np.float16).max:
            raise ValueError(
                "The teacher's logits exceed the float16 range (|logit| > 65504) and "
                "would be stored as Inf. Build the cache with storage_dtype='float32'."
            )
        arrays = _encode(outputs, top_k, storage_dtype, tail_temperature)
        records = {
            kind: write_npy(shard_file(directory, index, kind), arrays[kind])
            for kind in files
        }
        shards.append(
            {"index": index, "start": start, "stop": stop,
             "inputs_sha256": inputs_sha256, "files": records}
        )
        write_manifest(directory, {**layout, "complete": False, "shards": shards})
    manifest = {**layout, "complete": True, "shards": shards}
    manifest["order_fingerprint"] = _fingerprint([s["inputs_sha256"] for s in shards])
    manifest["content_fingerprint"] = _fingerprint(
        [content, [[s["files"][k]["sha256"] for k in files] for s in shards]]
    )
    write_manifest(directory, manifest)
    # Every file was just hashed (written or matched): no need to hash it again.
    return TeacherCache._open(directory, verify="size", hashed=True)


def _run_padded(forward, inputs, batch_size: int | None) -> np.ndarray:
    """`forward(inputs)` as NumPy, a short batch padded to `batch_size` rows
    first (`None`: never padded).

    Padding (with copies of the last row, dropped again) keeps one input shape,
    so XLA compiles the teacher once; rows do not interact in inference.
    """
    rows = int(inputs.shape[0])
    if batch_size is None or rows == batch_size:
        return forward(inputs).numpy()
    inputs = tf.convert_to_tensor(inputs)
    padding = tf.repeat(inputs[-1:], batch_size - rows, axis=0)
    return forward(tf.concat([inputs, padding], axis=0)).numpy()[:rows]


class _PassTuner:
    """Chooses, on a cache build's own first batches, whether XLA runs the
    teacher faster (`teacher_jit_compile="auto"` on a CPU).

    The batch size is 256 (the fixed size of keras-kd 0.1 and 0.2), or the
    largest that fits if smaller. Searching larger sizes did not pay on this
    project's 2-core CPU: an MNIST MLP built fastest at 256, and a search
    over 256, 512 and 1000 made a 4,096-image ResNet-50 build 0.93x as fast
    as 0.1's fixed 256 (`benchmarks/cache_build.py`, 2026-11-26).

    With `try_xla`, the second batch is timed without XLA (the first
    traces); when it took at least `MEASURE_FROM_SECONDS` (50 ms), the next
    two run under XLA (the first compiles) and XLA is kept if the second was
    at least `XLA_MIN_GAIN` (3%) faster (both in `keras_kd.teacher_inference`).
    Every batch timed is a real batch of the build, so the trial costs one
    compilation. Running out of memory during the trial halves the batch
    (the build's rule) and ends the trial without XLA; after the trial, it
    halves the batch and keeps the choice.
    """

    START = 256

    def __init__(self, cap: int, *, try_xla: bool = False, start: int = START):
        self.batch_size = min(start, cap)
        self.xla = False
        self._try_xla = try_xla
        self._rates: dict[bool, float] = {}
        self._seen = 0
        self._done = not try_xla

    @property
    def done(self) -> bool:
        """Whether the trial has ended (the configuration no longer changes)."""
        return self._done

    def record(self, rows: int, seconds: float) -> None:
        """Takes the time of a batch; only full batches count."""
        if self._done or rows != self.batch_size:
            return
        self._seen += 1
        if self._seen < 2:
            return
        self._seen = 0
        self._rates[self.xla] = self.batch_size / max(seconds, 1e-9)
        if not self.xla:
            if seconds >= teacher_inference.MEASURE_FROM_SECONDS:
                self.xla = True
            else:
                self._done = True
            return
        self.xla = self._rates[True] >= teacher_inference.XLA_MIN_GAIN * self._rates[False]
        self._done = True

    def out_of_memory(self, batch_size: int) -> None:
        """The build halved the batch to `batch_size`: the trial ends without XLA."""
        self.batch_size, self.xla, self._done = batch_size, False, True

    def xla_failed(self) -> None:
        """XLA could not compile or run the teacher: the trial ends without it."""
        self.xla, self._done = False, True

    def describe(self) -> str:
        """The configuration, and the rates measured (for the build's log)."""
        rates = ", ".join(
            f"{'with' if xla else 'without'} XLA {rate:,.0f}/s"
            for xla, rate in self._rates.items()
        )
        return f"batch {self.batch_size}, {'XLA' if self.xla else 'no XLA'} ({rates})"


# The largest batch `auto_batch_size` picks: on the CPUs measured here
# throughput is flat beyond a few hundred examples, and a larger batch only
# costs memory.
AUTO_BATCH_CAP = 1024


# Layer outputs assumed alive at once in inference, each as large as the
# largest: a layer's input and output, plus the inputs a residual or
# concatenation keeps for later, with room to spare.
LIVE_OUTPUTS = 4


def _largest_layer_output(model) -> int:
    """Values in the largest output of any layer of `model`, for one example
    (0 if unknown)."""
    largest = 0
    for layer in getattr(model, "layers", None) or getattr(model, "members", None) or []:
        nested = _largest_layer_output(layer)
        if nested:
            largest = max(largest, nested)
            continue
        try:
            shapes = [tuple(t.shape)[1:] for t in tf.nest.flatten(layer.output)]
        except (AttributeError, ValueError, RuntimeError, TypeError):
            continue
        for shape in shapes:
            if all(isinstance(d, int) for d in shape):
                largest = max(largest, int(np.prod(shape, dtype=np.int64)))
    return largest


def auto_batch_size(teacher, example_shape: tuple, rows: int) -> int:
    """The batch size `build_teacher_cache` uses by default.

    The largest batch up to `AUTO_BATCH_CAP` (1024) and `rows` whose activations fit in
    an eighth of the machine's physical memory, counting per example, in
    float32, the input and `LIVE_OUTPUTS` (4) copies of the largest layer
    output: inference frees a layer's output once its consumers have run, so
    only a few are alive at once. The build halves the batch whenever the
    device reports running out of memory. (A draft of 0.3 counted every
    layer's output, which held a ResNet-50 at 112 px to batches of 83 on a
    24 GiB machine, slower than 0.1's fixed 256.)

    Args:
        teacher: The model the cache runs.
        example_shape: The shape of one input example.
        rows: The most examples a pass can hold (those of one shard).

    Returns:
        An integer in `[1, 1024]`.

    Example:

    >>> auto_batch_size(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]), (4,), 10)
    10
    """
    batch = max(1, min(AUTO_BATCH_CAP, int(rows)))
    per_example = 4 * (
        LIVE_OUTPUTS * _largest_layer_output(teacher)
        + int(np.prod(example_shape, dtype=np.int64))
    )
    try:
        budget = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 8
    except (AttributeError, ValueError, OSError):
        budget = 2**30
    return max(1, min(batch, budget // max(1, per_example)))


def _check_numeric(x) -> None:
    kind = np.dtype(x.dtype).kind
    if kind not in "biuf":
        raise TypeError(
            f"`x` has dtype {np.dtype(x.dtype)}, but the teacher cache needs numeric "
            "inputs (the teacher's own input dtype). Convert or encode them first, "
            "e.g. x.astype('float32')."
        )


def _check_finite_inputs(inputs: np.ndarray, start: int) -> None:
    """Refuses NaN/Inf inputs: a teacher can map them to finite, meaningless logits."""
    if inputs.dtype.kind != "f":
        return
    finite = np.isfinite(inputs.reshape(len(inputs), -1)).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"`x[{start + bad[0]}]` contains NaN or Inf ({len(bad)} such example(s) "
            f"among examples {start}-{start + len(inputs) - 1}). The teacher's outputs "
            "for it would be cached and replayed as if the input were valid. Clean or "
            "drop those examples before building (np.isfinite(x) shows which)."
        )


def _check_finite_outputs(outputs: np.ndarray, start: int) -> None:
    finite = np.isfinite(outputs.reshape(len(outputs), outputs.shape[1], -1)).all(axis=2)
    if not finite.all():
        example, view = np.argwhere(~finite)[0]
        raise ValueError(
            f"The teacher's outputs for example {start + example} (view {view}) contain "
            "NaN or Inf although its input is finite; the cache would replay them as "
            "soft targets. Check the teacher (its weights, or an augmentation that "
            "produces NaN)."
        )


def _file_matches(path: Path, record: dict) -> bool:
    return path.is_file() and path.stat().st_size == record.get("bytes") and (
        sha256_file(path) == record.get("sha256")
    )


def _encode(
    outputs: np.ndarray,
    top_k: int | None,
    dtype: str,
    tail_temperature: float | None = None,
) -> dict[str, np.ndarray]:
    """Storage arrays for float32 outputs `(n, views, streams, classes)`."""
    if top_k is None:
        return {"logits": outputs.astype(dtype)}
    classes = outputs.shape[-1]
    ranked = np.argsort(-outputs, axis=-1, kind="stable")
    order = ranked[..., :top_k]
    values = np.take_along_axis(outputs, order, axis=-1)
    if top_k < classes and tail_temperature is None:
        rest = (outputs.sum(axis=-1) - values.sum(axis=-1)) / (classes - top_k)
    elif top_k < classes:
        # T * logsumexp(dropped / T) - T * log(C - k), in place on one float32
        # copy (a shard is up to 256 MiB); the sum of the exponentials in float64.
        scaled = np.take_along_axis(outputs, ranked[..., top_k:], axis=-1)
        scaled /= np.float32(tail_temperature)
        largest = scaled[..., :1].copy()  # the ranking puts the largest dropped first
        scaled -= largest
        np.exp(scaled, out=scaled)
        mass = scaled.sum(axis=-1, dtype=np.float64)
        rest = tail_temperature * (largest[..., 0] + np.log(mass / (classes - top_k)))
    else:
        rest = np.zeros(outputs.shape[:-1], np.float32)
    index_dtype = np.int16 if classes <= np.iinfo(np.int16).max else np.int32
    return {
        "indices": order.astype(index_dtype),
        "values": values.astype(dtype),
        "rest": rest.astype(dtype),
    }


def _read_manifest_if_compatible(directory: Path, layout: dict) -> list[dict]:
    """Shards of an earlier build with the same layout, else [] (and a fresh start).

    Removes the earlier build's files (all of them for another layout, only
    temporaries of an interrupted write otherwise), never a file whose name the
    cache does not write.
    """
    path = directory / MANIFEST
    shards = []
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
            same = all(manifest.get(key) == value for key, value in layout.items())
            shards = list(manifest["shards"]) if same else []
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
            shards = []
    stale = cache_files_present(directory, temporary_only=bool(shards))
    remove_cache_files(directory, stale)
    return shards


_REQUIRED_KEYS = {
    "format": str, "version": int, "complete": bool, "teacher_fingerprint": str,
    "content": dict, "num_examples": int, "shard_size": int, "input_shape": list,
    "input_dtype": str, "shards": list,
}


def _altered_message(path: Path) -> str:
    return (
        f"The cache file {str(path)!r} does not match its SHA-256 in the manifest: "
        "its content changed after the build. Call build_teacher_cache again to "
        "rebuild the damaged shards."
    )


def _load_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not directory.is_dir():
        raise FileNotFoundError(
            f"The teacher cache folder {str(directory)!r} does not exist. Build it "
            "with keras_kd.cache.build_teacher_cache(teacher, x, directory)."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(directory)!r} holds no {MANIFEST}, so it is not a teacher cache. "
            "Build it with keras_kd.cache.build_teacher_cache(teacher, x, directory)."
        )
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"The cache manifest {str(path)!r} is corrupt (not valid JSON: {error}). "
            "Delete the folder and rebuild it with build_teacher_cache."
        ) from None
    if not isinstance(manifest, dict):
        raise ValueError(
            f"The cache manifest {str(path)!r} is corrupt (a JSON "
            f"{type(manifest).__name__}, not an object). Rebuild the cache."
        )
    for key, kind in _REQUIRED_KEYS.items():
        if not isinstance(manifest.get(key), kind):
            raise ValueError(
                f"The cache manifest {str(path)!r} is corrupt: {key!r} is "
                f"{manifest.get(key)!r}, expected a {kind.__name__}. Rebuild the cache."
            )
    if manifest["format"] != FORMAT or manifest["version"] != VERSION:
        raise ValueError(
            f"{str(path)!r} is format {manifest['format']!r} version "
            f"{manifest['version']}, but this keras_kd reads {FORMAT!r} version "
            f"{VERSION}. Rebuild the cache with this version."
        )
    if not manifest["complete"]:
        raise ValueError(
            f"The teacher cache in {str(directory)!r} is incomplete "
            f"({len(manifest['shards'])} shards written): its build was interrupted. "
            "Call build_teacher_cache again with the same arguments to resume it."
        )
    return manifest


class TeacherCache:
    """A teacher's outputs on a transfer set, on disk and memory-mapped.

    Get one from `build_teacher_cache` or `TeacherCache.open`; replay it with
    `dataset`. See the module docstring for the layout and its guarantees, and
    `open` for what each verification mode checks.

    Args:
        directory: The cache folder.
        manifest: The parsed, checked manifest.
        arrays: Per shard, its memory-mapped arrays by kind.
        hashed: Whether every file was checked against its SHA-256 when it was
            opened (`verify="full"`); if not, replay from memory hashes each file
            as it reads it.
        identities: Per shard, each file's `file_identity` when it was checked
            (default: now).

    Example:

    ```python
    cache = TeacherCache.open("runs/cache", teacher=teacher, x=x_train)
    train = cache.dataset(x_train, y_train, batch_size=128, temperature=4.0)
    ```
    """

    def __init__(
        self,
        directory: Path,
        manifest: dict,
        arrays: list[dict],
        *,
        hashed: bool = False,
        identities: list[dict] | None = None,
    ):
        self.directory = Path(directory)
        self.manifest = manifest
        self._arrays = arrays
        identities = identities or [
            {kind: file_identity(self._path(index, kind)) for kind in shard}
            for index, shard in enumerate(arrays)
        ]
        # Per shard, (path, identity when checked) of each file: replay refuses a
        # file that changed since. Plain strings keep the per-batch check cheap.
        self._watched = [
            [(str(self._path(index, kind)), identity) for kind, identity in shard.items()]
            for index, shard in enumerate(identities)
        ]
        self._hashed = [{kind: hashed for kind in shard} for shard in arrays]
        content = manifest["content"]
        self.num_examples: int = manifest["num_examples"]
        self.views: int = content["views"]
        self.classes: int = content["classes"]
        # Time steps of a sequence cache (outputs `(time, classes)` per
        # example), None for one vector of logits per example.
        self.time: int | None = content.get("time")
        self.streams: int = content["streams"]
        self.storage: str = content["storage"]
        self.top_k: int | None = content["top_k"]
        # How dropped classes are filled: None, their mean; T, mass kept at T.
        self.tail_temperature: float | None = content.get("tail_temperature")
        self.mean: str | None = content["mean"]
        self.seed: int = content["seed"]

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike,
        *,
        teacher: keras.Model | None = None,
        x=None,
        verify: str = "full",
    ) -> TeacherCache:
        """Opens a cache and checks it.

        What each `verify` mode checks when the cache is opened:

        | check | `"full"` | `"size"` |
        | --- | --- | --- |
        | manifest: valid, complete, shards cover every example | yes | yes |
        | each file present, its size, array shape and dtype | yes | yes |
        | SHA-256 of every byte of every file | yes | no |
        | SHA-256 of a fixed sample of each file (first 4 KiB and 64 blocks of 4 KiB spread over it; all of a file up to 260 KiB) | (implied) | yes |

        and, in both modes, at replay time (`dataset`, `logits`, and every
        batch of a memory-mapped replay): each file still has the device,
        inode, size and modification time it had when opened. A replay from
        memory (`dataset(in_memory=True)`) reads every file whole and checks
        its SHA-256 when `open` did not already do so.

        What is not caught:

        - `"size"`, memory-mapped replay (`in_memory=False`, and `logits`):
          changed bytes outside the sampled blocks of a file (for a shard of
          more than 260 KiB, e.g. a few flipped bits on disk, or an edit that
          keeps the file's size) are replayed as they are. Use `"full"` (the
          default) unless hashing the whole cache at every open is too slow.
        - Both modes: a change made while the replay reads the same rows;
          a change that keeps the file's inode, size and modification time
          (rewriting in place and then resetting the time with `os.utime`);
          a cache of keras-kd 0.1.0 has no sampled checksum, so `"size"` checks
          its sizes, shapes and dtypes only.

        Args:
            directory: The cache folder.
            teacher: If given, the cache must have been built from a teacher
                with exactly these weights.
            x: If given, the cache must have been built on exactly these inputs
                in this order.
            verify: `"full"` (default) or `"size"` (see above).

        Returns:
            The `TeacherCache`.

        Raises:
            FileNotFoundError: if the folder or its manifest is missing.
            ValueError: for a corrupt or incomplete manifest, a missing,
                truncated, reshaped or altered file, a different teacher, or
                different inputs.

        Example:

        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory()
        >>> teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> x = np.arange(12, dtype="float32").reshape(4, 3)
        >>> _ = build_teacher_cache(teacher, x, folder.name, verbose=False)
        >>> cache = TeacherCache.open(folder.name, teacher=teacher, x=x)
        >>> cache.num_examples, cache.classes, cache.time
        (4, 2, None)
        >>> folder.cleanup()
        """
        if verify not in VERIFY_MODES:
            raise ValueError(f"`verify` must be one of {VERIFY_MODES}, got {verify!r}.")
        cache = cls._open(Path(directory), verify=verify, hashed=verify == "full")
        if teacher is not None:
            cache.check_teacher(teacher)
        if x is not None:
            cache.check_inputs(x)
        return cache

    @classmethod
    def _open(cls, directory: Path, *, verify: str, hashed: bool) -> TeacherCache:
        manifest = _load_manifest(directory)
        arrays, identities = cls._open_shards(directory, manifest, verify)
        return cls(directory, manifest, arrays, hashed=hashed, identities=identities)

    def _path(self, index: int, kind: str) -> Path:
        return shard_file(self.directory, index, kind)

    def _check_unchanged(self, shards=None) -> None:
        """Refuses to replay a file replaced, rewritten or removed since `open`."""
        for index in range(len(self._arrays)) if shards is None else shards:
            for path, opened in self._watched[index]:
                try:
                    current = file_identity(path)
                except OSError:
                    current = None
                if current != opened:
                    raise ValueError(
                        f"The cache file {path!r} was rewritten, replaced or removed "
                        "after the cache was opened, so it may no longer hold the "
                        "logits that were checked. Open the cache again with "
                        "TeacherCache.open (or call build_teacher_cache again to "
                        "rebuild it)."
                    )

    def _in_memory(self, index: int, kind: str) -> np.ndarray:
        """A file's array in memory, its SHA-256 checked unless `open` did."""
        if self._hashed[index][kind]:
            return np.asarray(self._arrays[index][kind])
        path = self._path(index, kind)
        data = path.read_bytes()
        record = self.manifest["shards"][index]["files"][kind]
        if hashlib.sha256(data).hexdigest() != record.get("sha256"):
            raise ValueError(_altered_message(path))
        self._check_unchanged([index])
        self._hashed[index][kind] = True
        return np.load(io.BytesIO(data))

    @staticmethod
    def _expected_shape(manifest: dict, kind: str, rows: int) -> tuple:
        content = manifest["content"]
        lead = (rows, content["views"], content["streams"])
        if content.get("time") is not None:
            lead += (content["time"],)
        if kind == "logits":
            return lead + (content["classes"],)
        if kind in ("indices", "values"):
            return lead + (content["top_k"],)
        return lead

    @classmethod
    def _open_shards(
        cls, directory: Path, manifest: dict, verify: str
    ) -> tuple[list[dict], list[dict]]:
        """Per shard, its checked arrays by kind and their files' identities."""
        content = manifest["content"]
        files = _FULL_FILES if content.get("storage") == "full" else _TOP_K_FILES
        expected_start = 0
        arrays, identities = [], []
        for position, shard in enumerate(manifest["shards"]):
            try:
                index, start, stop = shard["index"], shard["start"], shard["stop"]
                records = {kind: shard["files"][kind] for kind in files}
            except (KeyError, TypeError):
                raise ValueError(
                    f"The cache manifest in {str(directory)!r} is corrupt: shard entry "
                    f"{position} lacks index/start/stop/files. Rebuild the cache."
                ) from None
            if index != position or start != expected_start or stop <= start:
                raise ValueError(
                    f"The cache manifest in {str(directory)!r} is corrupt: shard "
                    f"{position} covers examples [{start}, {stop}) but should start at "
                    f"{expected_start}. Rebuild the cache."
                )
            expected_start = stop
            opened, identity = {}, {}
            for kind in files:
                path = shard_file(directory, index, kind)
                opened[kind], identity[kind] = cls._open_file(
                    path, records[kind], manifest, stop - start, verify
                )
            arrays.append(opened)
            identities.append(identity)
        if expected_start != manifest["num_examples"]:
            raise ValueError(
                f"The cache in {str(directory)!r} covers {expected_start} examples but "
                f"its manifest says {manifest['num_examples']}. Rebuild the cache."
            )
        return arrays, identities

    @classmethod
    def _open_file(cls, path: Path, record: dict, manifest, rows: int, verify: str):
        if not path.is_file():
            raise ValueError(
                f"The cache file {str(path)!r} is missing. Rebuild the cache (call "
                "build_teacher_cache again: it rewrites only damaged shards)."
            )
        identity = file_identity(path)
        size = identity[2]
        if size != record.get("bytes"):
            raise ValueError(
                f"The cache file {str(path)!r} has {size} bytes but the manifest "
                f"recorded {record.get('bytes')}: it is truncated or was rewritten. "
                "Call build_teacher_cache again to rebuild the damaged shards."
            )
        try:
            array = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as error:
            raise ValueError(
                f"The cache file {str(path)!r} cannot be read as a .npy array ({error}). "
                "Call build_teacher_cache again to rebuild the damaged shards."
            ) from None
        expected = cls._expected_shape(manifest, path.name.split(".")[1], rows)
        if tuple(array.shape) != expected or array.dtype.str != record.get("dtype"):
            raise ValueError(
                f"The cache file {str(path)!r} holds an array of shape "
                f"{tuple(array.shape)} and dtype {array.dtype.str}, but the manifest "
                f"expects {expected} and {record.get('dtype')}. Rebuild the cache."
            )
        if verify == "full" and sha256_file(path) != record.get("sha256"):
            raise ValueError(_altered_message(path))
        sample = record.get("sample_sha256")
        if verify == "size" and sample is not None and sample_sha256(path) != sample:
            raise ValueError(
                f"The cache file {str(path)!r} does not match the checksum of its "
                "sampled blocks in the manifest: its content changed after the build. "
                "Call build_teacher_cache again to rebuild the damaged shards."
            )
        return array, identity

    def check_teacher(self, teacher: keras.Model) -> None:
        """Raises a `ValueError` unless the cache was built from `teacher`'s weights.

        Args:
            teacher: The teacher the caller believes the cache holds.

        Raises:
            ValueError: if the weight fingerprints differ (a stale cache).

        Example:

        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory()
        >>> teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> cache = build_teacher_cache(teacher, np.ones((4, 3), "float32"), folder.name, verbose=False)
        >>> cache.check_teacher(teacher)
        >>> retrained = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> cache.check_teacher(retrained)
        Traceback (most recent call last):
        ...
        ValueError: The teacher cache in ... is stale: ...
        >>> folder.cleanup()
        """
        if teacher_fingerprint(teacher) != self.manifest["teacher_fingerprint"]:
            raise ValueError(
                f"The teacher cache in {str(self.directory)!r} is stale: it was built "
                "from a teacher with other weights than the one given. Rebuild it with "
                "build_teacher_cache(teacher, x, directory)."
            )

    def check_inputs(self, x) -> None:
        """Raises a `ValueError` unless `x` are the cached inputs in the cached order.

        Args:
            x: The transfer set's inputs.

        Raises:
            ValueError: for another number of examples, shape or dtype, or when
                a shard's inputs differ (reordered or changed data), naming the
                first differing range of examples.

        Example:

        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory()
        >>> teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> x = np.arange(12, dtype="float32").reshape(4, 3)
        >>> cache = build_teacher_cache(teacher, x, folder.name, verbose=False)
        >>> cache.check_inputs(x)
        >>> cache.check_inputs(x[::-1])
        Traceback (most recent call last):
        ...
        ValueError: `x` differs from the cached transfer set in examples [0, 4): ...
        >>> folder.cleanup()
        """
        x = _as_array(x)
        self._check_input_layout(x)
        for shard in self.manifest["shards"]:
            start, stop = shard["start"], shard["stop"]
            if _hash_array(x[start:stop]) != shard["inputs_sha256"]:
                raise ValueError(
                    f"`x` differs from the cached transfer set in examples [{start}, "
                    f"{stop}): the data were reordered or changed since the cache was "
                    "built, so targets would not match their inputs. Give the inputs "
                    "in the original order, or rebuild the cache."
                )

    def _check_input_layout(self, x) -> None:
        """Raises a `ValueError` unless `x` has the cached count, shape and dtype."""
        size = _num_examples(x)
        manifest = self.manifest
        if size != self.num_examples:
            raise ValueError(
                f"`x` has {size} examples but the cache holds {self.num_examples}. "
                "Replay the cache with the transfer set it was built on."
            )
        shape, dtype = list(x.shape[1:]), np.dtype(x.dtype).str
        if shape != manifest["input_shape"] or dtype != manifest["input_dtype"]:
            padded = ""
            if self.time is not None:
                padded = (
                    f" The cache holds sequences of {self.time} time steps: pad the "
                    "inputs to the length they had at the build (or rebuild the "
                    "cache at the new length)."
                )
            raise ValueError(
                f"`x` has example shape {tuple(shape)} and dtype {dtype}, but the cache "
                f"was built on {tuple(manifest['input_shape'])} and "
                f"{manifest['input_dtype']}. Give the same preprocessed inputs.{padded}"
            )

    def _check_time_axis(self, name: str, values) -> None:
        """Refuses per-token labels or weights of another length than the cache's."""
        if self.time is None or values is None or values.ndim < 2:
            return
        if values.shape[1] != self.time:
            raise ValueError(
                f"`{name}` has shape {values.shape}, but the cache holds sequences of "
                f"{self.time} time steps: give (examples,) or (examples, {self.time}) "
                "values, padded like the inputs."
            )

    @property
    def num_rows(self) -> int:
        """Examples times views: the rows one replay epoch yields."""
        return self.num_examples * self.views

    def bytes_per_example(self) -> float:
        """Bytes of cache files per example (all views and streams), headers included."""
        total = sum(
            record["bytes"] for shard in self.manifest["shards"] for record in shard["files"].values()
        )
        return total / self.num_examples

    def _gather(self, rows: np.ndarray) -> list[np.ndarray]:
        """Stored arrays for `rows` (example * views + view), in the order given."""
        examples, views = np.divmod(rows, self.views)
        shard_size = self.manifest["shard_size"]
        shard_ids = examples // shard_size
        self._check_unchanged(np.unique(shard_ids))
        kinds = list(self._arrays[0])
        out = {
            kind: np.empty((len(rows),) + self._arrays[0][kind].shape[2:], self._arrays[0][kind].dtype)
            for kind in kinds
        }
        for shard in np.unique(shard_ids):
            mask = shard_ids == shard
            local = examples[mask] - shard * shard_size
            for kind in kinds:
                out[kind][mask] = self._arrays[shard][kind][local, views[mask]]
        return [out[kind] for kind in kinds]

    def _needs_temperature(self) -> bool:
        return self.mean == "arithmetic" and self.streams > 1

    def _check_temperature(self, temperature):
        if self._needs_temperature() and temperature is None:
            raise ValueError(
                "This cache holds the members of an arithmetic-mean ensemble, whose "
                "combined distribution depends on the temperature: pass "
                "`temperature=` (the Distiller's temperature)."
            )
        if (
            self.tail_temperature is not None
            and temperature is not None
            and float(temperature) != self.tail_temperature
        ):
            warnings.warn(
                f"This top-k cache keeps the dropped classes' mass exact at "
                f"T = {self.tail_temperature:g} (tail_temperature), but is replayed at "
                f"T = {float(temperature):g}: the replayed soft targets are further "
                "from the teacher's. Build it with tail_temperature equal to the "
                "Distiller's temperature.",
                stacklevel=3,
            )

    def _targets(self, stored: list, temperature):
        """Teacher logits `(rows, [time,] classes)` from stored `(rows, streams, ...)`."""
        if self.storage == "full":
            logits = stored[0]
        else:
            # Per example, or per token of a sequence: the last axis is expanded.
            logits = expand_top_k(stored[0], stored[1], stored[2], self.classes)
        if self.streams == 1:
            return logits[:, 0]
        if self.time is not None:
            # combine_logits wants the members second to last: (rows, time, members, C).
            logits = tf.transpose(logits, [0, 2, 1, 3])
        return combine_logits(logits, temperature, self.mean)

    def logits(self, rows=None, *, temperature: float | None = None) -> np.ndarray:
        """The cached teacher logits as a float32 array `(len(rows), [time,] classes)`.

        Args:
            rows: Row ids `example * views + view`; default all rows in order.
            temperature: Needed (only) for an arithmetic-mean ensemble.

        Returns:
            Float32 array; top-k storage is expanded, members are combined.

        Raises:
            ValueError: for a missing temperature or rows out of range.

        Example:

        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory()
        >>> teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(10)])
        >>> x = np.ones((4, 3), "float32")
        >>> cache = build_teacher_cache(teacher, x, folder.name, top_k=3, verbose=False)
        >>> cache.logits([0, 1]).shape
        (2, 10)
        >>> folder.cleanup()
        """
        self._check_temperature(temperature)
        rows = np.arange(self.num_rows) if rows is None else np.asarray(rows, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_rows):
            raise ValueError(f"`rows` must lie in [0, {self.num_rows}), got {rows}.")
        stored = [tf.constant(a) for a in self._gather(rows)]
        return self._targets(stored, temperature).numpy().astype(np.float32)

    def _graph_fetch(self, x, extras: list, kinds: list[str]):
        """Row fetcher in TensorFlow ops, on copies of the arrays in memory."""
        views = self.views
        tables = [tf.convert_to_tensor(np.asarray(a)) for a in (x, *extras)]
        stored = [
            tf.convert_to_tensor(
                np.concatenate([self._in_memory(i, kind) for i in range(len(self._arrays))])
            )
            for kind in kinds
        ]

        def fetch(rows):
            examples = rows // views
            positions = tf.stack([examples, rows % views], axis=1)
            return [tf.gather(t, examples) for t in tables] + [
                tf.gather_nd(t, positions) for t in stored
            ]

        return fetch

    def _numpy_fetch(self, x, extras: list, kinds: list[str]):
        """Row fetcher reading memory-mapped arrays through `tf.numpy_function`."""
        views = self.views
        specs = [(a.dtype, a.shape[1:]) for a in (x, *extras)]
        specs += [(self._arrays[0][k].dtype, self._arrays[0][k].shape[2:]) for k in kinds]

        def gather(rows):
            examples = rows // views
            return [x[examples], *(a[examples] for a in extras), *self._gather(rows)]

        def fetch(rows):
            dtypes = [tf.as_dtype(np.dtype(dtype)) for dtype, _ in specs]
            values = tf.numpy_function(gather, [rows], dtypes, stateful=False)
            return [
                tf.ensure_shape(v, [None, *shape]) for v, (_, shape) in zip(values, specs)
            ]

        return fetch

    def dataset(
        self,
        x,
        y=None,
        sample_weight=None,
        *,
        batch_size: int = 128,
        shuffle: bool = True,
        seed: int = 0,
        temperature: float | None = None,
        augment: Callable | None = None,
        drop_remainder: bool = False,
        check_order: bool = True,
        in_memory: bool | None = None,
    ) -> tf.data.Dataset:
        """Replays the cache: `({"inputs": x, "teacher_logits": t}, y[, w])` batches.

        `t` is `(batch, classes)`, or `(batch, time, classes)` for a sequence
        cache (labels and weights may then be per token, `(examples, time)`).

        Each epoch visits every row (`example * views + view`) once. Shuffling
        permutes row ids, then inputs, labels, weights and teacher outputs are
        all gathered with the same ids, so they stay aligned; with augmentation
        each row's input is recomputed from its stateless seed, so it is exactly
        the input the teacher saw.

        Args:
            x: The transfer set's inputs, the same array (same order) the cache
                was built on; an `np.memmap` works.
            y: Optional labels aligned with `x` (omit for an unlabeled transfer
                set: the Distiller then trains on the soft term alone).
            sample_weight: Optional per-example weights aligned with `x`
                (`(examples,)`, or `(examples, time)` per token of a sequence
                cache).
            batch_size: Rows per batch.
            shuffle: Reshuffle the rows every epoch.
            seed: Shuffle seed.
            temperature: The Distiller's temperature; required for an
                arithmetic-mean ensemble cache, ignored otherwise.
            augment: The augmentation the cache was built with (required when
                it was built with one; it is matched by name).
            drop_remainder: Drop the last partial batch.
            check_order: Hash `x` and compare with the cache (recommended; costs
                one pass over `x`).
            in_memory: Gather rows with TensorFlow ops from in-memory copies of
                `x` and of the cache (fast, no Python in the input pipeline), or,
                if False, read memory-mapped arrays through `tf.numpy_function`
                (for data larger than RAM; delete the dataset's iterators before
                the interpreter exits, as with any Python function in tf.data).
                Default: False when `x` is an `np.memmap`, else True. In memory,
                each file is read whole and checked against its SHA-256 unless
                `open` did so; memory-mapped, every batch first checks that the
                files it reads are unchanged since `open` (see `open`).

        Returns:
            A `tf.data.Dataset` for `Distiller.fit`.

        Raises:
            ValueError: for inputs that do not match the cache (another
                shape: for a sequence cache, another padded length), misaligned
                `y`/`sample_weight` (or of another time length), a missing temperature or augmentation, or a
                cache file changed since `open` (memory-mapped replay raises
                this while iterating, as a TensorFlow error carrying the message).

        Example:

        >>> import tempfile
        >>> from keras_kd import Distiller
        >>> folder = tempfile.TemporaryDirectory()
        >>> teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
        >>> x, y = np.ones((6, 3), "float32"), np.arange(6) % 4
        >>> cache = build_teacher_cache(teacher, x, folder.name, verbose=False)
        >>> train = cache.dataset(x, y, batch_size=4)
        >>> features, labels = next(iter(train))
        >>> sorted(features), tuple(features["teacher_logits"].shape)
        (['inputs', 'teacher_logits'], (4, 4))
        >>> student = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
        >>> distiller = Distiller(student=student, teacher=None, temperature=2.0)
        >>> distiller.compile(optimizer="sgd")
        >>> history = distiller.fit(train, epochs=2, verbose=0)
        >>> len(history.history["loss"])
        2
        >>> folder.cleanup()
        """
        self._check_unchanged()
        x = _as_array(x)
        size = _num_examples(x)
        if check_order:
            self.check_inputs(x)
        else:
            self._check_input_layout(x)
        if sample_weight is not None and y is None:
            raise ValueError(
                "`sample_weight` without `y`: Keras would read the weights as labels. "
                "Give the labels too; an unlabeled transfer set trains on the soft "
                "term alone, where per-example weights are not supported."
            )
        y = _check_aligned("y", y, size)
        sample_weight = _check_aligned("sample_weight", sample_weight, size)
        self._check_time_axis("y", y)
        self._check_time_axis("sample_weight", sample_weight)
        self._check_temperature(temperature)
        built_with = self.manifest["content"]["augment"]
        given = _augment_name(augment)
        if given != built_with:
            raise ValueError(
                f"The cache was built with augment={built_with!r} but `augment` is "
                f"{given!r}. Replay with the same augmentation function, so the "
                "student sees the inputs the teacher saw."
            )
        if not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")
        views, base_seed = self.views, self.seed
        extras = [a for a in (y, sample_weight) if a is not None]
        kinds = list(self._arrays[0])
        if in_memory is None:
            in_memory = not isinstance(x, np.memmap)
        if in_memory:
            fetch = self._graph_fetch(x, extras, kinds)
        else:
            fetch = self._numpy_fetch(x, extras, kinds)
        output_spec = None
        if augment is not None:
            first = augment(tf.convert_to_tensor(x[:1])[0], _view_seeds([0], views, base_seed)[0])
            output_spec = tf.TensorSpec(first.shape, first.dtype)

        def load(rows):
            rows = tf.sort(rows)
            values = fetch(rows)
            inputs, extra = values[0], values[1 : 1 + len(extras)]
            stored = values[1 + len(extras) :]
            if augment is not None:
                inputs = _apply_augment(augment, inputs, rows, views, base_seed, output_spec)
            # An arithmetic ensemble's replay carries its temperature, so that the
            # Distiller can check that it trains at the same one.
            features = make_batch(
                inputs,
                self._targets(stored, temperature),
                temperature if self._needs_temperature() else None,
            )
            return (features, *extra) if extra else features

        rows = tf.data.Dataset.range(self.num_rows)
        if shuffle:
            rows = rows.shuffle(self.num_rows, seed=seed, reshuffle_each_iteration=True)
        rows = rows.batch(batch_size, drop_remainder=drop_remainder)
        return rows.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


__all__ = [
    "TeacherCache",
    "build_teacher_cache",
    "expand_top_k",
    "teacher_fingerprint",
]

"""Bad inputs and faults around files and data: the teacher cache, exports,
teacher ensembles and the MNIST loader.

Every test here failed before its fix: a user's file was deleted or
overwritten, a NaN input or a changed cache file was used without a word, a
loader read other data than the published one or retried a download for
minutes, or the error came from deep inside TensorFlow or Keras.
"""

import json
import os
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_FEATURES

from keras_kd import export
from keras_kd.cache import TeacherCache, build_teacher_cache
from keras_kd.cache_storage import BLOCK_BYTES, _sample_offsets
from keras_kd.datasets import mnist
from keras_kd.files import OWNER_FILE, FolderNotOwnedError, claim_folder
from keras_kd.teachers import TeacherEnsemble

FEATURES, CLASSES, N = TINY_FEATURES, 4, 40


def _dense(seed, features=FEATURES, classes=CLASSES, name=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((features,)), keras.layers.Dense(classes)], name=name
    )


def _x(n=N, features=FEATURES, seed=0):
    return np.random.default_rng(seed).normal(size=(n, features)).astype("float32")


def _build(teacher, x, directory, **kwargs):
    kwargs.setdefault("shard_size", 16)
    kwargs.setdefault("verbose", False)
    return build_teacher_cache(teacher, x, directory, **kwargs)


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _rewrite_in_place(path: Path) -> None:
    """Flips the last byte of `path` in place (same inode, same size, new mtime)."""
    time.sleep(0.05)  # file-system timestamps tick every few milliseconds
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    with open(path, "r+b") as handle:
        handle.write(bytes(data))


class ImputingLayer(keras.layers.Layer):
    """Replaces NaN by 0, as a teacher's own preprocessing may: NaN in, finite out."""

    def call(self, x):
        return tf.where(tf.math.is_nan(x), tf.zeros_like(x), x)


# The teacher cache: nothing of the user's lost.


def test_cache_refuses_a_folder_holding_the_users_manifest_and_npy(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"my": "notes"}')
    np.save(folder / "shard-notes.npy", np.arange(3))
    before = _snapshot(folder)
    with pytest.raises(FolderNotOwnedError, match=r"manifest\.json, shard-notes\.npy"):
        _build(_dense(1), _x(), folder)
    assert _snapshot(folder) == before


def test_cache_refuses_a_folder_holding_only_a_users_manifest(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"format": "my own"}')
    with pytest.raises(ValueError, match=r"files keras-kd did not write \(manifest\.json\)"):
        _build(_dense(1), _x(), folder)
    assert (folder / "manifest.json").read_text() == '{"format": "my own"}'


def test_cache_rebuild_keeps_files_the_user_put_in_its_folder(tmp_path):
    folder = tmp_path / "cache"
    _build(_dense(1), _x(), folder)
    (folder / "notes.txt").write_text("mine")
    np.save(folder / "shard-notes.npy", np.arange(3))
    rebuilt = _build(_dense(2), _x(), folder)  # another teacher: the cache is replaced
    assert (folder / "notes.txt").read_text() == "mine"
    np.testing.assert_array_equal(np.load(folder / "shard-notes.npy"), np.arange(3))
    np.testing.assert_allclose(rebuilt.logits(), _dense(2)(_x()).numpy(), atol=1e-2)


def test_cache_of_version_0_1_0_without_a_marker_is_adopted_and_resumed(tmp_path):
    folder = tmp_path / "cache"
    x = _x()
    _build(_dense(1), x, folder)
    (folder / OWNER_FILE).unlink()  # as keras-kd 0.1.0 left it
    (folder / "shard-00001.logits.npy.tmp").write_bytes(b"half")  # 0.1.0's temporary
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*.npy")}
    reopened = _build(_dense(1), x, folder)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*.npy")} == kept
    assert not (folder / "shard-00001.logits.npy.tmp").exists()
    assert (folder / OWNER_FILE).is_file()
    np.testing.assert_allclose(reopened.logits(), _dense(1)(x).numpy(), atol=1e-2)


def test_cache_removes_the_partial_file_of_a_killed_write_but_nothing_else(tmp_path):
    folder = tmp_path / "cache"
    _build(_dense(1), _x(), folder)
    partial = folder / ".shard-00001.logits.npy.k2j4x9ab.npy"  # atomic_path's temporary
    partial.write_bytes(b"half a shard")
    (folder / ".my-hidden-notes").write_text("mine")
    _build(_dense(1), _x(), folder)
    assert not partial.exists()
    assert (folder / ".my-hidden-notes").read_text() == "mine"


@pytest.mark.parametrize("where", ["is_a_file", "under_a_file"])
def test_cache_folder_that_is_or_lies_under_a_file(tmp_path, where):
    a_file = tmp_path / "data.bin"
    a_file.write_bytes(b"mine")
    directory = a_file if where == "is_a_file" else a_file / "cache"
    with pytest.raises(ValueError, match="is a file|a part of that path is a file"):
        _build(_dense(1), _x(), directory)
    assert a_file.read_bytes() == b"mine"


def test_cache_refuses_a_folder_of_another_keras_kd_kind(tmp_path):
    claim_folder(tmp_path / "run", kind="run")
    with pytest.raises(ValueError, match="as a 'run' folder, not a 'teacher-cache' folder"):
        _build(_dense(1), _x(), tmp_path / "run")


# The teacher cache: inputs.


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_cache_refuses_a_non_finite_input_naming_the_example(tmp_path, bad):
    teacher = keras.Sequential(
        [keras.Input((FEATURES,)), ImputingLayer(), keras.layers.Dense(CLASSES)]
    )
    x = _x()
    x[21, 2] = bad
    if np.isnan(bad):  # the teacher gives finite logits for it: nothing else would notice
        assert np.isfinite(teacher(x[21:22]).numpy()).all()
    with pytest.raises(ValueError, match=r"`x\[21\]` contains NaN or Inf"):
        _build(teacher, x, tmp_path / "cache")


def test_cache_names_the_example_whose_teacher_output_is_not_finite(tmp_path):
    class Blowup(keras.layers.Layer):
        def call(self, x):  # NaN for examples whose first feature exceeds 1.5
            return tf.where(x[:, :1] > 1.5, np.nan, x)

    teacher = keras.Sequential([keras.Input((FEATURES,)), Blowup(), keras.layers.Dense(CLASSES)])
    x = _x()
    first = int(np.flatnonzero(x[:, 0] > 1.5)[0])
    with pytest.raises(ValueError, match=rf"outputs for example {first} \(view 0\)"):
        _build(teacher, x, tmp_path / "cache")


def test_cache_refuses_inputs_of_another_width_than_the_teacher_takes(tmp_path):
    with pytest.raises(ValueError, match=r"`x` holds examples of shape \(6,\).*teacher takes inputs of shape \(5,\)"):
        _build(_dense(1), _x(features=6), tmp_path / "cache")


def test_cache_refuses_non_numeric_inputs(tmp_path):
    x = np.array([["a"] * FEATURES] * 4)
    with pytest.raises(TypeError, match="needs numeric inputs"):
        _build(_dense(1), x, tmp_path / "cache")


# The teacher cache: integrity after `open`.


def test_memory_mapped_replay_detects_a_shard_rewritten_after_open(tmp_path):
    x = _x()
    _build(_dense(1), x, tmp_path / "cache")
    np.save(tmp_path / "x.npy", x)
    x_mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    cache = TeacherCache.open(tmp_path / "cache")
    replay = cache.dataset(x_mapped, np.arange(N) % CLASSES, batch_size=8)
    assert sum(1 for _ in replay) == 5  # the first epoch is fine
    _rewrite_in_place(tmp_path / "cache" / "shard-00001.logits.npy")
    # Raised inside the tf.data pipeline, so TensorFlow wraps it; the message is ours.
    with pytest.raises(tf.errors.InvalidArgumentError, match="shard-00001.logits.npy' was rewritten"):
        for _ in replay:
            pass
    with pytest.raises(ValueError, match="was rewritten, replaced or removed after the cache was opened"):
        cache.logits()


def test_replay_refuses_a_shard_replaced_after_open(tmp_path):
    x = _x()
    _build(_dense(1), x, tmp_path / "cache")
    cache = TeacherCache.open(tmp_path / "cache")
    _build(_dense(2), x, tmp_path / "other")
    os.replace(
        tmp_path / "other" / "shard-00000.logits.npy",
        tmp_path / "cache" / "shard-00000.logits.npy",
    )
    with pytest.raises(ValueError, match="shard-00000.logits.npy' was rewritten, replaced"):
        cache.dataset(x, np.arange(N) % CLASSES)


def test_size_verification_catches_flipped_bytes_in_a_small_shard(tmp_path):
    _build(_dense(1), _x(), tmp_path / "cache")
    shard = tmp_path / "cache" / "shard-00002.logits.npy"
    data = bytearray(shard.read_bytes())
    for offset in range(len(data) - 60, len(data)):  # 60 flipped bytes, same size
        data[offset] ^= 0x5A
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="shard-00002.logits.npy' does not match the checksum of its sampled"):
        TeacherCache.open(tmp_path / "cache", verify="size")


def test_size_verification_limit_is_as_documented_and_memory_replay_hashes(tmp_path):
    """Outside the sampled blocks of a large shard, `verify="size"` cannot see a
    change (documented); a replay from memory reads the files whole and does."""
    x = _x(n=1024)
    teacher = _dense(1, classes=80)  # 1024 * 80 * 4 bytes: a 320 KiB shard
    _build(teacher, x, tmp_path / "cache", storage_dtype="float32", shard_size=1024)
    shard = tmp_path / "cache" / "shard-00000.logits.npy"
    data = bytearray(shard.read_bytes())
    starts = _sample_offsets(len(data))
    hidden = next(o + BLOCK_BYTES for o, after in zip(starts, starts[1:]) if o + BLOCK_BYTES < after)
    data[hidden] ^= 0xFF  # a byte between two sampled blocks
    shard.write_bytes(bytes(data))
    opened = TeacherCache.open(tmp_path / "cache", verify="size")  # the documented gap
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        opened.dataset(x, batch_size=64, in_memory=True)
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        TeacherCache.open(tmp_path / "cache")  # "full", the default


# Export: the output folder, checked before any conversion runs.


def _unwritable_folder(tmp_path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if Path("/proc/1").is_dir() and not os.access("/proc/1", os.W_OK):
        return Path("/proc/1")  # not writable even for root
    pytest.skip("no folder here is unwritable for this user")


@pytest.mark.parametrize(
    "case, match",
    [
        ("under_a_file", r"^`output_dir`: Cannot create the folder .*: .*data.bin is a file"),
        ("existing_file", r"^`output_dir`: .*data.bin is a file, not a folder"),
        ("users_folder", r"^`output_dir`: .*already holds files keras-kd did not write \(notes.txt\)"),
        ("unwritable", r"^`output_dir`: Cannot write to .* \(permission denied or a read-only"),
        ("other_kind", r"^`output_dir`: .* as a 'run' folder, not a 'export' folder"),
    ],
)
def test_export_refuses_an_unusable_output_dir_before_converting(
    tiny_student, tmp_path, no_conversion, case, match
):
    a_file = tmp_path / "data.bin"
    a_file.write_bytes(b"mine")
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    output_dir = {
        "under_a_file": a_file / "export",
        "existing_file": a_file,
        "users_folder": users,
        "unwritable": lambda: _unwritable_folder(tmp_path) / "export",
        "other_kind": lambda: claim_folder(tmp_path / "run", kind="run"),
    }[case]
    output_dir = output_dir() if callable(output_dir) else output_dir
    with pytest.raises(ValueError, match=match):
        export.export_student(tiny_student, output_dir, x_test=_x())
    assert a_file.read_bytes() == b"mine"
    assert _snapshot(users) == {"notes.txt": b"mine"}


@pytest.mark.parametrize(
    "argument, value, match",
    [
        ("x_test", _x(features=6), r"`x_test` holds examples of shape \(6,\), but the student takes inputs of shape \(5,\)"),
        ("representative_data", _x(features=7), r"`representative_data` holds examples of shape \(7,\)"),
        ("x_test", np.where(np.arange(N)[:, None] == 9, np.nan, _x()), r"`x_test\[9\]` contains NaN"),
        ("x_test", _x()[:0], "`x_test` is empty"),
        ("y_test", np.full(N, 3), r"`y_test\[0\]` is 3, not a class id of the student's 3 outputs"),
        ("y_test", np.full(N, 1.5), r"`y_test\[0\]` is 1.5"),
        ("y_test", np.zeros(N - 1, int), "has 39 labels for 40 examples"),
    ],
)
def test_export_refuses_bad_data_before_converting(
    tiny_student, tmp_path, no_conversion, argument, value, match
):
    kwargs = {"x_test": _x(), "representative_data": _x(), argument: value}
    with pytest.raises(ValueError, match=match):
        export.export_student(tiny_student, tmp_path / "export", **kwargs)
    assert not (tmp_path / "export").exists()


def test_export_again_into_its_folder_keeps_the_users_files(tiny_student, tmp_path):
    folder = tmp_path / "export"
    export.export_student(tiny_student, folder, x_test=_x(), formats=["saved_model"], latency_examples=2)
    (folder / "notes.txt").write_text("mine")
    export.export_student(tiny_student, folder, x_test=_x(), formats=["saved_model"], latency_examples=2)
    assert (folder / "notes.txt").read_text() == "mine"
    assert json.loads((folder / "parity.json").read_text())["exports"][0]["top1_agreement"] == 1.0


def test_export_folder_of_version_0_1_0_is_adopted(tiny_student, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "student_float32.tflite").write_bytes(b"old")
    (folder / "parity.md").write_text("old")
    # 0.1.0 wrote no marker; its parity.json, listing each exported model, is the proof.
    row = {"format": "tflite_float32", "path": str(folder / "student_float32.tflite"),
           "top1_agreement": 1.0, "max_abs_logit_diff": 0.0}
    (folder / "parity.json").write_text(json.dumps({"exports": [row]}))
    export.export_student(tiny_student, folder, x_test=_x(), formats=["tflite_float32"], latency_examples=2)
    assert (folder / "student_float32.tflite").read_bytes() != b"old"
    assert (folder / OWNER_FILE).is_file()


def test_failed_saved_model_export_leaves_the_previous_one_whole(tiny_student, tmp_path, monkeypatch):
    folder = tmp_path / "export"
    export.export_student(tiny_student, folder, x_test=_x(), formats=["saved_model"], latency_examples=2)
    before = sorted(str(p.relative_to(folder)) for p in (folder / "saved_model").rglob("*"))

    def fails_midway(model, path):
        (Path(path) / "variables").mkdir(parents=True)
        (Path(path) / "saved_model.pb").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(export, "export_saved_model", fails_midway)
    with pytest.raises(OSError, match="disk full"):
        export.export_student(tiny_student, folder, x_test=_x(), formats=["saved_model"])
    after = sorted(str(p.relative_to(folder)) for p in (folder / "saved_model").rglob("*"))
    assert after == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".saved_model")]
    served = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"]
    assert served is not None


# Teacher ensembles.


def test_ensemble_members_taking_different_input_sizes_are_named():
    members = [_dense(1, features=5), _dense(2, features=5), _dense(3, features=6, name="wide_teacher")]
    with pytest.raises(
        ValueError,
        match=r"inputs of different shapes: models\[0\] .*: \(5,\), .*models\[2\] \('wide_teacher'\): \(6,\)",
    ):
        TeacherEnsemble(members)


def test_ensemble_members_with_different_class_counts_are_named():
    members = [_dense(1, classes=4), _dense(2, classes=5, name="five_classes")]
    with pytest.raises(ValueError, match=r"output sizes differ: \[4, 5\] .*models\[1\] \('five_classes'\): 5"):
        TeacherEnsemble(members)


def test_ensemble_called_on_inputs_of_the_wrong_width_names_the_member():
    ensemble = TeacherEnsemble([_dense(1), _dense(2)], mean="arithmetic")
    with pytest.raises(ValueError, match=r"ensemble member 0 .* takes inputs of shape \(5,\)"):
        ensemble.logits_at_temperature(_x(features=6), 2.0)


# The MNIST loader.


def _write_idx(folder: Path, stem: str, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    (folder / stem).write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_files_with_valid_headers_but_other_content_are_refused(tmp_path):
    for stem, magic, dims in mnist._FILES.values():
        _write_idx(tmp_path, stem, np.ones(dims, np.uint8), magic)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte' has a valid header.*MD5"):
        mnist.load_mnist(tmp_path)
    (x_train, _), _ = mnist.load_mnist(tmp_path, verify=False)  # e.g. Fashion-MNIST
    assert x_train.shape == (60000, 28, 28)


def test_mnist_file_with_one_changed_pixel_is_refused_even_after_a_good_load(data_dir, tmp_path):
    arrays = [a.copy() for split in mnist.load_mnist(data_dir) for a in split]
    for (stem, magic, _), array in zip(mnist._FILES.values(), arrays):
        _write_idx(tmp_path, stem, array, magic)
    mnist.load_mnist(tmp_path)  # verified, and remembered while the files are unchanged
    time.sleep(0.05)  # file-system timestamps tick every few milliseconds
    arrays[2][123, 14, 14] ^= 0x01
    _write_idx(tmp_path, "t10k-images-idx3-ubyte", arrays[2], 2051)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte' has a valid header"):
        mnist.load_mnist(tmp_path)


def test_mnist_without_a_folder_or_network_fails_in_seconds(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_KD_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setattr(mnist, "DOWNLOAD_HOST", "keras-kd-offline.invalid")
    monkeypatch.setattr(mnist.urllib.request, "getproxies", lambda: {})
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="could not be reached.*nothing was downloaded.*--data-dir"):
        mnist.load_mnist()
    assert time.perf_counter() - start < mnist.CONNECT_TIMEOUT_SECONDS + 2
    assert not (tmp_path / "keras").exists() and not (tmp_path / "tfds").exists()

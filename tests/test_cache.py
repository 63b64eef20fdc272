"""Teacher-output cache: replay equals online distillation, top-k, safety, resume, views."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_kd.cache import TeacherCache, build_teacher_cache, expand_top_k
from keras_kd.distiller import INPUTS, TEACHER_LOGITS, Distiller
from keras_kd.teachers import TeacherEnsemble

FEATURES, CLASSES, N = 5, 4, 40


def _dense(seed, classes=CLASSES):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(classes)])


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(N, FEATURES)).astype("float32")


@pytest.fixture
def y():
    return np.arange(N) % CLASSES


@pytest.fixture
def teacher():
    model = _dense(1)
    model.set_weights([w * 4.0 for w in model.get_weights()])
    return model


def _build(teacher, x, directory, **kwargs):
    kwargs.setdefault("shard_size", 16)
    kwargs.setdefault("verbose", False)
    return build_teacher_cache(teacher, x, directory, **kwargs)


def test_cached_training_step_equals_online_step(x, y, tmp_path):
    """Same batch, same student, same optimizer: identical weights after a step."""
    temperature = 3.0
    ensemble = TeacherEnsemble([_dense(1), _dense(2)], mean="arithmetic")
    cache = _build(ensemble, x, tmp_path / "cache", storage_dtype="float32")
    initial = _dense(5).get_weights()

    def trained(teacher, data):
        student = _dense(5)
        student.set_weights(initial)
        distiller = Distiller(student=student, teacher=teacher, temperature=temperature, soft_weight=0.7)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
        distiller.fit(data, epochs=1, verbose=0)
        return student.get_weights()

    online = trained(ensemble, tf.data.Dataset.from_tensor_slices((x, y)).batch(N))
    replay = cache.dataset(x, y, batch_size=N, shuffle=False, temperature=temperature)
    cached = trained(None, replay)
    for a, b in zip(online, cached):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(online[0], initial[0])  # the step did change the weights


def test_arithmetic_cache_serves_every_temperature(x, tmp_path):
    ensemble = TeacherEnsemble([_dense(1), _dense(2), _dense(3)], mean="arithmetic")
    cache = _build(ensemble, x, tmp_path / "cache", storage_dtype="float32")
    assert cache.streams == 3  # per-member logits, combined at replay
    for temperature in (1.0, 4.0):
        np.testing.assert_allclose(
            cache.logits(temperature=temperature),
            ensemble.logits_at_temperature(x, temperature).numpy(),
            atol=1e-5,
        )
    with pytest.raises(ValueError, match="pass `temperature=`"):
        cache.logits()


def test_float16_storage_is_within_half_precision(teacher, x, tmp_path):
    cache = _build(teacher, x, tmp_path / "cache")
    exact = teacher(x).numpy()
    np.testing.assert_allclose(cache.logits(), exact, rtol=1e-3, atol=1e-3)
    assert cache.bytes_per_example() < CLASSES * 2 + 20  # float16 plus npy headers


def test_top_k_with_all_classes_equals_the_full_cache(teacher, x, tmp_path):
    full = _build(teacher, x, tmp_path / "full", storage_dtype="float32")
    top = _build(teacher, x, tmp_path / "top", storage_dtype="float32", top_k=CLASSES)
    np.testing.assert_array_equal(top.logits(), full.logits())


def test_top_k_keeps_largest_logits_and_fills_the_rest_with_their_mean(tmp_path):
    x = np.random.default_rng(1).normal(size=(8, FEATURES)).astype("float32")
    teacher = _dense(4, classes=6)
    cache = _build(teacher, x, tmp_path / "top2", storage_dtype="float32", top_k=2)
    z = teacher(x).numpy()
    expected = np.empty_like(z)
    for row, logits in enumerate(z):
        keep = np.argsort(-logits)[:2]
        dropped = np.setdiff1d(np.arange(6), keep)
        expected[row] = logits[dropped].mean()
        expected[row, keep] = logits[keep]
    np.testing.assert_allclose(cache.logits(), expected, atol=1e-5)
    np.testing.assert_allclose(cache.logits().mean(-1), z.mean(-1), atol=1e-5)


def test_expand_top_k_scatters_values():
    full = expand_top_k(
        tf.constant([[[0, 3]], [[2, 1]]]),
        tf.constant([[[5.0, 4.0]], [[7.0, 6.0]]]),
        tf.constant([[-1.0], [0.5]]),
        4,
    )
    expected = [[[5.0, -1.0, -1.0, 4.0]], [[0.5, 6.0, 7.0, 0.5]]]
    np.testing.assert_array_equal(full.numpy(), expected)


@pytest.mark.parametrize("memory_mapped", [False, True])
def test_shuffled_replay_keeps_inputs_labels_and_targets_aligned(
    teacher, x, tmp_path, memory_mapped
):
    cache = _build(teacher, x, tmp_path / "cache", storage_dtype="float32")
    if memory_mapped:  # read through tf.numpy_function, as for data larger than RAM
        np.save(tmp_path / "x.npy", x)
        x = np.load(tmp_path / "x.npy", mmap_mode="r")
    ids = np.arange(N)
    replay = cache.dataset(x, ids, ids.astype("float32"), batch_size=7, seed=3)
    seen = []
    for features, labels, weights in replay:
        np.testing.assert_array_equal(features[INPUTS].numpy(), x[labels.numpy()])
        np.testing.assert_allclose(
            features[TEACHER_LOGITS].numpy(), teacher(x[labels.numpy()]).numpy(), atol=1e-5
        )
        np.testing.assert_array_equal(weights.numpy(), labels.numpy())
        seen.extend(labels.numpy())
    assert sorted(seen) == list(ids) and seen != list(ids)  # each once, shuffled


def test_stale_teacher_is_rejected(teacher, x, tmp_path):
    _build(teacher, x, tmp_path / "cache")
    TeacherCache.open(tmp_path / "cache", teacher=teacher, x=x)  # the same: fine
    kernel, bias = teacher.get_weights()
    teacher.set_weights([kernel, bias + 1e-3])
    with pytest.raises(ValueError, match="stale"):
        TeacherCache.open(tmp_path / "cache", teacher=teacher)


def test_reordered_or_changed_inputs_are_rejected(teacher, x, y, tmp_path):
    cache = _build(teacher, x, tmp_path / "cache")
    swapped = x.copy()
    swapped[[20, 21]] = swapped[[21, 20]]
    with pytest.raises(ValueError, match=r"examples \[16, 32\).*reordered"):
        cache.dataset(swapped, y)
    with pytest.raises(ValueError, match="has 39 examples but the cache holds 40"):
        cache.dataset(x[:-1], y[:-1])
    with pytest.raises(ValueError, match=r"example shape \(4,\)"):
        cache.dataset(x[:, :4], y)
    with pytest.raises(ValueError, match="`y` has 39 entries"):
        cache.dataset(x, y[:-1])


def test_truncated_missing_and_altered_files_are_rejected(teacher, x, tmp_path):
    directory = tmp_path / "cache"
    _build(teacher, x, directory)
    shard = directory / "shard-00001.logits.npy"
    original = shard.read_bytes()
    shard.write_bytes(original[:-10])
    with pytest.raises(ValueError, match="truncated"):
        TeacherCache.open(directory)
    altered = bytearray(original)
    altered[-1] ^= 0xFF
    shard.write_bytes(bytes(altered))
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        TeacherCache.open(directory)
    with pytest.raises(ValueError, match="checksum of its sampled blocks"):
        TeacherCache.open(directory, verify="size")  # a small file is sampled whole
    shard.unlink()
    with pytest.raises(ValueError, match="shard-00001.logits.npy' is missing"):
        TeacherCache.open(directory)


def test_reshaped_file_is_rejected(teacher, x, tmp_path):
    directory = tmp_path / "cache"
    _build(teacher, x, directory)
    shard = directory / "shard-00000.logits.npy"
    array = np.load(shard)
    np.save(shard, array.reshape(16, 1, CLASSES, 1))  # same bytes, other shape
    with pytest.raises(ValueError, match=r"shape \(16, 1, 4, 1\).*expects \(16, 1, 1, 4\)"):
        TeacherCache.open(directory, verify="size")


def test_corrupt_or_incomplete_manifest_is_rejected(teacher, x, tmp_path):
    directory = tmp_path / "cache"
    _build(teacher, x, directory)
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(manifest_path.read_text()[:50])
    with pytest.raises(ValueError, match="corrupt.*not valid JSON"):
        TeacherCache.open(directory)
    manifest_path.write_text(json.dumps({**manifest, "num_examples": "forty"}))
    with pytest.raises(ValueError, match="'num_examples' is 'forty', expected a int"):
        TeacherCache.open(directory)
    manifest_path.write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(ValueError, match="incomplete.*resume"):
        TeacherCache.open(directory)
    with pytest.raises(FileNotFoundError, match="not a teacher cache"):
        TeacherCache.open(tmp_path)


class _Interrupting(np.ndarray):
    """Inputs whose slices from example 16 on fail, like a build killed midway."""

    def __getitem__(self, key):
        if isinstance(key, slice) and (key.start or 0) >= 16:
            raise KeyboardInterrupt("simulated interruption")
        return super().__getitem__(key)


def test_interrupted_build_resumes_from_completed_shards(teacher, x, tmp_path):
    directory = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        _build(teacher, x.view(_Interrupting), directory, shard_size=8)
    kept = {p.name: p.stat().st_mtime_ns for p in directory.glob("shard-*.npy")}
    assert sorted(kept) == ["shard-00000.logits.npy", "shard-00001.logits.npy"]
    with pytest.raises(ValueError, match="incomplete"):
        TeacherCache.open(directory)
    resumed = _build(teacher, x, directory, shard_size=8)
    for name, mtime in kept.items():
        assert (directory / name).stat().st_mtime_ns == mtime  # not rewritten
    fresh = _build(teacher, x, tmp_path / "fresh", shard_size=8)
    np.testing.assert_array_equal(resumed.logits(), fresh.logits())
    assert resumed.manifest["content_fingerprint"] == fresh.manifest["content_fingerprint"]


def _jitter(example, seed):
    flipped = tf.image.stateless_random_flip_left_right(example[:, None, None], seed)
    return flipped[:, 0, 0] + tf.random.stateless_normal(tf.shape(example), seed)


def test_augmented_views_replay_exactly_what_the_teacher_saw(teacher, x, tmp_path):
    cache = _build(teacher, x, tmp_path / "cache", views=3, augment=_jitter, storage_dtype="float32")
    assert cache.num_rows == 3 * N
    replay = cache.dataset(x, np.arange(N), batch_size=16, augment=_jitter, seed=1)
    inputs, examples = [], []
    for features, labels in replay:
        np.testing.assert_allclose(
            features[TEACHER_LOGITS].numpy(), teacher(features[INPUTS]).numpy(), atol=1e-5
        )
        inputs.append(features[INPUTS].numpy())
        examples.append(labels.numpy())
    inputs, examples = np.concatenate(inputs), np.concatenate(examples)
    assert np.bincount(examples).tolist() == [3] * N
    views_of_first = inputs[examples == 0]
    assert len({v.tobytes() for v in views_of_first}) == 3  # three different views
    again = np.concatenate([f[INPUTS].numpy() for f, _ in replay])
    assert sorted(map(bytes, inputs)) == sorted(map(bytes, again))  # same views each epoch
    with pytest.raises(ValueError, match="built with augment='_jitter'"):
        cache.dataset(x, np.arange(N))
    with pytest.raises(ValueError, match="`views=2` without `augment`"):
        _build(teacher, x, tmp_path / "bad", views=2)


def test_augmentation_without_a_name_is_refused(teacher, x, tmp_path):
    import functools

    for unnamed in (lambda e, s: e, functools.partial(_jitter)):
        with pytest.raises(ValueError, match="has no name of its own"):
            _build(teacher, x, tmp_path / "cache", views=2, augment=unnamed)


def test_sample_weight_without_labels_is_refused(teacher, x, tmp_path):
    cache = _build(teacher, x, tmp_path / "cache")
    with pytest.raises(ValueError, match="would read the weights as labels"):
        cache.dataset(x, sample_weight=np.ones(N, "float32"))


def test_training_at_another_temperature_than_the_replay_is_refused(x, y, tmp_path):
    ensemble = TeacherEnsemble([_dense(1), _dense(2)], mean="arithmetic")
    cache = _build(ensemble, x, tmp_path / "cache")
    distiller = Distiller(student=_dense(5), teacher=None, temperature=4.0)
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="combined at another temperature"):
        distiller.fit(cache.dataset(x, y, batch_size=8, temperature=2.0), verbose=0)
    logs = distiller.fit(cache.dataset(x, y, batch_size=8, temperature=4.0), verbose=0)
    assert np.isfinite(logs.history["loss"][0])


def test_logits_beyond_float16_are_refused(x, tmp_path):
    huge = _dense(1)
    huge.set_weights([w * 1e6 for w in huge.get_weights()])
    with pytest.raises(ValueError, match="storage_dtype='float32'"):
        _build(huge, x, tmp_path / "cache")
    assert np.isfinite(_build(huge, x, tmp_path / "wide", storage_dtype="float32").logits()).all()


@pytest.mark.parametrize("batch_size", [None, 7, 40])
def test_xla_build_with_a_padded_last_batch_stores_the_teachers_logits(
    teacher, x, tmp_path, batch_size
):
    # 40 examples in batches of 7: the last batch (5 rows) is padded for XLA.
    cache = _build(teacher, x, tmp_path / "cache", teacher_jit_compile=True,
                   batch_size=batch_size, storage_dtype="float32")
    np.testing.assert_allclose(cache.logits(), teacher(x).numpy(), atol=1e-5)
    plain = _build(teacher, x, tmp_path / "plain", teacher_jit_compile=False,
                   batch_size=batch_size, storage_dtype="float32")
    np.testing.assert_allclose(cache.logits(), plain.logits(), atol=1e-5)


def test_xla_build_of_augmented_views_of_an_ensemble(x, tmp_path):
    ensemble = TeacherEnsemble([_dense(1), _dense(2)], mean="arithmetic")
    cache = _build(ensemble, x, tmp_path / "cache", views=2, augment=_jitter,
                   batch_size=6, teacher_jit_compile=True, storage_dtype="float32")
    plain = _build(ensemble, x, tmp_path / "plain", views=2, augment=_jitter,
                   batch_size=6, teacher_jit_compile=False, storage_dtype="float32")
    np.testing.assert_allclose(
        cache.logits(temperature=2.0), plain.logits(temperature=2.0), atol=1e-5
    )


def test_auto_batch_size_is_capped_and_fits_the_memory_budget(monkeypatch):
    from keras_kd import cache as cache_module

    small = _dense(1)
    assert cache_module.auto_batch_size(small, (FEATURES,), 10) == 10
    assert cache_module.auto_batch_size(small, (FEATURES,), 10**6) == 1024
    # 4 bytes * (5 inputs + 4 live copies of the 4 outputs) = 84 bytes an
    # example; a budget of 8 * 840 bytes (an eighth of the "memory") fits 10.
    monkeypatch.setattr(cache_module.os, "sysconf", lambda name: 840 if name == "SC_PAGE_SIZE" else 8)
    assert cache_module.auto_batch_size(small, (FEATURES,), 10**6) == 10
    # Only the largest layer counts, however many layers there are.
    deep = keras.Sequential([keras.Input((FEATURES,))] + [keras.layers.Dense(4) for _ in range(9)])
    assert cache_module.auto_batch_size(deep, (FEATURES,), 10**6) == 10


def _memory_of(rows_that_fit, monkeypatch):
    """Makes every teacher pass of more than `rows_that_fit` rows run out of memory;
    returns the list of the rows each pass was given."""
    from keras_kd import cache as cache_module

    seen = []
    original = cache_module._run_padded

    def tight_memory(forward, inputs, batch_size):
        seen.append(int(inputs.shape[0]))
        if seen[-1] > rows_that_fit:
            raise tf.errors.ResourceExhaustedError(None, None, "out of memory")
        return original(forward, inputs, batch_size)

    monkeypatch.setattr(cache_module, "_run_padded", tight_memory)
    return seen


def test_an_out_of_memory_batch_is_halved(teacher, x, tmp_path, monkeypatch):
    seen = _memory_of(8, monkeypatch)
    cache = _build(teacher, x, tmp_path / "cache", batch_size=32, storage_dtype="float32",
                   shard_size=64)
    assert seen[:3] == [32, 16, 8] and set(seen[3:]) == {8}
    np.testing.assert_allclose(cache.logits(), teacher(x).numpy(), atol=1e-5)


def _tune(tuner, seconds_per_example, batches=10):
    """Feeds `tuner` the time of each batch; returns the configurations it ran."""
    seen = []
    for _ in range(batches):
        config = (tuner.batch_size, tuner.xla)
        seen.append(config)
        tuner.record(config[0], config[0] * seconds_per_example[config])
    return seen


def test_the_pass_tuner_keeps_xla_only_when_it_is_faster():
    from keras_kd.cache import _PassTuner

    slow = {(256, False): 1e-3}  # seconds per example: 0.256 s a batch
    seen = _tune(_PassTuner(cap=1024, try_xla=True), {**slow, (256, True): 0.9e-3})
    # Timed on the second batch each way (the first traces or compiles).
    assert seen[:4] == [(256, False)] * 2 + [(256, True)] * 2
    assert set(seen[4:]) == {(256, True)}  # 10% faster: kept
    seen = _tune(_PassTuner(cap=1024, try_xla=True), {**slow, (256, True): 0.99e-3})
    assert set(seen[4:]) == {(256, False)}  # 1% faster is within the noise
    # A pass under 50 ms a batch is not worth an XLA compilation.
    seen = _tune(_PassTuner(cap=1024, try_xla=True), {(256, False): 1e-4})
    assert set(seen) == {(256, False)}
    # Without the trial (an explicit teacher_jit_compile, or XLA by default): nothing changes.
    tuner = _PassTuner(cap=1024)
    assert tuner.done and (tuner.batch_size, tuner.xla) == (256, False)
    assert _PassTuner(cap=40).batch_size == 40


def test_the_pass_tuner_ends_without_xla_on_failure_or_out_of_memory():
    from keras_kd.cache import _PassTuner

    tuner = _PassTuner(cap=1024, try_xla=True)
    for _ in range(2):
        tuner.record(256, 0.5)
    assert tuner.xla
    tuner.out_of_memory(128)
    assert (tuner.batch_size, tuner.xla, tuner.done) == (128, False, True)
    tuner = _PassTuner(cap=1024, try_xla=True)
    for _ in range(2):
        tuner.record(256, 0.5)
    tuner.xla_failed()
    assert (tuner.xla, tuner.done) == (False, True)
    tuner = _PassTuner(cap=1024, try_xla=True)
    for _ in range(3):
        tuner.record(100, 0.5)  # the short end of a shard is not timed
    assert not tuner.xla


def test_an_out_of_memory_build_with_the_tuner_stores_the_teachers_logits(
    teacher, tmp_path, monkeypatch
):
    seen = _memory_of(200, monkeypatch)
    x = np.random.default_rng(4).normal(size=(3000, FEATURES)).astype("float32")
    cache = _build(teacher, x, tmp_path / "cache", storage_dtype="float32", shard_size=4096)
    # 256 fails once, then 128 for good: no size that failed is tried again.
    assert seen[:2] == [256, 128] and max(seen[2:]) == 128
    np.testing.assert_allclose(cache.logits(), teacher(x).numpy(), atol=1e-5)


def test_the_builds_xla_trial_keeps_the_logits_and_survives_a_teacher_xla_rejects(
    tmp_path, monkeypatch, capsys
):
    from conftest import conv_teacher

    from keras_kd import teacher_inference

    monkeypatch.setattr(teacher_inference, "MEASURE_FROM_SECONDS", 0.0)
    monkeypatch.setattr(teacher_inference, "XLA_MIN_GAIN", 0.0)  # XLA always wins
    # Room for the trial: two batches of 256 each way.
    x = np.random.default_rng(5).normal(size=(1500, 8)).astype("float32")
    options = {"storage_dtype": "float32", "shard_size": 8192, "verbose": True}
    teacher = conv_teacher()
    cache = _build(teacher, x, tmp_path / "xla", **options)
    assert ", XLA (" in capsys.readouterr().out  # tried, and kept
    np.testing.assert_allclose(cache.logits(), teacher(x).numpy(), atol=1e-5)
    rejected = conv_teacher(xla_proof=False)
    with pytest.warns(UserWarning, match="runs without XLA. Pass teacher_jit_compile=False"):
        cache = _build(rejected, x, tmp_path / "no-xla", **options)
    assert ", XLA (" not in capsys.readouterr().out
    np.testing.assert_allclose(cache.logits(), rejected(x).numpy(), atol=1e-5)


def test_a_build_with_the_automatic_batch_stores_the_teachers_logits(teacher, tmp_path):
    x = np.random.default_rng(3).normal(size=(700, FEATURES)).astype("float32")
    cache = _build(teacher, x, tmp_path / "cache", shard_size=256, storage_dtype="float32")
    np.testing.assert_allclose(cache.logits(), teacher(x).numpy(), atol=1e-5)


def test_shards_are_kept_small_enough_to_build_in_memory(teacher, x, tmp_path, monkeypatch):
    from keras_kd import cache as cache_module

    # 4 classes in float32 are 16 bytes an example: 80 bytes hold 5 examples.
    monkeypatch.setattr(cache_module, "SHARD_BUILD_BYTES", 80)
    cache = _build(teacher, x, tmp_path / "cache", storage_dtype="float32", shard_size=16)
    assert cache.manifest["shard_size"] == 5 and len(cache.manifest["shards"]) == 8
    np.testing.assert_allclose(cache.logits(), teacher(x).numpy(), atol=1e-5)


def test_the_0_2_name_dtype_still_builds_with_a_warning(teacher, x, tmp_path):
    with pytest.warns(FutureWarning, match="is now `storage_dtype=`"):
        old = _build(teacher, x, tmp_path / "old", dtype="float32")
    new = _build(teacher, x, tmp_path / "new", storage_dtype="float32")
    np.testing.assert_array_equal(old.logits(), new.logits())
    with pytest.raises(ValueError, match="Pass storage_dtype alone"):
        _build(teacher, x, tmp_path / "both", dtype="float32", storage_dtype="float64")
    with pytest.raises(ValueError, match="`storage_dtype` must be one of"):
        _build(teacher, x, tmp_path / "bad", storage_dtype="int8")

"""Sequence outputs `(batch, time, classes)`: masks, token means, replicas, chunks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_kd import Distiller, losses, sequences
from keras_kd.batch import make_batch

VOCAB = 7


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _language_model(width, seed, name):
    """Token ids -> masked embedding -> GRU -> logits per token."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((None,), dtype="int32")
    embedding = keras.initializers.RandomNormal(stddev=1.0)
    h = keras.layers.Embedding(VOCAB, width, mask_zero=True, embeddings_initializer=embedding)(tokens)
    h = keras.layers.GRU(width, return_sequences=True)(h)
    # Spread-out logits keep the soft term well above float32 rounding.
    logits = keras.layers.Dense(VOCAB, kernel_initializer=keras.initializers.RandomNormal(stddev=2.0))
    return keras.Model(tokens, logits(h), name=name)


def _tokens(lengths, time, seed=0):
    """Sequences of the given lengths, padded with 0 to `time`, and next-token labels."""
    rng = np.random.default_rng(seed)
    x = np.zeros((len(lengths), time), "int32")
    for row, length in enumerate(lengths):
        x[row, :length] = rng.integers(1, VOCAB, length)
    y = rng.integers(0, VOCAB, x.shape).astype("int32")  # garbage on padding too
    return x, y


def _numpy_logs(teacher, student, x, y, w, temperature, soft_weight, mask=None):
    """The mean over valid tokens of each term, computed in float64 NumPy.

    `mask`: the valid tokens (default: the Embedding mask, token id != 0).
    """
    t = keras.ops.convert_to_numpy(teacher(x)).astype("float64")
    s = keras.ops.convert_to_numpy(student(x)).astype("float64")
    weights = (x != 0 if mask is None else mask) * w  # the mask times the token weights
    valid = weights != 0
    p, q = _softmax(t / temperature), _softmax(s / temperature)
    soft = temperature**2 * np.sum(p * (np.log(p) - np.log(q)), axis=-1)
    hard = -np.log(np.take_along_axis(_softmax(s), y[..., None], -1)[..., 0])
    total = soft_weight * soft + (1 - soft_weight) * hard
    count = valid.sum()
    correct = s.argmax(-1) == y
    return {
        "soft_loss": (weights * soft).sum() / count,
        "hard_loss": (weights * hard).sum() / count,
        "loss": (weights * total).sum() / count,
        # Keras' `metrics` are unweighted: the share of valid tokens predicted.
        "accuracy": correct[valid].mean(),
    }


def _distiller(teacher, student, **kwargs):
    kwargs.setdefault("temperature", 2.0)
    kwargs.setdefault("soft_weight", 0.6)
    distiller = Distiller(student=student, teacher=teacher, **kwargs)
    distiller.compile(optimizer=keras.optimizers.SGD(0.5), metrics=["accuracy"])
    return distiller


def test_logs_of_evaluate_and_fit_equal_a_hand_computed_token_mean():
    teacher = _language_model(8, 1, "teacher")
    student = _language_model(4, 2, "student")
    x, y = _tokens([5, 2, 4, 1], time=6)
    w = np.random.default_rng(3).uniform(0.5, 2.0, x.shape).astype("float32")
    w[0, 1] = 0.0  # a weight of 0 excludes a valid token, like padding
    expected = _numpy_logs(teacher, student, x, y, w, 2.0, 0.6)
    distiller = _distiller(teacher, student)
    data = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(4)
    evaluated = distiller.evaluate(data, verbose=0, return_dict=True)
    logged = distiller.fit(data, epochs=1, verbose=0).history
    for key, value in expected.items():
        assert evaluated[key] == pytest.approx(value, rel=1e-5), key
        assert logged[key][0] == pytest.approx(value, rel=1e-5), key


def test_evaluate_over_several_batches_is_the_mean_of_all_valid_tokens():
    teacher = _language_model(8, 1, "teacher")
    student = _language_model(4, 2, "student")
    x, y = _tokens([6, 1, 1, 1, 3, 5], time=6, seed=4)
    w = np.ones(x.shape, "float32")
    expected = _numpy_logs(teacher, student, x, y, w, 2.0, 0.6)
    distiller = _distiller(teacher, student)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    logs = distiller.evaluate(data, verbose=0, return_dict=True)
    for key in ("soft_loss", "hard_loss", "loss", "accuracy"):
        assert logs[key] == pytest.approx(expected[key], rel=1e-5), key


def _one_step(x, y, w=None, student_fn=None, teacher_fn=None, **kwargs):
    """Logs and student weights after one SGD step on one batch."""
    teacher = (teacher_fn or _language_model)(8, 1, "teacher")
    student = (student_fn or _language_model)(4, 2, "student")
    distiller = _distiller(teacher, student, **kwargs)
    parts = (x, y) if w is None else (x, y, w)
    data = tf.data.Dataset.from_tensor_slices(parts).batch(len(x))
    logs = distiller.fit(data, epochs=1, verbose=0).history
    return logs, student.get_weights()


def test_extra_padding_changes_neither_the_loss_nor_the_update():
    x, y = _tokens([5, 2, 4, 1], time=5)
    padded_x = np.pad(x, [(0, 0), (0, 7)])
    padded_y = np.pad(y, [(0, 0), (0, 7)], constant_values=3)
    short_logs, short_weights = _one_step(x, y)
    long_logs, long_weights = _one_step(padded_x, padded_y)
    for key in ("loss", "soft_loss", "hard_loss", "accuracy"):
        assert long_logs[key][0] == pytest.approx(short_logs[key][0], rel=1e-5), key
    for short, long in zip(short_weights, long_weights):
        np.testing.assert_allclose(long, short, atol=1e-6)
    initial = _language_model(4, 2, "student").get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(initial, short_weights))


def _frame_model(width, seed, name):
    """Frames of 3 features -> Masking (all-zero frames) -> GRU -> logits per frame."""
    keras.utils.set_random_seed(seed)
    frames = keras.Input((None, 3))
    h = keras.layers.Masking(mask_value=0.0)(frames)
    h = keras.layers.GRU(width, return_sequences=True)(h)
    logits = keras.layers.Dense(VOCAB, kernel_initializer=keras.initializers.RandomNormal(stddev=2.0))
    return keras.Model(frames, logits(h), name=name)


def test_a_masking_layer_masks_frames_like_an_embedding_masks_tokens():
    rng = np.random.default_rng(6)
    lengths = [4, 1, 3]
    x = np.zeros((3, 4, 3), "float32")
    for row, length in enumerate(lengths):
        x[row, :length] = rng.normal(size=(length, 3))
    y = rng.integers(0, VOCAB, (3, 4)).astype("int32")
    valid = np.arange(4)[None, :] < np.array(lengths)[:, None]
    teacher, student = _frame_model(8, 1, "teacher"), _frame_model(4, 2, "student")
    expected = _numpy_logs(teacher, student, x, y, 1.0, 2.0, 0.6, mask=valid)
    logs = _distiller(teacher, student).evaluate(x, y, verbose=0, return_dict=True)
    for key, value in expected.items():
        assert logs[key] == pytest.approx(value, rel=1e-5), key
    # Three more all-zero frames: masked, so the step is the same.
    short_logs, short_weights = _one_step(x, y, student_fn=_frame_model, teacher_fn=_frame_model)
    long_logs, long_weights = _one_step(
        np.pad(x, [(0, 0), (0, 3), (0, 0)]), np.pad(y, [(0, 0), (0, 3)], constant_values=2),
        student_fn=_frame_model, teacher_fn=_frame_model,
    )
    for key in ("loss", "soft_loss", "hard_loss", "accuracy"):
        assert long_logs[key][0] == pytest.approx(short_logs[key][0], rel=1e-5), key
    for short, long in zip(short_weights, long_weights):
        np.testing.assert_allclose(long, short, atol=1e-6)


def _per_token_model(width, seed, name):
    """Float features per step -> logits per step, without a Keras mask."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((None, 3)),
            keras.layers.Dense(width, activation="tanh"),
            keras.layers.Dense(VOCAB, kernel_initializer=keras.initializers.RandomNormal(stddev=2.0)),
        ],
        name=name,
    )


def test_padding_given_as_zero_sample_weights_changes_nothing():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4, 3)).astype("float32")
    y = rng.integers(0, VOCAB, (3, 4)).astype("int32")
    w = np.ones((3, 4), "float32")
    padded_x = np.concatenate([x, rng.normal(size=(3, 5, 3)).astype("float32")], axis=1)
    padded_y = np.concatenate([y, np.zeros((3, 5), "int32")], axis=1)
    padded_w = np.concatenate([w, np.zeros((3, 5), "float32")], axis=1)

    def step(x, y, w):
        keras.utils.set_random_seed(0)
        teacher, student = _per_token_model(8, 1, "teacher"), _per_token_model(4, 2, "student")
        distiller = _distiller(teacher, student)
        data = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(3)
        return distiller.fit(data, epochs=1, verbose=0).history, student.get_weights()

    short_logs, short_weights = step(x, y, w)
    long_logs, long_weights = step(padded_x, padded_y, padded_w)
    for key in ("loss", "soft_loss", "hard_loss", "accuracy"):
        assert long_logs[key][0] == pytest.approx(short_logs[key][0], rel=1e-5), key
    for short, long in zip(short_weights, long_weights):
        np.testing.assert_allclose(long, short, atol=1e-6)


def test_mirrored_strategy_with_uneven_tokens_per_replica_gives_the_single_device_update():
    # Each global batch of 4 is split 2 + 2: the first replica gets long
    # sequences, the second short ones, one of them all padding.
    x, y = _tokens([7, 6, 1, 0, 8, 5, 2, 0], time=8, seed=6)
    w = np.linspace(0.5, 1.5, x.size).reshape(x.shape).astype("float32")
    initial_student = _language_model(4, 2, "student").get_weights()
    initial_teacher = _language_model(8, 1, "teacher").get_weights()

    def train(strategy):
        with strategy.scope():
            teacher = _language_model(8, 1, "teacher")
            student = _language_model(4, 2, "student")
            teacher.set_weights(initial_teacher)
            student.set_weights(initial_student)
            distiller = Distiller(
                student=student, teacher=teacher, temperature=2.0, soft_weight=0.6
            )
            distiller.compile(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"])
        # Repeated with a step count: see test_distiller's mirrored test.
        data = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(4).repeat()
        history = distiller.fit(data, epochs=2, steps_per_epoch=2, verbose=0).history
        return student.get_weights(), history

    mirrored = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    assert mirrored.num_replicas_in_sync == 2
    single_weights, single_logs = train(tf.distribute.get_strategy())
    mirrored_weights, mirrored_logs = train(mirrored)
    for a, b in zip(single_weights, mirrored_weights):
        np.testing.assert_allclose(a, b, atol=2e-5)
    for key in ("loss", "soft_loss", "hard_loss", "accuracy"):
        np.testing.assert_allclose(single_logs[key], mirrored_logs[key], rtol=1e-4)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 1000])
@pytest.mark.parametrize("shape", [(3, 5, 11), (7, 11)])
def test_chunked_tempered_kl_equals_the_unchunked_loss_and_gradient(chunk_size, shape):
    rng = np.random.default_rng(7)
    t = (3 * rng.normal(size=shape)).astype("float32")
    s = tf.Variable((3 * rng.normal(size=shape)).astype("float32"))
    upstream = rng.uniform(0.0, 2.0, shape[:-1]).astype("float32")

    @tf.function
    def value_and_gradient(loss):
        with tf.GradientTape() as tape:
            values = loss(t, s)
            total = tf.reduce_sum(values * upstream)
        return values, tape.gradient(total, s)

    plain = value_and_gradient(losses.TemperedKL(3.0))
    chunked = value_and_gradient(losses.TemperedKL(3.0, chunk_size=chunk_size))
    np.testing.assert_allclose(chunked[0].numpy(), plain[0].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chunked[1].numpy(), plain[1].numpy(), rtol=1e-5, atol=1e-7)


def test_a_chunked_loss_trains_like_the_unchunked_one_and_round_trips():
    x, y = _tokens([5, 2, 4, 1], time=5)
    plain_logs, plain_weights = _one_step(x, y, distillation_loss=losses.TemperedKL(2.0))
    chunked_logs, chunked_weights = _one_step(
        x, y, distillation_loss=losses.TemperedKL(2.0, chunk_size=3)
    )
    for key in ("loss", "soft_loss", "hard_loss"):
        assert chunked_logs[key][0] == pytest.approx(plain_logs[key][0], rel=1e-5)
    for a, b in zip(plain_weights, chunked_weights):
        np.testing.assert_allclose(a, b, atol=1e-6)
    loss = losses.TemperedKL(2.0, chunk_size=3, name="kl")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert (clone.temperature, clone.chunk_size, clone.name) == (2.0, 3, "kl")


@pytest.mark.parametrize("chunk_size", [0, -1, 2.5, True, "64"])
def test_a_bad_chunk_size_is_a_clear_error(chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        losses.TemperedKL(2.0, chunk_size=chunk_size)


def test_a_user_loss_returns_one_value_per_token():
    class PerTokenMSE(losses.DistillationLoss):
        def call(self, teacher_logits, student_logits):
            return keras.ops.mean(keras.ops.square(teacher_logits - student_logits), axis=-1)

    class Flattened(losses.DistillationLoss):
        def call(self, teacher_logits, student_logits):
            return keras.ops.mean(keras.ops.square(teacher_logits - student_logits), axis=(1, 2))

    t, s = np.ones((2, 3, 4), "float32"), np.zeros((2, 3, 4), "float32")
    assert tuple(PerTokenMSE()(t, s).shape) == (2, 3)
    with pytest.raises(ValueError, match=r"one value per token, shape \(2, 3\)"):
        Flattened()(t, s)


def _cached_fit(student, logits, x, y, w=None):
    distiller = Distiller(student=student, teacher=None, temperature=2.0)
    distiller.compile(optimizer="sgd")
    parts = (make_batch(x, logits), y) if w is None else (make_batch(x, logits), y, w)
    data = tf.data.Dataset.from_tensor_slices(parts).batch(len(x))
    return distiller.fit(data, epochs=1, verbose=0)


def test_teacher_and_student_of_different_ranks_are_refused():
    student = _language_model(4, 2, "student")
    per_example = keras.Sequential([keras.Input((6,)), keras.layers.Dense(VOCAB)])
    with pytest.raises(ValueError, match="different ranks"):
        Distiller(student=student, teacher=per_example)
    x, y = _tokens([3, 2], time=4)
    with pytest.raises(ValueError, match="different ranks"):
        _cached_fit(student, np.zeros((2, VOCAB), "float32"), x, y)


def test_sequences_of_different_lengths_are_refused():
    student = _language_model(4, 2, "student")
    x, y = _tokens([3, 2], time=4)
    with pytest.raises(ValueError, match="different lengths"):
        _cached_fit(student, np.zeros((2, 5, VOCAB), "float32"), x, y)


def test_a_global_batch_without_any_valid_token_is_a_clear_error():
    teacher, student = _language_model(8, 1, "teacher"), _language_model(4, 2, "student")
    distiller = _distiller(teacher, student)
    empty = np.zeros((2, 4), "int32")
    with pytest.raises(ValueError, match="no valid token.*Drop sequences that are all padding"):
        distiller.fit(tf.data.Dataset.from_tensor_slices((empty, empty)).batch(2), verbose=0)
    # A later batch (checked inside the compiled step, not before fit).
    x, y = _tokens([3, 2, 0, 0], time=4)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    with pytest.raises(ValueError, match="no valid token"):
        distiller.fit(data, verbose=0)


def test_weights_of_another_length_than_the_sequence_are_refused():
    teacher, student = _language_model(8, 1, "teacher"), _language_model(4, 2, "student")
    distiller = _distiller(teacher, student)
    x, y = _tokens([3, 2], time=4)
    w = np.ones((2, 5), "float32")
    with pytest.raises(ValueError, match="sample_weight.*time"):
        distiller.fit(tf.data.Dataset.from_tensor_slices((x, y, w)).batch(2), verbose=0)


def test_outputs_of_rank_four_are_refused():
    student = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Dense(VOCAB)])
    distiller = Distiller(student=student, teacher=None, temperature=2.0)
    distiller.compile()
    logits = np.zeros((2, 2, 2, VOCAB), "float32")
    x = np.zeros((2, 2, 2, 3), "float32")
    data = tf.data.Dataset.from_tensor_slices((make_batch(x, logits), np.zeros((2, 2, 2), "int32")))
    with pytest.raises(ValueError, match=r"\(batch, time, classes\)"):
        distiller.fit(data.batch(2), verbose=0)


def test_token_weights_combine_the_mask_and_per_sequence_weights():
    logits = tf.zeros((2, 3, 4))
    logits._keras_mask = tf.constant([[True, True, False], [True, False, False]])
    weights = sequences.token_weights(logits, np.array([2.0, 0.5], "float32"))
    assert weights.numpy().tolist() == [[2.0, 2.0, 0.0], [0.5, 0.0, 0.0]]
    scaled, _ = sequences.mean_weights(weights, 2.0)
    # sum(loss * scaled) / sequences = sum(loss * weights) / valid tokens.
    np.testing.assert_allclose(scaled.numpy() / 2.0, weights.numpy() / 3.0)

"""Validation at the student's cost: `Distiller(validation_teacher=...)`.

Every figure `evaluate` returns is compared with NumPy math on the same
models; the teacher's work is counted by a layer that adds its batch size to a
counter (kept outside the teacher's weights, so that counting does not look
like a change of the teacher).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import blobs, small_mlp, two_replicas

from keras_kd import Distiller

TEMPERATURE, SOFT_WEIGHT = 3.0, 0.7
TEACHER_EXAMPLES = tf.Variable(0.0, trainable=False)


class CountExamples(keras.layers.Layer):
    """Identity that adds the batch size to `TEACHER_EXAMPLES`."""

    def call(self, x):
        with tf.control_dependencies(
            [TEACHER_EXAMPLES.assign_add(tf.cast(tf.shape(x)[0], tf.float32))]
        ):
            return tf.identity(x)


def counted_teacher(seed=1):
    inner = small_mlp(16, seed)
    inputs = keras.Input((8,))
    return keras.Model(inputs, inner(CountExamples()(inputs)), name="counted_teacher")


def teacher_examples() -> int:
    return int(TEACHER_EXAMPLES.numpy())


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def numpy_figures(teacher, student, x, y, penalty=0.0):
    """Per-example means of every logged figure, computed in float64."""
    t = keras.ops.convert_to_numpy(teacher(x)).astype("float64")
    s = keras.ops.convert_to_numpy(student(x)).astype("float64")
    log_p, log_q = _log_softmax(t / TEMPERATURE), _log_softmax(s / TEMPERATURE)
    soft = TEMPERATURE**2 * np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)
    hard = -_log_softmax(s)[np.arange(len(y)), y]
    return {
        "soft_loss": soft.mean(),
        "hard_loss": hard.mean(),
        "loss": np.mean(SOFT_WEIGHT * soft + (1 - SOFT_WEIGHT) * hard) + penalty,
        "accuracy": np.mean(s.argmax(-1) == y),
    }


def distiller(teacher, student, mode, **kwargs):
    model = Distiller(
        student=student, teacher=teacher, temperature=TEMPERATURE,
        soft_weight=SOFT_WEIGHT, validation_teacher=mode, **kwargs,
    )
    model.compile(optimizer="sgd", metrics=["accuracy"])
    return model


def assert_figures(logs, expected, keys):
    assert set(logs) == set(keys)
    for key in keys:
        assert logs[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("mode", ["reuse", "always"])
def test_evaluate_matches_numpy_on_one_batch_with_the_teacher(mode):
    x, y = blobs(32, np.random.default_rng(0))
    teacher, student = counted_teacher(), small_mlp(8, 2)
    model = distiller(teacher, student, mode)
    expected = numpy_figures(teacher, student, x, y)
    for _ in range(2):  # the second pass answers from memory under "reuse"
        logs = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
        assert_figures(logs, expected, ["loss", "soft_loss", "hard_loss", "accuracy"])


def test_never_reports_the_students_own_loss_with_its_regularisation():
    x, y = blobs(32, np.random.default_rng(1))
    teacher = counted_teacher()
    keras.utils.set_random_seed(2)
    student = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(8, "relu", kernel_regularizer=keras.regularizers.L2(0.1)),
        keras.layers.Dense(3),
    ])
    penalty = 0.1 * np.sum(np.square(student.layers[0].kernel.numpy()))
    model = distiller(teacher, student, "never")
    before = teacher_examples()
    logs = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    # Only the eager check of the first batch (before evaluate) ran the teacher.
    assert teacher_examples() - before == 32
    expected = numpy_figures(teacher, student, x, y)
    # The student's own loss: as keras would report for student.evaluate.
    student.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    alone = student.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert_figures(
        logs, {**expected, "loss": expected["hard_loss"] + penalty},
        ["loss", "hard_loss", "accuracy"],
    )
    assert logs["loss"] == pytest.approx(alone["loss"], rel=1e-5)


def test_never_still_scores_unlabeled_data_against_the_teacher():
    x, y = blobs(16, np.random.default_rng(2))
    teacher, student = counted_teacher(), small_mlp(8, 2)
    model = distiller(teacher, student, "never")
    logs = model.evaluate(x, batch_size=16, verbose=0, return_dict=True)
    assert logs["soft_loss"] == pytest.approx(
        numpy_figures(teacher, student, x, y)["soft_loss"], rel=1e-5
    )


def test_reuse_runs_the_teacher_once_per_example_in_any_order_and_batching():
    x, y = blobs(48, np.random.default_rng(3))
    teacher, student = counted_teacher(), small_mlp(8, 2)
    model = distiller(teacher, student, "reuse")
    first = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    after_first = teacher_examples()
    order = np.random.default_rng(4).permutation(len(x))
    again = model.evaluate(x[order], y[order], batch_size=12, verbose=0, return_dict=True)
    assert teacher_examples() - after_first == 12  # only the eager first-batch check
    for key in first:
        assert again[key] == pytest.approx(first[key], rel=1e-5)


def test_reuse_runs_the_teacher_on_examples_it_has_not_seen():
    rng = np.random.default_rng(5)
    x, y = blobs(32, rng)
    other_x, other_y = blobs(32, rng)
    teacher, student = counted_teacher(), small_mlp(8, 2)
    model = distiller(teacher, student, "reuse")
    model.evaluate(x, y, batch_size=16, verbose=0)
    # Half known, half new: the batch of new examples (and any mixed batch) runs
    # the teacher, and every figure is still right.
    mixed_x = np.concatenate([x[:16], other_x[:16]])
    mixed_y = np.concatenate([y[:16], other_y[:16]])
    logs = model.evaluate(mixed_x, mixed_y, batch_size=16, verbose=0, return_dict=True)
    assert_figures(
        logs, numpy_figures(teacher, student, mixed_x, mixed_y),
        ["loss", "soft_loss", "hard_loss", "accuracy"],
    )
    # A changed input (augmentation, other preprocessing) is a new example.
    shifted = x + np.float32(1e-3)
    logs = model.evaluate(shifted, y, batch_size=16, verbose=0, return_dict=True)
    assert logs["soft_loss"] == pytest.approx(
        numpy_figures(teacher, student, shifted, y)["soft_loss"], rel=1e-5
    )


def test_reuse_forgets_outputs_when_the_teacher_changes():
    x, y = blobs(32, np.random.default_rng(6))
    teacher, student = counted_teacher(), small_mlp(8, 2)
    model = distiller(teacher, student, "reuse")
    model.evaluate(x, y, batch_size=16, verbose=0)
    teacher.set_weights([w * 1.5 for w in teacher.get_weights()])
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert logs["soft_loss"] == pytest.approx(
        numpy_figures(teacher, student, x, y)["soft_loss"], rel=1e-5
    )


def test_fit_validates_every_epoch_but_runs_the_teacher_on_validation_once():
    rng = np.random.default_rng(7)
    x, y = blobs(64, rng)
    x_val, y_val = blobs(24, rng)
    teacher, student = counted_teacher(), small_mlp(8, 2)
    model = distiller(teacher, student, "reuse")
    before = teacher_examples()
    history = model.fit(
        x, y, batch_size=16, epochs=3, validation_data=(x_val, y_val), verbose=0
    ).history
    # 3 epochs of training, one validation pass, and the eager checks of the
    # first batch of each (16 training rows, 16 validation rows).
    assert teacher_examples() - before == 3 * 64 + 24 + 16 + 16
    final = model.evaluate(x_val, y_val, batch_size=16, verbose=0, return_dict=True)
    for key in ("loss", "soft_loss", "hard_loss", "accuracy"):
        assert history[f"val_{key}"][-1] == pytest.approx(final[key], rel=1e-5)


def test_reuse_works_when_the_step_is_compiled_with_xla():
    """compile(jit_compile=True) is Keras' "auto" on a single GPU: training keeps
    XLA, validation reuses the teacher's outputs from a test step without XLA."""
    rng = np.random.default_rng(9)
    x, y = blobs(64, rng)
    x_val, y_val = blobs(24, rng)
    teacher, student = counted_teacher(), small_mlp(8, 2)
    model = Distiller(
        student=student, teacher=teacher, temperature=TEMPERATURE,
        soft_weight=SOFT_WEIGHT, validation_teacher="reuse",
    )
    model.compile(optimizer="sgd", metrics=["accuracy"], jit_compile=True)
    before = teacher_examples()
    history = model.fit(
        x, y, batch_size=16, epochs=3, validation_data=(x_val, y_val), verbose=0
    ).history
    assert model.jit_compile is True  # the user's setting, for training, is kept
    assert teacher_examples() - before == 3 * 64 + 24 + 16 + 16
    expected = numpy_figures(teacher, student, x_val, y_val)
    for key in ("loss", "soft_loss", "hard_loss", "accuracy"):
        assert history[f"val_{key}"][-1] == pytest.approx(expected[key], rel=1e-5), key


def test_always_runs_the_teacher_on_every_validation_pass():
    x, y = blobs(32, np.random.default_rng(8))
    model = distiller(counted_teacher(), small_mlp(8, 2), "always")
    model.evaluate(x, y, batch_size=16, verbose=0)
    before = teacher_examples()
    model.evaluate(x, y, batch_size=16, verbose=0)
    assert teacher_examples() - before == 32


def test_two_replicas_validate_like_one_device_from_memory():
    x, y = blobs(64, np.random.default_rng(9))
    weights = small_mlp(16, 1).get_weights(), small_mlp(8, 2).get_weights()

    def evaluate(strategy):
        with strategy.scope():
            teacher, student = small_mlp(16, 1), small_mlp(8, 2)
            teacher.set_weights(weights[0])
            student.set_weights(weights[1])
            model = distiller(teacher, student, "reuse")
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        return [model.evaluate(data, verbose=0, return_dict=True) for _ in range(2)]

    single = evaluate(tf.distribute.get_strategy())
    mirrored = evaluate(two_replicas())
    for one, two in zip(single + single, mirrored + mirrored[::-1]):
        for key in one:
            assert two[key] == pytest.approx(one[key], rel=1e-5)


def test_the_options_are_checked_and_saved():
    with pytest.raises(ValueError, match="validation_teacher"):
        Distiller(student=small_mlp(8, 2), teacher=small_mlp(16, 1), validation_teacher="sometimes")
    model = Distiller(
        student=small_mlp(8, 2), teacher=small_mlp(16, 1),
        validation_teacher="never", teacher_jit_compile=False,
    )
    clone = Distiller.from_config(model.get_config())
    assert (clone.validation_teacher, clone.teacher_jit_compile) == ("never", False)

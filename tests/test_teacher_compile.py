"""The teacher's inference compiled on its own: `Distiller(teacher_jit_compile=...)`."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import blobs, conv_teacher, small_mlp, two_replicas

from keras_kd import Distiller, teacher_inference
from keras_kd.teacher_inference import TeacherInference


def fit(teacher, student, jit, **compile_kwargs):
    x, y = blobs(64, np.random.default_rng(0))
    model = Distiller(student=student, teacher=teacher, temperature=3.0,
                      soft_weight=0.7, teacher_jit_compile=jit)
    model.compile(optimizer=keras.optimizers.SGD(0.1), **compile_kwargs)
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    return model, student.get_weights(), history.history


def test_auto_leaves_xla_off_on_a_cpu():
    assert not tf.config.list_logical_devices("GPU")  # these tests run on CPUs
    model, _, _ = fit(conv_teacher(), small_mlp(8, 2), "auto")
    assert model._teacher_pass().uses_xla is False
    assert model._teacher_pass()._xla.experimental_get_tracing_count() == 0  # never tried


@pytest.fixture
def accelerator(monkeypatch):
    """Makes "auto" behave as on a GPU, where it tries XLA."""
    monkeypatch.setattr(teacher_inference, "xla_by_default", lambda: True)


@pytest.mark.parametrize("make_teacher", [conv_teacher, lambda: small_mlp(16, 1)])
def test_xla_teacher_trains_the_student_like_the_plain_one(make_teacher):
    runs = {}
    for jit in (True, False):
        model, weights, logs = fit(make_teacher(), small_mlp(8, 2), jit)
        runs[jit] = weights, logs
        inference = model._teacher_pass()
        assert inference.uses_xla is jit
        if jit:  # traced for the check (a batch of one) and inside the step
            assert inference._xla.experimental_get_tracing_count() >= 2
    for a, b in zip(runs[True][0], runs[False][0], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(runs[True][1]["loss"], runs[False][1]["loss"], rtol=1e-5)


def test_the_teacher_pass_gives_the_teachers_outputs_under_xla():
    teacher = conv_teacher()
    x = blobs(32, np.random.default_rng(1))[0]
    inference = TeacherInference(lambda b: teacher(b, training=False), jit_compile=True)
    np.testing.assert_allclose(inference.function(x), teacher(x), atol=1e-5)
    assert inference.uses_xla


def test_true_refuses_a_teacher_xla_cannot_compile():
    with pytest.raises(ValueError, match="XLA cannot compile the teacher.*teacher_jit_compile=False"):
        fit(conv_teacher(xla_proof=False), small_mlp(8, 2), True)


def test_auto_falls_back_with_a_warning(accelerator):
    with pytest.warns(UserWarning, match="runs without XLA"):
        model, _, logs = fit(conv_teacher(xla_proof=False), small_mlp(8, 2), "auto")
    assert model._teacher_pass().uses_xla is False
    model, _, _ = fit(conv_teacher(), small_mlp(8, 2), "auto")
    assert model._teacher_pass().uses_xla is True
    assert np.isfinite(logs["loss"]).all()


def test_false_and_an_xla_step_never_wrap_the_teacher():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no attempt, so no fallback warning
        model, _, _ = fit(conv_teacher(xla_proof=False), small_mlp(8, 2), False)
    assert model._teacher_pass().uses_xla is False
    # The whole step under XLA: the teacher is compiled with it, not on its own.
    model, _, logs = fit(conv_teacher(), small_mlp(8, 2), True, jit_compile=True)
    assert model._teacher_pass().uses_xla is None
    assert np.isfinite(logs["loss"]).all()


def test_two_replicas_train_as_one_with_an_xla_teacher():
    x, y = blobs(64, np.random.default_rng(2))
    initial = conv_teacher().get_weights(), small_mlp(8, 2).get_weights()

    def train(strategy):
        with strategy.scope():
            teacher, student = conv_teacher(), small_mlp(8, 2)
            teacher.set_weights(initial[0])
            student.set_weights(initial[1])
            model = Distiller(student=student, teacher=teacher, temperature=3.0,
                              soft_weight=0.7, teacher_jit_compile=True)
            model.compile(optimizer=keras.optimizers.Adam(0.01))
        # Repeated with a step count, so that no replica's collective is left
        # pending at the end of the data.
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
        history = model.fit(data, epochs=2, steps_per_epoch=4, verbose=0).history
        assert model._teacher_pass().uses_xla is True
        return student.get_weights(), history

    single_weights, single_logs = train(tf.distribute.get_strategy())
    mirrored_weights, mirrored_logs = train(two_replicas())
    for a, b in zip(single_weights, mirrored_weights, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)
    for key in ("loss", "soft_loss", "hard_loss"):
        np.testing.assert_allclose(single_logs[key], mirrored_logs[key], rtol=1e-4)


def test_an_invalid_setting_is_refused():
    with pytest.raises(ValueError, match="teacher_jit_compile"):
        Distiller(student=small_mlp(8, 2), teacher=small_mlp(16, 1), teacher_jit_compile="yes")


def test_teacher_uses_xla_says_what_the_step_does():
    model = Distiller(student=small_mlp(8, 2), teacher=conv_teacher(), temperature=3.0,
                      teacher_jit_compile=True)
    model.compile(optimizer="sgd")
    assert model.teacher_uses_xla is None  # wanted, not yet checked
    for jit in (True, False, "auto"):  # "auto" on a CPU: off
        model, _, _ = fit(conv_teacher(), small_mlp(8, 2), jit)
        assert model.teacher_uses_xla is (jit is True)
    assert Distiller(student=small_mlp(8, 2), teacher=None).teacher_uses_xla is None
    model, _, _ = fit(conv_teacher(), small_mlp(8, 2), True, run_eagerly=True)
    assert model.teacher_uses_xla is None  # eager steps call the teacher directly


@pytest.mark.parametrize("jit", ["auto", True])
def test_an_xla_failure_at_run_time_falls_back_or_is_named(jit, monkeypatch):
    teacher = conv_teacher()
    x = blobs(16, np.random.default_rng(6))[0]
    inference = TeacherInference(lambda b: teacher(b, training=False), jit_compile=jit,
                                 option="jit_compile")
    inference._xla_compiles = True  # lowered to HLO fine; compiling it then fails

    def broken(inputs):
        raise tf.errors.InternalError(None, None, "XLA compilation failed")

    monkeypatch.setattr(inference, "_xla", broken)
    if jit is True:
        with pytest.raises(ValueError, match=r"jit_compile=True\): InternalError"):
            inference.function(x)
        return
    with pytest.warns(UserWarning, match="runs without XLA. Pass jit_compile=False"):
        outputs = inference.function(x, xla=True)
    np.testing.assert_allclose(outputs, teacher(x), atol=1e-5)
    assert inference.xla_compiles is False and not inference.may_try_xla

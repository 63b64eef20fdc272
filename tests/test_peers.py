"""keras_kd.peers: the keras.distillation peer computes keras_kd.Distiller's loss."""

import keras
import numpy as np
import pytest
from conftest import blobs, small_mlp

import keras_kd
from keras_kd.peers import keras_distillation_peer


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _hand_loss(teacher, student, x, y, temperature, soft_weight):
    """soft_weight * T^2 * KL(p_T || q_T) + (1 - soft_weight) * CE, batch mean, in float64."""
    t = np.asarray(teacher(x), "float64")
    s = np.asarray(student(x), "float64")
    log_p, log_q = _log_softmax(t / temperature), _log_softmax(s / temperature)
    soft = temperature**2 * np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)
    hard = -_log_softmax(s)[np.arange(len(y)), y]
    return float(np.mean(soft_weight * soft + (1 - soft_weight) * hard))


@pytest.mark.parametrize("temperature, soft_weight", [(4.0, 0.9), (2.0, 0.3), (1.0, 1.0)])
def test_first_batch_loss_equals_keras_kds_and_a_hand_computation(temperature, soft_weight):
    # Random labels: the hard term is not near zero, so its weight shows.
    x, _ = blobs(32, np.random.default_rng(0))
    y = np.random.default_rng(1).integers(0, 3, len(x))
    teacher = small_mlp(24, 1)
    weights = {"temperature": temperature, "soft_weight": soft_weight}
    expected = _hand_loss(teacher, small_mlp(12, 2), x, y, **weights)
    ours = keras_kd.Distiller(student=small_mlp(12, 2), teacher=teacher, **weights)
    ours.compile(keras.optimizers.SGD(0.1))
    peer = keras_distillation_peer(
        student=small_mlp(12, 2), teacher=teacher, optimizer=keras.optimizers.SGD(0.1), **weights
    )
    # One batch: the logged loss is computed before the update.
    ours_loss, peer_loss = (
        model.fit(x, y, batch_size=len(x), verbose=0).history["loss"][0] for model in (ours, peer)
    )

    assert peer.student_loss_weight == pytest.approx(1.0 - soft_weight)
    assert ours_loss == pytest.approx(expected, rel=1e-5)
    assert peer_loss == pytest.approx(expected, rel=1e-5)
    assert peer_loss == pytest.approx(ours_loss, rel=1e-5)
    assert teacher.trainable is False


def test_the_weight_is_not_the_peers_default_meaning():
    """The trap it exists for: soft_weight 0.1 is a peer student_loss_weight of 0.9."""
    student, teacher = small_mlp(12, 2), small_mlp(12, 1)
    peer = keras_distillation_peer(
        student=student, teacher=teacher, temperature=4.0, soft_weight=0.1
    )
    assert peer.student_loss_weight == pytest.approx(0.9)
    assert peer.student is student and peer.teacher is teacher
    assert not peer.compiled


@pytest.mark.parametrize("soft_weight", [-0.1, 1.5, float("nan"), "0.9x", None])
def test_soft_weight_outside_0_1_is_a_clear_error(soft_weight):
    with pytest.raises(ValueError, match=r"`soft_weight` .* must be in \[0, 1\]"):
        keras_distillation_peer(
            student=small_mlp(12, 2), teacher=small_mlp(12, 1), temperature=4.0, soft_weight=soft_weight
        )


@pytest.mark.parametrize("temperature", [0.0, -2.0, float("nan"), float("inf"), "hot"])
def test_temperature_not_above_zero_is_a_clear_error(temperature):
    with pytest.raises(ValueError, match=r"`temperature` must be a (finite|positive) number"):
        keras_distillation_peer(
            student=small_mlp(12, 2), teacher=small_mlp(12, 1), temperature=temperature, soft_weight=0.9
        )


def test_models_are_keyword_only_and_must_be_models():
    student, teacher = small_mlp(12, 2), small_mlp(12, 1)
    with pytest.raises(TypeError, match="positional"):
        keras_distillation_peer(teacher, student, temperature=4.0, soft_weight=0.9)
    with pytest.raises(TypeError, match=r"`teacher` must be a keras.Model .* got NoneType"):
        keras_distillation_peer(student=student, teacher=None, temperature=4.0, soft_weight=0.9)
    with pytest.raises(ValueError, match="are the same model"):
        keras_distillation_peer(student=student, teacher=student, temperature=4.0, soft_weight=0.9)


def test_compile_arguments_keep_the_objective():
    student, teacher = small_mlp(12, 2), small_mlp(12, 1)
    with pytest.raises(ValueError, match="`loss` is set by keras_distillation_peer"):
        keras_distillation_peer(
            student=student, teacher=teacher, temperature=4.0, soft_weight=0.9,
            optimizer="sgd", loss="sparse_categorical_crossentropy",
        )
    with pytest.raises(TypeError, match=r"\['jit_compile'\] need an `optimizer`"):
        keras_distillation_peer(
            student=student, teacher=teacher, temperature=4.0, soft_weight=0.9, jit_compile=False
        )

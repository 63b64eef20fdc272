"""keras_kd.Distiller against the keras.distillation peer (`keras_kd.peers`).

The Imagenette and throughput benchmarks compare the two libraries; this checks
that the peer built by `keras_distillation_peer` (`LogitsDistillation(
temperature=T, loss=KLDivergence())`, `student_loss_weight = 1 - soft_weight`)
optimises the same objective as ours over several steps, so the comparison is
one of implementations, not of losses.
"""

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd.peers import keras_distillation_peer

TEMPERATURE, SOFT_WEIGHT = 4.0, 0.9


def dense_net(seed: int, name: str) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(5)],
        name=name,
    )


@pytest.mark.parametrize("soft_weight", [SOFT_WEIGHT, 0.5])
def test_same_losses_and_updates_as_the_configured_peer(soft_weight):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype("float32")
    y = rng.integers(0, 5, size=96)
    teacher = dense_net(1, "teacher")
    teacher.set_weights([3.0 * w for w in teacher.get_weights()])  # peaked targets
    ours_student, peer_student = dense_net(2, "ours"), dense_net(2, "peer")

    ours = keras_kd.Distiller(
        student=ours_student, teacher=teacher, temperature=TEMPERATURE, soft_weight=soft_weight
    )
    ours.compile(keras.optimizers.SGD(0.5))
    theirs = keras_distillation_peer(
        student=peer_student, teacher=teacher, temperature=TEMPERATURE,
        soft_weight=soft_weight, optimizer=keras.optimizers.SGD(0.5),
    )

    ours_history = ours.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    theirs_history = theirs.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)

    np.testing.assert_allclose(
        ours_history.history["loss"], theirs_history.history["loss"], rtol=1e-4
    )
    for a, b in zip(ours_student.get_weights(), peer_student.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # Training moved the students: equal weights are not equal initial weights.
    assert not np.allclose(ours_student.get_weights()[0], dense_net(2, "x").get_weights()[0])

"""The shared MLP builder and the scoring helpers against hand-computed values."""

import keras
import numpy as np
import pytest

from keras_kd import evaluation, models


def test_mlp_matches_the_papers_shapes():
    teacher = models.mlp((28, 28), (1200, 1200), 10, dropout=0.5, input_dropout=0.2, max_norm=3.5)
    assert teacher.count_params() == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10
    assert teacher.layers[-1].name == "logits" and teacher.layers[-1].activation is keras.activations.linear
    assert [type(layer).__name__ for layer in teacher.layers] == [
        "Flatten", "Dropout", "Dense", "Dropout", "Dense", "Dropout", "Dense",
    ]
    assert all(layer.kernel_constraint.max_value == 3.5 for layer in teacher.layers if isinstance(layer, keras.layers.Dense))
    flat = models.mlp(64, (), 3)
    assert [type(layer).__name__ for layer in flat.layers] == ["Dense"]


@pytest.mark.parametrize("kwargs, match", [
    ({"hidden": (0,)}, "positive"),
    ({"classes": 0}, "positive"),
    ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\)"),
    ({"input_dropout": -0.1}, r"`input_dropout` must be in \[0, 1\)"),
])
def test_mlp_refuses_bad_shapes(kwargs, match):
    arguments = {"input_shape": 4, "hidden": (8,), "classes": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        models.mlp(**arguments)


def test_scores_against_hand_computation():
    logits = np.array([[3.0, 2.0, 1.0], [0.0, 1.0, 5.0], [2.0, 2.5, 0.0], [1.0, 0.0, 0.5]])
    labels = np.array([0, 1, 0, 2])
    # arg-max: 0, 2, 1, 0 -> right, wrong, wrong, wrong
    assert evaluation.error_count(logits, labels) == 3
    assert evaluation.error_count(logits, labels, mask=labels == 0) == 1
    assert evaluation.accuracy(logits, labels) == 0.25
    # top-2 sets: {0,1}, {2,1}, {1,0}, {0,2} -> all four hit
    assert evaluation.top_k_accuracy(logits, labels, k=2) == 1.0


def test_scores_refuse_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="one label per example"):
        evaluation.accuracy(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="evaluation set is empty"):
        evaluation.accuracy(np.zeros((0, 2)), [])


def test_predict_logits_on_arrays_and_datasets():
    import tensorflow as tf

    model = models.mlp(4, (), 2)
    x = np.random.default_rng(0).normal(size=(10, 4)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(evaluation.predict_logits(model, x, batch_size=3), expected, rtol=1e-5)
    batches = tf.data.Dataset.from_tensor_slices(x).batch(4)
    np.testing.assert_allclose(evaluation.predict_logits(model, batches), expected, rtol=1e-5)

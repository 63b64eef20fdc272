"""The shared model builders and the scoring helpers against hand-computed values."""

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


def test_perplexity_equals_exp_of_a_hand_computed_mean_token_nll():
    model = models.causal_transformer(11, 5, layers=1, width=8, heads=2)
    x = np.array([[1, 4, 7, 2, 9], [1, 3, 0, 0, 0]], "int32")
    y = np.array([[4, 7, 2, 9, 5], [3, 6, 0, 0, 0]], "int32")
    x[1, 1] = 3  # a valid input whose target (6) counts too
    logits = np.asarray(model(x), "float64")
    logits -= logits.max(axis=-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    valid = y != 0
    nll = -np.take_along_axis(log_p, y[..., None], -1)[..., 0]
    expected = float(np.exp(nll[valid].mean()))
    assert valid.sum() == 7
    got = evaluation.perplexity(model, x, y, batch_size=1)
    assert got == pytest.approx(expected, rel=1e-5)
    # Padding targets count no bytes, whatever the table says for id 0.
    scores = evaluation.token_scores(model, x, y, token_bytes=np.arange(11) + 1)
    assert scores.tokens == 7 and scores.bytes == int((y[valid] + 1).sum())
    assert scores.bits_per_byte == pytest.approx(nll[valid].sum() / np.log(2) / scores.bytes, rel=1e-5)
    # Batching changes nothing.
    assert evaluation.perplexity(model, x, y) == pytest.approx(expected, rel=1e-5)


def test_model_output_carries_the_padding_mask_and_is_causal():
    model = models.causal_transformer(11, 4, layers=2, width=8, heads=2)
    x = np.array([[1, 4, 0, 0], [1, 4, 5, 6]], "int32")
    out = model(x)
    assert np.asarray(out._keras_mask).tolist() == [
        [True, True, False, False],
        [True, True, True, True],
    ]
    changed = x.copy()
    changed[1, 3] = 9
    np.testing.assert_allclose(model(changed)[1, :3], out[1, :3], atol=1e-5)


@pytest.mark.parametrize("sizes, match", [
    ({"width": 10, "heads": 4}, "not a multiple of the 4 attention heads"),
    ({"layers": 0}, "`layers` must be a whole number >= 1"),
    ({"vocab_size": 0}, "`vocab_size` must be a whole number >= 1"),
    ({"heads": 2.0}, "`heads` must be a whole number"),
])
def test_causal_transformer_refuses_bad_sizes(sizes, match):
    arguments = {"vocab_size": 11, "sequence_length": 4, "layers": 1, "width": 8, "heads": 2, **sizes}
    with pytest.raises(ValueError, match=match):
        models.causal_transformer(**arguments)


def test_token_scores_refuse_mismatched_or_padding_only_windows():
    model = models.causal_transformer(11, 3, layers=1, width=8, heads=2)
    with pytest.raises(ValueError, match="same shape"):
        evaluation.token_scores(model, np.ones((2, 3), "int32"), np.ones((2, 2), "int32"))
    with pytest.raises(ValueError, match="No valid target token"):
        evaluation.perplexity(model, np.ones((2, 3), "int32"), np.zeros((2, 3), "int32"))
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        evaluation.perplexity(model, np.ones((1, 3), "int32"), np.ones((1, 3), "int32"), batch_size=0)

"""keras_kd.bias: shifting class biases and choosing the shift on held-out data."""

import keras
import numpy as np
import pytest

from keras_kd.bias import (
    choose_bias_shift,
    output_dense,
    shift_class_bias,
    shifted_accuracy,
)


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def test_shift_changes_exactly_those_logits_by_exactly_the_constant():
    model = small_model()
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    before = model.predict(x, verbose=0)
    assert shift_class_bias(model, [3, 7], 2.75) is model
    after = model.predict(x, verbose=0)
    difference = after - before
    np.testing.assert_allclose(difference[:, [3, 7]], 2.75, atol=1e-5)
    np.testing.assert_array_equal(difference[:, [0, 1, 2, 4, 5, 6, 8, 9]], 0.0)
    shift_class_bias(model, 7, -1.25)  # a single class as an int
    np.testing.assert_allclose(
        model.predict(x, verbose=0)[:, 7] - before[:, 7], 1.5, atol=1e-5
    )


def test_shift_rejects_models_without_a_linear_dense_bias():
    softmax = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation="softmax")]
    )
    with pytest.raises(ValueError, match="activation 'softmax'"):
        shift_class_bias(softmax, [0], 1.0)
    no_bias = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, use_bias=False)]
    )
    with pytest.raises(ValueError, match="use_bias=False"):
        shift_class_bias(no_bias, [0], 1.0)
    flatten_last = keras.Sequential([keras.Input((4, 1)), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="last layer is Flatten"):
        output_dense(flatten_last)
    with pytest.raises(ValueError, match=r"`classes` \[10\] are outside \[0, 10\)"):
        shift_class_bias(small_model(), [10], 1.0)


def test_shifted_accuracy_by_hand():
    logits = [[1.0, 0.0], [1.0, 0.5], [0.0, 2.0]]
    labels = [1, 1, 1]
    assert shifted_accuracy(logits, labels, [1], 0.0) == pytest.approx(1 / 3)
    assert shifted_accuracy(logits, labels, [1], 0.6) == pytest.approx(2 / 3)
    assert shifted_accuracy(logits, labels, [1], 1.1) == 1.0
    assert shifted_accuracy(logits, labels, [0], 1.1) == pytest.approx(1 / 3)


def planted_logits():
    """Class-3 examples whose logit 3 trails logit 5 by 2.55, and class-0 examples
    whose logit 3 trails logit 0 by 3.55: exactly the shifts in (2.55, 3.55) get
    every example right."""
    rows, labels = [], []
    for _ in range(30):
        row = np.zeros(10)
        row[5], row[3] = 4.0, 1.45
        rows.append(row)
        labels.append(3)
    for _ in range(20):
        row = np.zeros(10)
        row[0], row[3] = 5.0, 1.45
        rows.append(row)
        labels.append(0)
    return np.array(rows), np.array(labels)


def test_chooser_recovers_the_planted_optimum():
    logits, labels = planted_logits()
    grid = np.round(np.arange(0, 101) * 0.1, 6)
    choice = choose_bias_shift(logits, labels, [3], grid)
    assert choice.unshifted_accuracy == pytest.approx(20 / 50)
    assert choice.accuracy == 1.0
    assert 2.55 < choice.shift < 3.55
    # Middle of the plateau 2.6 .. 3.5: ten grid points, the fifth is 3.0.
    assert choice.shift == pytest.approx(3.0)
    best = [s for s, a in zip(choice.candidates, choice.accuracies) if a == 1.0]
    assert best[0] == pytest.approx(2.6) and best[-1] == pytest.approx(3.5)
    # Shifting past 3.55 misclassifies the class-0 examples: accuracy 30 / 50.
    assert choice.accuracies[36] == pytest.approx(30 / 50)
    assert choice.get_config()["shift"] == choice.shift


def test_chooser_finds_a_negative_shift_to_lower_biases():
    logits, _ = planted_logits()
    labels = np.full(50, 3)  # every example is a 3, out-scored by class 5 or class 0
    grid = np.round(np.arange(-100, 1) * 0.1, 6)
    choice = choose_bias_shift(logits, labels, [0, 5], grid)
    assert choice.unshifted_accuracy == 0.0
    # Lowering 0 and 5 by 3: class 5 drops to 1.0 < 1.45 (30 right), class 0 to 2.0.
    assert choice.accuracies[70] == pytest.approx(30 / 50)
    # Below -3.55 all are right; the plateau -10.0 .. -3.6 has 65 points, middle -6.8.
    assert choice.accuracy == 1.0
    assert choice.shift == pytest.approx(-6.8)


def test_chooser_rejects_bad_candidates():
    logits, labels = planted_logits()
    with pytest.raises(ValueError, match="strictly increasing"):
        choose_bias_shift(logits, labels, [3], [1.0, 0.0])
    with pytest.raises(ValueError, match="empty"):
        choose_bias_shift(logits, labels, [3], [])


def test_choice_applied_to_a_model_gives_the_chosen_accuracy():
    model = small_model(1)
    x = np.random.default_rng(1).normal(size=(200, 6)).astype("float32")
    logits = model.predict(x, verbose=0)
    labels = np.full(200, 3)
    choice = choose_bias_shift(
        logits, labels, [3], np.round(np.arange(0, 201) * 0.1, 6)
    )
    shift_class_bias(model, [3], choice.shift)
    predicted = np.argmax(model.predict(x, verbose=0), axis=1)
    assert np.mean(predicted == labels) == pytest.approx(choice.accuracy)
    assert choice.accuracy > choice.unshifted_accuracy


def test_output_dense_refuses_a_distiller_and_a_transformed_output():
    import keras_kd

    student = small_model(0)
    distiller = keras_kd.Distiller(student=student, teacher=small_model(1), temperature=2.0)
    with pytest.raises(ValueError, match=r"Pass its `\.student`"):
        output_dense(distiller)
    assert output_dense(student) is student.layers[-1]
    inputs = keras.Input((4,))
    scaled = keras.Model(inputs, keras.layers.Dense(3)(inputs) * 2.0)
    with pytest.raises(ValueError, match="an operation follows it"):
        output_dense(scaled)

"""TeacherEnsemble: combination math against NumPy, validation, save/load, helpers."""

import warnings

import keras
import numpy as np
import pytest

from keras_kd.distiller import Distiller
from keras_kd.teachers import (
    TeacherEnsemble,
    combine_logits,
    evaluate_ensemble,
    train_ensemble,
)

FEATURES, CLASSES = 4, 3


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _linear_member(seed, scale=1.0):
    """A Dense model with fixed random weights, so NumPy can compute its logits."""
    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(CLASSES)])
    kernel = rng.normal(size=(FEATURES, CLASSES)).astype("float32") * scale
    bias = rng.normal(size=CLASSES).astype("float32")
    model.set_weights([kernel, bias])
    return model, kernel, bias


@pytest.fixture
def members():
    return [_linear_member(seed, scale=3.0) for seed in range(3)]


@pytest.fixture
def x():
    return np.random.default_rng(7).normal(size=(6, FEATURES)).astype("float32")


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_arithmetic_mean_is_mean_of_tempered_probabilities(members, x, temperature):
    ensemble = TeacherEnsemble([m for m, _, _ in members], mean="arithmetic")
    z = np.stack([x @ k + b for _, k, b in members])  # (members, batch, classes)
    expected = np.mean(_softmax(z / temperature), axis=0)
    logits = ensemble.logits_at_temperature(x, temperature).numpy()
    np.testing.assert_allclose(_softmax(logits / temperature), expected, atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_geometric_mean_is_normalised_mean_of_log_probabilities(members, x, temperature):
    ensemble = TeacherEnsemble([m for m, _, _ in members], mean="geometric")
    z = np.stack([x @ k + b for _, k, b in members])
    log_p = np.log(_softmax(z / temperature))
    unnormalised = np.exp(log_p.mean(axis=0))
    expected = unnormalised / unnormalised.sum(axis=-1, keepdims=True)
    logits = ensemble.logits_at_temperature(x, temperature).numpy()
    np.testing.assert_allclose(_softmax(logits / temperature), expected, atol=1e-6)
    np.testing.assert_allclose(ensemble(x).numpy(), z.mean(axis=0), atol=1e-5)


def test_arithmetic_combination_stays_finite_for_huge_logits():
    z = np.array([[[1e4, 0.0, -1e4], [-1e4, 0.0, 1e4]]], "float32")  # 1 example
    logits = combine_logits(z, 0.5, "arithmetic").numpy()
    assert np.all(np.isfinite(logits))
    np.testing.assert_allclose(_softmax(logits / 0.5), [[0.5, 0.0, 0.5]], atol=1e-6)


def test_distiller_combines_an_arithmetic_ensemble_at_its_temperature(members, x):
    temperature = 2.5
    ensemble = TeacherEnsemble([m for m, _, _ in members], mean="arithmetic")
    student, sk, sb = _linear_member(99)
    distiller = Distiller(student=student, teacher=ensemble, temperature=temperature, soft_weight=1.0)
    distiller.compile(optimizer="sgd", loss=None)
    soft = distiller.evaluate(x, batch_size=len(x), verbose=0, return_dict=True)["soft_loss"]
    z = np.stack([x @ k + b for _, k, b in members])
    p = np.mean(_softmax(z / temperature), axis=0)
    q = _softmax((x @ sk + sb) / temperature)
    expected = temperature**2 * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))
    assert soft == pytest.approx(expected, rel=1e-5)


def test_save_and_load_as_one_artifact(members, x, tmp_path):
    ensemble = TeacherEnsemble([m for m, _, _ in members], mean="arithmetic")
    path = tmp_path / "ensemble.keras"
    ensemble.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, TeacherEnsemble)
    assert loaded.mean == "arithmetic" and loaded.num_members == 3
    np.testing.assert_allclose(
        loaded.logits_at_temperature(x, 4.0), ensemble.logits_at_temperature(x, 4.0), atol=1e-6
    )
    assert not loaded.trainable_weights  # members stay frozen


def test_trained_compiled_members_reload_quietly(members, x, tmp_path):
    """Members come back uncompiled: reloading used to warn that Keras skipped
    their optimizers' variables (a TeacherEnsemble never trains them)."""
    y = np.arange(len(x)) % CLASSES
    for model, _, _ in members:
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, verbose=0)
    ensemble = TeacherEnsemble([m for m, _, _ in members], mean="arithmetic")
    ensemble.save(tmp_path / "ensemble.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = keras.saving.load_model(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(
        loaded.logits_at_temperature(x, 4.0), ensemble.logits_at_temperature(x, 4.0), atol=1e-6
    )


def test_rejects_members_that_cannot_be_combined(members):
    model = members[0][0]
    soft = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(CLASSES, activation="softmax")]
    )
    wider = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(CLASSES + 1)])
    with pytest.raises(ValueError, match=r"models\[1\].*ends in a softmax"):
        TeacherEnsemble([model, soft])
    with pytest.raises(ValueError, match=r"output sizes differ: \[3, 4\]"):
        TeacherEnsemble([model, wider])
    with pytest.raises(ValueError, match="empty"):
        TeacherEnsemble([])
    with pytest.raises(ValueError, match="list of keras.Model"):
        TeacherEnsemble(model)
    with pytest.raises(ValueError, match="`mean` must be one of.*'median'"):
        TeacherEnsemble([model], mean="median")
    with pytest.raises(ValueError, match="temperature"):
        TeacherEnsemble([model], mean="arithmetic").logits_at_temperature(
            np.zeros((1, FEATURES), "float32"), 0.0
        )


def test_evaluate_ensemble_matches_numpy(members, x):
    ensemble = TeacherEnsemble([m for m, _, _ in members], mean="arithmetic")
    y = np.array([0, 1, 2, 0, 1, 2])
    report = evaluate_ensemble(ensemble, x, y, batch_size=4)
    z = np.stack([x @ k + b for _, k, b in members])
    for m, result in enumerate(report["members"]):
        assert result["accuracy"] == pytest.approx(np.mean(z[m].argmax(-1) == y))
        nll = -np.mean(np.log(_softmax(z[m])[np.arange(6), y]))
        assert result["loss"] == pytest.approx(nll, rel=1e-5)
    p = _softmax(z).mean(axis=0)
    assert report["ensemble"]["accuracy"] == pytest.approx(np.mean(p.argmax(-1) == y))
    assert report["ensemble"]["loss"] == pytest.approx(
        -np.mean(np.log(p[np.arange(6), y])), rel=1e-5
    )
    with pytest.raises(ValueError, match="integer class ids"):
        evaluate_ensemble(ensemble, x, np.eye(3)[y])
    with pytest.raises(ValueError, match="6 examples but `y` has 5"):
        evaluate_ensemble(ensemble, x, y[:5])


def test_train_ensemble_members_differ_by_seed_and_get_their_kwargs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, FEATURES)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    seen = []

    def build(seed, dropout=0.0):
        seen.append((seed, dropout))
        return keras.Sequential(
            [keras.Input((FEATURES,)), keras.layers.Dense(8, activation="relu"),
             keras.layers.Dropout(dropout), keras.layers.Dense(2)]
        )

    ensemble = train_ensemble(
        build, 2, x, y, epochs=1, batch_size=32, seeds=[3, 4],
        member_kwargs=[{"dropout": 0.1}, {"dropout": 0.3}], mean="arithmetic", verbose=0,
    )
    assert seen == [(3, 0.1), (4, 0.3)]
    assert ensemble.num_members == 2 and ensemble.mean == "arithmetic"
    first, second = (m.get_weights()[0] for m in ensemble.members)
    assert not np.allclose(first, second)
    with pytest.raises(ValueError, match="`seeds` has 1 entries but `n_members` is 2"):
        train_ensemble(build, 2, x, y, seeds=[1])


def test_member_data_order_is_shuffled_for_dict_inputs():
    from keras_kd.teachers import _as_dataset

    x = {"features": np.arange(64, dtype="float32")[:, None]}
    y = np.arange(64)
    order = np.concatenate([b.numpy() for _, b in _as_dataset(x, y, 16, shuffle_seed=3)])
    assert sorted(order.tolist()) == list(range(64))
    assert order.tolist() != list(range(64))  # a buffer of one would keep the order


@pytest.mark.parametrize("mean", ["arithmetic", "geometric"])
def test_an_ensemble_of_sequence_members_combines_each_time_step(mean):
    rng = np.random.default_rng(3)
    members = [
        keras.Sequential([keras.Input((6, 4)), keras.layers.Dense(5)]) for _ in range(3)
    ]
    x = rng.normal(size=(2, 6, 4)).astype("float32")
    ensemble = TeacherEnsemble(members, mean=mean)
    combined = ensemble.logits_at_temperature(x, 2.0).numpy()
    assert combined.shape == (2, 6, 5)
    z = np.stack([member(x).numpy() for member in members])  # (members, batch, time, classes)
    if mean == "geometric":
        expected = z.mean(axis=0)
    else:
        p = np.exp(z / 2.0 - z.max(axis=-1, keepdims=True) / 2.0)
        p /= p.sum(axis=-1, keepdims=True)
        expected = 2.0 * np.log(p.mean(axis=0))
    # Logits are defined up to a constant per token: compare the distributions.
    got = np.exp(combined / 2.0) / np.exp(combined / 2.0).sum(-1, keepdims=True)
    want = np.exp(expected / 2.0) / np.exp(expected / 2.0).sum(-1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-6)

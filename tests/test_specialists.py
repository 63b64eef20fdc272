"""Tests of keras_kd.specialists: clusters, specialists, the eq. 5 combination."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_kd import specialists as sp


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _generalist(num_inputs=6, num_classes=5, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((num_inputs,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = keras.layers.Dense(num_classes)(hidden)
    return keras.Model(inputs, outputs)


# ------------------------------------------------------------------ clusters


def test_prediction_covariance_hand_computed():
    # Two examples: var([1, 0]) = 0.5 with the unbiased (n - 1) estimate.
    covariance = sp.prediction_covariance([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(covariance, [[0.5, -0.5], [-0.5, 0.5]])


def test_clustering_recovers_planted_confusable_groups():
    groups = [(0, 1, 2), (3, 4), (5, 6, 7, 8), (9, 10, 11)]
    rng = np.random.default_rng(1)
    rows = []
    for _ in range(2000):
        group = groups[rng.integers(len(groups))]
        p = np.full(12, 0.002)
        p[list(group)] += rng.dirichlet(np.ones(len(group)))
        rows.append(p / p.sum())
    for normalize in (True, False):
        clusters = sp.find_confusable_subsets(
            np.array(rows), 4, seed=0, normalize=normalize
        )
        assert set(clusters.subsets) == set(groups)
        assert clusters.coverage().tolist() == [1] * 12


def test_unit_columns_separate_confusions_that_raw_variance_hides():
    # Classes 0-3 are predicted confidently (large variance), 4-5 and 6-7 are
    # confused pairs with small probabilities. With raw columns the variances of
    # 0-3 dominate the distances; with unit columns the two pairs are found.
    rng = np.random.default_rng(5)
    rows = []
    for _ in range(3000):
        p = np.full(8, 1e-3)
        choice = rng.integers(6)
        if choice < 4:
            p[choice] += 1.0
        else:
            pair = [4, 5] if choice == 4 else [6, 7]
            p[pair] += 0.1 * rng.dirichlet([1.0, 1.0])
            p[rng.integers(4)] += 0.9
        rows.append(p / p.sum())
    unit = sp.find_confusable_subsets(np.array(rows), 6, seed=0, min_size=2)
    assert {(4, 5), (6, 7)} <= set(unit.subsets)


def test_pooled_clusterings_overlap_and_min_size_drops_lone_classes():
    groups = [(0, 1, 2, 3), (4, 5)]  # class 6 is never confused
    rng = np.random.default_rng(2)
    rows = []
    for _ in range(1500):
        choice = rng.integers(3)
        p = np.full(7, 0.001)
        if choice == 2:
            p[6] += 1.0
        else:
            p[list(groups[choice])] += rng.dirichlet(np.ones(len(groups[choice])))
        rows.append(p / p.sum())
    single = sp.find_confusable_subsets(np.array(rows), 3, seed=0)
    assert set(single.subsets) == set(groups)  # {6} was a cluster of one: dropped
    assert single.coverage()[6] == 0
    pooled = sp.find_confusable_subsets(np.array(rows), (3, 5), seed=0)
    assert set(groups) <= set(pooled.subsets)
    assert pooled.coverage().max() >= 2  # some class is now in two subsets
    assert "no specialist (1 classes): 6" in pooled.report()


def test_subsets_round_trip_and_validation():
    clusters = sp.ConfusableSubsets(((9, 4), (3, 8)), num_classes=10)
    assert clusters.subsets == ((4, 9), (3, 8))
    assert sp.ConfusableSubsets.from_dict(clusters.to_dict()) == clusters
    with pytest.raises(ValueError, match=r"outside \[0, 10\)"):
        sp.ConfusableSubsets(((4, 10),), num_classes=10)
    with pytest.raises(ValueError, match="dustbin class would be empty"):
        sp.ConfusableSubsets((tuple(range(3)),), num_classes=3)
    with pytest.raises(ValueError, match="num_subsets"):
        sp.find_confusable_subsets(np.eye(3), 4)


# --------------------------------------------------------------- specialists


def test_fold_logits_and_labels():
    p = np.array([[0.1, 0.2, 0.3, 0.4]])
    folded = tf.nn.softmax(sp.fold_logits(np.log(p), [2, 0])).numpy()
    np.testing.assert_allclose(folded, [[0.3, 0.1, 0.6]], rtol=1e-6)
    assert sp.fold_labels([0, 1, 2, 3], [2, 0]).tolist() == [1, 2, 0, 2]


def test_oversample_indices_takes_exactly_the_fraction():
    labels = np.repeat(np.arange(10), 30)  # subset {3, 4} holds 20% of the data
    indices = sp.oversample_indices(labels, [3, 4], 200, subset_fraction=0.5, seed=0)
    drawn = labels[indices]
    assert np.isin(drawn, [3, 4]).sum() == 100
    # 100 draws from 60 subset examples: every one at least once, none 3 times.
    counts = np.bincount(indices[np.isin(drawn, [3, 4])], minlength=300)
    assert counts[labels == 3].min() >= 1 and counts.max() <= 2
    with pytest.raises(ValueError, match="subset_fraction"):
        sp.oversample_indices(labels, [3], 10, subset_fraction=1.0)


def test_dustbin_log_shift_closed_form():
    # pi = 0.1, f = 0.5: the subset's odds were multiplied by (0.5/0.1)/(0.5/0.9) = 9.
    assert sp.dustbin_log_shift(0.1, 0.5) == pytest.approx(np.log(9.0), abs=1e-12)
    assert sp.dustbin_log_shift(0.3, 0.3) == pytest.approx(0.0, abs=1e-12)
    assert sp.dustbin_log_shift(0.2, 0.6) == pytest.approx(np.log(6.0), abs=1e-12)
    with pytest.raises(ValueError, match="subset_prior"):
        sp.dustbin_log_shift(0.0)


def test_correct_dustbin_shifts_the_dustbin_logit_by_log_proportion():
    specialist = sp.build_specialist(_generalist(), [1, 3])
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    before = specialist(x).numpy()
    shift = sp.dustbin_log_shift(subset_prior=0.4, subset_fraction=0.5)  # log 1.5
    sp.correct_dustbin(specialist, shift)
    after = specialist(x).numpy()
    np.testing.assert_array_equal(after[:, :2], before[:, :2])
    np.testing.assert_allclose(after[:, 2] - before[:, 2], np.log(1.5), atol=2e-6)


def test_build_specialist_starts_from_the_generalist():
    generalist = _generalist()
    weights = [w.copy() for w in generalist.get_weights()]
    specialist = sp.build_specialist(generalist, [4, 0])
    x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    z = generalist(x).numpy()
    s = specialist(x).numpy()
    np.testing.assert_allclose(s[:, :2], z[:, [4, 0]], rtol=1e-5, atol=1e-6)
    # Dustbin: mean of the other columns' logits plus log(#others).
    np.testing.assert_allclose(s[:, 2], z[:, 1:4].mean(axis=1) + np.log(3), atol=1e-5)
    for old, new in zip(weights, generalist.get_weights()):
        np.testing.assert_array_equal(old, new)
    body = [w for w in specialist.get_weights()[:-2]]
    for old, new in zip(weights[:-2], body):
        np.testing.assert_array_equal(old, new)


def test_build_specialist_rejects_a_softmax_head():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(inputs))
    with pytest.raises(ValueError, match="outputs logits"):
        sp.build_specialist(model, [0, 1])


def test_train_specialist_corrects_by_the_measured_proportion():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype("float32")
    y = rng.integers(0, 5, size=200)
    specialist, info = sp.train_specialist(
        _generalist(), [1, 2], x, y, num_examples=128, batch_size=32,
        soft_weight=0.5, verbose=0,
    )
    assert specialist.output_shape == (None, 3)
    assert info["subset_fraction"] == 0.5
    prior = float(np.isin(y, [1, 2]).mean())
    assert info["dustbin_log_shift"] == pytest.approx(np.log((1 - prior) / prior))
    assert set(info["history"]) >= {"loss", "soft_loss", "hard_loss"}


# -------------------------------------------------------------- combination


def test_active_specialists_hand_case():
    logits = [[5.0, 4.0, 0.0, 0.0], [0.0, 0.0, 1.0, 9.0]]
    membership = sp.membership_matrix([[0], [1, 2], [3]], 4)
    active = sp.active_specialists(logits, membership, top_n=2).numpy()
    np.testing.assert_array_equal(active, [[1, 1, 0], [0, 1, 1]])


def test_no_active_specialist_gives_the_generalist_exactly():
    rng = np.random.default_rng(0)
    log_pg = np.log(_softmax(rng.normal(size=(5, 6)) * 3)).astype("float32")
    log_pm = np.log(_softmax(rng.normal(size=(5, 3)))).astype("float32")
    q = sp.combine_distributions(log_pg, [log_pm], [[1, 2]], np.zeros((5, 1)))
    np.testing.assert_allclose(q.numpy(), log_pg, atol=1e-6)


def test_specialist_over_all_classes_with_empty_dustbin_gives_the_mean():
    # KL(p_g || q) + KL(p_m || q) is minimised by q = (p_g + p_m) / 2.
    rng = np.random.default_rng(3)
    pg = _softmax(rng.normal(size=(8, 5)) * 2)
    pm = _softmax(rng.normal(size=(8, 5)) * 2)
    log_pm = np.concatenate([np.log(pm), np.full((8, 1), -1e9)], axis=1)
    q = tf.exp(
        sp.combine_distributions(np.log(pg), [log_pm], [list(range(5))], np.ones((8, 1)))
    )
    np.testing.assert_allclose(q.numpy(), (pg + pm) / 2, atol=1e-6)


def test_one_specialist_matches_the_closed_form():
    # Stationarity 2q = p_g + u(q) gives q_c = (p_g,c + p_m,c) / 2 inside S and
    # q_c = p_g,c (G + d) / (2 G) outside, with G = p_g(outside), d = p_m(dustbin).
    rng = np.random.default_rng(4)
    subset = [1, 4, 5]
    rest = [0, 2, 3, 6]
    pg = _softmax(rng.normal(size=(16, 7)) * 4)
    pm = _softmax(rng.normal(size=(16, 4)) * 4)
    expected = np.zeros_like(pg)
    expected[:, subset] = (pg[:, subset] + pm[:, :3]) / 2
    outside = pg[:, rest].sum(axis=1, keepdims=True)
    expected[:, rest] = pg[:, rest] * (outside + pm[:, 3:]) / (2 * outside)
    q = tf.exp(
        sp.combine_distributions(np.log(pg), [np.log(pm)], [subset], np.ones((16, 1)))
    )
    np.testing.assert_allclose(q.numpy(), expected, atol=1e-6)


def _random_problem(seed, batch=12, classes=8):
    rng = np.random.default_rng(seed)
    subsets = [[0, 1, 2], [2, 3], [3, 4, 5, 6]]
    log_pg = np.log(_softmax(rng.normal(size=(batch, classes)) * 3)).astype("float32")
    log_pms = [
        np.log(_softmax(rng.normal(size=(batch, len(s) + 1)) * 3)).astype("float32")
        for s in subsets
    ]
    active = (rng.random((batch, len(subsets))) < 0.7).astype("float32")
    return log_pg, log_pms, subsets, active


def test_gradient_formula_matches_autodiff():
    log_pg, log_pms, subsets, active = _random_problem(5)
    z = tf.Variable(np.random.default_rng(6).normal(size=log_pg.shape), dtype=tf.float32)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(
            sp.combination_objective(z, log_pg, log_pms, subsets, active)
        )
    np.testing.assert_allclose(
        sp.combination_gradient(z, log_pg, log_pms, subsets, active).numpy(),
        tape.gradient(total, z).numpy(),
        atol=2e-5,
    )


def test_solver_reaches_the_minimum_with_overlapping_specialists():
    log_pg, log_pms, subsets, active = _random_problem(7)
    log_q = sp.combine_distributions(log_pg, log_pms, subsets, active, steps=100)
    gradient = sp.combination_gradient(log_q, log_pg, log_pms, subsets, active)
    assert np.abs(gradient.numpy()).max() < 1e-5  # stationary: the convex minimum
    best = sp.combination_objective(log_q, log_pg, log_pms, subsets, active).numpy()
    rng = np.random.default_rng(8)
    for _ in range(5):
        nudged = log_q + rng.normal(size=log_q.shape).astype("float32") * 0.05
        other = sp.combination_objective(nudged, log_pg, log_pms, subsets, active)
        assert np.all(other.numpy() >= best - 1e-6)


# ---------------------------------------------------------------- predictor


def _ensemble():
    generalist = _generalist(seed=1)
    subsets = [[0, 1], [1, 2, 3]]
    specialists = []
    for m, subset in enumerate(subsets):
        specialist = sp.build_specialist(generalist, subset, name=f"s{m}")
        keras.utils.set_random_seed(10 + m)
        specialist.layers[-1].set_weights(
            [w + np.random.normal(size=w.shape).astype("float32")
             for w in specialist.layers[-1].get_weights()]
        )
        specialists.append(specialist)
    return sp.SpecialistEnsemble(generalist, specialists, subsets, top_n=2)


def test_ensemble_output_is_the_solver_output():
    ensemble = _ensemble()
    x = np.random.default_rng(2).normal(size=(10, 6)).astype("float32")
    logits = ensemble.generalist(x)
    active = sp.active_specialists(logits, sp.membership_matrix(ensemble.subsets, 5), 2)
    log_pms = [tf.nn.log_softmax(s(x)) for s in ensemble.specialists]
    expected = tf.exp(
        sp.combine_distributions(tf.nn.log_softmax(logits), log_pms, ensemble.subsets, active)
    )
    probabilities = ensemble.predict(x, verbose=0)
    np.testing.assert_allclose(probabilities, expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_ensemble_saves_and_loads_with_identical_outputs(tmp_path):
    ensemble = _ensemble()
    x = np.random.default_rng(3).normal(size=(7, 6)).astype("float32")
    path = tmp_path / "ensemble.keras"
    ensemble.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, sp.SpecialistEnsemble)
    assert loaded.subsets == ensemble.subsets and loaded.top_n == 2
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), ensemble.predict(x, verbose=0))


def test_ensemble_rejects_mismatched_specialists():
    generalist = _generalist()
    specialist = sp.build_specialist(generalist, [0, 1])
    with pytest.raises(ValueError, match="needs len\\(subset\\) \\+ 1"):
        sp.SpecialistEnsemble(generalist, [specialist], [[0, 1, 2]])
    with pytest.raises(ValueError, match="one specialist per subset"):
        sp.SpecialistEnsemble(generalist, [specialist], [[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="top_n"):
        sp.SpecialistEnsemble(generalist, [specialist], [[0, 1]], top_n=0)


def test_coverage_table_hand_computed():
    labels = np.array([0, 0, 1, 2, 3, 3])
    generalist = np.array([0, 1, 1, 0, 3, 2])
    combined = np.array([0, 0, 1, 2, 2, 2])
    # Class 0 is in two subsets, 1 and 2 in one, 3 in none.
    rows = sp.coverage_table(labels, generalist, combined, [[0, 1], [0, 2]], num_classes=4)
    by_name = {row["specialists covering"]: row for row in rows}
    assert by_name["0"]["examples"] == 2 and by_name["0"]["correct_change"] == -1
    assert by_name["1"]["examples"] == 2 and by_name["1"]["correct_change"] == 1
    assert by_name["2"]["correct_change"] == 1 and by_name["2"]["relative_change"] == 1.0
    assert by_name["total"]["generalist_correct"] == 3
    assert by_name["total"]["combined_correct"] == 4

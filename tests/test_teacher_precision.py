"""The teacher's inference in lower precision: `teacher_dtype=` and `keras_kd.teacher_precision`."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_two_replicas_train_as_one, blobs, conv_teacher, small_mlp

from keras_kd import Distiller, Hint, TeacherEnsemble, cache, losses
from keras_kd.teacher_precision import computing_in, forward_in, output_layers


def nested_teacher(seed=3):
    """A functional teacher around a nested functional backbone, ending in an op."""
    keras.utils.set_random_seed(seed)
    inner_in = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inner_in)
    backbone = keras.Model(inner_in, keras.layers.Dense(5, name="head")(hidden), name="backbone")
    inputs = keras.Input((8,))
    outputs = keras.ops.take(backbone(keras.layers.Dense(8, name="stem")(inputs)), [0, 2, 4], axis=-1)
    return keras.Model(inputs, outputs, name="teacher")


def policies(model):
    return {layer.name: layer.dtype_policy.name for layer in model._flatten_layers()}


def test_output_layers_follow_nested_models_and_operations():
    assert [layer.name for layer in output_layers(nested_teacher())] == ["head"]
    sequential = small_mlp(4, 0)
    assert output_layers(sequential) == [sequential.layers[-1]]

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(np.zeros((1, 8), "float32"))
    assert output_layers(model) == []


def test_inside_the_block_hidden_layers_compute_lower_and_everything_is_restored():
    teacher = nested_teacher()
    before = policies(teacher)
    with computing_in(teacher, "bfloat16"):
        inside = policies(teacher)
    assert policies(teacher) == before == {name: "float32" for name in before}
    assert inside["hidden"] == inside["stem"] == "mixed_bfloat16"
    assert inside["head"] == "float32"  # produces the output: kept
    with pytest.raises(RuntimeError), computing_in(teacher, "float16"):
        raise RuntimeError("a failing pass")
    assert policies(teacher) == before


def test_a_teacher_built_under_a_mixed_policy_runs_as_built():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    half = keras.layers.Dense(4, dtype="mixed_float16", name="half")(inputs)
    hidden = keras.layers.Dense(4, name="chosen_float32")(half)
    teacher = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden))
    before = policies(teacher)
    with pytest.warns(UserWarning, match="built under a mixed policy; it runs as built"):
        with computing_in(teacher, "bfloat16"):
            assert policies(teacher) == before


def test_output_layers_walk_past_layers_without_weights_and_keep_sublayers():
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([
        keras.Input((5, 8)),
        keras.layers.Dense(16, name="hidden"),
        keras.layers.TimeDistributed(keras.layers.Dense(3, name="inner"), name="frames"),
        keras.layers.Activation("softmax", name="probabilities"),
    ])
    with computing_in(teacher, "bfloat16"):
        inside = policies(teacher)
    assert inside["hidden"] == "mixed_bfloat16"
    assert inside["frames"] == inside["inner"] == inside["probabilities"] == "float32"


def test_models_and_preprocessing_layers_keep_float32():
    """A raw feature such as a year would be rounded in bfloat16 (2026 -> 2024)."""
    normalization = keras.layers.Normalization(name="norm")
    normalization.adapt(np.array([[2000.0], [2030.0]], "float32"))
    teacher = keras.Sequential([
        keras.Input((1,)), normalization, keras.layers.Dense(4, name="hidden"),
        keras.layers.Dense(2, name="out"),
    ])
    with computing_in(teacher, "bfloat16"):
        inside = policies(teacher)
    assert inside["norm"] == inside[teacher.name] == "float32"
    assert inside["hidden"] == "mixed_bfloat16"


def test_an_unbuilt_or_subclassed_teacher():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden, self.out = keras.layers.Dense(4), keras.layers.Dense(3)

        def call(self, x):
            return self.out(self.hidden(x))

    teacher = Subclassed()
    with pytest.raises(ValueError, match=r"needs a built teacher.*teacher\(x\[:1\]\)"):
        with computing_in(teacher, "bfloat16"):
            pass
    x = np.ones((2, 8), "float32")
    teacher(x)
    with pytest.warns(UserWarning, match="output layers cannot be found"):
        outputs = forward_in(teacher, teacher, "bfloat16")(x)
    assert bfloat16_exact(outputs)  # its last layer computed in bfloat16 too


def bfloat16_exact(values) -> bool:
    values = tf.convert_to_tensor(values)
    return bool(tf.reduce_all(tf.cast(tf.cast(values, tf.bfloat16), tf.float32) == values))


def test_the_pass_computes_in_bfloat16_on_float32_weights_and_returns_float32():
    teacher = nested_teacher()
    x = blobs(64, np.random.default_rng(0))[0]
    exact = teacher(x).numpy()
    fast = tf.function(forward_in(lambda b: teacher(b, training=False), teacher, "bfloat16"))
    low = fast(x)
    assert low.dtype == tf.float32
    # The head ran in float32: its outputs carry more than bfloat16's 8 bits.
    assert not bfloat16_exact(low)
    error = np.abs(low.numpy() - exact).max()
    # bfloat16 keeps 8 significant bits: rounded, not equal, and close.
    assert 0 < error < 0.05 * np.abs(exact).max()
    np.testing.assert_array_equal(teacher(x).numpy(), exact)  # the teacher is as before


def distiller(teacher, student, teacher_dtype=None, **kwargs):
    model = Distiller(student=student, teacher=teacher, temperature=3.0, soft_weight=0.7,
                      teacher_dtype=teacher_dtype, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
    return model


def test_evaluate_logs_the_soft_loss_of_the_bfloat16_teacher():
    """One batch by hand: the logged soft loss is T^2 KL from the rounded teacher."""
    teacher, student = nested_teacher(), small_mlp(8, 2)
    x, y = blobs(32, np.random.default_rng(1))
    logs = {}
    for dtype in (None, "bfloat16"):
        logs[dtype] = distiller(teacher, student, dtype).evaluate(
            x, y, batch_size=32, verbose=0, return_dict=True
        )
    rounded = forward_in(lambda b: teacher(b, training=False), teacher, "bfloat16")(x)
    by_hand = float(tf.reduce_mean(losses.tempered_kl(rounded, student(x), 3.0)))
    np.testing.assert_allclose(logs["bfloat16"]["soft_loss"], by_hand, rtol=1e-5)
    assert logs["bfloat16"]["soft_loss"] != logs[None]["soft_loss"]
    np.testing.assert_allclose(logs["bfloat16"]["soft_loss"], logs[None]["soft_loss"], rtol=0.05)
    assert logs["bfloat16"]["hard_loss"] == pytest.approx(logs[None]["hard_loss"], rel=1e-6)


def test_fit_trains_the_student_in_its_own_precision_and_restores_the_teacher():
    teacher = conv_teacher()
    x, y = blobs(64, np.random.default_rng(0))
    results = {}
    for dtype in (None, "bfloat16"):
        student = small_mlp(8, 2)
        history = distiller(teacher, student, dtype).fit(
            x, y, batch_size=16, epochs=2, shuffle=False, verbose=0
        )
        results[dtype] = student.get_weights(), history.history["loss"]
        assert {w.dtype for w in student.weights} == {"float32"}
        assert set(policies(teacher).values()) == {"float32"}
    (exact, exact_loss), (rounded, rounded_loss) = results[None], results["bfloat16"]
    assert any(not np.array_equal(a, b) for a, b in zip(exact, rounded, strict=True))
    for a, b in zip(exact, rounded, strict=True):
        np.testing.assert_allclose(a, b, atol=0.02)
    np.testing.assert_allclose(exact_loss, rounded_loss, rtol=0.02)


def test_two_replicas_train_as_one_with_a_bfloat16_teacher():
    x, y = blobs(64, np.random.default_rng(3))
    assert_two_replicas_train_as_one(
        lambda: (conv_teacher(), small_mlp(8, 2)),
        lambda teacher, student: distiller(teacher, student, "bfloat16"),
        (x, y),
        log_keys=["loss", "soft_loss", "hard_loss"],
        epochs=2,
    )


def test_under_two_replicas_the_logged_soft_loss_is_the_bfloat16_teachers():
    from conftest import two_replicas

    teacher, student = conv_teacher(), small_mlp(8, 2)
    x, y = blobs(32, np.random.default_rng(5))
    with two_replicas().scope():
        model = distiller(teacher, student, "bfloat16")
    logs = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    rounded = forward_in(lambda b: teacher(b, training=False), teacher, "bfloat16")(x)
    by_hand = float(tf.reduce_mean(losses.tempered_kl(rounded, student(x), 3.0)))
    exact = float(tf.reduce_mean(losses.tempered_kl(teacher(x), student(x), 3.0)))
    assert by_hand != exact
    np.testing.assert_allclose(logs["soft_loss"], by_hand, rtol=1e-5)


def test_hints_and_ensembles_run_at_the_lower_precision():
    x, y = blobs(32, np.random.default_rng(2))
    teacher, student = nested_teacher(), small_mlp(8, 2)
    hint = Hint(student.layers[0].name, "stem")
    hint_losses = {}
    for dtype in (None, "bfloat16"):
        hinted = distiller(teacher, student, dtype, hints=[hint])
        hint_losses[dtype] = hinted.evaluate(x, y, verbose=0, return_dict=True)[hint.log_name]
    assert hint_losses["bfloat16"] != hint_losses[None]
    np.testing.assert_allclose(hint_losses["bfloat16"], hint_losses[None], rtol=0.05)
    assert set(policies(teacher).values()) == {"float32"}
    ensemble = TeacherEnsemble([conv_teacher(1), conv_teacher(2)])
    assert {layer.name for layer in output_layers(ensemble)} == {
        m.layers[-1].name for m in ensemble.members
    }
    soft = {}
    for dtype in (None, "bfloat16"):
        soft[dtype] = distiller(ensemble, small_mlp(8, 2), dtype).evaluate(
            x, y, verbose=0, return_dict=True
        )["soft_loss"]
    assert soft["bfloat16"] != soft[None]
    np.testing.assert_allclose(soft["bfloat16"], soft[None], rtol=0.05)
    for member in ensemble.members:
        assert set(policies(member).values()) == {"float32"}


def test_a_cache_built_in_bfloat16_is_close_and_is_not_taken_for_a_float32_one(tmp_path):
    teacher = nested_teacher()
    x = blobs(40, np.random.default_rng(4))[0]
    exact = cache.build_teacher_cache(teacher, x, tmp_path / "a", storage_dtype="float32", verbose=False)
    rounded = cache.build_teacher_cache(
        teacher, x, tmp_path / "b", storage_dtype="float32", teacher_dtype="bfloat16", verbose=False
    )
    error = np.abs(rounded.logits() - exact.logits()).max()
    assert 0 < error < 0.05 * np.abs(exact.logits()).max()
    assert rounded.manifest["content"]["teacher_dtype"] == "bfloat16"
    assert "teacher_dtype" not in exact.manifest["content"]  # the layout of earlier versions
    again = cache.build_teacher_cache(teacher, x, tmp_path / "b", storage_dtype="float32", verbose=False)
    np.testing.assert_array_equal(again.logits(), exact.logits())  # rebuilt in float32


@pytest.mark.parametrize(
    ("value", "fix"),
    [("mixed_bfloat16", "Pass 'bfloat16'"), ("float32", "Pass None"), (16, "got 16")],
)
def test_bad_values_are_named_with_their_fix(value, fix):
    with pytest.raises(ValueError, match=f"`teacher_dtype` must be None.*{fix}"):
        Distiller(student=small_mlp(4, 0), teacher=conv_teacher(), teacher_dtype=value)
    with pytest.raises(ValueError, match=fix):
        cache.build_teacher_cache(conv_teacher(), np.zeros((4, 8), "float32"), "unused",
                                  teacher_dtype=value)


def test_a_teacherless_distiller_refuses_a_teacher_dtype():
    with pytest.raises(ValueError, match="has no teacher.*build_teacher_cache"):
        Distiller(student=small_mlp(4, 0), teacher=None, teacher_dtype="bfloat16")


def test_the_setting_is_saved_with_the_distiller(tmp_path):
    model = distiller(conv_teacher(), small_mlp(8, 2), "float16")
    model.fit(*blobs(16, np.random.default_rng(0)), epochs=1, verbose=0)
    model.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras")
    assert loaded.teacher_dtype == "float16"
    assert model.get_config()["teacher_dtype"] == "float16"
    with pytest.raises(AttributeError):  # the steps were traced with it
        model.teacher_dtype = None


def test_a_normalization_after_the_logits_keeps_the_logits_layer_float32():
    teacher = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(8, name="hidden"),
        keras.layers.Dense(3, name="logits"), keras.layers.BatchNormalization(name="bn"),
    ])
    with computing_in(teacher, "bfloat16"):
        inside = policies(teacher)
    assert inside["logits"] == inside["bn"] == "float32"
    assert inside["hidden"] == "mixed_bfloat16"


def test_a_subclass_of_a_preprocessing_layer_keeps_float32():
    class Years(keras.layers.Normalization):
        pass

    years = Years(name="years")
    years.adapt(np.array([[2000.0], [2030.0]], "float32"))
    teacher = keras.Sequential([
        keras.Input((1,)), years, keras.layers.Dense(4, name="hidden"),
        keras.layers.Dense(2, name="out"),
    ])
    with computing_in(teacher, "bfloat16"):
        assert policies(teacher)["years"] == "float32"


def test_a_nested_pass_of_the_same_teacher_is_quiet_and_one_precision_at_a_time():
    teacher = small_mlp(4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the outer pass is not mistaken for a mixed build
        with computing_in(teacher, "bfloat16"):
            with computing_in(teacher, "bfloat16"):
                inner = policies(teacher)
            assert policies(teacher) == inner
    assert set(policies(teacher).values()) == {"float32"}
    with computing_in(teacher, "bfloat16"):
        with pytest.raises(ValueError, match="one precision at a time"):
            with computing_in(teacher, "float16"):
                pass
    assert set(policies(teacher).values()) == {"float32"}

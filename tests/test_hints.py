"""Hints (FitNets): extractors, adapters, the hint loss, its gradients and errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_two_replicas_train_as_one

import keras_kd
from keras_kd import Distiller
from keras_kd.batch import make_batch
from keras_kd.hints import Hint, HintPlan, build_adapter, feature_extractor

FEATURES, CLASSES = 6, 3


def _mlp(hidden, seed, name, hint_width=None):
    """features -> Dense(hidden, name='h') -> [Dense(hint_width, name='top')] -> logits."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((FEATURES,)), keras.layers.Dense(hidden, activation="tanh", name="h")]
    if hint_width:
        layers.append(keras.layers.Dense(hint_width, activation="tanh", name="top"))
    layers.append(keras.layers.Dense(CLASSES, name="logits"))
    return keras.Sequential(layers, name=name)


def _functional_mlp(hidden, seed, name):
    keras.utils.set_random_seed(seed)
    x = keras.Input((FEATURES,))
    h = keras.layers.Dense(hidden, activation="tanh", name="h")(x)
    return keras.Model(x, keras.layers.Dense(CLASSES, name="logits")(h), name=name)


def _convnet(channels, seed, name, size=8):
    """A functional CNN whose convolution 'c2' is nested in a sub-model, as in keras.applications."""
    keras.utils.set_random_seed(seed)
    inner_in = keras.Input((size, size, channels))
    inner = keras.Model(
        inner_in, keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="c2")(inner_in),
        name=f"{name}_backbone",
    )
    x = keras.Input((size, size, 3))
    h = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="c1")(x)
    h = inner(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, keras.layers.Dense(CLASSES, name="logits")(h), name=name)


def _data(n=16, seed=0, shape=(FEATURES,)):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype("float32")
    return x, rng.integers(0, CLASSES, size=n).astype("int32")


def _distiller(teacher, student, hints, lr=0.1, **kwargs):
    distiller = Distiller(student=student, teacher=teacher, temperature=2.0,
                          soft_weight=0.6, hints=hints, **kwargs)  # fmt: skip
    distiller.compile(optimizer=keras.optimizers.SGD(lr))
    return distiller


def _np(tensor):
    return keras.ops.convert_to_numpy(tensor).astype("float64")


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(4, name="h")
        self.out = keras.layers.Dense(CLASSES)

    def call(self, x):
        return self.out(self.hidden(x))


def test_hint_arguments_and_config_round_trip():
    hint = Hint(student_layer="h", teacher_layer="t", adapter="dense", weight=0.5,
                loss="mae", name="mid")  # fmt: skip
    assert hint.log_name == "hint_mid_loss"
    assert Hint.from_config(hint.get_config()).get_config() == hint.get_config()
    layer = keras.layers.Dense(5)
    clone = Hint.from_config(Hint("a", "b", adapter=layer).get_config())
    assert isinstance(clone.adapter, keras.layers.Dense) and clone.adapter.units == 5


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"student_layer": "h", "teacher_layer_name": "t"}, TypeError, "pass teacher_layer='t'"),
        ({"student_layer_name": "h", "teacher_layer": "t"}, TypeError, "pass student_layer='h'"),
        ({"student_layer": 3, "teacher_layer": "t"}, TypeError, "name of a layer"),
        ({"student_layer": "h", "teacher_layer": "t", "adapter": "1x1"}, ValueError, "adapter"),
        ({"student_layer": "h", "teacher_layer": "t", "adapter": 3}, TypeError, "adapter"),
        ({"student_layer": "h", "teacher_layer": "t", "weight": -1}, ValueError, ">= 0"),
        ({"student_layer": "h", "teacher_layer": "t", "weight": float("nan")}, ValueError, ">= 0"),
        ({"student_layer": "h", "teacher_layer": "t", "loss": "cosine_similarity"}, ValueError, "mse"),
    ],
)
def test_bad_hint_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Hint(**kwargs)


def test_extractor_shares_layers_and_reaches_into_nested_models():
    model = _convnet(4, 0, "net")
    extractor = feature_extractor(model, ["c2", "c1"])
    x, _ = _data(3, shape=(8, 8, 3))
    logits, c2, c1 = extractor(x)
    np.testing.assert_allclose(_np(logits), _np(model(x)), atol=1e-6)
    backbone = model.get_layer("net_backbone")
    np.testing.assert_allclose(_np(c2), _np(backbone(c1)), atol=1e-6)
    assert {id(v) for v in extractor.weights} == {id(v) for v in model.weights}


def test_unknown_layer_lists_close_names():
    teacher, student = _mlp(8, 0, "teacher"), _mlp(4, 1, "student")
    with pytest.raises(ValueError, match=r"no layer named 'hh'.*Closest names: \['h'\]"):
        Distiller(student=student, teacher=teacher, hints=[Hint("hh", "h")])
    with pytest.raises(ValueError, match="teacher 'teacher' has no layer named 'c2'"):
        Distiller(student=student, teacher=teacher, hints=[Hint("h", "c2")])


def test_adapters_by_shape():
    dense = build_adapter(Hint("s", "t"), (None, 4), (None, 9))
    assert isinstance(dense, keras.layers.Dense) and dense.units == 9
    sequence = build_adapter(Hint("s", "t"), (None, 5, 4), (None, 5, 9))
    assert isinstance(sequence, keras.layers.Dense)
    conv = build_adapter(Hint("s", "t"), (None, 7, 7, 16), (None, 7, 7, 64))
    assert isinstance(conv, keras.layers.Conv2D) and conv.kernel_size == (1, 1)
    assert conv.filters == 64
    assert build_adapter(Hint("s", "t"), (None, 4), (None, 4)) is None
    forced = build_adapter(Hint("s", "t", adapter="dense"), (None, 4), (None, 4))
    assert isinstance(forced, keras.layers.Dense)


@pytest.mark.parametrize(
    "hint, student_shape, teacher_shape, match",
    [
        (Hint("s", "t", adapter=None), (None, 4), (None, 9), "adapter=None"),
        (Hint("s", "t"), (None, 7, 7, 16), (None, 64), "different ranks"),
        (Hint("s", "t"), (None, 14, 14, 16), (None, 7, 7, 64), "spatial sizes.*AveragePooling2D"),
        (Hint("s", "t", adapter="conv"), (None, 4), (None, 9), "needs \\(batch, h, w"),
        (Hint("s", "t", adapter="dense"), (None, 7, 7, 4), (None, 7, 7, 9), "adapter='conv'"),
        (Hint("s", "t"), (None, 5, 4), (None, 6, 4), "time lengths"),
    ],
)
def test_incompatible_feature_shapes(hint, student_shape, teacher_shape, match):
    with pytest.raises(ValueError, match=match):
        build_adapter(hint, student_shape, teacher_shape)


def test_spatial_mismatch_names_student_layers_of_the_teachers_size():
    student = _convnet(4, 0, "student", size=8)  # its maps c1 and c2 (nested) are 8x8
    with pytest.raises(ValueError, match=r"spatial sizes \(4, 4\) and \(8, 8\).*\(c1, c2\)"):
        build_adapter(Hint("s", "t"), (None, 4, 4, 4), (None, 8, 8, 4), student=student)


def test_custom_adapter_may_resize():
    adapter = keras.Sequential([keras.layers.AveragePooling2D(2), keras.layers.Conv2D(6, 1)])
    built = build_adapter(Hint("s", "t", adapter=adapter), (None, 8, 8, 4), (None, 4, 4, 6))
    assert built is adapter and built.built
    with pytest.raises(ValueError, match="not the teacher's shape"):
        build_adapter(Hint("s", "t", adapter=keras.layers.Conv2D(6, 1)), (None, 8, 8, 4), (None, 4, 4, 6))


def test_subclassed_models_are_refused_with_the_fix():
    model = _Subclassed()
    model(np.zeros((1, FEATURES), "float32"))
    teacher = _mlp(8, 0, "teacher")
    with pytest.raises(ValueError, match="student is a subclassed model.*Build it functionally"):
        Distiller(student=model, teacher=teacher, hints=[Hint("h", "h")])
    with pytest.raises(ValueError, match="teacher is a subclassed model"):
        Distiller(student=_mlp(4, 1, "student"), teacher=model, hints=[Hint("h", "h")])


def test_the_suggested_functional_wrapper_trains_a_subclassed_models_layers():
    model = _Subclassed()
    inputs = keras.Input((FEATURES,))
    wrapper = keras.Model(inputs, model.out(model.hidden(inputs)))
    before = [w.copy() for w in model.get_weights()]
    x, y = _data(16)
    distiller = _distiller(_mlp(8, 0, "teacher"), wrapper, [Hint("h", "h")])
    distiller.fit(x, y, batch_size=8, verbose=0)
    assert all(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))


def test_unbuilt_sequential_is_refused_with_the_fix():
    student = keras.Sequential([keras.layers.Dense(4, name="h"), keras.layers.Dense(CLASSES)])
    with pytest.raises(ValueError, match="keras.Input"):
        feature_extractor(student, ["h"], "student")


def test_hints_need_a_teacher_not_a_cache():
    student = _mlp(4, 1, "student")
    with pytest.raises(ValueError, match="teacher.*None.*cached teacher outputs hold logits only"):
        Distiller(student=student, teacher=None, hints=[Hint("h", "h")])
    teacher = _mlp(8, 0, "teacher")
    distiller = _distiller(teacher, student, [Hint("h", "h")])
    x, y = _data()
    cached = make_batch(x, _np(teacher(x)).astype("float32"))
    with pytest.raises(ValueError, match="cached 'teacher_logits'.*hints"):
        distiller.fit(cached, y, batch_size=8, verbose=0)


def test_ensemble_teacher_and_bad_hints_list_are_refused():
    student = _mlp(4, 1, "student")
    ensemble = keras_kd.TeacherEnsemble([_mlp(8, 0, "a"), _mlp(8, 2, "b")])
    with pytest.raises(ValueError, match="ensemble"):
        Distiller(student=student, teacher=ensemble, hints=[Hint("h", "h")])
    with pytest.raises(TypeError, match="keras_kd.Hint"):
        Distiller(student=student, teacher=_mlp(8, 0, "t"), hints=["h"])
    with pytest.raises(ValueError, match="distinct names"):
        Distiller(student=student, teacher=_mlp(8, 0, "t"), hints=[Hint("h", "h"), Hint("h", "logits")])


def test_logged_hint_loss_is_the_mse_of_the_adapted_feature():
    teacher, student = _mlp(8, 0, "teacher"), _mlp(5, 1, "student")
    x, y = _data(16)
    distiller = _distiller(teacher, student, [Hint("h", "h", weight=0.3)])
    adapter = distiller.hint_adapters[0]
    kernel, bias = (_np(w) for w in adapter.weights)
    s = _np(student.get_layer("h")(x))  # the first layer's output is the feature
    t = _np(teacher.get_layer("h")(x))
    expected_hint = np.mean((s @ kernel + bias - t) ** 2)
    logs = distiller.train_on_batch(x, y, return_dict=True)  # computed before the update
    assert logs["hint_h_loss"] == pytest.approx(expected_hint, rel=1e-5)
    expected_total = 0.6 * logs["soft_loss"] + 0.4 * logs["hard_loss"] + 0.3 * expected_hint
    assert logs["loss"] == pytest.approx(expected_total, rel=1e-5)


def test_hint_loss_equals_keras_feature_distillation_without_adapter():
    from keras.distillation import FeatureDistillation

    teacher, student = _mlp(5, 0, "teacher"), _mlp(5, 1, "student")
    x, y = _data(16)
    distiller = _distiller(teacher, student, [Hint("h", "h")])
    assert distiller.hint_adapters == [None]
    reference = FeatureDistillation(loss="mse").compute_loss(
        teacher.get_layer("h")(x), student.get_layer("h")(x)
    )
    logs = distiller.train_on_batch(x, y, return_dict=True)
    assert logs["hint_h_loss"] == pytest.approx(float(reference), rel=1e-5)


def test_gradients_reach_the_layers_below_the_hint_and_the_adapter_only():
    teacher, student = _mlp(8, 0, "teacher"), _mlp(5, 1, "student", hint_width=4)
    plan = HintPlan((Hint("h", "h"),), student, teacher)
    x, _ = _data(8)
    with tf.GradientTape(persistent=True) as tape:
        _, student_features = plan.student_outputs(x, training=True)
        _, teacher_features = plan.split_teacher(plan.teacher_forward(x))
        loss = tf.reduce_mean(plan.loss_values(teacher_features, student_features)[0])
    layers = {
        "student_h": student.get_layer("h").trainable_variables,
        "student_top": student.get_layer("top").trainable_variables,
        "student_logits": student.get_layer("logits").trainable_variables,
        "adapter": plan.trainable_variables,
        "teacher": teacher.weights,
    }
    grads = {name: tape.gradient(loss, variables) for name, variables in layers.items()}
    reached = {
        name: any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in gs)
        for name, gs in grads.items()
    }
    assert reached == {"student_h": True, "student_top": False, "student_logits": False,
                       "adapter": True, "teacher": False}  # fmt: skip


def test_fit_trains_student_and_adapter_and_freezes_teacher():
    teacher, student = _functional_mlp(8, 0, "teacher"), _functional_mlp(5, 1, "student")
    x, y = _data(32)
    distiller = _distiller(teacher, student, [Hint("h", "h")])
    before = {
        "teacher": [w.copy() for w in teacher.get_weights()],
        "adapter": [_np(w) for w in distiller.hint_adapters[0].weights],
        "student": [w.copy() for w in student.get_weights()],
    }
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x, y))
    assert {"hint_h_loss", "val_hint_h_loss"} <= set(history.history)
    for a, b in zip(before["teacher"], teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, _np(b)) for a, b in zip(before["adapter"], distiller.hint_adapters[0].weights))
    assert any(not np.allclose(a, b) for a, b in zip(before["student"], student.get_weights()))


def test_student_is_unchanged_by_hints_and_exports(tmp_path):
    teacher, student = _convnet(6, 0, "teacher"), _convnet(3, 1, "student")
    plain = _convnet(3, 1, "plain")  # the same student, never given hints
    x, y = _data(8, shape=(8, 8, 3))
    distiller = _distiller(teacher, student, [Hint("c2", "c2"), Hint("c1", "c1", weight=0.5)])
    distiller.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert distiller.student is student
    assert len(student.weights) == len(plain.weights)
    assert sum(int(np.prod(w.shape)) for w in student.weights) == plain.count_params()
    assert all(isinstance(a, keras.layers.Conv2D) for a in distiller.hint_adapters)  # 3 -> 6
    plain.set_weights(student.get_weights())
    np.testing.assert_allclose(_np(student(x)), _np(plain(x)), atol=1e-6)
    reports = keras_kd.export.export_student(
        student, tmp_path / "export", x_test=x, y_test=y, formats=["tflite_float32"]
    )
    assert reports["tflite_float32"]["top1_agreement"] == 1.0


def test_config_round_trip_keeps_the_hints(tmp_path):
    teacher, student = _mlp(8, 0, "teacher"), _mlp(5, 1, "student")
    x, y = _data(16)
    hints = [Hint("h", "h", weight=0.25, name="mid"), Hint("logits", "logits", name="out")]
    distiller = _distiller(teacher, student, hints)
    assert distiller.hint_adapters[1] is None  # equal shapes: no adapter
    distiller.fit(x, y, batch_size=8, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert [h.get_config() for h in loaded.hints] == [h.get_config() for h in distiller.hints]
    for a, b in zip(loaded.hint_adapters[0].weights, distiller.hint_adapters[0].weights):
        np.testing.assert_allclose(_np(a), _np(b))
    logs = loaded.evaluate(x, y, verbose=0, return_dict=True)
    expected = distiller.evaluate(x, y, verbose=0, return_dict=True)
    for key in ("hint_mid_loss", "hint_out_loss", "loss"):
        assert logs[key] == pytest.approx(expected[key], rel=1e-5)


def test_sequence_hints_are_per_token_and_ignore_padding():
    vocab, width = 9, 6

    def tagger(seed, units, name):
        keras.utils.set_random_seed(seed)
        tokens = keras.Input((None,), dtype="int32")
        h = keras.layers.Embedding(vocab, units, mask_zero=True)(tokens)
        h = keras.layers.Dense(units, activation="tanh", name="h")(h)
        return keras.Model(tokens, keras.layers.Dense(vocab)(h), name=name)

    teacher, student = tagger(0, width, "teacher"), tagger(1, 4, "student")
    rng = np.random.default_rng(0)
    x = rng.integers(1, vocab, size=(6, 5)).astype("int32")
    x[:3, 3:] = 0
    y = rng.integers(0, vocab, size=x.shape).astype("int32")
    distiller = _distiller(teacher, student, [Hint("h", "h")])
    logs = distiller.evaluate(x, y, verbose=0, return_dict=True)
    padded = distiller.evaluate(np.pad(x, [(0, 0), (0, 4)]), np.pad(y, [(0, 0), (0, 4)]),
                                verbose=0, return_dict=True)  # fmt: skip
    assert logs["hint_h_loss"] == pytest.approx(padded["hint_h_loss"], rel=1e-5)
    adapter = distiller.hint_adapters[0]
    kernel, bias = (_np(w) for w in adapter.weights)
    s = _np(keras.Model(student.input, student.get_layer("h").output)(x))
    t = _np(keras.Model(teacher.input, teacher.get_layer("h").output)(x))
    per_token = np.mean((s @ kernel + bias - t) ** 2, axis=-1)
    assert logs["hint_h_loss"] == pytest.approx(per_token[x != 0].mean(), rel=1e-5)


def test_two_replicas_give_the_single_device_update():
    x, y = _data(64, seed=3)
    w = np.linspace(0.5, 1.5, 64).astype("float32")

    def distiller(teacher, student):
        keras.utils.set_random_seed(7)  # the adapter starts from the same weights
        model = Distiller(student=student, teacher=teacher, temperature=3.0, soft_weight=0.6,
                          hints=[Hint("h", "h", weight=0.5)])  # fmt: skip
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        return model

    assert_two_replicas_train_as_one(
        lambda: (_mlp(16, 1, "teacher"), _mlp(8, 2, "student")), distiller, (x, y, w),
        log_keys=("loss", "soft_loss", "hard_loss", "hint_h_loss"), epochs=2,
    )


def test_feature_losses_given_as_distillation_losses_point_to_hints():
    from keras.distillation import FeatureDistillation

    teacher, student = _mlp(8, 0, "teacher"), _mlp(5, 1, "student")
    feature = FeatureDistillation(teacher_layer_name="h", student_layer_name="h")
    for loss in (Hint("h", "h"), feature):
        with pytest.raises(TypeError, match=r"hints=\[keras_kd.Hint"):
            Distiller(student=student, teacher=teacher, distillation_loss=loss)
    with pytest.raises(ValueError, match=r"hints=\[keras_kd.Hint\(student_layer=s"):
        Distiller(student=student, teacher=teacher, distillation_losses=[feature])


def test_mixed_precision_and_xla_steps_train_with_hints():
    x, y = _data(16)
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        teacher, student = _functional_mlp(8, 0, "teacher"), _functional_mlp(5, 1, "student")
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    distiller = Distiller(student=student, teacher=teacher, hints=[Hint("h", "h")])
    distiller.compile(optimizer="sgd", jit_compile=True)
    assert distiller.hint_adapters[0].compute_dtype == "float32"
    logs = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(logs["hint_h_loss"][0]) and logs["hint_h_loss"][0] > 0


@keras.saving.register_keras_serializable(package="keras_kd_tests")
class _ChannelCosine(keras_kd.losses.DistillationLoss):
    """One minus the cosine of the channel vectors, per position."""

    def call(self, teacher_feature, student_feature):
        t = keras.ops.normalize(teacher_feature, axis=-1)
        s = keras.ops.normalize(student_feature, axis=-1)
        return 1.0 - keras.ops.sum(t * s, axis=-1)


def test_a_distillation_loss_on_feature_maps_is_averaged_over_positions(tmp_path):
    teacher, student = _convnet(6, 0, "teacher"), _convnet(4, 1, "student")
    x, y = _data(8, shape=(8, 8, 3))
    hint = Hint("c2", "c2", weight=0.7, loss=_ChannelCosine(), name="cos")
    distiller = _distiller(teacher, student, [hint])
    kernel, bias = (_np(w) for w in distiller.hint_adapters[0].weights)  # 1x1 conv 4 -> 6

    def feature(model):
        return _np(model.get_layer(f"{model.name}_backbone")(model.get_layer("c1")(x)))

    s = feature(student) @ kernel.reshape(4, 6) + bias
    t = feature(teacher)
    def unit(v):  # keras.ops.normalize: v / max(|v|, 1e-7); ReLU maps may be all zero
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-7)

    cosine = np.sum(unit(s) * unit(t), -1)
    expected = np.mean(1.0 - cosine)  # over positions, then over the batch
    logs = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["hint_cos_loss"] == pytest.approx(expected, rel=1e-4)
    assert logs["loss"] == pytest.approx(
        0.6 * logs["soft_loss"] + 0.4 * logs["hard_loss"] + 0.7 * expected, rel=1e-4
    )
    distiller.save(tmp_path / "distiller.keras")
    loaded = keras.models.load_model(tmp_path / "distiller.keras")
    assert isinstance(loaded.hints[0].loss, _ChannelCosine)
    again = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert again["hint_cos_loss"] == pytest.approx(logs["hint_cos_loss"], rel=1e-5)


def test_a_feature_loss_that_reduces_more_than_the_last_axis_is_a_clear_error():
    class Scalar(keras_kd.losses.DistillationLoss):
        def call(self, teacher_feature, student_feature):
            return keras.ops.mean(keras.ops.square(teacher_feature - student_feature))

    with pytest.raises(ValueError, match="Reduce the class axis only"):
        Hint("h", "h", loss=Scalar()).loss_values(np.ones((2, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="or a keras_kd.losses.DistillationLoss"):
        Hint("h", "h", loss="cosine_similarity")
    with pytest.raises(ValueError, match="no axis beyond the batch"):
        Hint("h", "h", loss=_ChannelCosine()).loss_values(np.ones((2,)), np.zeros((2,)))
    assert "loss=_ChannelCosine(name='_channel_cosine')" in repr(Hint("h", "h", loss=_ChannelCosine()))


def test_unequal_features_without_an_adapter_are_refused_by_the_distiller():
    with pytest.raises(ValueError, match="adapter=None"):
        _distiller(_mlp(8, 0, "teacher"), _mlp(5, 1, "student"), [Hint("h", "h", adapter=None)])

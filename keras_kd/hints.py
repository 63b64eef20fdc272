"""Hints: intermediate-feature distillation (FitNets, Romero et al. 2015).

A `Hint` names a student layer and a teacher layer; the `Distiller` then also
trains the student's output of that layer to match the teacher's, through a
learned adapter when their shapes differ. This module holds everything about
hints except the train step itself:

- `Hint`: what to match, with which loss and weight (configuration only);
- `feature_extractor`: a model that shares a functional or Sequential model's
  layers and outputs its usual output plus named layers' outputs, in one pass;
- `build_adapter`: the learned map from the student's feature onto the
  teacher's shape (`Dense` on the last axis, or a 1x1 `Conv2D`);
- `HintPlan`: the extractors and adapters of one `Distiller`, and the
  per-example hint losses of a batch.

Decisions, documented here once:

- **Adapters live in the Distiller, never in the student.** They are trained
  with the student (their variables are the Distiller's, in its optimizer)
  and `distiller.student` is the model the user built, unchanged: exporting it
  drops them.
- **No implicit resizing.** A 1x1 convolution maps channels only; when the
  spatial sizes differ, the error lists the student layers of the teacher's
  size, and a custom adapter (any Keras layer, e.g. pooling then a 1x1
  convolution) can resize explicitly.
- **Features are not cached.** `keras_kd.cache` stores logits (or their top
  k) per view. A feature map is orders of magnitude larger: at 112 px,
  ResNet50's conv4 stage output (`conv4_block6_out`) is 7 x 7 x 1024 floats,
  196 KiB per view in float32, and its conv3 stage (`conv3_block4_out`, 14 x
  14 x 512) 392 KiB, against 40 bytes for 10 logits; Imagenette's 9,469
  training images in 4 views would need 7.1 GiB and 14.2 GiB. So hints need
  the teacher to run at every step, and a Distiller with hints refuses
  batches that carry cached logits.
"""

from __future__ import annotations

import difflib
import math

import keras
import tensorflow as tf
from keras import ops

from keras_kd import checks
from keras_kd.losses import DistillationLoss

HINT_LOSSES = ("mse", "mae")
ADAPTERS = ("auto", "dense", "conv", None)

# Arguments of keras.distillation.FeatureDistillation, and the Hint argument
# that means the same thing.
_PORTED_ARGUMENTS = {
    "teacher_layer_name": "teacher_layer",
    "student_layer_name": "student_layer",
}


def _validate_layer_name(value, argument: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(
            f"`{argument}` must be the name of a layer (a non-empty string), got "
            f"{value!r}. `model.summary(expand_nested=True)` lists the names."
        )
    return value


@keras.saving.register_keras_serializable(package="keras_kd")
class Hint:
    """A student layer trained to match a teacher layer (a FitNets hint).

    Passed to `Distiller(hints=[...])`. On every batch the teacher's output of
    `teacher_layer` is computed with its logits (in the same inference pass),
    the student's output of `student_layer` with its logits (in the same
    forward pass), and the per-example loss

        weight * mean over the feature's elements of (adapter(s) - t)^2

    (`"mse"`; `"mae"` takes the absolute value; a `DistillationLoss` gives its
    own values, see `loss`) is added to the Distiller's loss and logged as
    `hint_<name>_loss`. The teacher's feature is a
    constant; the gradient reaches the student's layers up to `student_layer`
    and the adapter. For a sequence student (`(batch, time, classes)`
    outputs) the feature must be `(batch, time, ...)` too and the loss is
    per token, masked like the soft and hard terms.

    The adapter maps the student's feature onto the teacher's shape:

    | `adapter` | feature shapes | adapter |
    | --- | --- | --- |
    | `"auto"` (default) | equal | none |
    | `"auto"`, `"dense"` | `(batch, features)`, `(batch, time, features)` | `Dense(teacher features)` on the last axis |
    | `"auto"`, `"conv"` | `(batch, h, w, channels)`, same `h, w` | 1x1 `Conv2D(teacher channels)` |
    | `None` | must be equal | none (an error otherwise) |
    | a `keras.layers.Layer` | its output has the teacher's shape | that layer |

    Feature maps of different spatial sizes are an error that lists the
    student layers of the teacher's size; to resize anyway, give your own
    adapter, e.g. `keras.Sequential([keras.layers.AveragePooling2D(2),
    keras.layers.Conv2D(1024, 1)])`. Adapters are built by the `Distiller`,
    train with the student, are saved with the Distiller and are not part of
    `distiller.student`, so exporting the student drops them.

    Hints work with functional and Sequential models, including layers inside
    nested functional or Sequential sub-models (e.g. a `keras.applications`
    backbone). A subclassed model has no graph to take a layer's output from:
    that is an error naming the fix (build it functionally, or wrap its layers
    in a functional model, which shares their weights). The teacher must be a single model, run
    at every step: features are not in `keras_kd.cache` (at 112 px, one view
    of ResNet50's conv4 stage is 196 KiB against 40 bytes for 10 logits; see
    `keras_kd.hints`).

    Compared with `keras.distillation.FeatureDistillation(loss="mse",
    teacher_layer_name=..., student_layer_name=...)`: the loss `"mse"` is the
    same number (the mean over all feature elements), but keras-kd adds
    adapters (keras.distillation needs equal shapes), per-example weighting
    (sample weights, masks, the single-device update under a `tf.distribute`
    strategy), one student forward pass instead of two, and layers of nested
    sub-models. Its weight is absolute: the total is `soft_weight * soft +
    (1 - soft_weight) * hard + sum(weight * hint)`, whereas keras.distillation
    multiplies a feature loss's weight by `1 - student_loss_weight`; a
    keras.distillation weight `w` is `Hint(weight=(1 - student_loss_weight) *
    w)` here. Its `teacher_layer_name` / `student_layer_name` are
    `teacher_layer` / `student_layer` here (passing the former is an error
    saying so).

    Args:
        student_layer: Name of the student layer whose output is trained.
        teacher_layer: Name of the teacher layer whose output is the target.
        adapter: `"auto"` (default), `"dense"`, `"conv"`, `None`, or a
            `keras.layers.Layer` (see the table).
        weight: Weight of the hint loss in the Distiller's loss (a finite
            number >= 0; 0 logs it without training on it).
        loss: `"mse"` (default, FitNets' squared error), `"mae"`, or a
            `keras_kd.losses.DistillationLoss`: the same interface as the soft
            loss's, called on the teacher's feature and the adapted student
            feature as if the last axis were the classes (it reduces the last
            axis only); its values are then averaged over the remaining
            feature axes, e.g. the positions of a feature map. Register the
            class with `keras.saving.register_keras_serializable` so that a
            saved Distiller reloads with it.
        name: Logged as `hint_<name>_loss` (default: `student_layer`).

    Raises:
        TypeError: for a layer name that is not a string, an adapter of
            another type, or keras.distillation's argument names.
        ValueError: for an unknown adapter or loss, or a weight that is not
            a finite number >= 0.

    Example (a `DistillationLoss` on features: one minus the cosine of the
    channel vectors, per position, then averaged over the positions):

    >>> import numpy as np
    >>> from keras_kd.losses import DistillationLoss
    >>> class ChannelCosine(DistillationLoss):
    ...     def call(self, teacher_feature, student_feature):
    ...         t = keras.ops.normalize(teacher_feature, axis=-1)
    ...         s = keras.ops.normalize(student_feature, axis=-1)
    ...         return 1.0 - keras.ops.sum(t * s, axis=-1)
    >>> cosine = Hint("block_3", "conv4", loss=ChannelCosine())
    >>> maps = np.ones((2, 3, 3, 4))  # (batch, h, w, channels)
    >>> values = cosine.loss_values(maps, -maps)  # opposite directions: 1 - (-1)
    >>> keras.ops.convert_to_numpy(values).round(4).tolist()
    [2.0, 2.0]

    The default, the squared error:

    >>> hint = Hint(student_layer="block_3", teacher_layer="conv4", weight=0.5)
    >>> hint.name, hint.log_name
    ('block_3', 'hint_block_3_loss')
    >>> values = hint.loss_values(np.ones((2, 4)), np.zeros((2, 4)))
    >>> keras.ops.convert_to_numpy(values).tolist()
    [1.0, 1.0]

    Then `keras_kd.Distiller(student=..., teacher=..., hints=[hint])`.
    """

    def __init__(
        self,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        *,
        adapter: str | keras.layers.Layer | None = "auto",
        weight: float = 1.0,
        loss: str | DistillationLoss = "mse",
        name: str | None = None,
        **kwargs,
    ):
        for ported, ours in _PORTED_ARGUMENTS.items():
            if ported in kwargs:
                raise TypeError(
                    f"keras_kd.Hint has no `{ported}` (keras.distillation's name): "
                    f"pass {ours}={kwargs[ported]!r}."
                )
        if kwargs:
            raise TypeError(
                f"Hint got unexpected arguments {sorted(kwargs)}; it takes "
                "student_layer, teacher_layer, adapter, weight, loss and name."
            )
        self.student_layer = _validate_layer_name(student_layer, "student_layer")
        self.teacher_layer = _validate_layer_name(teacher_layer, "teacher_layer")
        if not (adapter in ADAPTERS or isinstance(adapter, keras.layers.Layer)):
            if isinstance(adapter, str):
                raise ValueError(
                    f"`adapter` must be one of {ADAPTERS} or a keras.layers.Layer, "
                    f"got {adapter!r}."
                )
            raise TypeError(
                f"`adapter` must be one of {ADAPTERS} or a keras.layers.Layer, got "
                f"{type(adapter).__name__} {adapter!r}."
            )
        self.adapter = adapter
        try:
            value = float(weight)
        except (TypeError, ValueError):
            value = float("nan")
        if isinstance(weight, bool) or not 0.0 <= value < math.inf:
            raise ValueError(
                f"The weight of hint {name or self.student_layer!r} must be a finite "
                f"number >= 0, got {weight!r}."
            )
        self.weight = value
        if not (isinstance(loss, DistillationLoss) or loss in HINT_LOSSES):
            raise ValueError(
                f"`loss` must be one of {HINT_LOSSES} (the mean over the feature's "
                "elements of the squared or absolute difference) or a "
                "keras_kd.losses.DistillationLoss (which reduces the feature's last "
                f"axis), got {loss!r}."
            )
        self.loss = loss
        name = self.student_layer if name is None else name
        if not isinstance(name, str) or not name:
            raise ValueError(f"A hint's `name` must be a non-empty string, got {name!r}.")
        self.name = name

    @property
    def log_name(self) -> str:
        """The name of the logged loss, `hint_<name>_loss`."""
        return f"hint_{self.name}_loss"

    def loss_values(self, teacher_feature, student_feature, kept_axes: int = 1):
        """The hint loss per example (or per token), before the weight.

        Args:
            teacher_feature: The teacher's feature, the target.
            student_feature: The student's feature after the adapter, the
                teacher's shape.
            kept_axes: Leading axes kept: 1 (`(batch,)` values) or 2 (per
                token, `(batch, time)`).

        Returns:
            Float32 tensor of the first `kept_axes` axes' shape: the mean over
            the remaining axes.
        """
        teacher_feature = ops.cast(teacher_feature, "float32")
        student_feature = ops.cast(student_feature, "float32")
        if isinstance(self.loss, DistillationLoss):
            rank = len(student_feature.shape)
            if rank <= kept_axes:
                raise ValueError(
                    f"Hint {self.name!r}: its loss {type(self.loss).__name__} reduces "
                    f"the feature's last axis, but the feature {tuple(student_feature.shape)} "
                    "has no axis beyond the batch (and time). Hint a layer with "
                    "features, or use loss='mse' or 'mae'."
                )
            elements = self.loss(teacher_feature, student_feature)
        else:
            difference = student_feature - teacher_feature
            squared = self.loss == "mse"
            elements = ops.square(difference) if squared else ops.abs(difference)
        rank = len(elements.shape)
        if rank <= kept_axes:
            return elements
        return ops.mean(elements, axis=tuple(range(kept_axes, rank)))

    def get_config(self) -> dict:
        """The constructor arguments, for saving (an adapter layer as its config)."""
        adapter = self.adapter
        if isinstance(adapter, keras.layers.Layer):
            adapter = keras.saving.serialize_keras_object(adapter)
        loss = self.loss
        if isinstance(loss, DistillationLoss):
            loss = keras.saving.serialize_keras_object(loss)
        return {
            "student_layer": self.student_layer,
            "teacher_layer": self.teacher_layer,
            "adapter": adapter,
            "weight": self.weight,
            "loss": loss,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict) -> Hint:
        """Builds the hint from `get_config()`'s output."""
        config = dict(config)
        for key in ("adapter", "loss"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    def __repr__(self) -> str:
        config = {**self.get_config(), "loss": self.loss, "adapter": self.adapter}
        arguments = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"Hint({arguments})"


def _is_graph_model(model) -> bool:
    """Whether `model` is functional or Sequential (has a graph of layer calls)."""
    if isinstance(model, keras.Sequential):
        return True
    return isinstance(model, keras.Model) and _functional_class(model)


def _functional_class(model) -> bool:
    from keras.src.models.functional import Functional  # no public name for the class

    return isinstance(model, Functional)


def _sub_layers(model):
    """`(path, layer)` for every layer of `model`, nested graph models included."""
    for layer in model.layers:
        yield (layer.name,), layer
        if _is_graph_model(layer):
            for path, inner in _sub_layers(layer):
                yield (layer.name, *path), inner


def _require_graph_model(model, role: str) -> None:
    if not _is_graph_model(model):
        raise ValueError(
            f"Hints need the {role}'s intermediate outputs, but the {role} is a "
            f"subclassed model ({type(model).__name__}), whose layers' outputs "
            "exist only inside its `call`. Build it functionally or as a "
            "keras.Sequential, or wrap its layers in a functional model, which "
            "shares (and trains) their weights, e.g. inputs = keras.Input(shape); "
            "outputs = model.head(model.body(inputs)); "
            "keras.Model(inputs, outputs), and name the layer there."
        )
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"The {role} (keras.Sequential {model.name!r}) has no input shape yet, "
            "so its layers' outputs do not exist. Start it with keras.Input(shape) "
            f"or call {role}.build((None, *input_shape)) before creating the "
            "Distiller."
        )


def find_layer(model, name: str, role: str = "model") -> tuple[str, ...]:
    """The path (sub-model names, then the layer's) of the one layer called `name`.

    Searches nested functional and Sequential sub-models too.

    Args:
        model: A functional or Sequential model.
        name: The layer's name.
        role: `"student"` or `"teacher"`, for messages.

    Returns:
        The path, e.g. `("mobilenetv2_1.00_224", "block_3_add")`.

    Raises:
        ValueError: when no layer (or more than one) has that name; the
            message lists the closest names.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="a")])
    >>> find_layer(model, "a")
    ('a',)
    """
    layers = list(_sub_layers(model))
    paths = [path for path, _ in layers if path[-1] == name]
    if len(paths) == 1:
        return paths[0]
    if paths:
        shown = ", ".join("/".join(path) for path in paths)
        raise ValueError(
            f"The {role} has {len(paths)} layers named {name!r} ({shown}); a hint "
            "needs one. Give the layers distinct names."
        )
    names = [path[-1] for path, _ in layers]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    suggestion = f" Closest names: {close}." if close else ""
    raise ValueError(
        f"The {role} {model.name!r} has no layer named {name!r}.{suggestion} "
        f"`{role}.summary(expand_nested=True)` lists every layer."
    )


def _graph_outputs(model, wanted: dict, found: dict, inputs=None):
    """`model`'s outputs on new (or given) symbolic inputs, sharing its layers.

    Records in `found` the symbolic output of each layer whose path (relative
    to `model`) is a key of `wanted`, descending into sub-models on a path.
    """
    direct = {path[0] for path in wanted if len(path) == 1}
    nested = {path[0] for path in wanted if len(path) > 1}

    def call(layer, *args, **kwargs):
        if layer.name in nested:
            inner = {path[1:]: key for path, key in wanted.items() if path[0] == layer.name}
            if len(args) != 1 or any(v is not None for v in kwargs.values()):
                raise ValueError(
                    f"Sub-model {layer.name!r} is called with several arguments; "
                    "hints reach into sub-models called on one input only. Name a "
                    "layer outside it."
                )
            return _graph_outputs(layer, inner, found, inputs=args[0])[1]
        outputs = layer(*args, **kwargs)
        if layer.name in direct:
            key = wanted[(layer.name,)]
            if key in found:
                raise ValueError(
                    f"Layer {layer.name!r} is called more than once in "
                    f"{model.name!r}, so its output is ambiguous; a hint needs a "
                    "layer called once."
                )
            found[key] = outputs
        return outputs

    if isinstance(model, keras.Sequential):
        if inputs is None:
            inputs = keras.Input(batch_shape=model.inputs[0].shape,
                                 dtype=model.inputs[0].dtype)  # fmt: skip
        outputs = inputs
        for layer in model.layers:
            outputs = call(layer, outputs)
        return inputs, outputs
    if inputs is None:
        inputs = keras.tree.map_structure(
            lambda x: keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x.name),
            model.input,
        )
        graph_inputs = inputs
    else:  # a sub-model: its graph runs on the outer model's tensor
        graph_inputs = keras.tree.pack_sequence_as(
            model.input, keras.tree.flatten(inputs)
        )
    # What `keras.models.clone_model(..., call_function=...)` runs, without
    # building a model: the same layers, called on these tensors.
    outputs = model._run_through_graph(
        graph_inputs, operation_fn=lambda layer: layer, call_fn=call
    )
    return inputs, outputs


def feature_extractor(model, layer_names, role: str = "model") -> keras.Model:
    """A model sharing `model`'s layers that outputs `[output, *features]`.

    One forward pass gives the model's own output and the outputs of the named
    layers (searched in nested sub-models too). The extractor's variables are
    `model`'s, so training through it trains `model`.

    Args:
        model: A functional or Sequential model with one output.
        layer_names: Names of its layers.
        role: `"student"` or `"teacher"`, for messages.

    Returns:
        A functional `keras.Model` with outputs `[output, feature_1, ...]`.

    Raises:
        ValueError: for a subclassed or unbuilt model, a layer name that does
            not exist (listing the closest names) or that is ambiguous.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
    ...                           keras.layers.Dense(3)])
    >>> [tuple(o.shape) for o in feature_extractor(model, ["h"]).outputs]
    [(None, 3), (None, 8)]
    """
    _require_graph_model(model, role)
    wanted = {find_layer(model, name, role): name for name in layer_names}
    found: dict = {}
    inputs, outputs = _graph_outputs(model, wanted, found)
    outputs = keras.tree.flatten(outputs)
    if len(outputs) != 1:
        raise ValueError(
            f"The {role} has {len(outputs)} outputs; a Distiller needs one."
        )
    missing = [name for name in layer_names if name not in found]
    if missing:
        raise ValueError(
            f"The {role}'s layers {missing} are not on the path from its inputs to "
            "its output, so they have no output to match."
        )
    return keras.Model(
        inputs,
        [outputs[0], *(found[name] for name in layer_names)],
        name=f"{model.name}_features",
    )


def _shape(tensor) -> tuple:
    return tuple(tensor.shape)


def _layers_with(model, predicate) -> list[str]:
    """Names of `model`'s layers (nested too) whose output shape passes `predicate`."""
    names = []
    for path, layer in _sub_layers(model):
        if isinstance(layer, keras.layers.InputLayer) or _is_graph_model(layer):
            continue
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError, RuntimeError):
            continue  # a shared layer or one without a single output
        if predicate(shape):
            names.append(path[-1])
    return names


def _shown(names: list[str], limit: int = 8) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def build_adapter(
    hint: Hint,
    student_shape: tuple,
    teacher_shape: tuple,
    *,
    student=None,
    dtype: str = "float32",
) -> keras.layers.Layer | None:
    """The adapter of `hint`, built, or None when none is needed.

    Args:
        hint: The hint.
        student_shape: Shape of the student's feature (batch axis first).
        teacher_shape: Shape of the teacher's feature.
        student: The student model, to list layers of a fitting shape in
            error messages.
        dtype: The adapter's dtype.

    Returns:
        A built `keras.layers.Layer` mapping `student_shape` onto
        `teacher_shape`, or None when the shapes are equal (with `"auto"`
        or `None`).

    Raises:
        ValueError: for features of different ranks, of shapes no adapter of
            the chosen kind maps, different spatial sizes or time lengths, or
            a custom adapter whose output is not the teacher's shape.

    Example:

    >>> build_adapter(Hint("s", "t"), (None, 8), (None, 32)).units
    32
    """
    s, t = tuple(student_shape), tuple(teacher_shape)
    what = (
        f"Hint {hint.name!r}: the student's {hint.student_layer!r} outputs {s}, the "
        f"teacher's {hint.teacher_layer!r} {t}"
    )
    if isinstance(hint.adapter, keras.layers.Layer):
        adapter = hint.adapter
        if not adapter.built:
            adapter.build(s)
        out = tuple(adapter.compute_output_spec(keras.KerasTensor(s)).shape)
        if not _same(out[1:], t[1:]):
            raise ValueError(
                f"{what}; the given adapter {adapter.name!r} outputs {out}, not the "
                "teacher's shape."
            )
        return adapter
    if len(s) != len(t):
        same_rank = _layers_with(student, lambda shape: len(shape) == len(t)) if student else []
        raise ValueError(
            f"{what}: different ranks ({len(s)} and {len(t)}), which no adapter "
            "maps. Pick layers of the same rank (student layers of rank "
            f"{len(t)}: {_shown(same_rank)}), or give a custom adapter (e.g. a "
            "pooling layer then Dense)."
        )
    if _same(s[1:], t[1:]) and hint.adapter in ("auto", None):
        return None
    if hint.adapter is None:
        raise ValueError(
            f"{what}, which differ, and adapter=None. Use adapter='auto' (a Dense "
            "or 1x1 convolution learned with the student) or pick layers of equal "
            "shapes."
        )
    kind = hint.adapter
    if kind == "auto":
        kind = "conv" if len(s) == 4 else "dense"
    if len(s) not in (2, 3, 4):
        raise ValueError(
            f"{what}: rank {len(s)} features have no built-in adapter (dense "
            "takes (batch, features) or (batch, time, features), conv "
            "(batch, h, w, channels)). Give a custom adapter layer."
        )
    if kind == "conv" and len(s) != 4:
        raise ValueError(
            f"{what}: adapter='conv' (a 1x1 Conv2D) needs (batch, h, w, channels) "
            "features; use adapter='dense' or 'auto'."
        )
    if kind == "dense" and len(s) == 4:
        raise ValueError(
            f"{what}: adapter='dense' maps (batch, features) or (batch, time, "
            "features); for feature maps use adapter='conv' (a 1x1 Conv2D) or 'auto'."
        )
    if not _same(s[1:-1], t[1:-1]):
        if len(s) == 4:
            size = t[1:3]
            fitting = _layers_with(student, lambda shape: len(shape) == 4 and _same(shape[1:3], size)) if student else []
            raise ValueError(
                f"{what}: different spatial sizes {s[1:3]} and {t[1:3]}, which a "
                f"1x1 convolution does not change. Pick a student layer of the "
                f"teacher's size {size} ({_shown(fitting)}) or another teacher "
                "layer; to resize anyway, give your own adapter, e.g. "
                "adapter=keras.Sequential([keras.layers.AveragePooling2D(2), "
                f"keras.layers.Conv2D({t[-1]}, 1)])."
            )
        raise ValueError(
            f"{what}: different time lengths {s[1]} and {t[1]}; the Dense adapter "
            "maps the last axis only. Pick layers on the same time steps."
        )
    if t[-1] is None:
        raise ValueError(f"{what}: the teacher's feature size (last axis) is unknown.")
    if kind == "conv":
        adapter = keras.layers.Conv2D(
            t[-1], 1, dtype=dtype, name=f"hint_{hint.name}_adapter"
        )
    else:
        adapter = keras.layers.Dense(t[-1], dtype=dtype, name=f"hint_{hint.name}_adapter")
    adapter.build(s)
    return adapter


def _same(a: tuple, b: tuple) -> bool:
    """Equal shapes, where an unknown (None) size matches any size."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def validate_hints(hints, teacher) -> tuple[Hint, ...]:
    """The hints as a tuple, after the checks that need no model graph.

    Args:
        hints: A list of `Hint` (or None / empty for no hints).
        teacher: The Distiller's teacher.

    Returns:
        A tuple of `Hint`.

    Raises:
        TypeError: for anything but `Hint` objects.
        ValueError: for duplicate names, no teacher, or an ensemble teacher.

    Example:

    >>> validate_hints(None, teacher=None)
    ()
    """
    if hints is None:
        return ()
    if isinstance(hints, Hint):
        hints = [hints]
    hints = tuple(hints)
    for hint in hints:
        if not isinstance(hint, Hint):
            raise TypeError(
                f"`hints` must be a list of keras_kd.Hint, got {type(hint).__name__} "
                f"{hint!r}. For keras.distillation's FeatureDistillation(..., "
                "teacher_layer_name=t, student_layer_name=s) pass "
                "keras_kd.Hint(student_layer=s, teacher_layer=t)."
            )
    names = [hint.name for hint in hints]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"Several hints are named {duplicates}; each is logged as "
            "hint_<name>_loss, so give them distinct names, e.g. Hint(..., name='b3')."
        )
    if hints and teacher is None:
        raise ValueError(
            "Hints need the teacher's features at every step, but `teacher` is "
            "None: cached teacher outputs hold logits only (a feature map is far "
            "larger, e.g. 196 KiB per image for ResNet50's conv4 stage at 112 px). "
            "Pass `teacher=` and train on the plain data, or drop `hints`."
        )
    if hints and getattr(teacher, "members", None):
        raise ValueError(
            "Hints name a teacher layer, but the teacher is an ensemble of "
            f"{len(teacher.members)} models. Give one of its members as the "
            "teacher, or drop `hints`."
        )
    return hints


class HintPlan:
    """The extractors and adapters of a Distiller's hints.

    The extractors share the student's and the teacher's layers; the adapters
    are new layers, built at once from the features' static shapes. The
    `Distiller` tracks the adapters (so they are saved and trained) but not
    the extractors (whose variables are the models').

    Args:
        hints: The validated hints.
        student: The student model (functional or Sequential).
        teacher: The teacher model (functional or Sequential).

    Raises:
        ValueError: from `feature_extractor` and `build_adapter`.

    Example:

    >>> import keras, numpy as np
    >>> def net(name, width):
    ...     inputs = keras.Input((8,))
    ...     features = keras.layers.Dense(width, name="features")(inputs)
    ...     return keras.Model(inputs, keras.layers.Dense(3)(features), name=name)
    >>> plan = HintPlan((Hint("features", "features"),), net("s", 4), net("t", 6))
    >>> logits, features = plan.student_outputs(np.ones((2, 8), "float32"), training=True)
    >>> tuple(logits.shape), [tuple(f.shape) for f in features], len(plan.adapters)
    ((2, 3), [(2, 4)], 1)
    """

    def __init__(self, hints: tuple[Hint, ...], student, teacher):
        self.hints = tuple(hints)
        student_names = list(dict.fromkeys(h.student_layer for h in self.hints))
        teacher_names = list(dict.fromkeys(h.teacher_layer for h in self.hints))
        self.student_extractor = feature_extractor(student, student_names, "student")
        self.teacher_extractor = feature_extractor(teacher, teacher_names, "teacher")
        self._student_index = [student_names.index(h.student_layer) for h in self.hints]
        self._teacher_index = [teacher_names.index(h.teacher_layer) for h in self.hints]
        student_shapes = [_shape(o) for o in self.student_extractor.outputs[1:]]
        teacher_shapes = [_shape(o) for o in self.teacher_extractor.outputs[1:]]
        self.student_shapes = [student_shapes[i] for i in self._student_index]
        self.teacher_shapes = [teacher_shapes[i] for i in self._teacher_index]
        self.adapters = [
            build_adapter(hint, s, t, student=student)
            for hint, s, t in zip(self.hints, self.student_shapes, self.teacher_shapes)
        ]

    @property
    def trainable_variables(self) -> list:
        """The adapters' trainable variables."""
        return [v for a in self.adapters if a is not None for v in a.trainable_variables]

    def student_outputs(self, inputs, training: bool):
        """The student's output and its hinted features (one per hint), one pass."""
        outputs = self.student_extractor(inputs, training=training)
        return outputs[0], [outputs[1:][i] for i in self._student_index]

    def teacher_forward(self, inputs):
        """The teacher's `[output, *features]` in inference mode (for `TeacherInference`)."""
        return self.teacher_extractor(inputs, training=False)

    def split_teacher(self, outputs):
        """`teacher_forward`'s outputs as the output and one feature per hint."""
        return outputs[0], [outputs[1:][i] for i in self._teacher_index]

    def loss_values(self, teacher_features, student_features, kept_axes: int = 1):
        """Each hint's per-example (or per-token) loss, before its weight.

        The teacher's features are constants. Where a shape was not known
        statically, a check (an error naming the hint) runs first.

        Args:
            teacher_features: One teacher feature per hint.
            student_features: One student feature per hint (before adapters).
            kept_axes: 1 for `(batch,)` values, 2 for `(batch, time)` tokens.

        Returns:
            A list of float32 tensors, one per hint.
        """
        values = []
        for hint, adapter, t, s in zip(
            self.hints, self.adapters, teacher_features, student_features
        ):
            t = tf.stop_gradient(tf.cast(t, tf.float32))
            s = tf.cast(s, tf.float32)
            if adapter is not None:
                s = tf.cast(adapter(s), tf.float32)
            if kept_axes > 1 and s.shape.rank is not None and s.shape.rank < kept_axes + 1:
                raise ValueError(
                    f"Hint {hint.name!r}: the student outputs sequences (batch, time, "
                    f"classes) but its {hint.student_layer!r} feature has shape "
                    f"{tuple(s.shape)}; a sequence hint needs (batch, time, ...) "
                    "features on the output's time steps."
                )
            check = checks.require(
                tf.reduce_all(tf.equal(tf.shape(s), tf.shape(t))),
                f"Hint {hint.name!r}: the student's feature (after the adapter) and "
                f"the teacher's feature have different shapes on this batch (static "
                f"shapes {tuple(s.shape)} and {tuple(t.shape)}). Pick layers whose "
                "sizes agree for every input size.",
            )
            with tf.control_dependencies([c for c in [check] if c is not None]):
                values.append(hint.loss_values(t, tf.identity(s), kept_axes))
        return values


__all__ = [
    "ADAPTERS",
    "HINT_LOSSES",
    "Hint",
    "HintPlan",
    "build_adapter",
    "feature_extractor",
    "find_layer",
    "validate_hints",
]

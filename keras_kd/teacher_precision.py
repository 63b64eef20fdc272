"""A teacher's inference in bfloat16 or float16, on its own float32 weights.

The teacher only runs forward, and its outputs are soft targets: a few
significant digits are all the student can use. `teacher_dtype="bfloat16"`
(on `keras_kd.Distiller` and `keras_kd.cache.build_teacher_cache`) runs its
forward pass in that precision, where the hardware computes it faster:
Intel CPUs with AMX (Sapphire Rapids and later; measured in
`benchmarks/RESULTS.md`) and, expected but not measured here, GPUs with
tensor cores.

Decisions, documented here once:

- **The teacher's own weights, not a copy.** While a forward pass runs (or
  is traced into a `tf.function`), each layer of the teacher that computes
  in float32 is given the matching mixed policy (`"mixed_bfloat16"` or
  `"mixed_float16"`): its variables stay float32 and are cast as they are
  read, the arithmetic is in the lower precision. The policies are put back
  when the pass ends, even on error. So the teacher costs no second copy in
  memory (a language-model teacher may not fit twice) and a copy can never
  hold stale weights. A call of the teacher from another thread *during*
  such a pass would compute in the lower precision too; the replicas of a
  `tf.distribute` strategy trace one at a time, so they do not.
- **What stays float32.**
  - The layers that compute the model's outputs: for a functional or
    Sequential model, followed back from each output through nested models,
    operations (`keras.ops.take`), layers without weights (an
    `Activation("softmax")`) and normalization layers (a
    `BatchNormalization` after the logits) to the first layer with weights,
    and every
    sublayer of those (`TimeDistributed(Dense)`). So logits are not rounded
    to 8 significant bits. A subclassed model has no graph to follow: its
    last layer computes in the lower precision, with a warning.
  - Models themselves (so that inputs enter as given) and Keras'
    preprocessing layers and their subclasses (`Normalization` keeps float32 statistics; raw
    features such as a year, 2026, would be rounded to 2024 in bfloat16).
  - A teacher that already computes in float16 or bfloat16 somewhere (built
    under a mixed policy, whose float32 layers were chosen to be float32):
    it is left as built, with a warning.
  The outputs are returned as float32. A pass nested in another pass of the
  same teacher (an eager check inside a traced step) changes nothing.
- **A built teacher only.** Building a layer inside the pass would create
  its sublayers (`MultiHeadAttention`'s projections) at the lower precision
  for good, so an unbuilt teacher is a `ValueError` naming the fix.
- **float16** overflows above 65504: a teacher whose activations exceed it
  gives Inf, which the `Distiller`'s checks report as the teacher's
  non-finite outputs. bfloat16 has float32's range.
- **Not a default.** It changes the soft targets by rounding (measured in
  `benchmarks/RESULTS.md`), and is slower where the hardware has no fast
  lower-precision arithmetic, so it is asked for, never chosen silently.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import keras
import tensorflow as tf

# Values of `teacher_dtype`: None leaves the teacher as built.
TEACHER_DTYPES = (None, "bfloat16", "float16")


def validate_teacher_dtype(value, option: str = "teacher_dtype") -> str | None:
    """Returns `value` if it is one of `TEACHER_DTYPES`, else raises.

    Args:
        value: The `teacher_dtype` setting.
        option: The setting's name, for the message.

    Returns:
        `value`, unchanged.

    Raises:
        ValueError: for anything else (a Keras policy name such as
            `"mixed_bfloat16"` is named with its fix).

    Example:

    >>> validate_teacher_dtype("bfloat16")
    'bfloat16'
    """
    if value is None or (isinstance(value, str) and value in TEACHER_DTYPES):
        return value
    hint = ""
    if isinstance(value, str) and value.startswith("mixed_"):
        hint = (
            f" Pass {value[len('mixed_'):]!r}: the teacher's weights always stay "
            "float32 (a mixed policy is what it uses)."
        )
    elif value == "float32":
        hint = " Pass None for float32: the teacher then computes as it was built."
    raise ValueError(
        f"`{option}` must be None, 'bfloat16' or 'float16' (the precision of the "
        f"teacher's arithmetic), got {value!r}.{hint}"
    )


def _is_plain_float32(layer) -> bool:
    policy = getattr(layer, "_dtype_policy", None)
    if not isinstance(policy, keras.DTypePolicy) or isinstance(
        policy, keras.dtype_policies.DTypePolicyMap
    ):
        return False
    return (
        policy.quantization_mode is None
        and policy.compute_dtype == "float32"
        and policy.variable_dtype == "float32"
    )


def output_layers(model) -> list:
    """The layers that compute `model`'s outputs, and their sublayers.

    Followed back from each output through nested functional and Sequential
    models, operations that are not layers (`keras.ops.take`, say), layers
    without weights (an `Activation`) and Keras' normalization layers (a
    `BatchNormalization` after the logits), to the first layer with weights; for a
    `keras_kd.TeacherEnsemble`, those of each member. A subclassed model has
    no graph to follow: the answer is then empty.

    Args:
        model: A `keras.Model` (or layer).

    Returns:
        The layers, each once.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...                           keras.layers.Dense(3, name="logits"),
    ...                           keras.layers.Softmax(name="probabilities")])
    >>> sorted(layer.name for layer in output_layers(model))
    ['logits', 'probabilities']
    """
    found: dict[int, object] = {}
    seen: set[tuple] = set()

    def keep(layer) -> None:
        for sublayer in layer._flatten_layers(include_self=True, recursive=True):
            found.setdefault(id(sublayer), sublayer)

    def visit(tensor) -> None:
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return
        operation, node_index, tensor_index = history
        key = (id(operation), node_index, tensor_index)
        if key in seen:
            return
        seen.add(key)
        nested = _model_outputs(operation)
        if nested is not None:
            visit(nested[tensor_index])
            return
        if isinstance(operation, keras.layers.InputLayer):
            return
        if isinstance(operation, keras.Layer):
            keep(operation)
            if operation.weights and not _from_keras_package(operation, "normalization"):
                return  # it computes the output; a normalization only rescales it
        for parent in operation._inbound_nodes[node_index].input_tensors:
            visit(parent)

    for member in [model, *getattr(model, "members", ())]:
        for tensor in _model_outputs(member) or []:
            visit(tensor)
    return list(found.values())


def _model_outputs(model) -> list | None:
    """A functional or Sequential model's output tensors, else None."""
    if not isinstance(model, keras.Model):
        return None
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    return None if outputs is None else tf.nest.flatten(outputs)


def _lower_precision_layers(layers) -> list[str]:
    """Names of layers that compute in float16 or bfloat16 already."""
    return [
        layer.name
        for layer in layers
        if getattr(layer, "compute_dtype", None) in ("float16", "bfloat16")
    ]


def _never_switched(layer) -> bool:
    """Models (inputs enter as given) and Keras' preprocessing layers, or
    subclasses of them."""
    return isinstance(layer, keras.Model) or _from_keras_package(layer, "preprocessing")


def _from_keras_package(layer, package: str) -> bool:
    """Whether `layer`'s class, or a class it derives from, is one of
    `keras.src.layers.<package>`."""
    prefix = f"keras.src.layers.{package}"
    return any(cls.__module__.startswith(prefix) for cls in type(layer).__mro__)


# Ids of the models inside `computing_in`, with their dtype: a nested block on
# the same model (a traced pass calling an eager one) changes nothing.
_ACTIVE: dict[int, str] = {}


def _models_of(model) -> list:
    return [model, *getattr(model, "members", ())]


@contextlib.contextmanager
def computing_in(model, dtype: str | None) -> Iterator[None]:
    """Within the block, `model` computes in `dtype` (see the module docstring).

    Args:
        model: The teacher (a `keras.Model`, a `keras_kd.TeacherEnsemble`, any
            layer), built.
        dtype: `"bfloat16"`, `"float16"` or `None` (nothing changes).

    Yields:
        Nothing: the block runs with the policies changed; they are restored
        when it ends.

    Raises:
        ValueError: for another `dtype`, or a teacher that is not built.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...                           keras.layers.Dense(3)])
    >>> with computing_in(model, "bfloat16"):
    ...     hidden = model.layers[0].compute_dtype
    >>> hidden, model.layers[0].compute_dtype
    ('bfloat16', 'float32')
    """
    if dtype is None:
        yield
        return
    policy = keras.DTypePolicy(f"mixed_{validate_teacher_dtype(dtype)}")
    unbuilt = [m.name for m in _models_of(model) if not m.built]
    if unbuilt:
        raise ValueError(
            f"teacher_dtype={dtype!r} needs a built teacher, but {unbuilt} is not "
            "built: layers built during a lower-precision pass would keep its "
            "precision. Call the teacher once on a batch (teacher(x[:1])) first."
        )
    if id(model) in _ACTIVE:
        if _ACTIVE[id(model)] != dtype:
            raise ValueError(
                f"teacher_dtype={dtype!r} was asked for inside a pass that computes "
                f"this teacher in {_ACTIVE[id(model)]!r}: one teacher computes in "
                "one precision at a time. Use one teacher_dtype per teacher."
            )
        yield
        return
    layers = model._flatten_layers(include_self=True, recursive=True)
    already = _lower_precision_layers(layers)
    if already:
        warnings.warn(
            f"teacher_dtype={dtype!r}: the teacher already computes in a lower "
            f"precision in {len(already)} layers ({already[:3]}...), so it was built "
            "under a mixed policy; it runs as built.",
            stacklevel=3,
        )
        yield
        return
    kept = output_layers(model)
    if not kept:
        warnings.warn(
            f"teacher_dtype={dtype!r}: the teacher is not a functional or Sequential "
            "model, so its output layers cannot be found and also compute in "
            f"{dtype} (its outputs are rounded to {dtype}'s precision).",
            stacklevel=3,
        )
    kept_ids = {id(layer) for layer in kept}
    changed = [
        (layer, layer._dtype_policy)
        for layer in layers
        if id(layer) not in kept_ids and not _never_switched(layer) and _is_plain_float32(layer)
    ]
    _ACTIVE[id(model)] = dtype
    try:
        for layer, _ in changed:
            layer._dtype_policy = policy
        yield
    finally:
        for layer, original in changed:
            layer._dtype_policy = original
        del _ACTIVE[id(model)]


def forward_in(forward: Callable, model, dtype: str | None) -> Callable:
    """`forward`, run with `model` computing in `dtype`, its outputs as float32.

    Args:
        forward: `forward(inputs) -> outputs` (a tensor or a list of them),
            which calls `model`.
        model: The model whose precision changes during the call.
        dtype: `"bfloat16"`, `"float16"` or `None` (`forward` is returned as is).

    Returns:
        The wrapped callable.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> fast = forward_in(lambda x: model(x, training=False), model, "bfloat16")
    >>> fast(tf.ones((2, 4))).dtype.name
    'float32'
    """
    if dtype is None:
        return forward

    def run(inputs):
        with computing_in(model, dtype):
            outputs = forward(inputs)
        return tf.nest.map_structure(
            lambda t: tf.cast(t, tf.float32) if t.dtype.is_floating else t, outputs
        )

    return run


__all__ = [
    "TEACHER_DTYPES",
    "computing_in",
    "forward_in",
    "output_layers",
    "validate_teacher_dtype",
]

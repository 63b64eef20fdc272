"""Teacher ensembles: several trained models combined into one teacher.

Hinton et al. (2015) distil an *ensemble* into one small model. A
`TeacherEnsemble` is a `keras.Model` that holds the members and combines their
outputs in one of the two ways the paper discusses:

- ``"arithmetic"``: the mean of the members' distributions at the distillation
  temperature, `p(T) = mean_m softmax(z_m / T)`. The combination depends on `T`,
  so the ensemble exposes `logits_at_temperature(x, T)`, which the `Distiller`
  calls with its own temperature.
- ``"geometric"``: the normalised mean of the members' log-probabilities,
  `p(T) ∝ exp(mean_m log softmax(z_m / T))`, which equals `softmax(mean_m z_m / T)`:
  the mean of the logits, the same at every temperature.

Also here: `train_ensemble` (N members that differ by seed, optionally by data
order and by per-member build arguments such as dropout) and `evaluate_ensemble`
(accuracy and loss of every member and of the ensemble).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_kd import losses as kd_losses
from keras_kd.distiller import ends_in_softmax, teacher_config

ENSEMBLE_MEANS = ("geometric", "arithmetic")


def validate_mean(mean: str) -> str:
    """Returns `mean` if it names a known ensemble combination.

    Args:
        mean: `"geometric"` or `"arithmetic"`.

    Returns:
        `mean`, unchanged.

    Raises:
        ValueError: for any other value.

    Example:

    >>> validate_mean("arithmetic")
    'arithmetic'
    """
    if mean not in ENSEMBLE_MEANS:
        raise ValueError(
            f"`mean` must be one of {ENSEMBLE_MEANS}, got {mean!r}. 'arithmetic' "
            "averages the members' probabilities at the distillation temperature, "
            "'geometric' averages their logits."
        )
    return mean


def combine_logits(member_logits, temperature: float, mean: str = "geometric"):
    """Logits `L` whose `softmax(L / T)` is the ensemble's distribution at `T`.

    Pure math on stacked member logits, shared by `TeacherEnsemble` and the
    teacher-output cache (which stores per-member logits of arithmetic ensembles).

    - geometric: `L = mean_m z_m` (independent of `T`).
    - arithmetic: `L = T * log(mean_m softmax(z_m / T))`, computed as
      `T * (logsumexp_m log_softmax(z_m / T) - log M)` so that it stays finite
      for large logits and small temperatures.

    Args:
        member_logits: Tensor `(..., members, classes)`: the members' logits on
            the member axis (second to last).
        temperature: Float > 0, the temperature `T` at which to combine.
        mean: `"geometric"` or `"arithmetic"`.

    Returns:
        Float32 tensor `(..., classes)`.

    Raises:
        ValueError: for an unknown `mean` or a temperature <= 0.

    Example:

    >>> z = tf.constant([[[2.0, 0.0], [0.0, 2.0]]])  # 1 example, 2 members
    >>> combine_logits(z, 1.0, "arithmetic").numpy().round(3)
    array([[-0.693, -0.693]], dtype=float32)
    """
    validate_mean(mean)
    logits = tf.cast(member_logits, tf.float32)
    if mean == "geometric":
        return tf.reduce_mean(logits, axis=-2)
    if isinstance(temperature, int | float):
        temperature = kd_losses.validate_temperature(temperature)
    members = tf.cast(tf.shape(logits)[-2], tf.float32)
    log_probabilities = tf.nn.log_softmax(logits / temperature, axis=-1)
    log_mean = tf.reduce_logsumexp(log_probabilities, axis=-2) - tf.math.log(members)
    return temperature * log_mean


def model_input_shape(model: keras.Model) -> tuple | None:
    """The per-example input shape a model declares, or `None` when it is unknown.

    Unknown for a subclassed or unbuilt model and for a model with several
    inputs. A `TeacherEnsemble` declares the shape of its first member that
    declares one. `None` entries in the shape accept any size.

    Args:
        model: A `keras.Model`.

    Returns:
        The shape without the batch axis, e.g. `(784,)`, or `None`.

    Example:

    >>> model_input_shape(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    (4,)
    """
    if isinstance(model, TeacherEnsemble):
        shapes = [model_input_shape(member) for member in model.members]
        return next((shape for shape in shapes if shape is not None), None)
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not isinstance(inputs, list | tuple) or len(inputs) != 1:
        return None
    shape = getattr(inputs[0], "shape", None)
    return None if shape is None else tuple(shape)[1:]


def _shapes_compatible(first: tuple, second: tuple) -> bool:
    return len(first) == len(second) and all(
        a is None or b is None or a == b for a, b in zip(first, second)
    )


def check_input_shape(
    model: keras.Model, example_shape: tuple, *, model_role: str, data_name: str
) -> None:
    """Raises a clear `ValueError` when inputs of `example_shape` do not fit `model`.

    Nothing is checked when the model does not declare its input shape (see
    `model_input_shape`).

    Args:
        model: The model that will receive the inputs.
        example_shape: The shape of one example (without the batch axis).
        model_role: How to name the model in the message, e.g. `"teacher"`.
        data_name: How to name the inputs in the message, e.g. `"x"`.

    Raises:
        ValueError: naming the expected and the given shape.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> check_input_shape(model, (4,), model_role="teacher", data_name="x")
    """
    expected = model_input_shape(model)
    given = tuple(None if d is None else int(d) for d in example_shape)
    if expected is None or _shapes_compatible(expected, given):
        return
    raise ValueError(
        f"`{data_name}` holds examples of shape {given}, but the {model_role} takes "
        f"inputs of shape {expected} (None: any size). Give the inputs the "
        f"{model_role} was built for (same features and preprocessing), or a "
        f"{model_role} built for these inputs."
    )


def _output_size(model: keras.Model, index: int) -> int | None:
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        return None
    if isinstance(shape, list):
        raise ValueError(
            f"Member {index} ({model.name!r}) has {len(shape)} outputs; an ensemble "
            "member must have a single output of logits."
        )
    return shape[-1] if shape else None


def validate_members(models: Sequence[keras.Model]) -> list[keras.Model]:
    """Checks that `models` can form an ensemble of logit-emitting teachers.

    Args:
        models: The members.

    Returns:
        The members as a list.

    Raises:
        ValueError: if there are none, one is not a `keras.Model`, one ends in a
            softmax, or their output sizes (class counts) or declared input
            shapes differ (members that do not declare an input shape, such as
            unbuilt subclassed models, are checked when called).

    Example:

    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> len(validate_members([m, m]))
    2
    """
    if isinstance(models, keras.Layer) or not isinstance(models, Sequence):
        raise ValueError(
            f"`models` must be a list of keras.Model, got {type(models).__name__}. "
            "Wrap a single model in a list: TeacherEnsemble([model])."
        )
    models = list(models)
    if not models:
        raise ValueError("`models` is empty; an ensemble needs at least one member.")
    sizes = []
    for index, model in enumerate(models):
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"`models[{index}]` must be a keras.Model, got {type(model).__name__}."
            )
        if ends_in_softmax(model):
            raise ValueError(
                f"`models[{index}]` ({model.name!r}) ends in a softmax, but ensemble "
                "members must output logits (the ensemble applies the softmax at the "
                "distillation temperature). Remove the final softmax, e.g. "
                "Dense(n) instead of Dense(n, activation='softmax')."
            )
        sizes.append(_output_size(model, index))
    known = {size for size in sizes if size is not None}
    if len(known) > 1:
        named = ", ".join(
            f"models[{i}] ({m.name!r}): {size}" for i, (m, size) in enumerate(zip(models, sizes))
        )
        raise ValueError(
            f"The members' output sizes differ: {sizes} ({named}). Every member must "
            "give one logit per class of the same label set."
        )
    shapes = [(i, model_input_shape(m)) for i, m in enumerate(models)]
    shapes = [(i, shape) for i, shape in shapes if shape is not None]
    if any(not _shapes_compatible(shapes[0][1], shape) for _, shape in shapes[1:]):
        named = ", ".join(f"models[{i}] ({models[i].name!r}): {shape}" for i, shape in shapes)
        raise ValueError(
            f"The members take inputs of different shapes: {named}. Every member "
            "must take the same inputs (the ensemble gives each the same batch); "
            "build them on the same features and preprocessing."
        )
    return models


@keras.saving.register_keras_serializable(package="keras_kd")
class TeacherEnsemble(keras.Model):
    """Several trained models combined into one teacher.

    Usable anywhere a teacher is: `keras_kd.Distiller` calls
    `logits_at_temperature` with its own temperature, so an arithmetic ensemble
    is combined at the distillation temperature, as in the paper. Calling the
    ensemble (`ensemble(x)`) gives the combined logits at `T = 1`. Members are
    frozen (`trainable=False`); the ensemble saves and loads as one `.keras`
    file.

    Args:
        models: The trained members, each a `keras.Model` with one output of
            logits over the same classes (no final softmax).
        mean: `"geometric"` (default: mean of logits, i.e. the normalised mean of
            log-probabilities) or `"arithmetic"` (mean of probabilities at `T`).
        name: Model name.
        **kwargs: Passed to `keras.Model`.

    Raises:
        ValueError: for an unknown `mean` or members that cannot be combined
            (see `validate_members`).

    Example:

    ```python
    ensemble = keras_kd.TeacherEnsemble([m1, m2, m3], mean="arithmetic")
    distiller = keras_kd.Distiller(student=student, teacher=ensemble, temperature=4.0)
    ensemble.save("ensemble.keras")
    ```
    """

    def __init__(
        self,
        models: Sequence[keras.Model],
        mean: str = "geometric",
        name: str = "teacher_ensemble",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.mean = validate_mean(mean)
        self.members = validate_members(models)
        for member in self.members:
            member.trainable = False
        if all(member.built for member in self.members):
            self.built = True

    @property
    def num_members(self) -> int:
        """The number of members."""
        return len(self.members)

    def member_logits(self, x, training: bool = False):
        """The members' logits stacked on axis 1: `(batch, members, classes)`
        (`(batch, members, time, classes)` for sequence members).

        Args:
            x: A batch of inputs accepted by every member.
            training: Passed to the members (normally `False`).

        Returns:
            Float32 tensor `(batch, members, classes)`.

        Raises:
            ValueError: when the batch's example shape does not fit a member.

        Example:

        >>> import keras, numpy as np
        >>> members = [keras.Sequential([keras.Input((4,)), keras.layers.Dense(10)])
        ...            for _ in range(3)]
        >>> ensemble = TeacherEnsemble(members)
        >>> tuple(ensemble.member_logits(np.ones((32, 4), "float32")).shape)
        (32, 3, 10)
        """
        try:  # a dict of inputs, or a tensor of unknown rank, is not checked
            example_shape = tuple(x.shape)[1:]
        except (AttributeError, TypeError, ValueError):
            example_shape = None
        if example_shape is not None:
            for index, member in enumerate(self.members):
                check_input_shape(
                    member, example_shape,
                    model_role=f"ensemble member {index} ({member.name!r})",
                    data_name="x",
                )
        outputs = [
            tf.cast(member(x, training=training), tf.float32) for member in self.members
        ]
        return tf.stack(outputs, axis=1)

    def logits_at_temperature(self, x, temperature: float, training: bool = False):
        """Logits `L` such that `softmax(L / T)` is the ensemble's distribution.

        Args:
            x: A batch of inputs.
            temperature: Float > 0, the temperature `T`.
            training: Passed to the members (normally `False`).

        Returns:
            Float32 tensor `(batch, classes)`; see `combine_logits`.

        Raises:
            ValueError: for a temperature <= 0.

        Example:

        >>> import keras, numpy as np
        >>> members = [keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        ...            for _ in range(2)]
        >>> ensemble = TeacherEnsemble(members)  # geometric mean
        >>> x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
        >>> soft = tf.nn.softmax(ensemble.logits_at_temperature(x, 4.0) / 4.0)
        >>> log_p = [tf.nn.log_softmax(m(x) / 4.0) for m in members]
        >>> by_hand = tf.nn.softmax((log_p[0] + log_p[1]) / 2)  # normalized geometric mean
        >>> tuple(soft.shape), bool(np.allclose(soft, by_hand, atol=1e-6))
        ((5, 3), True)
        """
        stacked = self.member_logits(x, training)
        if stacked.shape.rank == 4:
            # Sequence members: (batch, members, time, classes); combine_logits
            # needs the member axis second to last.
            stacked = tf.transpose(stacked, [0, 2, 1, 3])
        return combine_logits(stacked, temperature, self.mean)

    def call(self, x, training: bool = False):
        """The combined logits at `T = 1`."""
        return self.logits_at_temperature(x, 1.0, training=training)

    def compute_output_shape(self, input_shape):
        return self.members[0].compute_output_shape(input_shape)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "mean": self.mean,
            "models": [teacher_config(m) for m in self.members],
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        models = [
            keras.saving.deserialize_keras_object(
                teacher_config(m), custom_objects=custom_objects
            )
            for m in config.pop("models")
        ]
        return cls(models, **config)


def _as_dataset(x, y, batch_size: int, shuffle_seed: int | None) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        # The number of examples (len(x) of a dict would count its keys).
        size = len(y)
        dataset = dataset.shuffle(size, seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def train_ensemble(
    build_member: Callable[..., keras.Model],
    n_members: int,
    x,
    y,
    *,
    epochs: int = 1,
    batch_size: int = 128,
    seeds: Sequence[int] | None = None,
    vary_data_order: bool = True,
    member_kwargs: Sequence[Mapping] | None = None,
    mean: str = "geometric",
    validation_data=None,
    verbose: int | str = "auto",
) -> TeacherEnsemble:
    """Trains `n_members` models that differ by seed, and returns their ensemble.

    Before each member is built, `keras.utils.set_random_seed(seed)` fixes its
    weight initialisation and its dropout masks, so members differ by seed alone
    unless told otherwise. Optionally each member also sees the data in its own
    order (a shuffle seeded by its seed) and gets its own build arguments
    (e.g. a dropout rate).

    Args:
        build_member: Called as `build_member(seed=seed, **member_kwargs[i])`;
            returns a `keras.Model` that outputs logits. If it is not compiled,
            it is compiled with Adam, from-logits sparse cross-entropy and
            accuracy.
        n_members: Number of members, >= 1.
        x: Training inputs (array or dict of arrays).
        y: Integer labels.
        epochs: Epochs per member.
        batch_size: Batch size.
        seeds: One seed per member; default `0, 1, ..., n_members - 1`.
        vary_data_order: If True (default), member `i` shuffles with seed
            `seeds[i]`; if False, all members share the shuffle of `seeds[0]`.
        member_kwargs: Optional per-member keyword arguments for `build_member`,
            e.g. `[{"dropout": 0.2}, {"dropout": 0.5}]`.
        mean: Combination of the returned ensemble.
        validation_data: Passed to `fit`.
        verbose: Passed to `fit`.

    Returns:
        A `TeacherEnsemble` of the trained members.

    Raises:
        ValueError: if `n_members < 1`, or `seeds` / `member_kwargs` do not have
            `n_members` entries, or the members cannot form an ensemble.

    Example:

    ```python
    def build(seed, dropout=0.2):
        return keras.Sequential([keras.Input((784,)), keras.layers.Dense(1200, "relu"),
                                 keras.layers.Dropout(dropout), keras.layers.Dense(10)])
    ensemble = train_ensemble(build, 10, x_train, y_train, epochs=5)
    ```
    """
    validate_mean(mean)
    if not isinstance(n_members, int) or n_members < 1:
        raise ValueError(f"`n_members` must be an integer >= 1, got {n_members!r}.")
    seeds = list(range(n_members)) if seeds is None else list(seeds)
    if len(seeds) != n_members:
        raise ValueError(
            f"`seeds` has {len(seeds)} entries but `n_members` is {n_members}; give "
            "one seed per member (or none for 0..n_members-1)."
        )
    member_kwargs = [{}] * n_members if member_kwargs is None else list(member_kwargs)
    if len(member_kwargs) != n_members:
        raise ValueError(
            f"`member_kwargs` has {len(member_kwargs)} entries but `n_members` is "
            f"{n_members}; give one dict per member."
        )
    members = []
    for index, (seed, kwargs) in enumerate(zip(seeds, member_kwargs)):
        keras.utils.set_random_seed(int(seed))
        model = build_member(seed=int(seed), **dict(kwargs))
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"`build_member` must return a keras.Model, got "
                f"{type(model).__name__} for member {index}."
            )
        if not model.compiled:
            model.compile(
                optimizer="adam",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
        order_seed = int(seed) if vary_data_order else int(seeds[0])
        model.fit(
            _as_dataset(x, y, batch_size, order_seed),
            epochs=epochs,
            validation_data=validation_data,
            verbose=verbose,
        )
        members.append(model)
    return TeacherEnsemble(members, mean=mean)


def _accuracy_and_loss(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    log_p = logits - logits.max(axis=-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=-1, keepdims=True))
    picked = log_p[np.arange(len(y)), y]
    return {
        "accuracy": float(np.mean(np.argmax(logits, axis=-1) == y)),
        "loss": float(-np.mean(picked)),
    }


def evaluate_ensemble(
    ensemble: TeacherEnsemble, x, y, *, batch_size: int = 512
) -> dict[str, object]:
    """Accuracy and cross-entropy of every member and of the ensemble at `T = 1`.

    Args:
        ensemble: The `TeacherEnsemble`.
        x: Inputs.
        y: Integer labels, shape `(n,)` or `(n, 1)`.
        batch_size: Examples per forward pass.

    Returns:
        `{"members": [{"accuracy": a, "loss": l}, ...], "ensemble": {...},
        "mean_member_accuracy": float}`; the loss is the mean negative
        log-likelihood of the true class.

    Raises:
        ValueError: if `y` is not integer labels with as many entries as `x`.

    Example:

    >>> import keras
    >>> members = [keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    ...            for _ in range(2)]
    >>> x = np.random.default_rng(0).normal(size=(20, 4)).astype("float32")
    >>> report = evaluate_ensemble(TeacherEnsemble(members), x, np.arange(20) % 3)
    >>> len(report["members"]), 0.0 <= report["ensemble"]["accuracy"] <= 1.0
    (2, True)
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"`y` must be integer class ids of shape (n,), got dtype {y.dtype} and "
            f"shape {y.shape}. Convert one-hot labels with y.argmax(-1)."
        )
    size = len(next(iter(x.values()))) if isinstance(x, Mapping) else len(x)
    if size != len(y):
        raise ValueError(
            f"`x` has {size} examples but `y` has {len(y)}; they must align."
        )
    member_outputs, combined = [], []
    for start in range(0, size, batch_size):
        if isinstance(x, Mapping):
            batch = {k: v[start : start + batch_size] for k, v in x.items()}
        else:
            batch = x[start : start + batch_size]
        stacked = ensemble.member_logits(batch)
        member_outputs.append(stacked.numpy())
        combined.append(combine_logits(stacked, 1.0, ensemble.mean).numpy())
    member_logits = np.concatenate(member_outputs, axis=0)
    members = [
        _accuracy_and_loss(member_logits[:, m], y) for m in range(ensemble.num_members)
    ]
    return {
        "members": members,
        "ensemble": _accuracy_and_loss(np.concatenate(combined, axis=0), y),
        "mean_member_accuracy": float(np.mean([m["accuracy"] for m in members])),
    }


__all__ = [
    "ENSEMBLE_MEANS",
    "TeacherEnsemble",
    "check_input_shape",
    "combine_logits",
    "evaluate_ensemble",
    "model_input_shape",
    "train_ensemble",
    "validate_mean",
    "validate_members",
]

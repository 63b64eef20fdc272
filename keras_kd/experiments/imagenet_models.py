"""The models of the ImageNet experiment and how each kind of run compiles them.

- `application`: a `keras.applications` network from scratch (or with given
  weights) that takes float32 RGB pixels in `[0, 255]`, applies its own
  preprocessing and outputs logits.
- `pretrained_teacher`: a teacher whose weights come from elsewhere (Keras'
  ImageNet download, a `.keras` model, a weights file), restricted to a
  folder's classes when it has the 1000 ImageNet logits.
- `compile_run`: one model ready for `fit`, for each kind of run of the
  experiment (`KINDS`): a network on hard labels, `keras_kd.Distiller` online
  or from cached teacher logits, or the `keras.distillation.Distiller` peer,
  configured as keras-kd's (`LogitsDistillation(temperature=T,
  loss=KLDivergence())`, which applies the T^2 factor, and
  `student_loss_weight = 1 - soft_weight`).
- `score`: top-1 and top-5 accuracy on a dataset, through
  `keras_kd.evaluation`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import keras_kd
from keras_kd import evaluation, training
from keras_kd.datasets.imagenet import imagenet_class_indices

TEACHERS = ("resnet50", "resnet101", "resnet152", "mobilenetv2")
STUDENTS = ("mobilenetv2", "resnet50")
KINDS = ("teacher", "scratch", "kd", "peer", "cached")
DISTILLING_KINDS = ("kd", "peer", "cached")
IMAGENET_CLASSES = 1000

_RESNETS = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
}


def application(
    name: str,
    classes: int,
    image_size: int,
    *,
    width: float = 1.0,
    weights: str | None = None,
    model_name: str | None = None,
) -> keras.Model:
    """A `keras.applications` classifier on raw pixels, with logits out.

    Args:
        name: One of `TEACHERS` or `STUDENTS` (`"mobilenetv2"`, `"resnet50"`, ...).
        classes: Number of output logits.
        image_size: Input height and width.
        width: MobileNetV2's width multiplier (its `alpha`); ignored otherwise.
        weights: `None` (random initialization), `"imagenet"` or a Keras
            weights file, as `keras.applications` takes them.
        model_name: The returned model's name (default: `name`).

    Returns:
        A functional model: float32 RGB `(image_size, image_size, 3)` in
        `[0, 255]` -> the network's own preprocessing -> logits.

    Raises:
        ValueError: for an unknown `name`.

    Example:

    >>> student = application("mobilenetv2", 10, 32, width=0.35)
    >>> student.output_shape
    (None, 10)
    """
    shape = (image_size, image_size, 3)
    common = dict(
        include_top=True,
        weights=weights,
        input_shape=shape,
        classes=classes,
        classifier_activation=None,
    )
    if name == "mobilenetv2":
        base = keras.applications.MobileNetV2(alpha=width, **common)
        preprocess = keras.applications.mobilenet_v2.preprocess_input
    elif name in _RESNETS:
        base = _RESNETS[name](**common)
        preprocess = keras.applications.resnet.preprocess_input
    else:
        raise ValueError(
            f"Unknown network {name!r}; choose one of {sorted({*TEACHERS, *STUDENTS})}."
        )
    inputs = keras.Input(shape, name="pixels")
    return keras.Model(inputs, base(preprocess(inputs)), name=model_name or name)


def pretrained_teacher(
    name: str,
    weights: str,
    class_names: list[str],
    image_size: int,
    *,
    width: float = 1.0,
) -> tuple[keras.Model, str]:
    """A teacher whose weights come from outside the experiment.

    Args:
        name: The `keras.applications` network (one of `TEACHERS`).
        weights: `"imagenet"` (Keras' download, needs the internet once), a
            `.keras` model, a weights file saved from `application(name,
            len(class_names), ...)`, or a keras.applications ImageNet weights
            file (`.h5`, 1000 classes).
        class_names: The data's class names (ImageNet wnids for the 1000-class
            weights, whose logits of these classes are kept).
        image_size: Input height and width.
        width: MobileNetV2's width multiplier.

    Returns:
        `(teacher, origin)`: the model (logits of the data's classes) and a line
        saying where its weights come from.

    Raises:
        ValueError: when 1000-class weights meet classes that are not
            ImageNet wnids.
        FileNotFoundError: for a missing weights file.

    Example:

    >>> import os, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "teacher.weights.h5")
    >>> application("mobilenetv2", 3, 32, width=0.35).save_weights(path)
    >>> teacher, origin = pretrained_teacher(
    ...     "mobilenetv2", path, ["a", "b", "c"], 32, width=0.35)
    >>> teacher.output_shape, origin == f"weights from {path}"
    ((None, 3), True)
    >>> folder.cleanup()
    """
    if weights != "imagenet" and not Path(weights).is_file():
        raise FileNotFoundError(
            f"The teacher weights file {weights!r} does not exist. Give a .keras "
            "model, a .weights.h5 file, 'imagenet' or 'scratch'."
        )
    if weights.endswith(".keras"):
        return keras.saving.load_model(
            weights, compile=False
        ), f"loaded model {weights}"
    classes = len(class_names)
    if weights != "imagenet":
        teacher = application(
            name, classes, image_size, width=width, model_name="teacher"
        )
        try:
            teacher.load_weights(weights)
            return teacher, f"weights from {weights}"
        except ValueError:
            pass  # Not this experiment's teacher: a keras.applications file.
    origin = (
        "ImageNet weights (Keras download)"
        if weights == "imagenet"
        else f"ImageNet weights from {weights}"
    )
    full = application(
        name,
        IMAGENET_CLASSES,
        image_size,
        width=width,
        weights=weights,
        model_name="teacher_imagenet",
    )
    if classes == IMAGENET_CLASSES:
        return full, origin
    indices = imagenet_class_indices(class_names)
    logits = keras.ops.take(full.output, indices, axis=-1)
    teacher = keras.Model(full.input, logits, name="teacher")
    return teacher, f"{origin}, logits of the {classes} folder classes"


def set_batchnorm(model: keras.Model, momentum: float) -> str:
    """Sets every BatchNormalization momentum in `model` (0 keeps Keras' own).

    Args:
        model: The network about to be trained.
        momentum: In `[0, 1)`; 0 leaves the layers as Keras built them.

    Returns:
        One line for the log saying what was done.

    Example:

    >>> set_batchnorm(application("mobilenetv2", 3, 32, width=0.35), 0.99)
    'mobilenetv2: BatchNormalization momentum 0.99 in 52 layers (Keras built [0.999])'
    """
    before = training.batchnorm_momenta(model)
    if momentum == 0.0:
        return f"{model.name}: BatchNormalization momentum {before} (Keras' own)"
    count = training.set_batchnorm_momentum(model, momentum)
    return (
        f"{model.name}: BatchNormalization momentum {momentum} in {count} layers "
        f"(Keras built {before})"
    )


def sgd(
    peak_lr: float,
    total_steps: int,
    warmup_steps: int,
    *,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
) -> keras.optimizers.SGD:
    """SGD with momentum and decoupled weight decay on a warm-up + cosine schedule.

    Args:
        peak_lr: Learning rate after the warm-up.
        total_steps: Steps of the whole run.
        warmup_steps: Linear warm-up steps (capped at `total_steps - 1`).
        momentum: SGD momentum.
        weight_decay: Keras' decoupled weight decay (0: none).

    Returns:
        A `keras.optimizers.SGD`.

    Example:

    >>> sgd(0.1, total_steps=100, warmup_steps=10).momentum
    0.9
    """
    schedule = training.warmup_cosine(
        peak_lr, total_steps, min(warmup_steps, total_steps - 1)
    )
    return keras.optimizers.SGD(
        schedule, momentum=momentum, weight_decay=weight_decay or None
    )


def accuracy_metrics(classes: int) -> list[keras.metrics.Metric]:
    """Top-1 and top-5 (top-`classes` when fewer) metrics, named `top1`/`top5`."""
    return [
        keras.metrics.SparseCategoricalAccuracy(name="top1"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, classes), name="top5"),
    ]


def compile_run(
    kind: str,
    network: keras.Model,
    *,
    optimizer: keras.optimizers.Optimizer,
    teacher: keras.Model | None = None,
    temperature: float = 4.0,
    soft_weight: float = 0.9,
    jit_compile: bool = False,
    metrics: bool = True,
    distiller_options: Mapping[str, Any] | None = None,
) -> keras.Model:
    """The model that `fit` trains for one kind of run, compiled.

    Call it inside the strategy scope the network was built in.

    Args:
        kind: One of `KINDS`: `"teacher"` and `"scratch"` train `network` on
            hard labels; `"kd"` distils from `teacher` online with
            `keras_kd.Distiller`; `"cached"` is that Distiller fed cached teacher
            logits (`teacher` unused); `"peer"` is `keras.distillation.Distiller`,
            configured to compute the same loss as `"kd"`.
        network: The network being trained (the student, or the teacher).
        optimizer: Its optimizer.
        teacher: The frozen teacher (`"kd"`, `"peer"`).
        temperature: Softmax temperature of the soft targets.
        soft_weight: Weight of the soft term (the hard term gets
            `1 - soft_weight`).
        jit_compile: Compile the steps with XLA.
        metrics: Track `top1` and `top5` (of the network's logits).
        distiller_options: More `keras_kd.Distiller` arguments for the kinds
            that build one (`"kd"`, `"cached"`), e.g. `{"hints":
            [keras_kd.Hint(...)]}`.

    Returns:
        The compiled model to `fit` (`network` itself, or a distiller wrapping
        it).

    Raises:
        ValueError: for an unknown kind, `"kd"`/`"peer"` without a teacher, or
            `distiller_options` for a kind that builds no `keras_kd.Distiller`.

    Example:

    >>> student = application("mobilenetv2", 3, 32, width=0.35)
    >>> model = compile_run("scratch", student, optimizer=sgd(0.1, 100, 10))
    >>> model is student, type(model.optimizer).__name__
    (True, 'SGD')
    >>> teacher = application("mobilenetv2", 3, 32, width=0.5)
    >>> distiller = compile_run("kd", student, optimizer=sgd(0.1, 100, 10),
    ...                         teacher=teacher, temperature=2.0)
    >>> type(distiller).__name__, distiller.temperature
    ('Distiller', 2.0)
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown kind of run {kind!r}; choose one of {KINDS}.")
    if kind in ("kd", "peer") and teacher is None:
        raise ValueError(f"A {kind!r} run distils online: give its `teacher`.")
    if distiller_options and kind not in ("kd", "cached"):
        raise ValueError(
            f"A {kind!r} run builds no keras_kd.Distiller, so it takes no "
            f"`distiller_options` (got {sorted(distiller_options)}); use 'kd' or 'cached'."
        )
    hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    tracked = accuracy_metrics(int(network.output_shape[-1])) if metrics else None
    if kind in ("teacher", "scratch"):
        network.compile(optimizer, loss=hard, metrics=tracked, jit_compile=jit_compile)
        return network
    if kind in ("kd", "cached"):
        model = keras_kd.Distiller(
            student=network,
            teacher=teacher if kind == "kd" else None,
            temperature=temperature,
            soft_weight=soft_weight,
            **(distiller_options or {}),
        )
        model.compile(optimizer, metrics=tracked, jit_compile=jit_compile)
        return model
    from keras_kd.peers import keras_distillation_peer

    model = keras_distillation_peer(
        student=network, teacher=teacher, temperature=temperature, soft_weight=soft_weight,
        optimizer=optimizer, metrics=tracked, jit_compile=jit_compile,
    )
    # Backups need a built model; one call builds keras.distillation's.
    model(np.zeros((1, *network.input_shape[1:]), "float32"))
    return model


def score(network: keras.Model, dataset: tf.data.Dataset) -> dict[str, float]:
    """Top-1 and top-5 accuracy of `network` over one pass of `(x, y)` batches.

    Args:
        network: A model with logits out.
        dataset: Finite, deterministic batches of `(images, labels)` (such as
            `keras_kd.datasets.imagenet.eval_dataset`); it is read twice.

    Returns:
        `{"top1", "top5", "images"}`: accuracies in `[0, 1]` (top-5 is
        top-`classes` for fewer than five classes) and the number of images
        scored.

    Example:

    >>> student = application("mobilenetv2", 3, 32, width=0.35)
    >>> images = tf.random.uniform((6, 32, 32, 3), 0, 255, seed=0)
    >>> batches = tf.data.Dataset.from_tensor_slices((images, [0, 1, 2] * 2)).batch(4)
    >>> scores = score(student, batches)
    >>> scores["images"], 0.0 <= scores["top1"] <= scores["top5"] == 1.0  # 3 classes
    (6, True)
    """
    labels = np.concatenate([np.asarray(y) for _, y in dataset])
    logits = evaluation.predict_logits(network, dataset.map(lambda x, y: x))
    k = min(5, logits.shape[-1])
    return {
        "top1": evaluation.accuracy(logits, labels),
        "top5": evaluation.top_k_accuracy(logits, labels, k=k),
        "images": int(len(labels)),
    }

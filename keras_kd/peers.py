"""`keras.distillation.Distiller` configured to optimise keras-kd's objective.

Users who benchmark keras-kd against Keras' own `keras.distillation` need the
peer to compute the same loss, or the comparison measures a difference of
losses rather than of implementations. Configured by hand, the peer has traps
that fail silently:

- **Argument order.** `keras.distillation.Distiller(teacher, student, ...)`
  takes the teacher first; `keras_kd.Distiller` takes both by keyword.
  Swapped, the peer trains the teacher as the student without a word.
- **Which term the weight names.** The peer's `student_loss_weight` weighs the
  *hard* (label) loss; keras-kd's `soft_weight` weighs the soft term. The peer
  needs `student_loss_weight = 1 - soft_weight`.
- **The soft loss.** `LogitsDistillation`'s default string loss does not give
  the tempered KL divergence; with `loss=keras.losses.KLDivergence()` it
  does, T^2 factor included.
- **The hard loss.** A string `"sparse_categorical_crossentropy"` applies to
  logits as if they were probabilities; the peer needs
  `SparseCategoricalCrossentropy(from_logits=True)`.

`keras_distillation_peer` does all four, so that every comparison in keras-kd
(the Imagenette benchmark, the throughput benchmark, the parity tests) uses
one configuration.
"""

from __future__ import annotations

import keras

from keras_kd.distiller import validate_soft_weight
from keras_kd.losses import validate_temperature

__all__ = ["keras_distillation_peer"]


def keras_distillation_peer(
    *,
    student: keras.Model,
    teacher: keras.Model,
    temperature: float,
    soft_weight: float,
    optimizer: keras.optimizers.Optimizer | str | None = None,
    **compile_kwargs,
) -> keras.distillation.Distiller:
    """The `keras.distillation.Distiller` whose loss is `keras_kd.Distiller`'s.

    Given the same models, batch, `temperature` and `soft_weight`, its loss
    equals that of `keras_kd.Distiller(student=..., teacher=...,
    temperature=..., soft_weight=...)`:
    `soft_weight * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - soft_weight)
    * CE(y, s)`. Its teacher is frozen (`keras.distillation` sets
    `teacher.trainable = False`).

    Args:
        student: The model being trained; outputs logits.
        teacher: The frozen teacher; outputs logits. (The peer has no cached
            mode: it runs the teacher on every batch.)
        temperature: Softmax temperature of the soft targets, > 0.
        soft_weight: Weight in `[0, 1]` of the soft term, as in
            `keras_kd.Distiller`; the peer's `student_loss_weight` (its weight
            of the hard term) becomes `1 - soft_weight`.
        optimizer: When given, the peer is compiled with it and the hard loss
            `SparseCategoricalCrossentropy(from_logits=True)`; when `None` it
            is returned uncompiled (compile it with that loss yourself).
        **compile_kwargs: More `compile` arguments (`metrics`, `jit_compile`,
            `steps_per_execution`, ...), with `optimizer` only.

    Returns:
        The peer, a `keras.distillation.Distiller`.

    Raises:
        TypeError: when `student` or `teacher` is not a `keras.Model`, or
            compile arguments come without an `optimizer`.
        ValueError: for the same model as student and teacher, a `temperature`
            that is not a number > 0, a `soft_weight` outside `[0, 1]`, or a
            `loss` among `compile_kwargs` (the hard loss is fixed so that the
            objectives match).

    Example:

    >>> import keras
    >>> def net(seed):
    ...     keras.utils.set_random_seed(seed)
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> peer = keras_distillation_peer(
    ...     student=net(1), teacher=net(2), temperature=4.0, soft_weight=0.9,
    ...     optimizer="adam")
    >>> round(peer.student_loss_weight, 6)
    0.1
    """
    for argument, model in (("student", student), ("teacher", teacher)):
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"`{argument}` must be a keras.Model that outputs logits, got "
                f"{type(model).__name__}. (keras.distillation has no cached-teacher "
                "mode: pass the teacher model itself.)"
            )
    if student is teacher:
        raise ValueError(
            "`student` and `teacher` are the same model: pass the model to train "
            "as `student` and the trained one as `teacher`."
        )
    temperature = validate_temperature(temperature)
    soft_weight = validate_soft_weight(soft_weight)
    if "loss" in compile_kwargs:
        raise ValueError(
            "`loss` is set by keras_distillation_peer (the hard loss "
            "SparseCategoricalCrossentropy(from_logits=True), as keras_kd.Distiller's); "
            "remove it, or build keras.distillation.Distiller yourself."
        )
    if compile_kwargs and optimizer is None:
        raise TypeError(
            f"Compile arguments {sorted(compile_kwargs)} need an `optimizer`: pass "
            "optimizer=..., or compile the returned peer yourself."
        )
    peer = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=temperature, loss=keras.losses.KLDivergence()
        ),
        student_loss_weight=1.0 - soft_weight,
    )
    if optimizer is not None:
        peer.compile(
            optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            **compile_kwargs,
        )
    return peer

"""The one format of a batch that carries precomputed teacher outputs.

A batch whose `x` is `{"inputs": student_inputs, "teacher_logits": logits}`
trains a `keras_kd.Distiller` without running its teacher. An arithmetic-mean
ensemble, whose combined logits depend on the temperature, adds
`"teacher_temperature"` (one value per example), so the Distiller can refuse to
train at another temperature. Everything that builds or reads such a batch (the
teacher cache, the tuner's replay, the MNIST loader, the specialists) uses the
helpers here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

import tensorflow as tf

INPUTS = "inputs"
TEACHER_LOGITS = "teacher_logits"
TEACHER_TEMPERATURE = "teacher_temperature"
KEYS = (INPUTS, TEACHER_LOGITS, TEACHER_TEMPERATURE)


def make_batch(inputs, teacher_logits, temperature: float | None = None) -> dict:
    """The `x` of a batch that carries teacher outputs.

    Works on arrays and on tensors (inside `tf.data.Dataset.map` too).

    Args:
        inputs: The student's inputs (an array, a tensor or a structure of them).
        teacher_logits: Teacher outputs `(examples, classes)` for `inputs`, or
            `(examples, time, classes)` for sequence outputs (one vector of
            logits per token, as the student outputs them).
        temperature: The temperature an arithmetic-mean ensemble was combined
            at, or `None` when the logits do not depend on it.

    Returns:
        `{"inputs": inputs, "teacher_logits": teacher_logits}`, plus
        `"teacher_temperature"` (one float per example) when `temperature` is
        given.

    Example:

    >>> import numpy as np
    >>> x = make_batch(np.zeros((2, 3)), np.zeros((2, 10)), temperature=4.0)
    >>> sorted(x), x["teacher_temperature"].numpy().tolist()
    (['inputs', 'teacher_logits', 'teacher_temperature'], [4.0, 4.0])
    """
    batch = {INPUTS: inputs, TEACHER_LOGITS: teacher_logits}
    if temperature is not None:
        batch[TEACHER_TEMPERATURE] = tf.fill(
            tf.shape(teacher_logits)[:1], float(temperature)
        )
    return batch


def carries_teacher_outputs(x) -> bool:
    """Whether `x` is a batch in this format (see `split_batch` for the checks)."""
    return isinstance(x, Mapping) and TEACHER_LOGITS in x


def split_batch(x):
    """Splits `x` into student inputs, teacher outputs and their temperature.

    Args:
        x: The `x` of a batch: plain student inputs, or a dict made by
            `make_batch`.

    Returns:
        `(inputs, teacher_logits, temperature)`; the last two are `None` for
        plain inputs.

    Raises:
        ValueError: for a dict that mixes this format's keys with others, lacks
            `"inputs"` or `"teacher_logits"` beside the other keys, or has a key
            that looks like a misspelt one (`"teacher_logit"`), naming the keys.

    Example:

    >>> import numpy as np
    >>> batch = make_batch(np.zeros((2, 3)), np.ones((2, 4)))
    >>> inputs, logits, temperature = split_batch(batch)
    >>> logits.shape, temperature
    ((2, 4), None)
    """
    if not isinstance(x, Mapping):
        return x, None, None
    keys = [str(key) for key in x]
    unknown = [key for key in keys if key not in KEYS]
    # Without teacher logits, a key like "input" may be a student's input name.
    targets = KEYS if TEACHER_LOGITS in x else (TEACHER_LOGITS, TEACHER_TEMPERATURE)
    misspelt = {
        key: match[0]
        for key in unknown
        if (match := difflib.get_close_matches(key, targets, n=1, cutoff=0.8))
    }
    if misspelt:
        guesses = ", ".join(f"{key!r} (did you mean {right!r}?)" for key, right in misspelt.items())
        raise ValueError(
            f"The batch has the key(s) {guesses}; a batch that carries teacher outputs "
            f"is {{{INPUTS!r}: student inputs, {TEACHER_LOGITS!r}: logits}} (see "
            f"keras_kd.batch.make_batch). Got keys {sorted(keys)}."
        )
    if TEACHER_LOGITS not in x:
        if TEACHER_TEMPERATURE in x:
            raise ValueError(
                f"The batch has {TEACHER_TEMPERATURE!r} but no {TEACHER_LOGITS!r}; got "
                f"keys {sorted(keys)}. Build it with keras_kd.batch.make_batch."
            )
        return x, None, None  # a student with a dict input (maybe named "inputs")
    if INPUTS not in x or unknown:
        raise ValueError(
            f"A batch with {TEACHER_LOGITS!r} must hold the student's inputs under "
            f"{INPUTS!r} and nothing but {list(KEYS)}; got keys {sorted(keys)}. Put "
            "the student's inputs (a structure, if it takes several) under "
            f"{INPUTS!r}, e.g. keras_kd.batch.make_batch(inputs, logits)."
        )
    return x[INPUTS], x[TEACHER_LOGITS], x.get(TEACHER_TEMPERATURE)


__all__ = [
    "INPUTS",
    "KEYS",
    "TEACHER_LOGITS",
    "TEACHER_TEMPERATURE",
    "carries_teacher_outputs",
    "make_batch",
    "split_batch",
]

"""`SpecialistEnsemble`: generalist, specialists and the eq. 5 solver as one model."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from keras_kd.distiller import teacher_config
from keras_kd.specialists.clustering import ConfusableSubsets, validate_subsets
from keras_kd.specialists.combine import active_specialists, combine_distributions
from keras_kd.specialists.folding import membership_matrix


@keras.saving.register_keras_serializable(package="keras_kd")
class SpecialistEnsemble(keras.Model):
    """Generalist plus specialists, combined per example as in the paper's eq. 5.

    For each input: the generalist's `top_n` classes select the active
    specialists (`active_specialists`), and `combine_distributions` finds the
    full distribution that agrees best (in KL) with the generalist and them.
    Calling the model returns that distribution's probabilities. Specialists
    should already be dustbin-corrected (`train_specialist` does it).

    Args:
        generalist: Model giving logits `(batch, classes)`.
        specialists: One model per subset giving logits `(batch, len(subset)+1)`.
        subsets: Class ids of each specialist (a `ConfusableSubsets` or lists).
        top_n: How many of the generalist's top classes select specialists.
        steps: Gradient steps of the solver.
        step_size: Step size of the solver.
        name: Model name.

    Raises:
        ValueError: for a mismatch between specialists and subsets, or a bad
            `top_n`.

    Example:

    ```python
    ensemble = SpecialistEnsemble(generalist, specialists, clusters, top_n=3)
    probabilities = ensemble.predict(x_test)
    ensemble.save("ensemble.keras")
    ```
    """

    def __init__(
        self,
        generalist: keras.Model,
        specialists: Sequence[keras.Model],
        subsets: ConfusableSubsets | Sequence[Sequence[int]],
        *,
        top_n: int = 1,
        steps: int = 50,
        step_size: float = 1.0,
        name: str = "specialist_ensemble",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if isinstance(subsets, ConfusableSubsets):
            subsets = subsets.subsets
        self.subsets = [[int(c) for c in subset] for subset in subsets]
        specialists = list(specialists)
        if len(specialists) != len(self.subsets):
            raise ValueError(
                f"Got {len(specialists)} specialists for {len(self.subsets)} subsets; "
                "give one specialist per subset, in the same order."
            )
        num_classes = generalist.output_shape[-1]
        validate_subsets(self.subsets, num_classes)
        for m, (specialist, subset) in enumerate(zip(specialists, self.subsets)):
            if specialist.output_shape[-1] != len(subset) + 1:
                raise ValueError(
                    f"Specialist {m} ({specialist.name!r}) has "
                    f"{specialist.output_shape[-1]} outputs but its subset has "
                    f"{len(subset)} classes; it needs len(subset) + 1."
                )
        if not 1 <= int(top_n) <= num_classes:
            raise ValueError(f"`top_n` must be in [1, {num_classes}], got {top_n!r}.")
        self.generalist = generalist
        self.specialists = specialists
        self.num_classes = int(num_classes)
        self.top_n = int(top_n)
        self.steps = int(steps)
        self.step_size = float(step_size)
        self._membership = membership_matrix(self.subsets, self.num_classes)
        self.built = True

    def combine(self, inputs, training=False):
        """The pieces of the combination for a batch.

        Args:
            inputs: A batch of inputs.
            training: Passed to the sub-models.

        Returns:
            A dict with `generalist_logits` `(batch, classes)`, `active`
            `(batch, specialists)` and `log_q` `(batch, classes)`.
        """
        logits = tf.cast(self.generalist(inputs, training=training), tf.float32)
        active = active_specialists(logits, self._membership, self.top_n)
        specialist_log_probs = [
            tf.nn.log_softmax(tf.cast(s(inputs, training=training), tf.float32))
            for s in self.specialists
        ]
        log_q = combine_distributions(
            tf.nn.log_softmax(logits),
            specialist_log_probs,
            self.subsets,
            active,
            steps=self.steps,
            step_size=self.step_size,
        )
        return {"generalist_logits": logits, "active": active, "log_q": log_q}

    def call(self, inputs, training=False):
        """The combined class probabilities `(batch, classes)`."""
        return tf.exp(self.combine(inputs, training=training)["log_q"])

    def get_config(self):
        return {
            "name": self.name,
            "generalist": teacher_config(self.generalist),
            "specialists": [teacher_config(s) for s in self.specialists],
            "subsets": self.subsets,
            "top_n": self.top_n,
            "steps": self.steps,
            "step_size": self.step_size,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        generalist = keras.saving.deserialize_keras_object(
            teacher_config(config.pop("generalist")), custom_objects=custom_objects
        )
        specialists = [
            keras.saving.deserialize_keras_object(
                teacher_config(s), custom_objects=custom_objects
            )
            for s in config.pop("specialists")
        ]
        subsets = config.pop("subsets")
        return cls(generalist, specialists, subsets, **config)

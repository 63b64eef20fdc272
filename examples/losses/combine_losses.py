"""Distillation losses as objects: your own loss beside the paper's, each logged.

A `keras_kd.DistillationLoss` maps teacher and student logits to one value per
example; the Distiller weights, scales and averages it like the built-in
losses (sample weights, masks, replicas) and logs it as `<name>_loss`. Here a
hand-written loss (the cosine distance between the two softened
distributions) trains beside the paper's tempered KL on the 8x8 digits that
scikit-learn ships (no download), and the Distiller is saved and reloaded with
it.

    python examples/losses/combine_losses.py   # a few seconds
"""

import tempfile
from pathlib import Path

import keras
from sklearn.datasets import load_digits

import keras_kd


@keras.saving.register_keras_serializable(package="examples")
class SoftCosine(keras_kd.DistillationLoss):
    """1 - cosine similarity of the teacher's and student's softmax at `temperature`."""

    def __init__(self, temperature: float = 4.0, name: str | None = None):
        super().__init__(name=name)
        # Validated like the built-in losses'; an ensemble teacher combines at it.
        self.temperature = keras_kd.losses.validate_temperature(temperature)

    def call(self, teacher_logits, student_logits):
        p = keras.ops.softmax(teacher_logits / self.temperature, axis=-1)
        q = keras.ops.softmax(student_logits / self.temperature, axis=-1)
        cosine = keras.ops.sum(p * q, axis=-1) / (
            keras.ops.norm(p, axis=-1) * keras.ops.norm(q, axis=-1)
        )
        return 1.0 - cosine  # one value per example: the Distiller averages

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def main():
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]

    keras.utils.set_random_seed(0)
    teacher = keras_kd.models.mlp(64, (256,), 10)
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x_train, y_train, epochs=20, verbose=0)

    distiller = keras_kd.Distiller(
        student=keras_kd.models.mlp(64, (32,), 10),
        teacher=teacher,
        distillation_loss=[
            (keras_kd.TemperedKL(4.0), 1.0),  # the paper's T^2 KL
            (SoftCosine(4.0), 0.5),  # yours, with its weight
        ],
        soft_weight=0.9,
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(x_train, y_train, epochs=10, verbose=0).history
    for key in ("soft_loss", "tempered_kl_loss", "soft_cosine_loss", "hard_loss"):
        print(f"{key:>17}: {history[key][0]:.4f} -> {history[key][-1]:.4f}")
    logs = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)
    print(f"student test accuracy {logs['accuracy']:.4f}")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "distiller.keras"
        distiller.save(path)
        reloaded = keras.models.load_model(path)
    print("reloaded with", [type(loss).__name__ for loss, _ in reloaded.distillation_losses])


if __name__ == "__main__":
    main()

"""Hints (FitNets, Romero et al. 2015) on MNIST: KD alone versus KD + a hint.

A convolutional teacher (32 and 64 channels) and a small student (8 and 16
channels). The student is distilled twice from the same start: with the soft
targets alone, and with the soft targets plus a hint that trains its second
convolution's feature map (11 x 11 x 16) to match the teacher's (11 x 11 x 64)
through a learned 1x1 convolution. The adapter lives in the Distiller: the
student that is exported is the same network in both runs.

    python examples/hints/distill_with_hints.py --data-dir ../shared/data   # ~10 min, 2 CPUs
    python examples/hints/distill_with_hints.py --quick                      # ~1 min
"""

import argparse

import keras
import numpy as np

import keras_kd
from keras_kd.datasets.mnist import load_mnist
from keras_kd.evaluation import error_count, predict_logits


def convnet(widths, name):
    """28x28 digits -> two 3x3 convolutions named conv1/conv2 (with pooling) -> 10 logits."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(widths[0], 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(widths[1], 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="logits"),
        ],
        name=name,
    )


def distil(teacher, x, y, args, hints):
    """A new student (same seed every time) distilled with the given hints."""
    keras.utils.set_random_seed(args.seed)
    student = convnet((8, 16), "student")
    distiller = keras_kd.Distiller(
        student=student,
        teacher=teacher,
        temperature=args.temperature,
        soft_weight=args.soft_weight,
        hints=hints,
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    history = distiller.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=2)
    return student, history.history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="MNIST folder (default $KERAS_KD_DATA_DIR)")
    parser.add_argument("--quick", action="store_true", help="2,000 images, 1 epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--soft-weight", type=float, default=0.9)
    parser.add_argument("--hint-weight", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    (x, y), (x_test, y_test) = load_mnist(args.data_dir)
    x, x_test = x[..., None].astype("float32") / 255.0, x_test[..., None].astype("float32") / 255.0
    if args.quick:
        x, y, x_test, y_test = x[:2000], y[:2000], x_test[:1000], y_test[:1000]
        args.epochs = args.teacher_epochs = 1

    keras.utils.set_random_seed(args.seed)
    teacher = convnet((32, 64), "teacher")
    teacher.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    teacher.fit(x, y, batch_size=args.batch_size, epochs=args.teacher_epochs, verbose=2)

    hint = keras_kd.Hint(student_layer="conv2", teacher_layer="conv2", weight=args.hint_weight)
    results = {}
    for label, hints in (("KD alone", None), ("KD + hint", [hint])):
        student, logs = distil(teacher, x, y, args, hints)
        results[label] = (student, logs)
    print(f"\ntest errors of {len(y_test)} images")
    print(f"  teacher    {error_count(predict_logits(teacher, x_test), y_test)}")
    for label, (student, logs) in results.items():
        errors = error_count(predict_logits(student, x_test), y_test)
        hint_loss = logs.get("hint_conv2_loss", [np.nan])[-1]
        print(f"  {label:10} {errors}   (last epoch hint loss {hint_loss:.4f})")
    plain, hinted = results["KD alone"][0], results["KD + hint"][0]
    print(f"student parameters: KD alone {plain.count_params()}, KD + hint "
          f"{hinted.count_params()} (the adapter stays in the Distiller)")


if __name__ == "__main__":
    main()

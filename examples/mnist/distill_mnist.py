"""Section 3 of Hinton, Vinyals and Dean (2015) on MNIST, in one page of keras-kd.

A 784-1200-1200-10 teacher, regularized with dropout and max-norm weights and
trained on images jittered by up to two pixels; a 784-800-800-10 student trained
on hard labels from scratch; and the same student distilled from the teacher at
T = 20, on the unjittered images. Each model is kept in a `keras_kd.runs`
folder: a rerun with the same options reuses it, other options are refused.

The whole experiment (every part of section 3, seeds, choices on held-out
images, resume mid-run, learning curves) is `keras-kd mnist`; this script is the
recipe itself, to copy and change.

    python examples/mnist/distill_mnist.py --data-dir ../shared/data   # ~30 min, 2 CPUs
    python examples/mnist/distill_mnist.py --quick                      # ~1 min
"""

import argparse
import math

import keras

import keras_kd
from keras_kd.datasets.mnist import load_mnist, mnist_dataset
from keras_kd.evaluation import error_count, predict_logits
from keras_kd.models import mlp
from keras_kd.runs import RunFolder

IMAGE = (28, 28)


def adam(args, epochs: int, examples: int) -> keras.optimizers.Optimizer:
    """Adam at `--learning-rate`, cosine-decayed to 1% of it over the run."""
    steps = epochs * math.ceil(examples / args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        args.learning_rate, decay_steps=steps, alpha=0.01
    )
    return keras.optimizers.Adam(schedule)


def train_teacher(x, y, args) -> keras.Model:
    keras.utils.set_random_seed(args.seed)
    # Dropout (inputs 0.1, hidden 0.3) and max-norm weights regularize the teacher.
    teacher = mlp(IMAGE, (1200, 1200), 10, dropout=0.3, input_dropout=0.1, max_norm=3.5)
    teacher.compile(
        adam(args, args.teacher_epochs, len(x)),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    jittered = mnist_dataset(
        x, y, batch_size=args.batch_size, shuffle=True, jitter=True, seed=args.seed
    )
    teacher.fit(jittered, epochs=args.teacher_epochs, verbose=2)
    return teacher


def train_student(x, y, args, teacher_logits=None) -> keras.Model:
    """The 800-800 student: from scratch, or distilled from `teacher_logits`."""
    keras.utils.set_random_seed(args.seed)
    student = mlp(IMAGE, (800, 800), 10, name="student")
    optimizer = adam(args, args.student_epochs, len(x))
    if teacher_logits is None:
        trainer = student
        trainer.compile(
            optimizer,
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    else:
        # The teacher's logits travel with each batch, so the teacher is not rerun.
        trainer = keras_kd.Distiller(
            student=student, temperature=args.temperature, soft_weight=args.soft_weight
        )
        trainer.compile(optimizer, metrics=["accuracy"])
    batches = mnist_dataset(
        x,
        y,
        batch_size=args.batch_size,
        shuffle=True,
        teacher_logits=teacher_logits,
        seed=args.seed,
    )
    trainer.fit(batches, epochs=args.student_epochs, verbose=2)
    return student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="MNIST folder (default $KERAS_KD_DATA_DIR)")
    parser.add_argument("--out", default="runs/mnist-example", help="run folder")
    parser.add_argument("--quick", action="store_true", help="1,000 images, short")
    parser.add_argument("--teacher-epochs", type=int, default=45)
    parser.add_argument("--student-epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=20.0)
    parser.add_argument("--soft-weight", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    (x, y), (x_test, y_test) = load_mnist(args.data_dir)
    if args.quick:
        x, y, x_test, y_test = x[:1000], y[:1000], x_test[:2000], y_test[:2000]
        args.teacher_epochs, args.student_epochs, args.batch_size = 24, 15, 50
        args.out += "-quick"
    # What shaped each model: a rerun reuses it only if all of it is unchanged.
    common = {"quick": args.quick, "batch_size": args.batch_size, "seed": args.seed}
    common["learning_rate"] = args.learning_rate
    teacher_settings = {**common, "epochs": args.teacher_epochs}
    student_settings = {**common, "epochs": args.student_epochs}
    distilled_settings = {
        **student_settings,
        "temperature": args.temperature,
        "soft_weight": args.soft_weight,
        "teacher": teacher_settings,
    }

    with RunFolder(args.out) as runs:
        teacher, _ = runs.model("teacher", teacher_settings).get_or_train(
            lambda run: (train_teacher(x, y, args), {})
        )
        logits = predict_logits(teacher, mnist_dataset(x, batch_size=1000))
        scratch, _ = runs.model("scratch", student_settings).get_or_train(
            lambda run: (train_student(x, y, args), {})
        )
        distilled, _ = runs.model("distilled", distilled_settings).get_or_train(
            lambda run: (train_student(x, y, args, teacher_logits=logits), {})
        )

    test = mnist_dataset(x_test, batch_size=1000)
    paper = {"teacher": 67, "scratch": 146, "distilled": 74}
    print(f"Test errors out of {len(y_test):,} (the paper's out of 10,000):")
    for name, model in (
        ("teacher", teacher),
        ("scratch", scratch),
        ("distilled", distilled),
    ):
        errors = error_count(predict_logits(model, test), y_test)
        print(f"  {name:9s} {errors:5d}   (paper {paper[name]})")


if __name__ == "__main__":
    main()

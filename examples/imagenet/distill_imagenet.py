"""Distil a ResNet-50 teacher into a MobileNetV2 student on an ImageNet-style folder.

One page of the public API doing the recipe of `keras-kd imagenet`: SGD with
momentum and weight decay, a linear warm-up then cosine decay, random-resized
crops, BatchNormalization momentum 0.99, T = 4 and a soft weight of 0.9. Copy it
and change what you need. The teacher is trained here first (or loaded with
`--teacher model.keras`); training resumes from `--out/backup-*` after an
interruption.

    python examples/imagenet/distill_imagenet.py --data-dir ../shared/data/imagenette \\
        --image-size 112 --teacher-epochs 16 --epochs 8 --student-width 0.5

`keras-kd imagenet` runs the same recipe as a managed experiment: the
from-scratch baseline, several seeds, the teacher-output cache, the
keras.distillation peer, several GPUs or hosts, and a run folder that reuses
finished models (`keras-kd imagenet --help`, examples/imagenet/README.md).
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd import training  # noqa: E402
from keras_kd.datasets import imagenet  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="train/<class>/ and val/<class>/ folders")
    parser.add_argument("--teacher", help="a trained teacher (.keras); default: train")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--teacher-epochs", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--student-width", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--soft-weight", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/distill_imagenet")
    return parser.parse_args()


def classifier(application, preprocess, size, classes, name, **kwargs):
    """A keras.applications network on [0, 255] RGB pixels, logits out."""
    pixels = keras.Input((size, size, 3))
    network = application(weights=None, input_shape=(size, size, 3), classes=classes,
                          classifier_activation=None, **kwargs)  # fmt: skip
    model = keras.Model(pixels, network(preprocess(pixels)), name=name)
    # Keras builds MobileNetV2 with momentum 0.999: too slow for short schedules.
    training.set_batchnorm_momentum(model, 0.99)
    return model


def fit(model, data, args, epochs, backup_dir, val):
    """Trains `model` (already compiled) with a stream that can resume mid-epoch."""
    steps = data.train.num_examples // args.batch_size
    training.fit_resumable(
        model,
        lambda step: imagenet.train_dataset(
            data,
            image_size=args.image_size,
            global_batch_size=args.batch_size,
            seed=args.seed,
            start_step=step,
        ),
        epochs=epochs,
        steps_per_epoch=steps,
        backup_dir=backup_dir,
        save_freq=200,
        validation_data=val,
        verbose=2,
    )


def optimizer(data, args, epochs):
    steps = epochs * (data.train.num_examples // args.batch_size)
    warmup = data.train.num_examples // args.batch_size  # one epoch
    lr = 0.1 * args.batch_size / 256  # 0.1 per 256 images, the linear rule
    schedule = training.warmup_cosine(lr, steps, min(warmup, steps - 1))
    return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=1e-4)


def metrics(classes):
    return [
        keras.metrics.SparseCategoricalAccuracy(name="top1"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, classes), name="top5"),
    ]


def main():
    args = parse_args()
    out = Path(args.out)
    keras.utils.set_random_seed(args.seed)
    data = imagenet.load_imagenet(args.data_dir, source="folder")
    classes, size = data.num_classes, args.image_size
    val = imagenet.eval_dataset(data, image_size=size, batch_size=args.batch_size)
    hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    if args.teacher:
        teacher = keras.models.load_model(args.teacher)
    else:
        teacher = classifier(
            keras.applications.ResNet50,
            keras.applications.resnet.preprocess_input,
            size,
            classes,
            "teacher",
        )
        teacher.compile(
            optimizer(data, args, args.teacher_epochs),
            loss=hard,
            metrics=metrics(classes),
        )
        fit(teacher, data, args, args.teacher_epochs, out / "backup-teacher", val)
        teacher.save(out / "teacher.keras")
    teacher.trainable = False

    student = classifier(
        keras.applications.MobileNetV2,
        keras.applications.mobilenet_v2.preprocess_input,
        size,
        classes,
        "student",
        alpha=args.student_width,
    )
    distiller = keras_kd.Distiller(
        student=student,
        teacher=teacher,
        temperature=args.temperature,
        soft_weight=args.soft_weight,  # the hard labels get 1 - soft_weight
    )
    distiller.compile(optimizer(data, args, args.epochs), metrics=metrics(classes))
    fit(distiller, data, args, args.epochs, out / "backup-student", val)
    student.save(out / "student.keras")

    for name, model in (("teacher", teacher), ("student", student)):
        model.compile(loss=hard, metrics=metrics(classes))
        scores = model.evaluate(val, verbose=0, return_dict=True)
        print(f"{name}: top-1 {scores['top1']:.2%}, top-5 {scores['top5']:.2%}")
    print(f"saved {out / 'student.keras'}")


if __name__ == "__main__":
    main()

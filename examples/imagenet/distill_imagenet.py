"""Distil a ResNet-50 teacher into a MobileNetV2 student on ImageNet (or Imagenette).

The recipe follows MMRazor's ImageNet knowledge-distillation runs: SGD with
momentum, a cosine learning-rate schedule after a linear warm-up, no label
smoothing, the student trained from scratch; the temperature `T` and the weight
of the soft-target term (`--alpha`) are flags. Batch size is per replica and the
learning rate follows the linear scaling rule (`--base-lr` is for a global batch
of 256). It runs on one device, on every GPU of a host (`MirroredStrategy`), or on
several hosts (`MultiWorkerMirroredStrategy`, from `TF_CONFIG`); see
examples/imagenet/README.md.

Run `keras-kd imagenet --help` (or this script with `--help`) for the flags. A
run writes into `--out-dir`: `results.md` and `results.json` (top-1/top-5 of
teacher and student, wall time), `history.json`, TensorBoard logs in
`tensorboard/`, the weights (`teacher.weights.h5`, `student.keras`), and backups
in `backup/` from which the same command resumes after an interruption.

Example (Imagenette on a CPU, a few minutes per epoch):

    keras-kd imagenet --data-dir ../shared/data/imagenette --epochs 6 \\
        --teacher-weights scratch --teacher-epochs 6 --image-size 112
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd import distribute, reports, training  # noqa: E402
from keras_kd.datasets import imagenet  # noqa: E402

TEACHERS = ("resnet50", "resnet101", "resnet152", "mobilenetv2")
STUDENTS = ("mobilenetv2", "resnet50")
KERAS_MOBILENETV2_BN_MOMENTUM = 0.999


def build_parser() -> argparse.ArgumentParser:
    """The example's command-line flags."""
    parser = argparse.ArgumentParser(
        prog="keras-kd imagenet",
        description="Distil a keras.applications teacher (ResNet-50) into a "
        "MobileNetV2 student on ImageNet or an ImageNet-style folder.",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data-dir",
        default=None,
        help="ImageNet-style folder (train/<wnid>/, val/<wnid>/) or "
        "tfds data folder; default: $KERAS_KD_DATA_DIR",
    )
    data.add_argument(
        "--source",
        choices=("auto", "folder", "tfds"),
        default="auto",
        help="folder layout or tensorflow-datasets imagenet2012",
    )
    data.add_argument(
        "--image-size",
        type=int,
        default=112,
        help="training/eval crop size (224 for the ImageNet recipe; 112 suits CPUs)",
    )
    data.add_argument(
        "--cache-mb",
        type=int,
        default=512,
        help="hold encoded training files / cropped eval images in "
        "memory up to this size (0: never)",
    )
    models = parser.add_argument_group("models")
    models.add_argument("--teacher", choices=TEACHERS, default="resnet50")
    models.add_argument(
        "--teacher-width",
        type=float,
        default=1.0,
        help="width multiplier when --teacher mobilenetv2",
    )
    models.add_argument(
        "--teacher-weights",
        default="scratch",
        help="'scratch' (train the teacher first, --teacher-epochs), "
        "'imagenet' (Keras download, needs the internet), or a local "
        "file: .keras model or .weights.h5/.h5 weights",
    )
    models.add_argument(
        "--teacher-epochs",
        type=int,
        default=None,
        help="epochs to train a scratch teacher (default: --epochs)",
    )
    models.add_argument("--student", choices=STUDENTS, default="mobilenetv2")
    models.add_argument(
        "--student-width",
        type=float,
        default=1.0,
        help="MobileNetV2 width multiplier (alpha) of the student",
    )
    models.add_argument(
        "--mode",
        choices=("distill", "scratch"),
        default="distill",
        help="distil the student, or train it on hard labels only (the baseline)",
    )
    models.add_argument(
        "--bn-momentum",
        type=float,
        default=0.99,
        help="BatchNormalization momentum of models trained here; "
        "Keras' MobileNetV2 uses 0.999, whose moving statistics lag "
        "on short runs (eval accuracy near chance); 0 keeps Keras'",
    )
    recipe = parser.add_argument_group("recipe")
    recipe.add_argument("--epochs", type=int, default=6)
    recipe.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="default: training images // global batch",
    )
    recipe.add_argument("--batch-size", type=int, default=64, help="per replica")
    recipe.add_argument(
        "--base-lr",
        type=float,
        default=0.1,
        help="learning rate for a global batch of 256 (linear rule)",
    )
    recipe.add_argument("--warmup-epochs", type=float, default=1.0)
    recipe.add_argument("--momentum", type=float, default=0.9)
    recipe.add_argument(
        "--weight-decay",
        type=float,
        default=1e-4,
        help="decoupled weight decay of Keras' SGD",
    )
    recipe.add_argument("--temperature", type=float, default=4.0)
    recipe.add_argument(
        "--alpha",
        type=float,
        default=0.9,
        help="weight of the soft-target term (1 - alpha: hard labels)",
    )
    recipe.add_argument("--seed", type=int, default=0)
    system = parser.add_argument_group("system")
    system.add_argument("--strategy", choices=distribute.STRATEGIES, default="auto")
    system.add_argument("--precision", choices=distribute.PRECISIONS, default="float32")
    system.add_argument("--xla", action="store_true", help="jit_compile the steps")
    system.add_argument(
        "--deterministic",
        action="store_true",
        help="TensorFlow's enable_op_determinism (bitwise repeatable "
        "GPU runs and resumes; slower)",
    )
    system.add_argument(
        "--out-dir",
        default="runs/imagenet",
        help="results, logs, weights and backups (rerun the same command to resume)",
    )
    system.add_argument(
        "--save-freq",
        type=int,
        default=500,
        help="back up every this many steps (and each epoch end)",
    )
    system.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="Keras progress: 1 bars, 2 a line per epoch",
    )
    return parser


def _check_args(args) -> None:
    if not 0.0 <= args.bn_momentum < 1.0:
        raise ValueError(
            f"--bn-momentum must be in [0, 1) (0 keeps Keras' value), got "
            f"{args.bn_momentum}."
        )
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}.")
    if args.image_size < 32:
        raise ValueError(
            f"--image-size must be >= 32 for keras.applications models, got "
            f"{args.image_size}."
        )
    weights = args.teacher_weights
    if weights not in ("scratch", "imagenet") and not Path(weights).is_file():
        raise FileNotFoundError(
            f"--teacher-weights {weights!r} is neither 'scratch', 'imagenet' nor an "
            "existing file. Give a .keras or .weights.h5 file of the teacher."
        )


# --------------------------------------------------------------------- models


def imagenet_class_indices(class_names):
    """ImageNet-1k logit index of each wnid in `class_names` (sorted-wnid order)."""
    import tensorflow_datasets as tfds

    labels = Path(tfds.__file__).parent / "datasets" / "imagenet2012" / "labels.txt"
    wnids = labels.read_text().split()
    index = {wnid: i for i, wnid in enumerate(wnids)}
    missing = [name for name in class_names if name not in index]
    if missing:
        raise ValueError(
            f"--teacher-weights imagenet needs ImageNet wnids as class folders; "
            f"{missing[:3]} are not ImageNet-1k classes. Train the teacher here "
            "(--teacher-weights scratch) instead."
        )
    return [index[name] for name in class_names]


def _application(
    name: str,
    num_classes: int,
    image_size: int,
    width: float,
    weights=None,
    model_name: str | None = None,
):
    shape = (image_size, image_size, 3)
    common = dict(
        include_top=True,
        weights=weights,
        input_shape=shape,
        classes=num_classes,
        classifier_activation=None,
    )
    if name == "mobilenetv2":
        base = keras.applications.MobileNetV2(alpha=width, **common)
        preprocess = keras.applications.mobilenet_v2.preprocess_input
    else:
        constructor = {
            "resnet50": keras.applications.ResNet50,
            "resnet101": keras.applications.ResNet101,
            "resnet152": keras.applications.ResNet152,
        }[name]
        base = constructor(**common)
        preprocess = keras.applications.resnet.preprocess_input
    inputs = keras.Input(shape, name="pixels")  # float32 RGB in [0, 255]
    outputs = base(preprocess(inputs))
    return keras.Model(inputs, outputs, name=model_name or name)


def _imagenet_teacher(args, num_classes, class_names, weights, origin):
    """A 1000-class ImageNet teacher, restricted to the folder's classes if fewer."""
    teacher = _application(
        args.teacher,
        1000,
        args.image_size,
        args.teacher_width,
        weights=weights,
        model_name="teacher_imagenet",
    )
    if num_classes == 1000:
        return teacher, origin
    indices = imagenet_class_indices(class_names)
    logits = keras.ops.take(teacher.output, indices, axis=-1)
    subset = keras.Model(teacher.input, logits, name="teacher")
    return subset, f"{origin}, logits of the {num_classes} folder classes"


def build_teacher(args, num_classes, class_names):
    """The teacher model (logits) and a line saying where its weights come from.

    `--teacher-weights` is 'scratch' (random init, trained by this script),
    'imagenet' (Keras' download, needs the internet once), a `.keras` model, a
    `.weights.h5` file saved by this script (`teacher.weights.h5`), or a
    keras.applications ImageNet weights file (`.h5`, 1000 classes; with fewer
    folder classes the teacher's logits of those wnids are used).
    """
    weights = args.teacher_weights
    if weights == "imagenet":
        return _imagenet_teacher(
            args,
            num_classes,
            class_names,
            "imagenet",
            "ImageNet weights (Keras download)",
        )
    if weights.endswith(".keras"):
        teacher = keras.saving.load_model(weights, compile=False)
        return teacher, f"loaded model {weights}"
    teacher = _application(
        args.teacher,
        num_classes,
        args.image_size,
        args.teacher_width,
        model_name="teacher",
    )
    if weights == "scratch":
        return teacher, "trained from scratch here"
    try:
        teacher.load_weights(weights)
    except ValueError:
        # Not saved from this script's teacher: a keras.applications file.
        return _imagenet_teacher(
            args, num_classes, class_names, weights, f"ImageNet weights from {weights}"
        )
    return teacher, f"weights from {weights}"


def build_student(args, num_classes):
    """The student: keras.applications model from scratch, logits out."""
    width = args.student_width if args.student == "mobilenetv2" else 1.0
    return _application(
        args.student, num_classes, args.image_size, width, model_name="student"
    )


def _set_bn(model, momentum: float) -> str:
    before = training.batchnorm_momenta(model)
    if momentum == 0.0:
        return f"{model.name}: BatchNormalization momentum {before} (Keras' own)"
    count = training.set_batchnorm_momentum(model, momentum)
    return (
        f"{model.name}: BatchNormalization momentum {momentum} in {count} layers "
        f"(Keras built {before})"
    )


# --------------------------------------------------------------------- training


class EpochTimer(keras.callbacks.Callback):
    """Records the training time of each epoch, validation excluded."""

    def __init__(self):
        super().__init__()
        self.train_seconds: list[float] = []
        self.steps = 0
        self._start = None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def _stop(self):
        if self._start is not None:
            self.train_seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_test_begin(self, logs=None):
        self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()


def _optimizer(setup, total_steps, warmup_steps, args):
    schedule = training.warmup_cosine(setup.learning_rate, total_steps, warmup_steps)
    return keras.optimizers.SGD(
        schedule, momentum=args.momentum, weight_decay=args.weight_decay or None
    )


def _metrics(num_classes):
    k = min(5, num_classes)
    return [
        keras.metrics.SparseCategoricalAccuracy(name="top1"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=k, name="top5"),
    ]


def _train_phase(
    phase, model, args, setup, data, steps_per_epoch, epochs, counter, val, out_dir
):
    """Trains `model` resumably.

    Returns:
        (history records, training seconds, training images/s) of the epochs this
        call ran (a resumed run times only what it ran).
    """

    def make_dataset(start_step):
        fn = functools.partial(
            imagenet.train_dataset,
            data,
            image_size=args.image_size,
            global_batch_size=setup.global_batch_size,
            seed=args.seed,
            start_step=start_step,
            counter=counter,
            cache_bytes=args.cache_mb * 2**20,
        )
        return distribute.distributed_dataset(
            setup.strategy, lambda context: fn(input_context=context)
        )

    timer = EpochTimer()
    callbacks = [timer]
    if setup.is_chief:
        callbacks.append(
            keras.callbacks.TensorBoard(
                str(out_dir / "tensorboard" / phase),
                write_graph=False,
                update_freq=max(steps_per_epoch // 10, 1),
            )
        )
    backup = out_dir / "backup" / phase / f"worker-{setup.worker_index}"
    records = training.fit_resumable(
        model,
        make_dataset,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        backup_dir=backup,
        save_freq=args.save_freq,
        callbacks=callbacks,
        validation_data=val,
        verbose=args.verbose if setup.is_chief else 2,
    )
    for record, seconds in zip(records, timer.train_seconds, strict=False):
        record["train_seconds"] = seconds
    seconds = sum(timer.train_seconds)
    rate = timer.steps * setup.global_batch_size / seconds if seconds else float("nan")
    return records, seconds, rate


def run(args) -> list[dict]:
    """Runs the example with parsed `args`; returns the rows of the results table."""
    _check_args(args)
    # The strategy must exist before any other TensorFlow op runs.
    previous_policy = keras.mixed_precision.dtype_policy().name
    setup = distribute.configure(
        args.strategy,
        precision=args.precision,
        jit_compile=args.xla,
        per_replica_batch_size=args.batch_size,
        base_lr=args.base_lr,
    )
    try:
        return _run(args, setup)
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)


def _run(args, setup) -> list[dict]:
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    say = print if setup.is_chief else (lambda *a, **k: None)
    say(f"[imagenet] {setup.describe()}")
    data = imagenet.load_imagenet(args.data_dir, source=args.source)
    train_size = data.train.num_examples
    steps = args.steps_per_epoch
    if steps is None:
        if train_size is None:
            raise ValueError(
                "The tfds metadata does not give the training-set size; "
                "pass --steps-per-epoch."
            )
        steps = train_size // setup.global_batch_size
    if steps < 1:
        raise ValueError(
            f"The global batch ({setup.global_batch_size}) is larger than the "
            f"{train_size} training images; lower --batch-size."
        )
    say(
        f"[imagenet] data: {data.source}, {data.num_classes} classes, "
        f"{train_size} train / {data.val.num_examples} val images, "
        f"{args.image_size}px, {steps} steps/epoch"
    )
    say(
        "[imagenet] recipe: SGD momentum "
        f"{args.momentum}, weight decay {args.weight_decay}, cosine schedule after "
        f"{args.warmup_epochs} warm-up epoch(s), label smoothing off, "
        f"T={args.temperature}, alpha={args.alpha}"
    )
    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    say(
        f"[imagenet] seed {args.seed}, op determinism "
        f"{'on' if args.deterministic else 'off'}"
    )
    train_counter = imagenet.DecodeCounter()
    val_counter = imagenet.DecodeCounter()
    val = imagenet.eval_dataset(
        data,
        image_size=args.image_size,
        batch_size=setup.global_batch_size,
        counter=val_counter,
        cache_bytes=args.cache_mb * 2**20,
    )
    warmup = int(round(args.warmup_epochs * steps))
    rows, history = [], {}

    teacher = None
    if args.mode == "distill":
        teacher = _prepare_teacher(
            args,
            setup,
            data,
            steps,
            warmup,
            train_counter,
            val,
            out_dir,
            history,
            rows,
            say,
        )

    with setup.strategy.scope():
        student = build_student(args, data.num_classes)
        say(
            f"[imagenet] student {args.student} (width {args.student_width}), "
            f"from scratch, mode {args.mode}; {_set_bn(student, args.bn_momentum)}"
        )
        optimizer = _optimizer(
            setup, args.epochs * steps, min(warmup, args.epochs * steps - 1), args
        )
        if args.mode == "distill":
            model = keras_kd.Distiller(
                student=student, teacher=teacher, temperature=args.temperature, soft_weight=args.alpha
            )
            model.compile(
                optimizer=optimizer,
                metrics=_metrics(data.num_classes),
                jit_compile=args.xla,
            )
        else:
            model = student
            model.compile(
                optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=_metrics(data.num_classes),
                jit_compile=args.xla,
            )
    phase = f"student-{args.mode}"
    records, seconds, rate = _train_phase(
        phase, model, args, setup, data, steps, args.epochs, train_counter, val, out_dir
    )
    history[phase] = records
    scores = model.evaluate(val, verbose=0, return_dict=True)
    name = f"student {args.student} x{args.student_width} ({args.mode})"
    rows.append(_row(name, scores, args.epochs, seconds, rate))

    say(
        f"[imagenet] undecodable images skipped: {train_counter.skipped} in training "
        f"(counted each epoch), {val_counter.skipped} of "
        f"{val_counter.attempted} in validation"
    )
    if setup.is_chief:
        student.save(str(out_dir / "student.keras"))
        table = reports.markdown_table(rows)
        (out_dir / "results.md").write_text(
            f"# {' '.join(sys.argv[1:]) or 'distill_imagenet'}\n\n{setup.describe()}\n\n"
            + table
        )
        reports.write_json(
            out_dir / "results.json",
            {
                "rows": rows,
                "setup": setup.describe(),
                "args": vars(args),
                "skipped_train_decodes": train_counter.skipped,
                "skipped_val_images": val_counter.skipped,
            },
        )
        reports.write_json(out_dir / "history.json", history)
        print(table, end="")
        print(
            f"[imagenet] wrote {out_dir}/results.md, TensorBoard logs in "
            f"{out_dir}/tensorboard"
        )
    return rows


def _prepare_teacher(
    args, setup, data, steps, warmup, counter, val, out_dir, history, rows, say
):
    """Builds (and, for 'scratch', trains) the teacher; adds its row to `rows`."""
    with setup.strategy.scope():
        teacher, origin = build_teacher(args, data.num_classes, data.class_names)
    epochs, seconds, rate = 0, float("nan"), float("nan")
    if args.teacher_weights == "scratch":
        say(
            f"[imagenet] teacher {args.teacher}: {origin}; "
            f"{_set_bn(teacher, args.bn_momentum)}"
        )
        epochs = args.teacher_epochs or args.epochs
        with setup.strategy.scope():
            teacher.compile(
                optimizer=_optimizer(
                    setup, epochs * steps, min(warmup, epochs * steps - 1), args
                ),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=_metrics(data.num_classes),
                jit_compile=args.xla,
            )
        history["teacher"], seconds, rate = _train_phase(
            "teacher", teacher, args, setup, data, steps, epochs, counter, val, out_dir
        )
        if setup.is_chief:
            teacher.save_weights(str(out_dir / "teacher.weights.h5"))
    else:
        say(f"[imagenet] teacher {args.teacher}: {origin}")
        with setup.strategy.scope():
            teacher.compile(
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=_metrics(data.num_classes),
                jit_compile=args.xla,
            )
    scores = teacher.evaluate(val, verbose=0, return_dict=True)
    rows.append(_row(f"teacher {args.teacher}", scores, epochs, seconds, rate))
    return teacher


def _row(model, scores, epochs, seconds, rate):
    return {
        "model": model,
        "top1": float(scores["top1"]),
        "top5": float(scores["top5"]),
        "epochs": epochs,
        "train_minutes": seconds / 60,
        "train_images_per_s": rate,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    """Parses `argv` (default: the command line) and runs the example."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()

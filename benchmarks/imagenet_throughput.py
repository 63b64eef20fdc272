"""Throughput of the ImageNet experiment's parts: pipeline, steps, online epochs.

`--mode steps` (default) measures, in images per second:

1. the input pipeline (`keras_kd.datasets.imagenet`) on the CPU: training batches
   (decode + random-resized-crop + flip) and evaluation batches (decode + resize +
   centre crop), from an ImageNet-style folder (`--data-dir` or
   `KERAS_KD_DATA_DIR`, e.g. Imagenette), with and without the in-memory cache of
   encoded files;
2. training steps at `--image-size` (224 by default) on synthetic batches held in
   memory, so the pipeline is not the bottleneck:
   - `student`: the student (MobileNetV2) on hard labels alone;
   - `distill-online`: the `Distiller` with a ResNet-50 teacher forward pass in
     every step;
   - `distill-online-bfloat16` (only when asked for in `--kinds`): the same with
     `teacher_dtype="bfloat16"` (under a mixed `--precisions` the teacher is
     already mixed, so the kind is skipped there);
   - `distill-cached`: the `Distiller` fed precomputed teacher logits (no teacher
     forward), the replay of `keras_kd.cache`;
   - `distill-peer`: `keras.distillation.Distiller` with the same teacher, configured
     as the peer of issue 10 (`LogitsDistillation(T, KLDivergence())`,
     `student_loss_weight = 1 - soft_weight`), to compare with `distill-online`;
   for each `--precisions` entry and on every strategy in `--strategies`.

The models and their compilation are the experiment's
(`keras_kd.experiments.imagenet_models`: `application`, `compile_run`), so a
step timed here is a step of `keras-kd imagenet`.

All models of a strategy and precision are built and warmed up first
(`--warmup-steps` steps each, tracing included); then `--rounds` rounds each time
`--steps` steps of every model in turn, so a change of load on the machine hits all
of them alike, and each row reports the median over the rounds. Besides images per
wall-clock second it reports images per CPU-second of this process
(`time.process_time`), which depends less on other programs sharing the machine.

`--mode online` (issue 19) distils online on an ImageNet-style folder
(Imagenette) with the ImageNet example's recipe (112 px, ResNet-50 teacher,
MobileNetV2 x0.5 student, SGD with warm-up and cosine decay, batch 64, T = 4,
soft weight 0.9): `keras_kd.Distiller` against `keras.distillation.Distiller`
configured to compute the same loss, from the same initial student, teacher
and batches (same seed), interleaved epoch by epoch in this one process (the
one to go first alternates), each epoch validated on the whole validation
split. It reports the wall time of every epoch *including validation*, the
median over epochs 2.. (the first also traces and compiles), the total, and
both students' final top-1, with keras-kd's speed-up beside them. The teacher
is untrained unless `--teacher-weights` names a file (e.g. a teacher saved by
`keras-kd imagenet`); the two runs see the same one either way, so equal
top-1 says they train alike, and the speed-up does not depend on it.
With `--checkpoint`, every model is saved after each epoch into `--out-dir`
(`models/online-epochs/`), and the same command run again continues after the
last saved epoch (another command is refused, naming what differs, as is
another CPU). Before the first epoch after a resume, each model trains one
step and validates once, untimed, and the saved state is then loaded again:
that pays again what an uninterrupted run paid in its first epoch only
(tracing, keras-kd's memory of the teacher's validation outputs). A resumed
run trains the very students an uninterrupted one does (equal
`student_sha256`, `--quick`); the results list the epochs that followed a
resume.

`--mode teacher-xla` times the teacher's inference (`--teacher-model`, at
`--image-size` and `--batch-size`) compiled with and without XLA, in
interleaved rounds, and reports the ratio of the medians.

`--mode pipeline` times the loaders alone (training batches and a whole
validation pass) with tf.data autotuning on and off, in `--rounds`
interleaved rounds: what turning autotuning off, as `--mode online` does,
costs the input pipeline.

Every mode writes `results.md` and `results.json` through
`keras_kd.runs.RunFolder` into `--out-dir` (default
`benchmarks/runs/imagenet_throughput/<mode>`) and prints the table.

Examples:

    nice -n 10 python benchmarks/imagenet_throughput.py --data-dir ../shared/data/imagenette
    nice -n 10 python benchmarks/imagenet_throughput.py --mode online --epochs 3 \
        --data-dir ../shared/data/imagenette
    python benchmarks/imagenet_throughput.py --mode online --quick   # about a minute
    nice -n 10 python benchmarks/imagenet_throughput.py --mode online --epochs 8 \
        --checkpoint --out-dir runs/online8 --data-dir ../shared/data/imagenette
    python benchmarks/imagenet_throughput.py --mode pipeline --rounds 5 \
        --pipeline-batches 40 --data-dir ../shared/data/imagenette
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_kd import distribute, files, training  # noqa: E402
from keras_kd.datasets import imagenet  # noqa: E402
from keras_kd.experiments import imagenet_models  # noqa: E402
from keras_kd.runs import RunFolder, RunSettingsError  # noqa: E402
from keras_kd.teacher_inference import weights_digest  # noqa: E402
from keras_kd.teacher_precision import forward_in  # noqa: E402

MODES = ("steps", "online", "teacher-xla", "pipeline")
# Each timed kind and the experiment's kind of run it is.
STEP_KINDS = {
    "student": "scratch",
    "distill-online": "kd",
    "distill-online-bfloat16": "kd",  # Distiller(teacher_dtype="bfloat16")
    "distill-cached": "cached",
    "distill-peer": "peer",
}
TEMPERATURE, SOFT_WEIGHT = 4.0, 0.9  # of every distilling kind, ours and the peer
PEER = "keras.distillation"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, default="steps")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="ImageNet-style folder; default $KERAS_KD_DATA_DIR",
    )
    parser.add_argument(
        "--image-size", type=int, default=None,
        help="default 224 (steps), 112 (online, teacher-xla)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None,
        help="per replica; default 32 (steps), 64 (online, teacher-xla)",
    )
    parser.add_argument("--pipeline-batches", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="steps per round")
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds per model")
    parser.add_argument(
        "--student-width", type=float, default=None,
        help="default 1.0 (steps), 0.5 (online)",
    )
    parser.add_argument("--classes", type=int, default=1000, help="steps mode")
    parser.add_argument(
        "--precisions", nargs="+", default=["float32"], choices=distribute.PRECISIONS
    )
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=["default"],
        choices=("default", "mirrored"),
        help="'mirrored' uses every GPU (or every logical CPU)",
    )
    parser.add_argument(
        "--kinds", nargs="+", default=[k for k in STEP_KINDS if k != "distill-online-bfloat16"],
        choices=STEP_KINDS,
        help="distill-online-bfloat16 (not by default): the Distiller with "
             "teacher_dtype='bfloat16', for --precisions float32",
    )
    parser.add_argument("--skip-pipeline", action="store_true")
    online = parser.add_argument_group("online mode")
    online.add_argument("--epochs", type=int, default=None,
                        help="default 3 (1 with --quick)")
    online.add_argument("--seed", type=int, default=0)
    online.add_argument("--base-lr", type=float, default=0.1,
                        help="for a global batch of 256 (linear rule)")
    online.add_argument("--teacher-weights", default=None,
                        help="a .keras / .weights.h5 teacher; default untrained")
    online.add_argument("--validation-teacher", default="reuse",
                        choices=("reuse", "always", "never"),
                        help="keras-kd's Distiller(validation_teacher=...)")
    online.add_argument("--teacher-jit-compile", nargs="+", default=["auto"],
                        choices=("auto", "true", "false"),
                        help="keras-kd's Distiller(teacher_jit_compile=...); "
                             "several values train one keras-kd student each, "
                             "interleaved with the rest")
    online.add_argument("--tf-data-autotune", choices=("off", "on"), default="off",
                        help="tf.data autotuning of the training and validation "
                             "pipelines; on, deleting an iterator can wait up to 60 s "
                             "for its autotuning thread (benchmarks/iterator_teardown.py), "
                             "which lands in some epochs and not others")
    online.add_argument("--quick", action="store_true",
                        help="2 classes, 16 + 8 images each, 32 px, 1 epoch, "
                             "MobileNetV2 x0.35 teacher and student")
    online.add_argument("--checkpoint", action="store_true",
                        help="save every model after each epoch into --out-dir; "
                             "the same command run again continues from there")
    parser.add_argument("--teacher-dtype", nargs="+", default=["float32"],
                        choices=("float32", "bfloat16", "float16"),
                        help="online mode: keras-kd's Distiller(teacher_dtype=...) "
                             "(float32: None), several values train one keras-kd "
                             "student each; teacher-xla mode: the precisions timed")
    parser.add_argument("--teacher-model", choices=("resnet50", "mobilenetv2", "mlp"),
                        default="resnet50",
                        help="online and teacher-xla modes (mlp: teacher-xla only)")
    parser.add_argument("--out-dir", default=None,
                        help="default benchmarks/runs/imagenet_throughput/<mode>")
    args = parser.parse_args(argv)
    mode_defaults = {
        "steps": {"image_size": 224, "batch_size": 32, "student_width": 1.0},
        "online": {"image_size": 112, "batch_size": 64, "student_width": 0.5},
        "teacher-xla": {"image_size": 112, "batch_size": 64, "student_width": 0.5},
        "pipeline": {"image_size": 112, "batch_size": 64, "student_width": 0.5},
    }[args.mode]
    if args.quick:
        mode_defaults = {"image_size": 32, "batch_size": 8, "student_width": 0.35}
        args.teacher_model = "mobilenetv2"
    if args.epochs is None:
        args.epochs = 1 if args.quick else 3
    for name, value in mode_defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out_dir is None:
        args.out_dir = f"benchmarks/runs/imagenet_throughput/{args.mode}"
    return args


def pipeline_rows(args):
    """Images/s of the training and evaluation pipelines on the CPU."""
    data = imagenet.load_imagenet(args.data_dir, source="folder")
    rows = []
    for cached in (False, True):
        cache_bytes = imagenet.DEFAULT_CACHE_BYTES if cached else 0
        for split in ("train", "eval"):
            if split == "train":
                dataset = imagenet.train_dataset(
                    data,
                    image_size=args.image_size,
                    global_batch_size=args.batch_size,
                    cache_bytes=cache_bytes,
                )
            else:
                # Uncached: every pass decodes, as a split too large to cache.
                dataset = imagenet.eval_dataset(
                    data,
                    image_size=args.image_size,
                    batch_size=args.batch_size,
                    cache_bytes=0,
                ).repeat()
                if cached:
                    continue
            iterator = iter(dataset)
            for _ in range(2):
                next(iterator)
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(args.pipeline_batches):
                next(iterator)
            seconds = time.perf_counter() - start
            cpu_seconds = time.process_time() - cpu_start
            images = args.pipeline_batches * args.batch_size
            rows.append(
                {
                    "measure": f"pipeline {split}"
                    + (
                        " (encoded files in memory)" if cached else " (files from disk)"
                    ),
                    "precision": "-",
                    "replicas": "-",
                    "images_per_s": images / seconds,
                    "images_per_cpu_s": images / cpu_seconds,
                    "images": images,
                }
            )
            print(rows[-1], flush=True)
    return rows


def build(kind, args, setup):
    """The model to time and a dataset of synthetic batches for it."""
    with setup.strategy.scope():
        student = imagenet_models.application(
            "mobilenetv2", args.classes, args.image_size, width=args.student_width
        )
        imagenet_models.set_batchnorm(student, 0.99)
        teacher = None
        if kind in ("distill-online", "distill-online-bfloat16", "distill-peer"):
            teacher = imagenet_models.application(
                "resnet50", args.classes, args.image_size
            )
        model = imagenet_models.compile_run(
            STEP_KINDS[kind],
            student,
            optimizer=keras.optimizers.SGD(setup.learning_rate, momentum=0.9),
            teacher=teacher,
            temperature=TEMPERATURE,
            soft_weight=SOFT_WEIGHT,
            metrics=False,
            distiller_options=(
                {"teacher_dtype": "bfloat16"} if kind == "distill-online-bfloat16" else None
            ),
        )
    rng = np.random.default_rng(0)
    batch = setup.global_batch_size
    shape = (args.image_size, args.image_size, 3)
    x = tf.constant(rng.uniform(0, 255, (batch, *shape)).astype("float32"))
    y = tf.constant(rng.integers(0, args.classes, batch))
    if kind == "distill-cached":
        logits = tf.constant(rng.normal(size=(batch, args.classes)).astype("float32"))
        x = {"inputs": x, "teacher_logits": logits}
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
    return model, dataset


def step_rows(args):
    rows = []
    for strategy in args.strategies:
        for precision in args.precisions:
            setup = distribute.configure(
                strategy, precision=precision, per_replica_batch_size=args.batch_size
            )
            keras.backend.clear_session()
            models, warmup = {}, {}
            kinds = [k for k in args.kinds
                     if k != "distill-online-bfloat16" or setup.precision == "float32"]
            for kind in kinds:
                model, dataset = models[kind] = build(kind, args, setup)
                start = time.perf_counter()
                model.fit(
                    dataset, steps_per_epoch=args.warmup_steps, epochs=1, verbose=0
                )
                warmup[kind] = time.perf_counter() - start
            timings = {kind: [] for kind in kinds}
            for round_index in range(args.rounds):
                for kind, (model, dataset) in models.items():
                    start, cpu_start = time.perf_counter(), time.process_time()
                    model.fit(dataset, steps_per_epoch=args.steps, epochs=1, verbose=0)
                    timings[kind].append(
                        (time.perf_counter() - start, time.process_time() - cpu_start)
                    )
                    print(f"round {round_index + 1}/{args.rounds} {kind}: "
                          f"{timings[kind][-1][0]:.2f} s", flush=True)  # fmt: skip
            images = args.steps * setup.global_batch_size
            for kind, times in timings.items():
                rows.append(
                    {
                        "measure": f"train step {kind}",
                        "precision": setup.precision,
                        "replicas": setup.replicas,
                        "images_per_s": images / statistics.median(t for t, _ in times),
                        "images_per_cpu_s": images
                        / statistics.median(c for _, c in times),
                        "images": images * args.rounds,
                        "warmup_s": warmup[kind],
                    }
                )
    keras.mixed_precision.set_dtype_policy("float32")
    return rows


def _median(values):
    return statistics.median(values) if values else float("nan")


def teacher_xla_rows(args):
    """Seconds per teacher forward pass with and without XLA, interleaved rounds."""
    shape = (args.image_size, args.image_size, 3)
    if args.teacher_model == "mlp":
        keras.utils.set_random_seed(0)
        shape = (784,)
        teacher = keras.Sequential([
            keras.Input(shape), keras.layers.Dense(1200, activation="relu"),
            keras.layers.Dense(1200, activation="relu"), keras.layers.Dense(10),
        ])
    else:
        width = 1.0 if args.teacher_model == "resnet50" else args.student_width
        teacher = imagenet_models.application(
            args.teacher_model, 10, args.image_size, width=width
        )
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (args.batch_size, *shape)).astype("float32"))
    passes = {}
    for dtype in args.teacher_dtype:
        forward = forward_in(
            lambda b: teacher(b, training=False), teacher, _teacher_dtype(dtype)
        )
        passes[f"{dtype}, without XLA"] = tf.function(forward)
        passes[f"{dtype}, with XLA"] = tf.function(forward, jit_compile=True)
    first_call = {}
    for name, run in passes.items():
        start = time.perf_counter()
        run(x).numpy()
        first_call[name] = time.perf_counter() - start
    times = {name: [] for name in passes}
    for round_index in range(args.rounds):
        order = list(passes) if round_index % 2 == 0 else list(passes)[::-1]
        for name in order:
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                passes[name](x).numpy()
            times[name].append(
                ((time.perf_counter() - start) / args.steps,
                 (time.process_time() - cpu_start) / args.steps)
            )
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
            f"{n} {t[-1][0]:.3f} s" for n, t in times.items()), flush=True)
    rows = [
        {"pass": name, "teacher": args.teacher_model, "batch": args.batch_size,
         "median_s": _median([w for w, _ in t]),
         "median_cpu_s": _median([c for _, c in t]),
         "first_call_s": first_call[name]}
        for name, t in times.items()
    ]
    base = rows[0]["median_s"]
    for row in rows:
        row["speed_up"] = base / row["median_s"]
    ratio = rows[0]["median_s"] / rows[1]["median_s"]
    notes = f"XLA speed-up (median without / median with): {ratio:.3f}x. " + (
        f"Speed-up of each pass against {rows[0]['pass']!r}: "
        + ", ".join(f"{r['pass']} {r['speed_up']:.3f}x" for r in rows[1:])
        if len(rows) > 2 else ""
    )
    return rows, notes.strip(), {"ratio": ratio}


def _peer(student, teacher, optimizer, metrics):
    """keras.distillation.Distiller computing keras-kd's loss, and how it was made."""
    try:
        from keras_kd.peers import keras_distillation_peer
    except ImportError:
        keras_distillation_peer = None
    if keras_distillation_peer is None:
        model = imagenet_models.compile_run(
            "peer", student, optimizer=optimizer, teacher=teacher,
            temperature=TEMPERATURE, soft_weight=SOFT_WEIGHT,
        )
        return model, "imagenet_models.compile_run('peer')"
    model = keras_distillation_peer(
        student=student, teacher=teacher, temperature=TEMPERATURE,
        soft_weight=SOFT_WEIGHT, optimizer=optimizer, metrics=metrics,
    )
    return model, "keras_kd.peers.keras_distillation_peer"


def online_rows(args, folder: RunFolder):
    """keras-kd against keras.distillation, online, interleaved epoch by epoch."""
    setup = distribute.configure(
        "default", per_replica_batch_size=args.batch_size, base_lr=args.base_lr
    )
    data = imagenet.load_imagenet(args.data_dir, source="folder")
    if args.quick:
        data = data.subset(2, train_per_class=16, val_per_class=8)
    classes = data.num_classes
    steps = data.train.num_examples // setup.global_batch_size
    if steps < 1:
        raise SystemExit(
            f"--batch-size {args.batch_size} exceeds the {data.train.num_examples} "
            "training images"
        )
    val = _autotuned(imagenet.eval_dataset(data, image_size=args.image_size,
                                           batch_size=setup.global_batch_size),
                     args.tf_data_autotune)
    total_steps = args.epochs * steps
    if args.teacher_model not in imagenet_models.TEACHERS:
        raise SystemExit(f"--teacher-model must be one of {imagenet_models.TEACHERS}")
    # MobileNetV2 as a teacher (--quick) is as wide as the student.
    teacher_width = args.student_width if args.teacher_model == "mobilenetv2" else 1.0
    if args.teacher_weights:
        teacher, origin = imagenet_models.pretrained_teacher(
            args.teacher_model, args.teacher_weights, data.class_names,
            args.image_size, width=teacher_width,
        )
    else:
        keras.utils.set_random_seed(args.seed + 1)
        teacher = imagenet_models.application(
            args.teacher_model, classes, args.image_size, width=teacher_width,
            model_name="teacher",
        )
        origin = f"{args.teacher_model}, untrained (random initialisation, seed + 1)"
    mixed = [layer.name for layer in teacher._flatten_layers()
             if layer.dtype_policy.name != "float32"]
    if mixed:
        raise SystemExit(
            f"the teacher ({origin}) was built under a mixed precision policy "
            f"(layers {mixed[:3]}...), so its float32 row would not be float32: "
            "save it under the float32 policy, or pass --teacher-dtype only"
        )
    # Before any training: a wrong or badly loaded teacher shows here.
    teacher_notes = _teacher_precision_notes(teacher, val, args.teacher_dtype)
    print(f"teacher {origin}:{teacher_notes}", flush=True)
    keras.utils.set_random_seed(args.seed)
    initial = imagenet_models.application(
        "mobilenetv2", classes, args.image_size, width=args.student_width
    ).get_weights()
    settings = {"auto": "auto", "true": True, "false": False}
    variants = {}
    for value in args.teacher_jit_compile:
        for dtype in args.teacher_dtype:
            name = ["keras-kd"]  # with the settings that differ between variants
            if len(args.teacher_jit_compile) > 1:
                name.append(f"teacher_jit_compile={settings[value]!r}")
            if len(args.teacher_dtype) > 1:
                name.append(f"teacher_dtype={_teacher_dtype(dtype)!r}")
            variants[", ".join(name)] = settings[value], _teacher_dtype(dtype)
    models, students = {}, {}
    for index, name in enumerate([*variants, PEER]):
        student = imagenet_models.application(
            "mobilenetv2", classes, args.image_size, width=args.student_width,
            model_name=f"student_{index}",
        )
        student.set_weights(initial)
        imagenet_models.set_batchnorm(student, 0.99)
        optimizer = imagenet_models.sgd(
            setup.learning_rate, total_steps, steps, momentum=0.9, weight_decay=1e-4
        )
        metrics = imagenet_models.accuracy_metrics(classes)
        if name in variants:
            import keras_kd

            jit, dtype = variants[name]
            model = keras_kd.Distiller(
                student=student, teacher=teacher, temperature=TEMPERATURE,
                soft_weight=SOFT_WEIGHT, validation_teacher=args.validation_teacher,
                teacher_jit_compile=jit, teacher_dtype=dtype,
            )
            model.compile(optimizer, metrics=metrics)
            how = (f"keras_kd.Distiller(validation_teacher={args.validation_teacher!r}, "
                   f"teacher_jit_compile={jit!r}, teacher_dtype={dtype!r})")
        else:
            model, how = _peer(student, teacher, optimizer, metrics)
        models[name], students[name] = (model, how), student
    epoch_seconds = {name: [] for name in models}
    val_seconds = {name: [] for name in models}
    val_top1 = {name: [] for name in models}
    figures = {"epoch_seconds": epoch_seconds, "validation_seconds": val_seconds,
               "val_top1": val_top1, "resumed_before_epochs": [],
               "warmup_seconds": []}
    checkpoint = None
    if args.checkpoint:
        checkpoint = _EpochCheckpoint(
            folder, _online_settings(args, data), list(models)
        )
        if checkpoint.epochs_done:
            batches = _autotuned(imagenet.train_dataset(
                data, image_size=args.image_size,
                global_batch_size=setup.global_batch_size, seed=args.seed,
            ), args.tf_data_autotune)
            saved = [model for model, _ in models.values()]
            for key, value in checkpoint.restore(saved, steps, batches).items():
                if isinstance(value, dict):
                    figures[key].update(value)
                else:
                    figures[key][:] = value
            print(f"resumed after epoch {checkpoint.epochs_done} from "
                  f"{checkpoint.folder}", flush=True)
            if checkpoint.epochs_done < args.epochs:
                # What the uninterrupted run paid in its first epoch (tracing,
                # keras-kd's teacher outputs on the validation split), paid
                # here untimed: one step and a validation, then the saved
                # state again.
                start = time.perf_counter()
                for model in saved:
                    model.fit(batches, epochs=1, steps_per_epoch=1,
                              validation_data=val, verbose=0)
                checkpoint.restore(saved, steps, batches)
                figures["warmup_seconds"].append(time.perf_counter() - start)
                figures["resumed_before_epochs"].append(checkpoint.epochs_done + 1)
    first_epoch = checkpoint.epochs_done if checkpoint else 0
    for epoch in range(first_epoch, args.epochs):
        order = list(models) if epoch % 2 == 0 else list(models)[::-1]
        for name in order:
            model, _ = models[name]
            train = _autotuned(imagenet.train_dataset(
                data, image_size=args.image_size,
                global_batch_size=setup.global_batch_size, seed=args.seed,
                start_step=epoch * steps,
            ), args.tf_data_autotune)
            clock = _ValidationClock()
            start = time.perf_counter()
            history = model.fit(
                train, initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=steps,
                validation_data=val, verbose=0, callbacks=[clock],
            ).history
            epoch_seconds[name].append(time.perf_counter() - start)
            val_seconds[name].append(clock.seconds)
            val_top1[name].append(float(history["val_top1"][-1]))
            print(f"epoch {epoch + 1}/{args.epochs} {name}: "
                  f"{epoch_seconds[name][-1]:.1f} s with validation "
                  f"({clock.seconds:.1f} s of it validating), "
                  f"val_top1 {val_top1[name][-1]:.4f}", flush=True)
        if checkpoint:
            checkpoint.save([model for model, _ in models.values()], epoch + 1, figures)
    rows = []
    for name, (_, how) in models.items():
        scores = imagenet_models.score(students[name], val)
        seconds = epoch_seconds[name]
        training = [t - v for t, v in zip(seconds, val_seconds[name])]
        rows.append({
            "distiller": name,
            "configured_as": how,
            "epoch_s": " ".join(f"{t:.1f}" for t in seconds),
            "validation_s": " ".join(f"{t:.1f}" for t in val_seconds[name]),
            "median_epoch_2on_s": _median(seconds[1:]),
            "median_training_2on_s": _median(training[1:]),
            "median_validation_2on_s": _median(val_seconds[name][1:]),
            "total_s": sum(seconds),
            "top1": scores["top1"],
            "top5": scores["top5"],
            # Equal digests: the same student, e.g. after a resume or a rerun.
            "student_sha256": weights_digest(students[name])[:16],
        })
    peer = rows[-1]
    peer_seconds = epoch_seconds[PEER]
    peer["speed_up_total"], peer["speed_up_epochs_2on"] = 1.0, 1.0
    peer["speed_up_training_2on"] = 1.0
    comparisons = []
    for row in rows[:-1]:
        ours_seconds = epoch_seconds[row["distiller"]]
        row["speed_up_total"] = peer["total_s"] / row["total_s"]
        row["speed_up_epochs_2on"] = (
            peer["median_epoch_2on_s"] / row["median_epoch_2on_s"]
        )
        row["speed_up_training_2on"] = (
            peer["median_training_2on_s"] / row["median_training_2on_s"]
        )
        per_epoch = [p / o for p, o in zip(peer_seconds, ours_seconds)]
        row["speed_up_per_epoch"] = " ".join(f"{r:.3f}" for r in per_epoch)
        comparisons.append(
            f"{row['distiller']} against {PEER} (wall time including validation): "
            f"total {row['speed_up_total']:.3f}x, per epoch "
            + ", ".join(f"{r:.3f}x" for r in per_epoch)
            + f", median of epochs 2..{args.epochs}: "
            f"{row['speed_up_epochs_2on']:.3f}x (training alone, without "
            f"validation: {row['speed_up_training_2on']:.3f}x; validation "
            f"{row['median_validation_2on_s']:.1f} s against "
            f"{peer['median_validation_2on_s']:.1f} s); top-1 difference "
            f"{100 * (row['top1'] - peer['top1']):+.2f} points."
        )
    notes = (
        " ".join(comparisons) + teacher_notes + " "
        f"{data.train.num_examples} training / {data.val.num_examples} validation "
        f"images, {classes} classes, {args.image_size} px, global batch "
        f"{setup.global_batch_size}, {steps} steps per epoch, learning rate "
        f"{setup.learning_rate:g}, T = {TEMPERATURE}, soft weight {SOFT_WEIGHT}; "
        f"tf.data autotuning {args.tf_data_autotune}; teacher {origin}."
    )
    if figures["resumed_before_epochs"]:
        notes += (
            " Resumed from a checkpoint before epoch(s) "
            f"{', '.join(map(str, figures['resumed_before_epochs']))} (untimed "
            "warm-up: one training step and one validation per model, then the "
            "saved state loaded again; "
            + ", ".join(f"{t:.1f} s" for t in figures["warmup_seconds"]) + ")."
        )
    curves = {f"{name} val_top1": values for name, values in val_top1.items()}
    extra = {key: figures[key] for key in
             ("epoch_seconds", "validation_seconds", "resumed_before_epochs",
              "warmup_seconds")}  # fmt: skip
    return rows, notes, {**extra, "curves": curves}


ONLINE_OPTIONS = (
    "epochs", "seed", "base_lr", "validation_teacher", "teacher_jit_compile",
    "tf_data_autotune", "quick", "teacher_dtype", "teacher_model", "image_size",
    "batch_size", "student_width",
)


def _online_settings(args, data: imagenet.ImageNetData) -> dict:
    """What shapes an online run's students and times, for `_EpochCheckpoint`.

    Args:
        args: The parsed options.
        data: The data the run reads (its files are fingerprinted, so moving
            the folder is fine and changing its contents is not).

    Returns:
        The options of online mode, the data's and the teacher's fingerprints,
        the CPU and the library versions.
    """
    import keras_kd

    settings = {name: getattr(args, name) for name in ONLINE_OPTIONS}
    settings["teacher_sha256"] = (
        files.sha256_file(args.teacher_weights) if args.teacher_weights else None
    )
    for split in ("train", "val"):
        part = getattr(data, split)
        if isinstance(part, imagenet.FolderSplit):
            settings[f"{split}_files"] = part.fingerprint()
    settings.update(
        cpu=_cpu_description(), tensorflow=tf.__version__, keras=keras.__version__,
        keras_kd=keras_kd.__version__,
    )
    return settings


class _EpochCheckpoint:
    """The online mode's models and figures, saved after each finished epoch.

    Files in `folder`: `model-<i>.epoch-<e>.weights.h5` (model and optimizer
    variables, `keras.Model.save_weights`) for the last finished epoch `e`, and
    `state.json`, written last, naming `e` with the figures so far. A kill
    while saving leaves the previous epoch's files and state whole.
    """

    KIND = "online-epochs"  # of the folder, and the run's name in the run folder

    def __init__(self, run_folder: RunFolder, settings: dict, names: list[str]):
        """Opens (or starts) the checkpoint of `names` trained with `settings`;
        another command's checkpoint is refused naming what differs."""
        try:
            run = run_folder.model(self.KIND, {**settings, "models": names})
        except RunSettingsError as error:
            raise SystemExit(f"--checkpoint: {error}") from None
        self.folder = files.claim_folder(run.backup_dir, kind=self.KIND)
        self._state_path = self.folder / "state.json"
        self.state = (
            json.loads(self._state_path.read_text())
            if self._state_path.exists() else {"epochs_done": 0}
        )  # fmt: skip

    @property
    def epochs_done(self) -> int:
        """Epochs saved (0: none)."""
        return int(self.state["epochs_done"])

    def _weights(self, index: int, epoch: int) -> Path:
        return self.folder / f"model-{index}.epoch-{epoch}.weights.h5"

    def save(self, models: list[keras.Model], epoch: int, figures: dict) -> None:
        """Saves `models` (in the order they were given to `restore`) as they
        are after `epoch`, with `figures` (JSON values); then removes the
        files of earlier epochs."""
        for index, model in enumerate(models):
            with files.atomic_path(self._weights(index, epoch)) as partial:
                model.save_weights(partial)
        self.state = {"epochs_done": epoch, **figures}
        files.atomic_write_json(self._state_path, self.state)
        kept = {self._weights(index, epoch).name for index in range(len(models))}
        older = [path.name for path in self.folder.glob("model-*.epoch-*.weights.h5")
                 if path.name not in kept]  # fmt: skip
        files.remove_owned(self.folder, self.KIND, older)

    def restore(
        self, models: list[keras.Model], steps_per_epoch: int, batches: tf.data.Dataset
    ) -> dict:
        """Loads every model as it was after the last saved epoch.

        Args:
            models: Compiled, in the order `save` was given them.
            steps_per_epoch: To check the optimizer steps each model has taken.
            batches: Their training data (only its element spec is used, to
                build the models and optimizers before loading).

        Returns:
            The figures saved with the epoch.
        """
        epoch = self.epochs_done
        for index, model in enumerate(models):
            # Keras skips (with a warning) an optimizer that is not built yet.
            training.build_before_fit(model, batches)
            with warnings.catch_warnings():
                warnings.filterwarnings("error", message=".*[Ss]kipping variable")
                model.load_weights(self._weights(index, epoch))
            done = int(model.optimizer.iterations.numpy())
            if done != epoch * steps_per_epoch:
                raise SystemExit(
                    f"--checkpoint: model {index} in {self.folder} has taken {done} "
                    f"optimizer steps, not the {epoch * steps_per_epoch} of "
                    f"{epoch} epoch(s); use another --out-dir to start again"
                )
        return {k: v for k, v in self.state.items() if k != "epochs_done"}


def _autotuned(dataset: tf.data.Dataset, autotune: str) -> tf.data.Dataset:
    """`dataset` with tf.data autotuning `"on"` (as built) or `"off"`.

    Each epoch here is its own `fit`, so each drops an iterator; with
    autotuning on, deleting one can wait until its autotuning thread next wakes
    (up to 60 s, `benchmarks/iterator_teardown.py`), a pause unrelated to the
    distillers that lands, or not, in the epoch whose `fit` drops the iterator.
    """
    if autotune == "on":
        return dataset
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


class _ValidationClock(keras.callbacks.Callback):
    """Wall time spent in `fit`'s validation (from `on_test_begin` to `on_test_end`)."""

    def __init__(self):
        super().__init__()
        self.seconds = 0.0

    def on_test_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_test_end(self, logs=None):
        self.seconds += time.perf_counter() - self._start


def _teacher_dtype(name: str) -> str | None:
    """The `teacher_dtype` of a `--teacher-dtype` value (float32: None)."""
    return None if name == "float32" else name


def _teacher_precision_notes(teacher, val, dtypes) -> str:
    """The teacher's top-1 on the validation set in float32 and, for each lower
    precision, its top-1 there, the share of top-1 predictions that agree with
    float32, and the mean and largest KL(float32 || lower) between their
    softmaxes at T."""
    lower = [d for d in dtypes if _teacher_dtype(d) is not None]
    exact, labels = [], []
    rounded = {d: [] for d in lower}
    passes = {d: tf.function(forward_in(lambda b: teacher(b, training=False), teacher, d))
              for d in lower}
    plain = tf.function(lambda b: teacher(b, training=False))
    for x, y in val:
        exact.append(plain(x).numpy())
        labels.append(np.asarray(y).reshape(-1))
        for d in lower:
            rounded[d].append(passes[d](x).numpy())
    exact, labels = np.concatenate(exact), np.concatenate(labels)
    if labels.ndim == 1 and exact.shape[0] != labels.shape[0]:
        labels = labels.reshape(exact.shape[0], -1).argmax(-1)

    def tempered(logits):
        z = logits / TEMPERATURE
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    notes = [f" Teacher top-1 on the {len(exact)} validation images, float32: "
             f"{100 * np.mean(exact.argmax(-1) == labels):.2f}%."]
    for d in lower:
        low = np.concatenate(rounded[d])
        kl = (np.exp(tempered(exact)) * (tempered(exact) - tempered(low))).sum(-1)
        notes.append(
            f" Teacher in {d} against float32 on the {len(exact)} validation images: "
            f"top-1 {100 * np.mean(low.argmax(-1) == labels):.2f}% against "
            f"{100 * np.mean(exact.argmax(-1) == labels):.2f}%, same top-1 prediction "
            f"for {100 * np.mean(low.argmax(-1) == exact.argmax(-1)):.2f}% of images, "
            f"KL(float32 || {d}) at T = {TEMPERATURE}: mean {kl.mean():.2e}, "
            f"largest {kl.max():.2e}."
        )
    return "".join(notes)


def pipeline_autotune_rows(args):
    """Images/s of the loaders with tf.data autotuning on and off, interleaved.

    Each round times, for each setting (the one to go first alternates), a
    training iterator over `--pipeline-batches` batches after two warm-up
    batches, and one whole pass over the validation split, both built by
    `keras_kd.datasets.imagenet` with its defaults, as `fit` would see them.
    `eval_dataset` decodes the split once when it is built (with tf.data's
    defaults, whatever the setting), so the timed validation pass reads its
    crops from the cache that built, as every validation of a run does; the
    build is timed too, and reported beside.
    """
    data = imagenet.load_imagenet(args.data_dir, source="folder")
    timed = {(split, tune): [] for split in ("train", "eval") for tune in ("on", "off")}
    images = {"train": args.pipeline_batches * args.batch_size}
    built = []
    for round_index in range(args.rounds):
        order = ("on", "off") if round_index % 2 == 0 else ("off", "on")
        for tune in order:
            train = _autotuned(imagenet.train_dataset(
                data, image_size=args.image_size, global_batch_size=args.batch_size,
                seed=round_index,
            ), tune)
            iterator = iter(train)
            for _ in range(2):
                next(iterator)
            start = time.perf_counter()
            for _ in range(args.pipeline_batches):
                next(iterator)
            timed["train", tune].append(time.perf_counter() - start)
            del iterator
            start = time.perf_counter()
            evaluation = _autotuned(imagenet.eval_dataset(
                data, image_size=args.image_size, batch_size=args.batch_size,
            ), tune)
            built.append(time.perf_counter() - start)
            start, count = time.perf_counter(), 0
            for batch, _ in evaluation:
                count += int(batch.shape[0])
            timed["eval", tune].append(time.perf_counter() - start)
            images["eval"] = count
            print(f"round {round_index + 1} autotune {tune}: train "
                  f"{images['train'] / timed['train', tune][-1]:.0f} images/s, eval "
                  f"{count / timed['eval', tune][-1]:.0f} images/s", flush=True)
    rows = []
    for split in ("train", "eval"):
        on, off = (_median(timed[split, tune]) for tune in ("on", "off"))
        for tune, seconds in (("on", on), ("off", off)):
            rows.append({
                "pipeline": split,
                "autotune": tune,
                "images": images[split],
                "median_s": seconds,
                "images_per_s": images[split] / seconds,
                "off_over_on_throughput": on / off,
                "seconds_per_round": " ".join(f"{t:.2f}" for t in timed[split, tune]),
            })
    notes = (
        f"{args.rounds} interleaved rounds; train: {args.pipeline_batches} batches of "
        f"{args.batch_size} after 2 warm-up batches (decode, random-resized crop, "
        f"flip; encoded files held in memory, the loader's default); eval: one pass "
        f"over the {images['eval']} validation images, read from the cache of "
        f"centre crops that building the dataset filled (building it, which decodes "
        f"and crops every image once: median {_median(built):.2f} s over "
        f"{len(built)} builds); {args.image_size} px. off_over_on_throughput above "
        "1: faster with autotuning off."
    )
    return rows, notes, {}


def steps_mode_rows(args):
    rows = [] if args.skip_pipeline else pipeline_rows(args)
    rows += step_rows(args)
    return rows, "", {}


def main(argv=None):
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    run = {"steps": steps_mode_rows, "online": online_rows,
           "teacher-xla": teacher_xla_rows, "pipeline": pipeline_autotune_rows}[args.mode]
    # The folder is claimed and locked before the run, so that a folder that
    # cannot take the results fails now rather than after hours of training.
    with RunFolder(args.out_dir) as folder:
        rows, notes, extra = (
            run(args, folder) if args.mode == "online" else run(args)
        )
        _report(args, folder, rows, notes, extra, started, load_before)


def _cpu_description() -> str:
    """The CPU's model name and its vector extensions that oneDNN uses.

    The machines this project runs on have differed in CPU (with and without
    AVX-512 and AMX) and in speed, so a results file names its CPU.
    """
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            text = cpuinfo.read()
    except OSError:
        return platform.processor() or "unknown"
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name", "unknown")
    flags = set(fields.get("flags", "").split())
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    present = [flag for flag in wanted if flag in flags]
    return f"{model} ({', '.join(present) or 'none of ' + ', '.join(wanted)})"


def _report(args, folder, rows, notes, extra, started, load_before):
    """Prints the rows and notes, then writes them into `folder`."""
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    context = {
        "mode": args.mode,
        "started_utc": started,
        "image_size": args.image_size,
        "batch_per_replica": args.batch_size,
        "student_width": args.student_width,
        "devices": devices,
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_description(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    if args.mode == "steps":
        context.update(steps=args.steps, rounds=args.rounds, classes=args.classes)
    print(context)
    for row in rows:
        print(row)
    if notes:
        print(notes, flush=True)
    curves = extra.pop("curves", None)
    folder.write_results(
        rows, title=f"ImageNet throughput ({args.mode})",
        notes=f"{notes}\n\nContext: {context}", curves=curves,
        curve_label="validation top-1", extra={"context": context, **extra},
    )


if __name__ == "__main__":
    main()

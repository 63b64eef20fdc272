"""Throughput of the ImageNet experiment's parts: input pipeline and training steps.

Measures, in images per second:

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
Writes `throughput.json` and `throughput.md` into `--out-dir` (default `benchmarks/runs/imagenet_throughput`) and prints the table.

Example:

    nice -n 10 python benchmarks/imagenet_throughput.py --data-dir ../shared/data/imagenette
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_kd import distribute, reports  # noqa: E402
from keras_kd.datasets import imagenet  # noqa: E402
from keras_kd.experiments import imagenet_models  # noqa: E402

# Each timed kind and the experiment's kind of run it is.
STEP_KINDS = {
    "student": "scratch",
    "distill-online": "kd",
    "distill-cached": "cached",
    "distill-peer": "peer",
}
TEMPERATURE, SOFT_WEIGHT = 4.0, 0.9  # of every distilling kind, ours and the peer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=None,
        help="ImageNet-style folder; default $KERAS_KD_DATA_DIR",
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32, help="per replica")
    parser.add_argument("--pipeline-batches", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="steps per round")
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds per model")
    parser.add_argument("--student-width", type=float, default=1.0)
    parser.add_argument("--classes", type=int, default=1000)
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
        "--kinds", nargs="+", default=list(STEP_KINDS), choices=STEP_KINDS
    )
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--out-dir", default="benchmarks/runs/imagenet_throughput")
    return parser.parse_args(argv)


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
                # Caching cropped eval images helps only from the second pass.
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
        if kind in ("distill-online", "distill-peer"):
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
            for kind in args.kinds:
                model, dataset = models[kind] = build(kind, args, setup)
                start = time.perf_counter()
                model.fit(
                    dataset, steps_per_epoch=args.warmup_steps, epochs=1, verbose=0
                )
                warmup[kind] = time.perf_counter() - start
            timings = {kind: [] for kind in args.kinds}
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


def main(argv=None):
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    rows = [] if args.skip_pipeline else pipeline_rows(args)
    rows += step_rows(args)
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    context = {
        "started_utc": started,
        "image_size": args.image_size,
        "batch_per_replica": args.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "student_width": args.student_width,
        "classes": args.classes,
        "devices": devices,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    out = Path(args.out_dir)
    reports.write_json(out / "throughput.json", {"context": context, "rows": rows})
    table = reports.markdown_table(rows, digits=1)
    (out / "throughput.md").write_text(f"{context}\n\n{table}")
    print(context)
    print(table, end="")


if __name__ == "__main__":
    main()

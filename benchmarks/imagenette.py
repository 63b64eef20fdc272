"""Imagenette benchmark: does distillation beat training the student alone?

One command trains and reports every run of issue 10 with the same data pipeline,
recipe (SGD + momentum, linear warm-up then cosine, no label smoothing) and number
of epochs for every student:

- ``teacher``: a ``keras.applications`` teacher (ResNet50 by default, ``--teacher``
  picks a smaller one) trained from scratch for ``--teacher-epochs``;
- ``scratch-s<seed>``: the MobileNetV2 student on hard labels, one run per seed;
- ``cached-T<T>-a<alpha>-s<seed>``: the student distilled with
  ``keras_kd.Distiller`` from cached teacher logits of ``--views`` augmented views
  per image (``keras_kd.cache``), one run per seed: the teacher runs once, not at
  every step;
- ``kd-T<T>-a<alpha>-s<seed>``: the student distilled online with
  ``keras_kd.Distiller``, first seed only (online runs pay a teacher forward pass
  per step), to compare with the cached run of the same seed (wall time per epoch,
  accuracy) and with the peer;
- ``peer-T<T>-a<alpha>-s<seed>``: the student distilled with
  ``keras.distillation.Distiller`` (``LogitsDistillation(temperature=T,
  loss=KLDivergence())``, which scales by T^2, ``student_loss_weight = 1 - alpha``),
  first seed only.

Runs can be done in separate invocations (``--runs teacher`` first, say): a finished
run is reused when the settings it depends on are unchanged. The teacher does not
depend on the student flags, nor the scratch students on T and alpha, so a sweep
over ``--temperature`` / ``--alpha`` in the same ``--out-dir`` trains only the
distilled runs of each new setting. Every invocation rewrites the summary from its
own runs; rerun a command (nothing is retrained) to get its summary back.

The models, recipe and input pipeline are the ImageNet example's
(examples/imagenet/distill_imagenet.py, imported from its file), the training loop
is ``keras_kd.training.fit_resumable``. Each run lives in ``<out-dir>/<run>/``
(backups every ``--save-freq`` steps, TensorBoard logs, ``epochs.jsonl``, and
``result.json`` once finished). Rerunning the same command skips finished runs and
resumes an interrupted one where its last backup stopped, so the schedule can span
several sittings. The summary (``results.md`` (also printed), ``results.json``,
``val_top1.png``) is rewritten after every run.

Full schedule (hours on a CPU; run it again after an interruption):

    python benchmarks/imagenette.py --data-dir ../shared/data/imagenette

Quick mode (two classes, a few dozen images, one epoch, 32 px, tiny widths; the
test suite runs it on a folder it writes):

    python benchmarks/imagenette.py --quick --data-dir <folder> --out-dir /tmp/q
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd import cache as kd_cache  # noqa: E402
from keras_kd import distribute, reports, training  # noqa: E402
from keras_kd.datasets import imagenet  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "imagenet" / "distill_imagenet.py"

# --quick: settings that finish in seconds on a CPU; explicit flags are overridden.
QUICK = {
    "classes": 2,
    "train_per_class": 12,
    "val_per_class": 6,
    "image_size": 32,
    "cache_source_size": 40,
    "epochs": 1,
    "teacher_epochs": 1,
    "batch_size": 4,
    "teacher": "mobilenetv2",
    "teacher_width": 0.35,
    "student_width": 0.35,
    "views": 2,
    "warmup_epochs": 0.5,
    "save_freq": 2,
    "verbose": 0,
}
# Flags that do not change what a run computes (so a rerun may change them).
NOT_IN_CONFIG = (
    "data_dir", "out_dir", "verbose", "save_freq", "quick", "cache_mb", "runs", "seeds",
)  # fmt: skip
# Flags a kind of run does not depend on: changing them reuses its finished runs
# (a trained teacher serves every student schedule, the scratch students every T).
CACHE_ONLY = ("views", "cache_source_size")
IGNORED_BY = {
    "teacher": ("epochs", "student_width", "temperature", "alpha", *CACHE_ONLY),
    "scratch": ("temperature", "alpha", *CACHE_ONLY),
    "kd": CACHE_ONLY,
    "peer": CACHE_ONLY,
    "cached": (),
}


def load_example():
    """The ImageNet example script, imported as a module."""
    spec = importlib.util.spec_from_file_location("distill_imagenet", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_parser(example) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Imagenette benchmark: teacher, scratch student, keras_kd "
        "Distiller, keras.distillation peer, cached vs online distillation."
    )
    add = parser.add_argument
    add("--data-dir", default=None, help="ImageNet-style folder; default $KERAS_KD_DATA_DIR")
    add("--out-dir", default=str(ROOT / "benchmarks" / "runs" / "imagenette"))
    add("--quick", action="store_true", help="tiny smoke run (see QUICK)")
    add("--classes", type=int, default=0, help="use the first N classes (0: all)")
    add("--train-per-class", type=int, default=0, help="0: all training images")
    add("--val-per-class", type=int, default=0, help="0: all validation images")
    add("--image-size", type=int, default=112)
    add("--cache-mb", type=int, default=512, help="see the example's --cache-mb")
    add("--teacher", choices=example.TEACHERS, default="resnet50")
    add("--teacher-width", type=float, default=1.0, help="for --teacher mobilenetv2")
    add("--teacher-epochs", type=int, default=40)
    add("--student-width", type=float, default=1.0, help="MobileNetV2 width (alpha)")
    add(
        "--bn-momentum",
        type=float,
        default=0.99,
        help="BatchNormalization momentum of every model trained here (Keras' "
        "MobileNetV2 builds 0.999, which lags on short runs; 0 keeps Keras')",
    )
    add("--epochs", type=int, default=30, help="epochs of every student run")
    add("--steps-per-epoch", type=int, default=None, help="default: images // batch")
    add("--batch-size", type=int, default=64)
    add("--base-lr", type=float, default=0.1, help="for a global batch of 256")
    add("--warmup-epochs", type=float, default=1.0)
    add("--momentum", type=float, default=0.9)
    add("--weight-decay", type=float, default=1e-4)
    add("--temperature", type=float, default=4.0)
    add("--alpha", type=float, default=0.9, help="soft-target weight (1 - alpha: hard)")
    add("--seeds", default="0,1", help="comma-separated student seeds (>= 2 for spread)")
    add("--teacher-seed", type=int, default=0)
    add("--views", type=int, default=4, help="augmented views per image in the cache")
    add(
        "--cache-source-size",
        type=int,
        default=128,
        help="training images are decoded and resized to this square size once, "
        "for the cache (Imagenette's files are 128x128, so 128 loses nothing)",
    )
    add(
        "--runs",
        default="teacher,scratch,kd,peer,cached",
        help="which kinds of run to do (the teacher is trained if a student needs it)",
    )
    add("--xla", action="store_true")
    add("--save-freq", type=int, default=200, help="backup every N steps")
    add("--verbose", type=int, choices=(0, 1, 2), default=2)
    return parser


def parse_args(example, argv=None):
    parser = build_parser(example)
    args = parser.parse_args(argv)
    if args.quick:
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        for key, value in QUICK.items():
            if "--" + key.replace("_", "-") not in given:
                setattr(args, key, value)
    args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    args.runs = [r.strip() for r in str(args.runs).split(",") if r.strip()]
    unknown = set(args.runs) - {"teacher", "scratch", "kd", "peer", "cached"}
    if unknown or not args.seeds:
        parser.error(f"bad --runs {sorted(unknown)} or empty --seeds")
    if args.views < 1:
        parser.error("--views must be >= 1")
    return args


# ------------------------------------------------------------------------ data


def subset(data, classes: int, train_per_class: int, val_per_class: int):
    """The first `classes` classes and the first N files per class of each split."""
    if data.source != "folder":
        raise ValueError("the benchmark needs an ImageNet-style folder (--data-dir)")
    names = data.class_names[:classes] if classes else data.class_names

    def cut(split, per_class):
        keep, seen = [], {}
        for i, label in enumerate(split.labels):
            if label < len(names) and (not per_class or seen.get(label, 0) < per_class):
                seen[label] = seen.get(label, 0) + 1
                keep.append(i)
        return dataclasses.replace(
            split,
            files=tuple(split.files[i] for i in keep),
            labels=np.asarray(split.labels)[keep],
        )

    return dataclasses.replace(
        data,
        class_names=list(names),
        train=cut(data.train, train_per_class),
        val=cut(data.val, val_per_class),
    )


def decode_training_images(split, size: int):
    """All decodable training images as a uint8 `(n, size, size, 3)` array + labels."""

    def load(path, label):
        image = imagenet.decode_rgb(tf.io.read_file(path))
        image = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), label

    stream = (
        tf.data.Dataset.from_tensor_slices((list(split.files), split.labels))
        .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors()
        .batch(256)
    )
    images, labels = [], []
    for x, y in stream:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def crop_augment(size: int):
    """The training augmentation (random-resized crop + flip) as a cache `augment`."""

    def imagenette_random_resized_crop(image, seed):
        return imagenet.random_resized_crop(image, size, seed)

    imagenette_random_resized_crop.__name__ = f"imagenette_random_resized_crop_{size}"
    return imagenette_random_resized_crop


# ------------------------------------------------------------------- training


class EpochLog(keras.callbacks.Callback):
    """Appends each finished epoch's logs and training seconds to `epochs.jsonl`.

    Kept across resumes (keyed by epoch), so a run split over sittings still has its
    whole curve. `steps` is the number of steps run in that call (a resumed epoch
    runs fewer), so `train_seconds * steps_per_epoch / steps` is a full epoch.
    """

    def __init__(self, path: Path, timer):
        super().__init__()
        self.path, self.timer, self.steps = path, timer, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_epoch_end(self, epoch, logs=None):
        record = {k: float(v) for k, v in (logs or {}).items()}
        record.update(
            epoch=epoch + 1, steps=self.steps, train_seconds=self.timer.train_seconds[-1]
        )
        records = read_epochs(self.path)
        records[epoch + 1] = record
        self.path.write_text(
            "".join(json.dumps(records[e]) + "\n" for e in sorted(records))
        )


def read_epochs(path: Path) -> dict[int, dict]:
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    return {r["epoch"]: r for r in records}


class Bench:
    """Shared state of one benchmark invocation."""

    def __init__(self, example, args):
        self.ex, self.args = example, args
        self.root = Path(args.out_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.setup = distribute.configure(
            "auto",
            precision="float32",
            jit_compile=args.xla,
            per_replica_batch_size=args.batch_size,
            base_lr=args.base_lr,
        )
        data = imagenet.load_imagenet(args.data_dir, source="folder")
        self.data = subset(data, args.classes, args.train_per_class, args.val_per_class)
        self.steps = args.steps_per_epoch or (
            self.data.train.num_examples // self.setup.global_batch_size
        )
        if self.steps < 1:
            raise ValueError("fewer training images than one batch; lower --batch-size")
        self.val = imagenet.eval_dataset(
            self.data,
            image_size=args.image_size,
            batch_size=self.setup.global_batch_size,
            cache_bytes=args.cache_mb * 2**20,
        )
        self.config = {
            k: v for k, v in sorted(vars(args).items()) if k not in NOT_IN_CONFIG
        }
        self.config.update(
            classes=self.data.class_names,
            train_images=self.data.train.num_examples,
            val_images=self.data.val.num_examples,
            steps_per_epoch=self.steps,
            global_batch_size=self.setup.global_batch_size,
            learning_rate=self.setup.learning_rate,
        )
        self._teacher = None

    def example_args(self, seed: int, epochs: int):
        """A Namespace the example's builders accept."""
        a = self.args
        ns = self.ex.build_parser().parse_args([])
        for key in (
            "image_size", "cache_mb", "teacher", "teacher_width", "student_width",
            "bn_momentum", "batch_size", "base_lr", "warmup_epochs", "momentum",
            "weight_decay", "temperature", "alpha", "xla", "save_freq", "verbose",
        ):  # fmt: skip
            setattr(ns, key, getattr(a, key))
        ns.seed, ns.epochs = seed, epochs
        return ns

    def optimizer(self, ns):
        total = ns.epochs * self.steps
        warmup = min(int(round(ns.warmup_epochs * self.steps)), total - 1)
        return self.ex._optimizer(self.setup, total, warmup, ns)

    # ------------------------------------------------------------- one run

    def run_config(self, kind: str) -> dict:
        """The settings a run of this kind depends on (compared on resume)."""
        return {k: v for k, v in self.config.items() if k not in IGNORED_BY[kind]}

    def run(self, name: str, kind: str, seed: int) -> dict:
        run_dir = self.root / name
        result_path = run_dir / "result.json"
        config = json.loads(json.dumps(self.run_config(kind)))
        if result_path.exists():
            result = json.loads(result_path.read_text())
            if not same_settings(result["config"], config):
                raise ValueError(
                    f"{result_path} was made with other settings; use another "
                    "--out-dir (or delete that run) to change the schedule."
                )
            print(f"[imagenette] {name}: finished earlier, top-1 {result['top1']:.4f}")
            return result
        run_dir.mkdir(parents=True, exist_ok=True)
        config_path = run_dir / "config.json"
        if config_path.exists() and not same_settings(
            json.loads(config_path.read_text()), config
        ):
            raise ValueError(
                f"{run_dir} holds a partial run with other settings; use another "
                "--out-dir (or delete that folder)."
            )
        reports.write_json(config_path, config)
        epochs = self.args.teacher_epochs if kind == "teacher" else self.args.epochs
        ns = self.example_args(seed, epochs)
        keras.utils.set_random_seed(seed)
        nc = self.data.num_classes
        extra = {}
        with self.setup.strategy.scope():
            if kind == "teacher":
                model, _ = self.ex.build_teacher(ns, nc, self.data.class_names)
                bn = self.ex._set_bn(model, ns.bn_momentum)
                net = model
            else:
                net = self.ex.build_student(ns, nc)
                bn = self.ex._set_bn(net, ns.bn_momentum)
        teacher = self.teacher() if kind in ("kd", "peer", "cached") else None
        make_dataset = self.online_stream(ns)
        if kind == "cached":
            make_dataset, extra = self.cached_stream(ns, teacher)
        with self.setup.strategy.scope():
            metrics = self.ex._metrics(nc)
            hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            if kind in ("teacher", "scratch"):
                model = net
                model.compile(self.optimizer(ns), loss=hard, metrics=metrics,
                              jit_compile=ns.xla)  # fmt: skip
            elif kind in ("kd", "cached"):
                model = keras_kd.Distiller(
                    student=net,
                    teacher=teacher if kind == "kd" else None,
                    temperature=ns.temperature,
                    soft_weight=ns.alpha,
                )
                model.compile(self.optimizer(ns), metrics=metrics, jit_compile=ns.xla)
            else:  # the keras.distillation peer, configured as the issue asks
                model = keras.distillation.Distiller(
                    teacher=teacher,
                    student=net,
                    distillation_losses=keras.distillation.LogitsDistillation(
                        temperature=ns.temperature, loss=keras.losses.KLDivergence()
                    ),
                    student_loss_weight=1.0 - ns.alpha,
                )
                model.compile(self.optimizer(ns), loss=hard, metrics=metrics,
                              jit_compile=ns.xla)  # fmt: skip
                # BackupAndRestore needs a built model; one call builds it.
                model(np.zeros((1, ns.image_size, ns.image_size, 3), "float32"))
        print(f"[imagenette] {name}: {kind}, seed {seed}, {epochs} epochs x "
              f"{self.steps} steps; {bn}")  # fmt: skip
        timer = self.ex.EpochTimer()
        log_path = run_dir / "epochs.jsonl"
        training.fit_resumable(
            model,
            make_dataset,
            epochs=epochs,
            steps_per_epoch=self.steps,
            backup_dir=run_dir / "backup",
            save_freq=self.args.save_freq,
            callbacks=[
                timer,
                EpochLog(log_path, timer),
                keras.callbacks.TensorBoard(
                    str(run_dir / "tensorboard"),
                    write_graph=False,
                    update_freq=max(self.steps // 10, 1),
                ),
            ],
            validation_data=self.val,
            verbose=self.args.verbose,
        )
        if kind == "teacher":
            net.save_weights(str(run_dir / "teacher.weights.h5"))
        records = read_epochs(log_path)
        last = records.get(epochs, {})
        if "val_top1" in last and "val_top5" in last:
            # The last epoch's validation scores the final weights already (the
            # wrappers' metrics are the student's): no second pass.
            scores = {"top1": last["val_top1"], "top5": last["val_top5"]}
        else:  # e.g. the backup already covered the whole run
            with self.setup.strategy.scope():
                net.compile(loss=hard, metrics=self.ex._metrics(nc))
            scores = net.evaluate(self.val, verbose=0, return_dict=True)
        full = [
            r["train_seconds"] * self.steps / r["steps"]
            for r in records.values()
            if r.get("steps")
        ]
        result = {
            "run": name,
            "kind": kind,
            "seed": seed,
            "epochs": epochs,
            "top1": float(scores["top1"]),
            "top5": float(scores["top5"]),
            "seconds_per_epoch": statistics.median(full) if full else math.nan,
            "epoch_seconds": full,
            "val_top1_curve": [records[e].get("val_top1") for e in sorted(records)],
            "config": config,
            **extra,
        }
        reports.write_json(result_path, result)
        print(f"[imagenette] {name}: top-1 {result['top1']:.4f}, top-5 "
              f"{result['top5']:.4f}, {result['seconds_per_epoch']:.1f} s/epoch")  # fmt: skip
        return result

    def online_stream(self, ns):
        def make_dataset(start_step):
            return imagenet.train_dataset(
                self.data,
                image_size=ns.image_size,
                global_batch_size=self.setup.global_batch_size,
                seed=ns.seed,
                start_step=start_step,
                cache_bytes=ns.cache_mb * 2**20,
            )

        return make_dataset

    def cached_stream(self, ns, teacher):
        """Builds (or reopens) the K-view teacher cache; returns the stream maker."""
        size = self.args.cache_source_size
        x, y = decode_training_images(self.data.train, size)
        augment = crop_augment(ns.image_size)
        directory = self.root / f"teacher-cache-K{self.args.views}-{size}px"
        start = time.perf_counter()
        cache = kd_cache.build_teacher_cache(
            teacher,
            x,
            directory,
            views=self.args.views,
            augment=augment,
            seed=self.args.teacher_seed,
            batch_size=self.setup.global_batch_size,
            verbose=bool(self.args.verbose),
        )
        seconds = time.perf_counter() - start
        timing = directory / "build_seconds.json"
        if not timing.exists():  # the first (real) build's time
            reports.write_json(timing, {"seconds": seconds})
        build = json.loads(timing.read_text())["seconds"]

        def make_dataset(start_step):
            stream = cache.dataset(
                x,
                y,
                batch_size=self.setup.global_batch_size,
                seed=ns.seed,
                augment=augment,
                drop_remainder=True,
            )
            return stream.repeat().skip(start_step)

        extra = {
            "views": self.args.views,
            "cache_build_seconds": build,
            "cache_mb": sum(f.stat().st_size for f in directory.rglob("*")) / 2**20,
        }
        return make_dataset, extra

    def teacher(self):
        """The trained teacher (its run must have finished), frozen."""
        if self._teacher is None:
            path = self.root / "teacher" / "teacher.weights.h5"
            if not path.exists():
                raise ValueError("the teacher has not been trained (--runs teacher)")
            ns = self.example_args(self.args.teacher_seed, self.args.teacher_epochs)
            with self.setup.strategy.scope():
                model, _ = self.ex.build_teacher(ns, self.data.num_classes,
                                                 self.data.class_names)  # fmt: skip
                self.ex._set_bn(model, ns.bn_momentum)
            model.load_weights(str(path))
            model.trainable = False
            self._teacher = model
        return self._teacher


# -------------------------------------------------------------------- reports

LABELS = {
    "teacher": "teacher {teacher}",
    "scratch": "student from scratch",
    "kd": "student, keras_kd.Distiller (online)",
    "peer": "student, keras.distillation.Distiller",
    "cached": "student, keras_kd.Distiller from cache (K={views})",
}


def summarize(results: list[dict], args) -> list[dict]:
    """One table row per kind of run: mean and spread (population std) over seeds."""
    rows = []
    for kind in LABELS:
        group = [r for r in results if r["kind"] == kind]
        if not group:
            continue
        top1 = [100 * r["top1"] for r in group]
        top5 = [100 * r["top5"] for r in group]
        rows.append(
            {
                "model": LABELS[kind].format(teacher=args.teacher, views=args.views),
                "seeds": ",".join(str(r["seed"]) for r in group),
                "epochs": group[0]["epochs"],
                "top-1 % (mean)": statistics.fmean(top1),
                "top-1 spread": statistics.pstdev(top1),
                "top-1 per seed": " / ".join(f"{v:.2f}" for v in top1),
                "top-5 % (mean)": statistics.fmean(top5),
                "s / epoch": statistics.fmean(r["seconds_per_epoch"] for r in group),
                "fastest epoch s": statistics.fmean(fastest_epoch(r) for r in group),
            }
        )
    return rows


def fastest_epoch(result: dict) -> float:
    """A run's fastest training epoch in seconds: the speed least disturbed by
    other load on the machine (the median is also reported)."""
    return min(result["epoch_seconds"], default=math.nan)


def criteria(results: list[dict]) -> list[dict]:
    """Issue 10's targets, judged on the runs at hand (those present).

    Speed ratios compare fastest epochs: on a shared machine some epochs run
    slower for reasons outside the run, and the minimum is the robust estimate.
    """
    by_kind: dict[str, list[dict]] = {}
    for r in results:
        by_kind.setdefault(r["kind"], []).append(r)

    def top1(kind):
        return [100 * r["top1"] for r in by_kind.get(kind, [])]

    def row(text, value, passed, target):
        return {"criterion": text, "measured": value, "target": target,
                "verdict": "met" if passed else "missed"}  # fmt: skip

    rows = []
    if "teacher" in by_kind:
        t = top1("teacher")[0]
        rows.append(row("teacher top-1 %", f"{t:.2f}", t >= 80.0, ">= 80"))
    scratch, distilled = top1("scratch"), top1("cached")
    if scratch and distilled:
        gap = statistics.fmean(distilled) - statistics.fmean(scratch)
        # Spread: the larger range (max - min over seeds) of the two groups.
        spread = max(max(v) - min(v) for v in (scratch, distilled))
        rows.append(row("keras_kd (cached) mean - scratch mean, top-1 points",
                        f"{gap:+.2f}", gap >= 2.0, ">= +2.0"))  # fmt: skip
        rows.append(row("that gap / largest seed range", f"{gap:.2f} / {spread:.2f}",
                        gap > spread, "gap > range"))  # fmt: skip
    kd, peer, cached = by_kind.get("kd"), by_kind.get("peer"), by_kind.get("cached")
    if kd and peer:
        diff = 100 * (kd[0]["top1"] - peer[0]["top1"])
        rows.append(row("keras_kd online - keras.distillation, top-1 points (same seed)",
                        f"{diff:+.2f}", diff >= -0.3, ">= -0.3"))  # fmt: skip
        ratio = fastest_epoch(kd[0]) / fastest_epoch(peer[0])
        rows.append(row("keras_kd online / keras.distillation, fastest epoch s",
                        f"{ratio:.3f}", ratio <= 1.0, "<= 1.0"))  # fmt: skip
    if kd and cached:
        same_seed = [r for r in cached if r["seed"] == kd[0]["seed"]] or cached
        ratio = fastest_epoch(kd[0]) / fastest_epoch(same_seed[0])
        rows.append(row("online / cached keras_kd, fastest epoch s", f"{ratio:.2f}",
                        ratio >= 2.0, ">= 2"))  # fmt: skip
        diff = 100 * (same_seed[0]["top1"] - kd[0]["top1"])
        rows.append({"criterion": "cached - online keras_kd, top-1 points (same seed)",
                     "measured": f"{diff:+.2f}", "target": "(reported)", "verdict": ""})  # fmt: skip
    return rows


def write_reports(results: list[dict], bench: Bench) -> str:
    args, root = bench.args, bench.root
    rows = summarize(results, args)
    table = reports.markdown_table(rows, digits=2)
    c = bench.config
    settings = (
        f"Imagenette-style folder, {len(c['classes'])} classes, {c['train_images']} "
        f"train / {c['val_images']} val images, {args.image_size}px, batch "
        f"{c['global_batch_size']}, lr {c['learning_rate']:g}, "
        f"{args.epochs} student epochs x {c['steps_per_epoch']} steps, teacher "
        f"{args.teacher} {args.teacher_epochs} epochs, student MobileNetV2 "
        f"x{args.student_width}, BN momentum {args.bn_momentum}, T={args.temperature}, "
        f"alpha={args.alpha}, cache views K={args.views}"
    )
    cached = [r for r in results if r["kind"] == "cached"]
    notes = ""
    if cached:
        notes = (
            f"\nCache build (teacher forward over {args.views} views of every "
            f"image, once): {cached[0]['cache_build_seconds']:.1f} s, "
            f"{cached[0]['cache_mb']:.1f} MiB; not included in s / epoch.\n"
        )
    checks = criteria(results)
    if checks:
        notes += "\n## Targets (issue 10)\n\n" + reports.markdown_table(checks)
    text = f"# Imagenette benchmark\n\n{settings}\n\n{table}{notes}"
    (root / "results.md").write_text(text)
    reports.write_json(root / "results.json",
                       {"rows": rows, "criteria": checks, "runs": results})  # fmt: skip
    curves = {
        r["run"]: [v for v in r["val_top1_curve"] if v is not None] for r in results
    }
    reports.plot_curves(curves, root / "val_top1.png", title="Imagenette validation "
                        "top-1", ylabel="top-1 accuracy")  # fmt: skip
    return text


def plan(args) -> list[tuple[str, str, int]]:
    """`(run name, kind, seed)` of every run of the invocation, in order."""
    runs = []
    students = [k for k in ("scratch", "kd", "peer", "cached") if k in args.runs]
    if "teacher" in args.runs or any(k != "scratch" for k in students):
        runs.append(("teacher", "teacher", args.teacher_seed))
    for kind in students:
        # Online runs pay a teacher forward pass per step: first seed only.
        seeds = args.seeds if kind in ("scratch", "cached") else args.seeds[:1]
        # Distilled runs are named by T and alpha, so a sweep adds runs beside them.
        tag = "" if kind == "scratch" else f"-T{args.temperature:g}-a{args.alpha:g}"
        runs += [(f"{kind}{tag}-s{seed}", kind, seed) for seed in seeds]
    return runs


def same_settings(stored: dict, wanted: dict) -> bool:
    """Whether a run stored with `stored` settings is the run `wanted` asks for.

    Only the settings the run depends on are compared: runs stored before a
    setting was dropped from their kind's list still match.
    """
    return {k: stored.get(k) for k in wanted} == wanted


def main(argv=None) -> list[dict]:
    example = load_example()
    args = parse_args(example, argv)
    bench = Bench(example, args)
    print(f"[imagenette] {bench.setup.describe()}; writing into {bench.root}")
    results = []
    for name, kind, seed in plan(args):
        results.append(bench.run(name, kind, seed))
        text = write_reports(results, bench)
    print(text, end="")
    print(f"[imagenette] wrote {bench.root}/results.md, results.json, val_top1.png; "
          f"TensorBoard logs in {bench.root}/<run>/tensorboard")  # fmt: skip
    return results


if __name__ == "__main__":
    main()

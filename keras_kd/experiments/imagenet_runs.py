"""One run of the ImageNet experiment: its settings, training, reuse and record.

`ImagenetExperiment.run(spec)` trains one `RunSpec` of `keras-kd imagenet`
(`keras_kd.experiments.imagenet`) in a `keras_kd.runs.RunFolder`, or reuses it.
Each run is fingerprinted with exactly the settings that shape it
(`ImagenetExperiment.run_settings`): the data (class names, file-list
fingerprints), the recipe, the seed, and for distilled runs the temperature,
soft weight and the teacher's own settings, so a finished run is reused only
when all of them are unchanged and refused (naming the difference) otherwise.
Each model is built right after `keras.utils.set_random_seed(seed)`, so a run
does not depend on what ran before it in the same process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import keras

from keras_kd import distribute, files, training
from keras_kd.cache import build_teacher_cache
from keras_kd.datasets import imagenet as data_sets
from keras_kd.experiments import imagenet_models as models
from keras_kd.runs import ModelRun, RunFolder

if TYPE_CHECKING:
    import tensorflow as tf

    from keras_kd.experiments.imagenet import Settings

ONLINE_KINDS = ("kd", "peer")
EPOCH_LOG = "epochs.jsonl"


class RunSpec(NamedTuple):
    """One run of an invocation: its name in the run folder, kind and seed."""

    name: str
    kind: str
    seed: int


class EpochLog(keras.callbacks.Callback):
    """Times each epoch's training (validation excluded) and appends its logs.

    The records live in `path` (`epochs.jsonl`, keyed by epoch, rewritten
    whole), so a run resumed over several sittings keeps its whole curve.
    `steps` is the number of steps run in that call (a resumed epoch runs
    fewer): `train_seconds * steps_per_epoch / steps` is a full epoch's time.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self._start = None
        self._seconds = 0.0
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def _stop(self):
        if self._start is not None:
            self._seconds = time.perf_counter() - self._start
            self._start = None

    def on_test_begin(self, logs=None):
        self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()
        records = read_epoch_log(self.path)
        records[epoch + 1] = {
            **{key: float(value) for key, value in (logs or {}).items()},
            "epoch": epoch + 1,
            "steps": self._steps,
            "train_seconds": self._seconds,
        }
        text = "".join(json.dumps(records[e]) + "\n" for e in sorted(records))
        files.atomic_write_text(self.path, text)


def read_epoch_log(path: Path) -> dict[int, dict]:
    """The records an `EpochLog` wrote, by epoch (empty when there are none)."""
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    return {record["epoch"]: record for record in records}


class ImagenetExperiment:
    """Trains, scores and reuses the runs of one invocation in a `RunFolder`.

    Args:
        settings: The experiment's `Settings`.
        folder: The open run folder.
        setup: From `keras_kd.distribute.configure`.
        data: The data (already cut to `settings.classes` etc.).
    """

    def __init__(
        self,
        settings: Settings,
        folder: RunFolder,
        setup: distribute.DistributionSetup,
        data: data_sets.ImageNetData,
    ):
        self.settings = settings
        self.folder = folder
        self.setup = setup
        self.data = data
        s = settings
        steps = s.steps_per_epoch
        if steps is None:
            if data.train.num_examples is None:
                raise ValueError(
                    "The tfds metadata does not give the training-set size; pass "
                    "--steps-per-epoch."
                )
            steps = data.train.num_examples // setup.global_batch_size
        if steps < 1:
            raise ValueError(
                f"The global batch ({setup.global_batch_size}) is larger than the "
                f"{data.train.num_examples} training images; lower --per-replica-batch-size."
            )
        self.steps = steps
        self.train_counter = data_sets.DecodeCounter()
        self._teacher = None
        self._cache = None
        self.cache_record: dict = {}

    @functools.cached_property
    def val(self) -> tf.data.Dataset:
        """The validation batches, built (which decodes the split once) when a
        run first needs them: a rerun whose models are all finished skips it."""
        return data_sets.eval_dataset(
            self.data,
            image_size=self.settings.image_size,
            batch_size=self.setup.global_batch_size,
            cache_bytes=self.settings.cache_mb * 2**20,
        )

    def model_run(self, name: str, settings: Mapping) -> ModelRun:
        """`RunFolder.model` with nested settings flattened (`teacher.epochs`), so
        that a refusal names the very setting that differs."""
        return self.folder.model(name, flatten(settings))

    def say(self, text: str) -> None:
        """Prints a log line (on the chief worker only)."""
        if self.setup.is_chief:
            print(f"[imagenet] {text}", flush=True)

    def data_settings(self) -> dict:
        """What identifies the data a model was trained and scored on."""
        d = self.data
        listing = {}
        for split in ("train", "val"):
            part = getattr(d, split)
            listing[f"{split}_images"] = part.num_examples
            if isinstance(part, data_sets.FolderSplit):
                listing[f"{split}_files"] = part.fingerprint()
        return {"source": d.source, "classes": d.class_names, **listing}

    def recipe_settings(self, epochs: int, seed: int) -> dict:
        """The training recipe of a run of `epochs` epochs from `seed`."""
        s, setup = self.settings, self.setup
        return {
            "data": self.data_settings(),
            "image_size": s.image_size,
            "epochs": epochs,
            "steps_per_epoch": self.steps,
            "global_batch_size": setup.global_batch_size,
            "learning_rate": setup.learning_rate,
            "warmup_epochs": s.warmup_epochs,
            "momentum": s.momentum,
            "weight_decay": s.weight_decay,
            "bn_momentum": s.bn_momentum,
            "precision": setup.precision,
            "xla": s.xla,
            "seed": seed,
        }

    @functools.cached_property
    def teacher_settings(self) -> dict:
        """Every setting that shapes the teacher."""
        s = self.settings
        # The keys stay those of 0.2, so that run folders made then still resume.
        network = {"teacher": s.teacher_network, "teacher_width": s.teacher_width}
        if s.teacher_weights == "scratch":
            epochs = s.teacher_epochs or s.epochs
            return {**network, "weights": "scratch",
                    **self.recipe_settings(epochs, s.teacher_seed)}  # fmt: skip
        weights = s.teacher_weights
        if weights != "imagenet":
            weights = {"file": os.path.abspath(weights),
                       "sha256": file_sha256(Path(weights))}  # fmt: skip
        return {**network, "weights": weights, "data": self.data_settings(),
                "image_size": s.image_size, "precision": self.setup.precision}  # fmt: skip

    def cache_settings(self) -> dict:
        """Every setting that shapes the K-view teacher cache."""
        s = self.settings
        return {
            "teacher": self.teacher_settings,
            "views": s.views,
            "cache_source_size": s.cache_source_size,
            "image_size": s.image_size,
            "seed": s.teacher_seed,
        }

    def run_settings(self, spec: RunSpec) -> dict:
        """Every setting that shapes the run `spec` (and nothing else)."""
        s = self.settings
        if spec.kind == "teacher":
            return self.teacher_settings
        wanted = {
            "kind": spec.kind,
            "student": s.student_network,
            "student_width": s.student_width,
            **self.recipe_settings(s.epochs, spec.seed),
        }
        if spec.kind in models.DISTILLING_KINDS:
            wanted.update(temperature=s.temperature, soft_weight=s.soft_weight,
                          teacher=self.teacher_settings)  # fmt: skip
        if spec.kind == "cached":
            wanted["cache"] = self.cache_settings()
        return wanted

    def run(self, spec: RunSpec) -> dict:
        """Trains (or reuses, or resumes) one run; returns its record."""
        run = self.model_run(spec.name, self.run_settings(spec))
        if run.finished:
            record = run.record
            self.say(f"{spec.name}: finished earlier, top-1 {record['top1']:.4f}")
            return record
        if spec.kind == "teacher" and self.settings.teacher_weights != "scratch":
            return self._score_given_teacher(run)
        return self._train(spec, run)

    def _score_given_teacher(self, run: ModelRun) -> dict:
        teacher = self.teacher()
        record = {"run": "teacher", "kind": "teacher", "seed": None, "epochs": 0,
                  **models.score(teacher, self.val)}  # fmt: skip
        run.finish(None, record)
        return record

    def _network(self, spec: RunSpec) -> keras.Model:
        s = self.settings
        keras.utils.set_random_seed(spec.seed)
        if spec.kind == "teacher":
            return models.application(
                s.teacher_network, self.data.num_classes, s.image_size,
                width=s.teacher_width, model_name="teacher",
            )  # fmt: skip
        width = s.student_width if s.student_network == "mobilenetv2" else 1.0
        return models.application(
            s.student_network, self.data.num_classes, s.image_size, width=width,
            model_name="student",
        )  # fmt: skip

    def online_teacher(self, spec: RunSpec) -> keras.Model | None:
        """The teacher that run `spec` runs on every batch, or None if it needs none.

        A subclass with kinds of its own overrides it (with `compile_model`).
        """
        return self.teacher() if spec.kind in ONLINE_KINDS else None

    def compile_model(
        self,
        spec: RunSpec,
        network: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        teacher: keras.Model | None,
    ) -> keras.Model:
        """The compiled model that `fit` trains for run `spec`: `models.compile_run`.

        Called inside the strategy scope, with `online_teacher(spec)`. A subclass
        overrides it to train other kinds of run, e.g. a `keras_kd.Distiller`
        with hints through `compile_run(..., distiller_options={"hints": ...})`.
        """
        s = self.settings
        return models.compile_run(
            spec.kind, network, optimizer=optimizer, teacher=teacher,
            temperature=s.temperature, soft_weight=s.soft_weight, jit_compile=s.xla,
        )  # fmt: skip

    def _train(self, spec: RunSpec, run: ModelRun) -> dict:
        s, setup = self.settings, self.setup
        epochs = (s.teacher_epochs or s.epochs) if spec.kind == "teacher" else s.epochs
        total = epochs * self.steps
        with setup.strategy.scope():
            network = self._network(spec)
            batchnorm = models.set_batchnorm(network, s.bn_momentum)
        teacher = self.online_teacher(spec)
        make_dataset, extra = self._online_stream(spec.seed), {}
        if spec.kind == "cached":
            make_dataset, extra = self._cached_stream(spec.seed)
        with setup.strategy.scope():
            optimizer = models.sgd(
                setup.learning_rate, total, int(round(s.warmup_epochs * self.steps)),
                momentum=s.momentum, weight_decay=s.weight_decay,
            )  # fmt: skip
            model = self.compile_model(spec, network, optimizer, teacher)
        self.say(f"{spec.name}: {spec.kind}, seed {spec.seed}, {epochs} epochs x "
                 f"{self.steps} steps; {batchnorm}")  # fmt: skip
        log_path = run.folder / EPOCH_LOG
        callbacks = [EpochLog(log_path)]
        if setup.is_chief:
            callbacks.append(
                keras.callbacks.TensorBoard(
                    str(run.folder / "tensorboard"),
                    write_graph=False,
                    update_freq=max(self.steps // 10, 1),
                )
            )
        training.fit_resumable(
            model,
            make_dataset,
            epochs=epochs,
            steps_per_epoch=self.steps,
            backup_dir=run.backup_dir,
            save_freq=s.save_freq,
            callbacks=callbacks,
            validation_data=self.val,
            verbose=s.verbose if setup.is_chief else 2,
        )
        scores = models.score(network, self.val)
        epochs_log = read_epoch_log(log_path)
        record = {"run": spec.name, "kind": spec.kind, "seed": spec.seed,
                  "epochs": epochs, **scores, **self._timings(epochs_log),
                  **hint_loss_curves(epochs_log), **extra}  # fmt: skip
        run.finish(network, record)
        self.say(f"{spec.name}: top-1 {record['top1']:.4f}, top-5 {record['top5']:.4f}, "
                 f"{record['seconds_per_epoch']:.1f} s/epoch")  # fmt: skip
        return record

    def _timings(self, epochs: Mapping[int, dict]) -> dict:
        full = [
            r["train_seconds"] * self.steps / r["steps"]
            for r in epochs.values()
            if r.get("steps")
        ]
        median = statistics.median(full) if full else math.nan
        return {
            "seconds_per_epoch": median,
            "epoch_seconds": full,
            "train_images_per_s": self.steps * self.setup.global_batch_size / median
            if full
            else math.nan,
            "val_top1_curve": [epochs[e].get("val_top1") for e in sorted(epochs)],
        }

    def _online_stream(self, seed: int):
        s, setup = self.settings, self.setup

        def make_dataset(start_step):
            def per_worker(context):
                return data_sets.train_dataset(
                    self.data,
                    image_size=s.image_size,
                    global_batch_size=setup.global_batch_size,
                    seed=seed,
                    start_step=start_step,
                    input_context=context,
                    counter=self.train_counter,
                    cache_bytes=s.cache_mb * 2**20,
                )

            return distribute.distributed_dataset(setup.strategy, per_worker)

        return make_dataset

    def _cached_stream(self, seed: int):
        """The cache's replay from any step, and what to record about the cache."""
        s = self.settings
        cache, images = self.cache()
        augment = data_sets.crop_augment(s.image_size)

        def make_dataset(start_step):
            stream = cache.dataset(
                images.images,
                images.labels,
                batch_size=self.setup.global_batch_size,
                seed=seed,
                augment=augment,
                drop_remainder=True,
            )
            return stream.repeat().skip(start_step)

        return make_dataset, {"views": s.views, **self.cache_record}

    def cache(self):
        """The K-view teacher cache (built once, reused by later invocations)."""
        if self._cache is not None:
            return self._cache
        s = self.settings
        if not isinstance(self.data.train, data_sets.FolderSplit):
            raise ValueError(
                "--runs cached needs an image folder (--source folder): the cache "
                "holds the decoded training images, which the tfds source does not give."
            )
        name = f"teacher-cache-K{s.views}-{s.cache_source_size}px"
        run = self.model_run(name, self.cache_settings())
        images = data_sets.decode_images(
            self.data.train, s.cache_source_size, class_names=self.data.class_names
        )
        if images.skipped:
            self.say(f"warning: {len(images.skipped)} undecodable training image(s) "
                     "left out of the cache")  # fmt: skip
        start = time.perf_counter()
        cache = build_teacher_cache(
            self.teacher(),
            images.images,
            run.folder / "cache",
            views=s.views,
            augment=data_sets.crop_augment(s.image_size),
            seed=s.teacher_seed,
            verbose=bool(s.verbose),
        )
        if not run.finished:
            run.finish(None, {"build_seconds": time.perf_counter() - start})
        size = sum(
            f.stat().st_size for f in (run.folder / "cache").rglob("*") if f.is_file()
        )
        self.cache_record = {
            "cache_build_seconds": run.record["build_seconds"],
            "cache_mb": size / 2**20,
        }
        self._cache = (cache, images)
        return self._cache

    def teacher(self) -> keras.Model:
        """The teacher, frozen: its finished run's model, or the given weights."""
        if self._teacher is None:
            s = self.settings
            with self.setup.strategy.scope():
                if s.teacher_weights == "scratch":
                    run = self.model_run("teacher", self.teacher_settings)
                    if not run.finished:
                        raise ValueError(
                            "The teacher has not been trained in this folder yet: "
                            "include 'teacher' in --runs."
                        )
                    model = run.load(compile=False)
                else:
                    model, origin = models.pretrained_teacher(
                        s.teacher_network, s.teacher_weights, self.data.class_names,
                        s.image_size, width=s.teacher_width,
                    )  # fmt: skip
                    self.say(f"teacher {s.teacher_network}: {origin}")
            model.trainable = False
            self._teacher = model
        return self._teacher


def hint_loss_curves(epochs: Mapping[int, dict]) -> dict[str, list]:
    """Each hint loss a `keras_kd.Distiller` logged, per epoch, as `<name>_curve`.

    Example:

    >>> hint_loss_curves({1: {"loss": 2.0, "hint_stage_loss": 0.5},
    ...                   2: {"loss": 1.0, "hint_stage_loss": 0.25}})
    {'hint_stage_loss_curve': [0.5, 0.25]}
    """
    keys = sorted({key for record in epochs.values() for key in record
                   if key.startswith("hint_") and key.endswith("_loss")})  # fmt: skip
    return {f"{key}_curve": [epochs[e].get(key) for e in sorted(epochs)] for key in keys}


def flatten(settings: Mapping, prefix: str = "") -> dict:
    """Nested settings as one level of dotted names.

    Example:

    >>> flatten({"epochs": 8, "teacher": {"epochs": 16}})
    {'epochs': 8, 'teacher.epochs': 16}
    """
    flat = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()

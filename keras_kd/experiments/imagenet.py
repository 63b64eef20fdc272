"""ImageNet / Imagenette: a ResNet-50 teacher distilled into a MobileNetV2 student.

The recipe follows MMRazor's ImageNet knowledge-distillation runs: SGD with
momentum, a linear warm-up then cosine decay, no label smoothing, students from
scratch; temperature and soft weight are options. The batch size is per replica
and the learning rate follows the linear scaling rule (`--base-lr` is for a
global batch of 256). It runs on one device, every GPU of a host or several
hosts (`keras_kd.distribute`).

Kinds of run (`--runs`, comma-separated; default `kd`), every one with the same
data pipeline, recipe and number of epochs:

- `teacher`: the teacher, trained from scratch (`--teacher-weights scratch`) or
  scored with given weights; done first whenever a distilled run needs it;
- `scratch`: the student on hard labels, one run per seed (`--seeds`);
- `kd`: the student distilled online with `keras_kd.Distiller`;
- `peer`: the student distilled online with `keras.distillation.Distiller`,
  configured to compute the same loss (`LogitsDistillation(temperature=T,
  loss=KLDivergence())`, `student_loss_weight = 1 - soft_weight`);
- `cached`: the student distilled with `keras_kd.Distiller` from a
  teacher-output cache of `--views` augmented views per training image
  (`keras_kd.cache`): the teacher runs once, not at every step.

Every model is a run of a `keras_kd.runs.RunFolder` under `--out`, named by
what is swept (`teacher`, `scratch-s0`, `kd-T4-w0.9-s0`, the cache
`teacher-cache-K4-128px`). Each run records exactly the settings that shape it,
so a rerun skips finished runs, resumes an interrupted one at its last backup
(`--save-freq`), and refuses a run asked for with other settings, naming them.
The teacher does not depend on student options, nor the scratch students on the
temperature or soft weight: a sweep over `--temperature` in one folder trains
only the new distilled runs and reuses the cache. `results.md`, `results.json`
and `curves.png` (validation top-1 per epoch) are rewritten after every run.

This module holds the command (options, plan, main); one run's settings,
training and reuse are `keras_kd.experiments.imagenet_runs`, the networks and
their compilation `imagenet_models`, the results table and issue 10's targets
`imagenet_results`. `benchmarks/imagenette.py` is this command with the
benchmark's schedule as defaults.

Examples:

    keras-kd imagenet --data-dir data/imagenette --teacher-epochs 16 --epochs 8
    keras-kd imagenet --quick --out runs/imagenet-quick
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from keras_kd import commands, distribute
from keras_kd.datasets import imagenet as data_sets
from keras_kd.datasets.location import DATA_DIR_VARIABLE
from keras_kd.experiments import imagenet_models as models
from keras_kd.experiments.imagenet_results import write_results
from keras_kd.experiments.imagenet_runs import (
    ONLINE_KINDS,
    ImagenetExperiment,
    RunSpec,
)
from keras_kd.runs import RunFolder

KINDS = models.KINDS


@dataclasses.dataclass(frozen=True)
class Settings:
    """Options of the ImageNet experiment (each is the `--option` of that name).

    Args:
        data_dir: ImageNet-style folder (`train/<wnid>/`, `val/<wnid>/`) or
            tfds data folder; `None` reads `KERAS_KD_DATA_DIR`.
        source: `"auto"`, `"folder"` or `"tfds"` (`imagenet2012`).
        image_size: Training and evaluation crop size.
        cache_mb: Hold encoded training files and cropped evaluation images in
            memory up to this size (0: never).
        classes: Use the first N classes (0: all; folder source).
        train_per_class: Training images kept per class (0: all).
        val_per_class: Validation images kept per class (0: all).
        teacher_network: The teacher network, one of `imagenet_models.TEACHERS`.
        teacher_width: Width multiplier of a MobileNetV2 teacher.
        teacher_weights: `"scratch"` (trained here), `"imagenet"` (Keras
            download) or a `.keras` / weights file.
        teacher_epochs: Epochs of a scratch teacher (`None`: `epochs`).
        teacher_seed: Seed of the teacher and of the cache's views.
        student_network: The student network, one of `imagenet_models.STUDENTS`.
        student_width: MobileNetV2 width multiplier of the student.
        bn_momentum: BatchNormalization momentum of every model trained here
            (0 keeps Keras'; its MobileNetV2 uses 0.999, which lags on short
            runs).
        epochs: Epochs of every student run.
        steps_per_epoch: Steps per epoch (`None`: training images // global
            batch).
        per_replica_batch_size: Batch size per replica (the global batch is
            this times the number of replicas).
        base_lr: Learning rate for a global batch of 256 (linear rule).
        warmup_epochs: Linear warm-up before the cosine decay.
        momentum: SGD momentum.
        weight_decay: Keras' decoupled weight decay.
        temperature: Softmax temperature of the soft targets.
        soft_weight: Weight of the soft term (the hard term gets 1 - it).
        seeds: Seeds of the student runs.
        online_seeds: Online runs (`kd`, `peer`) use only the first this many
            of `seeds` (they pay a teacher forward pass per step); 0: all.
        runs: Kinds of run, a subset of `KINDS`.
        views: Augmented views per training image in the teacher cache.
        cache_source_size: Training images are decoded once at this square
            size for the cache.
        strategy: One of `keras_kd.distribute.STRATEGIES`.
        precision: One of `keras_kd.distribute.PRECISIONS`.
        xla: Compile the steps with XLA.
        deterministic: TensorFlow's op determinism (repeatable GPU runs).
        out: The run folder.
        save_freq: Back up every this many steps (and at every epoch end).
        verbose: Keras verbosity (0 silent, 1 bars, 2 a line per epoch).
        quick: A run of about a minute on a tiny subset (see `QUICK`).

    Raises:
        ValueError: for a value out of range, naming the option.
    """

    data_dir: str | None = None
    source: str = "auto"
    image_size: int = 112
    cache_mb: int = 512
    classes: int = 0
    train_per_class: int = 0
    val_per_class: int = 0
    teacher_network: str = "resnet50"
    teacher_width: float = 1.0
    teacher_weights: str = "scratch"
    teacher_epochs: int | None = None
    teacher_seed: int = 0
    student_network: str = "mobilenetv2"
    student_width: float = 1.0
    bn_momentum: float = 0.99
    epochs: int = 6
    steps_per_epoch: int | None = None
    per_replica_batch_size: int = 64
    base_lr: float = 0.1
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    temperature: float = 4.0
    soft_weight: float = 0.9
    seeds: tuple[int, ...] = (0,)
    online_seeds: int = 0
    runs: tuple[str, ...] = ("kd",)
    views: int = 4
    cache_source_size: int = 128
    strategy: str = "auto"
    precision: str = "float32"
    xla: bool = False
    deterministic: bool = False
    out: str = "runs/imagenet"
    save_freq: int = 500
    verbose: int = 1
    quick: bool = False

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "runs", tuple(self.runs))
        checks = (
            ("--image-size", self.image_size, self.image_size >= 32, ">= 32 (keras.applications' smallest input)"),
            ("--epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("--teacher-epochs", self.teacher_epochs, self.teacher_epochs is None or self.teacher_epochs >= 1, ">= 1"),
            ("--steps-per-epoch", self.steps_per_epoch, self.steps_per_epoch is None or self.steps_per_epoch >= 1, ">= 1"),
            ("--per-replica-batch-size", self.per_replica_batch_size, self.per_replica_batch_size >= 1, ">= 1"),
            ("--base-lr", self.base_lr, self.base_lr > 0, "> 0"),
            ("--warmup-epochs", self.warmup_epochs, self.warmup_epochs >= 0, ">= 0"),
            ("--momentum", self.momentum, 0 <= self.momentum < 1, "in [0, 1)"),
            ("--weight-decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
            ("--bn-momentum", self.bn_momentum, 0 <= self.bn_momentum < 1, "in [0, 1) (0 keeps Keras' own)"),
            ("--temperature", self.temperature, self.temperature > 0, "> 0"),
            ("--soft-weight", self.soft_weight, 0 <= self.soft_weight <= 1, "in [0, 1]"),
            ("--seeds", list(self.seeds), bool(self.seeds) and min(self.seeds) >= 0, "one or more integers >= 0"),
            ("--online-seeds", self.online_seeds, self.online_seeds >= 0, ">= 0"),
            ("--runs", list(self.runs), bool(self.runs) and set(self.runs) <= set(KINDS), f"a subset of {','.join(KINDS)}"),
            ("--views", self.views, self.views >= 1, ">= 1"),
            ("--cache-source-size", self.cache_source_size, self.cache_source_size >= 1, ">= 1"),
            ("--classes", self.classes, self.classes == 0 or self.classes >= 2, "0 (all) or >= 2"),
            ("--train-per-class", self.train_per_class, self.train_per_class >= 0, ">= 0"),
            ("--val-per-class", self.val_per_class, self.val_per_class >= 0, ">= 0"),
            ("--cache-mb", self.cache_mb, self.cache_mb >= 0, ">= 0"),
            ("--save-freq", self.save_freq, self.save_freq >= 1, ">= 1"),
            ("--teacher-network", self.teacher_network, self.teacher_network in models.TEACHERS, f"one of {', '.join(models.TEACHERS)}"),
            ("--student-network", self.student_network, self.student_network in models.STUDENTS, f"one of {', '.join(models.STUDENTS)}"),
            ("--teacher-width", self.teacher_width, self.teacher_width > 0, "> 0"),
            ("--student-width", self.student_width, self.student_width > 0, "> 0"),
        )  # fmt: skip
        for option, value, valid, expected in checks:
            if not valid:
                raise ValueError(f"{option} must be {expected}, got {value!r}.")
        weights = self.teacher_weights
        if weights not in ("scratch", "imagenet") and not Path(weights).is_file():
            raise FileNotFoundError(
                f"--teacher-weights {weights!r} is neither 'scratch', 'imagenet' nor an "
                "existing file. Give a .keras model or a .weights.h5 file of the teacher."
            )


# `--quick`: a run of about a minute (two classes, a few dozen images, one epoch
# at 32 px, width-0.35 networks); options given on the command line still win.
QUICK = {
    "classes": 2,
    "train_per_class": 12,
    "val_per_class": 6,
    "image_size": 32,
    "cache_source_size": 40,
    "epochs": 1,
    "teacher_epochs": 1,
    "per_replica_batch_size": 4,
    "teacher_network": "mobilenetv2",
    "teacher_width": 0.35,
    "student_width": 0.35,
    "views": 2,
    "warmup_epochs": 0.5,
    "save_freq": 2,
    "verbose": 0,
}


# `Settings` fields renamed in 0.3.0: their options meant something else here
# than in `keras-kd distill` (a model file, a global batch).
RENAMED_FIELDS = {
    "teacher": "teacher_network",
    "student": "student_network",
    "batch_size": "per_replica_batch_size",
}


def renamed_settings(defaults: Mapping | None) -> dict:
    """`defaults` with the `Settings` fields of keras-kd 0.2 under their 0.3 names.

    A 0.2 name still works in 0.3, with a `FutureWarning`; both names at once
    is an error.

    Example:

    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", FutureWarning)
    ...     renamed_settings({"batch_size": 32, "epochs": 2})
    {'per_replica_batch_size': 32, 'epochs': 2}
    """
    settings = {}
    for key, value in dict(defaults or {}).items():
        new = RENAMED_FIELDS.get(key)
        if new is None:
            settings[key] = value
            continue
        if new in (defaults or {}):
            raise ValueError(f"Give {new!r} only: {key!r} is its keras-kd 0.2 name.")
        warnings.warn(
            f"The imagenet setting {key!r} is {new!r} since keras-kd 0.3.0; the old "
            "name goes in 0.4.",
            FutureWarning,
            stacklevel=3,
        )
        settings[new] = value
    return settings


def run_name(kind: str, seed: int, settings: Settings) -> str:
    """The run's name: the kind, what is swept (T, soft weight) and the seed.

    Example:

    >>> run_name("cached", 0, Settings())
    'cached-T4-w0.9-s0'
    """
    if kind == "teacher":
        return "teacher"
    if kind == "scratch":
        return f"scratch-s{seed}"
    return f"{kind}-T{settings.temperature:g}-w{settings.soft_weight:g}-s{seed}"


def plan(settings: Settings) -> list[RunSpec]:
    """Every run of an invocation, in order: the teacher first when needed.

    Example:

    >>> [spec.name for spec in plan(Settings(runs=("scratch", "kd"), seeds=(0, 1)))]
    ['teacher', 'scratch-s0', 'scratch-s1', 'kd-T4-w0.9-s0', 'kd-T4-w0.9-s1']
    """
    students = [kind for kind in KINDS[1:] if kind in settings.runs]
    specs = []
    if "teacher" in settings.runs or set(students) & set(models.DISTILLING_KINDS):
        specs.append(RunSpec("teacher", "teacher", settings.teacher_seed))
    for kind in students:
        seeds = settings.seeds
        if kind in ONLINE_KINDS and settings.online_seeds:
            seeds = seeds[: settings.online_seeds]
        specs += [RunSpec(run_name(kind, seed, settings), kind, seed) for seed in seeds]
    return specs


def uses_synthetic_data(settings: Settings) -> bool:
    """Whether the run uses a synthetic image folder: `--quick` with no data
    folder configured (neither `--data-dir` nor `KERAS_KD_DATA_DIR`)."""
    return (
        settings.quick
        and settings.data_dir is None
        and not os.environ.get(DATA_DIR_VARIABLE)
    )


def load_data(
    settings: Settings, synthetic_dir: Path | None = None
) -> data_sets.ImageNetData:
    """The data of a run, cut to the settings' subset.

    Args:
        settings: The experiment's settings.
        synthetic_dir: Where to write (once) and read the tiny synthetic image
            folder when `uses_synthetic_data(settings)`.

    Returns:
        An `ImageNetData`.

    Raises:
        FileNotFoundError, ValueError: from `keras_kd.datasets.imagenet`.
    """
    data_dir = settings.data_dir
    if uses_synthetic_data(settings):
        if synthetic_dir is None:
            raise ValueError("`synthetic_dir` is needed for --quick without data.")
        data_dir = synthetic_dir
        if not (data_dir / "train").is_dir():
            data_sets.write_synthetic_image_folder(
                data_dir, train_per_class=12, val_per_class=6
            )
    data = data_sets.load_imagenet(data_dir, source=settings.source)
    if settings.classes or settings.train_per_class or settings.val_per_class:
        data = data.subset(settings.classes, settings.train_per_class,
                           settings.val_per_class)  # fmt: skip
    return data


def run_folder_for(settings: Settings, setup) -> Path:
    """The chief writes into `--out`; worker `i` of a multi-worker run into
    `<out>.worker-<i>` (its own backups and models, never the chief's)."""
    out = Path(settings.out)
    if setup.is_chief:
        return out
    return out.with_name(f"{out.name}.worker-{setup.worker_index}")


def run(
    settings: Settings,
    *,
    title: str = "ImageNet distillation",
    with_targets: bool = False,
) -> list[dict]:
    """Runs every run of `plan(settings)` and writes the results.

    Args:
        settings: The experiment's `Settings`.
        title: Heading of `results.md`.
        with_targets: Add the Imagenette issue's targets (`targets`) to the
            results.

    Returns:
        The record of every run, in `plan` order.

    Raises:
        FileNotFoundError, ValueError: for missing or unusable data.
        keras_kd.runs.RunSettingsError: when `--out` holds a run of the same
            name made with other settings (the message names them).
        keras_kd.files.FolderNotOwnedError: when `--out` holds files keras-kd
            did not write.

    Example:

    ```python
    # Imagenette from KERAS_KD_DATA_DIR (or synthetic images); about a minute
    records = run(Settings(quick=True, out="runs/imagenet-quick", **QUICK))
    ```
    """
    previous_policy = keras.mixed_precision.dtype_policy().name
    # The strategy must exist before any other TensorFlow op runs.
    setup = distribute.configure(
        settings.strategy,
        precision=settings.precision,
        jit_compile=settings.xla,
        per_replica_batch_size=settings.per_replica_batch_size,
        base_lr=settings.base_lr,
    )
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        # Bad data is reported before the run folder is created.
        data = None if uses_synthetic_data(settings) else load_data(settings)
        with RunFolder(run_folder_for(settings, setup)) as folder:
            if data is None:
                data = load_data(settings, folder.root / "synthetic-images")
            experiment = ImagenetExperiment(settings, folder, setup, data)
            experiment.say(setup.describe())
            experiment.say(
                f"data: {data.source}, {data.num_classes} classes, "
                f"{data.train.num_examples} train / {data.val.num_examples} val "
                f"images, {settings.image_size}px, {experiment.steps} steps/epoch; "
                f"writing into {folder.root}"
            )
            records, text = [], ""
            for spec in plan(settings):
                records.append(experiment.run(spec))
                if setup.is_chief:
                    text = write_results(experiment, records, title=title,
                                         with_targets=with_targets)  # fmt: skip
            scored = [r["images"] for r in records if "images" in r]
            if scored and (data.val.num_examples or 0) > min(scored):
                experiment.say(
                    f"warning: {data.val.num_examples - min(scored)} undecodable "
                    f"validation image(s) skipped; scores are over {min(scored)} images"
                )
            if experiment.train_counter.skipped:
                experiment.say(
                    f"warning: {experiment.train_counter.skipped} undecodable training "
                    "image read(s) skipped (a broken file is retried every epoch)"
                )
            if setup.is_chief:
                print(text, end="")
                experiment.say(
                    f"wrote {folder.root}/results.md, results.json, curves.png; "
                    f"TensorBoard logs in {folder.root}/models/<run>/tensorboard"
                )
            return records
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)


def build_parser(defaults: Mapping | None = None, prog: str = "keras-kd imagenet"):
    """The options of `keras-kd imagenet` (see `Settings` for each one).

    Args:
        defaults: Settings to show as defaults instead of `Settings`' own (the
            benchmark's schedule, say).
        prog: The program name in messages.

    Returns:
        A `keras_kd.commands.CommandParser`; options left out parse as `None`
        (`settings_from_args` fills them in).

    Example:

    >>> build_parser().parse_args(["--soft-weight", "0.5"]).soft_weight
    0.5
    """
    base = {**dataclasses.asdict(Settings()), **renamed_settings(defaults)}
    parser = commands.CommandParser(prog=prog, description=__doc__.split("\n\n")[0])
    groups = {}

    def add(group: str, flag: str, help: str, **kwargs):
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        commands.add_setting(groups[group], flag, help, defaults=base, quick=QUICK,
                             **kwargs)  # fmt: skip

    positive_int, positive_float = commands.positive(int), commands.positive(float)
    add("data", "--data-dir", "ImageNet-style folder (train/<wnid>/, val/<wnid>/) "
        "or tfds data folder; None: $KERAS_KD_DATA_DIR")  # fmt: skip
    add("data", "--source", "image folder or tensorflow-datasets imagenet2012",
        choices=data_sets.SOURCES)  # fmt: skip
    add("data", "--image-size", "training and evaluation crop (224 for the ImageNet "
        "recipe; 112 suits CPUs)", type=positive_int)  # fmt: skip
    add("data", "--cache-mb", "hold encoded training files / cropped evaluation images "
        "in memory up to this size (0: never)", type=commands.count)  # fmt: skip
    add("data", "--classes", "use the first N classes (0: all)", type=commands.count)
    add("data", "--train-per-class", "training images per class (0: all)", type=commands.count)
    add("data", "--val-per-class", "validation images per class (0: all)", type=commands.count)
    add("models", "--teacher-network", "the teacher's architecture",
        choices=models.TEACHERS)  # fmt: skip
    add("models", "--teacher-width", "width multiplier of a mobilenetv2 teacher",
        type=positive_float)  # fmt: skip
    add("models", "--teacher-weights", "'scratch' (trained here, --teacher-epochs), "
        "'imagenet' (Keras download, needs the internet) or a .keras / .weights.h5 / "
        "keras.applications .h5 file")  # fmt: skip
    add("models", "--teacher-epochs", "epochs of a scratch teacher (None: --epochs)",
        type=positive_int)  # fmt: skip
    add("models", "--teacher-seed", "seed of the teacher and of the cache's views",
        type=commands.count)  # fmt: skip
    add("models", "--student-network", "the student's architecture",
        choices=models.STUDENTS)  # fmt: skip
    add("models", "--student-width", "MobileNetV2 width multiplier of the student",
        type=positive_float)  # fmt: skip
    add("models", "--bn-momentum", "BatchNormalization momentum of every model trained "
        "here; Keras' MobileNetV2 uses 0.999, which lags on short runs; 0 keeps "
        "Keras'", type=float)  # fmt: skip
    add("recipe", "--epochs", "epochs of every student run", type=positive_int)
    add("recipe", "--steps-per-epoch", "None: training images // global batch",
        type=positive_int)  # fmt: skip
    add("recipe", "--per-replica-batch-size", "batch size on each replica (the "
        "global batch is this times the replicas)", type=positive_int)  # fmt: skip
    add("recipe", "--base-lr", "learning rate for a global batch of 256 (linear rule)",
        type=positive_float)  # fmt: skip
    add("recipe", "--warmup-epochs", "linear warm-up before the cosine decay",
        type=float)  # fmt: skip
    add("recipe", "--momentum", "SGD momentum", type=float)
    add("recipe", "--weight-decay", "Keras' decoupled weight decay", type=float)
    add("recipe", "--temperature", "softmax temperature of the soft targets",
        type=positive_float)  # fmt: skip
    add("recipe", "--soft-weight", "weight of the soft term; the hard labels get "
        "1 - soft weight", type=commands.fraction)  # fmt: skip
    add("recipe", "--seeds", "comma-separated student seeds (two or more for a spread)",
        type=commands.count_list)  # fmt: skip
    add("runs", "--runs", f"comma-separated kinds of run: {','.join(KINDS)} (the "
        "teacher is trained when a distilled run needs it)",
        type=commands.names(KINDS))  # fmt: skip
    add("runs", "--online-seeds", "online runs (kd, peer) use only the first N seeds; "
        "0: all", type=commands.count)  # fmt: skip
    add("runs", "--views", "augmented views per image in the teacher cache",
        type=positive_int)  # fmt: skip
    add("runs", "--cache-source-size", "training images are decoded once at this "
        "square size for the cache", type=positive_int)  # fmt: skip
    add("system", "--strategy", "distribution strategy", choices=distribute.STRATEGIES)
    add("system", "--precision", "Keras dtype policy", choices=distribute.PRECISIONS)
    add("system", "--xla", "compile the steps with XLA", action="store_true")
    add("system", "--deterministic", "TensorFlow's op determinism (bitwise repeatable "
        "GPU runs and resumes; slower)", action="store_true")  # fmt: skip
    add("system", "--out", "the run folder (rerun the same command to resume)")
    add("system", "--save-freq", "back up every N steps and at every epoch end",
        type=positive_int)  # fmt: skip
    add("system", "--verbose", "Keras progress: 0 silent, 1 bars, 2 a line per epoch",
        type=int, choices=(0, 1, 2))  # fmt: skip
    parser.add_argument("--quick", action="store_true", default=None,
                        help="a run of about a minute on a tiny subset")  # fmt: skip
    for old, new, note in (
        ("--alpha", "--soft-weight", "it still weighs the soft term"),
        ("--mode", "--runs", "--runs scratch for the baseline, --runs kd to distil"),
        ("--seed", "--seeds", "--teacher-seed seeds the teacher"),
        ("--out-dir", "--out", ""),
    ):
        commands.add_renamed(parser, old, new, note)
    # 0.3.0: these three meant something else here than in `keras-kd distill`
    # (a path, a global batch).
    for old, new, note in (
        ("--teacher", "--teacher-network", "a trained teacher file goes to --teacher-weights"),
        ("--student", "--student-network", ""),
        ("--batch-size", "--per-replica-batch-size", "the global batch is it times the replicas"),
    ):
        commands.add_renamed(parser, old, new, note, version="0.3.0")  # fmt: skip
    return parser


def settings_from_args(
    args: argparse.Namespace, defaults: Mapping | None = None
) -> Settings:
    """`Settings` from parsed options: `defaults`, then `QUICK` under `--quick`,
    then the options given.

    Raises:
        ValueError, FileNotFoundError: for values out of range or a missing
            teacher weights file.
    """
    given = commands.given_settings(args, Settings)
    quick = QUICK if given.get("quick") else {}
    return Settings(**{**renamed_settings(defaults), **quick, **given})


def main(
    argv: Sequence[str] | None = None,
    *,
    defaults: Mapping | None = None,
    prog: str = "keras-kd imagenet",
    title: str = "ImageNet distillation",
    with_targets: bool = False,
) -> int:
    """`keras-kd imagenet ...`: runs the experiment; returns the exit status.

    A user error (bad option, missing data, a run folder made with other
    settings) is one line on stderr and exit status 2.

    Args:
        argv: The options (default: the command line).
        defaults: Settings that replace `Settings`' defaults (a benchmark's
            schedule).
        prog: The program name in messages.
        title: Heading of `results.md`.
        with_targets: Judge the Imagenette issue's targets in the results.

    Example:

    ```python
    main(["--quick", "--out", "runs/imagenet-quick"])  # 0, after about a minute
    ```
    """
    defaults = renamed_settings(defaults)  # warns once for a 0.2 name
    args = build_parser(defaults, prog).parse_args(argv)

    def body() -> int:
        run(settings_from_args(args, defaults), title=title, with_targets=with_targets)
        return 0

    return commands.run_reporting_errors(prog.removeprefix("keras-kd "), body)

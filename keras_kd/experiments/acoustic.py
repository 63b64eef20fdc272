"""Sections 4 and 6 of Hinton, Vinyals and Dean (2015) on the Free Spoken Digit Dataset.

Every 10 ms frame of an FSDD recording is one example: 40 log-mel coefficients of
the frame and its neighbours (`--left`/`--right` frames of context) in, one of 11
classes out (the utterance's digit, or silence for frames far quieter than the
utterance's loudest). A word is recognised by summing frame log-probabilities of
each digit over the utterance's speech frames.

Parts (`--parts`, comma-separated, default all):

- `baseline`: a fully connected ReLU net on hard labels (ensemble member 0).
- `ensemble`: `--members` such nets from other seeds (initialization and data
  order, `keras_kd.teachers.train_ensemble`), combined by the arithmetic mean of
  their probabilities; their logits on the training frames are written once to a
  teacher-output cache (`keras_kd.cache`).
- `distilled`: a net of the baseline's size trained from that cache on the
  ensemble's soft targets, at each of `--temperatures`.
- `fraction`: soft targets as a regularizer (section 6): the baseline net
  trained on `--fraction` of the training frames with hard labels, and on the
  same frames with soft targets from the full-data baseline, at each of
  `--fraction-temperatures`.

A validation set carved out of the training recordings (`--validation`) chooses
the temperatures; the paper's two ratios are reported at the chosen one, and the
test figures of every temperature are listed too. With `--repeats N` every
distilled and fraction model is trained from N seeds and the means count.

Every model is a run of a `keras_kd.runs.RunFolder` under `--out`: a rerun reuses
the finished models, and a model asked for with other settings than the folder's
is refused with a message naming each differing setting. The tables (shaped like
the paper's Tables 1 and 5) go to `results.md`, `results.json` and `curves.png`.

Example:

    keras-kd acoustic --data-dir data --split speaker --out runs/acoustic
    keras-kd acoustic --quick --out runs/acoustic-quick
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np

from keras_kd import commands, evaluation, reports
from keras_kd.cache import TeacherCache, build_teacher_cache
from keras_kd.datasets import fsdd
from keras_kd.distiller import Distiller
from keras_kd.experiments import _acoustic_tables as tables
from keras_kd.models import mlp
from keras_kd.runs import ModelRun, RunFolder
from keras_kd.teachers import TeacherEnsemble, train_ensemble

PARTS = ("baseline", "ensemble", "distilled", "fraction")
REPEAT_SEED = 7919  # seed offset between repeats of a model
PREDICT_BATCH = 4096


@dataclasses.dataclass(frozen=True)
class Settings:
    """Options of the acoustic experiment; the defaults are the recorded recipe.

    Args:
        data_dir: Data root holding `fsdd/` (`None`: `KERAS_KD_DATA_DIR`).
        out: The run folder.
        parts: Subset of `PARTS` to run.
        split: `"speaker"` (held-out `test_speakers`) or `"standard"` (takes
            0-4 are the test set).
        test_speakers: Held-out speakers of the speaker split.
        validation: `"auto"`, `"takes"`, `"speaker"` or `"none"` (see
            `resolve_validation`).
        validation_speakers: Held-out training speakers of
            `validation="speaker"`.
        normalization: `"speaker"`, `"global"` or `"none"` feature
            normalization.
        silence_db: Frames this many dB below the loudest frame are silence.
        left: Context frames before each frame (paper: 20).
        right: Context frames after each frame (paper: 5).
        hidden: Hidden layer sizes of every net.
        epochs: Epochs of every full-data model.
        batch_size: Batch size of every model.
        learning_rate: Adam learning rate.
        members: Ensemble size.
        temperatures: Temperatures of the distilled nets.
        soft_weight: Weight of the soft term when distilling the ensemble (the
            hard term gets `1 - soft_weight`).
        fraction: Share of the training frames of the regularizer part.
        fraction_epochs: Epochs of the fraction models.
        fraction_temperatures: Temperatures of the soft targets on the fraction.
        fraction_soft_weight: Weight of the soft term on the fraction.
        repeats: Seeds of every distilled and fraction model.
        max_takes: Use only takes below this (small runs); `None` for all.
        seed: Base seed.
        verbose: Keras verbosity (0 silent, 1 progress bar, 2 one line per
            epoch).

    Raises:
        ValueError: for an option out of its range, naming it.

    Example:

    >>> Settings(hidden=(64, 64), soft_weight=0.7).hidden
    (64, 64)
    """

    data_dir: str | None = None
    out: str = "runs/acoustic"
    parts: tuple[str, ...] = PARTS
    split: str = "speaker"
    test_speakers: tuple[str, ...] = fsdd.DEFAULT_TEST_SPEAKERS
    validation: str = "auto"
    validation_speakers: tuple[str, ...] = fsdd.DEFAULT_VALIDATION_SPEAKERS
    normalization: str = "speaker"
    silence_db: float = fsdd.DEFAULT_SILENCE_DB
    left: int = 5
    right: int = 5
    hidden: tuple[int, ...] = (256, 256)
    epochs: int = 6
    batch_size: int = 256
    learning_rate: float = 1e-3
    members: int = 10
    temperatures: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    soft_weight: float = 0.5
    fraction: float = 0.03
    fraction_epochs: int = 100
    fraction_temperatures: tuple[float, ...] = (2.0,)
    fraction_soft_weight: float = 1.0
    repeats: int = 1
    max_takes: int | None = None
    seed: int = 0
    verbose: int = 1

    def __post_init__(self):
        for name in ("parts", "test_speakers", "validation_speakers", "hidden"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("temperatures", "fraction_temperatures"):
            object.__setattr__(self, name, tuple(float(t) for t in getattr(self, name)))
        _check_settings(self)


def _check_settings(settings: Settings) -> None:
    def need(condition: bool, name: str, wanted: str) -> None:
        if not condition:
            raise ValueError(
                f"`{name}` must be {wanted}, got {getattr(settings, name)!r}."
            )

    need(
        bool(settings.parts) and set(settings.parts) <= set(PARTS),
        "parts",
        f"a non-empty subset of {PARTS}",
    )
    need(settings.split in fsdd.SPLITS, "split", f"one of {fsdd.SPLITS}")
    need(
        settings.validation in ("auto", *fsdd.VALIDATIONS),
        "validation",
        f"one of {('auto', *fsdd.VALIDATIONS)}",
    )
    need(
        settings.normalization in fsdd.NORMALIZATIONS,
        "normalization",
        f"one of {fsdd.NORMALIZATIONS}",
    )
    need(
        bool(settings.hidden) and all(int(u) >= 1 for u in settings.hidden),
        "hidden",
        "one or more positive layer widths",
    )
    for name in ("left", "right", "seed"):
        need(int(getattr(settings, name)) >= 0, name, "an integer >= 0")
    for name in ("epochs", "batch_size", "members", "fraction_epochs", "repeats"):
        need(int(getattr(settings, name)) >= 1, name, "an integer >= 1")
    need(
        settings.max_takes is None or settings.max_takes >= 1,
        "max_takes",
        "an integer >= 1 or None",
    )
    need(settings.learning_rate > 0, "learning_rate", "> 0")
    need(settings.silence_db > 0, "silence_db", "> 0 (dB)")
    need(0.0 < settings.fraction <= 1.0, "fraction", "in (0, 1]")
    for name in ("soft_weight", "fraction_soft_weight"):
        need(0.0 <= getattr(settings, name) <= 1.0, name, "in [0, 1]")
    for name in ("temperatures", "fraction_temperatures"):
        values = getattr(settings, name)
        need(
            bool(values) and all(t > 0 for t in values),
            name,
            "one or more temperatures > 0",
        )


# `--quick`: a run of well under a minute (takes 0-7, 2 members, 1 epoch).
# The standard split keeps takes 0-11: takes 0-4 are its test set and 5-9 its
# validation set, so training needs takes 10 and 11.
QUICK_STANDARD_TAKES = 12
QUICK = {
    "out": "runs/acoustic-quick",
    "hidden": (32,),
    "left": 2,
    "right": 2,
    "epochs": 1,
    "members": 2,
    "temperatures": (2.0,),
    "fraction": 0.1,
    "fraction_epochs": 3,
    "max_takes": 8,
    "verbose": 0,
}


def resolve_validation(settings: Settings) -> str:
    """The validation set `settings.validation` names, with `"auto"` resolved.

    `"auto"` holds out a training speaker on the speaker split (so validation,
    like test, is an unseen speaker) and takes 5-9 of every speaker on the
    standard split (like its test takes 0-4).

    Example:

    >>> resolve_validation(Settings(split="standard"))
    'takes'
    """
    if settings.validation != "auto":
        return settings.validation
    return "speaker" if settings.split == "speaker" else "takes"


@dataclasses.dataclass
class Frames:
    """The frames of one split as context windows, and the fraction's rows."""

    data: fsdd.FsddFrames
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    fraction_rows: np.ndarray


def load_frames(settings: Settings, cache_dir) -> Frames:
    """Loads the split's frames (log-mel features cached in `cache_dir`).

    Raises:
        FileNotFoundError: when the data cannot be found.
        ValueError: for data options that leave a set empty.
    """
    select = None
    if settings.max_takes is not None:
        select = lambda r: r.take < settings.max_takes  # noqa: E731
    data = fsdd.load_fsdd(
        settings.data_dir,
        split=settings.split,
        test_speakers=settings.test_speakers,
        normalization=settings.normalization,
        silence_db=settings.silence_db,
        cache_dir=cache_dir,
        select=select,
        validation=resolve_validation(settings),
        validation_speakers=settings.validation_speakers,
        verbose=settings.verbose,
    )
    context = (settings.left, settings.right)
    y_train = data.train.labels
    rng = np.random.default_rng(settings.seed)
    size = max(1, int(round(settings.fraction * len(y_train))))
    held = data.validation
    return Frames(
        data=data,
        x_train=data.train.windows(*context),
        y_train=y_train,
        x_test=data.test.windows(*context),
        y_test=data.test.labels,
        x_val=None if held is None else held.windows(*context),
        y_val=None if held is None else held.labels,
        fraction_rows=np.sort(rng.choice(len(y_train), size, replace=False)),
    )


class AcousticExperiment:
    """Trains, scores and reuses the experiment's models in a `RunFolder`.

    Args:
        settings: The experiment's `Settings`.
        runs: The open run folder.
        frames: The frames, from `load_frames`.
    """

    def __init__(self, settings: Settings, runs: RunFolder, frames: Frames):
        self.settings = settings
        self.runs = runs
        self.frames = frames
        self.records: dict[str, dict] = {}
        self.models: dict[str, keras.Model] = {}
        self.curves: dict[str, list[float]] = {}

    def data_settings(self) -> dict:
        """The settings that shaped the frames every model sees."""
        s, config = self.settings, self.frames.data.config
        return {
            "split": s.split,
            "test_speakers": config["test_speakers"],
            "validation": config["validation"],
            "validation_speakers": config["validation_speakers"],
            "normalization": s.normalization,
            "silence_db": s.silence_db,
            "frontend": config["frontend"],
            "max_takes": s.max_takes,
            "left": s.left,
            "right": s.right,
            "train_frames": len(self.frames.y_train),
        }

    def net_settings(self, *, epochs: int, seed: int) -> dict:
        """Data, architecture and schedule of one net."""
        s = self.settings
        return {
            **self.data_settings(),
            "hidden": list(s.hidden),
            "classes": fsdd.NUM_CLASSES,
            "optimizer": "adam",
            "learning_rate": s.learning_rate,
            "batch_size": s.batch_size,
            "epochs": epochs,
            "seed": seed,
        }

    def ensemble_settings(self) -> dict:
        """The teacher of the distilled nets, as settings of a distilled net."""
        s = self.settings
        return {
            "teacher_members": s.members,
            "teacher_seeds": [s.seed + i for i in range(s.members)],
            "teacher_epochs": s.epochs,
            "teacher_mean": "arithmetic",
        }

    def fraction_settings(self, seed: int) -> dict:
        s = self.settings
        return {
            **self.net_settings(epochs=s.fraction_epochs, seed=seed),
            "fraction": s.fraction,
            "fraction_seed": s.seed,
            "fraction_frames": len(self.frames.fraction_rows),
        }

    def build(self, name: str) -> keras.Sequential:
        """A fresh frame net (call `keras.utils.set_random_seed` first)."""
        return mlp(
            self.frames.x_train.shape[1],
            self.settings.hidden,
            fsdd.NUM_CLASSES,
            name=name.replace("-", "_"),
        )

    def compile_hard(self, model: keras.Model) -> keras.Model:
        model.compile(
            optimizer=keras.optimizers.Adam(self.settings.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    def score(self, model: keras.Model, rows: np.ndarray | None = None) -> dict:
        """Frame accuracies and word error rates of `model` on every set."""
        f = self.frames

        def logits(x):
            return evaluation.predict_logits(model, x, batch_size=PREDICT_BATCH)

        train_logits, test_logits = logits(f.x_train), logits(f.x_test)
        record = {
            "train_frame_accuracy": evaluation.accuracy(train_logits, f.y_train),
            "test_frame_accuracy": evaluation.accuracy(test_logits, f.y_test),
            "wer": fsdd.word_error_rate(test_logits, f.data.test),
        }
        if f.x_val is not None:
            val_logits = logits(f.x_val)
            record["validation_frame_accuracy"] = evaluation.accuracy(
                val_logits, f.y_val
            )
            record["validation_wer"] = fsdd.word_error_rate(
                val_logits, f.data.validation
            )
        if rows is not None:
            record["own_train_frame_accuracy"] = evaluation.accuracy(
                train_logits[rows], f.y_train[rows]
            )
        return record

    def get(
        self,
        run: ModelRun,
        system: str,
        fit: Callable[[], tuple[keras.Model, dict]],
        rows: np.ndarray | None = None,
        **fields,
    ) -> keras.Model:
        """The model of `run`: loaded when finished, else trained, scored, saved.

        Args:
            run: The model's run.
            system: Its name in the tables.
            fit: Trains it; returns `(model, history)`.
            rows: Training rows of a fraction model (for its own accuracy).
            **fields: More values for its record.
        """
        if run.name in self.models:
            return self.models[run.name]
        if run.finished:
            print(f"[{run.name}] loaded from {run.model_path}")
            model = run.load(compile=False)  # used to predict only
        else:
            print(f"[{run.name}] training")
            start = time.time()
            model, history = fit()
            record = {
                "system": system,
                "train_seconds": round(time.time() - start, 1),
                "accuracy_per_epoch": [float(v) for v in history.get("accuracy", [])],
                **fields,
                **self.score(model, rows),
            }
            run.finish(model, record)
        record = self.records[run.name] = run.record
        self.models[run.name] = model
        if record.get("accuracy_per_epoch") and "repeat_of" not in record:
            self.curves[run.name] = record["accuracy_per_epoch"]
        print(
            f"[{run.name}] test frame accuracy "
            f"{tables.percent(record['test_frame_accuracy'])}, "
            f"WER {tables.percent(record['wer'])}"
        )
        return model

    def member(self, index: int) -> keras.Model:
        """Ensemble member `index` (member 0 is the baseline), on hard labels."""
        s, f = self.settings, self.frames
        name = f"member-{index:02d}"
        seed = s.seed + index
        run = self.runs.model(
            name, {**self.net_settings(epochs=s.epochs, seed=seed), "labels": "hard"}
        )

        def fit():
            ensemble = train_ensemble(
                lambda seed: self.compile_hard(self.build(name)),
                1,
                f.x_train,
                f.y_train,
                epochs=s.epochs,
                batch_size=s.batch_size,
                seeds=[seed],
                mean="arithmetic",
                verbose=s.verbose,
            )
            model = ensemble.members[0]
            return model, model.history.history

        return self.get(run, f"Member {index}", fit)

    def ensemble(self) -> TeacherEnsemble:
        """The `--members` nets, combined by the arithmetic mean of probabilities."""
        members = [self.member(i) for i in range(self.settings.members)]
        return TeacherEnsemble(members, mean="arithmetic")

    def part_baseline(self) -> None:
        self.member(0)

    def part_ensemble(self) -> None:
        ensemble = self.ensemble()
        members = [self.records[f"member-{i:02d}"] for i in range(ensemble.num_members)]
        record = {
            "system": f"{ensemble.num_members}xEnsemble",
            **self.score(ensemble),
            "mean_member_test_frame_accuracy": float(
                np.mean([m["test_frame_accuracy"] for m in members])
            ),
        }
        self.records["ensemble"] = record
        print(
            f"[ensemble] test frame accuracy "
            f"{tables.percent(record['test_frame_accuracy'])}, "
            f"WER {tables.percent(record['wer'])}"
        )

    def soft_model(
        self,
        run: ModelRun,
        system: str,
        cache: TeacherCache,
        rows: np.ndarray | None,
        *,
        temperature: float,
        soft_weight: float,
        epochs: int,
        seed: int,
        **fields,
    ) -> keras.Model:
        """A net trained on cached soft targets (and the hard labels), or loaded.

        Args:
            run: The model's run.
            system: Its name in the tables.
            cache: The teacher's outputs on the training rows.
            rows: The training rows (`None`: every training frame).
            temperature: Distillation temperature.
            soft_weight: Weight of the soft term.
            epochs: Epochs.
            seed: Seed of the initialization and of the data order.
            **fields: More values for its record.
        """
        f = self.frames
        x, y = (
            (f.x_train, f.y_train)
            if rows is None
            else (f.x_train[rows], f.y_train[rows])
        )

        def fit():
            keras.utils.set_random_seed(seed)
            model = self.build(run.name)
            distiller = Distiller(
                student=model,
                teacher=None,
                temperature=temperature,
                soft_weight=soft_weight,
            )
            distiller.compile(
                optimizer=keras.optimizers.Adam(self.settings.learning_rate),
                metrics=["accuracy"],
            )
            data = cache.dataset(
                x,
                y,
                batch_size=self.settings.batch_size,
                seed=seed,
                temperature=temperature,
            )
            # The cache's dataset reshuffles its rows every epoch itself.
            history = distiller.fit(
                data, epochs=epochs, shuffle=False, verbose=self.settings.verbose
            )
            return model, history.history

        return self.get(
            run,
            system,
            fit,
            rows=rows,
            temperature=temperature,
            soft_weight=soft_weight,
            **fields,
        )

    def part_distilled(self) -> None:
        s = self.settings
        cache = build_teacher_cache(
            self.ensemble(),
            self.frames.x_train,
            self.runs.root / "cache-ensemble",
            batch_size=PREDICT_BATCH,
            verbose=bool(s.verbose),
        )
        for repeat in range(s.repeats):
            for temperature in s.temperatures:
                base = f"distilled-T{temperature:g}"
                name = _repeat_name(base, repeat)
                seed = s.seed + 1000 + int(10 * temperature) + REPEAT_SEED * repeat
                run = self.runs.model(
                    name,
                    {
                        **self.net_settings(epochs=s.epochs, seed=seed),
                        "labels": "ensemble soft targets and hard labels",
                        "temperature": temperature,
                        "soft_weight": s.soft_weight,
                        **self.ensemble_settings(),
                    },
                )
                self.soft_model(
                    run,
                    f"Distilled single model (T={temperature:g})",
                    cache,
                    None,
                    temperature=temperature,
                    soft_weight=s.soft_weight,
                    epochs=s.epochs,
                    seed=seed,
                    **_repeat_fields(base, repeat),
                )

    def part_fraction(self) -> None:
        s, rows = self.settings, self.frames.fraction_rows
        baseline = self.member(0)
        percent = f"{100 * s.fraction:g}%"
        cache = None
        for repeat in range(s.repeats):
            # The subset stays the same; the repeats differ in initialization
            # and data order.
            seed = s.seed + 2000 + REPEAT_SEED * repeat
            name = _repeat_name("fraction-hard", repeat)
            run = self.runs.model(
                name, {**self.fraction_settings(seed), "labels": "hard"}
            )
            self.get(
                run,
                f"Baseline ({percent} of training set, hard targets)",
                self.hard_fraction_fit(name, seed),
                rows=rows,
                frames=len(rows),
                **_repeat_fields("fraction-hard", repeat),
            )
            if cache is None:
                cache = build_teacher_cache(
                    baseline,
                    self.frames.x_train[rows],
                    self.runs.root / "cache-fraction",
                    batch_size=PREDICT_BATCH,
                    verbose=bool(s.verbose),
                )
            for temperature in s.fraction_temperatures:
                base = f"fraction-soft-T{temperature:g}"
                name = _repeat_name(base, repeat)
                run = self.runs.model(
                    name,
                    {
                        **self.fraction_settings(seed),
                        "labels": "soft targets of member 0",
                        "temperature": temperature,
                        "soft_weight": s.fraction_soft_weight,
                        "teacher_seeds": [s.seed],
                        "teacher_epochs": s.epochs,
                    },
                )
                self.soft_model(
                    run,
                    f"Soft targets ({percent} of training set, from the full-data "
                    f"baseline, T={temperature:g})",
                    cache,
                    rows,
                    temperature=temperature,
                    soft_weight=s.fraction_soft_weight,
                    epochs=s.fraction_epochs,
                    seed=seed,
                    frames=len(rows),
                    **_repeat_fields(base, repeat),
                )

    def hard_fraction_fit(self, name: str, seed: int):
        """Training of the baseline net on the fraction's hard labels alone."""
        f, s = self.frames, self.settings
        rows = f.fraction_rows

        def fit():
            keras.utils.set_random_seed(seed)
            model = self.compile_hard(self.build(name))
            history = model.fit(
                f.x_train[rows],
                f.y_train[rows],
                batch_size=s.batch_size,
                epochs=s.fraction_epochs,
                shuffle=True,
                verbose=s.verbose,
            )
            return model, history.history

        return fit

    def write_results(self) -> dict:
        """Writes `results.md/json` and `curves.png`; returns the summary."""
        s = self.settings
        summary = tables.summarize(self.records)
        summary["validation"] = resolve_validation(s)
        summary["frames"] = frame_counts(self.frames)
        rows, notes = tables.table1(self.records, summary)
        fraction_rows, fraction_notes = tables.table5(self.records, summary)
        if fraction_rows:
            notes += (
                "\n## Table 5 (soft targets as a regularizer)\n\n"
                + reports.markdown_table(fraction_rows)
                + "\n"
                + fraction_notes
            )
        self.runs.write_results(
            rows,
            title=(
                f"FSDD, {s.split} split: Table 1 (frame classification, word "
                "error rate by summed frame log-probabilities)"
            ),
            notes=notes,
            curves=self.curves,
            curve_label="training frame accuracy",
            extra={
                "table5": fraction_rows,
                "summary": summary,
                "records": self.records,
                "settings": dataclasses.asdict(s),
            },
        )
        print(tables.format_tables(self.records, summary))
        return summary


def frame_counts(frames: Frames) -> dict[str, int]:
    """Frames and utterances of each set (and the fraction's frames)."""
    held = frames.data.validation
    return {
        "train": len(frames.y_train),
        "test": len(frames.y_test),
        "validation": 0 if held is None else len(held),
        "fraction": len(frames.fraction_rows),
        "train_utterances": len(frames.data.train.recordings),
        "test_utterances": len(frames.data.test.recordings),
        "validation_utterances": 0 if held is None else len(held.recordings),
    }


def _repeat_name(name: str, repeat: int) -> str:
    """`name` for repeat 0, `name-s<repeat>` for the further seeds."""
    return name if repeat == 0 else f"{name}-s{repeat}"


def _repeat_fields(name: str, repeat: int) -> dict:
    return {} if repeat == 0 else {"repeat_of": name, "repeat": repeat}


def run(settings: Settings) -> dict:
    """Runs the selected parts in the run folder `settings.out`.

    Args:
        settings: The experiment's `Settings`.

    Returns:
        The summary stored in `results.json` (ratios, chosen temperatures, frame
        counts).

    Raises:
        FileNotFoundError: when the data cannot be found.
        ValueError: for data options that leave a set empty.
        keras_kd.runs.RunSettingsError: when `settings.out` holds a model of the
            same name trained with other settings (the message names them).
        keras_kd.files.FolderNotOwnedError: when `settings.out` holds files
            keras-kd did not write.

    Example:

    ```python
    # FSDD from KERAS_KD_DATA_DIR; QUICK is `--quick`, about a minute
    summary = run(Settings(**QUICK))  # writes runs/acoustic-quick
    ```
    """
    with RunFolder(settings.out) as runs:
        frames = load_frames(settings, runs.root / "features")
        counts = frame_counts(frames)
        print(
            f"FSDD {settings.split} split: {counts['train']} training frames "
            f"({counts['train_utterances']} utterances), {counts['test']} test "
            f"frames ({counts['test_utterances']} utterances), "
            f"{counts['validation']} validation frames "
            f"({resolve_validation(settings)}), input {frames.x_train.shape[1]} "
            "features."
        )
        experiment = AcousticExperiment(settings, runs, frames)
        for part in PARTS:
            if part in settings.parts:
                getattr(experiment, f"part_{part}")()
        return experiment.write_results()


def build_parser() -> argparse.ArgumentParser:
    """The options of `keras-kd acoustic` (see `Settings` for their meaning).

    Options left out keep `Settings`' defaults, or `QUICK`'s with `--quick`.

    Example:

    >>> build_parser().parse_args(["--hidden", "64,64"]).hidden
    [64, 64]
    """
    parser = commands.CommandParser(
        prog="keras-kd acoustic", description=__doc__.split("\n\n")[0]
    )
    add = functools.partial(
        commands.add_setting, parser, defaults=Settings(), quick=QUICK
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small run of well under a minute (takes 0-7, or 0-11 on the "
        "standard split; 2 members, 1 epoch)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="data root holding fsdd/ (default: $KERAS_KD_DATA_DIR)",
    )
    add("--out", "the run folder")
    add(
        "--parts",
        f"comma-separated subset of {','.join(PARTS)}",
        type=commands.names(PARTS),
    )
    add(
        "--split",
        "standard: takes 0-4 are the test set; speaker: held-out --test-speakers",
        choices=fsdd.SPLITS,
    )
    add(
        "--test-speakers",
        "held-out speakers of the speaker split",
        type=commands.names(),
    )
    add(
        "--validation",
        "validation set carved from the training recordings, which "
        "chooses the temperatures: takes (takes 5-9 of every speaker), speaker "
        "(--validation-speakers), none; auto: speaker on the speaker split, takes "
        "on the standard split",
        choices=("auto", *fsdd.VALIDATIONS),
    )
    add(
        "--validation-speakers",
        "held-out training speakers of --validation speaker",
        type=commands.names(),
    )
    add("--normalization", "feature normalization", choices=fsdd.NORMALIZATIONS)
    add(
        "--silence-db",
        "silence: this many dB below the loudest frame",
        type=commands.positive(float),
    )
    add("--left", "context frames before each frame (paper: 20)", type=int)
    add("--right", "context frames after each frame (paper: 5)", type=int)
    add("--hidden", "hidden layer sizes, e.g. 256,256", type=commands.int_list)
    add("--epochs", "epochs of every full-data model", type=commands.positive(int))
    add("--batch-size", "batch size", type=commands.positive(int))
    add("--learning-rate", "Adam learning rate", type=commands.positive(float))
    add("--members", "ensemble size", type=commands.positive(int))
    add(
        "--temperatures", "temperatures of the distilled nets", type=commands.float_list
    )
    add(
        "--soft-weight",
        "weight of the soft term when distilling the ensemble; "
        "the hard term gets 1 - soft weight",
        type=commands.fraction,
    )
    add(
        "--fraction",
        "share of training frames of the regularizer part",
        type=commands.positive(float),
    )
    add(
        "--fraction-epochs",
        "epochs of the fraction models",
        type=commands.positive(int),
    )
    add(
        "--fraction-temperatures",
        "temperatures of the soft targets on the fraction",
        type=commands.float_list,
    )
    add(
        "--fraction-soft-weight",
        "weight of the soft term on the fraction",
        type=commands.fraction,
    )
    add(
        "--repeats",
        "seeds of every distilled and fraction model (the ratios use their mean)",
        type=commands.positive(int),
    )
    add(
        "--max-takes",
        "use only takes below this (small runs)",
        type=commands.positive(int),
    )
    add("--seed", "base seed", type=int)
    add(
        "--verbose",
        "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch",
        type=int,
        choices=(0, 1, 2),
    )
    for old, new in (
        ("--alpha", "--soft-weight"),
        ("--fraction-alpha", "--fraction-soft-weight"),
        ("--normalisation", "--normalization"),
    ):
        commands.add_renamed(parser, old, new)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """`Settings` from parsed options: `QUICK` under `--quick`, given options win.

    Raises:
        ValueError: for options out of range (e.g. `--fraction 2`).
    """
    given = commands.given_settings(args, Settings)
    quick = dict(QUICK) if args.quick else {}
    if quick and given.get("split") == "standard":
        quick["max_takes"] = QUICK_STANDARD_TAKES
    return Settings(**{**quick, **given})


def main(argv: Sequence[str] | None = None) -> int:
    """`keras-kd acoustic ...`: runs the experiment; returns the exit status.

    A user error (bad option, missing data, a run folder made with other
    settings) is one line on stderr and exit status 2.

    Example:

    ```python
    main(["--quick", "--out", "runs/acoustic-quick"])  # 0, after about a minute
    ```

    A user error is one line (on stderr, shown here) and exit status 2:

    >>> import contextlib, sys, tempfile
    >>> with contextlib.redirect_stderr(sys.stdout):
    ...     main(["--data-dir", "no-such-folder", "--out", tempfile.mkdtemp()])
    keras-kd acoustic: error: The data folder 'no-such-folder' (from --data-dir) does not exist. ...
    2
    """
    args = build_parser().parse_args(argv)

    def body() -> int:
        run(settings_from_args(args))
        return 0

    return commands.run_reporting_errors("acoustic", body)


if __name__ == "__main__":
    sys.exit(main())

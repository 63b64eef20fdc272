"""The machinery of `keras-kd mnist`: data split, models, fingerprints, the table.

`keras_kd.experiments.mnist` parses the options and documents the experiment;
this module trains its models and writes its results. Decisions:

- **Seeds.** Every model is built right after `keras.utils.set_random_seed`
  with its own seed, so its initial weights do not depend on which other models
  the same process trained first (a resumed or partial run builds the same
  model). The teacher is built exactly as keras-kd 0.1.0 built it; 0.1.0's
  students drew their initial weights after the teacher's and differ.
- **Data.** One permutation of the training images (`--seed`) decides which
  images are used (`--train-subset`) and which are held out: the first
  `--heldout` (choices), `--teacher-heldout` and `--student-heldout` images of
  it. Training batches come from `keras_kd.datasets.mnist.mnist_dataset`.
- **Fingerprints.** A model's settings list everything that shaped it: its
  architecture, schedule, seed, the digest of its training images and, for a
  distilled student, every setting of its teacher (prefixed `teacher_`). A
  changed setting is refused by `keras_kd.runs.RunFolder`, naming it.
- **Reporting.** Test and held-out errors are recomputed from the saved models
  at every run; each model's per-epoch curve is in `models/<name>/curve.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import keras
import numpy as np

from keras_kd import files, reports
from keras_kd.bias import choose_bias_shift, shift_class_bias
from keras_kd.datasets.mnist import IMAGE_SIZE, NUM_CLASSES, load_mnist, mnist_dataset
from keras_kd.distiller import Distiller
from keras_kd.evaluation import error_count, predict_logits
from keras_kd.experiments._epochs import CURVE_FILE, EpochBackup, fit_epochs
from keras_kd.experiments.mnist import PAPER, Settings
from keras_kd.models import mlp
from keras_kd.runs import ModelRun, RunFolder, seed_summary

PREDICT_BATCH = 1000
FINAL_LEARNING_RATE = 0.01  # the cosine decay ends at 1% of the starting rate
SCHEDULE = "cosine to 1%, per step"
TITLE = "MNIST, section 3 of Hinton, Vinyals and Dean (2015)"
COLUMNS = (
    "model",
    "transfer set",
    "T",
    "soft weight",
    "learning rate",
    "epochs",
    "test errors",
    "test error %",
    "held-out errors",
    "errors on 3s",
    "bias shift",
    "held-out accuracy",
    "paper",
)
# Bias shifts tried for the omitted class 3 (raised) and for 7 and 8 (lowered).
RAISE_SHIFTS = np.round(np.arange(0, 201) * 0.1, 6)
LOWER_SHIFTS = np.round(np.arange(-200, 1) * 0.1, 6)


@dataclasses.dataclass(frozen=True)
class Trained:
    """One finished model of the experiment and its figures."""

    name: str
    run: ModelRun
    model: keras.Model
    test_errors: int
    heldout_errors: int | None
    selected_epoch: int
    epochs: int


def _digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, np.int64).tobytes()).hexdigest()[:16]


def _widths(hidden: Sequence[int]) -> str:
    return "-".join(str(units) for units in hidden)


class MnistData:
    """The images of one run: the training pool in the seed's order, and the test set.

    Args:
        settings: Uses `data_dir`, `seed`, `train_subset` and `test_subset`.

    Raises:
        FileNotFoundError, ValueError: from `keras_kd.datasets.mnist.load_mnist`.
    """

    def __init__(self, settings: Settings):
        (x, y), (x_test, y_test) = load_mnist(settings.data_dir)
        order = np.random.default_rng(settings.seed).permutation(len(x))
        if settings.train_subset:
            order = order[: settings.train_subset]
        self.indices = order
        self.x, self.y = x[order], y[order]
        self.x_test = x_test[: settings.test_subset]
        self.y_test = y_test[: settings.test_subset]
        self._test_batches = mnist_dataset(self.x_test, batch_size=PREDICT_BATCH)

    def __len__(self) -> int:
        return len(self.x)

    def split(self, heldout: int, option: str) -> tuple[np.ndarray, np.ndarray]:
        """`(train, heldout)` positions: the first `heldout` images are held out.

        Raises:
            ValueError: when `heldout` leaves no training image.
        """
        if heldout >= len(self):
            raise ValueError(
                f"{option} {heldout} holds out every one of the {len(self):,} training "
                "images in use; hold out fewer."
            )
        positions = np.arange(len(self))
        return positions[heldout:], positions[:heldout]

    def digest(self, positions: np.ndarray) -> str:
        """A short digest of which training images `positions` are."""
        return _digest(self.indices[positions])

    def errors(self, model: keras.Model, positions: np.ndarray | None = None) -> int:
        """Test errors of `model`, or its errors on the training `positions`."""
        if positions is None:
            return self.test_errors(model)
        batches = mnist_dataset(self.x[positions], batch_size=PREDICT_BATCH)
        return error_count(predict_logits(model, batches), self.y[positions])

    def test_errors(self, model: keras.Model, mask: np.ndarray | None = None) -> int:
        """Errors of `model` on the test images (those where `mask` is true)."""
        logits = predict_logits(model, self._test_batches)
        return error_count(logits, self.y_test, mask)


class MnistExperiment:
    """Trains (or reuses) the models of the chosen parts inside a `RunFolder`.

    Args:
        settings: The experiment's settings.
        runs: The open run folder.
    """

    def __init__(self, settings: Settings, runs: RunFolder):
        self.settings = settings
        self.runs = runs
        self.data = MnistData(settings)
        self.rows: list[dict] = []
        self.curves: dict[str, list[float]] = {}
        self.small_curves: dict[str, list[float]] = {}
        self.models: dict[str, dict] = {}
        self._teacher: Trained | None = None
        self._teacher_logits: np.ndarray | None = None
        # Held-out images of the small students and the bias choices (0.1.0:
        # at most a fifth of the images in use).
        self.choice_heldout = min(settings.heldout, len(self.data) // 5)

    def _optimizer(self, kind: str, rate: float, epochs: int, examples: int):
        steps = epochs * math.ceil(examples / self.settings.batch_size)
        schedule = keras.optimizers.schedules.CosineDecay(
            rate, decay_steps=max(steps, 1), alpha=FINAL_LEARNING_RATE
        )
        if kind == "sgd":
            return keras.optimizers.SGD(schedule, momentum=self.settings.momentum)
        return keras.optimizers.Adam(schedule)

    def _data_settings(self, train: np.ndarray, heldout: np.ndarray) -> dict:
        settings = {
            "data_seed": self.settings.seed,
            "train_subset": self.settings.train_subset,
            "train_images": len(train),
            "train_digest": self.data.digest(train),
            "heldout_images": len(heldout),
            "select_epoch": self._selection(heldout),
        }
        if settings["select_epoch"] == "heldout":  # the epochs it chooses among
            settings["curve_every"] = self.settings.curve_every
        return settings

    def _selection(self, heldout: np.ndarray) -> str:
        return (
            "heldout"
            if self.settings.select_epoch == "heldout" and len(heldout)
            else "last"
        )

    def teacher_settings(self) -> dict:
        """Every setting that shapes the teacher."""
        s = self.settings
        train, heldout = self.data.split(s.teacher_heldout, "--teacher-heldout")
        settings = {
            "model": "teacher",
            "hidden": list(s.teacher_hidden),
            "dropout": s.teacher_dropout,
            "input_dropout": s.teacher_input_dropout,
            "max_norm": s.max_norm,
            "optimizer": s.teacher_optimizer,
            "learning_rate": s.teacher_learning_rate,
            "schedule": SCHEDULE,
            "epochs": s.teacher_epochs,
            "batch_size": s.batch_size,
            "jitter_pixels": s.jitter_pixels,
            "seed": s.seed,
            **self._data_settings(train, heldout),
        }
        if s.teacher_optimizer == "sgd":
            settings["momentum"] = s.momentum
        return settings

    def _train(
        self,
        name: str,
        settings: Mapping,
        *,
        build: Callable[[], keras.Model],
        train: np.ndarray,
        heldout: np.ndarray,
        epochs: int,
        optimizer: str,
        learning_rate: float,
        seed: int,
        jitter: bool = False,
        distill: tuple[float, float] | None = None,
    ) -> Trained:
        """Loads model `name` if finished, else trains it (resuming its backup).

        Args:
            name: The run's name in the folder.
            settings: Everything that shapes the model (its fingerprint).
            build: Builds the untrained model (called right after seeding).
            train, heldout: Positions of its training and held-out images.
            epochs, optimizer, learning_rate: Its schedule.
            seed: Seed of its initial weights and data order.
            jitter: Shift its inputs (the teacher's recipe).
            distill: `(temperature, soft_weight)` for a distilled student.
        """
        run = self.runs.model(name, settings)
        if run.finished:
            print(f"[{name}] finished earlier: reusing {run.model_path}", flush=True)
            model = run.load()
            selected = int(run.record.get("selected_epoch", epochs))
        else:
            model, selected = self._fit(
                run, build, train, heldout, (epochs, optimizer, learning_rate),
                seed, jitter, distill,
            )  # fmt: skip
        trained = Trained(
            name=name,
            run=run,
            model=model,
            test_errors=self.data.errors(model),
            heldout_errors=self.data.errors(model, heldout) if len(heldout) else None,
            selected_epoch=selected,
            epochs=epochs,
        )
        self.models[name] = {
            "test_errors": trained.test_errors,
            "heldout_errors": trained.heldout_errors,
            "selected_epoch": selected,
            "epochs": epochs,
        }
        return trained

    def _fit(self, run, build, train, heldout, schedule, seed, jitter, distill):
        """Trains `run`'s model epoch by epoch; returns it and its selected epoch."""
        s = self.settings
        epochs, optimizer, learning_rate = schedule
        live = distill is not None and s.student_jitter  # the teacher runs per batch
        teacher = self.teacher().model if live else None
        logits = self.teacher_logits() if distill and not live else None
        print(
            f"[{run.name}] training on {len(train):,} images for {epochs} epochs",
            flush=True,
        )
        keras.utils.set_random_seed(seed)
        model = build()
        compiled = {
            "optimizer": self._optimizer(optimizer, learning_rate, epochs, len(train)),
            "metrics": ["accuracy"],
        }
        trainer = model
        if distill is None:
            compiled["loss"] = keras.losses.SparseCategoricalCrossentropy(
                from_logits=True
            )
        else:
            trainer = Distiller(
                student=model,
                teacher=teacher,
                temperature=distill[0],
                soft_weight=distill[1],
            )
        trainer.compile(**compiled)
        dataset = mnist_dataset(
            self.data.x[train],
            self.data.y[train],
            batch_size=s.batch_size,
            shuffle=True,
            jitter=(jitter or live) and s.jitter_pixels > 0,
            max_shift=s.jitter_pixels,
            teacher_logits=None if logits is None else logits[train],
            seed=seed,
        )

        def evaluate() -> dict[str, int]:
            figures = {"test_errors": self.data.errors(model)}
            if len(heldout):
                figures["heldout_errors"] = self.data.errors(model, heldout)
            return figures

        selection = self._selection(heldout)
        result = fit_epochs(
            trainer,
            dataset,
            epochs=epochs,
            backup_dir=run.backup_dir,
            curve_path=run.folder / CURVE_FILE,
            curve_info={
                "model": run.name,
                "test_images": len(self.data.y_test),
                "heldout_images": len(heldout),
            },
            evaluate=evaluate,
            evaluate_every=s.curve_every,
            select="heldout_errors" if selection == "heldout" else "last",
            label=run.name if s.verbose else "",
            verbose=s.verbose,
        )
        run.finish(
            model,
            {
                "epochs": epochs,
                "selected_epoch": result.selected_epoch,
                "resumed_from_epoch": result.resumed_from,
                "train_seconds": round(sum(e["seconds"] for e in result.curve), 1),
            },
        )
        EpochBackup(run.backup_dir).clear()
        return model, result.selected_epoch

    def teacher(self) -> Trained:
        """The jitter-trained, dropout-regularized teacher (trained once)."""
        if self._teacher is None:
            s = self.settings
            train, heldout = self.data.split(s.teacher_heldout, "--teacher-heldout")
            self._teacher = self._train(
                "teacher",
                self.teacher_settings(),
                build=lambda: mlp(
                    (IMAGE_SIZE, IMAGE_SIZE),
                    s.teacher_hidden,
                    NUM_CLASSES,
                    dropout=s.teacher_dropout,
                    input_dropout=s.teacher_input_dropout,
                    max_norm=s.max_norm,
                    name="teacher",
                ),
                train=train,
                heldout=heldout,
                epochs=s.teacher_epochs,
                optimizer=s.teacher_optimizer,
                learning_rate=s.teacher_learning_rate,
                seed=s.seed,
                jitter=True,
            )
        return self._teacher

    def teacher_logits(self) -> np.ndarray:
        """The teacher's logits on every (unjittered) training image in use.

        Computed once and kept beside the teacher as `logits-<digest>.npy`
        (written whole or not at all; a file that does not read back as the
        expected array is computed again), or with `--teacher-cache` kept in a
        `keras_kd.cache` teacher-output cache.
        """
        if self._teacher_logits is not None:
            return self._teacher_logits
        teacher = self.teacher()
        if self.settings.teacher_cache is not None:
            from keras_kd.cache import build_teacher_cache

            cache = build_teacher_cache(
                teacher.model,
                self.data.x.astype(np.float32) / 255.0,
                self.settings.teacher_cache,
                storage_dtype="float32",
                batch_size=PREDICT_BATCH,
                verbose=bool(self.settings.verbose),
            )
            self._teacher_logits = cache.logits()
            return self._teacher_logits
        path = teacher.run.folder / f"logits-{_digest(self.data.indices)}.npy"
        logits = _read_logits(path, (len(self.data), NUM_CLASSES))
        if logits is None:
            batches = mnist_dataset(self.data.x, batch_size=PREDICT_BATCH)
            logits = predict_logits(teacher.model, batches)
            with files.atomic_path(path) as partial:
                np.save(partial, logits)
        self._teacher_logits = logits
        return logits

    def _student_settings(
        self,
        kind: str,
        hidden: Sequence[int],
        *,
        epochs: int,
        learning_rate: float,
        seed: int,
        train: np.ndarray,
        heldout: np.ndarray,
        distill: tuple[float, float] | None = None,
        classes: Sequence[int] | None = None,
    ) -> dict:
        settings = {
            "model": kind,
            "hidden": list(hidden),
            "optimizer": "adam",
            "learning_rate": learning_rate,
            "schedule": SCHEDULE,
            "epochs": epochs,
            "batch_size": self.settings.batch_size,
            "seed": seed,
            **self._data_settings(train, heldout),
        }
        if classes is not None:
            settings["classes"] = list(classes)
        if distill is not None:
            settings["temperature"], settings["soft_weight"] = distill
            settings["student_jitter"] = self.settings.student_jitter
            teacher = self.teacher_settings()
            settings.update(
                {f"teacher_{k}": v for k, v in teacher.items() if k != "model"}
            )
        return settings

    def _students(
        self,
        name: str,
        kind: str,
        hidden: Sequence[int],
        *,
        epochs: int,
        learning_rate: float,
        train: np.ndarray,
        heldout: np.ndarray,
        distill: tuple[float, float] | None = None,
        classes: Sequence[int] | None = None,
    ) -> list[Trained]:
        """Model `name` trained once per student seed (`<name>-s<seed>`)."""
        if distill is not None and self.settings.student_jitter:
            name += "_jitter"
        trained = []
        for seed in self.settings.student_seeds:
            settings = self._student_settings(
                kind,
                hidden,
                epochs=epochs,
                learning_rate=learning_rate,
                seed=seed,
                train=train,
                heldout=heldout,
                distill=distill,
                classes=classes,
            )
            trained.append(
                self._train(
                    f"{name}-s{seed}",
                    settings,
                    build=lambda h=tuple(hidden), n=kind: mlp(
                        (IMAGE_SIZE, IMAGE_SIZE), h, NUM_CLASSES, name=n
                    ),
                    train=train,
                    heldout=heldout,
                    epochs=epochs,
                    optimizer="adam",
                    learning_rate=learning_rate,
                    seed=seed,
                    distill=distill,
                )
            )
        return trained

    def _add_row(
        self, model: str, transfer: str, trained: Sequence[Trained], **extra
    ) -> dict:
        test = [t.test_errors for t in trained]
        heldout = [t.heldout_errors for t in trained if t.heldout_errors is not None]
        selected = " / ".join(str(t.selected_epoch) for t in trained)
        if any(t.selected_epoch != t.epochs for t in trained):
            selected += f" of {trained[0].epochs}"
        row = {
            "model": model,
            "transfer set": transfer,
            "epochs": selected,
            "test errors": _summary(test),
            "test error %": f"{100.0 * seed_summary(test).mean / len(self.data.y_test):.2f}",
            "held-out errors": _summary(heldout) if heldout else "",
            **extra,
        }
        print(f"[result] {row}", flush=True)
        self.rows.append(row)
        return row

    def _add_curves(self, label: str, trained: Trained, target: dict) -> None:
        """The first seed's test (and held-out) error % per epoch."""
        path = trained.run.folder / CURVE_FILE
        if not path.exists():
            return
        curve = json.loads(path.read_text())
        entries = curve["entries"]
        for key, size_key, suffix in (
            ("test_errors", "test_images", "test"),
            ("heldout_errors", "heldout_images", "held-out"),
        ):
            if any(key in e for e in entries) and curve.get(size_key):
                target[f"{label} {suffix}"] = [
                    100.0 * e[key] / curve[size_key] if key in e else None
                    for e in entries
                ]

    def _transfer(self, train: np.ndarray, jittered: bool = False) -> str:
        text = f"{len(train):,} train"
        return text + (", jittered" if jittered else "")

    def part_teacher(self) -> None:
        s = self.settings
        teacher = self.teacher()
        train, _ = self.data.split(s.teacher_heldout, "--teacher-heldout")
        self._add_row(
            f"teacher {_widths(s.teacher_hidden)}",
            self._transfer(train, jittered=s.jitter_pixels > 0),
            [teacher],
            **{
                "learning rate": f"{s.teacher_learning_rate:g}",
                "paper": PAPER["teacher"],
            },
        )
        self._add_curves("teacher", teacher, self.curves)

    def _student_split(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.split(self.settings.student_heldout, "--student-heldout")

    def part_baseline(self) -> None:
        s = self.settings
        train, heldout = self._student_split()
        trained = self._students(
            "baseline",
            "baseline",
            s.student_hidden,
            epochs=s.student_epochs,
            learning_rate=s.student_learning_rate,
            train=train,
            heldout=heldout,
        )
        self._add_row(
            f"{_widths(s.student_hidden)} hard labels",
            self._transfer(train),
            trained,
            **{
                "learning rate": f"{s.student_learning_rate:g}",
                "paper": PAPER["baseline"],
            },
        )
        self._add_curves("baseline", trained[0], self.curves)

    def part_distilled(self) -> None:
        s = self.settings
        train, heldout = self._student_split()
        for t in s.temperatures:
            trained = self._students(
                f"distilled_T{t:g}",
                "distilled",
                s.student_hidden,
                epochs=s.student_epochs,
                learning_rate=s.student_learning_rate,
                train=train,
                heldout=heldout,
                distill=(t, s.soft_weight),
            )
            self._add_row(
                f"{_widths(s.student_hidden)} distilled",
                self._transfer(train, jittered=s.student_jitter),
                trained,
                **{
                    "T": f"{t:g}",
                    "soft weight": f"{s.soft_weight:g}",
                    "learning rate": f"{s.student_learning_rate:g}",
                    "paper": PAPER["distilled T=20"] if t == 20 else "",
                },
            )
            self._add_curves(f"distilled T={t:g}", trained[0], self.curves)

    def part_small(self) -> None:
        train, heldout = self.data.split(self.choice_heldout, "--heldout")
        if not len(heldout):
            raise ValueError(
                "The small students choose their temperature, soft weight and learning "
                "rate on held-out images: give --heldout > 0."
            )
        for width in self.settings.small_widths:
            self._small_students(width, train, heldout)

    def _small_grid(self, width, train, heldout, temperature=None) -> dict:
        """Students `width`-`width` for every learning rate (and, distilled at
        `temperature`, every soft weight), by `(soft weight, learning rate)`."""
        s = self.settings
        rates = s.small_learning_rates or (s.student_learning_rate,)
        weights = (s.small_soft_weights or (s.soft_weight,)) if temperature else (None,)
        grid = {}
        for weight in weights:
            for rate in rates:
                tag = (
                    "scratch"
                    if temperature is None
                    else f"T{temperature:g}_sw{weight:g}"
                )
                grid[(weight, rate)] = self._students(
                    f"small{width}_{tag}_lr{rate:g}",
                    "small_scratch" if temperature is None else "small_distilled",
                    (width, width),
                    epochs=s.small_student_epochs or s.student_epochs,
                    learning_rate=rate,
                    train=train,
                    heldout=heldout,
                    distill=None if temperature is None else (temperature, weight),
                )
        return grid

    def _small_students(self, width: int, train, heldout) -> None:
        """Rows of one small width: from scratch, then distilled at each
        temperature with the soft weight and learning rate chosen on held-out."""
        s = self.settings
        rates = len(s.small_learning_rates or (None,))
        weights = len(s.small_soft_weights or (None,))
        scratch = self._small_grid(width, train, heldout)
        _, rate = best = _best(scratch)
        self._add_row(
            f"{width}-{width} hard labels",
            self._transfer(train),
            scratch[best],
            **{"learning rate": _chosen(f"{rate:g}", rates)},
        )
        self._add_curves(
            f"{width}-{width} scratch", scratch[best][0], self.small_curves
        )
        chosen = {}
        for t in s.small_temperatures:
            grid = self._small_grid(width, train, heldout, temperature=t)
            chosen[t] = (key := _best(grid), grid[key])
        best_t = min(chosen, key=lambda t: _mean_heldout(chosen[t][1]))
        for t, ((weight, rate), trained) in chosen.items():
            label = " (best T on held-out)" if t == best_t else ""
            self._add_row(
                f"{width}-{width} distilled{label}",
                self._transfer(train, jittered=s.student_jitter),
                trained,
                **{
                    "T": f"{t:g}",
                    "soft weight": _chosen(f"{weight:g}", weights),
                    "learning rate": _chosen(f"{rate:g}", rates),
                },
            )
        self._add_curves(
            f"{width}-{width} T={best_t:g}", chosen[best_t][1][0], self.small_curves
        )

    def _bias_part(
        self,
        key: str,
        keep: Sequence[int],
        classes: list[int],
        candidates: np.ndarray,
        description: str,
        paper: tuple[str, str],
    ) -> None:
        """Distils on the classes `keep`, then shifts the biases of `classes` by
        a constant chosen on held-out training images; adds both rows."""
        s = self.settings
        train, heldout = self.data.split(self.choice_heldout, "--heldout")
        if not len(heldout):
            raise ValueError(
                f"The {key} part chooses its bias shift on held-out images: give "
                "--heldout > 0."
            )
        train = train[np.isin(self.data.y[train], keep)]
        t = s.temperatures[0]
        trained = self._students(
            key,
            key,
            s.student_hidden,
            epochs=s.student_epochs,
            learning_rate=s.student_learning_rate,
            train=train,
            heldout=heldout,
            distill=(t, s.soft_weight),
            classes=keep,
        )
        shifted = [
            self._shifted(student, key, heldout, classes, candidates)
            for student in trained
        ]
        before_3s, after_3s = [], []
        if classes == [3]:  # the 3s are of interest only when 3 was omitted
            threes = self.data.y_test == 3
            before_3s = [self.data.test_errors(m.model, threes) for m in trained]
            after_3s = [self.data.test_errors(m.model, threes) for m, _ in shifted]
        transfer = f"{len(train):,} {description}" + (
            ", jittered" if s.student_jitter else ""
        )
        common = {"T": f"{t:g}", "soft weight": f"{s.soft_weight:g}"}
        self._add_row(
            f"{_widths(s.student_hidden)} distilled",
            transfer,
            trained,
            **common,
            **({"errors on 3s": _summary(before_3s)} if before_3s else {}),
            paper=paper[0],
        )
        self._add_row(
            f"{_widths(s.student_hidden)} distilled, bias of {classes} shifted",
            transfer,
            [model for model, _ in shifted],
            **common,
            **({"errors on 3s": _summary(after_3s)} if after_3s else {}),
            **{
                "bias shift": " / ".join(f"{r['shift']:+.1f}" for _, r in shifted),
                "held-out accuracy": " / ".join(
                    f"{r['heldout_accuracy_before']:.4f} -> {r['heldout_accuracy']:.4f}"
                    for _, r in shifted
                ),
            },
            paper=paper[1],
        )
        self._add_curves(key, trained[0], self.curves)

    def _shifted(self, student: Trained, key, heldout, classes, candidates):
        """`student` with the biases of `classes` shifted by the constant that
        is best on the held-out images (its own run, `<key>_bias-s<seed>`)."""
        settings = {
            **student.run.settings,
            "bias_classes": classes,
            "bias_candidates": [
                float(candidates[0]),
                float(candidates[-1]),
                len(candidates),
            ],
        }
        run = self.runs.model(student.name.replace(key, f"{key}_bias", 1), settings)

        def shift(run) -> tuple[keras.Model, dict]:
            batches = mnist_dataset(self.data.x[heldout], batch_size=PREDICT_BATCH)
            logits = predict_logits(student.model, batches)
            choice = choose_bias_shift(
                logits, self.data.y[heldout], classes, candidates
            )
            model = student.run.load()
            shift_class_bias(model, classes, choice.shift)
            return model, {
                "shift": choice.shift,
                "heldout_accuracy": choice.accuracy,
                "heldout_accuracy_before": choice.unshifted_accuracy,
            }

        model, record = run.get_or_train(shift)
        trained = dataclasses.replace(
            student,
            name=run.name,
            run=run,
            model=model,
            test_errors=self.data.errors(model),
            heldout_errors=self.data.errors(model, heldout),
        )
        self.models[run.name] = {
            "test_errors": trained.test_errors,
            "heldout_errors": trained.heldout_errors,
            "bias_shift": record["shift"],
        }
        return trained, record

    def part_omit3(self) -> None:
        self._bias_part(
            "omit3",
            [c for c in range(NUM_CLASSES) if c != 3],
            [3],
            RAISE_SHIFTS,
            "train without 3s",
            (PAPER["omit3"], PAPER["omit3 + bias"]),
        )

    def part_only78(self) -> None:
        self._bias_part(
            "only78",
            [7, 8],
            [7, 8],
            LOWER_SHIFTS,
            "train, only 7s and 8s",
            (PAPER["only78"], PAPER["only78 + bias"]),
        )

    def write_results(self) -> None:
        s = self.settings
        columns = [c for c in COLUMNS if any(row.get(c) for row in self.rows)]
        seeds = ", ".join(str(v) for v in s.student_seeds)
        notes = (
            f"Test errors out of {len(self.data.y_test):,} test images; students' "
            f"seeds {seeds} (with several seeds: mean, then each seed). Choices (best "
            "temperature, soft weight, learning rate, bias shift"
            + (", epoch" if s.select_epoch == "heldout" else "")
            + f") use held-out training images, never the test set. Teacher: "
            f"{_widths(s.teacher_hidden)}, dropout {s.teacher_input_dropout:g} (input) / "
            f"{s.teacher_dropout:g} (hidden), max-norm {s.max_norm}, "
            f"{s.teacher_optimizer} {s.teacher_learning_rate:g} cosine-decayed to 1%, "
            f"{s.teacher_epochs} epochs, jitter {s.jitter_pixels} px, batch {s.batch_size}. "
            + _students_note(s)
            + "Curves of every model, per epoch: `models/<name>/curve.json`."
        )
        self.runs.write_results(
            self.rows,
            title=TITLE,
            columns=columns,
            notes=notes,
            curves=self.curves,
            curve_label="error % (test; held-out where kept)",
            extra={
                "settings": dataclasses.asdict(s),
                "paper": PAPER,
                "models": self.models,
            },
        )
        if self.small_curves:
            with files.atomic_path(self.runs.root / "curves_small.png") as partial:
                reports.plot_curves(
                    self.small_curves,
                    partial,
                    title="MNIST small students (chosen settings, first seed)",
                    ylabel="error % (test; held-out)",
                )
        print(reports.markdown_table(self.rows, columns), flush=True)


def _read_logits(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The stored logits, or `None` when missing or not the expected array."""
    if not path.exists():
        return None
    try:
        logits = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if logits.shape != shape or not np.isfinite(logits).all():
        return None
    return logits


def _summary(values: Sequence[float]) -> str:
    if len(values) == 1:
        return str(values[0])
    return seed_summary(values).format(1)


def _mean_heldout(trained: Sequence[Trained]) -> float:
    return seed_summary([t.heldout_errors for t in trained]).mean


def _best(grid: Mapping) -> object:
    """The key whose students make the fewest held-out errors (mean over seeds);
    the first on ties."""
    return min(grid, key=lambda key: _mean_heldout(grid[key]))


def _students_note(s: Settings) -> str:
    """The students' optimiser and schedule, for the parts that trained students."""
    notes = []
    if any(part in s.parts for part in ("baseline", "distilled", "omit3", "only78")):
        notes.append(
            f"Students: Adam {s.student_learning_rate:g} cosine-decayed to 1%, "
            f"{s.student_epochs} epochs. "
        )
    if "small" in s.parts:
        rates = s.small_learning_rates or (s.student_learning_rate,)
        notes.append(
            f"Small students ({', '.join(f'{w}-{w}' for w in s.small_widths)}): Adam "
            + " or ".join(f"{r:g}" for r in rates)
            + (" (chosen on held-out images)" if len(rates) > 1 else "")
            + f" cosine-decayed to 1%, {s.small_student_epochs or s.student_epochs} epochs. "
        )
    return "".join(notes)


def _chosen(value: str, options: int) -> str:
    return value + (" (held-out choice)" if options > 1 else "")


def run_experiment(settings: Settings) -> list[dict]:
    """Runs the chosen parts of the experiment; see `keras_kd.experiments.mnist.run`."""
    with RunFolder(Path(settings.out)) as runs:
        experiment = MnistExperiment(settings, runs)
        # The small students come last: they matter least and take longest.
        for part in ("teacher", "baseline", "distilled", "omit3", "only78", "small"):
            if part in settings.parts:
                getattr(experiment, f"part_{part}")()
        experiment.write_results()
        return experiment.rows

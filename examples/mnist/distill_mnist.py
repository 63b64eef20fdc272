"""Section 3 of Hinton, Vinyals and Dean (2015) on MNIST, end to end or part by part.

Parts (``--parts``, comma-separated, default all):

  teacher    784-1200-1200-10 ReLU net, dropout, max-norm weights, jittered input
  baseline   784-800-800-10 on hard labels, no regularisation
  distilled  the same 800-800 net on the teacher's soft targets (T = --temperature,
             a list gives a sweep) plus a small hard-label weight
  small      30-30 and 300-300 students: from scratch and distilled at each of
             --small-temperatures; the best temperature is chosen on held-out data
  omit3      800-800 distilled on a transfer set with every 3 removed; errors before
             and after raising class 3's bias by a constant chosen on held-out data
  only78     800-800 distilled on only the 7s and 8s; lowering their biases

Students that need a choice (temperature, bias shift) train on 55,000 training images
and choose on the other 5,000; the teacher, baseline and distilled nets use all
60,000. The test set is used only for the reported errors. Each trained model is
saved under ``--out/models`` with its record; a rerun skips finished models and a
model interrupted mid-training resumes from its last epoch.

Example:

    python examples/mnist/distill_mnist.py --data-dir ../shared/data --parts teacher,distilled
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_kd import Distiller, reports  # noqa: E402
from keras_kd.bias import choose_bias_shift, shift_class_bias  # noqa: E402
from keras_kd.datasets.mnist import load_mnist, mnist_dataset  # noqa: E402

PARTS = ("teacher", "baseline", "distilled", "small", "omit3", "only78")

# Section 3 of the paper: test errors out of 10,000 (percent for only78).
PAPER = {
    "teacher": "67",
    "baseline": "146",
    "distilled T=20": "74",
    "omit3": "206 (133 on 3s)",
    "omit3 + bias": "109 (14 on 3s), shift +3.5",
    "only78": "47.3%",
    "only78 + bias": "13.2%, shift -7.6",
}


@dataclasses.dataclass
class Settings:
    """What to train and for how long (the command-line options)."""

    out: Path
    data_dir: str | None = None
    parts: tuple[str, ...] = PARTS
    teacher_epochs: int = 45
    teacher_dropout: float = 0.3
    teacher_input_dropout: float = 0.1
    student_epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    temperatures: tuple[float, ...] = (20.0,)
    small_temperatures: tuple[float, ...] = (2.5, 4.0, 8.0, 20.0)
    small_widths: tuple[int, ...] = (30, 300)
    alpha: float = 0.9
    heldout: int = 5000
    train_subset: int | None = None
    test_subset: int | None = None
    teacher_cache: Path | None = None
    student_jitter: bool = False
    seed: int = 0
    verbose: int = 1


def build_mlp(
    hidden: tuple[int, ...],
    *,
    dropout=0.0,
    input_dropout=0.0,
    max_norm=None,
    name="mlp",
):
    """A 784-hidden-10 ReLU net that outputs logits.

    Args:
        hidden: Units of each hidden layer, e.g. `(1200, 1200)`.
        dropout: Dropout rate after each hidden layer (0: none).
        input_dropout: Dropout rate on the input pixels (0: none).
        max_norm: Max-norm bound on each unit's incoming weights (None: none).
        name: Model name.

    Returns:
        A built `keras.Sequential` taking `(batch, 28, 28)` images in `[0, 1]`.

    Example:

    >>> build_mlp((800, 800)).count_params()
    1276810
    """
    constraint = keras.constraints.MaxNorm(max_norm) if max_norm else None
    layers = [keras.Input((28, 28)), keras.layers.Flatten()]
    if input_dropout:
        layers.append(keras.layers.Dropout(input_dropout))
    for units in hidden:
        layers.append(
            keras.layers.Dense(units, activation="relu", kernel_constraint=constraint)
        )
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(10, kernel_constraint=constraint, name="logits"))
    return keras.Sequential(layers, name=name)


class Experiment:
    """Trains, saves and evaluates the models of the experiment, resuming finished ones."""

    def __init__(self, settings: Settings):
        self.settings = settings
        keras.utils.set_random_seed(settings.seed)
        (x_train, y_train), (x_test, y_test) = load_mnist(settings.data_dir)
        rng = np.random.default_rng(settings.seed)
        order = rng.permutation(len(x_train))
        if settings.train_subset:
            order = order[: settings.train_subset]
        if settings.test_subset:
            x_test, y_test = (
                x_test[: settings.test_subset],
                y_test[: settings.test_subset],
            )
        heldout = min(settings.heldout, len(order) // 5)
        self.full = order
        self.heldout, self.transfer = order[:heldout], order[heldout:]
        self.x, self.y = x_train, y_train
        self.x_test, self.y_test = x_test, y_test
        self.rows: list[dict] = []
        self.curves: dict[str, list[float]] = {}
        self.models_dir = settings.out / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self._teacher_logits = None
        self._student_inputs = ", jittered" if settings.student_jitter else ""

    # ------------------------------------------------------------ training

    def _optimizer(self, epochs: int, examples: int):
        steps = epochs * -(-examples // self.settings.batch_size)
        schedule = keras.optimizers.schedules.CosineDecay(
            self.settings.learning_rate, decay_steps=max(steps, 1), alpha=0.01
        )
        return keras.optimizers.Adam(schedule)

    def _fit(
        self, name: str, build, indices, *, epochs, jitter=False, temperature=None
    ):
        """Trains (or loads) model `name`; returns it. `temperature=None`: hard labels."""
        if temperature is not None and self.settings.student_jitter:
            name += "_jitter"
        path = self.models_dir / f"{name}.keras"
        record_path = self.models_dir / f"{name}.json"
        if path.exists() and record_path.exists():
            print(f"[{name}] already trained, loading {path}", flush=True)
            self.curves[name] = json.loads(record_path.read_text())["loss"]
            return keras.models.load_model(path)
        print(
            f"[{name}] training on {len(indices)} images for {epochs} epochs",
            flush=True,
        )
        model = build()
        seed = self.settings.seed
        if temperature is None:
            trainer = model
            trainer.compile(
                self._optimizer(epochs, len(indices)),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            data = mnist_dataset(
                self.x[indices],
                self.y[indices],
                batch_size=self.settings.batch_size,
                shuffle=True,
                jitter=jitter,
                seed=seed,
            )
        else:
            # Jittered student inputs need the teacher run on each shifted batch;
            # otherwise its logits on the fixed images are computed once.
            live = self.settings.student_jitter
            trainer = Distiller(
                student=model,
                teacher=self.teacher() if live else None,
                temperature=temperature,
                soft_weight=self.settings.alpha,
            )
            trainer.compile(self._optimizer(epochs, len(indices)), metrics=["accuracy"])
            data = mnist_dataset(
                self.x[indices],
                self.y[indices],
                batch_size=self.settings.batch_size,
                shuffle=True,
                jitter=live,
                teacher_logits=None if live else self.teacher_logits()[indices],
                seed=seed,
            )
        backup = keras.callbacks.BackupAndRestore(
            str(self.settings.out / "backup" / name)
        )
        history = trainer.fit(
            data, epochs=epochs, callbacks=[backup], verbose=self.settings.verbose
        )
        model.save(path)
        record_path.write_text(json.dumps({"loss": history.history["loss"]}))
        self.curves[name] = history.history["loss"]
        return model

    def teacher(self):
        """The jitter-trained, dropout-regularised 1200-1200 teacher."""
        return self._fit(
            "teacher",
            lambda: build_mlp(
                (1200, 1200),
                dropout=self.settings.teacher_dropout,
                input_dropout=self.settings.teacher_input_dropout,
                max_norm=3.5,
                name="teacher",
            ),
            self.full,
            epochs=self.settings.teacher_epochs,
            jitter=True,
        )

    def teacher_logits(self):
        """The teacher's logits on every (unjittered) training image, computed once.

        With `--teacher-cache DIR` they come from a `keras_kd.cache` teacher cache
        (fingerprinted against the teacher's weights and the inputs, reused by later
        runs); otherwise from one prediction pass, kept in `--out` for resuming.
        """
        if self._teacher_logits is None and self.settings.teacher_cache is not None:
            from keras_kd.cache import build_teacher_cache

            images = self.x.astype(np.float32) / 255.0  # what the teacher sees
            cache = build_teacher_cache(
                self.teacher(),
                images,
                self.settings.teacher_cache,
                dtype="float32",
                batch_size=1000,
                verbose=bool(self.settings.verbose),
            )
            self._teacher_logits = cache.logits()
        if self._teacher_logits is None:
            cache = self.settings.out / "teacher_logits.npy"
            if cache.exists() and (self.models_dir / "teacher.json").exists():
                self._teacher_logits = np.load(cache)
            else:
                self._teacher_logits = self._logits(self.teacher(), self.x)
                np.save(cache, self._teacher_logits)
        return self._teacher_logits

    # ---------------------------------------------------------- evaluation

    def _logits(self, model, images):
        data = mnist_dataset(images, batch_size=1000)
        return model.predict(data, verbose=0)

    def _errors(self, logits, labels, mask=None):
        wrong = np.argmax(logits, axis=1) != labels
        return int(wrong.sum() if mask is None else wrong[mask].sum())

    def _record(
        self, model_name, transfer, temperature, model_or_logits, paper="", **extra
    ):
        logits = (
            model_or_logits
            if isinstance(model_or_logits, np.ndarray)
            else self._logits(model_or_logits, self.x_test)
        )
        errors = self._errors(logits, self.y_test)
        row = {
            "model": model_name,
            "transfer set": transfer,
            "T": temperature,
            "test errors": errors,
            "test error %": 100.0 * errors / len(self.y_test),
            "paper": paper,
            **extra,
        }
        print(f"[result] {row}", flush=True)
        self.rows.append(row)
        return logits

    # --------------------------------------------------------------- parts

    def part_teacher(self):
        self._record(
            "teacher 1200-1200",
            f"{len(self.full):,} train, jittered",
            "",
            self.teacher(),
            PAPER["teacher"],
        )

    def part_baseline(self):
        model = self._fit(
            "baseline_800",
            lambda: build_mlp((800, 800), name="baseline_800"),
            self.full,
            epochs=self.settings.student_epochs,
        )
        self._record(
            "800-800 hard labels",
            f"{len(self.full):,} train",
            "",
            model,
            PAPER["baseline"],
        )

    def part_distilled(self):
        for t in self.settings.temperatures:
            name = f"distilled_800_T{t:g}"
            model = self._fit(
                name,
                lambda: build_mlp((800, 800), name="student_800"),
                self.full,
                epochs=self.settings.student_epochs,
                temperature=t,
            )
            paper = PAPER["distilled T=20"] if t == 20 else ""
            self._record(
                "800-800 distilled",
                f"{len(self.full):,} train{self._student_inputs}",
                t,
                model,
                paper,
            )

    def part_small(self):
        heldout_x, heldout_y = self.x[self.heldout], self.y[self.heldout]
        for width in self.settings.small_widths:
            candidates = [None, *self.settings.small_temperatures]
            results = []
            for t in candidates:
                tag = "scratch" if t is None else f"T{t:g}"
                model = self._fit(
                    f"small_{width}_{tag}",
                    lambda w=width: build_mlp((w, w), name=f"student_{w}"),
                    self.transfer,
                    epochs=self.settings.student_epochs,
                    temperature=t,
                )
                heldout_errors = self._errors(self._logits(model, heldout_x), heldout_y)
                results.append((t, model, heldout_errors))
            best = min((r for r in results if r[0] is not None), key=lambda r: r[2])[0]
            for t, model, heldout_errors in results:
                label = (
                    "hard labels"
                    if t is None
                    else "distilled" + (" (best T on held-out)" if t == best else "")
                )
                self._record(
                    f"{width}-{width} {label}",
                    f"{len(self.transfer):,} train"
                    + ("" if t is None else self._student_inputs),
                    "" if t is None else t,
                    model,
                    heldout_errors=heldout_errors,
                )

    def _bias_part(
        self, name, keep, classes, candidates, label, paper_before, paper_after
    ):
        """Distils on the classes `keep`, then shifts the biases of `classes` by a
        constant chosen on the held-out training images; records both models."""
        indices = self.transfer[np.isin(self.y[self.transfer], keep)]
        t = self.settings.temperatures[0]
        model = self._fit(
            name,
            lambda: build_mlp((800, 800), name=name),
            indices,
            epochs=self.settings.student_epochs,
            temperature=t,
        )
        label = f"{len(indices):,} {label}{self._student_inputs}"
        threes = self.y_test == 3

        def extra(logits):
            if classes != [3]:  # the 3s are of interest only when 3 was omitted
                return {}
            return {"errors on 3s": self._errors(logits, self.y_test, threes)}

        before = self._logits(model, self.x_test)
        self._record(
            "800-800 distilled", label, t, before, paper_before, **extra(before)
        )
        heldout_logits = self._logits(model, self.x[self.heldout])
        choice = choose_bias_shift(
            heldout_logits, self.y[self.heldout], classes, candidates
        )
        shift_class_bias(model, classes, choice.shift)
        model.save(self.models_dir / f"{name}_bias.keras")
        after = self._logits(model, self.x_test)
        self._record(
            f"800-800 distilled, bias of {classes} {choice.shift:+.1f}",
            label,
            t,
            after,
            paper_after,
            **extra(after),
            heldout_accuracy=f"{choice.unshifted_accuracy:.4f} -> {choice.accuracy:.4f}",
        )

    def part_omit3(self):
        self._bias_part(
            "omit3_800",
            [c for c in range(10) if c != 3],
            [3],
            np.round(np.arange(0, 201) * 0.1, 6),
            "train without 3s",
            PAPER["omit3"],
            PAPER["omit3 + bias"],
        )

    def part_only78(self):
        self._bias_part(
            "only78_800",
            [7, 8],
            [7, 8],
            np.round(np.arange(-200, 1) * 0.1, 6),
            "train, only 7s and 8s",
            PAPER["only78"],
            PAPER["only78 + bias"],
        )

    # -------------------------------------------------------------- output

    def write_outputs(self):
        out = self.settings.out
        table = reports.markdown_table(self.rows, digits=2)
        (out / "results.md").write_text(table)
        reports.write_json(
            out / "results.json",
            {"settings": _jsonable(self.settings), "rows": self.rows},
        )
        # One plot per group: losses of differently sized nets differ in scale.
        groups = {
            "training_curves.png": {
                k: v for k, v in self.curves.items() if not k.startswith("small_")
            },
            "training_curves_small.png": {
                k: v for k, v in self.curves.items() if k.startswith("small_")
            },
        }
        for filename, curves in groups.items():
            if curves:
                reports.plot_curves(
                    curves,
                    out / filename,
                    title="MNIST training loss (distilled: soft + hard term)",
                    ylabel="training loss (per epoch)",
                )
        print(table, flush=True)
        return table


def _jsonable(settings: Settings) -> dict:
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in dataclasses.asdict(settings).items()
    }


def run(settings: Settings) -> list[dict]:
    """Runs the chosen parts, writes results.md, results.json and the plot.

    Args:
        settings: What to run (see `parse_args` for the meaning of each field).

    Returns:
        One dict per reported model: its name, transfer set, temperature, test
        errors and the paper's figure.

    Raises:
        ValueError: for an unknown part or invalid data.
        FileNotFoundError: when the MNIST files cannot be found.

    Example:

    >>> run(Settings(out=Path("runs/mnist"), parts=("teacher",)))  # doctest: +SKIP
    """
    unknown = set(settings.parts) - set(PARTS)
    if unknown:
        raise ValueError(
            f"--parts has unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}."
        )
    experiment = Experiment(settings)
    # The small students come last: they matter least and take longest.
    for part in ("teacher", "baseline", "distilled", "omit3", "only78", "small"):
        if part in settings.parts:
            getattr(experiment, f"part_{part}")()
    experiment.write_outputs()
    return experiment.rows


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v)


def parse_args(argv=None) -> Settings:
    """Parses command-line options into `Settings`.

    Args:
        argv: The arguments (default `sys.argv[1:]`).

    Returns:
        The `Settings`; `--epochs` sets both the teacher's and the students' epochs.

    Example:

    >>> parse_args(["--parts", "teacher", "--epochs", "2"]).teacher_epochs
    2
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)}",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="data root or MNIST folder (default: $KERAS_KD_DATA_DIR)",
    )
    parser.add_argument(
        "--out", default="runs/mnist", help="output folder (models, results, plot)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs for every model (overrides the two below)",
    )
    parser.add_argument("--teacher-epochs", type=int, default=45)
    parser.add_argument("--student-epochs", type=int, default=20)
    parser.add_argument(
        "--teacher-dropout",
        type=float,
        nargs=2,
        default=(0.1, 0.3),
        metavar=("INPUT", "HIDDEN"),
        help="the teacher's dropout rates on the inputs and on the hidden layers",
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="Adam start rate, cosine-decayed",
    )
    parser.add_argument(
        "--temperature",
        type=_floats,
        default=(20.0,),
        help="T, or a comma list for a sweep",
    )
    parser.add_argument(
        "--small-temperatures", type=_floats, default=(2.5, 4.0, 8.0, 20.0)
    )
    parser.add_argument(
        "--alpha", type=float, default=0.9, help="weight of the soft term"
    )
    parser.add_argument(
        "--train-subset",
        type=int,
        default=None,
        help="use only this many training images",
    )
    parser.add_argument(
        "--test-subset", type=int, default=None, help="use only this many test images"
    )
    parser.add_argument(
        "--teacher-cache",
        default=None,
        help="folder of a keras_kd.cache teacher cache to build or reuse for the "
        "students' soft targets (default: one in-run prediction pass)",
    )
    parser.add_argument(
        "--student-jitter",
        action="store_true",
        help="also jitter the distilled students' inputs (the teacher then runs on "
        "every batch); not in the paper, whose students see the unshifted images",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--verbose",
        type=int,
        default=1,
        help="Keras verbosity: 1 progress bar, 2 one line per epoch",
    )
    args = parser.parse_args(argv)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    return Settings(
        out=Path(args.out),
        data_dir=args.data_dir,
        parts=parts,
        teacher_epochs=args.epochs or args.teacher_epochs,
        teacher_input_dropout=args.teacher_dropout[0],
        teacher_dropout=args.teacher_dropout[1],
        student_epochs=args.epochs or args.student_epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        temperatures=args.temperature,
        small_temperatures=args.small_temperatures,
        alpha=args.alpha,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        teacher_cache=None if args.teacher_cache is None else Path(args.teacher_cache),
        student_jitter=args.student_jitter,
        seed=args.seed,
        verbose=args.verbose,
    )


if __name__ == "__main__":
    try:
        run(parse_args())
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"distill_mnist: error: {error}")

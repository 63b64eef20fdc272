"""Sections 4 and 6 of Hinton, Vinyals and Dean (2015) on the Free Spoken Digit Dataset.

Every 10 ms frame of an FSDD recording is one example: 40 log-mel coefficients of
the frame and its neighbours (``--left``/``--right`` frames of context) in, one of 11
classes out (the utterance's digit, or silence for frames far quieter than the
utterance's loudest). A word is recognised by summing frame log-probabilities of
each digit over the utterance's speech frames.

Parts (``--parts``, comma-separated, default all):

  baseline   a fully connected ReLU net on hard labels (ensemble member 0)
  ensemble   ``--members`` identical nets from different random initialisations
             (and data orders), combined by the arithmetic mean of their
             probabilities; its outputs are written once to a teacher-output cache
  distilled  a net of the baseline's size trained from that cache on the
             ensemble's soft targets, at each of ``--temperatures``
  fraction   soft targets as a regulariser (section 6): the baseline net trained on
             ``--fraction`` of the training frames with hard labels, and on the
             same frames with soft targets from the full-data baseline, at each of
             ``--fraction-temperatures``

With ``--repeats N`` every distilled and fraction model is trained N times from
different seeds (``<name>-s1`` ...), and the ratios and the choice of temperature
use the mean over the seeds.

Model selection: a validation set is carved out of the training recordings
(``--validation``; by default takes 5-9 of every speaker on the standard split, and
the training speaker ``george`` on the speaker split). Every model trains on the
rest. The temperature of the distilled net and of the fraction's soft targets is
chosen by validation frame accuracy; the paper's two ratios are reported at that
temperature, while the test figures of every temperature are still listed.

Each trained model is saved under ``--out/models`` with its record in
``--out/results.json``; a rerun skips finished models. The tables (shaped like the
paper's Tables 1 and 5) go to ``--out/tables.md``.

Example:

    python examples/acoustic/distill_acoustic.py --data-dir ../shared/data --split speaker
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_kd import Distiller, reports  # noqa: E402
from keras_kd.cache import build_teacher_cache  # noqa: E402
from keras_kd.datasets import fsdd  # noqa: E402
from keras_kd.teachers import TeacherEnsemble  # noqa: E402

PARTS = ("baseline", "ensemble", "distilled", "fraction")

# The paper's figures (speech, 2000 hours): Table 1 and Table 5.
PAPER_TABLE1 = {
    "baseline": ("58.9%", "10.9%"),
    "ensemble": ("61.1%", "10.7%"),
    "distilled": ("60.8%", "10.7%"),
}
PAPER_TABLE5 = {
    "baseline": ("63.4%", "58.9%"),
    "fraction-hard": ("67.3%", "44.5%"),
    "fraction-soft-": ("65.4%", "57.0%"),
}


@dataclasses.dataclass
class Settings:
    """Options of the experiment (see `parse_args` for their meaning)."""

    data_dir: str | None = None
    out: str = "runs/acoustic"
    parts: tuple[str, ...] = PARTS
    split: str = "speaker"
    test_speakers: tuple[str, ...] = fsdd.DEFAULT_TEST_SPEAKERS
    validation: str = "auto"
    validation_speakers: tuple[str, ...] = fsdd.DEFAULT_VALIDATION_SPEAKERS
    normalisation: str = "speaker"
    silence_db: float = fsdd.DEFAULT_SILENCE_DB
    left: int = 5
    right: int = 5
    hidden: tuple[int, ...] = (256, 256)
    epochs: int = 6
    batch_size: int = 256
    learning_rate: float = 1e-3
    members: int = 10
    temperatures: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    alpha: float = 0.5
    fraction: float = 0.03
    fraction_epochs: int = 100
    fraction_temperatures: tuple[float, ...] = (2.0,)
    fraction_alpha: float = 1.0
    repeats: int = 1
    max_takes: int | None = None
    seed: int = 0
    verbose: int = 1


def resolve_validation(settings: Settings) -> str:
    """The validation set `settings.validation` names, with `"auto"` resolved.

    `"auto"` holds out a training speaker on the speaker split (so validation, like
    test, is an unseen speaker) and takes 5-9 of every speaker on the standard
    split (like its test takes 0-4).
    """
    if settings.validation != "auto":
        return settings.validation
    return "speaker" if settings.split == "speaker" else "takes"


# Settings that change the frames: a rerun into an `--out` made with other values
# would load models trained on other data, so it is refused.
DATA_SETTINGS = (
    "split", "test_speakers", "validation", "validation_speakers", "normalisation",
    "silence_db", "left", "right", "max_takes", "fraction", "seed",
)


def build_frame_net(input_size: int, hidden: tuple[int, ...], name: str = "frame_net"):
    """The fully connected frame classifier: ReLU layers, then 11 logits.

    Args:
        input_size: Features per example (context frames x mel bins).
        hidden: Units of each hidden layer.
        name: Model name.

    Returns:
        An uncompiled `keras.Sequential` that outputs logits.
    """
    layers = [keras.Input((input_size,))]
    layers += [keras.layers.Dense(units, activation="relu") for units in hidden]
    layers.append(keras.layers.Dense(fsdd.NUM_CLASSES, name="logits"))
    return keras.Sequential(layers, name=name)


def _percent(value: float) -> str:
    return f"{100.0 * value:.1f}%"


class Experiment:
    """Loads the frames once and trains, saves and scores each model.

    Args:
        settings: The experiment's `Settings`.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.out = Path(settings.out)
        (self.out / "models").mkdir(parents=True, exist_ok=True)
        self._check_data_settings()
        self.validation = resolve_validation(settings)
        select = None
        if settings.max_takes is not None:
            select = lambda r: r.take < settings.max_takes  # noqa: E731
        self.data = fsdd.load_fsdd(
            settings.data_dir,
            split=settings.split,
            test_speakers=settings.test_speakers,
            normalisation=settings.normalisation,
            silence_db=settings.silence_db,
            cache_dir=self.out / "features",
            select=select,
            validation=self.validation,
            validation_speakers=settings.validation_speakers,
        )
        self.x_train = self.data.train.windows(settings.left, settings.right)
        self.y_train = self.data.train.labels
        self.x_test = self.data.test.windows(settings.left, settings.right)
        self.y_test = self.data.test.labels
        self.x_val = self.y_val = None
        if self.data.validation is not None:
            self.x_val = self.data.validation.windows(settings.left, settings.right)
            self.y_val = self.data.validation.labels
        rng = np.random.default_rng(settings.seed)
        size = max(1, int(round(settings.fraction * len(self.y_train))))
        self.fraction_rows = np.sort(rng.choice(len(self.y_train), size, replace=False))
        self.results_path = self.out / "results.json"
        self.records = {}
        self.models: dict[str, keras.Model] = {}
        if self.results_path.is_file():
            self.records = json.loads(self.results_path.read_text())
        print(
            f"FSDD {settings.split} split: {len(self.y_train)} training frames "
            f"({len(self.data.train.recordings)} utterances), {len(self.y_test)} test "
            f"frames ({len(self.data.test.recordings)} utterances), "
            f"{0 if self.y_val is None else len(self.y_val)} validation frames "
            f"({self.validation}), input {self.x_train.shape[1]} features."
        )

    def _check_data_settings(self):
        """Records the data settings in `--out`, refusing a folder made with others."""
        path = self.out / "data-settings.json"
        current = {k: v for k, v in _jsonable(self.settings).items() if k in DATA_SETTINGS}
        current["validation"] = resolve_validation(self.settings)
        if path.is_file():
            stored = json.loads(path.read_text())
            if stored != current:
                changed = sorted(k for k in current if stored.get(k) != current[k])
                raise ValueError(
                    f"{self.out} holds models made with other data settings ({changed}); "
                    "pass another --out or delete that folder."
                )
        elif (self.out / "results.json").is_file():
            raise ValueError(
                f"{self.out} holds results from a version without a validation set; "
                "pass another --out or delete that folder."
            )
        else:
            reports.write_json(path, current)

    # ------------------------------------------------------------- training

    def _build(self, seed: int, name: str):
        keras.utils.set_random_seed(seed)
        return build_frame_net(self.x_train.shape[1], self.settings.hidden, name=name)

    def _optimizer(self):
        return keras.optimizers.Adam(self.settings.learning_rate)

    def _model_path(self, name: str) -> Path:
        return self.out / "models" / f"{name}.keras"

    def _train(self, name: str, seed: int, fit) -> keras.Model:
        """Loads `name` if saved, else builds it with `seed`, calls `fit`, saves it."""
        if name in self.models:
            return self.models[name]
        path = self._model_path(name)
        if path.is_file() and name in self.records:
            print(f"[{name}] loaded from {path}")
            self.models[name] = keras.saving.load_model(path)
            return self.models[name]
        model = self._build(seed, name.replace("-", "_"))
        print(f"[{name}] training")
        start = time.time()
        fit(model)
        self.records.setdefault(name, {})["train_seconds"] = round(time.time() - start, 1)
        temporary = path.with_name(path.stem + ".tmp.keras")
        model.save(temporary)
        temporary.replace(path)
        self.models[name] = model
        return model

    def _fit_hard(self, x, y, epochs: int):
        def fit(model):
            model.compile(
                optimizer=self._optimizer(),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            model.fit(
                x, y, batch_size=self.settings.batch_size, epochs=epochs,
                shuffle=True, verbose=self.settings.verbose,
            )

        return fit

    def _fit_soft(self, cache, x, y, *, temperature, alpha, epochs, seed):
        def fit(model):
            distiller = Distiller(student=model, teacher=None, temperature=temperature, soft_weight=alpha)
            distiller.compile(optimizer=self._optimizer(), metrics=["accuracy"])
            data = cache.dataset(
                x, y, batch_size=self.settings.batch_size, seed=seed,
                temperature=temperature,
            )
            # The cache's dataset shuffles its rows every epoch itself.
            distiller.fit(data, epochs=epochs, shuffle=False, verbose=self.settings.verbose)

        return fit

    # -------------------------------------------------------------- scoring

    def _logits(self, model, x) -> np.ndarray:
        return np.asarray(model.predict(x, batch_size=4096, verbose=0))

    def _score(self, name, system, model, *, train_rows=None, **extra) -> dict:
        """Frame accuracies and word error rate of `model`, stored under `name`."""
        record = self.records.setdefault(name, {})
        if "test_frame_accuracy" not in record:
            train_logits = self._logits(model, self.x_train)
            test_logits = self._logits(model, self.x_test)
            record.update(
                system=system,
                train_frame_accuracy=fsdd.frame_accuracy(train_logits, self.y_train),
                test_frame_accuracy=fsdd.frame_accuracy(test_logits, self.y_test),
                wer=fsdd.word_error_rate(test_logits, self.data.test),
                **extra,
            )
            if self.x_val is not None:
                val_logits = self._logits(model, self.x_val)
                record.update(
                    validation_frame_accuracy=fsdd.frame_accuracy(val_logits, self.y_val),
                    validation_wer=fsdd.word_error_rate(val_logits, self.data.validation),
                )
            if train_rows is not None:
                record["own_train_frame_accuracy"] = fsdd.frame_accuracy(
                    train_logits[train_rows], self.y_train[train_rows]
                )
            self._save_records()
        print(
            f"[{name}] test frame accuracy {_percent(record['test_frame_accuracy'])}, "
            f"WER {_percent(record['wer'])}"
        )
        return record

    def _save_records(self):
        reports.write_json(self.results_path, self.records)

    # ---------------------------------------------------------------- parts

    def member(self, index: int) -> keras.Model:
        """Ensemble member `index` (member 0 is the baseline), trained on hard labels."""
        name = f"member-{index:02d}"
        model = self._train(
            name, self.settings.seed + index,
            self._fit_hard(self.x_train, self.y_train, self.settings.epochs),
        )
        self._score(name, f"Member {index}", model)
        return model

    def part_baseline(self):
        self.member(0)

    def ensemble(self) -> TeacherEnsemble:
        """The `--members` nets, combined by the arithmetic mean of probabilities."""
        members = [self.member(i) for i in range(self.settings.members)]
        return TeacherEnsemble(members, mean="arithmetic")

    def part_ensemble(self):
        ensemble = self.ensemble()
        name = "ensemble"
        record = self.records.setdefault(name, {})
        record.pop("test_frame_accuracy", None)  # cheap to rescore: members may change
        self._score(name, f"{self.settings.members}xEnsemble", ensemble)
        member_accuracy = [
            self.records[f"member-{i:02d}"]["test_frame_accuracy"]
            for i in range(self.settings.members)
        ]
        record["mean_member_test_frame_accuracy"] = float(np.mean(member_accuracy))
        self._save_records()

    def ensemble_cache(self):
        """The ensemble's member logits on the training frames, built once."""
        return build_teacher_cache(
            self.ensemble(), self.x_train, self.out / "cache-ensemble",
            batch_size=4096, verbose=bool(self.settings.verbose),
        )

    def part_distilled(self):
        cache = self.ensemble_cache()
        for repeat in range(self.settings.repeats):
            for temperature in self.settings.temperatures:
                name = _repeat_name(f"distilled-T{temperature:g}", repeat)
                seed = self.settings.seed + 1000 + int(10 * temperature) + REPEAT_SEED * repeat
                model = self._train(
                    name, seed,
                    self._fit_soft(
                        cache, self.x_train, self.y_train, temperature=temperature,
                        alpha=self.settings.alpha, epochs=self.settings.epochs, seed=seed,
                    ),
                )
                self._score(
                    name, f"Distilled single model (T={temperature:g})", model,
                    temperature=temperature, alpha=self.settings.alpha,
                    **_repeat_fields(f"distilled-T{temperature:g}", repeat),
                )

    def part_fraction(self):
        baseline = self.member(0)
        rows = self.fraction_rows
        x_small, y_small = self.x_train[rows], self.y_train[rows]
        percent = f"{100 * self.settings.fraction:g}%"
        cache = None
        for repeat in range(self.settings.repeats):
            # The 3% subset stays the same; the repeats differ in initialisation
            # and data order.
            seed = self.settings.seed + 2000 + REPEAT_SEED * repeat
            name = _repeat_name("fraction-hard", repeat)
            model = self._train(
                name, seed, self._fit_hard(x_small, y_small, self.settings.fraction_epochs),
            )
            self._score(
                name, f"Baseline ({percent} of training set, hard targets)",
                model, train_rows=rows, frames=int(len(rows)),
                **_repeat_fields("fraction-hard", repeat),
            )
            if cache is None:
                cache = build_teacher_cache(
                    baseline, x_small, self.out / "cache-fraction",
                    batch_size=4096, verbose=bool(self.settings.verbose),
                )
            for temperature in self.settings.fraction_temperatures:
                name = _repeat_name(f"fraction-soft-T{temperature:g}", repeat)
                model = self._train(
                    name, seed,
                    self._fit_soft(
                        cache, x_small, y_small, temperature=temperature,
                        alpha=self.settings.fraction_alpha,
                        epochs=self.settings.fraction_epochs, seed=seed,
                    ),
                )
                self._score(
                    name,
                    f"Soft targets ({percent} of training set, from the full-data "
                    f"baseline, T={temperature:g})",
                    model, train_rows=rows, frames=int(len(rows)),
                    temperature=temperature, alpha=self.settings.fraction_alpha,
                    **_repeat_fields(f"fraction-soft-T{temperature:g}", repeat),
                )

    # --------------------------------------------------------------- tables

    def write_outputs(self) -> dict:
        """Writes `tables.md` and `summary.json`; returns the summary."""
        summary = summarise(self.records)
        summary["settings"] = _jsonable(self.settings)
        validation = self.data.validation
        summary["validation"] = self.validation
        summary["frames"] = {
            "train": int(len(self.y_train)), "test": int(len(self.y_test)),
            "validation": 0 if validation is None else int(len(validation)),
            "fraction": int(len(self.fraction_rows)),
            "train_utterances": len(self.data.train.recordings),
            "test_utterances": len(self.data.test.recordings),
            "validation_utterances": 0 if validation is None else len(validation.recordings),
        }
        reports.write_json(self.out / "summary.json", summary)
        text = format_tables(self.records, summary)
        (self.out / "tables.md").write_text(text)
        print(text)
        return summary


REPEAT_SEED = 7919  # seed offset between repeats of a model


def _repeat_name(name: str, repeat: int) -> str:
    """`name` for repeat 0, `name-s<repeat>` for the further seeds."""
    return name if repeat == 0 else f"{name}-s{repeat}"


def _repeat_fields(name: str, repeat: int) -> dict:
    return {} if repeat == 0 else {"repeat_of": name, "repeat": repeat}


def _by_temperature(records: dict, prefix: str) -> list[dict]:
    """The scored first-seed records whose name starts with `prefix`, by temperature."""
    chosen = [
        record for name, record in records.items()
        if name.startswith(prefix) and "test_frame_accuracy" in record
        and "repeat_of" not in record
    ]
    return sorted(chosen, key=lambda record: record["temperature"])


def with_seed_means(records: dict) -> dict:
    """A copy of `records` where each repeated model has the mean over its seeds.

    Records of further seeds carry `repeat_of` (the first seed's name). The first
    seed's record gains `seeds` (how many), `test_frame_accuracy_mean`,
    `validation_frame_accuracy_mean` and `wer_mean`; models without repeats get
    the same fields from their one seed.

    Args:
        records: `results.json` content.

    Returns:
        A new dict (the records are copied, not changed).
    """
    view = {name: dict(record) for name, record in records.items()}
    groups: dict = {}
    for name, record in view.items():
        if "test_frame_accuracy" in record:
            groups.setdefault(record.get("repeat_of", name), []).append(record)
    for name, group in groups.items():
        if name not in view:
            continue
        first = view[name]
        first["seeds"] = len(group)
        for key in ("test_frame_accuracy", "validation_frame_accuracy", "wer"):
            values = [r[key] for r in group if key in r]
            if len(values) == len(group):
                first[f"{key}_mean"] = float(np.mean(values))
    return view


def _ratio(numerator: float, denominator: float) -> float:
    return float("nan") if denominator == 0 else numerator / denominator


def _members(records: dict) -> list[dict]:
    """The scored ensemble members (`member-00`, `member-01`, ...), in order."""
    return [
        records[name] for name in sorted(records)
        if name.startswith("member-") and "test_frame_accuracy" in records[name]
    ]


def _choose(chosen: list[dict]) -> str | None:
    """The temperature (as `"%g"`) with the best validation frame accuracy.

    The accuracy is the mean over the model's seeds (see `with_seed_means`). Ties go to the lower temperature; `None` when no record has a validation score.
    """
    scored = [r for r in chosen if "validation_frame_accuracy_mean" in r]
    if not scored:
        return None
    best = max(scored, key=lambda r: (r["validation_frame_accuracy_mean"], -r["temperature"]))
    return f"{best['temperature']:g}"


def summarise(records: dict) -> dict:
    """The paper's two headline ratios from the model records.

    * gain recovered (Table 1): `(distilled - baseline) / (ensemble - baseline)`
      in test frame accuracy, for each temperature, with the baseline net
      (member 0) as the baseline, and with the mean test frame accuracy of the
      ensemble's members (`..._vs_mean_member`, less sensitive to one seed);
    * gap closed (Table 5): `(soft - hard) / (baseline - hard)` in test frame
      accuracy, for the models trained on the fraction of the data, for each
      temperature of the soft targets (and again against the members' mean);
    * the temperature of each part chosen by validation frame accuracy
      (`chosen_temperature`) and the ratios at that temperature (`at_chosen`),
      which are the figures to hold against the issue's targets: choosing by
      test accuracy would select on the test set.

    Args:
        records: `results.json` content (name to record).

    Returns:
        A dict with `ensemble_gain`, `gain_recovered`,
        `gain_recovered_vs_mean_member`, `gap_closed`, `gap_closed_vs_mean_member`
        (`{T: ratio}` each), `members` (mean and standard deviation of the
        members' scores), `chosen_temperature` and `at_chosen` (only the parts
        that ran).
    """
    records = with_seed_means(records)
    summary: dict = {}
    chosen: dict = {}
    at_chosen: dict = {}
    base = records.get("member-00", {}).get("test_frame_accuracy")
    members = _members(records)
    mean_member = None
    if len(members) > 1:
        test = np.array([m["test_frame_accuracy"] for m in members])
        mean_member = float(test.mean())
        summary["members"] = {
            "count": len(members),
            "test_frame_accuracy_mean": mean_member,
            "test_frame_accuracy_std": float(test.std(ddof=1)),
            "wer_mean": float(np.mean([m["wer"] for m in members if "wer" in m])),
        }
        val = [m["validation_frame_accuracy"] for m in members if "validation_frame_accuracy" in m]
        if len(val) == len(members):
            summary["members"]["validation_frame_accuracy_mean"] = float(np.mean(val))
    ensemble = records.get("ensemble", {}).get("test_frame_accuracy")
    if base is not None and ensemble is not None:
        summary["ensemble_gain"] = ensemble - base
        ordered = _by_temperature(records, "distilled-")
        distilled = {f"{r['temperature']:g}": r["test_frame_accuracy_mean"] for r in ordered}
        summary["seeds"] = {"distilled": {f"{r['temperature']:g}": r["seeds"] for r in ordered}}
        summary["gain_recovered"] = {
            t: _ratio(accuracy - base, ensemble - base) for t, accuracy in distilled.items()
        }
        if mean_member is not None:
            summary["gain_recovered_vs_mean_member"] = {
                t: _ratio(accuracy - mean_member, ensemble - mean_member)
                for t, accuracy in distilled.items()
            }
        t = _choose(ordered)
        if t is not None:
            chosen["distilled"] = t
            at_chosen["gain_recovered"] = summary["gain_recovered"][t]
            if mean_member is not None:
                at_chosen["gain_recovered_vs_mean_member"] = (
                    summary["gain_recovered_vs_mean_member"][t]
                )
    hard = records.get("fraction-hard", {}).get("test_frame_accuracy_mean")
    ordered = _by_temperature(records, "fraction-soft-")
    soft = {f"{r['temperature']:g}": r["test_frame_accuracy_mean"] for r in ordered}
    if base is not None and hard is not None and soft:
        summary.setdefault("seeds", {})["fraction"] = {
            "hard": records["fraction-hard"]["seeds"],
            **{f"{r['temperature']:g}": r["seeds"] for r in ordered},
        }
        summary["gap_closed"] = {
            t: _ratio(accuracy - hard, base - hard) for t, accuracy in soft.items()
        }
        if mean_member is not None:
            summary["gap_closed_vs_mean_member"] = {
                t: _ratio(accuracy - hard, mean_member - hard) for t, accuracy in soft.items()
            }
        t = _choose(ordered)
        if t is not None:
            chosen["fraction"] = t
            at_chosen["gap_closed"] = summary["gap_closed"][t]
            if mean_member is not None:
                at_chosen["gap_closed_vs_mean_member"] = summary["gap_closed_vs_mean_member"][t]
    if chosen:
        summary["chosen_temperature"] = chosen
        summary["at_chosen"] = at_chosen
    return summary


def _ratios(values: dict, chosen: str | None = None) -> str:
    return ", ".join(
        f"T={t}: {100 * v:.0f}%" + (" (chosen)" if t == chosen else "")
        for t, v in values.items()
    )


def _verdict(value: float, target: float) -> str:
    if value >= target:
        return f"{100 * value:.0f}%, target >= {100 * target:.0f}% met"
    return (
        f"{100 * value:.0f}%, target >= {100 * target:.0f}% missed by "
        f"{100 * (target - value):.0f} points"
    )


def format_tables(records: dict, summary: dict) -> str:
    """Markdown tables shaped like the paper's Table 1 and Table 5.

    Rows chosen on the validation set are marked; the ratios at the chosen
    temperature come first, those of every temperature after.

    Args:
        records: `results.json` content.
        summary: The output of `summarise`.

    Returns:
        Markdown text.
    """
    records = with_seed_means(records)
    lines = []
    chosen = summary.get("chosen_temperature", {})
    at_chosen = summary.get("at_chosen", {})
    members = summary.get("members")
    repeated = any(r.get("seeds", 1) > 1 for r in records.values())
    mean_column = "Test / validation frame accuracy, mean over seeds"
    note = " (from the means over seeds)" if repeated else ""
    test_note = "test, means over seeds" if repeated else "test"

    def val(r):
        return _percent(r["validation_frame_accuracy"]) if "validation_frame_accuracy" in r else "-"

    def seed_mean(r):
        validation = r.get("validation_frame_accuracy_mean")
        return (
            f"{_percent(r['test_frame_accuracy_mean'])} / "
            f"{'-' if validation is None else _percent(validation)} ({r['seeds']} seeds)"
        )

    def with_mean(row, r, after):
        if not repeated:
            return row
        out = {}
        for key, value in row.items():
            out[key] = value
            if key == after:
                out[mean_column] = seed_mean(r) if r is not None else "-"
        return out

    def marked(r, part):
        if "temperature" in r and chosen.get(part) == f"{r['temperature']:g}":
            return f"{r['system']} [chosen on validation]"
        return r["system"]

    rows = []
    if "member-00" in records:
        rows.append(("Baseline (member 0, one seed)", records["member-00"], PAPER_TABLE1["baseline"]))
    if "ensemble" in records:
        rows.append((records["ensemble"]["system"], records["ensemble"], PAPER_TABLE1["ensemble"]))
    for record in _by_temperature(records, "distilled-"):
        rows.append((marked(record, "distilled"), record, PAPER_TABLE1["distilled"]))
    if rows:
        table = [
            with_mean({
                "System": system,
                "Test frame accuracy": _percent(r["test_frame_accuracy"]),
                "WER": _percent(r["wer"]),
                "Validation frame accuracy": val(r),
                "Train frame accuracy": _percent(r["train_frame_accuracy"]),
                "Paper (frame acc / WER)": " / ".join(paper),
            }, r if "temperature" in r else None, "Validation frame accuracy")
            for system, r, paper in rows
        ]
        if members:
            table.insert(1, with_mean({
                "System": f"Baseline, mean of {members['count']} seeds (the ensemble's members)",
                "Test frame accuracy": (
                    f"{_percent(members['test_frame_accuracy_mean'])} "
                    f"(sd {100 * members['test_frame_accuracy_std']:.1f})"
                ),
                "WER": _percent(members["wer_mean"]),
                "Validation frame accuracy": (
                    _percent(members["validation_frame_accuracy_mean"])
                    if "validation_frame_accuracy_mean" in members else "-"
                ),
                "Train frame accuracy": _percent(
                    float(np.mean([m["train_frame_accuracy"] for m in _members(records)]))
                ),
                "Paper (frame acc / WER)": " / ".join(PAPER_TABLE1["baseline"]),
            }, None, "Validation frame accuracy"))
        lines += ["Table 1 (frame classification, word error rate by summed frame log-probabilities)", ""]
        lines.append(reports.markdown_table(table))
        if "distilled" in chosen:
            t = chosen["distilled"]
            text = (
                f"Temperature chosen by validation frame accuracy{note}: T={t}. Share "
                f"of the ensemble's test gain recovered at T={t}{note}: "
                f"{_verdict(at_chosen['gain_recovered'], 0.8)} against the baseline net "
                f"(member 0)"
            )
            if "gain_recovered_vs_mean_member" in at_chosen:
                text += (
                    f"; {_verdict(at_chosen['gain_recovered_vs_mean_member'], 0.8)} "
                    "against the mean of the members"
                )
            lines.append(text + " (paper: 86%).\n")
        if summary.get("gain_recovered"):
            lines.append(
                f"Ensemble gain over the baseline net: {100 * summary['ensemble_gain']:.2f} "
                f"points of test frame accuracy; share recovered at every temperature "
                f"({test_note}): {_ratios(summary['gain_recovered'], chosen.get('distilled'))}.\n"
            )
        if summary.get("gain_recovered_vs_mean_member"):
            lines.append(
                "Measured from the mean test frame accuracy of the members "
                f"({_percent(members['test_frame_accuracy_mean'])}) instead: "
                f"{_ratios(summary['gain_recovered_vs_mean_member'], chosen.get('distilled'))}.\n"
            )
    rows = []
    for prefix, paper in PAPER_TABLE5.items():
        if prefix == "baseline":
            if "member-00" in records:
                rows.append(("Baseline (100% of training set, member 0)", records["member-00"], paper))
            continue
        ordered = [records["fraction-hard"]] if prefix == "fraction-hard" and "fraction-hard" in records else []
        if prefix == "fraction-soft-":
            ordered = _by_temperature(records, prefix)
        rows += [
            (marked(record, "fraction"), record, paper)
            for record in ordered if "test_frame_accuracy" in record
        ]
    if len(rows) > 1:
        table = [
            with_mean({
                "System & training set": system,
                "Train frame accuracy (all training frames)": _percent(r["train_frame_accuracy"]),
                "Train frame accuracy (own training frames)": _percent(
                    r.get("own_train_frame_accuracy", r["train_frame_accuracy"])
                ),
                "Validation frame accuracy": val(r),
                "Test frame accuracy": _percent(r["test_frame_accuracy"]),
                "Paper (train / test)": " / ".join(paper),
            }, r if r is not records.get("member-00") else None, "Test frame accuracy")
            for system, r, paper in rows
        ]
        lines += ["", "Table 5 (soft targets as a regulariser)", ""]
        lines.append(reports.markdown_table(table))
        if "fraction" in chosen:
            t = chosen["fraction"]
            text = (
                f"Temperature chosen by validation frame accuracy{note}: T={t}. Share "
                f"of the test gap between the hard-target fraction model and the "
                f"full-data baseline closed at T={t}{note}: {_verdict(at_chosen['gap_closed'], 0.7)} "
                "with the baseline net (member 0) as the full-data figure"
            )
            if "gap_closed_vs_mean_member" in at_chosen:
                text += (
                    f"; {_verdict(at_chosen['gap_closed_vs_mean_member'], 0.7)} with the "
                    "mean of the members"
                )
            lines.append(text + " (paper: 87%).\n")
        if "gap_closed" in summary:
            lines.append(
                f"Share of the gap closed at every temperature ({test_note}): "
                f"{_ratios(summary['gap_closed'], chosen.get('fraction'))}.\n"
            )
        if "gap_closed_vs_mean_member" in summary:
            lines.append(
                "With the members' mean as the full-data figure instead: "
                f"{_ratios(summary['gap_closed_vs_mean_member'], chosen.get('fraction'))}.\n"
            )
    return "\n".join(lines)


def _jsonable(settings: Settings) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}


def run(settings: Settings) -> dict:
    """Runs the selected parts and writes the tables; returns the summary.

    Args:
        settings: The experiment's `Settings`.

    Returns:
        The summary written to `summary.json` (ratios, settings, frame counts).

    Raises:
        ValueError: for an unknown part or data option.
        FileNotFoundError: when the data cannot be found.
    """
    unknown = sorted(set(settings.parts) - set(PARTS))
    if unknown:
        raise ValueError(f"`--parts` has unknown parts {unknown}; choose from {list(PARTS)}.")
    experiment = Experiment(settings)
    for part in PARTS:
        if part in settings.parts:
            getattr(experiment, f"part_{part}")()
    return experiment.write_outputs()


def _numbers(kind):
    def parse(text: str):
        try:
            return tuple(kind(item) for item in text.split(",") if item.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind.__name__}, got {text!r}"
            ) from None

    return parse


def parse_args(argv=None) -> Settings:
    """Parses command-line options into `Settings`."""
    parser = argparse.ArgumentParser(
        prog="keras-kd acoustic", description=__doc__.split("\n\n")[0],
    )
    add = parser.add_argument
    add("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    add("--data-dir", default=None, help="data root holding fsdd/ (default: $KERAS_KD_DATA_DIR)")
    add("--out", default="runs/acoustic", help="output folder (features, models, caches, tables)")
    add("--split", default="speaker", choices=fsdd.SPLITS, help="standard: takes 0-4 test; speaker: held-out speakers")
    add("--test-speakers", default=",".join(fsdd.DEFAULT_TEST_SPEAKERS), help="held-out speakers of the speaker split")
    add("--validation", default="auto", choices=("auto", *fsdd.VALIDATIONS),
        help="validation set carved from the training recordings, which chooses the "
        "temperatures: takes (takes 5-9 of every speaker), speaker (--validation-speakers), "
        "none; auto: speaker on the speaker split, takes on the standard split")
    add("--validation-speakers", default=",".join(fsdd.DEFAULT_VALIDATION_SPEAKERS),
        help="held-out training speakers of --validation speaker")
    add("--normalisation", default="speaker", choices=fsdd.NORMALISATIONS)
    add("--silence-db", type=float, default=fsdd.DEFAULT_SILENCE_DB, help="silence: this many dB below the loudest frame")
    add("--left", type=int, default=5, help="context frames before each frame (paper: 20)")
    add("--right", type=int, default=5, help="context frames after each frame (paper: 5)")
    add("--hidden", type=_numbers(int), default=(256, 256), help="hidden layer sizes, e.g. 256,256")
    add("--epochs", type=int, default=6, help="epochs of every full-data model")
    add("--batch-size", type=int, default=256)
    add("--learning-rate", type=float, default=1e-3, help="Adam learning rate")
    add("--members", type=int, default=10, help="ensemble size")
    add("--temperatures", type=_numbers(float), default=(1.0, 2.0, 5.0, 10.0))
    add("--alpha", type=float, default=0.5, help="weight of the soft term when distilling the ensemble")
    add("--fraction", type=float, default=0.03, help="share of training frames for the regulariser part")
    add("--fraction-epochs", type=int, default=100)
    add("--fraction-temperatures", type=_numbers(float), default=(2.0,), help="temperatures of the soft targets on the fraction")
    add("--fraction-alpha", type=float, default=1.0, help="weight of the soft term on the fraction")
    add("--repeats", type=int, default=1, help="seeds of every distilled and fraction model (ratios use their mean)")
    add("--max-takes", type=int, default=None, help="use only takes below this (small runs)")
    add("--seed", type=int, default=0)
    add("--verbose", type=int, default=1, help="Keras verbosity: 1 progress bar, 2 one line per epoch")
    args = parser.parse_args(argv)
    if not 0.0 < args.fraction <= 1.0:
        parser.error(f"--fraction must be in (0, 1], got {args.fraction}")
    if args.members < 1:
        parser.error(f"--members must be >= 1, got {args.members}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    return Settings(
        data_dir=args.data_dir, out=args.out,
        parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()),
        split=args.split,
        test_speakers=tuple(s.strip() for s in args.test_speakers.split(",") if s.strip()),
        validation=args.validation,
        validation_speakers=tuple(
            s.strip() for s in args.validation_speakers.split(",") if s.strip()
        ),
        normalisation=args.normalisation, silence_db=args.silence_db,
        left=args.left, right=args.right, hidden=args.hidden, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        members=args.members, temperatures=args.temperatures, alpha=args.alpha,
        fraction=args.fraction, fraction_epochs=args.fraction_epochs,
        fraction_temperatures=args.fraction_temperatures,
        fraction_alpha=args.fraction_alpha, repeats=args.repeats, max_takes=args.max_takes,
        seed=args.seed, verbose=args.verbose,
    )


def main(argv=None) -> int:
    """Command-line entry point (`keras-kd acoustic ...`)."""
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

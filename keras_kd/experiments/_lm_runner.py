"""The machinery of `keras-kd language-model`: corpus, tokenizer run, models, table.

`keras_kd.experiments.language_model` parses the options and documents the
experiment; this module trains its models and writes its results. Decisions:

- **Tokenizer as a run.** The byte-pair tokenizer is the run `tokenizer`
  (no model file; its merges are the record), fingerprinted by the Python
  version, the digest of the files used, the cap and the vocabulary size: a
  rerun reuses it instead of training it again, and another corpus is refused.
- **Fingerprints.** Every model's settings hold the corpus's
  (`PythonSource.settings()`: Python version, files digest, tokenizer digest),
  its size and schedule and seed; a distilled student's also hold every
  setting of its teacher (prefixed `teacher_`).
- **Seeds.** Each model is built right after `keras.utils.set_random_seed`
  with its own seed, so it does not depend on which models ran before.
- **Figures** (validation and test perplexity, bits per byte, training
  throughput) are computed when a model finishes and kept in its record.
- **The top-k cache** is the run `teacher-cache-top<k>` (with
  `--top-k-fill mass`, `teacher-cache-top<k>-mass`; the cached students likewise
  `cached-s<seed>` and `cached-mass-s<seed>`), fingerprinted by the teacher's
  settings, `k` and the fill; its record holds the build's seconds. The
  cached students replay it in memory, reshuffled every epoch with their seed.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import tensorflow as tf

from keras_kd.cache import TeacherCache, build_teacher_cache
from keras_kd.datasets.python_source import (
    BytePairTokenizer,
    PythonSource,
    load_python_source,
    read_corpus,
)
from keras_kd.distiller import Distiller
from keras_kd.evaluation import token_scores
from keras_kd.experiments._epochs import CURVE_FILE, EpochBackup, fit_epochs
from keras_kd.experiments.language_model import Settings
from keras_kd.losses import TemperedKL
from keras_kd.models import causal_transformer
from keras_kd.runs import ModelRun, RunFolder, seed_summary

TITLE = "Token-level distillation of a causal Transformer LM (Python stdlib source)"
SCHEDULE = "Adam, linear warm-up, cosine decay to 10%, clipnorm 1"
FINAL_LEARNING_RATE = 0.1
WARMUP_STEPS = 200
EVALUATION_BATCH = 64
STUDENT_KINDS = ("scratch", "distilled", "cached")
COLUMNS = (
    "model",
    "size",
    "parameters",
    "epochs",
    "validation perplexity",
    "test perplexity",
    "test bits/byte",
    "train tokens/s",
)


def _python_version() -> str:
    import sys

    return ".".join(str(v) for v in sys.version_info[:3])


def load_corpus(settings: Settings, runs: RunFolder) -> PythonSource:
    """The corpus as windows, with the tokenizer of the run folder (trained once)."""
    root = None if settings.source_root is None else Path(settings.source_root)
    _, texts, digest = read_corpus(settings.max_bytes, root)
    run = runs.model(
        "tokenizer",
        {
            "model": "byte_pair_tokenizer",
            "python_version": _python_version(),
            "corpus_digest": digest,
            "corpus_max_bytes": settings.max_bytes,
            "vocab_size": settings.vocab_size,
        },
    )
    if run.finished:
        tokenizer = BytePairTokenizer.from_json(run.record["tokenizer"])
    else:
        tokenizer = BytePairTokenizer.train(texts["train"], settings.vocab_size)
        run.finish(None, {"tokenizer": tokenizer.to_json(), "digest": tokenizer.digest()})
    del texts
    return load_python_source(
        settings.max_bytes,
        sequence_length=settings.sequence_length,
        tokenizer=tokenizer,
        root=root,
    )


class LanguageModelExperiment:
    """Trains (or reuses) the teacher and the students inside a `RunFolder`.

    Args:
        settings: The experiment's settings.
        runs: The open run folder.
    """

    def __init__(self, settings: Settings, runs: RunFolder):
        self.settings = settings
        self.runs = runs
        self.source = load_corpus(settings, runs)
        self.records: dict[str, dict] = {}
        self.curves: dict[str, list[float]] = {}
        self._teacher = None
        self._cache: TeacherCache | None = None

    def _common(self) -> dict:
        return {**self.source.settings(), "batch_size": self.settings.batch_size}

    def _size(self, role: str) -> dict:
        s = self.settings
        return {
            "layers": getattr(s, f"{role}_layers"),
            "width": getattr(s, f"{role}_width"),
            "heads": getattr(s, f"{role}_heads"),
            "dropout": s.dropout,
        }

    def _schedule(self, role: str) -> dict:
        s = self.settings
        return {
            "epochs": getattr(s, f"{role}_epochs"),
            "learning_rate": getattr(s, f"{role}_learning_rate"),
            "schedule": SCHEDULE,
        }

    def teacher_settings(self) -> dict:
        """Every setting that shapes the teacher."""
        return {
            "model": "teacher",
            **self._size("teacher"),
            **self._schedule("teacher"),
            "seed": self.settings.seed,
            **self._common(),
        }

    def student_settings(self, seed: int, kind: str) -> dict:
        """Every setting that shapes a student of `kind` (`STUDENT_KINDS`);
        a distilled or cached one's teacher's too."""
        settings = {
            "model": kind,
            **self._size("student"),
            **self._schedule("student"),
            "seed": seed,
            **self._common(),
        }
        if kind != "scratch":
            s = self.settings
            settings.update(
                temperature=s.temperature,
                soft_weight=s.soft_weight,
                chunk_size=s.chunk_size,
            )
            if kind == "cached":
                settings.update(self._fill_settings())
            settings.update(
                {f"teacher_{k}": v for k, v in self.teacher_settings().items()}
            )
        return settings

    def _fill_settings(self) -> dict:
        """`top_k`, and the mass fill's temperature (the mean fill, the first
        measurements', records no key, so their run folders still match)."""
        s = self.settings
        if s.top_k_fill == "mean":
            return {"top_k": s.top_k}
        return {"top_k": s.top_k, "top_k_fill": "mass", "tail_temperature": s.temperature}

    def _cached_name(self, seed: int | None = None) -> str:
        """`teacher-cache-top<k>[-mass]` (no seed) or `cached[-mass]-s<seed>`."""
        fill = "-mass" if self.settings.top_k_fill == "mass" else ""
        if seed is None:
            return f"teacher-cache-top{self.settings.top_k}{fill}"
        return f"cached{fill}-s{seed}"

    def cache_settings(self) -> dict:
        """Every setting that shapes the top-k cache: its teacher's, `k` and the fill."""
        return {
            "model": "teacher-cache",
            **self._fill_settings(),
            **{f"teacher_{k}": v for k, v in self.teacher_settings().items()},
        }

    def _build(self, role: str, name: str) -> keras.Model:
        size = self._size(role)
        return causal_transformer(
            self.source.tokenizer.vocab_size,
            self.settings.sequence_length,
            layers=size["layers"],
            width=size["width"],
            heads=size["heads"],
            dropout=size["dropout"],
            name=name,
        )

    def _optimizer(self, role: str) -> keras.optimizers.Optimizer:
        schedule = self._schedule(role)
        windows = len(self.source.splits["train"][0])
        steps = schedule["epochs"] * math.ceil(windows / self.settings.batch_size)
        warmup = min(WARMUP_STEPS, steps // 10)
        rate = keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=max(steps - warmup, 1),
            alpha=FINAL_LEARNING_RATE,
            warmup_target=schedule["learning_rate"],
            warmup_steps=warmup,
        )
        return keras.optimizers.Adam(rate, clipnorm=1.0)

    def _dataset(self, seed: int, cache: TeacherCache | None = None) -> tf.data.Dataset:
        x, y = self.source.splits["train"]
        if cache is not None:
            return cache.dataset(x, y, batch_size=self.settings.batch_size, seed=seed)
        return (
            tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
            .batch(self.settings.batch_size)
        )

    def _scores(self, model: keras.Model, split: str):
        x, y = self.source.splits[split]
        return token_scores(
            model,
            x,
            y,
            batch_size=EVALUATION_BATCH,
            token_bytes=self.source.tokenizer.token_bytes(),
        )

    def _train(
        self, name: str, settings: dict, role: str, seed: int, teacher=None, cache=None
    ):
        """Loads model `name` if finished, else trains it (resuming its backup)."""
        run = self.runs.model(name, settings)
        if run.finished:
            print(f"[{name}] finished earlier: reusing {run.model_path}", flush=True)
            model = run.load() if role == "teacher" else None
        else:
            model = self._fit(run, role, seed, teacher, cache)
        self.records[name] = run.record
        self.curves[name] = [
            e["validation_perplexity"] for e in run.record.get("curve", [])
        ]
        return model

    def _fit(self, run: ModelRun, role: str, seed: int, teacher, cache) -> keras.Model:
        epochs = self._schedule(role)["epochs"]
        print(f"[{run.name}] training for {epochs} epochs", flush=True)
        keras.utils.set_random_seed(seed)
        model = self._build(role, run.name.split("-")[0])
        if teacher is None and cache is None:
            trainer = model
            trainer.compile(
                optimizer=self._optimizer(role),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        else:
            s = self.settings
            trainer = Distiller(
                student=model,
                teacher=teacher,  # None with a cache: its replay carries the logits
                distillation_loss=TemperedKL(s.temperature, chunk_size=s.chunk_size),
                soft_weight=s.soft_weight,
            )
            trainer.compile(optimizer=self._optimizer(role))

        def evaluate() -> dict[str, float]:
            return {"validation_perplexity": self._scores(model, "validation").perplexity}

        result = fit_epochs(
            trainer,
            self._dataset(seed, cache),
            epochs=epochs,
            backup_dir=run.backup_dir,
            curve_path=run.folder / CURVE_FILE,
            curve_info={"model": run.name},
            evaluate=evaluate,
            label=run.name if self.settings.verbose else "",
            verbose=self.settings.verbose,
        )
        seconds = sum(entry["seconds"] for entry in result.curve)
        tokens = self.source.tokens("train") * epochs
        validation, test = self._scores(model, "validation"), self._scores(model, "test")
        run.finish(
            model,
            {
                "epochs": epochs,
                "parameters": int(model.count_params()),
                "resumed_from_epoch": result.resumed_from,
                "train_seconds": round(seconds, 1),
                "train_tokens": tokens,
                "train_tokens_per_second": round(tokens / seconds, 1),
                "validation_perplexity": validation.perplexity,
                "test_perplexity": test.perplexity,
                "test_bits_per_byte": test.bits_per_byte,
                "test_tokens": test.tokens,
                "curve": [
                    {"epoch": e["epoch"], "validation_perplexity": e["validation_perplexity"]}
                    for e in result.curve
                ],
            },
        )
        EpochBackup(run.backup_dir).clear()
        return model

    def teacher(self) -> keras.Model:
        """The teacher (trained once, then reused)."""
        if self._teacher is None:
            self._teacher = self._train(
                "teacher", self.teacher_settings(), "teacher", self.settings.seed
            )
        return self._teacher

    def cache(self) -> TeacherCache:
        """The teacher's top-k cache of the training split (built once)."""
        if self._cache is None:
            s = self.settings
            run = self.runs.model(self._cached_name(), self.cache_settings())
            folder = run.folder / "cache"
            teacher = None if run.finished else self.teacher()

            def build(run: ModelRun) -> dict:
                x = self.source.splits["train"][0]
                print(f"[{run.name}] running the teacher over {len(x)} windows",
                      flush=True)  # fmt: skip
                start = time.perf_counter()
                fill = self._fill_settings()
                build_teacher_cache(
                    teacher, x, folder, top_k=s.top_k, verbose=s.verbose == 1,
                    tail_temperature=fill.get("tail_temperature"),
                )  # fmt: skip
                seconds = time.perf_counter() - start
                tokens = self.source.tokens("train")
                return {
                    "build_seconds": round(seconds, 1),
                    "build_tokens_per_second": round(tokens / seconds, 1),
                    "cache_mb": round(
                        sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
                        / 2**20,
                        1,
                    ),
                }

            self.records[run.name] = run.get_or_measure(build)
            self._cache = TeacherCache.open(folder)
        return self._cache

    def students(self, kind: str) -> None:
        """Trains (or reuses) the student of `kind` (`STUDENT_KINDS`) of every seed."""
        teacher = self.teacher() if kind == "distilled" else None
        cache = self.cache() if kind == "cached" else None
        for seed in self.settings.student_seeds:
            self._train(
                self._cached_name(seed) if kind == "cached" else f"{kind}-s{seed}",
                self.student_settings(seed, kind),
                "student",
                seed,
                teacher=teacher,
                cache=cache,
            )

    def rows(self) -> list[dict]:
        """One row per model kind (students: mean and each seed)."""
        s = self.settings
        fill = {"mass": "dropped mass kept", "mean": "dropped logits' mean"}[s.top_k_fill]
        kinds = [
            ("teacher", "teacher", ["teacher"]),
            ("student from scratch", "student", [f"scratch-s{i}" for i in s.student_seeds]),
            (
                f"student distilled (T={s.temperature:g}, soft weight {s.soft_weight:g})",
                "student",
                [f"distilled-s{i}" for i in s.student_seeds],
            ),
            (
                f"student distilled from the top-{s.top_k} cache ({fill}, same T and "
                "weight)",
                "student",
                [self._cached_name(i) for i in s.student_seeds],
            ),
        ]
        rows = []
        for label, role, names in kinds:
            records = [self.records[n] for n in names if n in self.records]
            if not records:
                continue
            size = self._size(role)

            def figure(key, digits, records=records):
                return seed_summary([r[key] for r in records]).format(digits)

            rows.append(
                {
                    "model": label,
                    "size": f"{size['layers']} x {size['width']}",
                    "parameters": f"{records[0]['parameters']:,}",
                    "epochs": records[0]["epochs"],
                    "validation perplexity": figure("validation_perplexity", 2),
                    "test perplexity": figure("test_perplexity", 2),
                    "test bits/byte": figure("test_bits_per_byte", 3),
                    "train tokens/s": figure("train_tokens_per_second", 0),
                }
            )
        return rows

    def notes(self) -> str:
        """What the figures mean, and the corpus they were measured on."""
        source, s = self.source, self.settings
        counts = ", ".join(
            f"{split} {len(source.files[split])} files / {source.tokens(split):,} tokens"
            for split in ("train", "validation", "test")
        )
        return (
            f"Corpus: the Python {source.python_version} standard library's source "
            f"(cap {s.max_bytes or 'none'} bytes, files digest "
            f"{source.files_digest}): {counts}. Tokens: byte-pair encoding, "
            f"{source.tokenizer.vocab_size} ids, trained on the training split "
            f"(digest {source.tokenizer.digest()}); sequences of "
            f"{s.sequence_length} tokens, batch {s.batch_size}.\n\n"
            "Perplexity is exp(mean next-token NLL) per token of this tokenizer "
            "over the split's valid tokens; bits/byte is the same NLL per byte "
            "of source text. Students: mean (each seed). Train tokens/s counts "
            "valid training tokens over training time (first-epoch tracing "
            "included); a distilled student's includes the teacher's forward "
            "pass on every batch.\n" + self._cache_note()
        )

    def _cache_note(self) -> str:
        record = self.records.get(self._cached_name())
        if record is None:
            return ""
        return (
            f"\nThe cached students' top-{self.settings.top_k} cache was built once "
            f"in {record['build_seconds']} s (by the invocation that finished it; "
            f"{record['build_tokens_per_second']:,.0f} "
            f"training tokens/s through the teacher; {record['cache_mb']} MB), not "
            "counted in their train tokens/s.\n"
        )


def run_experiment(settings: Settings) -> list[dict]:
    """Runs the chosen parts; see `keras_kd.experiments.language_model.run`."""
    with RunFolder(Path(settings.out)) as runs:
        experiment = LanguageModelExperiment(settings, runs)
        if "teacher" in settings.parts:
            experiment.teacher()
        for kind in STUDENT_KINDS:
            if kind in settings.parts:
                experiment.students(kind)
        rows = experiment.rows()
        curves = {name: values for name, values in experiment.curves.items() if values}
        runs.write_results(
            rows,
            title=TITLE,
            columns=COLUMNS,
            notes=experiment.notes(),
            curves=curves,
            curve_label="validation perplexity",
            extra={"settings": experiment.teacher_settings(), "models": experiment.records},
        )
        return rows


__all__ = ["LanguageModelExperiment", "load_corpus", "run_experiment"]

"""Token-level distillation of a causal Transformer LM: `keras-kd language-model`.

A larger causal Transformer language model (the teacher,
`keras_kd.models.causal_transformer`) is trained on the Python standard
library's own source, then a smaller one (the student) is
trained twice per seed: from scratch on the next tokens, and distilled from
the teacher token by token with `keras_kd.Distiller` on `(batch, time,
vocab)` logits (padding masked by `Embedding(mask_zero=True)`; the losses are
means over the valid tokens). The `cached` part distils once more per seed,
without the teacher in the loop: the teacher runs once over the training
split into a top-k cache (`keras_kd.cache.build_teacher_cache(top_k=...)`,
the `--top-k` largest logits of every token plus one value for the others:
their mean logit, or with `--top-k-fill mass` the value that keeps their
probability at the temperature), and
the student trains on its replay. Every model is scored by its held-out
perplexity (the test split's files, never seen in training or in any choice)
and its training throughput.

Corpus: `keras_kd.datasets.python_source` (why this corpus, its fixed
train / validation / test split of files, the `--max-bytes` cap, the byte-pair
tokenizer trained on the training split). It needs no data folder: the
corpus is the running Python's library, and the Python version and a digest
of the files used are part of every model's settings, so a run folder built
from another Python's library is refused (`keras_kd.runs.RunSettingsError`).

Figures, per model (students: mean and each seed):

- **perplexity**: `exp(mean next-token negative log-likelihood)` over the
  valid target tokens of the validation or test split
  (`keras_kd.evaluation.token_scores`), per token of the run's
  byte-pair tokenizer (its `--vocab-size`); comparable only between models
  of the same run (the same tokenizer).
- **bits per byte**: the same likelihood per byte of source text
  (`nll / ln 2 / bytes`), which does not depend on the tokenizer.
- **train tokens/s**: valid training tokens seen / seconds of training (the
  first epoch's tracing included, validation after each epoch excluded); a
  distilled student's includes the teacher's forward pass on every batch; a
  cached student's does not include the cache's build, which is reported
  beside it (seconds and tokens per second of the teacher's one pass).

Every model is a run of a `keras_kd.runs.RunFolder` under `--out`
(`models/<name>/`, resumable after every epoch; `curve.json` holds the
validation perplexity after each epoch). The tokenizer is kept in the run
`models/tokenizer/record.json`. Results: `results.md`, `results.json`,
`curves.png` (validation perplexity per epoch).

Example:

    keras-kd language-model --quick --out runs/lm-quick
    keras-kd language-model --out runs/lm   # the benchmark's run, about an hour
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from keras_kd import commands

PARTS = ("teacher", "scratch", "distilled", "cached")
TOP_K_FILLS = ("mean", "mass")


@dataclasses.dataclass(frozen=True)
class Settings(commands.StudentSeeds):
    """Options of the language-model experiment (defaults: the benchmark's run).

    Args:
        out: The run folder.
        parts: Subset of `PARTS` (`distilled` and `cached` train the teacher
            too).
        max_bytes: Cap on the library source used, in bytes (`None`: all of
            it, about 30 MB).
        vocab_size: Ids of the byte-pair tokenizer (> 258).
        sequence_length: Tokens per training window.
        batch_size: Windows per batch, every model.
        teacher_layers, teacher_width, teacher_heads: The teacher's size.
        teacher_epochs: The teacher's epochs.
        teacher_learning_rate: The teacher's peak learning rate (Adam, linear
            warm-up, cosine decay to 10%, gradients clipped to norm 1).
        student_layers, student_width, student_heads: The students' size.
        student_epochs: Epochs of every student.
        student_learning_rate: The students' peak learning rate.
        dropout: Dropout in every model's blocks.
        temperature: The distilled students' temperature.
        soft_weight: Weight of the soft term; the hard (next-token) term gets
            `1 - soft_weight`.
        chunk_size: Tokens per chunk of the soft loss
            (`keras_kd.losses.TemperedKL(chunk_size=...)`); `None`: unchunked.
        top_k: Logits kept per token by the `cached` part's teacher cache
            (at most `vocab_size`).
        top_k_fill: How that cache fills the dropped classes: `"mean"`
            (default: their mean logit) or `"mass"` (their total probability
            at `temperature` kept exact,
            `build_teacher_cache(tail_temperature=temperature)`: a closer
            replay, but at T = 2 its students were 1.25 test-perplexity points
            worse, `benchmarks/RESULTS.md`). The mass fill's runs are named
            `teacher-cache-top<k>-mass` and `cached-mass-s<seed>`, so both
            fills can share a run folder.
        seed: Seed of the teacher.
        seeds: Seeds of the students (`None`: `(seed,)`).
        source_root: Another standard-library folder (`None`: the running
            Python's).
        verbose: Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch.
        threads: TensorFlow's intra- and inter-op thread counts (`None`:
            TensorFlow's choice).

    Raises:
        ValueError: for an option out of range, naming it.
    """

    out: str = "runs/language_model"
    parts: tuple[str, ...] = PARTS
    max_bytes: int | None = 4_000_000
    vocab_size: int = 2048
    sequence_length: int = 128
    batch_size: int = 32
    teacher_layers: int = 4
    teacher_width: int = 256
    teacher_heads: int = 4
    teacher_epochs: int = 4
    teacher_learning_rate: float = 1e-3
    student_layers: int = 2
    student_width: int = 128
    student_heads: int = 4
    student_epochs: int = 3
    student_learning_rate: float = 1e-3
    dropout: float = 0.0
    temperature: float = 2.0
    soft_weight: float = 0.5
    chunk_size: int | None = None
    top_k: int = 64
    top_k_fill: str = "mean"
    seed: int = 0
    seeds: tuple[int, ...] | None = (0, 1)
    source_root: str | None = None
    verbose: int = 2
    threads: int | None = None

    def __post_init__(self):
        commands.freeze_lists(self)
        _check(self)


# `--quick`: a 200 kB slice of the library, tiny models, one epoch each.
QUICK = {
    "out": "runs/language_model-quick",
    "max_bytes": 200_000,
    "vocab_size": 512,
    "sequence_length": 64,
    "teacher_layers": 2,
    "teacher_width": 64,
    "teacher_heads": 2,
    "teacher_epochs": 1,
    "student_layers": 1,
    "student_width": 32,
    "student_heads": 2,
    "student_epochs": 1,
    "verbose": 0,
}


def _check(settings: Settings) -> None:
    """Raises a ValueError naming the first option out of range."""
    commands.check_parts(settings.parts, PARTS)
    positive = {
        "vocab_size": settings.vocab_size,
        "sequence_length": settings.sequence_length,
        "batch_size": settings.batch_size,
        "teacher_layers": settings.teacher_layers,
        "teacher_width": settings.teacher_width,
        "teacher_heads": settings.teacher_heads,
        "teacher_epochs": settings.teacher_epochs,
        "teacher_learning_rate": settings.teacher_learning_rate,
        "student_layers": settings.student_layers,
        "student_width": settings.student_width,
        "student_heads": settings.student_heads,
        "student_epochs": settings.student_epochs,
        "student_learning_rate": settings.student_learning_rate,
        "temperature": settings.temperature,
        "max_bytes": 1 if settings.max_bytes is None else settings.max_bytes,
        "chunk_size": settings.chunk_size or 1,
        "top_k": settings.top_k,
        "threads": settings.threads or 1,
    }
    commands.check_positive(positive)
    if settings.top_k_fill not in TOP_K_FILLS:
        raise ValueError(
            f"--top-k-fill must be one of {', '.join(TOP_K_FILLS)}, got "
            f"{settings.top_k_fill!r}."
        )
    if settings.top_k > settings.vocab_size:
        raise ValueError(
            f"--top-k {settings.top_k} exceeds --vocab-size {settings.vocab_size}: "
            "the cache keeps at most every logit of a token."
        )
    if settings.vocab_size <= 258:
        raise ValueError(
            f"--vocab-size must be > 258 (padding, start-of-file and 256 bytes come "
            f"first), got {settings.vocab_size}; try 2048."
        )
    for role in ("teacher", "student"):
        width, heads = getattr(settings, f"{role}_width"), getattr(settings, f"{role}_heads")
        if width % heads:
            raise ValueError(
                f"--{role}-width {width} is not a multiple of --{role}-heads {heads}."
            )
    if not 0.0 <= settings.soft_weight <= 1.0:
        raise ValueError(
            f"--soft-weight must be in [0, 1], got {settings.soft_weight!r}: the soft "
            "term gets the weight, the hard term 1 - weight."
        )
    if not 0.0 <= settings.dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {settings.dropout!r}.")
    if settings.seed < 0 or any(s < 0 for s in settings.student_seeds):
        raise ValueError("--seed and --seeds must be integers >= 0.")


def build_parser() -> commands.CommandParser:
    """The options of `keras-kd language-model` (see `Settings` for their meaning).

    Options left out keep `Settings`' defaults, or `QUICK`'s with `--quick`.

    Example:

    >>> build_parser().parse_args(["--student-width", "64"]).student_width
    64
    """
    parser = commands.CommandParser(
        prog="keras-kd language-model",
        description=__doc__.split("\n\n")[0],
        epilog="Run `keras-kd language-model --quick` first: about a minute.",
    )
    positive_int, positive_float = commands.positive(int), commands.positive(float)

    def add(flag, help_text, **kwargs):
        parser.add_argument(flag, default=None, help=help_text, **kwargs)

    parser.add_argument(
        "--quick", action="store_true", help="a run of about a minute on a small slice"
    )
    add("--out", "the run folder (default runs/language_model)")
    add("--parts", f"parts to run, from {','.join(PARTS)}", type=commands.names(PARTS))
    add(
        "--max-bytes",
        "cap on the library source used, in bytes (0: all of it, about 30 MB)",
        type=commands.count,
    )
    add("--vocab-size", "ids of the byte-pair tokenizer (> 258)", type=positive_int)
    add("--sequence-length", "tokens per training window", type=positive_int)
    add("--batch-size", "windows per batch", type=positive_int)
    for role in ("teacher", "student"):
        add(f"--{role}-layers", f"the {role}'s Transformer blocks", type=positive_int)
        add(f"--{role}-width", f"the {role}'s width", type=positive_int)
        add(f"--{role}-heads", f"the {role}'s attention heads", type=positive_int)
        add(f"--{role}-epochs", f"the {role}'s epochs", type=positive_int)
        add(
            f"--{role}-learning-rate",
            f"the {role}'s peak learning rate (warm-up, cosine decay to 10%%)",
            type=positive_float,
        )
    add("--dropout", "dropout in every model's blocks", type=commands.fraction)
    add("--temperature", "the distilled students' temperature", type=positive_float)
    add(
        "--soft-weight",
        "weight of the soft term; the hard term gets 1 - soft weight",
        type=commands.fraction,
    )
    add(
        "--chunk-size",
        "tokens per chunk of the soft loss (0: unchunked)",
        type=commands.count,
    )
    add(
        "--top-k",
        "logits per token kept by the cached part's teacher cache",
        type=positive_int,
    )
    add(
        "--top-k-fill",
        "how that cache fills the dropped logits: mean (their mean logit) or mass "
        "(their probability at --temperature kept)",
        choices=TOP_K_FILLS,
    )
    add("--seed", "seed of the teacher", type=commands.count)
    add("--seeds", "seeds of the students, e.g. 0,1", type=commands.count_list)
    add("--source-root", "another standard-library folder (default: this Python's)")
    add(
        "--verbose",
        "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch",
        type=int,
        choices=(0, 1, 2),
    )
    add("--threads", "TensorFlow threads (intra- and inter-op)", type=positive_int)
    return parser


def settings_from_args(args) -> Settings:
    """`Settings` from parsed options: `QUICK` under `--quick`, given options win.

    Raises:
        ValueError: for options out of range.

    Example:

    >>> settings_from_args(build_parser().parse_args(["--quick"])).max_bytes
    200000
    """
    given = commands.given_settings(args, Settings)
    for name in ("max_bytes", "chunk_size"):
        if given.get(name) == 0:
            given[name] = None
    return Settings(**{**(QUICK if args.quick else {}), **given})


def run(settings: Settings) -> list[dict]:
    """Runs the chosen parts; writes `results.md`, `results.json`, `curves.png`.

    Args:
        settings: What to run.

    Returns:
        The table's rows (one per model kind; students' figures over seeds).

    Raises:
        ValueError: for a corpus cap that leaves a split empty, options out of
            range, or a run folder holding models trained with other settings
            (`keras_kd.runs.RunSettingsError`).

    Example:

    ```python
    rows = run(Settings(**QUICK))  # about a minute; writes runs/language_model-quick
    ```
    """
    commands.limit_threads("language-model", settings.threads)
    from keras_kd.experiments._lm_runner import run_experiment

    return run_experiment(settings)


def main(argv: Sequence[str] | None = None) -> int:
    """`keras-kd language-model ...`: runs the experiment; returns the exit status.

    A user error (bad option, a corpus cap too small for a split, a run folder
    made with other settings) is one line on stderr and exit status 2.

    Example:

    ```python
    main(["--quick", "--out", "runs/lm-quick"])  # 0, after about a minute
    ```
    """
    return commands.experiment_main(
        "language_model", build_parser(), argv, lambda args: run(settings_from_args(args))
    )


if __name__ == "__main__":
    raise SystemExit(main())

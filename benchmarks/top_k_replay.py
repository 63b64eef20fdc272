"""How close a top-k teacher cache's replay comes to the online soft loss, on a real LM.

`keras_kd.build_teacher_cache(..., top_k=k)` keeps each token's k largest teacher
logits and one value for the other classes (their mean logit, or with
`tail_temperature=T` the value that keeps their probability at T); replay then
rebuilds a full row. This measures what that costs on the language model of `keras-kd
language-model` (a causal Transformer trained on the Python standard library's
source, vocabulary 2,048): for each k, the cache is built over held-out windows
and the per-token soft loss `T^2 KL(p || q)` of a student (at each `--temperature`) is computed from the
replayed rows (stored in float16, the cache's default) and from the teacher's own
logits, over the same valid tokens
(the student's Keras mask: token id != 0), for both ways of filling the
dropped classes (`tail_temperature=None`, their mean; `tail_temperature=T`,
their mass at T kept). Reported per k, T and fill: both mean soft losses, the
relative error of the replay, the relative error of the soft loss's gradient
with respect to the student's logits (`T (q - p~)` against `T (q - p)`, L2 over
the vocabulary, summed over tokens), the mean dropped probability mass at
T, the mean per-token bound `T^2 |H(p~) - H(p)| + T m (max s - min s)` that
`tests/test_sequence_cache.py` asserts, and the bytes stored per token.

It reads the models of a finished language-model run folder (`--lm-run`, the
`--out` of `benchmarks/language_model.py` or `keras-kd language-model`): the
teacher, a student (`--student`, default the first scratch student: a student
that has not learnt from the teacher is the harder case) and the tokenizer.

    python benchmarks/top_k_replay.py --lm-run benchmarks/runs/language_model \\
        --k 8 16 32 64 128 256 --windows 256 --out benchmarks/runs/top_k_replay
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd.commands import run_reporting_errors  # noqa: E402
from keras_kd.datasets.python_source import (  # noqa: E402
    BytePairTokenizer,
    load_python_source,
)
from keras_kd.losses import tempered_kl  # noqa: E402
from keras_kd.runs import RunFolder  # noqa: E402


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.maximum(p, 1e-300))).sum(-1)


def _load(lm_run: Path, student: str):
    models = lm_run / "models"
    for name in ("teacher", student):
        if not (models / name / "model.keras").is_file():
            raise FileNotFoundError(
                f"{models / name / 'model.keras'} does not exist: --lm-run must be a "
                "finished language-model run folder (benchmarks/language_model.py --out)"
            )
    record = json.loads((models / "tokenizer" / "record.json").read_text())
    settings = json.loads((models / "teacher" / "settings.json").read_text())
    tokenizer = BytePairTokenizer.from_json(record["tokenizer"])
    corpus = load_python_source(
        settings["corpus_max_bytes"],
        sequence_length=settings["sequence_length"],
        tokenizer=tokenizer,
    )
    if corpus.files_digest != settings["corpus_digest"]:
        raise ValueError(
            f"This Python's library (digest {corpus.files_digest}) is not the corpus "
            f"the run was trained on ({settings['corpus_digest']}, Python "
            f"{settings['python_version']}): run it with that Python."
        )
    teacher = keras.models.load_model(models / "teacher" / "model.keras")
    student_model = keras.models.load_model(models / student / "model.keras")
    return corpus, teacher, student_model


COLUMNS = (
    "T", "k", "fill", "online soft loss", "replayed soft loss", "relative error",
    "gradient relative error", "dropped mass at T", "bound (mean per token)",
    "bound holds per token", "bytes per token", "build s",
)  # fmt: skip


def _compare(t, s, replayed_logits, valid, k: int, temperature: float) -> dict:
    """The replay's soft loss and gradient against the online ones at one temperature."""
    online = keras.ops.convert_to_numpy(tempered_kl(t, s, temperature))[valid]
    replayed = keras.ops.convert_to_numpy(
        tempered_kl(replayed_logits, s, temperature)
    )[valid]
    p = _softmax(t.astype("float64") / temperature)
    p_tilde = _softmax(replayed_logits.astype("float64") / temperature)
    q = _softmax(s.astype("float64") / temperature)
    kept = np.argsort(-t, axis=-1)[..., :k]
    tail = 1.0 - np.take_along_axis(p, kept, -1).sum(-1)
    bound = temperature**2 * np.abs(_entropy(p_tilde) - _entropy(p)) + (
        temperature * tail * (s.max(-1) - s.min(-1))
    )
    # The soft loss's gradient with respect to the student's logits is T (q - p).
    gradient_error = np.linalg.norm(p_tilde - p, axis=-1)[valid].sum() / (
        np.linalg.norm(q - p, axis=-1)[valid].sum()
    )
    return {
        "T": temperature,
        "online soft loss": float(online.mean()),
        "replayed soft loss": float(replayed.mean()),
        "relative error": float(abs(replayed.mean() - online.mean()) / online.mean()),
        "gradient relative error": float(gradient_error),
        "dropped mass at T": float(tail[valid].mean()),
        "bound (mean per token)": float(bound[valid].mean()),
        # float16 storage adds rounding the bound does not cover: 1e-3 of slack.
        "bound holds per token": bool(np.all(np.abs(replayed - online) <= bound[valid] + 1e-3)),
    }  # fmt: skip


def _measure(args, inputs, teacher, student) -> list[dict]:
    t = keras.ops.convert_to_numpy(teacher.predict(inputs, batch_size=32, verbose=0))
    s = keras.ops.convert_to_numpy(student.predict(inputs, batch_size=32, verbose=0))
    valid = inputs != 0
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for k in sorted(args.k):
            for temperature in sorted(args.temperature):
                for fill, tail_temperature in (("mean", None), ("mass at T", temperature)):
                    start = time.perf_counter()
                    cache = keras_kd.build_teacher_cache(
                        teacher, inputs, Path(folder) / f"top{k}-{fill}-{temperature}",
                        top_k=k, tail_temperature=tail_temperature, batch_size=32,
                        verbose=False,
                    )  # fmt: skip
                    seconds = time.perf_counter() - start
                    row = {"k": k, "fill": fill,
                           **_compare(t, s, cache.logits(), valid, k, temperature),
                           "bytes per token": cache.bytes_per_example() / inputs.shape[1],
                           "build s": seconds}  # fmt: skip
                    rows.append(row)
                    print(
                        f"T={temperature:g} k={k:4d} fill {fill:9}: soft loss online "
                        f"{row['online soft loss']:.4f}, replayed "
                        f"{row['replayed soft loss']:.4f} (relative error "
                        f"{100 * row['relative error']:.1f}%), gradient relative error "
                        f"{row['gradient relative error']:.3f}, dropped mass "
                        f"{row['dropped mass at T']:.3f}, bound holds: "
                        f"{row['bound holds per token']}",
                        flush=True,
                    )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lm-run", type=Path, required=True,
                        help="a finished language-model run folder")  # fmt: skip
    parser.add_argument("--student", default="scratch-s0",
                        help="the student run whose logits are compared (default scratch-s0)")  # fmt: skip
    parser.add_argument("--k", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--windows", type=int, default=256,
                        help="held-out windows of 128 tokens (the validation split's first)")  # fmt: skip
    parser.add_argument("--temperature", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/top_k_replay"))
    args = parser.parse_args(argv)

    def body() -> int:
        corpus, teacher, student = _load(args.lm_run, args.student)
        vocab = corpus.tokenizer.vocab_size
        if not all(1 <= k < vocab for k in args.k):
            raise ValueError(f"--k values must be in 1..{vocab - 1} (the vocabulary)")
        inputs = corpus.splits["validation"][0][: args.windows]
        settings = {
            "lm_run_teacher": json.loads((args.lm_run / "models" / "teacher" / "settings.json").read_text()),
            "student": args.student,
            "k": sorted(args.k),
            "windows": int(len(inputs)),
            "temperature": sorted(args.temperature),
        }  # fmt: skip
        with RunFolder(args.out) as runs:
            record = runs.model("measurement", settings).get_or_measure(
                lambda run: {"rows": _measure(args, inputs, teacher, student)}
            )
            notes = (
                f"{int((inputs != 0).sum()):,} valid tokens of the validation split "
                f"({len(inputs)} windows), vocabulary {vocab}, "
                f"student {args.student}; a full float16 row is {2 * vocab:,} bytes per token."
            )
            runs.write_results(record["rows"], title="Top-k teacher cache: replay against online",
                               columns=COLUMNS, notes=notes, extra=settings)  # fmt: skip
        return 0

    return run_reporting_errors("top-k replay benchmark", body)


if __name__ == "__main__":
    raise SystemExit(main())

"""Peak memory and step time of the tempered KL on sequences: chunked vs unchunked.

One training step of a token-level soft loss at a large vocabulary: hidden
states `(batch * time, width)` go through a trainable projection to student
logits `(batch * time, vocab)`, `keras_kd.losses.TemperedKL` compares them with
fixed teacher logits of the same shape, and the gradient reaches the
projection. The step is a `tf.function` (as in `fit`); the variants differ only
in `TemperedKL(chunk_size=...)`.

How memory is measured, and why: `tf.config.experimental.get_memory_info` works
for GPUs only, and `tracemalloc` does not see TensorFlow's C++ allocations, so
each variant runs in a fresh Python process and reports its peak resident set
(`VmHWM` in `/proc/self/status`, the kernel's high-water mark of resident
memory) minus its resident set just before the first step (inputs, weights and
TensorFlow already loaded). The difference is what one step (including its
first trace) needs on top of its inputs: the student logits and their gradient,
which both variants need, plus the loss's temporaries, which chunking bounds.
A fresh process per variant keeps one variant's freed-but-retained memory from
hiding the other's. Linux only.

Step time is the median wall time of `--steps` steps after one warm-up step.
The variants run one after the other on a possibly shared CPU: read the time
ratio as approximate.

Usage:

    python benchmarks/sequence_loss_memory.py            # batch 8 x 256 tokens, vocab 32,768
    python benchmarks/sequence_loss_memory.py --chunk-size 256 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from keras_kd.commands import run_reporting_errors
from keras_kd.runs import RunFolder

ROOT = Path(__file__).resolve().parent.parent


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (this benchmark needs Linux)")


def _child(args) -> dict:
    """Runs one variant in this process and returns its measurements."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from keras_kd.losses import TemperedKL

    rows = args.batch * args.time
    rng = np.random.default_rng(0)
    hidden = tf.constant(rng.normal(size=(rows, args.width)).astype("float32"))
    teacher = tf.constant(3.0 * rng.normal(size=(rows, args.vocab)).astype("float32"))
    projection = tf.Variable(
        rng.normal(scale=args.width**-0.5, size=(args.width, args.vocab)).astype("float32")
    )
    loss = TemperedKL(args.temperature, chunk_size=args.chunk_size or None)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            student = tf.reshape(
                hidden @ projection, [args.batch, args.time, args.vocab]
            )
            values = loss(tf.reshape(teacher, [args.batch, args.time, args.vocab]), student)
            mean = tf.reduce_mean(values)
        gradient = tape.gradient(mean, projection)
        return mean, tf.reduce_sum(tf.square(gradient))

    before = _status_kib("VmRSS")
    step()  # warm-up: traces the step
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        value, gradient_norm = step()
        float(value)  # waits for the step
        times.append(time.perf_counter() - start)
    peak = _status_kib("VmHWM")
    return {
        "chunk_size": args.chunk_size or None,
        "peak_delta_mib": (peak - before) / 1024,
        "step_seconds": float(np.median(times)),
        "loss": float(value),
        "gradient_norm": float(gradient_norm),
    }


def _run_variant(args, chunk_size: int) -> dict:
    command = [
        sys.executable, __file__, "--child",
        "--batch", str(args.batch), "--time", str(args.time),
        "--vocab", str(args.vocab), "--width", str(args.width),
        "--temperature", str(args.temperature), "--steps", str(args.steps),
        "--chunk-size", str(chunk_size),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"variant chunk_size={chunk_size} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--time", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--width", type=int, default=64, help="hidden size before the projection")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument(
        "--chunk-size", type=int, default=256,
        help="rows (tokens) per chunk of the chunked variant; 0 means unchunked",
    )
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "runs" / "sequence_loss_memory"),
        help="run folder: results.md / results.json; a rerun with the same settings "
        "reuses the measurement, other settings are refused",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    settings = {
        key: getattr(args, key)
        for key in ("batch", "time", "vocab", "width", "temperature", "steps", "chunk_size")
    }
    return run_reporting_errors("sequence loss benchmark", lambda: _measure(args, settings))


def _measure(args, settings: dict) -> int:
    """Measures both variants in the run folder `--out` (or reuses the measurement)."""
    with RunFolder(args.out) as runs:
        record = runs.model("measurement", settings).get_or_measure(
            lambda run: {
                "unchunked": _run_variant(args, 0),
                "chunked": _run_variant(args, args.chunk_size),
            }
        )
        table = _report(args, record["unchunked"], record["chunked"])
        runs.write_results(
            table, title="TemperedKL on sequences: chunked vs unchunked", extra=settings
        )
    return 0


def _report(args, plain: dict, chunked: dict) -> list[dict]:
    """Prints the comparison and returns it as table rows."""
    tokens = args.batch * args.time
    logits_mib = tokens * args.vocab * 4 / 2**20
    print(
        f"TemperedKL(T={args.temperature:g}) training step, batch {args.batch} x "
        f"{args.time} tokens, vocab {args.vocab:,} (one float32 logits tensor = "
        f"{logits_mib:.0f} MiB), {args.steps} timed steps, peak RSS delta per fresh "
        "process"
    )
    print(f"{'':28}{'unchunked':>12}{f'chunk {args.chunk_size}':>14}{'ratio':>9}")
    rows = [
        ("peak memory delta (MiB)", "peak_delta_mib", "{:12.0f}", "{:14.0f}"),
        ("step time (s)", "step_seconds", "{:12.3f}", "{:14.3f}"),
    ]
    table = []
    for label, key, left, right in rows:
        ratio = chunked[key] / plain[key]
        print(f"{label:28}" + left.format(plain[key]) + right.format(chunked[key]) + f"{ratio:9.2f}")
        table.append({
            "measure": label,
            "unchunked": left.format(plain[key]).strip(),
            f"chunk {args.chunk_size}": right.format(chunked[key]).strip(),
            "ratio": f"{ratio:.2f}",
        })
    difference = abs(chunked["loss"] - plain["loss"]) / abs(plain["loss"])
    print(f"loss {plain['loss']:.6f} vs {chunked['loss']:.6f} (relative difference {difference:.1e})")
    table.append({
        "measure": "loss",
        "unchunked": f"{plain['loss']:.6f}",
        f"chunk {args.chunk_size}": f"{chunked['loss']:.6f}",
        "ratio": f"{chunked['loss'] / plain['loss']:.6f}",
    })
    return table


if __name__ == "__main__":
    sys.exit(main())

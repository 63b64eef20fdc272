"""A trained teacher in float32 against bfloat16 (or float16): speed and soft targets.

`teacher_dtype="bfloat16"` (`keras_kd.teacher_precision`) runs a teacher's
forward pass in bfloat16 on its own float32 weights. This measures, for a saved
teacher and its test images, what that buys and what it changes:

- seconds per forward pass of `--batch-size` images in each precision,
  interleaved over `--rounds` rounds (a change of load hits both alike), and
  their ratio;
- the teacher's top-1 accuracy in each precision, the share of images whose
  top-1 prediction is the same, and the KL divergence KL(p_float32 || p_lower)
  between the softmaxes at `--temperature`, per image: mean and largest.

Data: `--data mnist` (the 10,000 test images, scaled to [0, 1] and shaped as
the teacher takes them: 784 values or 28 x 28 x 1) or `--data imagenette`
(the validation split through the ImageNet experiment's evaluation pipeline
at the teacher's input size). Results go to `results.md` / `results.json`
through `keras_kd.runs.RunFolder` (`--out`).

Examples:

    KERAS_KD_DATA_DIR=../shared/data python benchmarks/teacher_precision.py \\
        --teacher runs/mnist/models/teacher/model.keras --data mnist --temperature 20
    python benchmarks/teacher_precision.py --data imagenette --temperature 4 \\
        --teacher benchmarks/runs/imagenette_hints/models/teacher/model.keras \\
        --data-dir ../shared/data/imagenette
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keras_kd.runs import RunFolder  # noqa: E402
from keras_kd.teacher_precision import forward_in  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="a saved .keras teacher (logits)")
    parser.add_argument("--data", choices=("mnist", "imagenette"), required=True)
    parser.add_argument("--data-dir", default=None, help="default $KERAS_KD_DATA_DIR")
    parser.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="timed passes per round")
    parser.add_argument("--out", default="benchmarks/runs/teacher_precision")
    return parser.parse_args(argv)


def load_images(args, teacher) -> tuple[np.ndarray, np.ndarray]:
    """Test images shaped as `teacher` takes them, and their labels."""
    if args.data == "mnist":
        from keras_kd.datasets.mnist import load_mnist

        _, (x, y) = load_mnist(args.data_dir)
        x = x.astype("float32") / 255.0
        return x.reshape((len(x), *teacher.input_shape[1:])), y.astype("int64")
    from keras_kd.datasets import imagenet

    data = imagenet.load_imagenet(args.data_dir, source="folder")
    size = teacher.input_shape[1]
    batches = imagenet.eval_dataset(data, image_size=size, batch_size=args.batch_size)
    xs, ys = zip(*[(x.numpy(), np.asarray(y)) for x, y in batches], strict=True)
    y = np.concatenate(ys)
    return np.concatenate(xs), (y.argmax(-1) if y.ndim == 2 else y).astype("int64")


def log_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits.astype("float64") / temperature
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def main(argv=None) -> int:
    args = parse_args(argv)
    started, load = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()[0]
    teacher = keras.models.load_model(args.teacher, compile=False)
    x, y = load_images(args, teacher)
    passes = {
        "float32": tf.function(lambda b: teacher(b, training=False)),
        args.dtype: tf.function(
            forward_in(lambda b: teacher(b, training=False), teacher, args.dtype)
        ),
    }
    logits = {}
    for name, run in passes.items():  # every image once; also traces both
        logits[name] = np.concatenate(
            [run(x[i : i + args.batch_size]).numpy() for i in range(0, len(x), args.batch_size)]
        )
    batch = tf.constant(x[: args.batch_size])
    times = {name: [] for name in passes}
    for round_index in range(args.rounds):
        order = list(passes) if round_index % 2 == 0 else list(passes)[::-1]
        for name in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                passes[name](batch).numpy()
            times[name].append((time.perf_counter() - start) / args.steps)
        print(f"round {round_index + 1}/{args.rounds}: "
              + ", ".join(f"{n} {t[-1]:.4f} s" for n, t in times.items()), flush=True)
    exact, lower = logits["float32"], logits[args.dtype]
    p, q = log_softmax(exact, args.temperature), log_softmax(lower, args.temperature)
    kl = (np.exp(p) * (p - q)).sum(axis=-1)
    rows = [
        {"precision": name, "median_s_per_batch": statistics.median(times[name]),
         "rounds_s": " ".join(f"{t:.4f}" for t in times[name]),
         "top1_%": 100.0 * float(np.mean(logits[name].argmax(-1) == y)),
         "errors": int(np.sum(logits[name].argmax(-1) != y))}
        for name in passes
    ]
    speed_up = rows[0]["median_s_per_batch"] / rows[1]["median_s_per_batch"]
    notes = (
        f"Teacher {args.teacher} on {len(x):,} {args.data} test images, batch "
        f"{args.batch_size}, {args.rounds} interleaved rounds of {args.steps} passes. "
        f"{args.dtype} is {speed_up:.3f}x as fast as float32 (median seconds per "
        f"batch); the same top-1 prediction for "
        f"{100.0 * np.mean(exact.argmax(-1) == lower.argmax(-1)):.2f}% of images; "
        f"KL(float32 || {args.dtype}) of the softmaxes at T = {args.temperature:g}: "
        f"mean {kl.mean():.2e}, largest {kl.max():.2e} nats; largest logit "
        f"difference {np.abs(exact - lower).max():.3g} (logits up to "
        f"{np.abs(exact).max():.3g}). Started {started}, load average {load:.1f} "
        f"(at the end: {os.getloadavg()[0]:.1f})."
    )
    with RunFolder(args.out) as folder:
        folder.write_results(rows, title="Teacher precision", notes=notes,
                             extra={"speed_up": speed_up, "kl_mean": float(kl.mean())})
    for row in rows:
        print(row)
    print(notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

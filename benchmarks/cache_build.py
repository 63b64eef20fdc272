"""Teacher-cache build time: this checkout against another keras-kd (e.g. 0.1.0/HEAD).

Times `keras_kd.cache.build_teacher_cache` with an untrained teacher (its
speed does not depend on its weights): over MNIST's 60,000 training images,
the MNIST MLP of the paper (784-1200-1200-10) or a small convolutional
network; or, for the ImageNet experiment's teacher, a ResNet-50 at 112 px
over 4,096 random images of that size (the speed does not depend on the
pixels either). Each version builds with its own defaults (0.1.0: batch 256;
0.3: the batch size and, on a CPU, XLA chosen on the first batches); with
`--teacher-dtype bfloat16` this checkout's teacher computes in bfloat16
(`build_teacher_cache(..., teacher_dtype="bfloat16")`), the baseline's as it
always did.
Each build runs in its own worker process (two versions of `keras_kd` cannot
share one), which times the build alone: not the start of Python, the import
of TensorFlow or the loading of MNIST. Rounds alternate the two versions (and
which goes first), so a change of load on the machine hits both alike; the
ratio is of the medians.

Make the baseline package with, for example:

    rm -rf /tmp/kd-head && mkdir /tmp/kd-head && git archive HEAD keras_kd | tar -x -C /tmp/kd-head

Example:

    nice -n 5 python benchmarks/cache_build.py --baseline /tmp/kd-head --teacher mlp --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = ("mlp", "cnn", "resnet50")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="folder holding the baseline keras_kd package")
    parser.add_argument("--teacher", choices=TEACHERS, default="mlp")
    parser.add_argument("--examples", type=int, default=None,
                        help="default 60000 (mlp, cnn), 4096 (resnet50)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--teacher-dtype", choices=("float32", "bfloat16", "float16"),
                        default="float32",
                        help="this checkout's teacher_dtype (float32: None); the "
                             "baseline builds in float32")
    parser.add_argument("--data-dir", default=None, help="default $KERAS_KD_DATA_DIR")
    parser.add_argument("--out", default="benchmarks/runs/cache_build")
    parser.add_argument("--quick", action="store_true", help="6,000 examples (resnet50: 512), 1 round")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def teacher_model(kind: str):
    import keras

    keras.utils.set_random_seed(0)
    if kind == "resnet50":
        return keras.applications.ResNet50(
            weights=None, input_shape=(112, 112, 3), classes=10,
            classifier_activation=None,
        )
    if kind == "mlp":
        layers = [
            keras.Input((784,)),
            keras.layers.Dense(1200, activation="relu"),
            keras.layers.Dense(1200, activation="relu"),
        ]
    else:
        layers = [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
        ]
    return keras.Sequential([*layers, keras.layers.Dense(10)], name=f"teacher_{kind}")


def worker(args) -> None:
    """Builds one cache and prints `{"seconds": ...}` (run by `main` in a subprocess)."""
    import numpy as np

    import keras_kd
    from keras_kd.cache import build_teacher_cache
    from keras_kd.datasets.mnist import load_mnist

    if args.teacher == "resnet50":
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, (args.examples, 112, 112, 3)).astype("float32")
    else:
        (x, _), _ = load_mnist(args.data_dir)
        x = x[: args.examples].astype("float32") / 255.0
        x = x.reshape(len(x), 784) if args.teacher == "mlp" else x[..., None]
    teacher = teacher_model(args.teacher)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        options = {} if args.teacher_dtype == "float32" else {"teacher_dtype": args.teacher_dtype}
        build_teacher_cache(teacher, x, Path(folder) / "cache", verbose=False, **options)
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "keras_kd": str(Path(keras_kd.__file__).parent)}))


def run_worker(package_root: Path, args, teacher_dtype: str = "float32") -> float:
    command = [
        sys.executable, __file__, "--worker", "--teacher", args.teacher,
        "--examples", str(args.examples), "--teacher-dtype", teacher_dtype,
    ]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    env = {**os.environ, "PYTHONPATH": str(package_root), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker for {package_root} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["keras_kd"]).parent.resolve() != package_root.resolve():
        raise RuntimeError(f"worker imported {result['keras_kd']}, not {package_root}")
    return result["seconds"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.examples is None:
        args.examples = 4096 if args.teacher == "resnet50" else 60000
    if args.quick:
        quick_examples = 512 if args.teacher == "resnet50" else 6000
        args.examples, args.rounds = min(args.examples, quick_examples), 1
    if not args.baseline or not (Path(args.baseline) / "keras_kd").is_dir():
        print(f"--baseline must be a folder holding a keras_kd package, got {args.baseline!r}",
              file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from keras_kd.runs import RunFolder

    versions = {"baseline": Path(args.baseline), "this checkout": ROOT}
    dtypes = {"baseline": "float32", "this checkout": args.teacher_dtype}
    times = {name: [] for name in versions}
    started = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    load_before = os.getloadavg()[0]
    for round_index in range(args.rounds):
        order = list(versions) if round_index % 2 == 0 else list(versions)[::-1]
        for name in order:
            times[name].append(run_worker(versions[name], args, dtypes[name]))
            print(f"round {round_index + 1}/{args.rounds} {name}: "
                  f"{times[name][-1]:.2f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["baseline"] / medians["this checkout"]
    rows = [
        {"version": name, "teacher": args.teacher, "teacher_dtype": dtypes[name],
         "examples": args.examples,
         "median_s": medians[name], "rounds_s": " ".join(f"{t:.2f}" for t in times[name])}
        for name in versions
    ]
    compared = (
        "" if args.teacher_dtype == "float32"
        else f" (this checkout's teacher in {args.teacher_dtype}, the baseline's in float32)"
    )
    notes = (
        f"Speed-up (baseline median / this checkout's median){compared}: {ratio:.3f}x. "
        f"Baseline package: {args.baseline}. Started {started}, ended "
        f"{time.strftime('%H:%M UTC', time.gmtime())}; load average {load_before:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after."
    )
    folder = args.teacher if args.teacher_dtype == "float32" else f"{args.teacher}-{args.teacher_dtype}"
    with RunFolder(Path(args.out) / folder) as runs:
        runs.write_results(rows, title="Teacher-cache build time", notes=notes,
                           extra={"ratio": ratio})
    for row in rows:
        print(row)
    print(notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput of distillation variants, measured interleaved in one process.

On the paper's MNIST shapes (teacher 784-1200-1200-10, student 784-800-800-10 or,
with ``--student-hidden 300,300``, the paper's smaller 784-300-300-10, batch 128, synthetic inputs: throughput does not depend on the pixel values) it
times, in rounds that interleave all variants so that a busy shared CPU slows
them alike:

  plain            the student alone, sparse cross-entropy
  keras_distiller  keras.distillation.Distiller + LogitsDistillation(T, KLDivergence())
  kd_online        keras_kd.Distiller, one teacher run online
  teacher_infer    the teacher's forward pass alone (teacher.predict)
  kd_ensemble      keras_kd.Distiller, a 10-member TeacherEnsemble run online
  kd_cached        keras_kd.Distiller(teacher=None) replaying the ensemble's cache
  kd_cached_one    keras_kd.Distiller(teacher=None) replaying the single teacher's cache

Every variant uses the same optimizer (Adam 1e-3), the same initial student
weights, the same batch size, the same number of steps per timed call, the same
`jit_compile` setting, and excludes a warm-up call (tracing). Trained variants use
`Model.fit` with `steps_per_epoch`; the online variants read
`from_tensor_slices((x, y)).shuffle().batch()`, the cached ones
`TeacherCache.dataset`. It also reports the cache build time, bytes per example
(full vs top-k, 10 and 1000 classes) and the process' peak resident memory.

With ``--baseline-python`` it instead compares the online distillation step
(``kd_online``) of two keras_kd versions: the one this interpreter imports and the
one another interpreter imports (e.g. a virtualenv holding keras-kd 0.1.0). Each
version runs in its own worker process on the same saved teacher and student and
the same data, and a third worker runs this version again as a control; the
parent times one call of each worker per round, round after round, and reports
the median wall and CPU time per step and the speed ratios (the control's ratio
is the noise floor of the shared machine).

The measurement is a run of a `keras_kd.runs.RunFolder` under `--out` (default
benchmarks/runs/throughput, or benchmarks/runs/throughput_vs_baseline when
comparing), fingerprinted by every option that shapes it: a rerun with the same
options rewrites the results from the stored measurement (use another `--out` to
measure again); a rerun with other options is refused, naming each one that
differs. The folder gets `results.md` and `results.json` and, for all variants,
`rounds.png` (each variant's time per step, round by round). `--results PATH`
also copies `results.md` to PATH (how benchmarks/results/ is recorded).

Usage:

    nice -n 10 .venv/bin/python benchmarks/throughput.py \
        --results benchmarks/results/throughput.md        # 9 rounds of one epoch
    nice -n 10 .venv/bin/python benchmarks/throughput.py \
        --baseline-python /tmp/keras-kd-0.1.0/bin/python --rounds 15 \
        --results benchmarks/results/throughput_vs_baseline.md  # this vs 0.1.0
    .venv/bin/python benchmarks/throughput.py --rounds 1 --steps 2 --warmup-steps 1 \
        --examples 512 --members 2 --out /tmp/throughput-smoke  # a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# keras_kd is imported inside the functions: a --worker process may run an older
# keras_kd (the baseline of --baseline-python), which lacks some of these modules
# (keras_kd.runs, keras_kd.peers, keras_kd.models among them).

ROOT = Path(__file__).resolve().parent
INPUT_SIZE, CLASSES = 784, 10
VARIANTS_TITLE = "Throughput: plain, online, keras.distillation and cached distillation"
BASELINE_TITLE = "kd_online: this keras_kd against a baseline, interleaved"
# The options that shape a measurement (its fingerprint in the run folder).
SHARED_SETTINGS = (
    "rounds", "steps", "warmup_steps", "batch_size", "examples", "student_hidden",
    "temperature", "soft_weight", "jit_compile", "steps_per_execution",
)
VARIANTS_SETTINGS = (*SHARED_SETTINGS, "members", "mean")
BASELINE_SETTINGS = (*SHARED_SETTINGS, "baseline_python")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved repetitions")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per timed call (default: one epoch)")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--examples", type=int, default=6400, help="transfer-set size")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--student-hidden", default="800,800",
                        help="student hidden widths; the paper's section 3 also distils "
                             "into 300-300 (\"300 or more units\")")
    parser.add_argument("--mean", default="arithmetic", choices=("arithmetic", "geometric"))
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--soft-weight", type=float, default=0.9,
                        help="weight of the soft term (the hard term gets 1 - it)")
    parser.add_argument("--jit-compile", action="store_true", help="XLA for every variant")
    parser.add_argument("--steps-per-execution", type=int, default=1,
                        help="Keras steps_per_execution for every variant")
    parser.add_argument("--out", default=None,
                        help="run folder (default: benchmarks/runs/throughput, or "
                             "benchmarks/runs/throughput_vs_baseline with --baseline-python)")
    parser.add_argument("--results", default=None,
                        help="also copy results.md here, e.g. benchmarks/results/throughput.md")
    parser.add_argument("--baseline-python", default=None,
                        help="compare kd_online with the keras_kd this Python imports")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def mlp(hidden, seed, name):
    """The paper's MNIST net (logits out) with weights drawn from `seed`."""
    from keras_kd.models import mlp as build_mlp

    keras.utils.set_random_seed(seed)
    return build_mlp(INPUT_SIZE, hidden, CLASSES, name=name)


def synthetic_data(args):
    """Inputs and labels of the transfer set (throughput ignores pixel values)."""
    rng = np.random.default_rng(0)
    x = rng.random((args.examples, INPUT_SIZE), dtype=np.float32)
    return x, rng.integers(0, CLASSES, args.examples)


def online_dataset(x, y, batch_size):
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0)
    return data.batch(batch_size).repeat().prefetch(tf.data.AUTOTUNE)


def make_distiller(student, teacher, args):
    """A keras_kd.Distiller in the API of whichever keras_kd is imported."""
    from keras_kd import Distiller

    parameters = inspect.signature(Distiller).parameters
    if "soft_weight" in parameters:  # keras_kd >= 0.2
        return Distiller(student=student, teacher=teacher, temperature=args.temperature,
                         soft_weight=args.soft_weight)
    return Distiller(student, teacher, temperature=args.temperature, alpha=args.soft_weight)


def compile_kwargs(args):
    return {"optimizer": keras.optimizers.Adam(1e-3), "jit_compile": args.jit_compile,
            "steps_per_execution": args.steps_per_execution}


def column_order(tables: dict) -> dict:
    """Each table's column names in order of appearance (record.json sorts keys)."""
    return {name: list(dict.fromkeys(key for row in rows for key in row))
            for name, rows in tables.items()}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bytes_per_example_table(scratch: Path) -> list[dict]:
    """Cache size per example for full and top-k storage, 10 and 1000 classes."""
    from keras_kd.cache import build_teacher_cache

    rows = []
    x = np.random.default_rng(0).normal(size=(2048, 32)).astype("float32")
    for classes, ks in ((10, (None, 5)), (1000, (None, 10, 100))):
        keras.utils.set_random_seed(classes)
        teacher = keras.Sequential([keras.Input((32,)), keras.layers.Dense(classes)])
        for k in ks:
            directory = scratch / f"size-{classes}-{k}"
            cache = build_teacher_cache(
                teacher, x, directory, top_k=k, shard_size=2048, verbose=False
            )
            rows.append({
                "classes": classes,
                "storage": "full float16" if k is None else f"top-{k} (int16 ids, float16 values, rest mean)",
                "bytes/example": round(cache.bytes_per_example(), 1),
            })
            shutil.rmtree(directory)
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    from keras_kd.commands import run_reporting_errors

    return run_reporting_errors("throughput benchmark", lambda: measure_in_run_folder(args, argv))


def measure_in_run_folder(args, argv) -> int:
    """Measures (or reuses the measurement of the same settings) and writes results.

    Raises:
        keras_kd.runs.RunSettingsError: when `--out` holds a measurement made
            with other settings; the message names each one.
    """
    from keras_kd import files
    from keras_kd.runs import RunFolder

    comparing = bool(args.baseline_python)
    out = Path(args.out or ROOT / "runs" / ("throughput_vs_baseline" if comparing else "throughput"))
    names = BASELINE_SETTINGS if comparing else VARIANTS_SETTINGS
    settings = {"mode": "vs_baseline" if comparing else "variants",
                **{name: getattr(args, name) for name in names}}
    with RunFolder(out) as runs:
        measure = compare_with_baseline if comparing else all_variants
        record = runs.model("measurement", settings).get_or_measure(
            lambda run: measure(args, argv, run.folder))
        write = write_baseline_results if comparing else write_variants_results
        report = write(runs, record)
    print(report)
    if args.results:
        files.atomic_write_text(Path(args.results), report)
        print(f"wrote {args.results}")
    return 0


def all_variants(args, argv, folder: Path) -> dict:
    """Times every variant, interleaved; returns the measurement's record.

    Teacher caches are built in a scratch folder below `folder` (removed at the end).
    """
    with tempfile.TemporaryDirectory(prefix="scratch-", dir=folder) as scratch:
        return _time_variants(args, argv, Path(scratch))


def _time_variants(args, argv, scratch: Path) -> dict:
    from keras_kd.cache import build_teacher_cache
    from keras_kd.peers import keras_distillation_peer
    from keras_kd.teachers import TeacherEnsemble

    started = datetime.datetime.now()
    batch = args.batch_size
    steps_per_epoch = int(np.ceil(args.examples / batch))
    steps = args.steps or steps_per_epoch

    x, y = synthetic_data(args)
    teacher = mlp([1200, 1200], 100, "teacher")
    ensemble = TeacherEnsemble(
        [mlp([1200, 1200], 200 + m, f"member_{m}") for m in range(args.members)],
        mean=args.mean,
    )
    hidden = [int(w) for w in args.student_hidden.split(",")]
    initial_student = mlp(hidden, 1, "student").get_weights()
    rss_setup = peak_rss_mib()

    cache_dir = scratch / "cache-ensemble"
    t0 = time.perf_counter()
    ensemble_cache = build_teacher_cache(ensemble, x, cache_dir, verbose=False)
    build_ensemble_s = time.perf_counter() - t0
    single_dir = scratch / "cache-single"
    t0 = time.perf_counter()
    single_cache = build_teacher_cache(teacher, x, single_dir, verbose=False)
    build_single_s = time.perf_counter() - t0
    rss_build = peak_rss_mib()

    def online_data():
        return online_dataset(x, y, batch)

    def student():
        model = mlp(hidden, 1, "student")
        model.set_weights(initial_student)
        return model

    def fitter(model, data):
        return lambda n: model.fit(data, epochs=1, steps_per_epoch=n, verbose=0)

    variants = {}
    plain = student()
    plain.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **compile_kwargs(args))
    variants["plain"] = fitter(plain, online_data())

    keras_distiller = keras_distillation_peer(
        student=student(), teacher=teacher, temperature=args.temperature,
        soft_weight=args.soft_weight, **compile_kwargs(args),
    )
    variants["keras_distiller"] = fitter(keras_distiller, online_data())

    def kd(teacher_model, data):
        distiller = make_distiller(student(), teacher_model, args)
        distiller.compile(**compile_kwargs(args))
        return fitter(distiller, data)

    variants["kd_online"] = kd(teacher, online_data())
    inference_data = tf.data.Dataset.from_tensor_slices(x).batch(batch).repeat().prefetch(
        tf.data.AUTOTUNE
    )
    teacher.compile(jit_compile=args.jit_compile, steps_per_execution=args.steps_per_execution)
    variants["teacher_infer"] = lambda n: teacher.predict(inference_data, steps=n, verbose=0)
    variants["kd_ensemble"] = kd(ensemble, online_data())
    replay = ensemble_cache.dataset(x, y, batch_size=batch, temperature=args.temperature)
    variants["kd_cached"] = kd(None, replay.repeat())
    variants["kd_cached_one"] = kd(None, single_cache.dataset(x, y, batch_size=batch).repeat())

    for run in variants.values():  # warm-up: tracing and first iterators, not timed
        run(args.warmup_steps)
    names = list(variants)
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[: round_index % len(names)]
        for name in order:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            variants[name](steps)
            cpu[name].append(time.process_time() - cpu0)
            wall[name].append(time.perf_counter() - wall0)
        print(f"round {round_index + 1}/{args.rounds}: "
              + ", ".join(f"{n} {wall[n][-1]:.2f}s" for n in names), flush=True)

    # Seconds per step under three estimators: the median wall time (what a user
    # waits), the minimum wall time (least disturbed by other processes on a shared
    # CPU) and the median process CPU time (all threads; work done, not waiting).
    estimators = {
        "median wall": {n: statistics.median(v) / steps for n, v in wall.items()},
        "min wall": {n: min(v) / steps for n, v in wall.items()},
        "median CPU": {n: statistics.median(v) / steps for n, v in cpu.items()},
    }
    per_step = estimators["median wall"]
    rows = [
        {
            "variant": name,
            "examples/s (median wall)": f"{batch / per_step[name]:.0f}",
            "ms/step median wall": f"{per_step[name] * 1e3:.1f}",
            "ms/step min wall": f"{estimators['min wall'][name] * 1e3:.1f}",
            "ms/step median CPU": f"{estimators['median CPU'][name] * 1e3:.1f}",
            "speed vs plain (median wall)": f"{per_step['plain'] / per_step[name]:.3f}",
        }
        for name in names
    ]

    def criterion(text, value_of, passes):
        row = {"criterion": text}
        for label, step in estimators.items():
            value = value_of(step)
            row[label] = f"{value:.3f} ({'pass' if passes(value) else 'FAIL'})"
        return row

    checks = [
        criterion("issue 2: speed kd_online / keras_distiller >= 1.0",
                  lambda t: t["keras_distiller"] / t["kd_online"], lambda v: v >= 1.0),
        criterion("issue 2: time kd_online / (plain + teacher_infer) <= 1.10",
                  lambda t: t["kd_online"] / (t["plain"] + t["teacher_infer"]),
                  lambda v: v <= 1.10),
        criterion("issue 3: speed kd_cached / plain >= 0.9",
                  lambda t: t["plain"] / t["kd_cached"], lambda v: v >= 0.9),
        criterion("issue 3: speed kd_cached_one / plain >= 0.9",
                  lambda t: t["plain"] / t["kd_cached_one"], lambda v: v >= 0.9),
        criterion(f"issue 3: epoch time kd_ensemble ({args.members} online) / kd_cached >= 5",
                  lambda t: t["kd_ensemble"] / t["kd_cached"], lambda v: v >= 5.0),
        # What the ratio can reach: an online step does a plain step plus M teacher
        # passes, a cached step cannot be cheaper than a plain one.
        criterion(f"bound on that ratio: 1 + {args.members} x teacher_infer / plain",
                  lambda t: 1 + args.members * t["teacher_infer"] / t["plain"],
                  lambda v: v >= 5.0),
    ]
    epoch_online = per_step["kd_ensemble"] * steps_per_epoch
    epoch_cached = per_step["kd_cached"] * steps_per_epoch
    cache_rows = [
        {"cache": f"{args.members}-member {args.mean} ensemble (per-member logits)",
         "examples": args.examples, "build s": round(build_ensemble_s, 2),
         "bytes/example": round(ensemble_cache.bytes_per_example(), 1),
         "build + 1 cached epoch s": round(build_ensemble_s + epoch_cached, 2),
         "1 online epoch s": round(epoch_online, 2)},
        {"cache": "single teacher", "examples": args.examples,
         "build s": round(build_single_s, 2),
         "bytes/example": round(single_cache.bytes_per_example(), 1)},
    ]
    size_rows = bytes_per_example_table(scratch)
    memory = {"after setup MiB": round(rss_setup, 1), "after cache builds MiB": round(rss_build, 1),
              "end of run MiB": round(peak_rss_mib(), 1)}

    command = "nice -n 10 .venv/bin/python benchmarks/throughput.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    header = (
        f"Command: `{command.strip()}`  \n"
        f"Date: {started:%Y-%m-%d %H:%M}; TF {tf.__version__}, Keras {keras.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPU cores (shared), "
        f"jit_compile={args.jit_compile}, steps_per_execution={args.steps_per_execution}  \n"
        f"Setup: student 784-{args.student_hidden.replace(',', '-')}-10, batch {batch}, {steps} steps per timed call ({steps_per_epoch} = one epoch), "
        f"{args.rounds} interleaved rounds, warm-up excluded, T={args.temperature}, soft_weight={args.soft_weight}, "
        f"{args.examples} synthetic examples, ensemble of {args.members} ({args.mean} mean)."
    )
    return {"header": header, "date": started.isoformat(), "steps": steps,
            "wall_s": wall, "cpu_s": cpu, "rows": rows, "checks": checks,
            "cache": cache_rows, "sizes": size_rows, "memory": memory,
            "columns": column_order({"rows": rows, "checks": checks, "cache": cache_rows,
                                     "sizes": size_rows, "memory": [memory]})}


def write_variants_results(runs, record: dict) -> str:
    """Writes `results.md`, `results.json` and `rounds.png`; returns the Markdown."""
    from keras_kd.reports import markdown_table, plot_curves

    columns = record["columns"]
    notes = "\n".join([
        "Training throughput of each variant (above).",
        "",
        record["header"],
        "",
        "## Criteria",
        "",
        markdown_table(record["checks"], columns["checks"]),
        "## Cache",
        "",
        markdown_table(record["cache"], columns["cache"], digits=2),
        "Bytes per example on disk (npy headers included, 2,048 examples, one stream):",
        "",
        markdown_table(record["sizes"], columns["sizes"], digits=1),
        "Peak resident memory of the benchmark process (ru_maxrss, cumulative):",
        "",
        markdown_table([record["memory"]], columns["memory"], digits=0),
        "`rounds.png`: each variant's wall time per step, round by round.",
    ])
    extra = {key: record[key] for key in ("date", "steps", "wall_s", "cpu_s", "checks",
                                           "cache", "sizes", "memory")}
    paths = runs.write_results(record["rows"], title=VARIANTS_TITLE, columns=columns["rows"],
                               notes=notes, extra=extra)
    per_round = {name: [seconds / record["steps"] * 1e3 for seconds in values]
                 for name, values in record["wall_s"].items()}
    plot_curves(per_round, runs.root / "rounds.png", title=VARIANTS_TITLE,
                xlabel="interleaved round", ylabel="ms per step (wall)")
    return paths["markdown"].read_text()


def worker(args):
    """Times kd_online with the imported keras_kd, on calls from the parent.

    Reads `run` lines on stdin and answers each with one JSON line of the wall
    and CPU seconds of one `fit` call of `--steps` steps; `quit` ends it.
    """
    import keras_kd

    model_dir = Path(args.model_dir)
    teacher = keras.models.load_model(model_dir / "teacher.keras")
    student = keras.models.load_model(model_dir / "student.keras")
    x, y = synthetic_data(args)
    distiller = make_distiller(student, teacher, args)
    distiller.compile(**compile_kwargs(args))
    data = online_dataset(x, y, args.batch_size)
    distiller.fit(data, epochs=1, steps_per_epoch=args.warmup_steps, verbose=0, shuffle=False)
    print(json.dumps({"ready": getattr(keras_kd, "__version__", "?"),
                      "module": keras_kd.__file__}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        wall0, cpu0 = time.perf_counter(), time.process_time()
        distiller.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0, shuffle=False)
        print(json.dumps({"cpu": time.process_time() - cpu0,
                          "wall": time.perf_counter() - wall0}), flush=True)
    return 0


def compare_with_baseline(args, argv, folder: Path) -> dict:
    """kd_online of this keras_kd against the baseline's, interleaved by call.

    A third worker runs this keras_kd again: the ratio between the two identical
    workers shows how far the shared machine alone moves the figures. The
    workers load the models saved in `folder / "compare-models"`.

    Returns:
        The measurement's record.
    """
    from keras_kd.files import atomic_save_model

    model_dir = folder / "compare-models"
    started = datetime.datetime.now()
    steps = args.steps or int(np.ceil(args.examples / args.batch_size))
    hidden = [int(w) for w in args.student_hidden.split(",")]
    atomic_save_model(mlp([1200, 1200], 100, "teacher"), model_dir / "teacher.keras")
    atomic_save_model(mlp(hidden, 1, "student"), model_dir / "student.keras")
    forwarded = [
        "--worker", "--model-dir", str(model_dir), "--steps", str(steps),
        "--warmup-steps", str(args.warmup_steps), "--batch-size", str(args.batch_size),
        "--examples", str(args.examples), "--temperature", str(args.temperature),
        "--soft-weight", str(args.soft_weight),
        "--steps-per-execution", str(args.steps_per_execution),
    ] + (["--jit-compile"] if args.jit_compile else [])
    pythons = {"baseline": args.baseline_python, "this": sys.executable,
               "this (control)": sys.executable}
    workers = {
        name: subprocess.Popen([python, __file__, *forwarded], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
        for name, python in pythons.items()
    }
    names = list(workers)
    times = {name: {"wall": [], "cpu": []} for name in names}
    try:
        versions = {name: json.loads(w.stdout.readline()) for name, w in workers.items()}
        for round_index in range(args.rounds):
            shift = round_index % len(names)  # each worker runs first, second, third in turn
            for name in names[shift:] + names[:shift]:
                workers[name].stdin.write("run\n")
                workers[name].stdin.flush()
                result = json.loads(workers[name].stdout.readline())
                for key in ("wall", "cpu"):
                    times[name][key].append(result[key])
            print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
                f"{n} {times[n]['cpu'][-1]:.2f}s CPU" for n in names), flush=True)
    finally:
        for w in workers.values():
            w.stdin.close()
            w.wait()
    per_step = {name: {key: statistics.median(values) / steps for key, values in t.items()}
                for name, t in times.items()}
    rows = [{"keras_kd": name, "module": versions[name]["module"],
             "ms/step median CPU": f"{per_step[name]['cpu'] * 1e3:.2f}",
             "ms/step median wall": f"{per_step[name]['wall'] * 1e3:.2f}"}
            for name in names]

    def speed(reference, name):
        """reference time / name time: by medians, and the median per-round ratio."""
        return {
            f"{estimate} {key}": value
            for key in ("cpu", "wall")
            for estimate, value in (
                ("median", per_step[reference][key] / per_step[name][key]),
                # A round times all workers back to back, so its ratio cancels
                # the slow drifts of the machine's load.
                ("paired", statistics.median(
                    r / t for r, t in zip(times[reference][key], times[name][key], strict=True))),
            )
        }

    speeds = {"this vs baseline": speed("baseline", "this"),
              "control: this vs this (noise floor)": speed("this (control)", "this")}
    speed_rows = [{"comparison": label, **{k: f"{v:.3f}" for k, v in value.items()}}
                  for label, value in speeds.items()]
    command = ("nice -n 10 .venv/bin/python benchmarks/throughput.py "
               + " ".join(sys.argv[1:] if argv is None else argv))
    header = (
        f"Command: `{command.strip()}`  \n"
        f"Date: {started:%Y-%m-%d %H:%M}; TF {tf.__version__}, Keras {keras.__version__}, "
        f"{os.cpu_count()} CPU cores (shared), jit_compile={args.jit_compile}  \n"
        f"Setup: teacher 784-1200-1200-10 online, student 784-{args.student_hidden.replace(',', '-')}-10, "
        f"batch {args.batch_size}, {steps} steps per timed call, {args.rounds} rounds; each round "
        "times the three worker processes in turn (warm-up excluded)."
    )
    return {"header": header, "date": started.isoformat(), "steps": steps, "rows": rows,
            "speed_rows": speed_rows, "versions": versions, "times": times, "speeds": speeds,
            "columns": column_order({"rows": rows, "speed_rows": speed_rows})}


def write_baseline_results(runs, record: dict) -> str:
    """Writes `results.md` and `results.json` of a comparison; returns the Markdown."""
    from keras_kd.reports import markdown_table

    notes = "\n".join([
        record["header"],
        "",
        "Speed (reference time / this time; above 1 is faster than the reference):",
        "",
        markdown_table(record["speed_rows"], record["columns"]["speed_rows"]),
    ])
    extra = {key: record[key] for key in ("date", "steps", "versions", "times", "speeds")}
    paths = runs.write_results(record["rows"], title=BASELINE_TITLE,
                               columns=record["columns"]["rows"], notes=notes, extra=extra)
    return paths["markdown"].read_text()


if __name__ == "__main__":
    sys.exit(main())

"""How long deleting a tf.data iterator takes, with tf.data autotuning on and off.

Found while timing issue 19's online benchmark (`benchmarks/RESULTS.md`, eighth
sitting): its epochs sometimes stood still for up to a minute with no CPU in use,
and stack dumps taken during those pauses showed the main thread in a tf.data
iterator's destructor, waiting for the iterator's autotuning thread
(`Model::OptimizeLoop`) to end while that thread slept out its optimisation
period. The period doubles from 10 ms up to 60 s, so the wait is up to the time
left to the thread's next scheduled wake-up: an epoch that destroys an old
iterator can lose up to 60 s.

This benchmark makes many short-lived iterators over
`range(...).map(num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)`, holds each
`--hold` seconds after its first element (3 s by default, so the autotuning
thread's next wake-up is at 5.11 s), deletes it and times the deletion. The
trials alternate between the pipeline as written and the same pipeline with
`tf.data.Options().autotune.enabled = False`, so both see the same machine.
`--load N` runs N busy processes alongside (the pauses were seen while training
kept both cores busy). It reports, per setting, how many deletions took over
0.5 s, and the median and largest time.

Example:

    python benchmarks/iterator_teardown.py --trials 40 --load 2
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLOW_S = 0.5
SETTINGS = ("autotune on", "autotune off")


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def measure(args) -> dict:
    """Deletion seconds per setting, trials interleaved."""
    import tensorflow as tf

    pipeline = tf.data.Dataset.range(2**62).map(
        lambda x: x * 2, num_parallel_calls=tf.data.AUTOTUNE
    ).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.autotune.enabled = False
    datasets = dict(zip(SETTINGS, (pipeline, pipeline.with_options(options))))
    seconds = {name: [] for name in datasets}
    stop = multiprocessing.Event()
    load = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(args.load)]
    for process in load:
        process.start()
    try:
        for _ in range(args.trials):
            for name, dataset in datasets.items():
                iterator = iter(dataset)
                next(iterator)
                time.sleep(args.hold)
                start = time.perf_counter()
                del iterator
                gc.collect()
                seconds[name].append(time.perf_counter() - start)
    finally:
        stop.set()
        for process in load:
            process.join()
    return {"seconds": seconds, "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg())}


def _row(name: str, seconds: list[float]) -> dict:
    """One setting's line of the results table."""
    return {
        "iterator deletion": name,
        f"over {SLOW_S} s": f"{sum(s > SLOW_S for s in seconds)} of {len(seconds)}",
        "median s": f"{statistics.median(seconds):.2f}",
        "largest s": f"{max(seconds):.2f}",
        "mean s": f"{statistics.fmean(seconds):.2f}",
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=40, help="iterators per setting")
    parser.add_argument("--hold", type=float, default=3.0,
                        help="seconds each iterator lives after its first element")
    parser.add_argument("--load", type=int, default=2, help="busy processes alongside")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "iterator_teardown"))
    args = parser.parse_args(argv)
    if args.trials < 1 or args.hold < 0 or args.load < 0:
        parser.error("--trials must be at least 1, --hold and --load at least 0")

    from keras_kd.commands import run_reporting_errors

    return run_reporting_errors("iterator teardown benchmark", lambda: _run(args))


def _run(args) -> int:
    from keras_kd.runs import RunFolder

    settings = {"trials": args.trials, "hold_s": args.hold, "load": args.load}
    with RunFolder(args.out) as runs:
        record = runs.model("measurement", settings).get_or_measure(lambda run: measure(args))
        rows = [_row(name, record["seconds"][name]) for name in SETTINGS]
        runs.write_results(
            rows,
            title="tf.data iterator deletion with autotuning on and off",
            notes=f"Load average at the end: {record['load_average']}.",
            extra=settings,
        )
    for row in rows:
        print(" | ".join(row.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

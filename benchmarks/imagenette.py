"""Imagenette benchmark (issue 10): does distillation beat training the student alone?

Every kind of run of `keras-kd imagenet` (`keras_kd.experiments.imagenet`), with
the same data pipeline, recipe and number of epochs for every student:

- `teacher`: ResNet50 (`keras.applications`) trained from scratch;
- `scratch-s<seed>`: the MobileNetV2 student on hard labels, every seed;
- `cached-T<T>-w<w>-s<seed>`: the student distilled with `keras_kd.Distiller`
  from cached teacher logits of `--views` augmented views per image, every seed;
- `kd-T<T>-w<w>-s<seed>`: distilled online with `keras_kd.Distiller`, first seed
  only (online runs pay a teacher forward pass per step);
- `peer-T<T>-w<w>-s<seed>`: distilled online with `keras.distillation.Distiller`
  (`LogitsDistillation(temperature=T, loss=KLDivergence())`,
  `student_loss_weight = 1 - soft_weight`), first seed only.

This file is only the benchmark's schedule (`SCHEDULE`, which replaces the
experiment's defaults) and the issue's targets, which the results judge. Every
option of `keras-kd imagenet` works here (`--help`). Runs live in the run folder
`--out`: rerun the same command after an interruption, finished runs are
reused, an interrupted one resumes, and a sweep (`--runs scratch,cached
--temperature 2`) trains only the distilled runs of the new setting.

The schedule recorded in benchmarks/RESULTS.md (hours on 2 CPU cores):

    python benchmarks/imagenette.py --data-dir ../shared/data/imagenette --image-size 112 \\
        --teacher-epochs 16 --epochs 8 --student-width 0.5 --temperature 4 \\
        --soft-weight 0.9 --views 4

A smoke run of a minute or two (two classes, a few dozen images, 32 px):

    python benchmarks/imagenette.py --quick --seeds 0 --out /tmp/imagenette-quick
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_kd.experiments import imagenet  # noqa: E402

SCHEDULE = {
    "out": str(Path(__file__).resolve().parent / "runs" / "imagenette"),
    "runs": imagenet.KINDS,
    "seeds": (0, 1),
    "online_seeds": 1,
    "teacher_epochs": 40,
    "epochs": 30,
    "save_freq": 200,
    "verbose": 2,
}


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark with `argv` (default: the command line); exit status."""
    return imagenet.main(
        argv,
        defaults=SCHEDULE,
        prog="imagenette-benchmark",
        title="Imagenette benchmark",
        with_targets=True,
    )


if __name__ == "__main__":
    sys.exit(main())

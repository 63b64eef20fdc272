"""The ImageNet experiment's results: the table over seeds, and issue 10's targets.

`summarize` makes one row per kind of run (mean and range over seeds),
`targets` judges the Imagenette issue's targets on whichever runs are present,
and `write_results` writes both into the run folder (`results.md`,
`results.json`, `curves.png`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from keras_kd import reports
from keras_kd.runs import seed_summary

if TYPE_CHECKING:
    from keras_kd.experiments.imagenet import Settings
    from keras_kd.experiments.imagenet_runs import ImagenetExperiment

LABELS = {
    "teacher": "teacher {teacher}",
    "scratch": "student from scratch",
    "kd": "student, keras_kd.Distiller (online)",
    "peer": "student, keras.distillation.Distiller",
    "cached": "student, keras_kd.Distiller from cache (K={views})",
}


def summarize(records: Sequence[Mapping], settings: Settings) -> list[dict]:
    """One table row per kind of run: mean over seeds, each seed, speed.

    Args:
        records: Records of finished runs (`ImagenetExperiment.run`).
        settings: The invocation's settings (for the labels).

    Returns:
        Rows for `RunFolder.write_results`, with percentages as text.
    """
    rows = []
    for kind, label in LABELS.items():
        group = [r for r in records if r["kind"] == kind]
        if not group:
            continue
        top1 = seed_summary([100 * r["top1"] for r in group])
        top5 = seed_summary([100 * r["top5"] for r in group])
        rows.append(
            {
                "model": label.format(teacher=settings.teacher_network, views=settings.views),
                "seeds": ",".join(str(r["seed"]) for r in group if r["seed"] is not None),
                "epochs": group[0]["epochs"],
                "top-1 % (mean)": f"{top1.mean:.2f}",
                "top-1 range": f"{top1.spread:.2f}",
                "top-1 per seed": " / ".join(f"{v:.2f}" for v in top1.values),
                "top-5 % (mean)": f"{top5.mean:.2f}",
                "s / epoch": _seconds(statistics.fmean(r.get("seconds_per_epoch", math.nan) for r in group)),
                "fastest epoch s": _seconds(statistics.fmean(fastest_epoch(r) for r in group)),
            }
        )  # fmt: skip
    return rows


def _seconds(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def fastest_epoch(record: Mapping) -> float:
    """A run's fastest training epoch in seconds (NaN when it did not train).

    On a shared machine some epochs run slower for reasons outside the run;
    the fastest is the estimate least disturbed by that.
    """
    return min(record.get("epoch_seconds") or [], default=math.nan)


def targets(records: Sequence[Mapping]) -> list[dict]:
    """The Imagenette issue's targets, judged on the runs at hand.

    Args:
        records: Records of finished runs.

    Returns:
        Rows `{criterion, measured, target, verdict}` for every target whose
        runs are present ("met" / "missed"; "" for figures only reported).

    Example:

    >>> targets([{"kind": "teacher", "top1": 0.7335}])[0]["verdict"]
    'missed'
    """
    by_kind: dict[str, list[Mapping]] = {}
    for record in records:
        by_kind.setdefault(record["kind"], []).append(record)

    def top1(kind):
        return [100 * r["top1"] for r in by_kind.get(kind, [])]

    def row(criterion, measured, passed, target):
        verdict = "" if passed is None else ("met" if passed else "missed")
        return {"criterion": criterion, "measured": measured, "target": target,
                "verdict": verdict}  # fmt: skip

    rows = []
    if "teacher" in by_kind:
        value = top1("teacher")[0]
        rows.append(row("teacher top-1 %", f"{value:.2f}", value >= 80.0, ">= 80"))
    scratch, distilled = seed_summary(top1("scratch")), seed_summary(top1("cached"))
    if scratch.values and distilled.values:
        gap = distilled.mean - scratch.mean
        spread = max(scratch.spread, distilled.spread)
        rows.append(row("keras_kd (cached) mean - scratch mean, top-1 points",
                        f"{gap:+.2f}", gap >= 2.0, ">= +2.0"))  # fmt: skip
        rows.append(row("that gap / largest seed range", f"{gap:.2f} / {spread:.2f}",
                        gap > spread, "gap > range"))  # fmt: skip
    kd, peer, cached = (by_kind.get(k) for k in ("kd", "peer", "cached"))
    if kd and peer:
        diff = 100 * (kd[0]["top1"] - peer[0]["top1"])
        rows.append(row("keras_kd online - keras.distillation, top-1 points (same seed)",
                        f"{diff:+.2f}", diff >= -0.3, ">= -0.3"))  # fmt: skip
        ratio = fastest_epoch(kd[0]) / fastest_epoch(peer[0])
        rows.append(row("keras_kd online / keras.distillation, fastest epoch s",
                        f"{ratio:.3f}", ratio <= 1.0, "<= 1.0"))  # fmt: skip
    if kd and cached:
        same_seed = [r for r in cached if r["seed"] == kd[0]["seed"]] or cached
        ratio = fastest_epoch(kd[0]) / fastest_epoch(same_seed[0])
        rows.append(row("online / cached keras_kd, fastest epoch s", f"{ratio:.2f}",
                        ratio >= 2.0, ">= 2"))  # fmt: skip
        diff = 100 * (same_seed[0]["top1"] - kd[0]["top1"])
        rows.append(row("cached - online keras_kd, top-1 points (same seed)",
                        f"{diff:+.2f}", None, "(reported)"))  # fmt: skip
    return rows


def write_results(
    experiment: ImagenetExperiment,
    records: Sequence[Mapping],
    *,
    title: str,
    with_targets: bool,
) -> str:
    """Writes `results.md`, `results.json` and `curves.png`; returns the Markdown."""
    s, setup, data = experiment.settings, experiment.setup, experiment.data
    rows = summarize(records, s)
    description = (
        f"{data.source} data, {data.num_classes} classes, {data.train.num_examples} "
        f"train / {data.val.num_examples} val images, {s.image_size}px, batch "
        f"{setup.global_batch_size}, lr {setup.learning_rate:g}, {s.epochs} student "
        f"epochs x {experiment.steps} steps, teacher {s.teacher_network} "
        f"({s.teacher_weights}, {s.teacher_epochs or s.epochs} epochs), student "
        f"{s.student_network} x{s.student_width}, BN momentum {s.bn_momentum}, "
        f"T={s.temperature:g}, soft weight {s.soft_weight:g}"
        f"{f', cache views K={s.views}' if 'cached' in s.runs else ''}; "
        f"{setup.describe()}"
    )
    notes = [description]
    built = [r for r in records if "cache_build_seconds" in r]
    if built:
        notes.append(
            f"Cache build (teacher forward over {built[0]['views']} views of every "
            f"training image, once): {built[0]['cache_build_seconds']:.1f} s, "
            f"{built[0]['cache_mb']:.1f} MiB; not included in s / epoch."
        )
    skipped = {r["run"]: data.val.num_examples - r["images"] for r in records
               if "images" in r and data.val.num_examples is not None}  # fmt: skip
    if any(skipped.values()):
        notes.append(
            f"{max(skipped.values())} undecodable validation image(s) skipped: scores "
            f"are over {min(r['images'] for r in records if 'images' in r)} images."
        )
    judged = targets(records) if with_targets else []
    if judged:
        notes.append("## Targets (issue 10)\n\n" + reports.markdown_table(judged))
    curves = {
        r["run"]: [100 * v for v in r.get("val_top1_curve", []) if v is not None]
        for r in records
    }
    experiment.folder.write_results(
        rows,
        title=title,
        notes="\n\n".join(notes),
        curves={k: v for k, v in curves.items() if v},
        curve_label="validation top-1 %",
        extra={"runs": list(records), "targets": judged},
    )
    return (experiment.folder.root / "results.md").read_text()

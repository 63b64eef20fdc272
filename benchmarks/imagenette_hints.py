"""Imagenette (issue 17): do hints (FitNets) help knowledge distillation here?

The ImageNet experiment's recipe (`keras_kd.experiments.imagenet`: data
pipeline, SGD with warm-up and cosine decay, MobileNetV2 student, ResNet50
teacher), and for every seed of `--seeds`:

- `kd-...-s<seed>`: `keras_kd.Distiller`, soft targets alone (KD);
- `hints-...-s<seed>`: the same plus one `keras_kd.Hint` per `--hint-weights`
  value, from the student's `--hint-student-layer` to the teacher's
  `--hint-teacher-layer` (default: the last blocks at stride 16, MobileNetV2's
  `block_12_add` and ResNet50's `conv4_block6_out`, both 7 x 7 at 112 px;
  a learned 1x1 convolution maps the student's channels onto the teacher's);
- `peer-...`: `keras.distillation.Distiller` with `LogitsDistillation(T,
  KLDivergence())` and `FeatureDistillation("mse")` on the same layers,
  weighted to give the same objective, where keras.distillation applies. It
  takes layers of the model's top level and equal feature shapes only, so on
  this pair (the backbones are nested `keras.applications` models, and 48 or
  96 channels meet 1024) it is not trained: the results say why, with
  keras.distillation's own error.

The teacher is trained here first (`--teacher-weights scratch`, the default)
or read from a file, e.g. the teacher that `benchmarks/imagenette.py` trained
(`--teacher-weights benchmarks/runs/imagenette/models/teacher/model.keras`). Every
model is a run of a `keras_kd.runs.RunFolder` under `--out`: a rerun reuses
finished runs and resumes an interrupted one; `results.md`, `results.json` and
`curves.png` are rewritten after every run. Every option of `keras-kd
imagenet` applies (`--help`), except `--runs`, which here picks among
`teacher,kd,hints,peer`, and the cache's options (every run here is online:
hints need the teacher's features at every step).

The full comparison, 2 seeds each (estimated from benchmarks/imagenette.py's
recorded epochs, 416 s per teacher epoch and 160 s per online KD epoch, and a
hint step measured 3% slower than a KD step: about 3.5 to 4 hours on 2 CPU
cores with a scratch teacher, under 2 hours with `--teacher-weights`):

    python benchmarks/imagenette_hints.py --data-dir ../shared/data/imagenette \\
        --image-size 112 --teacher-epochs 16 --epochs 8 --student-width 0.5 \\
        --temperature 4 --soft-weight 0.9 --seeds 0,1 --hint-weights 0.01

The hint weight 0.01 starts the hint term at about the soft term's size: at
weight 1 the MSE between these feature maps (ResNet50's post-ReLU values are
large) was 330 against a soft term of 2.7 in the first epoch, and the objective
was almost all hint (benchmarks/RESULTS.md).

A smoke run of about 2 minutes (two classes, a few dozen images, 32 px, one seed):

    python benchmarks/imagenette_hints.py --quick --out /tmp/imagenette-hints-quick
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd import commands, distribute  # noqa: E402
from keras_kd.experiments import imagenet  # noqa: E402
from keras_kd.experiments import imagenet_models as models  # noqa: E402
from keras_kd.experiments.imagenet_runs import ImagenetExperiment, RunSpec  # noqa: E402
from keras_kd.runs import RunFolder, seed_summary  # noqa: E402

RUNS = ("teacher", "kd", "hints", "peer")
SCHEDULE = {
    "out": str(Path(__file__).resolve().parent / "runs" / "imagenette_hints"),
    "image_size": 112,
    "teacher_epochs": 16,
    "epochs": 8,
    "student_width": 0.5,
    "temperature": 4.0,
    "soft_weight": 0.9,
    "seeds": (0, 1),
    "save_freq": 200,
    "verbose": 2,
}
# --quick: the experiment's QUICK, one seed, its own folder, and a teacher
# wider than the student so that the hint needs its 1x1 convolution adapter.
QUICK = {**imagenet.QUICK, "teacher_width": 0.5, "seeds": (0,),
         "out": SCHEDULE["out"] + "-quick"}  # fmt: skip
# The hint's name: its loss is logged as hint_stage_loss, and each run records
# that loss per epoch (imagenet_runs.hint_loss_curves).
HINT_NAME = "stage"
HINT_CURVE = f"hint_{HINT_NAME}_loss_curve"
# The last block at stride 16 of each network (7 x 7 at 112 px).
HINT_LAYERS = {
    "mobilenetv2": "block_12_add",
    "resnet50": "conv4_block6_out",
    "resnet101": "conv4_block23_out",
    "resnet152": "conv4_block36_out",
}


@dataclasses.dataclass(frozen=True)
class HintOptions:
    """The benchmark's own options (the others are `imagenet.Settings`)."""

    runs: tuple[str, ...]
    student_layer: str
    teacher_layer: str
    weights: tuple[float, ...]


def _weight_name(weight: float) -> str:
    return f"h{weight:g}"


class HintsExperiment(ImagenetExperiment):
    """`ImagenetExperiment` with the kinds `hints` and `peer` (features)."""

    def __init__(self, settings, folder, setup, data, options: HintOptions):
        super().__init__(settings, folder, setup, data)
        self.options = options
        self.peer_refusal: str | None = None

    def plan(self) -> list[RunSpec]:
        s, o = self.settings, self.options
        specs = [RunSpec("teacher", "teacher", s.teacher_seed)]
        for seed in s.seeds:
            if "kd" in o.runs:
                specs.append(RunSpec(imagenet.run_name("kd", seed, s), "kd", seed))
            for weight in o.weights:
                for kind in ("hints", "peer"):
                    if kind in o.runs:
                        name = imagenet.run_name(kind, seed, s).replace(
                            f"{kind}-", f"{kind}-{_weight_name(weight)}-", 1
                        )
                        specs.append(RunSpec(name, f"{kind}:{weight:g}", seed))
        return specs

    def run_settings(self, spec: RunSpec) -> dict:
        kind, _, weight = spec.kind.partition(":")
        if not weight:
            return super().run_settings(spec)
        wanted = super().run_settings(spec._replace(kind="kd"))
        wanted.update(
            kind=kind,
            hint={"student_layer": self.options.student_layer,
                  "teacher_layer": self.options.teacher_layer,
                  "weight": float(weight), "loss": "mse", "adapter": "auto"},
        )  # fmt: skip
        return wanted

    def run(self, spec: RunSpec) -> dict:
        if spec.kind.startswith("peer:"):
            refusal = self._peer_refusal(float(spec.kind.partition(":")[2]))
            if refusal:
                self.say(f"{spec.name}: not run, keras.distillation does not apply: {refusal}")
                return {"run": spec.name, "kind": "peer", "seed": spec.seed, "skipped": refusal}
        return super().run(spec)

    def online_teacher(self, spec: RunSpec):
        return None if spec.kind == "teacher" else self.teacher()

    def compile_model(self, spec: RunSpec, network, optimizer, teacher):
        kind, _, weight = spec.kind.partition(":")
        if kind == "hints":
            s = self.settings
            return models.compile_run(
                "kd", network, optimizer=optimizer, teacher=teacher,
                temperature=s.temperature, soft_weight=s.soft_weight, jit_compile=s.xla,
                distiller_options={"hints": [self._hint(float(weight))]},
            )  # fmt: skip
        if kind == "peer":
            model = self._peer(network, teacher, float(weight))
            model.compile(
                optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=models.accuracy_metrics(self.data.num_classes),
                jit_compile=self.settings.xla,
            )
            # Backups need a built model; one call builds keras.distillation's.
            model(keras.ops.zeros((1, *network.input_shape[1:])))
            return model
        return super().compile_model(spec, network, optimizer, teacher)

    def _hint(self, weight: float) -> keras_kd.Hint:
        o = self.options
        return keras_kd.Hint(student_layer=o.student_layer, teacher_layer=o.teacher_layer,
                             weight=weight, name=HINT_NAME)  # fmt: skip

    def _peer(self, student, teacher, weight: float):
        """keras.distillation's Distiller with the objective of the `hints` run."""
        s, o = self.settings, self.options
        if s.soft_weight == 0.0:
            raise ValueError("--soft-weight 0 leaves keras.distillation no distillation term")
        return keras.distillation.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=[
                keras.distillation.LogitsDistillation(s.temperature, keras.losses.KLDivergence()),
                keras.distillation.FeatureDistillation(
                    "mse", teacher_layer_name=o.teacher_layer, student_layer_name=o.student_layer
                ),
            ],
            # Its distillation losses are weighted by 1 - student_loss_weight.
            distillation_loss_weights=[1.0, weight / s.soft_weight],
            student_loss_weight=1.0 - s.soft_weight,
        )

    def _peer_refusal(self, weight: float) -> str | None:
        """keras.distillation's error for this pair, or None when it applies."""
        try:
            with self.setup.strategy.scope():
                student = self._network(RunSpec("probe", "kd", 0))
                peer = self._peer(student, self.teacher(), weight)
                x = keras.ops.zeros((1, *student.input_shape[1:]))
                peer.compute_loss(x, keras.ops.zeros((1,), "int32"), peer(x))
        except (ValueError, RuntimeError, KeyError) as error:
            return str(error).strip().splitlines()[0][:300]
        return None


def results_rows(records: list[dict]) -> list[dict]:
    """One row per kind of run (and hint weight): top-1 over the seeds, speed."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        if "skipped" in record:
            continue
        key = record["run"].rsplit("-s", 1)[0] if record["kind"] != "teacher" else "teacher"
        groups.setdefault(key, []).append(record)
    rows = []
    for key, group in groups.items():
        top1 = seed_summary([100 * r["top1"] for r in group])
        rows.append({
            "run": key,
            "seeds": ",".join(str(r["seed"]) for r in group),
            "top-1 % (mean (per seed))": top1.format(),
            "top-1 spread": f"{top1.spread:.2f}",
            "top-5 % (mean)": f"{seed_summary([100 * r['top5'] for r in group]).mean:.2f}",
            "s / epoch": f"{seed_summary([r['seconds_per_epoch'] for r in group]).mean:.1f}",
            "last hint loss": ", ".join(
                f"{r[HINT_CURVE][-1]:.4f}" for r in group if r.get(HINT_CURVE)
            ),
        })  # fmt: skip
    return rows


def verdict(records: list[dict]) -> str:
    """Whether hints + KD beat KD alone by more than the seeds' spread."""
    by_kind: dict[str, list[float]] = {}
    for r in records:
        if "skipped" not in r and r["kind"].partition(":")[0] in ("kd", "hints"):
            by_kind.setdefault(r["run"].rsplit("-s", 1)[0], []).append(100 * r["top1"])
    kd = [v for k, v in by_kind.items() if k.startswith("kd-")]
    lines = []
    for key, values in by_kind.items():
        if key.startswith("hints-") and kd:
            gap = seed_summary(values).mean - seed_summary(kd[0]).mean
            spread = max(seed_summary(values).spread, seed_summary(kd[0]).spread)
            call = "helps" if gap > spread else ("hurts" if -gap > spread else "no clear difference")
            lines.append(f"- {key} - KD alone: {gap:+.2f} top-1 points; largest seed "
                         f"spread {spread:.2f}: {call}.")  # fmt: skip
    return "\n".join(lines)


def build_parser():
    """`keras-kd imagenet`'s options with this benchmark's defaults, plus the hints'."""
    parser = imagenet.build_parser({**SCHEDULE, "runs": RUNS}, prog="imagenette-hints")
    for action in parser._actions:  # --runs picks among this benchmark's kinds
        if action.dest == "runs":
            action.type = commands.names(RUNS)
            action.help = f"comma-separated kinds of run: {','.join(RUNS)} (default all)"
    group = parser.add_argument_group("hints")
    group.add_argument("--hint-student-layer", help="student layer (default: by "
                       f"network, {HINT_LAYERS})")  # fmt: skip
    group.add_argument("--hint-teacher-layer", help="teacher layer (default: by network)")
    group.add_argument("--hint-weights", type=commands.float_list, default=(1.0,),
                       help="weight of the hint loss; several give one run each (default 1)")  # fmt: skip
    return parser


def run(settings: imagenet.Settings, options: HintOptions) -> list[dict]:
    """Trains (or reuses) every run and writes the results; returns the records."""
    setup = distribute.configure(
        settings.strategy, precision=settings.precision, jit_compile=settings.xla,
        per_replica_batch_size=settings.per_replica_batch_size, base_lr=settings.base_lr,
    )  # fmt: skip
    data = None if imagenet.uses_synthetic_data(settings) else imagenet.load_data(settings)
    with RunFolder(settings.out) as folder:
        if data is None:
            data = imagenet.load_data(settings, folder.root / "synthetic-images")
        experiment = HintsExperiment(settings, folder, setup, data, options)
        experiment.say(f"hint: student {options.student_layer} -> teacher "
                       f"{options.teacher_layer}, weights {options.weights}")  # fmt: skip
        records = []
        for spec in experiment.plan():
            records.append(experiment.run(spec))
            refusals = {r["skipped"] for r in records if "skipped" in r}
            notes = (
                f"{data.num_classes} classes, {settings.image_size} px, "
                f"{settings.epochs} student epochs, T={settings.temperature:g}, "
                f"soft weight {settings.soft_weight:g}; hint {options.student_layer} -> "
                f"{options.teacher_layer} (MSE, 1x1 convolution adapter when the "
                "channels differ).\n\n" + verdict(records)
            )
            if refusals:
                notes += ("\n\nkeras.distillation's FeatureDistillation does not apply "
                          "to this pair: " + "; ".join(sorted(refusals)))  # fmt: skip
            curves = {r["run"]: r["val_top1_curve"] for r in records if r.get("val_top1_curve")}
            folder.write_results(results_rows(records), title="Imagenette: hints + KD "
                                 "versus KD alone", notes=notes, curves=curves,
                                 curve_label="validation top-1")  # fmt: skip
        print((folder.root / "results.md").read_text(), end="")
        return records


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark with `argv` (default: the command line); exit status."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        runs = args.runs or RUNS
        args.runs = None  # imagenet.Settings knows its own kinds only
        quick = QUICK if args.quick else {}
        given = commands.given_settings(args, imagenet.Settings)
        settings = imagenet.Settings(**{**SCHEDULE, **quick, **given, "runs": ("kd",)})
        options = HintOptions(
            runs=tuple(runs),
            student_layer=args.hint_student_layer or HINT_LAYERS[settings.student_network],
            teacher_layer=args.hint_teacher_layer or HINT_LAYERS[settings.teacher_network],
            weights=tuple(args.hint_weights),
        )
        for weight in options.weights:  # bad values fail now, not after the teacher
            keras_kd.Hint(options.student_layer, options.teacher_layer, weight=weight)
        run(settings, options)
        return 0

    return commands.run_reporting_errors("imagenette-hints", body)


if __name__ == "__main__":
    sys.exit(main())

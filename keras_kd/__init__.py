"""keras-kd: knowledge distillation (Hinton, Vinyals, Dean 2015) for Keras 3.

Public API (each name lives in the module of its concept):

- `Distiller` (`keras_kd.distiller`): a `keras.Model` that trains a student on a
  teacher's soft targets and on hard labels; `NonFiniteLossError`, raised when
  its loss becomes NaN or Inf.
- `keras_kd.batch`: the one format of a batch that carries teacher outputs.
- `Hint` (`keras_kd.hints`): intermediate-feature distillation (FitNets hints)
  for `Distiller(hints=[...])`.
- `keras_kd.losses`: distillation losses as objects (`DistillationLoss`,
  `TemperedKL`, `LogitMatching`) and as functions (`tempered_kl`,
  `logit_matching`); `TemperedKLDivergence` for a plain `compile`.
- `keras_kd.sequences`: sequence outputs `(batch, time, classes)` (frames,
  tokens): which tokens count and how the mean over valid tokens is global.
- `keras_kd.teachers`: `TeacherEnsemble`, `train_ensemble`, `evaluate_ensemble`.
- `keras_kd.cache`: `build_teacher_cache`, `TeacherCache` (run the teacher once).
- `keras_kd.bias`: `shift_class_bias`, `choose_bias_shift` and its
  `BiasShiftChoice` (omitted classes).
- `keras_kd.specialists`: `find_confusable_subsets` (its `ConfusableSubsets`),
  `train_specialist`, `SpecialistEnsemble` (section 5 of the paper).
- `keras_kd.tuning`: `DistillationHyperModel`, `search_temperature` (KerasTuner),
  `ExampleCounter` (check that a search runs the teacher once).
- `keras_kd.export`: `export_student` (SavedModel, TFLite, parity report).
- `keras_kd.distribute`: `make_strategy` (one device, Mirrored, MultiWorker).
- `keras_kd.frontend`: `LogMelSpectrogram`, `ContextWindow`,
  `waveform_classifier` (acoustic front end).
- `keras_kd.datasets`: `load_data` (an `.npz`, `tfds:NAME` or image folder as
  arrays) and the loaders of the paper's data sets (MNIST, FSDD, ImageNet).
- `keras_kd.runs`: run folders for long experiments (reuse, resume, seeds).
- `keras_kd.training`: warm-up + cosine schedule, resumable `fit`.
- `keras_kd.models`: `mlp`, the paper's multilayer perceptrons;
  `causal_transformer`, a causal Transformer language model.
- `keras_kd.evaluation`: `predict_logits`, `accuracy`, `top_k_accuracy`,
  `error_count`; `token_scores`, `TokenScores`, `perplexity` (language models).
- `keras_kd.teacher_inference`, `keras_kd.teacher_precision`: how the teacher's
  pass is compiled, remembered for validation, and computed in lower precision
  (`Distiller(teacher_jit_compile=, validation_teacher=, teacher_dtype=)`).
- `keras_kd.jobs`: `distill_saved_models`, `tune_saved_models`,
  `export_saved_student`, the bodies of `keras-kd distill`, `tune` and
  `export`, callable from Python.
- `keras_kd.peers`: `keras_distillation_peer`, `keras.distillation.Distiller`
  configured to compute keras-kd's loss (for benchmarks against it).

The experiments (`keras_kd.experiments.<name>`) are public through their
command lines and `main(argv)`; their other contents, and everything else
(`keras_kd.files`, `keras_kd.reports`, `keras_kd.checks`, `keras_kd.commands`,
`keras_kd.cli`), serve the package and the `keras-kd` command and may change
without notice, although `keras_kd.files` has a reference page.

What `import keras_kd` does:

- It needs Keras' TensorFlow backend. When `KERAS_BACKEND` is unset it selects
  TensorFlow; when it names another backend (or Keras was already imported with
  one), the import fails with an `ImportError` that says so in one line.
- It imports TensorFlow and Keras and registers keras-kd's serializable classes,
  so `keras.models.load_model` can read a saved `Distiller`, `TeacherEnsemble`
  or `LogMelSpectrogram` without further imports.
- It leaves TensorFlow's logging as you configured it: set
  `TF_CPP_MIN_LOG_LEVEL` yourself to quieten TensorFlow. (Only the `keras-kd`
  command hides TensorFlow's start-up lines, unless given `--verbose`.)
"""

import importlib as _importlib
import os as _os
import sys as _sys
from pathlib import Path as _Path

__version__ = "0.3.0"

# Public names and the public module each one is read from.
_NAMES = {
    "keras_kd.bias": ("BiasShiftChoice", "choose_bias_shift", "shift_class_bias"),
    "keras_kd.cache": ("TeacherCache", "build_teacher_cache"),
    "keras_kd.distiller": ("Distiller", "NonFiniteLossError"),
    "keras_kd.distribute": ("make_strategy",),
    "keras_kd.export": ("export_student",),
    "keras_kd.frontend": ("ContextWindow", "LogMelSpectrogram"),
    "keras_kd.hints": ("Hint",),
    "keras_kd.losses": (
        "DistillationLoss",
        "LogitMatching",
        "TemperedKL",
        "TemperedKLDivergence",
        "logit_matching",
        "tempered_kl",
    ),
    "keras_kd.specialists": (
        "ConfusableSubsets",
        "SpecialistEnsemble",
        "find_confusable_subsets",
        "train_specialist",
    ),
    "keras_kd.teachers": ("TeacherEnsemble", "evaluate_ensemble", "train_ensemble"),
    "keras_kd.tuning": ("DistillationHyperModel", "ExampleCounter", "search_temperature"),
}
_MODULES = (
    "batch",
    "bias",
    "cache",
    "datasets",
    "distribute",
    "evaluation",
    "export",
    "frontend",
    "hints",
    "jobs",
    "losses",
    "models",
    "peers",
    "runs",
    "sequences",
    "specialists",
    "teacher_inference",
    "teacher_precision",
    "teachers",
    "training",
    "tuning",
)
_HOME = {name: module for module, names in _NAMES.items() for name in names}

__all__ = sorted([*_HOME, *_MODULES])

_COMMAND_NAME = "keras-kd"


def _backend_problem() -> str | None:
    """Why Keras cannot run keras-kd in this process, or `None` when it can.

    keras-kd runs on Keras' TensorFlow backend only. When `KERAS_BACKEND` is
    unset and Keras is not imported yet, this selects TensorFlow (as importing
    keras_kd always has); otherwise it reports a backend other than TensorFlow.

    Returns:
        A one-line message naming the backend and the fix, or `None`.

    Example:

    >>> _backend_problem() is None
    True
    """
    keras = _sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        backend = keras.backend.backend()
        source = "Keras was already imported with the backend"
    else:
        _os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        backend = _os.environ["KERAS_BACKEND"]
        source = "KERAS_BACKEND is"
    if backend == "tensorflow":
        return None
    return (
        f"keras-kd needs the TensorFlow backend of Keras, but {source} {backend!r}. "
        "Set KERAS_BACKEND=tensorflow (before Keras is imported) to use keras-kd."
    )


def _started_as_command() -> bool:
    """Whether this process is the `keras-kd` command (or `python -m keras_kd.cli`)."""
    script = _Path(_sys.argv[0]).stem if _sys.argv and _sys.argv[0] else ""
    if script in (_COMMAND_NAME, f"{_COMMAND_NAME}-script"):
        return True
    argv = list(getattr(_sys, "orig_argv", ()))
    return any(
        flag == "-m" and module == "keras_kd.cli"
        for flag, module in zip(argv, argv[1:])
    )


def _import_public_api() -> None:
    """Imports TensorFlow, Keras and every public name of keras-kd.

    `import keras_kd` calls this itself; the `keras-kd` command calls it once it
    has configured TensorFlow's logging (see the module docstring).

    Raises:
        ImportError: when Keras runs on another backend than TensorFlow.
    """
    problem = _backend_problem()
    if problem:
        raise ImportError(problem)
    for module in _MODULES:
        globals()[module] = _importlib.import_module(f"keras_kd.{module}")
    for module, names in _NAMES.items():
        loaded = _importlib.import_module(module)
        globals().update({name: getattr(loaded, name) for name in names})


def __getattr__(name: str):
    # Reached only before `_import_public_api` ran (inside the `keras-kd` command).
    if name in _MODULES:
        return _importlib.import_module(f"keras_kd.{name}")
    if name in _HOME:
        return getattr(_importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'keras_kd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if not _started_as_command():
    _import_public_api()

"""keras-kd: knowledge distillation (Hinton, Vinyals, Dean 2015) for Keras 3.

Public API (each name lives in the module of its concept):

- `Distiller` (`keras_kd.distiller`): a `keras.Model` that trains a student on a
  teacher's soft targets and on hard labels.
- `keras_kd.losses`: `tempered_kl`, `TemperedKLDivergence`, `logit_matching`.
- `keras_kd.teachers`: `TeacherEnsemble`, `train_ensemble`, `evaluate_ensemble`.
- `keras_kd.cache`: `build_teacher_cache`, `TeacherCache` (run the teacher once).
- `keras_kd.bias`: `shift_class_bias`, `choose_bias_shift` (omitted classes).
- `keras_kd.specialists`: `find_confusable_subsets`, `train_specialist`,
  `SpecialistEnsemble` (section 5 of the paper).
- `keras_kd.tuning`: `DistillationHyperModel`, `search_temperature` (KerasTuner).
- `keras_kd.export`: `export_student` (SavedModel, TFLite, parity report).
- `keras_kd.distribute`: `make_strategy` (one device, Mirrored, MultiWorker).
- `keras_kd.frontend`: `LogMelSpectrogram`, `ContextWindow` (acoustic front end).
- `keras_kd.datasets`: local-file loaders for MNIST, FSDD and ImageNet folders.
"""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# ruff: noqa: E402
from keras_kd import (
    bias,
    cache,
    datasets,
    distribute,
    export,
    frontend,
    losses,
    specialists,
    teachers,
    training,
    tuning,
)
from keras_kd.bias import BiasShiftChoice, choose_bias_shift, shift_class_bias
from keras_kd.cache import TeacherCache, build_teacher_cache
from keras_kd.distiller import Distiller
from keras_kd.distribute import make_strategy
from keras_kd.export import export_student
from keras_kd.frontend import ContextWindow, LogMelSpectrogram
from keras_kd.losses import TemperedKLDivergence, logit_matching, tempered_kl
from keras_kd.specialists import (
    ConfusableSubsets,
    SpecialistEnsemble,
    find_confusable_subsets,
    train_specialist,
)
from keras_kd.teachers import TeacherEnsemble, evaluate_ensemble, train_ensemble
from keras_kd.tuning import DistillationHyperModel, search_temperature

__version__ = "0.1.0"

__all__ = [
    "BiasShiftChoice",
    "ConfusableSubsets",
    "ContextWindow",
    "DistillationHyperModel",
    "Distiller",
    "LogMelSpectrogram",
    "SpecialistEnsemble",
    "TeacherCache",
    "TeacherEnsemble",
    "TemperedKLDivergence",
    "bias",
    "build_teacher_cache",
    "cache",
    "datasets",
    "choose_bias_shift",
    "distribute",
    "evaluate_ensemble",
    "export",
    "export_student",
    "find_confusable_subsets",
    "frontend",
    "logit_matching",
    "losses",
    "make_strategy",
    "search_temperature",
    "shift_class_bias",
    "specialists",
    "teachers",
    "training",
    "tempered_kl",
    "train_ensemble",
    "train_specialist",
    "tuning",
]

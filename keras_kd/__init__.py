"""keras-kd: knowledge distillation (Hinton, Vinyals, Dean 2015) for Keras 3.

Public API:

- `Distiller`: a `keras.Model` that trains a student on a teacher's soft targets.
- `keras_kd.losses`: `tempered_kl`, `TemperedKLDivergence`, `logit_matching`.
"""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_kd import losses  # noqa: E402
from keras_kd.distiller import Distiller  # noqa: E402
from keras_kd.losses import TemperedKLDivergence, logit_matching, tempered_kl  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Distiller",
    "TemperedKLDivergence",
    "logit_matching",
    "losses",
    "tempered_kl",
]

"""Specialist models (Hinton, Vinyals and Dean 2015, section 5).

A generalist that confuses some classes with each other is helped by specialists,
each trained on one subset of confusable classes plus a *dustbin* class for
everything else. The package holds the paper's four steps, one module each:

1. `clustering`: `find_confusable_subsets` runs K-means on the columns of the
   covariance matrix of the generalist's predicted probabilities and gives
   subsets of classes that are often predicted together (`ConfusableSubsets`,
   plain data with a report).
2. `training`: `train_specialist` copies the generalist with a new head over
   `subset + dustbin`, trains it on batches of which half come from the subset
   (`oversample_indices`), optionally with the generalist's soft targets folded
   onto `subset + dustbin` as a regulariser (section 6.1), and finally corrects
   it for the oversampling (`dustbin_log_shift`, `correct_dustbin`).
3. `combine`: `combine_distributions` finds the full distribution `q` that
   minimises `KL(p_g || q) + sum_m KL(p_m || fold_m(q))` over the active
   specialists `m` (paper eq. 5), by batched steps on the logits of `q`.
4. `ensemble`: `SpecialistEnsemble` holds generalist, specialists and solver as
   one savable `keras.Model` that maps inputs to the combined distribution.

`folding` maps labels and logits between the full class space and a
specialist's `subset + dustbin`; `coverage` scores the result as the paper's
Table 4. Everything is on logits inside; probabilities appear only where the
paper's objective needs them. Every public name is importable from
`keras_kd.specialists` itself.

Example:

```python
from keras_kd import specialists as sp

clusters = sp.find_confusable_subsets(held_out_probabilities, (10, 20))
trained = [sp.train_specialist(generalist, s, x, y)[0] for s in clusters.subsets]
ensemble = sp.SpecialistEnsemble(generalist, trained, clusters, top_n=2)
```
"""

from keras_kd.specialists.clustering import (
    ConfusableSubsets,
    find_confusable_subsets,
    prediction_covariance,
    validate_subsets,
)
from keras_kd.specialists.combine import (
    active_specialists,
    combination_gradient,
    combination_objective,
    combine_distributions,
)
from keras_kd.specialists.coverage import coverage_table
from keras_kd.specialists.ensemble import SpecialistEnsemble
from keras_kd.specialists.folding import fold_labels, fold_logits, membership_matrix
from keras_kd.specialists.training import (
    HEAD_NAME,
    build_specialist,
    correct_dustbin,
    dustbin_log_shift,
    oversample_indices,
    train_specialist,
)

__all__ = [
    "HEAD_NAME",
    "ConfusableSubsets",
    "SpecialistEnsemble",
    "active_specialists",
    "build_specialist",
    "combination_gradient",
    "combination_objective",
    "combine_distributions",
    "correct_dustbin",
    "coverage_table",
    "dustbin_log_shift",
    "find_confusable_subsets",
    "fold_labels",
    "fold_logits",
    "membership_matrix",
    "oversample_indices",
    "prediction_covariance",
    "train_specialist",
    "validate_subsets",
]

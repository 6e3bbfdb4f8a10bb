"""The machine-learning lifecycle: labels, purged validation, and the weights that go with them.

`fixed_horizon`, `triple_barrier` and `meta_labels` turn bars into labels that carry `t1`, the time
each label became known; `uniqueness_weights` down-weights labels that overlap; `PurgedKFold`,
`CombinatorialPurgedKFold` and `purged_cv_score` validate models without leaking across those
overlaps.
"""

from __future__ import annotations

from workbench.models.labels import fixed_horizon, meta_labels, triple_barrier, uniqueness_weights
from workbench.models.validation import CombinatorialPurgedKFold, PurgedKFold, purged_cv_score

__all__ = [
    "CombinatorialPurgedKFold",
    "PurgedKFold",
    "fixed_horizon",
    "meta_labels",
    "purged_cv_score",
    "triple_barrier",
    "uniqueness_weights",
]

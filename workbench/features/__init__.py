"""Features for models: named, causal, parameterised functions of bars, as sets and matrices.

>>> fs = FeatureSet.of("ret(5)", "vol(20)|zscore(500)", "rsi(14)")      # doctest: +SKIP
>>> X = feature_matrix({"BTC/USDT": bars}, fs)                           # doctest: +SKIP
"""

from workbench.features.library import FEATURES, Feature, get_feature, register_feature
from workbench.features.matrix import (
    FEATURES_VERSION,
    FeatureCache,
    check_feature_lookahead,
    compute_features,
    feature_matrix,
)
from workbench.features.spec import FeatureItem, FeatureSet, as_feature_set

__all__ = ["FEATURES", "FEATURES_VERSION", "Feature", "FeatureCache", "FeatureItem",
           "FeatureSet", "as_feature_set", "check_feature_lookahead", "compute_features", "feature_matrix",
           "get_feature", "register_feature"]

"""Gradient-boosted trees (XGBoost) over the same model inputs as the network.

The inputs are the FeatureSpec's: `x_num` (standardized numerics and missing flags: trees do not
care about the scale) and `x_cat` (category codes, given to XGBoost as native categoricals, so a
split can group any set of categories). The booster learns the same target the network does
(`training_target`: standardized for regression) and outputs margins, so `outputs.from_raw`
turns both families' outputs into what a user gets. Stored as UBJSON (`save_raw`), never pickled.
xgboost is imported only where a booster is built or loaded: serving an MLP does not need it.
"""

from __future__ import annotations

import sys

import numpy as np

from rayline.config import XGBoostConfig
from rayline.features.spec import FeatureSpec, LabelSpec

BOOSTER = "booster.ubj"

_skip_sklearn = False  # set by lean_imports(), only in a process rayline owns


def lean_imports() -> None:
    """Mark this process as one rayline owns (a batch actor, a Serve replica, a Train controller or
    worker of the xgboost family): its first xgboost import skips scikit-learn.

    xgboost imports scikit-learn whenever it is installed, for its sklearn-style estimators: 0.6 s
    of CPU here, most of a batch actor's or a replica's start. rayline uses Booster, DMatrix and
    train only, and scikit-learn is a dev dependency (a production install has none), so this makes
    a dev install start as a production one does. Never called in a driver: a notebook may use
    xgboost's estimators after rayline loaded a model there."""
    global _skip_sklearn
    _skip_sklearn = True


def xgboost_module():
    """xgboost: without scikit-learn in a process that called lean_imports() first."""
    if _skip_sklearn and "xgboost" not in sys.modules and "sklearn" not in sys.modules:
        sys.modules["sklearn"] = None  # type: ignore[assignment]  # an ImportError for xgboost's optional import
        try:
            import xgboost
        finally:
            del sys.modules["sklearn"]
        return xgboost
    import xgboost

    return xgboost


def matrix(num: np.ndarray, cat: np.ndarray) -> np.ndarray:
    """One float32 matrix: numerics, then category codes (exact in float32 below 2**24)."""
    return np.hstack([num.astype(np.float32, copy=False), cat.astype(np.float32)]) if cat.shape[1] else \
        num.astype(np.float32, copy=False)


def feature_types(spec: FeatureSpec) -> list[str]:
    return ["q"] * len(spec.numeric_inputs) + ["c"] * len(spec.categorical)


def dmatrix(spec: FeatureSpec, num: np.ndarray, cat: np.ndarray, label: np.ndarray | None = None):
    xgb = xgboost_module()

    return xgb.DMatrix(matrix(num, cat), label=label, feature_types=feature_types(spec), enable_categorical=True,
                       nthread=-1)


def objective(label: LabelSpec) -> dict:
    """XGBoost's objective and its evaluation metric for the task (the one early stopping watches)."""
    if label.task == "binary":
        return {"objective": "binary:logistic", "eval_metric": ["logloss", "auc"]}
    if label.task == "multiclass":
        return {"objective": "multi:softprob", "num_class": label.num_outputs, "eval_metric": ["mlogloss"]}
    return {"objective": "reg:squarederror", "eval_metric": ["rmse"]}


def params(spec: FeatureSpec, cfg: XGBoostConfig, device: str, seed: int) -> dict:
    label = spec.label
    base = {}
    if label.task == "binary" and label.train_mean:
        p = min(max(label.train_mean, 1e-6), 1 - 1e-6)
        base = {"base_score": p}  # start from the base rate: the first trees learn signal, not the prior
    return {**objective(label), **base, "tree_method": "hist", "device": device, "seed": seed,
            "eta": cfg.eta, "max_depth": cfg.max_depth, "min_child_weight": cfg.min_child_weight,
            "subsample": cfg.subsample, "colsample_bytree": cfg.colsample_bytree, "lambda": cfg.reg_lambda,
            "alpha": cfg.reg_alpha, "max_bin": cfg.max_bin, "max_cat_to_onehot": cfg.max_cat_to_onehot,
            "max_cat_threshold": cfg.max_cat_threshold}


def load(data: bytes, device: str = "cpu"):
    xgb = xgboost_module()

    booster = xgb.Booster(model_file=bytearray(data))
    booster.set_param({"device": device})
    return booster


def margins(booster, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
    """Raw outputs (logits / class margins / standardized values), float32, (n,) or (n, k)."""
    out = booster.inplace_predict(matrix(num, cat), predict_type="margin")
    return np.asarray(out, dtype=np.float32)

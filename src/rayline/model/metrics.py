"""Metrics in plain numpy: how a model's predictions score against labels. Below both the training
loop (validation) and evaluation (test), which use them alike."""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve via the rank statistic (ties get their average rank)."""
    y = y.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    sorted_p = p[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y: np.ndarray, p: np.ndarray, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    thresholds = np.quantile(p, np.linspace(0, 1, points))[::-1]
    pos, neg = max(y.sum(), 1), max((1 - y).sum(), 1)
    tpr = np.array([((p >= t) & (y == 1)).sum() / pos for t in thresholds])
    fpr = np.array([((p >= t) & (y == 0)).sum() / neg for t in thresholds])
    return np.concatenate([[0], fpr, [1]]), np.concatenate([[0], tpr, [1]])


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[float, list[dict]]:
    """Expected calibration error over equal-width bins, and the bins (for the plot)."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        conf, acc = float(p[m].mean()), float(y[m].mean())
        ece += m.mean() * abs(conf - acc)
        table.append({"bin": b, "count": int(m.sum()), "mean_predicted": conf, "observed_rate": acc})
    return float(ece), table


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict:
    y = y.astype(np.float64)
    pred = p >= threshold
    tp = float((pred & (y == 1)).sum())
    fp = float((pred & (y == 0)).sum())
    fn = float((~pred & (y == 1)).sum())
    base = float(y.mean()) if len(y) else float("nan")
    ece, _ = calibration(y, p)
    return {
        "rows": int(len(y)), "auc": roc_auc(y, p), "log_loss": log_loss(y, p),
        "accuracy": float((pred == (y == 1)).mean()), "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0, "threshold": threshold, "calibration_error": ece,
        "base_rate": base, "baseline_log_loss": log_loss(y, np.full_like(p, base)) if len(y) else float("nan"),
        "baseline_accuracy": max(base, 1 - base) if len(y) else float("nan"),
    }


def regression_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    err = p - y
    var = float(((y - y.mean()) ** 2).mean()) if len(y) else float("nan")
    mse = float((err ** 2).mean())
    return {"rows": int(len(y)), "rmse": mse ** 0.5, "mae": float(np.abs(err).mean()),
            "r2": 1 - mse / var if var else float("nan"), "baseline_rmse": var ** 0.5}


def multiclass_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    y = y.astype(np.int64)
    pc = np.clip(p[np.arange(len(y)), y], EPS, 1)
    prior = np.bincount(y, minlength=p.shape[1]) / max(len(y), 1)
    return {"rows": int(len(y)), "accuracy": float((p.argmax(1) == y).mean()), "log_loss": float(-np.log(pc).mean()),
            "baseline_accuracy": float(prior.max()),
            "baseline_log_loss": float(-np.log(np.clip(prior[y], EPS, 1)).mean())}


def trivial_metrics(task: str, y: np.ndarray, train_mean: float | None) -> dict:
    """The trivial model's test metrics, from *training* statistics: the training base rate
    (binary) or mean (regression) predicted for every row. (Multiclass keeps the test prior from
    `multiclass_metrics`: the spec holds no training class prior.)"""
    if task == "multiclass" or train_mean is None or not len(y):
        return {}
    if task == "binary":
        p0 = float(np.clip(train_mean, EPS, 1 - EPS))
        return {"baseline_auc": 0.5, "baseline_log_loss": log_loss(y, np.full(len(y), p0)),
                "baseline_accuracy": float(((p0 >= 0.5) == (y == 1)).mean()), "train_base_rate": train_mean}
    err = y - train_mean
    var = float(((y - y.mean()) ** 2).mean())
    mse = float((err ** 2).mean())
    return {"baseline_rmse": mse ** 0.5, "baseline_mae": float(np.abs(err).mean()),
            "baseline_r2": 1 - mse / var if var else float("nan"), "train_mean": train_mean}


def task_metrics(task: str, y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict:
    if task == "binary":
        return binary_metrics(y, p, threshold)
    if task == "multiclass":
        return multiclass_metrics(y, p)
    return regression_metrics(y, p)


def primary_metric(task: str) -> tuple[str, str]:
    """(metric, mode) used for early stopping, checkpoint ranking and the promotion gate."""
    return {"binary": ("auc", "max"), "multiclass": ("log_loss", "min"), "regression": ("rmse", "min")}[task]

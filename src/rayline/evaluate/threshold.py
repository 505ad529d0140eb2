"""Choosing a binary model's decision threshold on the validation split, for a declared objective.

At 0.5 a model of a 21 % base rate says "negative" for nearly everything (the default flights
model: recall 0.069). The threshold is instead chosen on the validation split (never the test
split, which then measures it honestly) for `evaluate.threshold.objective`:

- `f1`: the threshold of the best F1;
- `precision` / `recall`: the best recall with precision >= `target` (or the best precision
  with recall >= `target`);
- `cost`: the least `cost_fp x false positives + cost_fn x false negatives`;
- `fixed`: `train.model.threshold` as configured.

It is saved with the model (its `model_config.json`), so the evaluation, the endpoint's `label`
and batch inference all decide at it. Candidates are the distinct predicted probabilities
(all of them: one sort, cumulative counts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rayline.config import ThresholdConfig


@dataclass
class ThresholdChoice:
    threshold: float
    objective: str
    split: str
    precision: float
    recall: float
    f1: float
    note: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def sweep(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, true positives, false positives, positives) at `p >= threshold`."""
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # the last row of each distinct value
    tp = np.cumsum(ys)[last]
    fp = (last + 1) - tp
    return ps[last], tp, fp, float(ys.sum())


def choose(y: np.ndarray, p: np.ndarray, cfg: ThresholdConfig, fixed: float, split: str = "valid") -> ThresholdChoice:
    if cfg.objective == "fixed" or len(y) == 0 or y.min() == y.max():
        note = "" if cfg.objective == "fixed" else f"the {split} split has one class: kept the fixed threshold"
        return _at(y, p, fixed, "fixed", split, note)
    thr, tp, fp, pos = sweep(y, p)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(pos, 1)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)
    if cfg.objective == "f1":
        i = int(np.argmax(f1))
    elif cfg.objective == "cost":
        fn = pos - tp
        i = int(np.argmin(cfg.cost_fp * fp + cfg.cost_fn * fn))
    else:
        meets = precision >= cfg.target if cfg.objective == "precision" else recall >= cfg.target
        if not meets.any():
            return _at(y, p, fixed, cfg.objective, split,
                       f"no threshold reaches {cfg.objective} {cfg.target:g} on the {split} split: kept {fixed:g}")
        other = recall if cfg.objective == "precision" else precision
        i = int(np.flatnonzero(meets)[np.argmax(other[meets])])
    return ThresholdChoice(float(thr[i]), cfg.objective, split, float(precision[i]), float(recall[i]), float(f1[i]))


def _at(y: np.ndarray, p: np.ndarray, threshold: float, objective: str, split: str, note: str) -> ThresholdChoice:
    pred, yb = p >= threshold, y.astype(bool)
    tp = float((pred & yb).sum())
    precision = tp / max(float(pred.sum()), 1.0)
    recall = tp / max(float(yb.sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ThresholdChoice(float(threshold), objective, split, precision, recall, f1, note)

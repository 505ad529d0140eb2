"""Raw model outputs -> what a user gets, in NumPy: P(positive), class probabilities, or the value
in the target's original units; and its inverse for training, the target a model learns.

Both families end here (a booster's margins, a network's output moved to the CPU), and training's
evaluation, serving and batch all go through it: one definition, and no torch in a process that
only serves a booster (importing torch costs a replica or a batch actor ~2 s and ~200 MB).
"""

from __future__ import annotations

import numpy as np

from rayline.features.spec import LabelSpec

LOG_MAX = 88.0  # expm1(88) ~ 1.7e38 < float32 max: a log1p target's prediction is always finite


def from_raw(label: LabelSpec, raw: np.ndarray) -> np.ndarray:
    """float32 predictions from raw outputs (logits, class margins, standardized values)."""
    x = np.asarray(raw, dtype=np.float32)
    if label.task == "binary":
        return _sigmoid(x)
    if label.task == "multiclass":
        e = np.exp(x - x.max(axis=1, keepdims=True)) if x.size else x
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32) if x.size else x
    scale = label.target_scale()
    value = x if scale is None else (x * np.float32(scale[1]) + np.float32(scale[0])).astype(np.float32)
    if label.transform == "log1p":
        return np.expm1(np.minimum(value, np.float32(LOG_MAX)))
    return value


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of -|x| only: no overflow (and no warning) at either end
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)


def training_target(label: LabelSpec, y):
    """What a model is trained to output for target `y` (the inverse of `from_raw` for
    regression): a NumPy array for the booster, a torch tensor (on its device) for the network."""
    if label.transform == "log1p":
        y = np.log1p(np.maximum(y, 0)) if isinstance(y, np.ndarray) else y.clamp(min=0).log1p()
    scale = label.target_scale()
    return y if scale is None else (y - scale[0]) / scale[1]

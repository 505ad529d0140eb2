"""Request statistics against training statistics: a simple, per-replica drift signal."""

from __future__ import annotations

import math
import threading

import numpy as np

from rayline.features.spec import FeatureSpec, ModelInputs


class DriftTracker:
    """Running statistics of what a replica has been asked, compared with the FeatureSpec.

    Numeric features: mean of raw values (exponentially weighted, so it follows recent traffic),
    share of values outside the training range, share missing. Categorical: share out of
    vocabulary. A feature is flagged when its mean moved by more than `z` training standard
    deviations, or when the out-of-range / OOV share exceeds `share`.
    """

    def __init__(self, spec: FeatureSpec, halflife: int = 5000, z: float = 0.5, share: float = 0.05):
        self.spec, self.z, self.share = spec, z, share
        self.alpha = 1 - 0.5 ** (1 / halflife)
        self.lock = threading.Lock()
        self.n = 0
        self.batches = 0
        self.mean = {f.name: None for f in spec.numeric}
        self.out_of_range = {f.name: 0.0 for f in spec.numeric}
        self.missing = {f.name: 0.0 for f in spec.numeric}
        self.oov = {c.name: 0.0 for c in spec.categorical}

    def observe(self, records: list[dict], inputs: ModelInputs) -> list[str]:
        """Update with a batch; return the names of numeric features outside the training range."""
        outside: list[str] = []
        with self.lock:
            for f in self.spec.numeric:
                vals = np.array([r.get(f.name) for r in records], dtype=np.float64)
                present = ~np.isnan(vals)
                miss = 1.0 - present.mean()
                oor = 0.0
                if present.any():
                    v = vals[present]
                    lo = f.min if f.min is not None else -math.inf
                    hi = f.max if f.max is not None else math.inf
                    bad = (v < lo) | (v > hi)
                    oor = float(bad.mean())
                    if bad.any():
                        outside.append(f.name)
                    m = float(v.mean())
                    self.mean[f.name] = m if self.mean[f.name] is None else self._ewm(self.mean[f.name], m, len(v))
                self.out_of_range[f.name] = self._ewm(self.out_of_range[f.name], oor, len(records))
                self.missing[f.name] = self._ewm(self.missing[f.name], miss, len(records))
            for j, c in enumerate(self.spec.categorical):
                oov = float((inputs.cat[:, j] == 1).mean()) if len(inputs) else 0.0
                self.oov[c.name] = self._ewm(self.oov[c.name], oov, len(records))
            self.n += len(records)
            self.batches += 1
        return outside

    def _ewm(self, old: float, new: float, weight: int) -> float:
        a = 1 - (1 - self.alpha) ** max(weight, 1)
        return old + a * (new - old) if self.n else new

    def report(self) -> dict:
        with self.lock:
            feats = {}
            for f in self.spec.numeric:
                m = self.mean[f.name]
                shift = None if m is None else (m - f.mean) / (f.std or 1.0)
                drifted = (shift is not None and abs(shift) > self.z) or self.out_of_range[f.name] > self.share
                feats[f.name] = {"kind": "numeric", "train_mean": f.mean, "train_std": f.std, "recent_mean": m,
                                 "shift_in_std": shift, "out_of_training_range": self.out_of_range[f.name],
                                 "missing": self.missing[f.name], "train_missing": f.null_fraction, "drifted": drifted}
            for c in self.spec.categorical:
                drifted = self.oov[c.name] > max(self.share, 2 * c.oov_fraction)
                feats[c.name] = {"kind": "categorical", "out_of_vocabulary": self.oov[c.name],
                                 "train_out_of_vocabulary": c.oov_fraction, "drifted": drifted}
            return {"observed_records": self.n, "observed_batches": self.batches, "drifted": sorted(k for k, v in feats.items() if v["drifted"]),
                    "features": feats}

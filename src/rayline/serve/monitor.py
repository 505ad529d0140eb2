"""Request statistics against training statistics: which features drifted, across replicas.

Each replica counts what it is asked in one-minute buckets: per numeric feature the values
present, missing, below and above the training range, and the sum and sum of squares of the
values *clipped to the training range*; per categorical feature the values out of vocabulary
and missing. Counts add up, so replicas' snapshots merge exactly (a small named actor
collects them), and clipped sums are bounded, so no request can turn a statistic into NaN or
drag it for millions of records: one value of 1e308 counts as one value at the training max.
Non-finite numbers never get here (the contract rejects them).

A feature is flagged when the window's clipped mean moved by more than `z` training standard
deviations, or its out-of-range (numeric) or out-of-vocabulary (categorical) share exceeds
`share` (and twice its training share for categories).

Each bucket also holds a histogram per feature: numeric values over the training deciles
(`NumericSpec.bins`), categories per model code (missing, out of vocabulary, each value). From
them the report gives each feature's population stability index against training,
PSI = sum over bins of (recent - train) * ln(recent / train), shares floored at PSI_FLOOR so an
empty bin stays finite. By the usual reading, below 0.1 is stable, above 0.25 a real shift.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pyarrow as pa

from rayline.features.spec import OOV_INDEX, FeatureSpec, ModelInputs, numeric_matrix

WINDOW_S, BUCKET_S = 900, 60
PSI_FLOOR = 1e-4
NUM_FIELDS = ("present", "missing", "below", "above", "sum", "sumsq")


class ServeMetrics:
    """The endpoint's Prometheus metrics (Ray's metrics export, beside Serve's `ray_serve_*`)."""

    def __init__(self):
        from ray.util import metrics

        tags = ("model_version",)
        self.predictions = metrics.Counter("rayline_predictions", "records predicted", tag_keys=tags)
        self.score = metrics.Histogram("rayline_prediction_score", "predicted probability or value",
                                       boundaries=[i / 10 for i in range(1, 10)], tag_keys=tags)
        self.invalid_requests = metrics.Counter("rayline_invalid_requests", "rejected requests", tag_keys=("reason",))
        self.lookup_misses = metrics.Counter("rayline_lookup_misses", "records whose key found no row in a lookup",
                                             tag_keys=("lookup",))
        self.outside = metrics.Counter("rayline_feature_outside_training_range",
                                       "values outside the range seen in training", tag_keys=("feature",))
        # per version and role (live, shadow, pinned): what a dashboard compares versions by
        vr = ("model_version", "role")
        self.requests = metrics.Counter("rayline_requests", "requests answered (or scored, shadow)", tag_keys=vr)
        self.errors = metrics.Counter("rayline_request_errors", "requests the model failed to score", tag_keys=vr)
        self.latency = metrics.Histogram("rayline_request_latency_ms", "time to answer a request", tag_keys=vr,
                                         boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000])
        self.dropped = metrics.Counter("rayline_dropped", "shadow requests or log rows dropped (bounded queues)",
                                       tag_keys=("what",))

    def predicted(self, version: int, preds: np.ndarray, outside: list[str], missed: dict[str, int] | None = None) -> None:
        tags = {"model_version": str(version)}
        for name, n in (missed or {}).items():
            if n:
                self.lookup_misses.inc(n, tags={"lookup": name})
        self.predictions.inc(len(preds), tags=tags)
        for score in (preds.max(axis=1) if preds.ndim == 2 else preds).tolist():
            self.score.observe(score, tags=tags)
        for name in outside:
            self.outside.inc(tags={"feature": name})

    def answered(self, version: int, role: str, latency_ms: float | None, failed: bool = False, n: int = 1) -> None:
        tags = {"model_version": str(version), "role": role}
        self.requests.inc(n, tags=tags)
        if failed:
            self.errors.inc(n, tags=tags)
        if latency_ms is not None:
            self.latency.observe(latency_ms, tags=tags)

    def drop(self, what: str, n: int = 1) -> None:
        if n:
            self.dropped.inc(n, tags={"what": what})

    def invalid(self, reason: str) -> None:
        self.invalid_requests.inc(tags={"reason": reason})


class DriftTracker:
    """One replica's counts over the last `window_s` seconds."""

    def __init__(self, spec: FeatureSpec, window_s: int = WINDOW_S, bucket_s: int = BUCKET_S, clock=time.time):
        self.spec, self.window_s, self.bucket_s, self.clock = spec, window_s, bucket_s, clock
        self.lock = threading.Lock()
        self.n = 0         # records observed since start (this replica)
        self.batches = 0
        self.buckets: dict[int, dict] = {}
        lo = np.array([-math.inf if f.min is None else f.min for f in spec.numeric])
        hi = np.array([math.inf if f.max is None else f.max for f in spec.numeric])
        bounded = np.isfinite(lo) & np.isfinite(hi)  # sums are clipped only where both ends are known
        self._bounds = (lo, hi, np.where(bounded, lo, -math.inf), np.where(bounded, hi, math.inf))
        # One flat histogram per bucket: each numeric feature's bins, then each category's codes,
        # filled by one bincount per batch (a bincount per feature cost a one-record request ~80 µs).
        widths = [len(f.bins) + 1 for f in spec.numeric] + [c.cardinality for c in spec.categorical]
        self._starts = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
        nb = max((len(f.bins) for f in spec.numeric), default=0)
        self._edges = np.full((len(spec.numeric), max(nb, 1)), np.inf)  # padded: no value reaches +inf
        for j, f in enumerate(spec.numeric):
            self._edges[j, :len(f.bins)] = f.bins
        self._cards = np.array([c.cardinality for c in spec.categorical], dtype=np.int64)
        self._names = [f.name for f in spec.numeric] + [c.name for c in spec.categorical]

    def observe(self, table: pa.Table, inputs: ModelInputs, missed: dict[str, np.ndarray] | None = None,
                values: dict[str, list] | None = None) -> list[str]:
        """Count a batch of typed input columns (`values`: columns given as Python values, as the
        transform took them); return the numeric features with values outside the training
        range in it. All features at once: a one-record batch pays per call."""
        rows = table.num_rows
        numeric, categorical = self.spec.numeric, self.spec.categorical
        num = np.zeros((len(numeric), len(NUM_FIELDS)))
        outside: list[str] = []
        if numeric:
            lo, hi, clip_lo, clip_hi = self._bounds
            x = numeric_matrix(table, [f.name for f in numeric], values).T
            present = np.isfinite(x)
            with np.errstate(invalid="ignore"):
                below, above = ((x < lo) & present).sum(axis=0), ((x > hi) & present).sum(axis=0)
            c = np.where(present, np.clip(x, clip_lo, clip_hi), 0.0)
            n_present = present.sum(axis=0)
            num = np.stack([n_present, rows - n_present, below, above, c.sum(axis=0), (c * c).sum(axis=0)], axis=1)
            outside = [numeric[j].name for j in np.flatnonzero(below + above)]
            with np.errstate(invalid="ignore"):  # a bin is the number of edges <= the value (searchsorted right)
                bins = (x[:, :, None] >= self._edges[None, :, :]).sum(axis=2)
            slots = (bins + self._starts[None, :len(numeric)])[present]
        else:
            slots = np.zeros(0, np.int64)
        codes = inputs.cat if len(inputs) else np.zeros((0, len(categorical)), np.int64)
        cat = np.stack([np.full(len(categorical), rows), (codes == OOV_INDEX).sum(axis=0), (codes == 0).sum(axis=0)], axis=1)
        if len(categorical):
            cat_slots = np.clip(codes, 0, self._cards - 1) + self._starts[len(numeric):-1]
            slots = np.concatenate([slots, cat_slots.ravel()])
        hist = np.bincount(slots.astype(np.int64), minlength=int(self._starts[-1]))
        key = int(self.clock() // self.bucket_s) * self.bucket_s
        with self.lock:
            bucket = self.buckets.get(key)
            if bucket is None:
                bucket = self.buckets[key] = {"records": 0, "num": np.zeros_like(num), "cat": np.zeros(cat.shape, np.int64),
                                              "misses": {}, "hist": np.zeros(len(hist), np.int64)}
            bucket["records"] += rows
            for name, mask in (missed or {}).items():
                bucket["misses"][name] = bucket["misses"].get(name, 0) + int(mask.sum())
            bucket["num"] += num
            bucket["cat"] += cat
            bucket["hist"] += hist
            self.n += rows
            self.batches += 1
            oldest = self.clock() - self.window_s
            for k in [k for k in self.buckets if k + self.bucket_s < oldest]:
                del self.buckets[k]
        return outside

    def snapshot(self) -> dict:
        """This replica's buckets, as plain data (sent to the board, merged by `report`)."""
        int_fields = [i for i, f in enumerate(NUM_FIELDS) if f not in ("sum", "sumsq")]
        with self.lock:
            buckets = {}
            for k, b in self.buckets.items():
                features = {}
                for j, f in enumerate(self.spec.numeric):
                    features[f.name] = [int(v) if i in int_fields else float(v) for i, v in enumerate(b["num"][j])]
                for j, c in enumerate(self.spec.categorical):
                    features[c.name] = [int(v) for v in b["cat"][j]]
                st = self._starts
                buckets[k] = {"records": b["records"], "features": features, "misses": dict(b.get("misses", {})),
                              "hist": {n: b["hist"][st[i]:st[i + 1]].tolist() for i, n in enumerate(self._names)}}
            return {"records": self.n, "batches": self.batches, "buckets": buckets}

    def report(self, others: list[dict] = ()) -> dict:
        """This replica's counts merged with other replicas' snapshots."""
        return drift_report(self.spec, [self.snapshot(), *others], self.clock() - self.window_s, self.window_s)


def drift_report(spec: FeatureSpec, snapshots: list[dict], since: float, window_s: int = WINDOW_S,
                 z: float = 0.5, share: float = 0.05) -> dict:
    """Merge snapshots (one per replica) over the buckets newer than `since` and compare with
    the training statistics."""
    total: dict[str, list[float]] = {}
    hist: dict[str, np.ndarray] = {}
    records, misses = 0, {name: 0 for name in lookup_names(spec)}
    for snap in snapshots:
        for key, b in snap["buckets"].items():
            if float(key) + BUCKET_S <= since:
                continue
            records += b["records"]
            for name, n in b.get("misses", {}).items():
                misses[name] = misses.get(name, 0) + n
            for name, vals in b["features"].items():
                acc = total.setdefault(name, [0] * len(vals))
                for k, val in enumerate(vals):
                    acc[k] += val
            for name, counts in b.get("hist", {}).items():  # absent in snapshots from older replicas
                h = np.asarray(counts, np.int64)
                if name not in hist:
                    hist[name] = h
                elif len(hist[name]) == len(h):
                    hist[name] = hist[name] + h
    feats = {}
    for f in spec.numeric:
        present, missing, below, above, s, _ = total.get(f.name, [0] * len(NUM_FIELDS))
        mean = s / present if present else None
        shift = None if mean is None else (mean - f.mean) / (f.std or 1.0)
        seen = present + missing
        oor = (below + above) / present if present else 0.0
        feats[f.name] = {"kind": "numeric", "train_mean": f.mean, "train_std": f.std, "recent_mean_clipped": mean,
                         "shift_in_std": shift, "out_of_training_range": oor, "below_training_min": below,
                         "above_training_max": above, "missing": missing / seen if seen else 0.0,
                         "train_missing": f.null_fraction, "psi": _psi(f.bin_shares, hist.get(f.name)),
                         "drifted": bool((shift is not None and abs(shift) > z) or oor > share)}
    for c in spec.categorical:
        n, oov, missing = total.get(c.name, [0, 0, 0])
        share_oov = oov / n if n else 0.0
        feats[c.name] = {"kind": "categorical", "out_of_vocabulary": share_oov, "train_out_of_vocabulary": c.oov_fraction,
                         "missing": missing / n if n else 0.0, "train_missing": c.null_fraction,
                         "psi": _psi([c.null_fraction, c.oov_fraction, *c.frequencies], hist.get(c.name)),
                         "drifted": bool(share_oov > max(share, 2 * c.oov_fraction))}
    psis = {k: v["psi"] for k, v in feats.items() if v["psi"] is not None}
    top = max(psis, key=psis.get) if psis else None
    return {"window_s": window_s, "replicas_reporting": len(snapshots), "records_in_window": records,
            "drifted": sorted(k for k, v in feats.items() if v["drifted"]), "features": feats,
            "psi_max": {"feature": top, "psi": psis[top]} if top else None,
            # records whose key found no row, per lookup (their looked-up columns counted as missing)
            "lookup_misses": {name: {"records": n, "share": n / records if records else 0.0} for name, n in misses.items()}}


def psi(expected, actual) -> float:
    """Population stability index of `actual` (shares or counts) against `expected` (shares)."""
    e = np.asarray(expected, np.float64)
    a = np.asarray(actual, np.float64)
    e, a = np.maximum(e / e.sum(), PSI_FLOOR), np.maximum(a / a.sum(), PSI_FLOOR)
    return float(((a - e) * np.log(a / e)).sum())


def _psi(expected: list[float], counts: np.ndarray | None) -> float | None:
    if counts is None or not len(expected) or len(expected) != len(counts) or counts.sum() == 0 or sum(expected) <= 0:
        return None
    return psi(expected, counts)


def lookup_names(spec: FeatureSpec) -> list[str]:
    from rayline.features.lookups import join_name

    return [join_name(j) for j in spec.joins] + [c.name for c in spec.counts]


def board_actor(name: str):
    """The named actor that collects replicas' snapshots (created by the first replica that asks)."""
    import ray

    @ray.remote(num_cpus=0, max_restarts=-1)
    class DriftBoard:
        def __init__(self) -> None:
            self.snaps: dict[str, tuple[float, int, dict]] = {}

        def push(self, replica: str, version: int, snapshot: dict) -> None:
            self.snaps[replica] = (time.time(), version, snapshot)

        def collect(self, version: int, max_age_s: float) -> list[dict]:
            now = time.time()
            self.snaps = {r: e for r, e in self.snaps.items() if now - e[0] < max_age_s}
            return [snap for _, v, snap in self.snaps.values() if v == version]

    return DriftBoard.options(name=name, namespace="rayline", get_if_exists=True, lifetime="detached").remote()

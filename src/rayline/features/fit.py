"""Fitting the FeatureSpec from partial aggregates.

Each batch of training rows yields a small :class:`PartialStats` (counts, means, M2, min/max,
value counts) in the same pass that validates and splits it; the driver merges them with
Chan's parallel update, which is exact and numerically stable, and builds the spec. No second
pass over the data is needed to fit. Each batch also keeps a systematic sample of each numeric
feature (at most SAMPLE_PER_BATCH values, weighted by the rows they stand for): the deciles
drift's PSI bins by come from the merged sample.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayline.config import FeaturesConfig, RaylineConfig
from rayline.features.coerce import coerce
from rayline.features.spec import CategoricalSpec, FeatureSpec, LabelSpec, NumericSpec, TimeSpec


@dataclass
class Moments:
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")
    nulls: int = 0

    @classmethod
    def of(cls, values: np.ndarray) -> "Moments":
        ok = values[~np.isnan(values)]
        if ok.size == 0:
            return cls(nulls=int(values.size))
        mean = float(ok.mean())
        return cls(int(ok.size), mean, float(((ok - mean) ** 2).sum()), float(ok.min()), float(ok.max()),
                   int(values.size - ok.size))

    def merge(self, o: "Moments") -> "Moments":
        n = self.n + o.n
        if n == 0:
            return Moments(nulls=self.nulls + o.nulls)
        d = o.mean - self.mean
        mean = self.mean + d * o.n / n
        m2 = self.m2 + o.m2 + d * d * self.n * o.n / n
        return Moments(n, mean, m2, min(self.min, o.min), max(self.max, o.max), self.nulls + o.nulls)

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n > 1 else 0.0


SAMPLE_PER_BATCH, SAMPLE_MAX, DRIFT_BINS = 512, 16_384, 10


@dataclass
class Sample:
    """A weighted sample of one feature's present values (for quantiles; merged by concatenation)."""
    values: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: np.ndarray) -> "Sample":
        ok = values[~np.isnan(values)]
        if ok.size == 0:
            return cls()
        picked = ok[:: max(1, -(-ok.size // SAMPLE_PER_BATCH))]
        return cls(picked.tolist(), [ok.size / picked.size] * picked.size)

    def merge(self, o: "Sample") -> "Sample":
        """Both samples; beyond SAMPLE_MAX values an evenly spaced subset, reweighted to the same
        total (a 30M-row ingest has ~115 batches: the driver holds 16k values a feature, not 60k)."""
        values, weights = self.values + o.values, self.weights + o.weights
        if len(values) <= SAMPLE_MAX:
            return Sample(values, weights)
        w = np.asarray(weights)
        keep = np.linspace(0, len(values) - 1, SAMPLE_MAX).astype(np.int64)
        kept = w[keep] * (w.sum() / w[keep].sum())
        return Sample(np.asarray(values)[keep].tolist(), kept.tolist())

    def bins(self, k: int = DRIFT_BINS) -> tuple[list[float], list[float]]:
        """(interior edges at the weighted 1/k..(k-1)/k quantiles, ties merged; share per bin)."""
        if not self.values:
            return [], []
        x, w = np.asarray(self.values), np.asarray(self.weights)
        order = np.argsort(x, kind="stable")
        x, w = x[order], w[order]
        cdf = np.cumsum(w) / w.sum()
        edges = np.unique(x[np.minimum(np.searchsorted(cdf, np.arange(1, k) / k), len(x) - 1)])
        edges = edges[edges > x[0]]  # an edge at the minimum would leave the first bin empty
        shares = np.bincount(np.searchsorted(edges, x, side="right"), weights=w, minlength=len(edges) + 1) / w.sum()
        return edges.tolist(), shares.tolist()


@dataclass
class PartialStats:
    rows: int = 0
    numeric: dict[str, Moments] = field(default_factory=dict)
    categorical: dict[str, Counter] = field(default_factory=dict)
    cat_nulls: dict[str, int] = field(default_factory=dict)
    label: Moments = field(default_factory=Moments)
    learned: Moments = field(default_factory=Moments)  # of the transformed target (label.transform)
    samples: dict[str, Sample] = field(default_factory=dict)

    def merge(self, o: "PartialStats") -> "PartialStats":
        out = PartialStats(rows=self.rows + o.rows, label=self.label.merge(o.label), learned=self.learned.merge(o.learned))
        for k in self.numeric.keys() | o.numeric.keys():
            out.numeric[k] = self.numeric.get(k, Moments()).merge(o.numeric.get(k, Moments()))
        for k in self.samples.keys() | o.samples.keys():
            out.samples[k] = self.samples.get(k, Sample()).merge(o.samples.get(k, Sample()))
        for k in self.categorical.keys() | o.categorical.keys():
            out.categorical[k] = self.categorical.get(k, Counter()) + o.categorical.get(k, Counter())
            out.cat_nulls[k] = self.cat_nulls.get(k, 0) + o.cat_nulls.get(k, 0)
        return out

    # Partial stats travel through Ray as plain dicts (Arrow-friendly, no pickled classes).
    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "numeric": {k: vars(m) for k, m in self.numeric.items()},
            "categorical": {k: dict(c) for k, c in self.categorical.items()},
            "cat_nulls": self.cat_nulls,
            "label": vars(self.label),
            "learned": vars(self.learned),
            "samples": {k: vars(v) for k, v in self.samples.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "PartialStats":
        return cls(
            rows=d["rows"],
            numeric={k: Moments(**m) for k, m in d["numeric"].items()},
            categorical={k: Counter(c) for k, c in d["categorical"].items()},
            cat_nulls=dict(d["cat_nulls"]),
            label=Moments(**d["label"]),
            learned=Moments(**d["learned"]),
            samples={k: Sample(**v) for k, v in d.get("samples", {}).items()},
        )


def partial_stats(table: pa.Table, feats: FeaturesConfig, label: np.ndarray | None, *,
                  learned_log1p: bool = False) -> PartialStats:
    """Statistics of one batch of (already typed) training rows; `label`: the numeric target
    (None for multiclass), learned on log(1 + y) when `learned_log1p`."""
    out = PartialStats(rows=table.num_rows)
    for f in feats.numeric:
        x = pc.fill_null(coerce(table.column(f.name), "float")[0], float("nan")).to_numpy(zero_copy_only=False)
        if f.clip is not None:
            x = np.clip(x, f.clip[0], f.clip[1])
        out.numeric[f.name] = Moments.of(x)
        out.samples[f.name] = Sample.of(x)
    for f in feats.categorical:
        col = coerce(table.column(f.name), "string")[0]
        vc = pc.value_counts(col)
        values, counts = vc.field("values").to_pylist(), vc.field("counts").to_pylist()
        out.categorical[f.name] = Counter({v: c for v, c in zip(values, counts) if v is not None})
        out.cat_nulls[f.name] = col.null_count
    if label is not None:
        out.label = Moments.of(label.astype(np.float64))
        if learned_log1p:  # the rule quarantined y < 0 before this
            out.learned = Moments.of(np.log1p(label.astype(np.float64)))
    return out


def build_spec(stats: PartialStats, cfg: RaylineConfig, constraints: dict | None = None) -> FeatureSpec:
    feats, rows = cfg.data.features, max(stats.rows, 1)
    numeric = []
    for f in feats.numeric:
        m = stats.numeric.get(f.name, Moments())
        edges, shares = stats.samples.get(f.name, Sample()).bins()
        numeric.append(NumericSpec(
            name=f.name, mean=m.mean if m.n else 0.0, std=m.std if m.std > 0 else 1.0,
            impute=m.mean if m.n else 0.0, min=m.min if m.n else None, max=m.max if m.n else None,
            # Only for features with missing training values (sklearn's "missing-only"): an
            # indicator that is always 0 in training never learns, yet would fire at serving time.
            null_fraction=m.nulls / rows, missing_indicator=f.missing_indicator and m.nulls > 0, clip=f.clip,
            bins=edges, bin_shares=shares,
        ))
    categorical = []
    for f in feats.categorical:
        counts = stats.categorical.get(f.name, Counter())
        # Most frequent first; ties broken by value so the vocabulary is deterministic.
        kept = sorted(((v, c) for v, c in counts.items() if c >= f.min_frequency), key=lambda vc: (-vc[1], vc[0]))
        if f.max_size is not None:
            kept = kept[: f.max_size]
        kept_total = sum(c for _, c in kept)
        categorical.append(CategoricalSpec(
            name=f.name, vocabulary=[v for v, _ in kept], frequencies=[c / rows for _, c in kept],
            oov_fraction=(sum(counts.values()) - kept_total) / rows,
            null_fraction=stats.cat_nulls.get(f.name, 0) / rows,
        ))
    time = [TimeSpec(name=t.name, parts=list(t.parts), timezone=t.timezone) for t in feats.time]
    lab = cfg.data.label
    label = LabelSpec(
        column=lab.column, task=cfg.task, positive_if=lab.positive_if, classes=lab.classes,
        train_mean=stats.label.mean if stats.label.n else None,
        train_std=stats.label.std if stats.label.n else None,
        # A regression target in the thousands and an output layer near 0 make MSE training
        # fail (measured: test R2 -0.96); the network learns the standardized target instead.
        standardized=cfg.task == "regression",
        transform=lab.transform,
        learned_mean=stats.learned.mean if stats.learned.n else None,
        learned_std=stats.learned.std if stats.learned.n else None,
    )
    return FeatureSpec(numeric=numeric, categorical=categorical, time=time, label=label,
                       passthrough=list(cfg.data.passthrough), constraints=constraints or {}, train_rows=stats.rows)

"""The evaluation stage: a loaded model on a held-out split -> metrics, slices, curves."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from rayline.model.metrics import calibration, primary_metric, roc_curve, task_metrics, trivial_metrics
from rayline.config import ThresholdConfig
from rayline.evaluate.threshold import ThresholdChoice, choose, sweep
from rayline.features.spec import MODEL_COLUMNS, Y, ModelInputs, model_inputs_from_table
from rayline.model.artifact import LoadedModel
from rayline.model.explain import Explanations, concat


@dataclass
class Evaluation:
    split: str
    metrics: dict
    slices: dict[str, list[dict]] = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    metric: str = ""
    explanations: dict = field(default_factory=dict)  # mean |contribution| per field, overall and per slice

    @property
    def value(self) -> float:
        return self.metrics[self.metric]

    def to_json(self) -> dict:
        return {"split": self.split, "metric": self.metric, "metrics": self.metrics, "slices": self.slices,
                "curves": self.curves, "explanations": self.explanations}


def predict_split(model: LoadedModel, uri: str, columns: list[str], explain_rows: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, pa.Table, "Explanations | None"]:
    """Stream a model-ready split through the model; returns (y, predictions, the extra columns,
    explanations of the first `explain_rows` rows, if any)."""
    ds = pads.dataset(uri, format="parquet", partitioning=None)
    wanted = MODEL_COLUMNS + [c for c in columns if c in ds.schema.names]
    ys, ps, extras, explained, left = [], [], [], [], explain_rows
    for batch in ds.to_batches(columns=wanted, batch_size=65_536):
        t = pa.Table.from_batches([batch])
        num, cat = model_inputs_from_table(t)
        ps.append(model.predict_inputs(ModelInputs(num=num, cat=cat)))
        ys.append(t.column(Y).to_numpy())
        extras.append(t.select([c for c in wanted[3:]]))
        if left > 0:
            explained.append(model.explain(ModelInputs(num=num[:left], cat=cat[:left])))
            left -= len(num[:left])
    if not ys:
        return np.zeros(0), np.zeros(0), pa.table({}), None
    return np.concatenate(ys), np.concatenate(ps), pa.concat_tables(extras), concat(explained) if explained else None


def evaluate_model(model: LoadedModel, split_uri: str, *, split: str = "test", slice_columns: list[str] | None = None,
                   min_slice_rows: int = 100, explain_rows: int = 0) -> Evaluation:
    """Metrics at the model's own decision threshold (saved with it); with `explain_rows`, the
    global picture of the explanations over that many rows (mean |contribution| per field,
    overall and per slice)."""
    task, threshold = model.spec.label.task, model.config.threshold
    slice_columns = slice_columns or []
    y, p, extra, explained = predict_split(model, split_uri, slice_columns, explain_rows)
    metric, _ = primary_metric(task)
    ev = Evaluation(split=split, metrics={**task_metrics(task, y, p, threshold),
                                          **trivial_metrics(task, y, model.spec.label.train_mean)}, metric=metric)
    for col in slice_columns:
        if col not in extra.column_names:
            continue
        values = pc.cast(extra.column(col), pa.string()).to_numpy(zero_copy_only=False)
        rows = []
        for v in sorted(set(values.tolist()), key=str):
            m = values == v
            if m.sum() < min_slice_rows:
                continue
            rows.append({"value": v, **task_metrics(task, y[m], p[m], threshold)})
        ev.slices[col] = rows
    if explained is not None and len(explained):
        ev.explanations = {"rows": len(explained), "units": explained.units, "mean_abs": explained.mean_abs(),
                           "slices": explanation_slices(explained, extra.slice(0, len(explained)), slice_columns,
                                                        min_slice_rows)}
    if task == "binary" and len(y):
        fpr, tpr = roc_curve(y, p)
        _, bins = calibration(y, p)
        ev.curves = {"roc": {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist()}, "calibration": bins,
                     "pr": pr_curve(y, p)}
        pred, yb = p >= threshold, y.astype(bool)
        ev.metrics["confusion"] = {"tp": int((pred & yb).sum()), "fp": int((pred & ~yb).sum()),
                                   "fn": int((~pred & yb).sum()), "tn": int((~pred & ~yb).sum())}
    return ev


def explanation_slices(ex: "Explanations", extra: pa.Table, columns: list[str], min_rows: int) -> dict:
    """Per slice value: its fields by mean |contribution| (the top five)."""
    out: dict = {}
    for col in columns:
        if col not in extra.column_names:
            continue
        values = pc.cast(extra.column(col), pa.string()).to_numpy(zero_copy_only=False)
        per = {}
        for v in sorted(set(values.tolist()), key=str):
            m = values == v
            if m.sum() >= min_rows:
                mean = np.abs(ex.contributions[m]).mean(axis=0)
                top = np.argsort(-mean)[:5]
                per[str(v)] = {ex.fields[i]: float(mean[i]) for i in top}
        out[col] = per
    return out


def pr_curve(y: np.ndarray, p: np.ndarray, points: int = 200) -> dict:
    """Precision and recall at up to `points` thresholds (for the report's plot)."""
    thr, tp, fp, pos = sweep(y, p)
    keep = np.unique(np.linspace(0, len(thr) - 1, min(points, len(thr))).astype(int))
    precision = tp[keep] / np.maximum(tp[keep] + fp[keep], 1)
    return {"threshold": thr[keep].round(5).tolist(), "precision": precision.round(5).tolist(),
            "recall": (tp[keep] / max(pos, 1)).round(5).tolist()}


def choose_threshold(model: LoadedModel, valid_uri: str, cfg: ThresholdConfig) -> ThresholdChoice:
    """The binary decision threshold for `cfg`'s objective, chosen on the validation split."""
    y, p, _, _ = predict_split(model, valid_uri, [])
    return choose(y, p, cfg, model.config.threshold, split="valid")

"""The evaluation stage: a loaded model on a held-out split -> metrics, slices, curves."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from rayline.model.metrics import calibration, primary_metric, roc_curve, task_metrics, trivial_metrics
from rayline.features.spec import MODEL_COLUMNS, Y, ModelInputs, model_inputs_from_table
from rayline.model.artifact import LoadedModel


@dataclass
class Evaluation:
    split: str
    metrics: dict
    slices: dict[str, list[dict]] = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    metric: str = ""

    @property
    def value(self) -> float:
        return self.metrics[self.metric]

    def to_json(self) -> dict:
        return {"split": self.split, "metric": self.metric, "metrics": self.metrics, "slices": self.slices,
                "curves": self.curves}


def predict_split(model: LoadedModel, uri: str, columns: list[str]) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    """Stream a model-ready split through the model; returns (y, predictions, the extra columns)."""
    ds = pads.dataset(uri, format="parquet", partitioning=None)
    wanted = MODEL_COLUMNS + [c for c in columns if c in ds.schema.names]
    ys, ps, extras = [], [], []
    for batch in ds.to_batches(columns=wanted, batch_size=65_536):
        t = pa.Table.from_batches([batch])
        num, cat = model_inputs_from_table(t)
        ps.append(model.predict_inputs(ModelInputs(num=num, cat=cat)))
        ys.append(t.column(Y).to_numpy())
        extras.append(t.select([c for c in wanted[3:]]))
    if not ys:
        return np.zeros(0), np.zeros(0), pa.table({})
    return np.concatenate(ys), np.concatenate(ps), pa.concat_tables(extras)


def evaluate_model(model: LoadedModel, split_uri: str, *, split: str = "test", slice_columns: list[str] | None = None,
                   min_slice_rows: int = 100) -> Evaluation:
    """Metrics at the model's own decision threshold (`train.model.threshold`, saved with it)."""
    task, threshold = model.spec.label.task, model.config.threshold
    slice_columns = slice_columns or []
    y, p, extra = predict_split(model, split_uri, slice_columns)
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
    if task == "binary" and len(y):
        fpr, tpr = roc_curve(y, p)
        _, bins = calibration(y, p)
        ev.curves = {"roc": {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist()}, "calibration": bins}
    return ev

"""Batch inference's explanation columns are the endpoint's explanations, row for row."""

import io

import numpy as np
import pyarrow as pa
import pytest
import torch

from rayline.batch.predict import KIND, EXPLAIN_PREFIX, Predictor, ScoringPlan
from rayline.config import ModelConfig
from rayline.features.spec import CategoricalSpec, Constraint, FeatureSpec, LabelSpec, NumericSpec, TimeSpec
from rayline.model.artifact import LoadedModel
from rayline.model.network import TabularNet
from rayline.serve.batching import predict_items


def test_batch_explanation_columns_equal_the_online_explanations():
    spec = FeatureSpec(
        numeric=[NumericSpec(name="distance", mean=500, std=100, impute=500, min=10, max=4000, null_fraction=0.1,
                             missing_indicator=True)],
        categorical=[CategoricalSpec(name="dest", vocabulary=["IAH", "ORD"], frequencies=[0.5, 0.5])],
        time=[TimeSpec(name="ts", parts=["hour"])], label=LabelSpec(column="y", task="binary"),
        constraints={"distance": Constraint(min=0, max=6000)})
    cfg = ModelConfig(hidden=[8])
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(TabularNet(spec, cfg).state_dict(), buf)
    plan = ScoringPlan(spec=spec, model=buf.getvalue(), model_config=cfg, version=3, keep=("id",), explain=True)
    rows = [{"id": i, "distance": float(100 + 37 * i) if i % 5 else None, "dest": ["IAH", "ORD", "ZZZ"][i % 3],
             "ts": f"2013-06-01T{i % 24:02d}:00:00Z"} for i in range(40)]
    out = Predictor(plan)(pa.Table.from_pylist(rows))
    out = out.filter(pa.compute.equal(out.column(KIND), "ok")).to_pylist()
    model = LoadedModel.from_parts(plan.model, spec, cfg)
    online = predict_items([(3, model, [{k: v for k, v in r.items() if k != "id"} for r in rows], True, True)])[0][0]
    assert len(out) == len(online) == 40
    for row in out:
        e = online[row["id"]]["explanation"]
        assert row["explain_base"] == pytest.approx(e["base"], abs=1e-6)
        assert row["explain_margin"] == pytest.approx(e["margin"], abs=1e-6) and row["explain_units"] == "log-odds"
        assert {k[len(EXPLAIN_PREFIX):]: v for k, v in row.items() if k.startswith(EXPLAIN_PREFIX)} == \
            pytest.approx(e["contributions"], abs=1e-6)
        assert row["prediction"] == pytest.approx(online[row["id"]]["probability"], abs=1e-6)
    assert np.isfinite([r["explain_margin"] for r in out]).all()

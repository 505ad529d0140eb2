"""Batch inference's explanation columns are the endpoint's explanations, row for row (1e-6),
for both families and the three tasks."""

import numpy as np
import pyarrow as pa
import pytest

from rayline.batch.predict import EXPLAIN_PREFIX, Predictor, ScoringPlan
from rayline.model.artifact import weights_to_bytes
from rayline.serve.batching import predict_items
from tests.code.test_explain import TASKS, _booster_model, _network_model, _records


@pytest.mark.parametrize("family", ["xgboost", "mlp"])
@pytest.mark.parametrize("task", TASKS)
def test_batch_explanation_columns_equal_the_online_explanations(family, task):
    recs, s = _records(400)
    model, _ = (_booster_model if family == "xgboost" else _network_model)(task, recs, s)
    blob = bytes(model.booster.save_raw("ubj")) if model.booster is not None else weights_to_bytes(model.net)
    plan = ScoringPlan(spec=model.spec, model=blob, model_config=model.config, version=3, keep=("id",), explain=True)
    rows = [{"id": i, **r} for i, r in enumerate(recs[:60])]
    out = Predictor(plan).predict(pa.Table.from_pylist(rows)).predictions.to_pylist()
    online = predict_items([(3, model, recs[:60], True, True)])[0][0]
    assert len(out) == len(online) == 60
    for row in out:
        e = online[row["id"]]["explanation"]
        assert row["explain_base"] == pytest.approx(e["base"], abs=1e-6)
        assert row["explain_margin"] == pytest.approx(e["margin"], abs=1e-6) and row["explain_units"] == e["units"]
        assert {k[len(EXPLAIN_PREFIX):]: v for k, v in row.items() if k.startswith(EXPLAIN_PREFIX)} == \
            pytest.approx(e["contributions"], abs=1e-6)
        if task == "multiclass":
            assert row["explain_class"] == e["class"] == online[row["id"]]["label"]
    assert np.isfinite([r["explain_margin"] for r in out]).all()

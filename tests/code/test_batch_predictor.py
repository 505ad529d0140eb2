"""The batch predictor's per-batch work (contract, transform, forward pass, quarantine), without
a cluster: what each Ray Data actor does to one Arrow batch."""

import io

import numpy as np
import pytest
import pyarrow as pa
import torch

from rayline.batch.predict import Predictor, ScoringPlan
from rayline.config import ModelConfig
from rayline.data.sources import PATH_COLUMN
from rayline.features.contract import QUARANTINE_SCHEMA
from rayline.features.spec import CategoricalSpec, Constraint, FeatureSpec, LabelSpec, NumericSpec, TimeSpec
from rayline.model.network import TabularNet


def _predictor(task="binary", classes=None, threshold=0.5):
    spec = FeatureSpec(
        numeric=[NumericSpec(name="distance", mean=500, std=100, impute=500, min=10, max=4000, null_fraction=0,
                             missing_indicator=True)],
        categorical=[CategoricalSpec(name="dest", vocabulary=["IAH", "ORD"], frequencies=[0.5, 0.5])],
        time=[TimeSpec(name="ts", parts=["hour"])],
        label=LabelSpec(column="y", task=task, classes=classes),
        constraints={"distance": Constraint(required=True, min=0, max=6000)})
    cfg = ModelConfig(hidden=[8], threshold=threshold)
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(TabularNet(spec, cfg).state_dict(), buf)
    return Predictor(ScoringPlan(spec=spec, model=buf.getvalue(), model_config=cfg, version=7, keep=("id",)))


def _batch():
    return pa.table({"id": [1, 2, 3, 4, 5],
                     "distance": [100.0, -5.0, None, 2500.0, float("inf")],
                     "dest": ["IAH", "ORD", "IAH", "ZZZ", "ORD"],
                     "ts": ["2013-01-01T10:00:00Z", "2013-01-01T11:00:00Z", None, "nope", "2013-01-02T00:00:00Z"],
                     PATH_COLUMN: ["f.parquet"] * 5})


def test_rows_out_plus_quarantined_is_rows_in_with_reasons_and_keys():
    ok, q = _predictor().predict(_batch())
    assert ok.num_rows + q.num_rows == 5
    assert ok.column("id").to_pylist() == [1]
    p = np.array(ok.column("prediction").to_pylist())
    assert np.all((p > 0) & (p < 1)) and ok.column("model_version").to_pylist() == [7]
    assert sorted(q.column("rule").to_pylist()) == ["not_null", "range", "type", "type"]
    assert set(q.column("column").to_pylist()) == {"distance", "ts"}
    assert set(q.column("source_file").to_pylist()) == {"f.parquet"}


def test_predictions_do_not_depend_on_batch_boundaries():
    pred = _predictor()
    t = pa.table({"id": list(range(40)), "distance": [float(100 + 50 * i) for i in range(40)],
                  "dest": ["IAH", "ORD", "XYZ", None] * 10, "ts": [f"2013-01-01T{i % 24:02d}:00:00Z" for i in range(40)],
                  PATH_COLUMN: ["f"] * 40})
    whole = pred.predict(t).predictions.column("prediction").to_pylist()
    parts = sum((pred.predict(t.slice(i, 7)).predictions.column("prediction").to_pylist() for i in range(0, 40, 7)), [])
    np.testing.assert_allclose(whole, parts, rtol=1e-6)


def test_multiclass_predictions_are_probability_vectors():
    ok = _predictor("multiclass", ["a", "b", "c"]).predict(_batch()).predictions
    probs = np.array(ok.column("prediction").to_pylist())
    assert probs.shape == (1, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert ok.column("label").to_pylist() == [["a", "b", "c"][int(probs[0].argmax())]]  # the endpoint's label


def test_binary_labels_use_the_threshold_saved_with_the_model():
    t = pa.table({"id": list(range(30)), "distance": [float(100 + 100 * i) for i in range(30)],
                  "dest": ["IAH", "ORD"] * 15, "ts": ["2013-01-01T10:00:00Z"] * 30, PATH_COLUMN: ["f"] * 30})
    for threshold in (0.2, 0.5, 0.8):
        out = _predictor(threshold=threshold).predict(t).predictions
        p = np.array(out.column("prediction").to_pylist())
        assert out.column("label").to_pylist() == (p >= threshold).astype(int).tolist()


def test_the_split_stages_give_what_one_actor_gives():
    from rayline.batch.predict import Prepare, Score, split_stages

    one = _predictor()
    plan = ScoringPlan(spec=one.prepare.spec, model=_model_bytes(one), model_config=one.score.model.config, version=7,
                       keep=("id",))
    prepared = Prepare(plan)(_batch())
    assert {"x_num", "x_cat"} <= set(prepared.column_names)        # model inputs travel between the stages
    scored = Score(plan).predict(prepared)
    assert scored.predictions.to_pylist() == one.predict(_batch()).predictions.to_pylist()
    assert scored.quarantine.to_pylist() == one.predict(_batch()).quarantine.to_pylist()
    assert scored.quarantine.num_rows == 4 and scored.quarantine.schema == QUARANTINE_SCHEMA
    assert split_stages("auto", 1.0) and not split_stages("auto", 0.0) and split_stages(True, 0.0)


def _model_bytes(p) -> bytes:
    buf = io.BytesIO()
    torch.save(p.score.model.net.state_dict(), buf)
    return buf.getvalue()


def test_a_json_record_that_could_not_be_read_is_quarantined_with_where_and_why():
    from rayline.data.json_records import read_tables

    text = b'[{"id": 1, "distance": 100, "dest": "IAH", "ts": "2013-01-01T10:00:00.5Z"}, {"id": 2, "distance": tru}]'
    batch = next(read_tables(io.BytesIO(text)))
    ok, q = _predictor().predict(batch)
    assert ok.column("id").to_pylist() == ["1"] and ok.column("prediction")[0].as_py() is not None
    assert q.column("rule").to_pylist() == ["json"] and q.column("value")[0].as_py().startswith("index 1: not valid JSON")


def test_a_key_column_named_like_a_quarantine_column_keeps_both():
    """Key columns and quarantine columns never share a table: a key called `value` (or `row`,
    `rule`...) once failed every batch holding a refused row (int64 vs the quarantine's text)."""
    one = _predictor()
    plan = ScoringPlan(spec=one.prepare.spec, model=_model_bytes(one), model_config=one.score.model.config, version=7,
                       keep=("value",))
    batch = _batch().rename_columns(["value" if c == "id" else c for c in _batch().column_names])
    ok, q = Predictor(plan).predict(batch)
    assert ok.column("value").to_pylist() == [1] and q.num_rows == 4 and q.schema == QUARANTINE_SCHEMA


def test_an_actor_scores_a_merged_block_batch_rows_at_a_time_and_writes_it_once(tmp_path):
    # Ray Data merges a read's blocks up to 128 MiB: the actor itself keeps to batch.batch_rows
    import dataclasses

    import pyarrow.parquet as pq

    from rayline.batch.output import StagedParts
    from rayline.storage import Storage

    one = _predictor()
    plan = dataclasses.replace(_plan_of(one), output=StagedParts(Storage(str(tmp_path)), "staging"), batch_rows=2)
    sliced, seen = Predictor(plan), []
    inner = sliced.predict
    sliced.predict = lambda b: seen.append(b.num_rows) or inner(b)
    report = sliced(_batch()).to_pylist()
    assert seen == [2, 2, 1]
    assert sorted(r["rows"] for r in report) == [1, 4] and len(report) == 2  # one file each, as unsliced
    written = {r["part"].split("/")[0]: pq.read_table(tmp_path / "staging" / r["part"]) for r in report}
    want = one.predict(_batch())
    assert written["predictions"].column("prediction").to_pylist() == want.predictions.column("prediction").to_pylist()
    assert sorted(written["quarantine"].column("rule").to_pylist()) == ["not_null", "range", "type", "type"]
    for batch_rows in (5, None):  # a block within batch_rows, or no batch_rows: the block whole
        seen.clear()
        whole = Predictor(dataclasses.replace(plan, batch_rows=batch_rows))
        whole.predict = lambda b: seen.append(b.num_rows) or inner(b)
        whole(_batch())
        assert seen == [5]


def _plan_of(p: Predictor) -> ScoringPlan:
    return ScoringPlan(spec=p.prepare.spec, model=_model_bytes(p), model_config=p.score.model.config, version=7, keep=("id",))


def test_the_input_format_is_guessed_from_the_name_or_the_files_in_a_directory(tmp_path):
    """`rayline predict --input dir/` of CSV files was read as Parquet ("holds no parquet files")."""
    from rayline.batch.predict import _guess_format
    from rayline.errors import InputError

    assert [_guess_format(n) for n in ("a.csv", "a.TSV", "a.jsonl.gz", "a.parquet", "s3://b/k.csv")] == \
        ["csv", "csv", "json", "parquet", "csv"]
    d = tmp_path / "in"
    (d / "month=1").mkdir(parents=True)
    (d / "month=1" / "part.csv").write_text("a\n1\n")
    (d / "_SUCCESS").write_text("")
    assert _guess_format(str(d)) == "csv"
    (d / "more.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="holds csv and parquet files: pass --format"):
        _guess_format(str(d))
    assert _guess_format(str(tmp_path / "empty_or_absent")) == "parquet"

"""The replica's model lifecycle and request batching, without Serve: many requests in one
forward pass with each judged alone, rollouts that swap a warmed model, pinned and unknown versions."""

import asyncio
import io

import numpy as np
import pytest
import torch

from rayline.config import ModelConfig
from rayline.features.spec import CategoricalSpec, Constraint, FeatureSpec, LabelSpec, NumericSpec
from rayline.model.artifact import LoadedModel
from rayline.model.network import TabularNet
from rayline.serve.batching import format_predictions, predict_items, run_counts
from rayline.serve.lifecycle import ModelHolder
from rayline.serve.monitor import DriftTracker
from rayline.serve.schema import RequestError


def _model(seed=0, threshold=0.5) -> LoadedModel:
    spec = FeatureSpec(
        numeric=[NumericSpec(name="distance", mean=500, std=100, impute=500, min=10, max=4000, null_fraction=0,
                             missing_indicator=False)],
        categorical=[CategoricalSpec(name="dest", vocabulary=["IAH", "ORD"], frequencies=[0.5, 0.5])],
        time=[], label=LabelSpec(column="y", task="binary"),
        constraints={"distance": Constraint(required=True, min=0, max=6000)})
    cfg = ModelConfig(hidden=[8], threshold=threshold)
    torch.manual_seed(seed)
    buf = io.BytesIO()
    torch.save(TabularNet(spec, cfg).state_dict(), buf)
    return LoadedModel.from_bytes(buf.getvalue(), spec.to_json(), cfg.model_dump_json())


class _Metrics:
    def __init__(self):
        self.calls = []

    def predicted(self, version, preds, outside, missed=None):
        self.calls.append((version, len(preds), list(outside)))


def test_one_bad_request_in_a_batch_fails_alone_and_the_others_get_what_they_would_alone():
    m = _model()
    good = [{"distance": 300.0, "dest": "IAH"}, {"distance": 9000.0, "dest": "ORD"}]  # 9000: beyond the contract max
    items = [(1, m, [good[0]], False, False), (1, m, [good[1]], False, False),
             (1, m, [{"distance": 700, "dest": "XYZ"}], True, False)]
    metrics = _Metrics()
    drift = DriftTracker(m.spec)
    out = predict_items(items, drift, metrics)
    assert isinstance(out[1], RequestError) and out[1].status == 422 and "distance" in out[1].message
    alone = [predict_items([it])[0] for it in (items[0], items[2])]
    for got, want in zip((out[0], out[2]), alone):                 # the same answer batched or alone
        assert got[1] == want[1] and [r["label"] for r in got[0]] == [r["label"] for r in want[0]]
        assert [r["probability"] for r in got[0]] == pytest.approx([r["probability"] for r in want[0]], abs=1e-6)
    assert out[0][1] == 1 and set(out[0][0][0]) == {"probability", "label"}
    assert metrics.calls == [(1, 2, [])] and drift.n == 2          # one forward pass for the two good ones


def test_counts_can_wait_until_the_answers_are_given_and_a_failing_count_never_fails_an_answer(caplog):
    m = _model()
    items = [(1, m, [{"distance": 300.0, "dest": "IAH"}], False, False), (1, m, [{"distance": 9000.0}], False, False)]
    metrics, drift, later = _Metrics(), DriftTracker(m.spec), []
    out = predict_items(items, drift, metrics, later)
    assert out[0][1] == 1 and isinstance(out[1], RequestError)
    assert metrics.calls == [] and drift.n == 0 and len(later) == 1   # answered, nothing counted yet
    run_counts(later)
    assert metrics.calls == [(1, 1, [])] and drift.n == 1

    class Broken(_Metrics):
        def predicted(self, *a, **k):
            raise RuntimeError("metrics backend down")
    assert predict_items(items[:1], drift, Broken())[0][1] == 1       # counted at once: logged, not raised
    assert "counting_failed" in caplog.text and "metrics backend down" in caplog.text


def test_requests_for_two_versions_are_grouped_per_version():
    a, b = _model(0), _model(1)
    rec = {"distance": 300.0, "dest": "IAH"}
    out = predict_items([(1, a, [rec], False, False), (2, b, [rec], False, False), (1, a, [rec], False, False)])
    assert [o[1] for o in out] == [1, 2, 1] and out[0] == out[2] and out[0][0] != out[1][0]


def test_only_the_requests_that_ask_get_explanations_and_they_equal_alone():
    m = _model()
    recs = [{"distance": 300.0, "dest": "IAH"}, {"distance": 1200.0, "dest": "ORD"}]
    out = predict_items([(1, m, recs, True, True), (1, m, [recs[1]], False, False), (1, m, [recs[0]], False, True)])
    assert all("explanation" in r for r in out[0][0]) and "explanation" not in out[1][0][0]
    alone = predict_items([(1, m, [recs[0]], False, True)])[0][0][0]["explanation"]
    got = out[2][0][0]["explanation"]
    assert got["contributions"] == pytest.approx(alone["contributions"], abs=1e-6)
    assert got["base"] + sum(got["contributions"].values()) == pytest.approx(got["margin"], abs=1e-4)
    assert list(out[0][0][1]["explanation"]["contributions"]) == m.spec.input_columns    # the record's own fields


def test_labels_follow_the_threshold_saved_with_the_model():
    preds = np.array([0.1, 0.35, 0.6], np.float32)
    assert [r["label"] for r in format_predictions(_model(threshold=0.3), preds)] == [0, 1, 1]
    assert [r["label"] for r in format_predictions(_model(threshold=0.5), preds)] == [0, 0, 1]


def _holder(models: dict[int, LoadedModel], alias: dict, max_versions: int = 3):
    loads = []

    def loader(ref):
        v = int(ref)
        loads.append(v)
        if v not in models:
            raise FileNotFoundError(f"no version {v}")
        return v, models[v]
    return ModelHolder(loader, lambda ref: alias[ref] if ref in alias else int(ref), lambda v: {"v": v},
                       max_versions=max_versions), loads


def test_a_rollout_loads_the_new_version_once_and_swaps_it_in():
    models = {1: _model(0), 2: _model(1)}
    alias = {"production": 1}
    h, loads = _holder(models, alias)
    h.switch("production")
    first_drift = h.drift
    h.switch("production")                                         # unchanged: no reload
    assert h.current[0] == 1 and loads == [1] and h.current_info == {"v": 1}
    alias["production"] = 2
    h.switch("production")
    assert h.current == (2, models[2]) and loads == [1, 2]
    assert h.drift is first_drift and h.drift.spec is models[2].spec  # same statistics: counts carry on


def test_pinned_versions_share_the_bounded_lru_and_unknown_ones_are_remembered():
    models = {v: _model(v) for v in (1, 2, 3, 4)}
    h, loads = _holder(models, {"production": 1})
    h.switch("production")

    async def run():
        assert await h.version(1) is models[1]                     # the current one: no load
        for v in (2, 3, 4):
            assert await h.version(v) is models[v]
        assert list(h.pinned) == [3, 4]
        for _ in range(3):
            with pytest.raises(RequestError, match="model version 99 does not exist") as e:
                await h.version(99)
            assert e.value.status == 404
    asyncio.run(run())
    assert loads.count(99) == 1                                    # storage asked once, then remembered


def test_versions_with_the_same_features_share_one_check_and_transform_and_keep_their_own_answers():
    a, b = _model(0), _model(1)                                     # the same spec, other weights
    assert a.features_key == b.features_key
    rec = {"distance": 300.0, "dest": "IAH"}
    metrics = _Metrics()
    out = predict_items([(1, a, [rec], False, False), (2, b, [rec, rec], True, False), (1, a, [rec], False, False)],
                        DriftTracker(a.spec), metrics)
    assert [o[1] for o in out] == [1, 2, 1]
    assert out[1][0][0]["probability"] == pytest.approx(predict_items([(2, b, [rec], False, False)])[0][0][0]["probability"])
    assert out[0][0][0]["probability"] != out[1][0][0]["probability"]
    assert [(v, n) for v, n, _ in metrics.calls] == [(1, 2), (2, 2)]  # one forward pass per version
    assert len(out[1][2]) == 2 and out[1][2].num.shape[0] == 2       # the request's own model inputs

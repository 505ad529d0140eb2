"""Explanations: base + contributions = the model's margin (both families, three tasks), in raw
field names, and a planted signal is the field that explains most."""

import numpy as np
import pytest
import torch
import xgboost as xgb

from rayline.config import ModelConfig, XGBoostConfig
from rayline.features.contract import Contract
from rayline.features.spec import CategoricalSpec, FeatureSpec, LabelSpec, NumericSpec, TimeSpec
from rayline.model import boosted
from rayline.model.artifact import LoadedModel
from rayline.model.explain import input_fields
from rayline.model.network import TabularNet, loss_fn
from rayline.model.outputs import training_target

TASKS = ["binary", "regression", "multiclass"]


def _spec(task: str) -> FeatureSpec:
    return FeatureSpec(
        numeric=[NumericSpec(name="signal", mean=0, std=1, impute=0, min=None, max=None, null_fraction=0.1,
                             missing_indicator=True),
                 NumericSpec(name="noise", mean=0, std=1, impute=0, min=None, max=None, null_fraction=0,
                             missing_indicator=False)],
        categorical=[CategoricalSpec(name="kind", vocabulary=["x", "y", "z"], frequencies=[0.5, 0.3, 0.2])],
        time=[TimeSpec(name="when", parts=["hour", "dow", "us_holiday"])],
        label=LabelSpec(column="y", task=task, classes=["lo", "mid", "hi"] if task == "multiclass" else None,
                        train_mean={"binary": 0.4, "regression": 0.0}.get(task),
                        train_std=3.0 if task == "regression" else None, standardized=task == "regression"))


def _records(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    recs = [{"signal": float(s) if rng.random() > 0.05 else None, "noise": float(rng.normal()),
             "kind": str(rng.choice(["x", "y", "z", "w"])),
             "when": f"2013-0{rng.integers(1, 9)}-1{rng.integers(0, 9)}T{rng.integers(10, 23)}:00:00Z"} for s in signal]
    s = np.array([r["signal"] if r["signal"] is not None else 0.0 for r in recs])
    return recs, s


def _target(task, s):
    if task == "binary":
        return (s > 0.2).astype(np.float32)
    if task == "regression":
        return (3 * s).astype(np.float32)
    return np.digitize(s, [-0.5, 0.5]).astype(np.float32)


def _booster_model(task, recs, s):
    spec = _spec(task)
    x = spec.transform(Contract(spec).check_records(recs)[0])
    y = training_target(spec.label, torch.from_numpy(_target(task, s))).numpy()
    bst = xgb.train(boosted.params(spec, XGBoostConfig(), "cpu", 0), boosted.dmatrix(spec, x.num, x.cat, y), 40)
    return LoadedModel(None, spec, ModelConfig(family="xgboost"), torch.device("cpu"), bst), x


def _network_model(task, recs, s, steps=300):
    spec = _spec(task)
    x = spec.transform(Contract(spec).check_records(recs)[0])
    torch.manual_seed(0)
    mcfg = ModelConfig(hidden=[32, 16], norm="none", dropout=0.0)
    net = TabularNet(spec, mcfg)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    num, cat = torch.from_numpy(x.num), torch.from_numpy(x.cat)
    y = training_target(spec.label, torch.from_numpy(_target(task, s)))
    y = y.long() if task == "multiclass" else y
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(task)(net(num, cat), y).backward()
        opt.step()
    return LoadedModel(net.eval(), spec, mcfg, torch.device("cpu")), x


def _model_margin(model, x):
    """The margin the model itself computes (independently of the explanation code)."""
    if model.booster is not None:
        m = boosted.margins(model.booster, x.num, x.cat).astype(np.float64)
    else:
        with torch.no_grad():
            m = model.net(torch.from_numpy(x.num), torch.from_numpy(x.cat)).double().numpy()
    if m.ndim == 2:
        m = m.max(axis=1)
    scale = model.spec.label.target_scale()
    return m * scale[1] + scale[0] if scale else m


@pytest.mark.parametrize("family", ["xgboost", "mlp"])
@pytest.mark.parametrize("task", TASKS)
def test_base_plus_contributions_is_the_margin_and_the_planted_field_explains_most(family, task):
    recs, s = _records()
    model, x = (_booster_model if family == "xgboost" else _network_model)(task, recs, s)
    e = model.explain(x)
    assert e.fields == ["signal", "noise", "kind", "when"]                # the client's names, never x_num[3]
    np.testing.assert_allclose(e.base + e.contributions.sum(axis=1), e.margin, atol=1e-4)
    np.testing.assert_allclose(e.margin, _model_margin(model, x), atol=1e-4, rtol=1e-5)
    assert next(iter(e.mean_abs())) == "signal"                            # the planted signal
    if task == "multiclass":
        assert set(e.explained) <= {"lo", "mid", "hi"}
        preds = model.predict_inputs(x)
        assert e.explained == [model.spec.label.classes[k] for k in preds.argmax(axis=1)]
    if task == "regression":
        assert e.units == "target"
    rec = e.records(0, 1)[0]
    assert set(rec["contributions"]) == set(e.fields) and rec["units"] == e.units


def test_a_missing_value_and_its_flag_are_one_field():
    spec = _spec("binary")
    assert input_fields(spec) == ["signal", "signal", "noise"] + ["when"] * 5 + ["kind"]
    assert len(input_fields(spec)) == len(spec.numeric_inputs) + len(spec.categorical)


def test_integrated_gradients_converge_before_the_gap_is_spread():
    recs, s = _records(600)
    model, x = _network_model("binary", recs, s, steps=200)
    e = model.explain(x)
    assert np.abs(e.gap).max() < 1e-2 * max(np.abs(e.margin - e.base).max(), 1.0)


def test_approximate_attributions_add_up_too_and_agree_in_sign_with_treeshap():
    recs, s = _records(1500)
    model, x = _booster_model("binary", recs, s)
    exact, approx = model.explain(x), model.explain(x, "approx")
    np.testing.assert_allclose(approx.base + approx.contributions.sum(axis=1), approx.margin, atol=1e-4)
    np.testing.assert_allclose(approx.margin, exact.margin, atol=1e-4)
    j = exact.fields.index("signal")
    assert np.mean(np.sign(approx.contributions[:, j]) == np.sign(exact.contributions[:, j])) > 0.9

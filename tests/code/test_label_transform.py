"""label.transform: log1p: a positive skewed target is learned as log(1 + y), standardized, and
every prediction comes back in the target's units, finite (no cluster needed)."""

import numpy as np
import pytest
import torch

from rayline.config import config_from_dict
from rayline.data.plan import label_rule
from rayline.errors import ConfigError
from rayline.features.spec import LabelSpec
from rayline.model.outputs import from_raw, training_target
from rayline.train.boosted_loop import target, watched_metric
from tests.conftest import small_config


def _label(**kw) -> LabelSpec:
    return LabelSpec(column="price", task="regression", train_mean=900.0, train_std=2000.0, standardized=True,
                     transform="log1p", learned_mean=6.0, learned_std=1.5, **kw)


def test_log1p_round_trips_in_target_units():
    label = _label()
    y = torch.tensor([0.0, 1.0, 150.0, 12_000.0, 3e6])
    t = training_target(label, y)
    np.testing.assert_allclose(t.numpy(), (np.log1p(y.numpy()) - 6.0) / 1.5, rtol=1e-6)
    np.testing.assert_allclose(from_raw(label, t.numpy()), y.numpy(), rtol=1e-4)
    np.testing.assert_allclose(target(label, y.numpy()), t.numpy(), rtol=1e-6)   # the booster learns the same
    assert label.target_scale() == (6.0, 1.5)                                      # not the raw mean/std
    assert watched_metric(label, "rmse") == "rmsle"


def test_log1p_predictions_are_always_finite_and_non_negative_past_minus_one():
    out = from_raw(_label(), np.array([-1e6, 0.0, 1e6, np.inf], np.float32))
    assert np.isfinite(out).all() and (out >= -1).all()


def test_log1p_is_for_regression_and_quarantines_negative_targets(tmp_path):
    raw = small_config(tmp_path, tmp_path)
    raw["data"]["label"] = {"column": "delay", "positive_if": {">": 30}, "transform": "log1p"}
    with pytest.raises(ConfigError, match=r"data.label.transform='log1p' is for task regression"):
        config_from_dict(raw)
    raw["task"] = "regression"
    raw["data"]["label"] = {"column": "delay", "transform": "log1p"}
    rule = label_rule(config_from_dict(raw))
    assert rule.min == 0 and rule.nullable is False

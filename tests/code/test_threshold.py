"""The binary decision threshold, chosen on validation predictions for a declared objective."""

import numpy as np
import pytest

from rayline.config import ThresholdConfig
from rayline.errors import ConfigError
from rayline.evaluate.threshold import choose, sweep


def _data(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(float)           # a 20 % base rate, like late flights
    p = np.clip(0.2 + 0.25 * (y - 0.2) + rng.normal(0, 0.12, n), 0.001, 0.999)
    return y, p


def _brute(y, p, score):
    best = max(np.unique(p), key=lambda t: score((p >= t) & (y == 1), (p >= t) & (y == 0), (p < t) & (y == 1)))
    return best


def test_f1_is_the_best_f1_over_every_candidate():
    y, p = _data()
    c = choose(y, p, ThresholdConfig(), fixed=0.5)
    f1 = lambda tp, fp, fn: 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)  # noqa: E731
    assert c.threshold == pytest.approx(_brute(y, p, f1))
    assert c.threshold < 0.5 and c.recall > 0.5 and c.split == "valid"          # at 0.5 nearly nothing is positive
    pred = p >= 0.5
    assert (pred & (y == 1)).sum() / (y == 1).sum() < c.recall / 2


def test_precision_target_gives_the_best_recall_meeting_it_and_recall_target_the_best_precision():
    y, p = _data()
    c = choose(y, p, ThresholdConfig(objective="precision", target=0.6), fixed=0.5)
    assert c.precision >= 0.6
    meeting = [((p >= t) & (y == 1)).sum() / (y == 1).sum() for t in np.unique(p)
               if ((p >= t) & (y == 1)).sum() / (p >= t).sum() >= 0.6]
    assert c.recall == pytest.approx(max(meeting))                          # the best recall among those meeting it
    r = choose(y, p, ThresholdConfig(objective="recall", target=0.9), fixed=0.5)
    assert r.recall >= 0.9 and r.threshold < c.threshold
    y_flat = np.array([0, 1, 0, 1, 0, 1.0])
    none = choose(y_flat, np.full(6, 0.3), ThresholdConfig(objective="precision", target=0.9), fixed=0.5)
    assert none.threshold == 0.5 and "no threshold reaches precision 0.9" in none.note


def test_costs_move_the_threshold_and_fixed_keeps_it():
    y, p = _data()
    cheap_fn = choose(y, p, ThresholdConfig(objective="cost", cost_fp=5, cost_fn=1), fixed=0.5)
    dear_fn = choose(y, p, ThresholdConfig(objective="cost", cost_fp=1, cost_fn=5), fixed=0.5)
    assert dear_fn.threshold < cheap_fn.threshold
    cost = lambda tp, fp, fn: -(1 * fp.sum() + 5 * fn.sum())  # noqa: E731
    assert dear_fn.threshold == pytest.approx(_brute(y, p, cost))
    assert choose(y, p, ThresholdConfig(objective="fixed"), fixed=0.42).threshold == 0.42
    one_class = choose(np.zeros(10), np.linspace(0, 1, 10), ThresholdConfig(), fixed=0.5)
    assert one_class.threshold == 0.5 and "one class" in one_class.note


def test_sweep_counts_ties_once():
    thr, tp, fp, pos = sweep(np.array([1, 0, 1, 0]), np.array([0.9, 0.9, 0.5, 0.1]))
    assert thr.tolist() == [0.9, 0.5, 0.1] and tp.tolist() == [1, 2, 2] and fp.tolist() == [1, 1, 2] and pos == 2


def test_a_target_objective_needs_its_target():
    from rayline.config import config_from_dict
    from tests.conftest import small_config

    from pathlib import Path

    raw = small_config(Path("/tmp/d"), Path("/tmp/r"))
    raw["evaluate"] = {"threshold": {"objective": "precision"}}
    with pytest.raises(ConfigError, match=r"evaluate.threshold.*needs target"):
        config_from_dict(raw)

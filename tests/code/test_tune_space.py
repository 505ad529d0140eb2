"""Tuning search spaces and trial sizing (no cluster needed)."""

import pytest

from rayline.config import SearchDim, load_config
from rayline.errors import ConfigError
from rayline.tune.space import DEFAULT_SPACES, overrides, search_space, to_ray, trial_config
from rayline.tune.tuner import concurrency, sized_for_trials
from tests.conftest import FLIGHTS_CONFIG


def test_defaults_per_family_are_valid_config_keys():
    for family in ("xgboost", "mlp"):
        cfg = load_config(FLIGHTS_CONFIG, [f"train.model.family={family}"])
        assert set(search_space(cfg)) == set(DEFAULT_SPACES[family])


def test_a_sampled_point_is_a_validated_config():
    base = load_config(FLIGHTS_CONFIG)
    cfg = trial_config(base, {"train.model.xgboost.eta": 0.07, "train.model.xgboost.max_depth": 4})
    assert (cfg.train.model.xgboost.eta, cfg.train.model.xgboost.max_depth) == (0.07, 4)
    assert cfg.data is base.data and base.train.model.xgboost.eta != 0.07    # the rest as it was, base untouched
    assert trial_config(base, {}) is base
    assert overrides({"b.x": [1, 2], "a.y": 0.5}) == ["a.y=0.5", "b.x=[1, 2]"]
    with pytest.raises(ConfigError, match=r"train.model.xgboost.eta"):
        trial_config(base, {"train.model.xgboost.eta": -1})


def test_bad_spaces_name_the_key():
    with pytest.raises(ConfigError, match=r"tune.search_space: 'train.model.xgboost.etta' is not a config field"):
        search_space(load_config(FLIGHTS_CONFIG, ['tune.search_space={"train.model.xgboost.etta": {"uniform": [0.1, 0.2]}}']))
    with pytest.raises(ConfigError, match=r"tune.search_space.train.lr: a sampled value -1"):
        search_space(load_config(FLIGHTS_CONFIG, ['tune.search_space={"train.lr": {"uniform": [-1, 1]}}']))
    with pytest.raises(ConfigError, match="exactly one of"):
        load_config(FLIGHTS_CONFIG, ['tune.search_space={"train.lr": {"uniform": [0.1, 0.2], "choice": [1]}}'])
    with pytest.raises(ConfigError, match="lo < hi"):
        load_config(FLIGHTS_CONFIG, ['tune.search_space={"train.lr": {"loguniform": [0.2, 0.1]}}'])


def test_randint_includes_its_upper_bound():
    dist = to_ray({"k": SearchDim(randint=(2, 3))})["k"]
    assert {dist.sample() for _ in range(200)} == {2, 3}


@pytest.mark.parametrize("cpus,gpus,trials,expect", [(2, 0, 8, 1), (4, 0, 8, 3), (16, 0, 8, 8), (16, 0, 3, 3), (16, 4, 8, 2)])
def test_concurrent_trials_fit_the_cluster(cpus, gpus, trials, expect):
    # each trial: 2 workers x 0.5 CPU (+ the trial driver's sliver), one GPU per worker when there are GPUs
    cfg = load_config(FLIGHTS_CONFIG, [f"tune.trials={trials}", "train.num_workers=2", "train.cpus_per_worker=0.5"])
    assert concurrency(cfg, cpus, gpus) == expect


@pytest.mark.parametrize("cpus,gpus,trials,expect", [(2, 0, 8, 1), (4, 0, 8, 3), (16, 0, 8, 8), (16, 4, 8, 4)])
def test_auto_sizes_tune_one_worker_per_trial(cpus, gpus, trials, expect):
    # the default auto sizes: each trial one worker with one CPU (or GPU), so trials run side by side
    cfg = load_config(FLIGHTS_CONFIG, [f"tune.trials={trials}"])
    assert (cfg.train.num_workers, cfg.train.cpus_per_worker) == ("auto", "auto")
    assert (sized_for_trials(cfg).train.num_workers, sized_for_trials(cfg).train.cpus_per_worker) == (1, 1.0)
    assert concurrency(cfg, cpus, gpus) == expect

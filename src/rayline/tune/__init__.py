"""The tuning stage: Ray Tune over the training stage (either family), ASHA early stopping."""

from rayline.tune.tuner import TuneResult, run_tuning

__all__ = ["TuneResult", "run_tuning"]

"""The evaluation stage: metrics on a held-out split, per-slice metrics, and the report."""

from rayline.evaluate.evaluate import Evaluation, evaluate_model

__all__ = ["Evaluation", "evaluate_model"]

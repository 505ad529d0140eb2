"""Network definition and model loading, importable by serving without training code."""

from rayline.model.artifact import LoadedModel, weights_to_bytes
from rayline.model.network import TabularNet, loss_fn, predict_from_output

__all__ = ["TabularNet", "LoadedModel", "loss_fn", "predict_from_output", "weights_to_bytes"]

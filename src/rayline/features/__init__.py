"""Feature contract shared by training, serving and batch inference (no Ray, no torch)."""

from rayline.features.spec import FeatureSpec, ModelInputs, model_inputs_from_table

__all__ = ["FeatureSpec", "ModelInputs", "model_inputs_from_table"]

"""A trained model as files: weights (no pickle), FeatureSpec, model config.

Weights are a plain tensor state dict loaded with `torch.load(weights_only=True)`, which
refuses arbitrary pickled objects, so a tampered model file cannot run code in a server.
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass

import numpy as np
import torch

from rayline.config import ModelConfig
from rayline.features.contract import Contract
from rayline.features.spec import FeatureSpec, ModelInputs
from rayline.model.network import TabularNet, predict_from_output

WEIGHTS = "weights.pt"
SPEC = "feature_spec.json"
MODEL_CONFIG = "model_config.json"


def weights_to_bytes(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    torch.save(state, buf)
    return buf.getvalue()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


@dataclass
class LoadedModel:
    """A network ready for inference, with the spec that prepares its inputs."""

    net: TabularNet
    spec: FeatureSpec
    config: ModelConfig
    device: torch.device

    @classmethod
    def from_bytes(cls, weights: bytes, spec_json: bytes | str, config_json: bytes | str,
                   device: str | torch.device = "cpu") -> "LoadedModel":
        spec = FeatureSpec.from_json(spec_json)
        cfg = ModelConfig.model_validate(json.loads(config_json))
        net = TabularNet(spec, cfg)
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        dev = torch.device(device)
        net.to(dev).eval()
        return cls(net, spec, cfg, dev)

    @functools.cached_property
    def contract(self) -> Contract:
        """What this model accepts (the same verdicts online and in batch)."""
        return Contract(self.spec)

    @torch.inference_mode()
    def predict_inputs(self, inputs: ModelInputs) -> np.ndarray:
        if len(inputs) == 0:
            return np.zeros((0,) if self.spec.label.num_outputs == 1 else (0, self.spec.label.num_outputs), np.float32)
        num = torch.from_numpy(np.require(inputs.num, requirements=["C", "W"])).to(self.device, non_blocking=True)
        cat = torch.from_numpy(np.require(inputs.cat, requirements=["C", "W"])).to(self.device, non_blocking=True)
        out = predict_from_output(self.spec.label, self.net(num, cat))
        return out.cpu().numpy()

    def predict_records(self, records: list[dict]) -> np.ndarray:
        return self.predict_inputs(self.spec.transform_records(records))

"""A trained model as files: the model (no pickle), FeatureSpec, model config.

The one model interface serving, batch inference and evaluation use, whatever the family: an
MLP's weights are a plain tensor state dict loaded with `torch.load(weights_only=True)`, which
refuses arbitrary pickled objects; a booster is XGBoost's own UBJSON. Either way a tampered
model file cannot run code in a server.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa

from rayline.config import ModelConfig
from rayline.errors import InputError
from rayline.features.contract import Contract
from rayline.features.lookups import FEW_ROWS, Lookups
from rayline.features.spec import FeatureSpec, ModelInputs
from rayline.model import boosted
from rayline.model.outputs import from_raw

if TYPE_CHECKING:
    import torch

    from rayline.model.explain import Explanations
    from rayline.model.network import TabularNet

# torch is imported only for a network: a process serving or scoring a booster never pays its
# import (~2 s and ~200 MB here). Serving sets the threads a network may use (`torch_threads`).
_TORCH_THREADS: int | None = None


def torch_threads(n: int) -> None:
    """The intra-op threads torch uses in this process, now if torch is loaded, else when a network is."""
    global _TORCH_THREADS
    _TORCH_THREADS = n
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _torch():
    import torch

    if _TORCH_THREADS is not None and torch.get_num_threads() != _TORCH_THREADS:
        torch.set_num_threads(_TORCH_THREADS)
    return torch

WEIGHTS = "weights.pt"
BOOSTER = boosted.BOOSTER
SPEC = "feature_spec.json"
MODEL_CONFIG = "model_config.json"


def weights_to_bytes(model: "torch.nn.Module") -> bytes:
    torch = _torch()
    buf = io.BytesIO()
    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    torch.save(state, buf)
    return buf.getvalue()


def model_file(config: ModelConfig | bytes | str) -> str:
    """The registry file that holds a model of this config's family."""
    if not isinstance(config, ModelConfig):
        config = ModelConfig.model_validate(json.loads(config))
    return BOOSTER if config.family == "xgboost" else WEIGHTS


def _unwrap(model: "torch.nn.Module") -> "torch.nn.Module":
    return getattr(model, "module", model)


class Prepared(NamedTuple):
    """Checked rows made model inputs (`LoadedModel.features`)."""
    rows: pa.Table  # the checked rows, with their looked-up columns unless `values` has them
    values: dict[str, list] | None  # a few rows' looked-up features as Python values
    inputs: ModelInputs
    missed: dict[str, np.ndarray]  # the rows each lookup found nothing for, by lookup name


@dataclass
class LoadedModel:
    """A model ready for inference (a network or a booster), with the spec that prepares its inputs."""

    net: "TabularNet | None"
    spec: FeatureSpec
    config: ModelConfig
    device: "str | torch.device"  # "cpu"/"cuda" for a booster; a torch.device for a network
    booster: object | None = None
    lookups: Lookups | None = None  # the snapshot its features come through (loaded by serving and batch)

    @classmethod
    def from_bytes(cls, model: bytes, spec_json: bytes | str, config_json: bytes | str,
                   device: "str | torch.device" = "cpu") -> "LoadedModel":
        """From the registry's files: `model` is the content of `model_file(config)` (weights.pt
        or booster.ubj), the spec and the model config as their JSON."""
        return cls.from_parts(model, FeatureSpec.from_json(spec_json), ModelConfig.model_validate(json.loads(config_json)),
                              device)

    @classmethod
    def from_parts(cls, model: bytes, spec: FeatureSpec, cfg: ModelConfig,
                   device: "str | torch.device" = "cpu") -> "LoadedModel":
        """From objects already in this process (a training run's result, a batch plan)."""
        if cfg.family == "xgboost":
            dev = "cuda" if str(device).startswith("cuda") else "cpu"
            return cls(None, spec, cfg, dev, boosted.load(model, dev))
        from rayline.model.network import TabularNet

        torch = _torch()
        dev = torch.device(device)
        net = TabularNet(spec, cfg)
        state = torch.load(io.BytesIO(model), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        net.to(dev).eval()
        return cls(net, spec, cfg, dev)

    @property
    def family(self) -> str:
        return self.config.family

    @functools.cached_property
    def _spec_key(self) -> str:
        return hashlib.blake2b(self.spec.to_json().encode(), digest_size=16).hexdigest()

    @property
    def features_key(self) -> tuple[str, str | None]:
        """Equal for versions whose records are checked, looked up and transformed alike (the same
        spec and lookup snapshot): serving batches them through one contract check and transform."""
        return self._spec_key, self.lookups.snapshot if self.lookups is not None else None

    @functools.cached_property
    def nbytes(self) -> int:
        """Memory this version's parameters (or the booster's trees) hold in a replica; its lookup
        snapshot, which versions can share, is counted apart (`Lookups.nbytes`)."""
        if self.booster is not None:
            return len(self.booster.save_raw("ubj"))
        return sum(t.numel() * t.element_size() for t in self.net.state_dict().values())

    @functools.cached_property
    def contract(self) -> Contract:
        """What this model accepts (the same verdicts online and in batch)."""
        return Contract(self.spec)

    def predict_inputs(self, inputs: ModelInputs) -> np.ndarray:
        if len(inputs) == 0:
            return np.zeros((0,) if self.spec.label.num_outputs == 1 else (0, self.spec.label.num_outputs), np.float32)
        if self.booster is not None:
            return from_raw(self.spec.label, boosted.margins(self.booster, inputs.num, inputs.cat))
        torch = _torch()
        with torch.inference_mode():
            num = torch.from_numpy(np.require(inputs.num, requirements=["C", "W"])).to(self.device, non_blocking=True)
            cat = torch.from_numpy(np.require(inputs.cat, requirements=["C", "W"])).to(self.device, non_blocking=True)
            out = self.net(num, cat).float().cpu().numpy()
        return from_raw(self.spec.label, out)

    def explain(self, inputs: ModelInputs, method: str = "exact") -> "Explanations":
        """Per-row contributions in raw field names (model/explain.py): TreeSHAP (or, `approx`,
        XGBoost's path attribution) or integrated gradients."""
        from rayline.model.explain import explain_booster, explain_network

        if self.booster is not None:
            return explain_booster(self.spec, self.booster, inputs, approx=method == "approx")
        return explain_network(self.spec, self.net, inputs, self.device)

    def labels(self, preds: np.ndarray) -> np.ndarray | None:
        """The decided label of each prediction: 0/1 at the model's threshold (binary), the class
        name (multiclass); None for regression, whose prediction is the answer."""
        label = self.spec.label
        if label.task == "binary":
            return (preds >= self.config.threshold).astype(np.int64)
        if label.task == "multiclass":
            return np.asarray(label.classes or [], dtype=object)[preds.argmax(axis=1)] if len(preds) else \
                np.zeros(0, dtype=object)
        return None

    def features(self, table: pa.Table, named: set | None = None) -> "Prepared":
        """Checked rows (a contract's output) -> the rows with their looked-up columns, model
        inputs, the rows each lookup missed: what the ingest did to the training rows. A
        request's few rows get their looked-up features as Python values (`Lookups.values`),
        the same numbers without a joined table. `named`: the fields the records named, where
        known (a client's own value for a looked-up field is looked for only there)."""
        if self.lookups is None:
            return Prepared(table, None, self.spec.transform(table), {})
        few = self.lookups.values(table, self._kinds, named) if table.num_rows <= FEW_ROWS else None
        if few is not None:
            values, missed = few
            return Prepared(table, values, self.spec.transform(table, values), missed)
        table, missed = self.lookups.apply(table, named)
        return Prepared(table, None, self.spec.transform(table), missed)

    @functools.cached_property
    def _kinds(self) -> tuple:
        """(feature, its kind) pairs, for `Lookups.values`."""
        return tuple(self.spec.raw_kinds().items())

    def predict_table(self, table: pa.Table) -> tuple[ModelInputs, np.ndarray]:
        """Checked rows -> (model inputs, predictions): the one step from records the contract
        accepted to the model's answer, for /predict and everyone else."""
        inputs = self.features(table).inputs
        return inputs, self.predict_inputs(inputs)

    def predict_records(self, records: list[dict]) -> np.ndarray:
        """JSON records through the door /predict uses: the contract's verdicts (an invalid record
        raises `InputError` naming the record and the field), then `predict_table`."""
        table, failures = self.contract.check_records(records)
        if failures.bad.any():
            i = int(failures.bad.argmax())
            raise InputError(f"record {i}: {self.contract.message(*failures.first(i))} "
                             f"({int(failures.bad.sum())} of {len(records)} record(s) invalid)")
        return self.predict_table(table)[1]

"""The network, built from a FeatureSpec: the other half of the training/serving contract.

Serving and batch inference build it from a registered model's spec and config without
importing any training code.
"""

from __future__ import annotations

import torch
from torch import nn

from rayline.config import ModelConfig
from rayline.features.spec import FeatureSpec


def embedding_dim(cardinality: int, max_dim: int) -> int:
    # fast.ai's rule of thumb, capped: enough capacity for big vocabularies, small ones stay small.
    return max(2, min(max_dim, round(1.6 * cardinality ** 0.56)))


class TabularNet(nn.Module):
    """Embeddings per categorical + numeric inputs -> MLP -> task head (logits or values)."""

    def __init__(self, spec: FeatureSpec, cfg: ModelConfig):
        super().__init__()
        self.embeddings = nn.ModuleList(
            nn.Embedding(c.cardinality, embedding_dim(c.cardinality, cfg.embedding_max_dim)) for c in spec.categorical
        )
        width = len(spec.numeric_inputs) + sum(e.embedding_dim for e in self.embeddings)
        layers: list[nn.Module] = []
        for hidden in cfg.hidden:
            layers.append(nn.Linear(width, hidden))
            if cfg.norm == "batch":
                layers.append(nn.BatchNorm1d(hidden))
            elif cfg.norm == "layer":
                layers.append(nn.LayerNorm(hidden))
            layers += [nn.GELU(), nn.Dropout(cfg.dropout)]
            width = hidden
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(width, spec.label.num_outputs)
        self.task = spec.label.task

    def forward(self, num: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        return self.from_embedded(self.embed(num, cat))

    def embed(self, num: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        """The first layer's input: numerics, then each categorical's embedding."""
        return torch.cat([num] + [emb(cat[:, i]) for i, emb in enumerate(self.embeddings)], dim=1)

    def from_embedded(self, z: torch.Tensor) -> torch.Tensor:
        """The output (logits or values) from `embed`'s vector (explanations differentiate this)."""
        out = self.head(self.mlp(z))
        return out.squeeze(1) if out.shape[1] == 1 else out


def loss_fn(task: str) -> nn.Module:
    return {"binary": nn.BCEWithLogitsLoss(), "regression": nn.MSELoss(), "multiclass": nn.CrossEntropyLoss()}[task]

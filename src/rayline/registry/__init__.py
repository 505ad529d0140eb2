"""The model registry: versions with lineage, aliases, gated promotion, rollback."""

from rayline.registry.promote import Promotion, promote
from rayline.registry.registry import ModelVersion, Registry

__all__ = ["Registry", "ModelVersion", "promote", "Promotion"]

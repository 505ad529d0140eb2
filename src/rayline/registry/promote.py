"""Gated promotion: a candidate clearly worse than the current holder of an alias is refused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rayline.errors import RegistryError
from rayline.registry.registry import ModelVersion, Registry, metric_of


@dataclass
class Promotion:
    alias: str
    version: int
    previous: int | None
    metric: str
    candidate_value: float
    previous_value: float | None
    forced: bool

    def summary(self) -> dict:
        return dict(self.__dict__)


def promote(registry: Registry, version: int, alias: str = "production", *, tolerance: float = 0.005,
            force: bool = False, reevaluate: Callable[[ModelVersion, ModelVersion], float] | None = None) -> Promotion:
    """Point `alias` at `version` unless it is worse than the current one by more than `tolerance`.

    Both numbers come from the same test split: stored metrics when both versions were evaluated
    on the same ingest, otherwise `reevaluate(current, candidate)` scores the current model on
    the candidate's test split.
    """
    cand = registry.get(version)
    metric, mode, cand_value = metric_of(cand)
    current_v = registry.aliases().get(alias)
    if current_v is None or current_v == version:
        registry.set_alias(alias, version)
        return Promotion(alias, version, current_v, metric, cand_value, None, force)
    current = registry.get(current_v)
    if current.lineage.get("ingest_key") == cand.lineage.get("ingest_key"):
        cur_value = metric_of(current)[2]
    elif reevaluate is not None:
        cur_value = reevaluate(current, cand)
    else:
        raise RegistryError(f"versions {current_v} and {version} were tested on different data; "
                            f"re-evaluation is needed to compare them (or use --force)")
    worse_by = (cur_value - cand_value) if mode == "max" else (cand_value - cur_value)
    if worse_by > tolerance and not force:
        raise RegistryError(
            f"refusing to promote version {version} to {alias!r}: test {metric} {cand_value:.4f} vs "
            f"{cur_value:.4f} for the current version {current_v} on the same test split "
            f"(worse by {worse_by:.4f} > tolerance {tolerance}); use --force to override")
    registry.set_alias(alias, version)
    return Promotion(alias, version, current_v, metric, cand_value, cur_value, force and worse_by > tolerance)

"""Gated promotion: a candidate clearly worse than the current holder of an alias is refused.

First, against the trivial: a version that does not beat the trivial model on its test split
(training base rate or mean, stored by the evaluation as `baseline_<metric>`) by `margin` is
never promoted, the first version included. Then against the holder.

The decision and the write are one compare-and-swap on the alias's log: if another writer
changes the alias between our read and our write, we read the new holder and run the gate
again, so a candidate is never waved through against a stale "production".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rayline.errors import RegistryError
from rayline.registry.registry import AliasConflict, AliasState, ModelVersion, Registry, metric_of


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


def beats_trivial(mode: str, value: float, baseline: float, margin: float) -> bool:
    """+margin for a score (AUC), a fraction of the baseline for a loss (log loss, RMSE)."""
    return value >= baseline + margin if mode == "max" else value <= baseline * (1 - margin)


def promote(registry: Registry, version: int, alias: str = "production", *, tolerance: float = 0.005,
            margin: float = 0.01, force: bool = False,
            reevaluate: Callable[[ModelVersion, ModelVersion], float] | None = None, attempts: int = 50,
            dry_run: bool = False, details: dict | None = None) -> Promotion:
    """Point `alias` at `version` unless it is worse than the current one by more than `tolerance`.

    Both numbers come from the same test split: stored metrics when both versions were evaluated
    on the same ingest, otherwise `reevaluate(current, candidate)` scores the current model on
    the candidate's test split. A forced promotion is recorded as such in the alias's log.
    `dry_run`: judge, raise if refused, write nothing (the watcher's offline gate before a canary);
    `details`: more to record in the alias's log entry (the watcher's live evidence).
    """
    registry.verify(version)  # never point production at a version whose files do not check out
    cand = registry.get(version)
    metric, mode, cand_value = metric_of(cand)
    trivial = cand.metrics.get("test", {}).get(f"baseline_{metric}")
    below_trivial = trivial is not None and not beats_trivial(mode, cand_value, trivial, margin)
    if below_trivial and not force:
        raise RegistryError(
            f"refusing to promote version {version} to {alias!r}: test {metric} {cand_value:.4f} does not beat the "
            f"trivial model ({metric} {trivial:.4f}, predicting the training base rate or mean) by the margin {margin}; "
            f"use --force to override")
    scores: dict[int, float] = {}  # re-evaluations survive a lost race
    for _ in range(attempts):
        state = registry.alias_state(alias)
        try:
            return _decide_and_swap(registry, state, cand, metric, mode, cand_value, tolerance, force, reevaluate, scores,
                                    below_trivial, dry_run, details or {})
        except AliasConflict:
            continue
    raise RegistryError(f"alias {alias!r} of {registry.name!r} kept changing during {attempts} attempts to "
                        f"promote version {version}; try again")


def _decide_and_swap(registry: Registry, state: AliasState, cand: ModelVersion, metric: str, mode: str,
                     cand_value: float, tolerance: float, force: bool, reevaluate, scores: dict,
                     below_trivial: bool, dry_run: bool, details: dict) -> Promotion:
    version, alias, current_v = cand.version, state.alias, state.version
    if current_v is None or current_v == version:
        if current_v != version and not dry_run:
            registry.change_alias(state, version, "force" if below_trivial else "promote", metric=metric,
                                  value=cand_value, forced=below_trivial, below_trivial=below_trivial, **details)
        return Promotion(alias, version, current_v, metric, cand_value, None, below_trivial)
    current = registry.get(current_v)
    if current_v in scores:
        cur_value = scores[current_v]
    elif current.lineage.get("ingest_key") == cand.lineage.get("ingest_key"):
        cur_value = metric_of(current)[2]
    elif reevaluate is not None:
        cur_value = scores[current_v] = reevaluate(current, cand)
    else:
        raise RegistryError(f"versions {current_v} and {version} were tested on different data; "
                            f"re-evaluation is needed to compare them (or use --force)")
    worse_by = (cur_value - cand_value) if mode == "max" else (cand_value - cur_value)
    if worse_by > tolerance and not force:
        raise RegistryError(
            f"refusing to promote version {version} to {alias!r}: test {metric} {cand_value:.4f} vs "
            f"{cur_value:.4f} for the current version {current_v} on the same test split "
            f"(worse by {worse_by:.4f} > tolerance {tolerance}); use --force to override")
    forced = (force and worse_by > tolerance) or below_trivial
    if not dry_run:
        registry.change_alias(state, version, "force" if forced else "promote", metric=metric, value=cand_value,
                              previous_value=cur_value, forced=forced, below_trivial=below_trivial, **details)
    return Promotion(alias, version, current_v, metric, cand_value, cur_value, forced)

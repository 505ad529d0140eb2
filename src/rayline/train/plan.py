"""What every training worker receives: a `LoopPlan`, compiled once on the driver by
`run_training` and passed as the loop's config (objects, not JSON to parse and re-validate)."""

from __future__ import annotations

from dataclasses import dataclass

from rayline.config import TrainConfig
from rayline.features.spec import FeatureSpec

PLAN_KEY = "plan"  # train_loop_config = {PLAN_KEY: LoopPlan}


@dataclass(frozen=True)
class LoopPlan:
    train: TrainConfig
    spec: FeatureSpec
    splits: dict[str, str]        # split name -> URI of its model-ready Parquet
    feed: str = "memory"          # "memory": each worker reads its share; "stream": Ray Data's shard (MLP)
    rows_per_worker: int = 0
    use_gpu: bool = False

"""What a training checkpoint holds, for both families: the vocabulary defined once.

A checkpoint directory has the model as registered (`weights.pt` or `booster.ubj`, what would
be registered if training stopped here), the family's full state to resume from (`state.pt`:
model, optimizer, scheduler, RNG; `state.ubj`: the whole booster), and `meta.json`, a
`CheckpointMeta`: where training stood and the history so far.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

META_FILE = "meta.json"
MLP_STATE = "state.pt"       # {"model", "optimizer", "scheduler", "rng"}
BOOSTER_STATE = "state.ubj"  # the whole booster (the next round continues from it)
RESULT_FILE = "result.json"  # runs/<run>/: the finished run's TrainResult


@dataclass
class CheckpointMeta:
    """Where a run stood at a checkpoint. `epoch` counts history rows (an MLP epoch, or a
    checkpoint's worth of boosting rounds); `stale`: epochs (MLP) or rounds (XGBoost) since the
    best; `best_round`: XGBoost's best number of rounds (the registered booster's length)."""

    metric: str = ""              # the metric watched (xgboost: its own name, e.g. rmsle)
    epoch: int = -1               # 0-based index of the last finished row; -1 before the first
    best: float | None = None
    stale: int = 0
    attempt: int = 1              # counts (re)starts: a resumed run never redoes finished epochs
    history: list[dict] = field(default_factory=list)
    best_round: int | None = None

    @property
    def best_epoch(self) -> int:
        return self.best_round if self.best_round is not None else self.epoch + 1

    def improved(self, value: float, mode: str) -> bool:
        return self.best is None or (value > self.best if mode == "max" else value < self.best)

    def score(self, mode: str) -> float:
        """The best so far as a score for Ray Train's ranking (higher is better): right for an
        XGBoost checkpoint, which holds the best round's booster; an MLP checkpoint holds its own
        epoch's weights and is ranked by that epoch's value."""
        return self.best if mode == "max" else -self.best

    def write(self, directory: str | Path) -> None:
        Path(directory, META_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, directory: str | Path) -> "CheckpointMeta":
        raw = json.loads(Path(directory, META_FILE).read_text())
        if "stale_rounds" in raw:  # written before the two loops shared this class
            raw["stale"] = raw.pop("stale_rounds")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})

    def resumed(self) -> "CheckpointMeta":
        """The state a restarted attempt continues from."""
        return CheckpointMeta(**{**asdict(self), "attempt": self.attempt + 1})

"""The closed loop's journal: one JSON file per step, each created once.

Appending entry n + 1 is a compare-and-swap (`Storage.create_exclusive`, as the registry's alias
log): of two watchers that read entry n and both try to act, one writes n + 1 and the other gets
`JournalConflict`, re-reads, and finds the step taken. The last entry is the loop's state; a
watcher killed at any point restarts from it (see `rayline.watch.loop`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rayline import layout
from rayline.errors import RaylineError
from rayline.storage import Storage

# States: the first four are settled (the loop may start over), the rest are in flight.
SETTLED = ("promoted", "rolled_back", "rejected", "failed", "unchanged")
RETRAINING, CANARY, PROMOTING, ROLLING_BACK = "retraining", "canary", "promoting", "rolling_back"


class JournalConflict(RaylineError):
    """Another watcher wrote the next entry first."""


@dataclass(frozen=True)
class Entry:
    seq: int
    data: dict

    @property
    def state(self) -> str:
        return self.data["state"]

    def get(self, key: str, default=None):
        return self.data.get(key, default)


class Journal:
    def __init__(self, storage: Storage, name: str, app: str):
        self.storage, self.base = storage, layout.watch_journal(name, app)

    def _seqs(self) -> list[int]:
        return sorted(int(n[:-5]) for n in self.storage.list_dir(self.base) if n.endswith(".json") and n[:-5].isdigit())

    def last(self) -> Entry | None:
        seqs = self._seqs()
        return Entry(seqs[-1], self.storage.read_json(self.base, _name(seqs[-1]))) if seqs else None

    def get(self, seq: int) -> Entry | None:
        try:
            return Entry(seq, self.storage.read_json(self.base, _name(seq)))
        except (FileNotFoundError, OSError):
            return None

    def entries(self, limit: int | None = None) -> list[Entry]:
        seqs = self._seqs()
        return [Entry(n, self.storage.read_json(self.base, _name(n))) for n in seqs[-limit if limit else 0:]]

    def append(self, after: Entry | None, state: str, **data) -> Entry:
        """Write the entry after `after` (None: the first), unless another watcher did."""
        from rayline.registry.registry import json_bytes

        seq = (after.seq if after else 0) + 1
        entry = {"state": state, "seq": seq, "at_unix": time.time(), **data}
        if not self.storage.create_exclusive(json_bytes(entry), self.base, _name(seq)):
            raise JournalConflict(f"watch journal {self.storage.uri(self.base)}: step {seq} was written by another "
                                  f"watcher")
        return Entry(seq, entry)


def _name(seq: int) -> str:
    return f"{seq:08d}.json"

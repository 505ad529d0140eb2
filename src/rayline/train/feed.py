"""Feeding a worker its shard: in memory when it fits, streamed when it does not.

MemoryFeed keeps the worker's share (read once from the split's Parquet by `shard.read_shard`)
as tensors (on the GPU when training there) and reshuffles in place each epoch: no Ray Data
pipeline, no per-step host-to-device copies. StreamFeed re-reads the Ray Data shard every epoch
with a local shuffle buffer and prefetching, for shards larger than the memory budget.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import torch

from rayline.features.spec import MODEL_COLUMNS, Y, model_inputs_from_table

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _tensors(table: pa.Table, device, pin: bool = False) -> Batch:
    num, cat = model_inputs_from_table(table)
    y = table.column(Y).to_numpy()
    out = [torch.from_numpy(np.require(a, requirements=["C", "W"])) for a in (num, cat, y)]
    if device.type == "cuda":
        out = [t.pin_memory().to(device, non_blocking=True) if pin else t.to(device) for t in out]
    return out[0], out[1], out[2]


class MemoryFeed:
    def __init__(self, table: pa.Table, batch_size: int, device: torch.device, seed: int):
        """`table`: the worker's share (train.shard.read_shard)."""
        self.num, self.cat, self.y = _tensors(table.select(MODEL_COLUMNS), device) if table.num_rows else (
            torch.zeros(0, 0), torch.zeros(0, 0, dtype=torch.long), torch.zeros(0))
        self.batch_size, self.device, self.seed = batch_size, device, seed

    def __len__(self) -> int:
        return len(self.y)

    def steps_per_epoch(self, _rows_hint: int | None = None) -> int:
        return max(1, -(-len(self) // self.batch_size))

    def epoch(self, epoch: int, shuffle: bool = True) -> Iterator[Batch]:
        n = len(self)
        if shuffle:
            g = torch.Generator(device="cpu").manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(n, generator=g).to(self.device)
        else:
            order = None
        for start in range(0, n, self.batch_size):
            if order is None:
                sl = slice(start, start + self.batch_size)
                yield self.num[sl], self.cat[sl], self.y[sl]
            else:
                idx = order[start:start + self.batch_size]
                yield self.num[idx], self.cat[idx], self.y[idx]


class StreamFeed:
    def __init__(self, shard, batch_size: int, device: torch.device, seed: int):
        self.shard, self.batch_size, self.device, self.seed = shard, batch_size, device, seed

    def steps_per_epoch(self, rows_hint: int | None = None) -> int:
        return max(1, -(-(rows_hint or self.batch_size) // self.batch_size))

    def epoch(self, epoch: int, shuffle: bool = True) -> Iterator[Batch]:
        it = self.shard.iter_batches(
            batch_size=self.batch_size, batch_format="pyarrow", prefetch_batches=4,
            local_shuffle_buffer_size=self.batch_size * 16 if shuffle else None,
            local_shuffle_seed=self.seed * 100_003 + epoch if shuffle else None,
        )
        for table in it:
            yield _tensors(table.select(MODEL_COLUMNS), self.device, pin=True)

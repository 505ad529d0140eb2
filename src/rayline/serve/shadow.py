"""Shadow traffic: requests mirrored to another version after their live answer is sent.

The live path only puts the request on a bounded queue (no wait: a full queue drops it, counted).
One consumer drains the queue in batches and scores them on a thread of its own, under a
deadline: a shadow model that raises is counted, one that hangs holds only that thread (its
batches time out and later requests are dropped, counted), and neither reaches a client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from rayline.serve.options import REPLICA_LOG

log = logging.getLogger(REPLICA_LOG)
MAX_SHADOW_BATCH = 256
# A batch gathers this long: the shadow thread then takes the GIL for a handful of hand-offs a
# batch, not per request. At 20 ms the live path lost ~12 % of its c=64 throughput to the GIL
# ping-pong of ~40 small batches a second (the forward passes themselves cost ~1 %).
GATHER_S = 0.1


class ShadowRunner:
    def __init__(self, score: Callable[[list], list], record: Callable[[Any, Any], None], queue: int, timeout_s: float):
        """`score(items)` -> one result per item (as `predict_items`); `record(items, results)` logs them."""
        self.score, self.record, self.timeout_s = score, record, timeout_s
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=queue)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="rayline-shadow")
        self.counts = {"mirrored": 0, "scored": 0, "dropped_queue_full": 0, "dropped_busy": 0, "timed_out": 0,
                       "errors": 0}
        self.task: asyncio.Task | None = None
        self.pending: asyncio.Future | None = None  # the scoring call on the shadow thread

    def submit(self, item) -> bool:
        """From the live path: never waits. False when the queue is full (the request is not mirrored)."""
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.counts["dropped_queue_full"] += 1
            return False
        self.counts["mirrored"] += 1
        return True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            if self.queue.qsize() < MAX_SHADOW_BATCH - 1:
                await asyncio.sleep(GATHER_S)  # let a batch gather: one forward pass per batch, not per request
            while len(items) < MAX_SHADOW_BATCH and not self.queue.empty():
                items.append(self.queue.get_nowait())
            if self.pending is not None and not self.pending.done():
                self.counts["dropped_busy"] += len(items)  # a hung call still holds the thread: queue nothing behind it
                continue
            self.pending = loop.run_in_executor(self.pool, self.score, items)
            try:
                results = await asyncio.wait_for(asyncio.shield(self.pending), self.timeout_s)
            except asyncio.TimeoutError:
                self.counts["timed_out"] += len(items)
                log.warning(json.dumps({"event": "shadow_timeout", "requests": len(items), "timeout_s": self.timeout_s}))
                continue
            except Exception as e:  # noqa: BLE001 - the shadow never fails anything live
                results = [e] * len(items)
            failed = sum(isinstance(r, Exception) for r in results)
            self.counts["errors"] += failed
            self.counts["scored"] += len(results) - failed
            try:
                self.record(items, results)  # one call per batch: metrics once per version, not per request
            except Exception as e:  # noqa: BLE001
                log.warning(json.dumps({"event": "shadow_record_failed", "error": str(e)[:200]}))

    def stats(self) -> dict:
        return {**self.counts, "queued": self.queue.qsize()}

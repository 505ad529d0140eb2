"""Requests waiting on one replica's event loop, answered a batch at a time.

Ray Serve's `@serve.batch` does the same with a task, a queue and, per request, an inspection of
the method's signature (`inspect.signature` and `Signature.bind`): ~6 % of a replica's time at 64
clients (py-spy, GIL samples), where the whole contract check is ~5 %. rayline's batch function
is synchronous and takes one argument, so the queue is a list and a callback on the loop.

How long a batch waits decides its size. Run on the loop's next turn, batches at 64 clients
held ~12 requests (`@serve.batch`: ~40): requests arriving together are still in the HTTP
layers' hand-offs a turn or two later. After a few turns (`TURNS`) they have joined, and each
batch's fixed costs are shared by more: 6 turns gave batches of ~56 and +15-27 % requests/s in
paired rounds against `@serve.batch` (3 turns: ~43, 10: ~60, no better). A turn with nothing
else to run costs microseconds, and a request alone on its replica never comes here.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")
TURNS = 6


class BatchQueue(Generic[T]):
    """`submit(item)` waits for `fn`'s answer to `item`. `fn` takes up to `max_batch_size` items
    and returns one result per item, in order; it runs on the event loop (nothing else runs
    meanwhile, so requests arriving then form the next batch). A batch runs once full, or
    `turns` turns of the loop after its first request (`wait_s` 0), or `wait_s` seconds after it.
    A request cancelled while it waits (its deadline, a client gone) is left out of its batch."""

    def __init__(self, fn: Callable[[list[T]], list[Any]], max_batch_size: int, wait_s: float = 0.0,
                 turns: int = TURNS):
        if max_batch_size < 1 or wait_s < 0 or turns < 0:
            raise ValueError(f"max_batch_size must be >= 1, wait_s and turns >= 0; got {max_batch_size}, {wait_s}, {turns}")
        self.fn, self.max_batch_size, self.wait_s, self.turns = fn, max_batch_size, wait_s, turns
        self._pending: list[tuple[T, asyncio.Future]] = []
        self._handle: asyncio.Handle | None = None  # the scheduled run
        self.batches = 0  # batches run (a replica's statistics)

    async def submit(self, item: T) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_batch_size:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = loop.call_soon(self._run, 0)
        elif self._handle is None:
            self._handle = (loop.call_later(self.wait_s, self._run, 0) if self.wait_s > 0
                            else loop.call_soon(self._run, self.turns))
        return await future

    def _run(self, turns: int) -> None:
        loop = asyncio.get_running_loop()
        if turns > 0 and len(self._pending) < self.max_batch_size:
            self._handle = loop.call_soon(self._run, turns - 1)  # let the requests in flight join
            return
        self._handle = None
        batch = [(i, f) for i, f in self._pending[:self.max_batch_size] if not f.done()]
        del self._pending[:self.max_batch_size]
        if self._pending:  # more than a batch was queued: the rest goes next turn
            self._handle = loop.call_soon(self._run, 0)
        if not batch:
            return
        self.batches += 1
        try:
            results = self.fn([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the batch function answered {len(results)} of {len(batch)} items")
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error; the queue goes on
            for _, f in batch:
                if not f.done():
                    f.set_exception(e)
            return
        for (_, f), r in zip(batch, results):
            if not f.done():
                f.set_result(r)

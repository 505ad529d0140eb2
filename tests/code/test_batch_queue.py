"""The replica's batch queue, on a plain event loop: who shares a batch, in what order the answers
come back, and what a cancelled request or a failing batch does to the others."""

import asyncio

import pytest

from rayline.serve.batch_queue import BatchQueue


class Recorder:
    def __init__(self, fail: Exception | None = None, short: bool = False):
        self.calls: list[list] = []
        self.fail, self.short = fail, short

    def __call__(self, items: list) -> list:
        self.calls.append(list(items))
        if self.fail is not None:
            raise self.fail
        out = [f"answer {i}" for i in items]
        return out[:-1] if self.short else out


def test_requests_arriving_together_share_one_batch_and_each_gets_its_own_answer():
    fn = Recorder()

    async def main():
        q = BatchQueue(fn, max_batch_size=64)
        return await asyncio.gather(*(q.submit(i) for i in range(10))), q.batches

    answers, batches = asyncio.run(main())
    assert answers == [f"answer {i}" for i in range(10)]
    assert batches == 1 and fn.calls == [list(range(10))]


def test_requests_still_in_flight_a_few_turns_later_join_the_batch():
    fn = Recorder()

    async def late(q, i, hops):
        for _ in range(hops):  # an HTTP layer's hand-offs before the request reaches the queue
            await asyncio.sleep(0)
        return await q.submit(i)

    async def main(turns):
        q = BatchQueue(fn, max_batch_size=64, turns=turns)
        return await asyncio.gather(*(late(q, i, i % 4) for i in range(8)))

    fn.calls.clear()
    assert asyncio.run(main(turns=6)) == [f"answer {i}" for i in range(8)]
    assert len(fn.calls) == 1
    fn.calls.clear()
    asyncio.run(main(turns=0))  # the next turn only: the late ones form their own batches
    assert len(fn.calls) > 1 and sorted(i for c in fn.calls for i in c) == list(range(8))


def test_a_full_batch_runs_at_once_and_the_rest_follows_in_order():
    fn = Recorder()

    async def main():
        q = BatchQueue(fn, max_batch_size=4)
        return await asyncio.gather(*(q.submit(i) for i in range(10)))

    assert asyncio.run(main()) == [f"answer {i}" for i in range(10)]
    assert fn.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_cancelled_request_is_left_out_and_the_others_are_answered():
    fn = Recorder()

    async def main():
        q = BatchQueue(fn, max_batch_size=64)
        tasks = [asyncio.ensure_future(q.submit(i)) for i in range(3)]
        await asyncio.sleep(0)  # all three queued
        tasks[1].cancel()       # e.g. its deadline passed
        done = await asyncio.gather(*tasks, return_exceptions=True)
        return done

    done = asyncio.run(main())
    assert done[0] == "answer 0" and done[2] == "answer 2" and isinstance(done[1], asyncio.CancelledError)
    assert fn.calls == [[0, 2]]


def test_a_failing_batch_fails_its_requests_and_the_queue_goes_on():
    async def main():
        fn = Recorder(fail=ValueError("broken model"))
        q = BatchQueue(fn, max_batch_size=64)
        first = await asyncio.gather(q.submit(1), q.submit(2), return_exceptions=True)
        fn.fail = None
        return first, await q.submit(3)

    first, after = asyncio.run(main())
    assert all(isinstance(e, ValueError) and "broken model" in str(e) for e in first)
    assert after == "answer 3"


def test_a_batch_function_that_loses_an_answer_fails_the_batch_rather_than_misaligning_it():
    async def main():
        q = BatchQueue(Recorder(short=True), max_batch_size=64)
        return await asyncio.gather(q.submit("a"), q.submit("b"), return_exceptions=True)

    out = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) and "answered 1 of 2" in str(e) for e in out)


def test_with_a_wait_the_first_request_waits_for_later_ones():
    fn = Recorder()

    async def main():
        q = BatchQueue(fn, max_batch_size=64, wait_s=0.05)
        first = asyncio.ensure_future(q.submit("early"))
        await asyncio.sleep(0.01)
        return await asyncio.gather(first, q.submit("late"))

    assert asyncio.run(main()) == ["answer early", "answer late"]
    assert fn.calls == [["early", "late"]]


@pytest.mark.parametrize("args", [(0, 0.0, 6), (4, -1.0, 6), (4, 0.0, -1)])
def test_nonsense_settings_are_refused(args):
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchQueue(Recorder(), *args)

"""The micro-batcher alone, with a fake batch function (a unit test of one component)."""

import asyncio
import time

import pytest

from serving.batcher import BatchTiming, MicroBatcher
from serving.errors import DeadlineExpired, GatewayError, Overloaded, ShuttingDown


def make(handler, **settings):
    options = {"max_batch_size": 4, "max_wait_seconds": 0.05, "max_queue": 100}
    options.update(settings)
    batcher = MicroBatcher(handler, **options)
    batcher.start()
    return batcher


@pytest.mark.asyncio
async def test_concurrent_requests_share_batches_and_get_their_own_results():
    sizes = []

    async def double(items, waits):
        sizes.append(len(items))
        return [2 * x for x in items]

    batcher = make(double)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [2 * i for i in range(10)]
    assert max(sizes) == 4 and sum(sizes) == 10 and len(sizes) < 10
    await batcher.close()


@pytest.mark.asyncio
async def test_a_failed_batch_fails_every_request_in_it():
    async def broken(items, waits):
        raise RuntimeError("backend fell over")

    batcher = make(broken)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "fell over" in str(r) for r in results)
    await batcher.close()


@pytest.mark.asyncio
async def test_a_handler_returning_the_wrong_count_fails_instead_of_hanging():
    async def short(items, waits):
        return items[:-1]

    batcher = make(short)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, GatewayError) for r in results)
    await batcher.close()


@pytest.mark.asyncio
async def test_a_full_queue_answers_overloaded_at_once():
    release = asyncio.Event()
    started = asyncio.Event()

    async def blocked(items, waits):
        started.set()
        await release.wait()
        return items

    batcher = make(blocked, max_batch_size=1, max_queue=1, max_wait_seconds=0)
    first = asyncio.ensure_future(batcher.submit("running"))
    await started.wait()
    second = asyncio.ensure_future(batcher.submit("queued"))
    await asyncio.sleep(0)  # let it enter the queue
    # Refused while the running batch still holds the only slot: it did not wait for room.
    with pytest.raises(Overloaded, match="queue full"):
        await batcher.submit("one too many")
    assert not first.done() and not second.done()
    release.set()
    assert await first == "running" and await second == "queued"
    await batcher.close()


@pytest.mark.asyncio
async def test_requests_whose_deadline_passed_are_dropped_before_the_batch_runs():
    seen = []

    async def record(items, waits):
        seen.extend(items)
        return items

    batcher = make(record)
    expired = batcher.submit("late", deadline=time.monotonic() - 1)
    fresh = batcher.submit("on time", deadline=time.monotonic() + 10)
    results = await asyncio.gather(expired, fresh, return_exceptions=True)
    assert isinstance(results[0], DeadlineExpired) and results[1] == "on time"
    assert seen == ["on time"]
    await batcher.close()


@pytest.mark.asyncio
async def test_close_drains_queued_requests_and_then_refuses_new_ones():
    async def slow(items, waits):
        await asyncio.sleep(0.01)
        return items

    batcher = make(slow, max_batch_size=2)
    pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(6)]
    await asyncio.sleep(0)
    await batcher.close()
    assert [await p for p in pending] == list(range(6))
    with pytest.raises(ShuttingDown, match="shutting down"):
        await batcher.submit(7)


def test_batch_timing_fits_a_fixed_cost_plus_a_cost_per_request():
    timing = BatchTiming(smoothing=0.5)
    assert not timing.measured
    timing.record(0.010, 8)  # one size seen: the average time, scaled up for larger batches
    assert timing.seconds(4) == pytest.approx(0.010)
    assert timing.seconds(16) == pytest.approx(0.020)
    for _ in range(20):  # batches of 8 and 32 taking 2 ms + 1 ms per request
        timing.record(0.002 + 0.001 * 8, 8)
        timing.record(0.002 + 0.001 * 32, 32)
    assert timing.seconds(1) == pytest.approx(0.003, rel=0.05)
    assert timing.seconds(64) == pytest.approx(0.066, rel=0.05)


@pytest.mark.asyncio
async def test_admission_refuses_at_once_what_cannot_finish_by_its_deadline():
    release = asyncio.Event()

    async def slow(items, waits):  # each batch takes 0.2 s once released
        await release.wait()
        await asyncio.sleep(0.2)
        return items

    batcher = make(slow, max_batch_size=1, max_wait_seconds=0)
    release.set()
    assert await batcher.submit("measured") == "measured"  # one batch timed: ~0.2 s
    release.clear()
    queued = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
    while batcher.received < 4:
        await asyncio.sleep(0)
    now = time.monotonic()
    # Three batches of ~0.2 s are ahead of it: a 0.3 s deadline cannot be met.
    with pytest.raises(Overloaded, match="after the deadline"):
        await batcher.submit("hurried", now + 0.3, admit_by=now + 0.3)
    assert batcher.received == 4, "a refused request is never queued"
    patient = asyncio.ensure_future(batcher.submit("patient", admit_by=now + 30))
    release.set()
    assert await asyncio.gather(*queued, patient) == [0, 1, 2, "patient"]
    await batcher.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("in_flight", [1, 2])
async def test_batches_in_flight_run_at_once_up_to_the_limit(in_flight):
    running, most, release = 0, 0, asyncio.Event()

    async def hold(items, waits):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return items

    batcher = make(hold, max_batch_size=1, max_wait_seconds=0, in_flight=in_flight)
    calls = [asyncio.ensure_future(batcher.submit(i)) for i in range(4)]
    await asyncio.sleep(0.05)
    assert most == in_flight  # the rest wait in the queue for a free slot
    release.set()
    assert await asyncio.gather(*calls) == [0, 1, 2, 3]
    await batcher.close()

"""Micro-batching: concurrent requests wait briefly in a bounded queue and run as one batch.

Shaped after Ray Serve's batcher: the first request of a batch starts a `max_wait` clock, more
are taken until the batch is full or the clock runs out, and one result per request is checked.
Unlike some servers, a failing batch fails every waiting future (nobody hangs), a full queue
answers at once, and requests whose deadline passed are dropped before they cost inference.

Admission is deadline-aware: from the recent batch times and the work queued ahead, the batcher
estimates when a new request would finish and refuses it at once (Overloaded) when that is past
its deadline. Under overload the queue then holds only work that can still succeed, so goodput
stays near capacity instead of every request timing out in a long queue.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from serving.errors import DeadlineExpired, GatewayError, Overloaded, ShuttingDown

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future
    deadline: float | None
    enqueued: float


class MicroBatcher(Generic[Item, Result]):
    def __init__(
        self,
        handler: Callable[[Sequence[Item], Sequence[float]], Awaitable[Sequence[Result]]],
        *,
        max_batch_size: int,
        max_wait_seconds: float,
        max_queue: int,
        on_batch: Callable[[int, int], None] | None = None,
        in_flight: int = 1,
    ) -> None:
        """`handler(items, queue_seconds)` returns one result per item, in order. `on_batch`
        (batch size, queue depth) is told about every batch, for metrics. Up to `in_flight`
        batches run at once (more than one lets batch n+1 encode while batch n is scored)."""
        self.handler = handler
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_seconds
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        self.on_batch = on_batch
        self.in_flight = in_flight
        self._slots = asyncio.Semaphore(in_flight)
        self._worker: asyncio.Task | None = None
        self._batches: set[asyncio.Task] = set()  # the batches computing now
        self._closing = False
        self.received = 0  # requests accepted into the queue, ever
        self.timing = BatchTiming()
        self._forming = 0  # requests taken off the queue into the batch being formed
        self._running: dict[int, tuple[float, int]] = {}  # (start, size) of each batch computing

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def expected_finish(self, now: float) -> float | None:
        """When a request submitted now would be answered (None: no batch measured yet)."""
        if not self.timing.measured:
            return None
        ahead = self._forming + self.queue.qsize()
        full_batches, own_size = divmod(ahead, self.max_batch_size)
        # Batches run in_flight at a time (the measured batch time already includes the
        # slow-down of sharing the machine with the others).
        rounds = -(-full_batches // self.in_flight)
        seconds = rounds * self.timing.seconds(self.max_batch_size)
        seconds += self.timing.seconds(own_size + 1)
        if len(self._running) >= self.in_flight:  # wait for the first slot to free up
            seconds += min(
                max(0.0, self.timing.seconds(size) - (now - started))
                for started, size in self._running.values()
            )
        return now + seconds + self.max_wait

    async def submit(
        self, item: Item, deadline: float | None = None, *, admit_by: float | None = None
    ) -> Result:
        """Queue `item` and wait for its result. Refused at once (Overloaded) when the queue is
        full, or when `admit_by` is given and the request is not expected to finish by then."""
        if self._closing:
            raise ShuttingDown("the gateway is shutting down; retry on another replica")
        if admit_by is not None:
            now = time.monotonic()
            finish = self.expected_finish(now)
            if finish is not None and finish > admit_by:
                raise Overloaded(
                    f"overloaded: expected to answer in {1000 * (finish - now):.0f} ms, after "
                    f"the deadline ({1000 * max(0.0, admit_by - now):.0f} ms); retry with backoff"
                )
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Pending(item, future, deadline, time.monotonic()))
            self.received += 1
        except asyncio.QueueFull:
            raise Overloaded(
                f"queue full ({self.queue.maxsize} requests waiting); retry with backoff"
            ) from None
        return await future

    async def close(self) -> None:
        """Stop taking requests, let the queued ones finish, then stop the worker."""
        self._closing = True
        await self.queue.join()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, *self._batches, return_exceptions=True)

    async def _collect(self) -> list[_Pending]:
        batch = [await self.queue.get()]
        self._forming = 1
        closes_at = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch_size:
            remaining = closes_at - time.monotonic()
            if remaining <= 0:
                # Take what is already waiting without waiting longer.
                while len(batch) < self.max_batch_size and not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
            self._forming = len(batch)
        self._forming = 0
        return batch

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()  # a batch is formed only when it can start at once
            try:
                batch = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.get_running_loop().create_task(self._finish(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _finish(self, batch: list[_Pending]) -> None:
        try:
            await self._process(batch)
        finally:
            self._slots.release()
            for _ in batch:
                self.queue.task_done()

    async def _process(self, batch: list[_Pending]) -> None:
        now = time.monotonic()
        live = []
        for pending in batch:
            if pending.future.done():  # the caller went away (cancelled)
                continue
            if pending.deadline is not None and pending.deadline <= now:
                pending.future.set_exception(
                    DeadlineExpired("the deadline passed while the request was queued")
                )
                continue
            live.append(pending)
        if not live:
            return
        if self.on_batch is not None:
            self.on_batch(len(live), self.queue.qsize())
        key = id(live)
        started = time.monotonic()
        self._running[key] = (started, len(live))
        try:
            results = await self.handler([p.item for p in live], [now - p.enqueued for p in live])
            if len(results) != len(live):
                raise GatewayError(f"batch handler returned {len(results)} results for {len(live)}")
        except Exception as error:  # every waiting request learns of the failure
            for pending in live:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        finally:
            del self._running[key]
        self.timing.record(time.monotonic() - started, len(live))
        for pending, result in zip(live, results, strict=True):
            if not pending.future.done():
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)


class BatchTiming:
    """Recent batch durations as a line: seconds(n) = fixed + per_request x n.

    Fitted by least squares over exponentially weighted recent batches, so it follows the
    machine as it changes. Until batches of different sizes were seen (no slope to fit), a
    batch of n is expected to take the average batch time, scaled up in proportion when n is
    larger than the average batch: an overestimate there refuses requests that would have made
    their deadline, which costs as much as it saves.
    """

    def __init__(self, smoothing: float = 0.1) -> None:
        self.smoothing = smoothing
        self._moments: list[float] | None = None  # means of n, d, n*n, n*d

    @property
    def measured(self) -> bool:
        return self._moments is not None

    def record(self, seconds: float, size: int) -> None:
        sample = [size, seconds, size * size, size * seconds]
        if self._moments is None:
            self._moments = sample
            return
        keep = 1.0 - self.smoothing
        self._moments = [
            keep * m + self.smoothing * x for m, x in zip(self._moments, sample, strict=True)
        ]

    def seconds(self, size: int) -> float:
        mean_n, mean_d, mean_nn, mean_nd = self._moments
        variance = mean_nn - mean_n * mean_n
        if variance > 1e-6 * max(1.0, mean_n * mean_n):
            slope = max(0.0, (mean_nd - mean_n * mean_d) / variance)
            fixed = max(0.0, mean_d - slope * mean_n)
            return fixed + slope * size
        return mean_d * max(1.0, size / mean_n)

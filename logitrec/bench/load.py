"""Drive a RecommenderService with Recommend calls, and what the calls add up to.

Closed loop: N callers, each sending its next request when the previous one is answered (the
load adapts to the server, so it measures capacity, not latency under a given load).
Open loop: requests leave on a fixed arrival schedule whatever the server does, and each one's
latency runs from its *intended* send time. A generator that waits for answers, or skips the
requests it is late for, hides exactly the stalls it should measure (coordinated omission);
this one never skips, and records how late it sent each request, so a report can tell when the
generator itself, not the server, was the bottleneck.
"""

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc

from logitrec.errors import InputError

CHANNEL_OPTIONS = (
    # Each channel its own connection: gRPC otherwise lets channels with equal settings share one.
    ("grpc.use_local_subchannel_pool", 1),
    # A retried call would count once and hide its failure.
    ("grpc.enable_retries", 0),
)
# The first open-loop request is meant to leave this long after the schedule is laid out, so it
# is not late before the generator has started.
SCHEDULE_LEAD_SECONDS = 0.05
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
# A run is flagged as limited by the generator when its p99 lag is over GENERATOR_LAG_SLOP_MS
# and at least GENERATOR_LIMITED_SHARE of the p99 latency: then its own delay is a large part of
# what was measured. Below the slop, lag is the event loop's timer resolution (about 1 ms), not
# a generator falling behind.
GENERATOR_LAG_SLOP_MS = 2.0
GENERATOR_LIMITED_SHARE = 0.2
ARRIVALS = ("uniform", "poisson")

OnAnswer = Callable[[pb.RecommendResponse], None]


@dataclass(frozen=True)
class Connection:
    """Where and how to call: the target, TLS and token, how many channels, the call timeout."""

    target: str
    credentials: grpc.ChannelCredentials | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    channels: int = 1
    timeout: float = 10.0

    def open_channel(self) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(self.target, self.credentials, options=CHANNEL_OPTIONS)


@dataclass(frozen=True)
class Window:
    """A run: `warmup` seconds not measured, then `duration` seconds measured."""

    warmup: float
    duration: float

    @property
    def end(self) -> float:
        return self.warmup + self.duration


@dataclass(frozen=True)
class Calls:
    """Every call of a run; times in seconds from the run's start."""

    intended: np.ndarray  # when it was meant to leave (closed loop: when it left)
    sent: np.ndarray
    finished: np.ndarray
    codes: np.ndarray  # gRPC status code names
    measured: np.ndarray  # meant to leave inside the measurement window
    window: Window
    scheduled: bool  # open loop: the intended times were a schedule


class _CallLog:
    def __init__(self, start: float) -> None:
        self.start = start
        self.rows: list[tuple[float, float, float, str, bool]] = []

    def record(self, intended: float, sent: float, code: str, measured: bool) -> None:
        finished = time.perf_counter()
        self.rows.append((intended - self.start, sent - self.start, finished - self.start,
                          code, measured))  # fmt: skip

    def calls(self, window: Window, scheduled: bool) -> Calls:
        columns = list(zip(*self.rows, strict=True)) if self.rows else [()] * 5
        intended, sent, finished, codes, measured = columns
        return Calls(
            np.array(intended, dtype=float), np.array(sent, dtype=float),
            np.array(finished, dtype=float), np.array(codes, dtype=str),
            np.array(measured, dtype=bool), window, scheduled,
        )  # fmt: skip


async def check_reachable(connection: Connection, seconds: float = 10.0) -> None:
    """Fail early, and clearly, when nothing answers at the target."""
    channel = connection.open_channel()
    try:
        await asyncio.wait_for(channel.channel_ready(), seconds)
    except TimeoutError:
        tls = "with" if connection.credentials is not None else "without"
        raise InputError(
            f"--target {connection.target}: no gRPC server reachable {tls} TLS within "
            f"{seconds:.0f} s"
        ) from None
    finally:
        await channel.close()


async def _recommend(
    stub, request: pb.RecommendRequest, connection: Connection, on_answer: OnAnswer | None
) -> str:
    """One call; its status code name."""
    try:
        response = await stub.Recommend(
            request, timeout=connection.timeout, metadata=connection.metadata
        )
    except grpc.aio.AioRpcError as error:
        return error.code().name
    if on_answer is not None:
        on_answer(response)
    return "OK"


async def closed_loop(
    connection: Connection,
    requests: Sequence[pb.RecommendRequest],
    clients: int,
    window: Window,
    on_answer: OnAnswer | None = None,
) -> Calls:
    """`clients` callers over `connection.channels` channels, each sending its next request when
    the last is answered, until the window ends. `on_answer` sees every measured OK response."""
    channels = [connection.open_channel() for _ in range(connection.channels)]
    stubs = [recommender_pb2_grpc.RecommenderServiceStub(channel) for channel in channels]
    start = time.perf_counter()
    log = _CallLog(start)
    measure_from, stop = start + window.warmup, start + window.end

    async def caller(number: int) -> None:
        stub, index = stubs[number % len(stubs)], number
        while (sent := time.perf_counter()) < stop:
            request = requests[index % len(requests)]
            index += clients
            measured = sent >= measure_from
            code = await _recommend(stub, request, connection, on_answer if measured else None)
            log.record(sent, sent, code, measured)

    try:
        await asyncio.gather(*(caller(number) for number in range(clients)))
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    return log.calls(window, scheduled=False)


def arrival_offsets(rate: float, span: float, arrivals: str, seed: int = 0) -> np.ndarray:
    """Send times (seconds from the start) of the requests of `span` seconds at `rate` per
    second: evenly spaced, or a Poisson process (exponential gaps, seeded: reproducible)."""
    if arrivals == "uniform":
        return np.arange(math.ceil(rate * span)) / rate
    if arrivals != "poisson":
        raise InputError(f"--arrivals: expected one of {', '.join(ARRIVALS)}, got {arrivals!r}")
    generator = np.random.default_rng(seed)
    offsets = np.cumsum(generator.exponential(1 / rate, size=math.ceil(rate * span) + 16))
    while offsets[-1] < span:  # rarely: the draws fell short of the span
        more = np.cumsum(generator.exponential(1 / rate, size=math.ceil(rate) + 16))
        offsets = np.concatenate([offsets, offsets[-1] + more])
    return offsets[offsets < span]


async def open_loop(
    connection: Connection,
    requests: Sequence[pb.RecommendRequest],
    offsets: np.ndarray,
    window: Window,
    on_answer: OnAnswer | None = None,
) -> Calls:
    """Send request i at `offsets[i]` seconds from the start, whether or not earlier ones were
    answered; when late, send at once (never skip) and record by how much."""
    channels = [connection.open_channel() for _ in range(connection.channels)]
    stubs = [recommender_pb2_grpc.RecommenderServiceStub(channel) for channel in channels]
    start = time.perf_counter() + SCHEDULE_LEAD_SECONDS
    log = _CallLog(start)
    in_flight: set[asyncio.Task] = set()
    failures: list[BaseException] = []

    async def send(number: int, intended: float, measured: bool) -> None:
        sent = time.perf_counter()
        stub = stubs[number % len(stubs)]
        request = requests[number % len(requests)]
        code = await _recommend(stub, request, connection, on_answer if measured else None)
        log.record(intended, sent, code, measured)

    def forget(task: asyncio.Task) -> None:
        in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())

    try:
        for number, offset in enumerate(offsets):
            intended = start + float(offset)
            # Even when late: sleep(0) lets the calls in flight read their answers.
            await asyncio.sleep(max(intended - time.perf_counter(), 0.0))
            task = asyncio.create_task(send(number, intended, bool(offset >= window.warmup)))
            in_flight.add(task)
            task.add_done_callback(forget)
        if in_flight:
            await asyncio.wait(set(in_flight))
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    if failures:
        raise failures[0]
    return log.calls(window, scheduled=True)


# -- what the calls add up to (pure) ---------------------------------------------------------------
def latency_summary(seconds: np.ndarray) -> dict[str, float] | None:
    """p50/p90/p99/p999/max/mean in milliseconds; None without values."""
    if seconds.size == 0:
        return None
    milliseconds = seconds * 1000
    summary = {
        name: round(float(np.percentile(milliseconds, q)), 3) for name, q in PERCENTILES.items()
    }
    summary["max"] = round(float(milliseconds.max()), 3)
    summary["mean"] = round(float(milliseconds.mean()), 3)
    return summary


def status_counts(codes: np.ndarray) -> dict[str, int]:
    """Calls per gRPC status code name, OK first, then the most frequent."""
    counts = Counter(codes.tolist())
    ordered = sorted(counts.items(), key=lambda item: (item[0] != "OK", -item[1], item[0]))
    return {code: int(count) for code, count in ordered}


def summarize(calls: Calls) -> dict:
    """A run in numbers. Latency covers the measured OK answers, from the intended send time;
    throughput is the OK answers that arrived inside the window, per second of window."""
    window, measured = calls.window, calls.measured
    ok = calls.codes == "OK"
    arrived_in_window = (calls.finished >= window.warmup) & (calls.finished < window.end)
    latency = latency_summary((calls.finished - calls.intended)[measured & ok])
    summary = {
        "requests": int(measured.sum()),
        "achieved_rps": round(float((ok & arrived_in_window).sum()) / window.duration, 1),
        "status_counts": status_counts(calls.codes[measured]),
        "latency_ms": latency,
        "generator_lag_ms": None,
        "generator_limited": None,
    }
    if calls.scheduled:
        lag = (calls.sent - calls.intended)[measured]
        lag_ms = latency_summary(lag)
        summary["generator_lag_ms"] = lag_ms and {
            key: lag_ms[key] for key in ("p50", "p99", "max", "mean")
        }
        summary["generator_limited"] = bool(
            lag_ms is not None
            and latency is not None
            and lag_ms["p99"] > GENERATOR_LAG_SLOP_MS
            and lag_ms["p99"] >= GENERATOR_LIMITED_SHARE * latency["p99"]
        )
    return summary

"""The backend protocol (load a model version, encode histories, score candidates, answer a
health probe) and the timeout every backend call carries."""

import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import numpy as np

from serving.errors import BackendTimeout, DeadlineExpired
from serving.registry import ModelVersion

T = TypeVar("T")


class Backend(Protocol):
    name: str

    async def load(self, model: ModelVersion) -> None:
        """Make `model` ready to serve (sessions created, or the server has it loaded).
        InputError when the version's files cannot be served (the version is invalid)."""

    async def unload(self, model: ModelVersion) -> None:
        """Drop `model`'s sessions (or have the server unload it). Called once no request can
        reach it any more: its batcher has drained."""

    async def encode(
        self, model: ModelVersion, items: np.ndarray, context: np.ndarray, *, timeout: float
    ) -> np.ndarray:
        """items [B, L] (left-padded), context [B, F] -> user vectors [B, d] float32.
        BackendTimeout after `timeout` seconds."""

    async def score(
        self,
        model: ModelVersion,
        user_vectors: np.ndarray,
        candidates: np.ndarray,
        *,
        timeout: float,
    ) -> np.ndarray:
        """user vectors [B, d] + candidates [B, C] (0 = padding) -> logits [B, C] float32.
        BackendTimeout after `timeout` seconds."""

    async def healthy(self) -> bool:
        """Whether requests can be served now (each check bounded, about a second)."""

    async def close(self) -> None: ...


async def call_with_timeout(
    call: Callable[[float], Awaitable[T]], deadline: float | None, longest: float
) -> T:
    """`call(timeout)` with the time left until `deadline` (time.monotonic(); None: none), at
    most `longest` seconds. A timeout is DeadlineExpired when the deadline set it (nobody waits
    for the answer any more), else BackendTimeout (UNAVAILABLE: the backend is stuck)."""
    left = None if deadline is None else deadline - time.monotonic()
    if left is not None and left <= 0:
        raise DeadlineExpired("the deadline passed before the backend was called")
    if left is None or left > longest:
        try:
            return await call(longest)
        except BackendTimeout:
            raise BackendTimeout(
                f"the backend did not answer within {longest:g} s (--backend-timeout-seconds)"
            ) from None
    try:
        return await call(left)
    except BackendTimeout:
        raise DeadlineExpired("the deadline passed while the backend computed") from None

"""Stage-by-stage progress on stderr for the slow CLI commands, with the timings kept."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console


class StageTimer:
    """Times named stages; shows a spinner per stage when `show` is set (a person is waiting)."""

    def __init__(self, show: bool = True) -> None:
        self.seconds: dict[str, float] = {}
        self._console = Console(stderr=True) if show else None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        if self._console is None:
            yield
        else:
            with self._console.status(f"{name}..."):
                yield
        self.seconds[name] = round(time.perf_counter() - start, 3)

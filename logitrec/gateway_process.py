"""Run `logitrec serve` as a child process and wait until it serves: the one way the main job,
the tests and the benchmarks start a gateway.

Ready means the gateway wrote its --ready-file (every model version loaded and warmed up). A
gateway that exits, or takes longer than the timeout, is reported with the end of its log.
"""

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from logitrec.processes import stop

REPO = Path(__file__).resolve().parents[1]
LOG_TAIL_CHARS = 3000


class GatewayFailed(RuntimeError):
    """The gateway exited or did not become ready in time; the message ends with its log."""


@dataclass(frozen=True)
class GatewayProcess:
    process: subprocess.Popen
    ready_file: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass(frozen=True)
class RunningGateway:
    target: str  # host:port of the gRPC server
    metrics_url: str | None  # the Prometheus endpoint
    process: subprocess.Popen
    log_path: Path


def spawn_gateway(repository: Path, scratch: Path, *args) -> GatewayProcess:
    """Start `logitrec serve` on free ports (a later --port in `args` wins) without waiting."""
    ready = Path(scratch) / "ready.json"
    log_path = Path(scratch) / "gateway.log"
    # A ready file left by an earlier gateway in the same folder would name its dead port.
    ready.unlink(missing_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "logitrec", "serve", "--repository", str(repository),
             "--port", "0", "--metrics-port", "0", "--ready-file", str(ready),
             *map(str, args)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    return GatewayProcess(process, ready, log_path)


def wait_until_ready(gateway: GatewayProcess, timeout: float = 120.0) -> RunningGateway:
    deadline = time.monotonic() + timeout
    while not gateway.ready_file.exists():
        if gateway.process.poll() is not None:
            raise GatewayFailed(f"the gateway exited:\n{gateway.log()[-LOG_TAIL_CHARS:]}")
        if time.monotonic() > deadline:
            raise GatewayFailed(
                f"the gateway was not ready within {timeout:.0f} s:\n"
                f"{gateway.log()[-LOG_TAIL_CHARS:]}"
            )
        time.sleep(0.1)
    ports = json.loads(gateway.ready_file.read_text())
    metrics = ports.get("metrics_port")
    return RunningGateway(
        target=f"127.0.0.1:{ports['port']}",
        metrics_url=f"http://127.0.0.1:{metrics}/metrics" if metrics else None,
        process=gateway.process,
        log_path=gateway.log_path,
    )


@contextlib.contextmanager
def running_gateway(repository: Path, *args, timeout: float = 120.0) -> Iterator[RunningGateway]:
    """A ready gateway for the block; stopped (SIGTERM, then SIGKILL) when it ends."""
    with tempfile.TemporaryDirectory() as scratch:
        gateway = spawn_gateway(repository, Path(scratch), *args)
        try:
            yield wait_until_ready(gateway, timeout)
        finally:
            stop(gateway.process)

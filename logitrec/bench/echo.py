"""An echo RecommenderService: the gateway's proto and gRPC server settings, no model. Every
Recommend gets the same 10-item answer at once, so loading it measures the machine's gRPC floor
(transport, protobuf, the event loop) for the load the gateway is given.
"""

import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc

from logitrec.atomic import write_json
from logitrec.errors import InputError
from logitrec.processes import stop
from serving.config import ServeConfig

# The gateway's defaults for its gRPC server, so that only the model work differs from it.
GATEWAY = ServeConfig(repository=Path("."))

REPO = Path(__file__).resolve().parents[2]
ECHO_ITEMS = 10
LOG_TAIL_CHARS = 3000


def fixed_response() -> pb.RecommendResponse:
    """About what the gateway answers for k=10: ids, titles, logits, probabilities, timings."""
    items = [
        pb.RecommendedItem(
            item_id=f"echo-{rank}",
            logit=10.0 - rank,
            probability=1 / ECHO_ITEMS,
            rank=rank,
            title=f"Echo item {rank}",
        )
        for rank in range(1, ECHO_ITEMS + 1)
    ]
    return pb.RecommendResponse(
        items=items, model="echo", model_version=1, timings=pb.Timings(), request_id="echo"
    )


class EchoRecommender(recommender_pb2_grpc.RecommenderServiceServicer):
    """Recommend answers the fixed response; the other methods are UNIMPLEMENTED."""

    def __init__(self) -> None:
        self.response = fixed_response()

    async def Recommend(self, request, context):
        return self.response


def gateway_server_options() -> list[tuple[str, int]]:
    """The options the gateway gives its gRPC server (serving/server.py), at their defaults."""
    return [
        ("grpc.max_receive_message_length", GATEWAY.max_message_bytes),
        ("grpc.max_send_message_length", GATEWAY.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


async def serve_echo(host: str, port: int, ready_file: Path | None) -> None:
    """Serve until SIGTERM or SIGINT; the bound port goes to `ready_file` once listening."""
    server = grpc.aio.server(
        options=gateway_server_options(), maximum_concurrent_rpcs=GATEWAY.max_concurrent_rpcs
    )
    recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(EchoRecommender(), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        raise InputError(f"--host/--port: cannot listen on {host}:{port} (in use?)") from None
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stopping.set)
    if ready_file is not None:
        write_json(ready_file, {"port": bound})
    print(f"echo RecommenderService on {host}:{bound}", flush=True)
    await stopping.wait()
    await server.stop(grace=1.0)


class EchoFailed(RuntimeError):
    """The echo server exited or did not start in time; the message ends with its output."""


@contextlib.contextmanager
def running_echo(timeout: float = 30.0) -> Iterator[str]:
    """`logitrec bench echo` in a subprocess on a free loopback port; yields its target."""
    with tempfile.TemporaryDirectory() as scratch:
        ready, log_path = Path(scratch) / "ready.json", Path(scratch) / "echo.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "logitrec", "bench", "echo", "--port", "0",
                 "--ready-file", str(ready)],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        try:
            yield f"127.0.0.1:{_wait_for_port(process, ready, log_path, timeout)}"
        finally:
            stop(process)


def _wait_for_port(process: subprocess.Popen, ready: Path, log_path: Path, timeout: float) -> int:
    import json

    deadline = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            why = "exited" if process.poll() is not None else f"was not ready in {timeout:.0f} s"
            tail = log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
            raise EchoFailed(f"the echo server {why}:\n{tail}")
        time.sleep(0.05)
    return int(json.loads(ready.read_text())["port"])

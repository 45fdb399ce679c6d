"""`logitrec serve`: the gRPC gateway over an exported model repository."""

import asyncio
from pathlib import Path

import typer


def serve_command(
    repository: Path | None = typer.Option(None, "--repository", help="Model repository."),
    config: Path | None = typer.Option(None, "--config", help="TOML file with a 'serve' table."),
    model: str | None = typer.Option(None, "--model", help="Default model name."),
    backend: str | None = typer.Option(None, "--backend", help="embedded (default) or triton."),
    triton_url: str | None = typer.Option(None, "--triton-url", help="Triton gRPC host:port."),
    host: str | None = typer.Option(None, "--host", help="Address to listen on."),
    port: int | None = typer.Option(None, "--port", help="gRPC port (default 50051; 0: any)."),
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="Prometheus port."),
    max_batch_size: int | None = typer.Option(None, "--max-batch-size", help="Requests/batch."),
    max_wait_ms: float | None = typer.Option(None, "--max-wait-ms", help="Batch fill wait."),
    max_queue: int | None = typer.Option(None, "--max-queue", help="Queue bound per version."),
    candidate_count: int | None = typer.Option(
        None, "--candidate-count", help="FAISS candidates scored exactly."
    ),
    exact: bool | None = typer.Option(
        None, "--exact/--pruned", help="Score the whole catalog for every request."
    ),
    threads: int | None = typer.Option(None, "--threads", help="ONNX Runtime threads."),
    admission: bool | None = typer.Option(
        None, "--admission/--no-admission", help="Refuse requests that cannot meet their deadline."
    ),
    max_concurrent_rpcs: int | None = typer.Option(
        None, "--max-concurrent-rpcs", help="Calls taken in at once; more are refused (0: off)."
    ),
    drain_seconds: float | None = typer.Option(
        None, "--drain-seconds", help="After SIGTERM: keep serving this long, NOT_SERVING."
    ),
    grace_seconds: float | None = typer.Option(
        None, "--grace-seconds", help="After the drain: time to finish admitted requests."
    ),
    poll_seconds: float | None = typer.Option(
        None, "--poll-seconds", help="Look for new model versions this often (0: off)."
    ),
    admin: bool | None = typer.Option(
        None, "--admin/--no-admin", help="Serve logitrec.admin.v1 (load/unload versions)."
    ),
    backend_timeout_seconds: float | None = typer.Option(
        None, "--backend-timeout-seconds", help="Longest backend call (deadlines cut it)."
    ),
    backend_probe_seconds: float | None = typer.Option(
        None, "--backend-probe-seconds", help="How often the backend's health is checked."
    ),
    ready_file: Path | None = typer.Option(
        None, "--ready-file", help="Write the bound ports here as JSON once serving."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning."),
) -> None:
    """Serve recommendations over gRPC (health, reflection, Prometheus metrics included)."""
    # Taken first: afterwards locals() also holds the imports below.
    overrides = {
        k: v for k, v in locals().items() if k not in ("config", "ready_file", "log_level")
    }
    from logitrec.atomic import write_json
    from serving.config import load_config
    from serving.server import Gateway

    settings = load_config(config, overrides)
    from serving.logs import configure_logging

    configure_logging(log_level)

    def announce(gateway: Gateway) -> None:
        if ready_file is not None:  # whole or absent: a waiting process polls for it
            write_json(ready_file, {"port": gateway.port, "metrics_port": gateway.metrics_port})

    from logitrec.errors import InputError
    from serving.errors import GatewayError

    try:
        asyncio.run(Gateway(settings).serve_forever(on_ready=announce))
    except GatewayError as error:  # e.g. Triton unreachable or without the model: say why
        raise InputError(f"the gateway could not start: {error}") from None

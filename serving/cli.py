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
    metrics: bool | None = typer.Option(
        None, "--metrics/--no-metrics", help="Prometheus /metrics (default: on unless tokens)."
    ),
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="Prometheus port."),
    metrics_host: str | None = typer.Option(
        None, "--metrics-host", help="Address of /metrics (default: --host)."
    ),
    reflection: bool | None = typer.Option(
        None, "--reflection/--no-reflection", help="gRPC reflection (default: on unless tokens)."
    ),
    max_batch_size: int | None = typer.Option(None, "--max-batch-size", help="Requests/batch."),
    max_wait_ms: float | None = typer.Option(None, "--max-wait-ms", help="Batch fill wait."),
    max_queue: int | None = typer.Option(None, "--max-queue", help="Queue bound per version."),
    candidate_count: int | None = typer.Option(
        None, "--candidate-count", help="FAISS candidates scored exactly."
    ),
    search_breadth: int | None = typer.Option(
        None, "--search-breadth", help="FAISS nprobe/efSearch (default: export's calibration)."
    ),
    index_shards: int | None = typer.Option(
        None, "--index-shards", help="Search the FAISS index as this many shards (default 1)."
    ),
    exact_below: int | None = typer.Option(
        None, "--exact-below", help="Score catalogs smaller than this exactly (default 20000)."
    ),
    exact: bool | None = typer.Option(
        None, "--exact/--pruned", help="Score the whole catalog for every request."
    ),
    threads: int | None = typer.Option(None, "--threads", help="ONNX Runtime threads."),
    ort_spinning: bool | None = typer.Option(
        None,
        "--ort-spinning/--no-ort-spinning",
        help="ONNX Runtime threads spin between ops (default off: they sleep).",
    ),
    batches_in_flight: int | None = typer.Option(
        None, "--batches-in-flight", help="Batches per version computing at once (default 1)."
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto (default: CUDA if installed), cpu or cuda: ORT and FAISS."
    ),
    tensorrt: bool | None = typer.Option(
        None, "--tensorrt/--no-tensorrt", help="Embedded: TensorRT provider ahead of CUDA."
    ),
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
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", help="TLS: PEM certificate chain (reloaded when it changes)."
    ),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="TLS: PEM private key."),
    tls_client_ca: Path | None = typer.Option(
        None, "--tls-client-ca", help="Mutual TLS: only clients with a certificate it signed."
    ),
    insecure: bool | None = typer.Option(
        None, "--insecure", help="Allow plaintext on a non-loopback address or to a remote Triton."
    ),
    tokens_file: Path | None = typer.Option(
        None, "--tokens-file", help="TOML of bearer tokens with roles (docs/security.md)."
    ),
    credentials_poll_seconds: float | None = typer.Option(
        None, "--credentials-poll-seconds", help="Re-read changed TLS/token files (0: SIGHUP only)."
    ),
    triton_tls: bool | None = typer.Option(None, "--triton-tls", help="TLS to Triton."),
    triton_root_certs: Path | None = typer.Option(
        None, "--triton-root-certs", help="PEM CAs to trust for Triton."
    ),
    triton_client_cert: Path | None = typer.Option(
        None, "--triton-client-cert", help="Client certificate for a Triton with mutual TLS."
    ),
    triton_client_key: Path | None = typer.Option(
        None, "--triton-client-key", help="Key of --triton-client-cert."
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


token_app = typer.Typer(
    help="Bearer tokens for the gateway (docs/security.md).", no_args_is_help=True
)


@token_app.command("new")
def new_token_command(
    role: str = typer.Option(..., "--role", help="recommend (data plane) or admin (also models)."),
    name: str = typer.Option(..., "--name", help="Who holds it, for the gateway's logs."),
    append: Path | None = typer.Option(
        None, "--append", help="Add its entry (SHA-256 only) to this tokens file."
    ),
) -> None:
    """Make a random token: print it once, and the tokens-file entry that holds only its hash."""
    import re
    import secrets

    from logitrec.atomic import write_text
    from logitrec.errors import InputError
    from serving.auth import ROLES, load_tokens, token_digest

    if role not in ROLES:
        raise InputError(f"--role: expected one of {', '.join(ROLES)}, got {role!r}")
    if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", name):
        raise InputError(f"--name: 1-64 of A-Z a-z 0-9 . _ @ -, got {name!r}")
    token = secrets.token_urlsafe(32)
    entry = f'[[token]]\nname = "{name}"\nrole = "{role}"\nsha256 = "{token_digest(token).hex()}"\n'
    if append is None:
        typer.echo(f"{token}\n\n# tokens file entry:\n{entry}", nl=False)
        return
    before = append.read_text() if append.exists() else ""
    text = before + ("\n" if before and not before.endswith("\n\n") else "") + entry
    scratch = append.with_name(f".{append.name}.check")
    try:  # the file must still load, this name included once, before it replaces the old one
        write_text(scratch, text)
        load_tokens(scratch, environ={})
    except InputError as error:
        raise InputError(str(error).replace(str(scratch), str(append))) from None
    finally:
        scratch.unlink(missing_ok=True)
    write_text(append, text)
    typer.echo(token)

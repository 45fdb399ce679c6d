"""`logitrec bench load` and `logitrec bench echo`: load a gateway, or the same proto with no
model behind it, with one load generator, so the two are measured alike."""

import asyncio
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from logitrec.errors import InputError

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_CLIENTS = 64
TOKEN_ENV = "LOGITREC_TOKEN"  # as logitrec-client reads it

bench_app = typer.Typer(
    help="Load testing: drive the gateway, or an echo server with its proto (the gRPC floor).",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class Plan:
    """What to run: closed loop over client counts, or open loop over arrival rates."""

    mode: str  # "closed" or "open"
    loads: list[float]  # clients per run, or requests per second per run


@bench_app.command("load")
def load_command(
    target: str | None = typer.Option(
        None, "--target", help=f"Gateway host:port (default {DEFAULT_TARGET})."
    ),
    echo: bool = typer.Option(
        False, "--echo", help="Start an echo server (same proto, no model) and load it instead."
    ),
    repository: Path | None = typer.Option(
        None, "--repository", help="Model repository: requests from a version's test histories."
    ),
    model: str | None = typer.Option(None, "--model", help="Model name in --repository."),
    model_version: int | None = typer.Option(
        None, "--model-version", help="Version (default: the latest complete one)."
    ),
    histories: Path | None = typer.Option(
        None, "--histories", help='JSONL: {"history": list of item ids, "k": 10} per line.'
    ),
    k: int = typer.Option(10, "--k", help="Items per Recommend (when a history names none)."),
    clients: str | None = typer.Option(
        None,
        "--clients",
        help=f"Closed loop: concurrent callers (default {DEFAULT_CLIENTS}); "
        "a comma-separated list runs each in turn.",
    ),
    rate: str | None = typer.Option(
        None, "--rate", help="Open loop: requests/s on a fixed schedule; a list sweeps them."
    ),
    arrivals: str = typer.Option("uniform", "--arrivals", help="Open loop: uniform or poisson."),
    seed: int = typer.Option(0, "--seed", help="Poisson arrivals: the random seed."),
    channels: int = typer.Option(1, "--channels", help="gRPC channels (connections) to use."),
    warmup: float = typer.Option(3.0, "--warmup", help="Seconds sent but not measured."),
    duration: float = typer.Option(10.0, "--duration", help="Seconds measured per run."),
    timeout: float = typer.Option(10.0, "--timeout", help="Per-call deadline, seconds."),
    root_certs: Path | None = typer.Option(None, "--root-certs", help="TLS: PEM CAs to trust."),
    client_cert: Path | None = typer.Option(
        None, "--client-cert", help="Mutual TLS: PEM client certificate."
    ),
    client_key: Path | None = typer.Option(None, "--client-key", help="Key of --client-cert."),
    token_file: Path | None = typer.Option(
        None, "--token-file", help=f"Bearer token: the file's first line (else ${TOKEN_ENV})."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the results here as JSON."),
    plot: Path | None = typer.Option(None, "--plot", help="PNG: latency and throughput vs load."),
) -> None:
    """Load a RecommenderService with Recommend calls; print percentiles, write JSON and PNG."""
    from logitrec.bench.load import ARRIVALS, Window

    plan = _plan(clients, rate)
    _check_positive(k=k, channels=channels, duration=duration, timeout=timeout)
    _check_positive(warmup=warmup, allow_zero=True)
    if arrivals not in ARRIVALS:
        raise InputError(f"--arrivals: expected one of {', '.join(ARRIVALS)}, got {arrivals!r}")
    for flag, path in (("--out", out), ("--plot", plot)):
        _check_writable(flag, path)
    requests, source = _requests(repository, model, model_version, histories, k)
    if echo:
        _check_echo_alone(target, root_certs, client_cert, client_key)
    connection = _connection(
        target or DEFAULT_TARGET, channels, timeout, (root_certs, client_cert, client_key),
        token_file,
    )  # fmt: skip
    window = Window(warmup, duration)
    settings = _settings(plan, arrivals, seed, connection, window)
    settings["requests"] = {"source": source, "distinct": len(requests)}
    if echo:
        runs, target_label = _run_on_echo(connection, requests, plan, window, arrivals, seed)
    else:
        runs = asyncio.run(_run_all(connection, requests, plan, window, arrivals, seed))
        target_label = connection.target
    _report(target_label, settings, runs, out, plot)


@bench_app.command("echo")
def echo_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(50051, "--port", help="gRPC port (0: any free one)."),
    ready_file: Path | None = typer.Option(
        None, "--ready-file", help="Write the bound port here as JSON once serving."
    ),
) -> None:
    """Serve RecommenderService answering every Recommend with a fixed 10 items (no model)."""
    from logitrec.bench.echo import serve_echo

    asyncio.run(serve_echo(host, port, ready_file))


# -- checking the options -------------------------------------------------------------------------
def _numbers(text: str, flag: str) -> list[float]:
    """A comma-separated list of positive numbers."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise InputError(
            f"{flag}: expected positive numbers separated by commas, got {text!r}"
        ) from None
    if not values or any(not value > 0 for value in values):
        raise InputError(f"{flag}: expected positive numbers separated by commas, got {text!r}")
    return values


def _plan(clients: str | None, rate: str | None) -> Plan:
    if clients is not None and rate is not None:
        raise InputError("--clients (closed loop) and --rate (open loop): give one of them")
    if rate is not None:
        return Plan("open", _numbers(rate, "--rate"))
    counts = _numbers(clients or str(DEFAULT_CLIENTS), "--clients")
    if any(count != int(count) for count in counts):
        raise InputError(f"--clients: expected whole numbers, got {clients!r}")
    return Plan("closed", [int(count) for count in counts])


def _check_positive(allow_zero: bool = False, **values: float) -> None:
    for name, value in values.items():
        if value < 0 or (value == 0 and not allow_zero):
            expected = "0 or more" if allow_zero else "more than 0"
            raise InputError(f"--{name.replace('_', '-')}: expected {expected}, got {value}")


def _check_writable(flag: str, path: Path | None) -> None:
    """Checked before the run, so a long run is not lost to a typo in the output path."""
    if path is not None and not path.parent.is_dir():
        raise InputError(f"{flag}: folder {path.parent} does not exist")


def _check_echo_alone(target: str | None, *tls_files: Path | None) -> None:
    if target is not None:
        raise InputError("--echo starts its own server on a free port: drop --target")
    if any(tls_files):
        raise InputError("--echo serves plaintext: drop --root-certs/--client-cert/--client-key")


def _requests(repository, model, version, histories, k: int):
    """The requests to send and where they came from."""
    from logitrec.bench.workload import histories_requests, repository_requests

    if histories is not None:
        if repository is not None or model is not None:
            raise InputError("--histories or --repository/--model: give one source of requests")
        return histories_requests(histories, k), str(histories)
    if repository is None or model is None:
        raise InputError("requests: give --repository DIR --model NAME, or --histories FILE")
    return repository_requests(repository, model, version, k), f"{repository} {model}"


def _read(flag: str, path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"{flag}: cannot read {path} ({error.strerror})") from None


def _credentials(root_certs: Path | None, client_cert: Path | None, client_key: Path | None):
    """TLS channel credentials when any TLS file is given; None for plaintext."""
    if (client_cert is None) != (client_key is None):
        raise InputError("--client-cert and --client-key: give both or neither")
    if root_certs is None and client_cert is None:
        return None
    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=_read("--root-certs", root_certs),
        private_key=_read("--client-key", client_key),
        certificate_chain=_read("--client-cert", client_cert),
    )


def _connection(target: str, channels: int, timeout: float, tls_files, token_file):
    from logitrec.bench.load import Connection

    token = _token(token_file)
    return Connection(
        target=target,
        credentials=_credentials(*tls_files),
        metadata=(("authorization", f"Bearer {token}"),) if token else (),
        channels=channels,
        timeout=timeout,
    )


def _settings(plan: Plan, arrivals: str, seed: int, connection, window) -> dict:
    """The run's settings as the JSON records them (never the token itself)."""
    open_loop = plan.mode == "open"
    return {
        "mode": plan.mode,
        "rates_rps" if open_loop else "clients": plan.loads,
        "arrivals": arrivals if open_loop else None,
        "seed": seed if open_loop and arrivals == "poisson" else None,
        "channels": connection.channels,
        "warmup_s": window.warmup,
        "duration_s": window.duration,
        "timeout_s": connection.timeout,
        "latency_from": "intended send time" if open_loop else "send time",
        "tls": connection.credentials is not None,
        "token": bool(connection.metadata),
    }


def _token(token_file: Path | None) -> str | None:
    """The first line of --token-file, else $LOGITREC_TOKEN, else none."""
    if token_file is None:
        return os.environ.get(TOKEN_ENV) or None
    lines = (_read("--token-file", token_file) or b"").decode().strip().splitlines()
    if not lines or not lines[0].strip():
        raise InputError(
            f"--token-file: {token_file} is empty (expected the token on its first line)"
        )
    return lines[0].strip()


# -- running and reporting ------------------------------------------------------------------------
async def _run_all(connection, requests, plan: Plan, window, arrivals: str, seed: int) -> list:
    """Each load of the plan in turn, on fresh channels."""
    from logitrec.bench.load import (
        arrival_offsets,
        check_reachable,
        closed_loop,
        open_loop,
        summarize,
    )

    await check_reachable(connection)
    runs = []
    for number, load in enumerate(plan.loads, start=1):
        label = f"{load} clients" if plan.mode == "closed" else f"{load:g} req/s"
        typer.echo(f"run {number}/{len(plan.loads)}: {label}, "
                   f"{window.warmup:g} s warm-up + {window.duration:g} s", err=True)  # fmt: skip
        if plan.mode == "closed":
            calls = await closed_loop(connection, requests, load, window)
        else:
            offsets = arrival_offsets(load, window.end, arrivals, seed)
            calls = await open_loop(connection, requests, offsets, window)
        runs.append({
            "clients": load if plan.mode == "closed" else None,
            "offered_rps": load if plan.mode == "open" else None,
            **summarize(calls),
        })  # fmt: skip
    return runs


def _run_on_echo(connection, requests, plan: Plan, window, arrivals: str, seed: int):
    """The plan against an echo server of our own; (runs, target label)."""
    from dataclasses import replace

    from logitrec.bench.echo import EchoFailed, running_echo

    try:
        with running_echo() as echo_target:
            echo_connection = replace(connection, target=echo_target)
            runs = asyncio.run(_run_all(echo_connection, requests, plan, window, arrivals, seed))
    except EchoFailed as error:
        raise InputError(str(error)) from None
    return runs, f"echo server at {echo_target} (logitrec bench echo)"


def _report(target: str, settings: dict, runs: list, out: Path | None, plot: Path | None) -> None:
    from logitrec.atomic import write_json
    from logitrec.bench.report import document, table, write_plot

    command = shlex.join(["logitrec", *sys.argv[1:]])
    results = document(command, target, settings, runs)
    typer.echo(f"{target}: {settings['mode']} loop")
    typer.echo(table(results))
    if out is not None:
        write_json(out, results)
    if plot is not None:
        write_plot(plot, results)
    if not any(run["status_counts"].get("OK") for run in runs):
        typer.echo("error: no call was answered OK (see the status counts)", err=True)
        sys.exit(1)

"""Gateway load test: batching on vs off, gateway vs raw backend, per-request cost breakdown.

(Not named serving.py: run as a script, that name would hide the `serving` package.)

    python benchmarks/gateway_load.py --model scratch=artifacts/quality/scratch-default-60min \
        --model minilm=artifacts/quality/minilm-8min --seconds 20

For each model: export it, start `logitrec serve` (embedded backend) and drive it with our own
closed-loop gRPC load generator (asyncio, `--concurrency` clients on one channel each asking
Recommend k=10 for real ML-1M test histories). Scenarios:
- batching: max batch 64 (2 ms wait) vs max batch 1, same load; and batching with ONNX
  Runtime on one thread (`--threads 1`) instead of its default (all cores);
- overhead: the same pipeline called in-process (no gRPC, no queue) on batches of the size the
  gateway formed, vs the gateway's throughput;
- security (`--scenario security` runs it alone): plaintext without tokens vs TLS + a bearer
  token vs mutual TLS + the token, same load, interleaved over `--rounds` rounds.
`--scenario` picks batching (with overhead), security or all; results of the scenarios not run
stay in serving.json.
Server-side stage times come from the responses' timings; "grpc + serialization" is what the
client saw minus what the server measured. Writes benchmarks/results/serving.{json,md,png}.
"""

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from logitrec_client.proto import recommender_pb2 as pb

from logitrec import repository as layout
from logitrec.bench.load import Connection, Window, closed_loop, summarize
from logitrec.gateway_process import GatewayFailed, running_gateway
from serving.backends.embedded import EmbeddedBackend
from serving.config import ServeConfig
from serving.engine import Engine
from serving.metrics import GatewayMetrics
from serving.query import prepare_query

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SCRATCH = REPO / "benchmarks" / "scratch" / "serving-repo"
# The security scenario serves with the batching scenario's batch settings.
SECURITY_BATCHING = ("--max-batch-size", "64")


def export(name: str, checkpoint: Path) -> None:
    command = [
        sys.executable, "-m", "logitrec", "export", "--checkpoint", str(checkpoint),
        "--repository", str(SCRATCH / name), "--name", name, "--version", "1", "--force",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"export failed:\n{result.stderr[-3000:]}")


@contextmanager
def gateway(repository: Path, *args: str):
    try:
        with running_gateway(repository, "--log-level", "warning", *args) as running:
            yield running.target, running.metrics_url
    except GatewayFailed as error:
        raise SystemExit(str(error)) from None


def requests_for(repository: Path, name: str):
    import polars as pl

    version = layout.scorer_dir(repository, name, 1)
    histories = np.load(version / layout.PARITY_HISTORIES)
    ids = pl.read_parquet(version / layout.CATALOG).sort("index")["item_id"].to_list()
    return [
        pb.RecommendRequest(history=[pb.Event(item_id=ids[i - 1]) for i in row if i], k=10)
        for row in histories
    ]


async def drive(
    target: str,
    requests,
    concurrency: int,
    seconds: float,
    warmup: float = 3.0,
    credentials=None,
    metadata: tuple[tuple[str, str], ...] | None = None,
):
    """Closed loop, by `logitrec bench load`'s driver: each client sends its next request when the
    last one is answered. `credentials` (grpc.ChannelCredentials) makes the channel TLS;
    `metadata` goes on every call (e.g. the bearer token). A failed call fails the benchmark."""
    connection = Connection(target, credentials, metadata or (), channels=1, timeout=60)
    timings = []
    calls = await closed_loop(
        connection, requests, concurrency, Window(warmup, seconds),
        on_answer=lambda response: timings.append(response.timings),
    )  # fmt: skip
    summary = summarize(calls)
    failed = {code: n for code, n in summary["status_counts"].items() if code != "OK"}
    if failed:
        raise SystemExit(f"calls to {target} failed: {failed}")
    latency = summary["latency_ms"]
    timing = {
        stage: float(np.mean([getattr(t, f"{stage}_seconds") for t in timings]) * 1000)
        for stage in ("queue", "encode", "retrieve", "score", "total")
    }
    timing["grpc_and_serialization"] = latency["mean"] - timing["total"]
    return {
        "requests": summary["requests"],
        "throughput_rps": summary["achieved_rps"],
        "p50_ms": round(latency["p50"], 2),
        "p99_ms": round(latency["p99"], 2),
        "mean_ms": round(latency["mean"], 2),
        "breakdown_ms": {k: round(v, 3) for k, v in timing.items()},
    }


def mean_batch_size(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    total = float(re.search(r"^logitrec_batch_size_sum (\S+)", text, re.M).group(1))
    count = float(re.search(r"^logitrec_batch_size_count (\S+)", text, re.M).group(1))
    return total / max(count, 1)


def raw_backend(repository: Path, name: str, requests, batch: int, seconds: float) -> dict:
    """The gateway's own batch function, called in-process on fixed batches: no gRPC, no queue."""

    async def run() -> dict:
        engine = Engine(ServeConfig(repository=repository), EmbeddedBackend(), GatewayMetrics())
        model = await engine.load(name, 1)
        queries = [prepare_query(model, [e.item_id for e in r.history], k=10) for r in requests]
        batches = [
            [queries[(b * batch + i) % len(queries)] for i in range(batch)] for b in range(16)
        ]
        for warm in batches[:2]:
            await engine._run_batch(model, warm, [0.0] * batch)
        done, started, index = 0, time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            await engine._run_batch(model, batches[index % len(batches)], [0.0] * batch)
            done += batch
            index += 1
        elapsed = time.perf_counter() - started
        await engine.close()
        return {"batch": batch, "throughput_rps": round(done / elapsed, 1)}

    return asyncio.run(run())


@dataclass(frozen=True)
class SecurityVariant:
    """One way to run the gateway and call it in the security scenario."""

    label: str
    flags: tuple[str, ...]  # `logitrec serve` flags on top of the batching ones
    credentials: Callable[[], object | None]  # the channel's grpc.ChannelCredentials, or None
    metadata: tuple[tuple[str, str], ...] | None  # sent on every call


def make_certificates(folder: Path) -> None:
    script = REPO / "scripts" / "make_certificates.sh"
    result = subprocess.run(["bash", str(script), str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{script} failed:\n{result.stderr[-3000:]}")


def new_recommend_token(tokens_file: Path) -> str:
    """A fresh recommend token, its digest appended to `tokens_file` (the CLI prints it)."""
    command = [
        sys.executable, "-m", "logitrec", "token", "new", "--role", "recommend",
        "--name", "bench", "--append", str(tokens_file),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"logitrec token new failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip()


def security_variants(folder: Path) -> list[SecurityVariant]:
    """Plaintext without tokens (the default), TLS + a bearer token, and mutual TLS + a token;
    certificates and the tokens file are made in `folder`."""
    import grpc

    make_certificates(folder)
    tokens_file = folder / "tokens.toml"
    bearer = (("authorization", f"Bearer {new_recommend_token(tokens_file)}"),)
    ca = (folder / "ca.pem").read_bytes()
    # --metrics: with tokens the gateway turns /metrics off unless asked, and the batch sizes
    # it reports show that every variant batched alike.
    tls = ("--tls-cert", str(folder / "server.pem"), "--tls-key", str(folder / "server.key"),
           "--tokens-file", str(tokens_file), "--metrics")  # fmt: skip
    return [
        SecurityVariant("plaintext", (), lambda: None, None),
        SecurityVariant(
            "TLS + token", tls, lambda: grpc.ssl_channel_credentials(root_certificates=ca), bearer
        ),
        SecurityVariant(
            "mutual TLS + token",
            (*tls, "--tls-client-ca", str(folder / "ca.pem")),
            lambda: grpc.ssl_channel_credentials(
                root_certificates=ca,
                private_key=(folder / "client.key").read_bytes(),
                certificate_chain=(folder / "client.pem").read_bytes(),
            ),
            bearer,
        ),
    ]


def security_scenario(
    repository: Path, requests, concurrency: int, seconds: float, rounds: int
) -> dict:
    """Each variant once per round, same load. The order rotates every round (ABC, BCA, CAB):
    with a multiple of 3 rounds each variant runs in each position equally often, so neither a
    drift in what else the shared machine runs nor the position in a round favours one (with
    the order only reversed every other round, the variant always run in the middle measured
    9% below the other two)."""
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        variants = security_variants(Path(folder))
        for round_index in range(rounds):
            shift = round_index % len(variants)
            order = variants[shift:] + variants[:shift]
            for variant in order:
                flags = (*SECURITY_BATCHING, *variant.flags)
                with gateway(repository, *flags) as (target, metrics_url):
                    outcome = asyncio.run(
                        drive(target, requests, concurrency, seconds,
                              credentials=variant.credentials(), metadata=variant.metadata)
                    )  # fmt: skip
                    outcome["mean_batch_size"] = round(mean_batch_size(metrics_url), 1)
                runs.append({"round": round_index + 1, "variant": variant.label, **outcome})
                print("security", runs[-1], flush=True)
        labels = [variant.label for variant in variants]
    return {"batching_flags": list(SECURITY_BATCHING), "rounds": rounds, "runs": runs,
            **security_summary(runs, labels)}  # fmt: skip


def round_ratios(runs: list[dict], label: str, baseline: str) -> list[float]:
    """`label`'s throughput over `baseline`'s in each round (runs minutes apart, not hours)."""
    rounds = sorted({run["round"] for run in runs})
    rps = {(run["round"], run["variant"]): run["throughput_rps"] for run in runs}
    return [rps[(r, label)] / rps[(r, baseline)] for r in rounds]


def security_summary(runs: list[dict], labels: list[str]) -> dict:
    """Per variant, the mean over rounds; and its throughput over the plaintext one's."""
    mean = {}
    for label in labels:
        mine = [run for run in runs if run["variant"] == label]
        mean[label] = {
            key: round(float(np.mean([run[key] for run in mine])), 2)
            for key in ("throughput_rps", "p50_ms", "p99_ms", "mean_batch_size")
        }
        mean[label]["grpc_and_serialization_ms"] = round(
            float(np.mean([run["breakdown_ms"]["grpc_and_serialization"] for run in mine])), 2
        )
    plain = mean[labels[0]]["throughput_rps"]
    ratio = {label: round(mean[label]["throughput_rps"] / plain, 3) for label in labels[1:]}
    return {"mean": mean, "throughput_over_plaintext": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="NAME=CHECKPOINT_DIR")
    parser.add_argument("--report-only", action="store_true", help="Re-render from the JSON.")
    parser.add_argument(
        "--scenario",
        choices=("all", "batching", "security"),
        default="all",
        help="Run only these; the other scenarios' results in serving.json are kept.",
    )
    parser.add_argument("--rounds", type=int, default=2, help="Security scenario: rounds.")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    if args.report_only:
        write_report(json.loads((RESULTS / "serving.json").read_text()))
        return
    if not args.model:
        parser.error("--model NAME=CHECKPOINT_DIR is required")
    results = previous_results()
    run = {
        "command": "python benchmarks/gateway_load.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (gateway and load generator "
        "share them)",
        "concurrency": args.concurrency,
        "seconds": args.seconds,
    }
    if args.scenario in ("all", "batching"):
        results.update(run)  # the top-level run description is the batching scenario's
    for spec in args.model:
        name, checkpoint = spec.split("=", 1)
        export(name, Path(checkpoint))
        repository = SCRATCH / name
        requests = requests_for(repository, name)
        entry = results["models"].setdefault(name, {"checkpoint": checkpoint})
        if args.scenario in ("all", "batching"):
            entry["checkpoint"] = checkpoint
            entry.update(batching_scenarios(repository, name, requests, args))
        if args.scenario in ("all", "security"):
            entry["security"] = {
                **run,
                "checkpoint": checkpoint,
                **security_scenario(
                    repository, requests, args.concurrency, args.seconds, args.rounds
                ),
            }
            print(name, "security", entry["security"]["throughput_over_plaintext"], flush=True)
    write_report(results)


def previous_results() -> dict:
    """serving.json as the last runs left it, so a run of some scenarios keeps the others."""
    path = RESULTS / "serving.json"
    return json.loads(path.read_text()) if path.exists() else {"models": {}}


def batching_scenarios(repository: Path, name: str, requests, args) -> dict:
    entry = {"scenarios": {}}
    for label, flags in (("batching", ["--max-batch-size", "64"]),
                         ("no batching", ["--max-batch-size", "1"]),
                         # ONNX Runtime on one thread leaves a core to gRPC and the loop.
                         ("batching, --threads 1", ["--max-batch-size", "64",
                                                    "--threads", "1"])):  # fmt: skip
        with gateway(repository, *flags) as (target, metrics_url):
            outcome = asyncio.run(drive(target, requests, args.concurrency, args.seconds))
            outcome["mean_batch_size"] = round(mean_batch_size(metrics_url), 1)
        entry["scenarios"][label] = outcome
        print(name, label, outcome, flush=True)
    formed = max(1, round(entry["scenarios"]["batching"]["mean_batch_size"]))
    entry["raw_backend"] = raw_backend(repository, name, requests, formed, args.seconds / 2)
    gateway_rps = entry["scenarios"]["batching"]["throughput_rps"]
    entry["gateway_over_raw"] = round(gateway_rps / entry["raw_backend"]["throughput_rps"], 3)
    on, off = entry["scenarios"]["batching"], entry["scenarios"]["no batching"]
    entry["batching_speedup"] = round(on["throughput_rps"] / off["throughput_rps"], 2)
    print(name, "raw", entry["raw_backend"], "ratio", entry["gateway_over_raw"], flush=True)
    return entry


def write_report(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Serving: the gateway under load (embedded backend)", ""]
    batching = {name: e for name, e in results["models"].items() if "scenarios" in e}
    if batching:
        lines += [
            f"Machine: {results['machine']}. Date {results['date']}. Load: "
            f"{results['concurrency']} concurrent closed-loop gRPC clients, Recommend k=10 on "
            f"real ML-1M test histories, {results['seconds']:.0f} s measured after 3 s warm-up.",
            f"Command: `{results['command']}`",
            "",
            "Targets (issue 5): scratch model, batching >= 5x the throughput of max batch 1 with a",
            "lower p99; minilm model, gateway >= 80% of the raw backend's in-process throughput.",
            "",
        ]
        for name, entry in batching.items():
            lines += batching_lines(name, entry)
        lines += verdict(batching)
    for name, entry in results["models"].items():
        if "security" in entry:
            lines += security_lines(name, entry["security"])
    (RESULTS / "serving.md").write_text("\n".join(lines))
    plot(results)


def batching_lines(name: str, entry: dict) -> list[str]:
    on, off = entry["scenarios"]["batching"], entry["scenarios"]["no batching"]
    lines = [
        f"## {name} (`{entry['checkpoint']}`)",
        "",
        "| scenario | throughput (req/s) | p50 ms | p99 ms | mean batch |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, s in entry["scenarios"].items():
        lines.append(
            f"| {label} | {s['throughput_rps']} | {s['p50_ms']} | {s['p99_ms']} | "
            f"{s['mean_batch_size']} |"
        )
    raw = entry["raw_backend"]
    lines += [
        "",
        f"- Batching speed-up: **{entry['batching_speedup']}x** throughput; p99 "
        f"{on['p99_ms']} ms vs {off['p99_ms']} ms.",
        f"- Raw backend in-process at batch {raw['batch']}: {raw['throughput_rps']} req/s; "
        f"gateway/raw = **{entry['gateway_over_raw']:.0%}**.",
        "",
        "Per-request cost with batching (mean ms; batched stages are the batch's time):",
        "",
        "| queue | encode | retrieve | score | server total | gRPC + serialization |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    b = on["breakdown_ms"]
    lines.append(
        f"| {b['queue']:.2f} | {b['encode']:.2f} | {b['retrieve']:.2f} | {b['score']:.2f} | "
        f"{b['total']:.2f} | {b['grpc_and_serialization']:.2f} |"
    )
    lines.append("")
    return lines


def security_lines(name: str, security: dict) -> list[str]:
    """The security scenario: every round's numbers, then the means and the ratios."""
    lines = [
        f"## {name}: TLS + bearer token on vs off (`{security['checkpoint']}`)",
        "",
        f"Machine: {security['machine']}. Date {security['date']}. Load: "
        f"{security['concurrency']} concurrent closed-loop gRPC clients on one channel, "
        f"Recommend k=10, {security['seconds']:.0f} s measured after 3 s warm-up, gateway "
        f"`{' '.join(security['batching_flags'])}`; a fresh gateway per run, the variants "
        f"interleaved over {security['rounds']} round(s), the order rotated every "
        "round.",
        f"Command: `{security['command']}`",
        "",
        "TLS: server certificate from `scripts/make_certificates.sh`; token: one recommend "
        "token (`logitrec token new`) in `--tokens-file`, sent as `authorization: Bearer` "
        "on every call; mutual TLS adds `--tls-client-ca` and a client certificate. The "
        "secure gateways run with `--metrics` so their batch sizes can be compared.",
        "",
        "| round | variant | throughput (req/s) | p50 ms | p99 ms | mean batch | "
        "client - server ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in security["runs"]:
        lines.append(
            f"| {run['round']} | {run['variant']} | {run['throughput_rps']} | {run['p50_ms']} | "
            f"{run['p99_ms']} | {run['mean_batch_size']} | "
            f"{run['breakdown_ms']['grpc_and_serialization']:.2f} |"
        )
    lines += [
        "",
        "Means over the rounds:",
        "",
        "| variant | throughput (req/s) | rounds' range | vs plaintext | p50 ms | p99 ms | "
        "mean batch | client - server ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, m in security["mean"].items():
        ratio = security["throughput_over_plaintext"].get(label, 1.0)
        low, high = throughput_range(security["runs"], label)
        lines.append(
            f"| {label} | {m['throughput_rps']} | {low}-{high} | **{ratio:.3f}** | "
            f"{m['p50_ms']} | {m['p99_ms']} | {m['mean_batch_size']} | "
            f"{m['grpc_and_serialization_ms']:.2f} |"
        )
    plain_label = next(iter(security["mean"]))
    low, high = throughput_range(security["runs"], plain_label)
    noise = (high - low) / 2 / security["mean"][plain_label]["throughput_rps"]
    lines.append("")
    for label, ratio in security["throughput_over_plaintext"].items():
        within = abs(ratio - 1) <= noise
        per_round = round_ratios(security["runs"], label, plain_label)
        lines.append(
            f"- {label}: **{ratio:.2f}x** the plaintext throughput (ratio of the means; within "
            f"each round {', '.join(f'{r:.2f}' for r in per_round)}, median "
            f"{float(np.median(per_round)):.2f}); the plaintext runs alone spread "
            f"+-{noise:.0%} around their mean, so the difference is "
            f"{'within run-to-run noise: no cost measurable here' if within else 'beyond it'}."
        )
    lines += [
        "",
        '"client - server" is the latency the client saw minus the server\'s own total: '
        "gRPC, protobuf, and here the TLS records and the token check, which run before the "
        "server's clock starts.",
        "",
    ]
    return lines


def verdict(models: dict) -> list[str]:
    lines = ["## Against the targets", ""]
    if "scratch" in models:
        entry = models["scratch"]
        on, off = entry["scenarios"]["batching"], entry["scenarios"]["no batching"]
        met = entry["batching_speedup"] >= 5 and on["p99_ms"] < off["p99_ms"]
        lines.append(
            f"- scratch, batching >= 5x: {entry['batching_speedup']}x, p99 "
            f"{on['p99_ms']} vs {off['p99_ms']} ms: **{'met' if met else 'NOT met'}**."
        )
    if "minilm" in models:
        ratio = models["minilm"]["gateway_over_raw"]
        lines.append(
            f"- minilm, gateway >= 80% of raw: {ratio:.0%}: "
            f"**{'met' if ratio >= 0.8 else 'NOT met'}**."
        )
    if "scratch" in models:
        entry = models["scratch"]
        on, off = entry["scenarios"]["batching"], entry["scenarios"]["no batching"]
        budget_ms = 1000 / (5 * off["throughput_rps"])
        encode_ms = on["breakdown_ms"]["encode"] / on["mean_batch_size"]
        lines += [
            "",
            "Why not 5x on this machine: batching removes per-call costs, not per-history",
            "compute, and the unbatched gateway is already cheap per call. 5x the unbatched",
            f"{off['throughput_rps']} req/s leaves {budget_ms:.2f} ms of the machine's wall time",
            "per request for everything on both cores: the load generator's gRPC client, the",
            "server's gRPC and protobuf, the queue, encoder, candidates, scorer and top-k. With",
            f"batching the encoder stage alone takes {encode_ms:.2f} ms per history (a batch of "
            f"{on['mean_batch_size']} in {on['breakdown_ms']['encode']:.1f} ms while sharing the",
            "cores with gRPC and the clients; alone it is faster: results/export.md), and gRPC",
            "work is per request whatever the batch. `--threads 1` (one ONNX Runtime thread,",
            "a core left to gRPC and the event loop) serves this small model faster; the",
            "compute-bound minilm is slower with it, so the default stays ONNX Runtime's.",
            "Batching pays where one call has a large fixed cost that a batch shares: a GPU's",
            "kernel launches and transfers (not measured: no GPU time left this session).",
            "",
        ]
    return lines


def throughput_range(runs: list[dict], label: str) -> tuple[float, float]:
    mine = [run["throughput_rps"] for run in runs if run["variant"] == label]
    return min(mine), max(mine)


def plot(results: dict) -> None:
    """Batching on vs off (throughput, p99) and TLS + token on vs off (throughput)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batching = {name: e for name, e in results["models"].items() if "scenarios" in e}
    security = {name: e["security"] for name, e in results["models"].items() if "security" in e}
    panels = (2 if batching else 0) + (1 if security else 0)
    if not panels:
        return
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.5), squeeze=False)
    axes = list(axes[0])
    if batching:
        plot_batching(axes[0], axes[1], batching)
    if security:
        plot_security(axes[-1], security)
    fig.tight_layout()
    fig.savefig(RESULTS / "serving.png", dpi=90)


def plot_batching(throughput_axis, p99_axis, models: dict) -> None:
    x = np.arange(len(models))
    for offset, label in ((-0.2, "batching"), (0.2, "no batching")):
        scenarios = [entry["scenarios"][label] for entry in models.values()]
        throughput_axis.bar(x + offset, [s["throughput_rps"] for s in scenarios], 0.4, label=label)
        p99_axis.bar(x + offset, [s["p99_ms"] for s in scenarios], 0.4, label=label)
    for axis, title in ((throughput_axis, "throughput, req/s"), (p99_axis, "p99 latency, ms")):
        axis.set_xticks(x, list(models))
        axis.set_title(title)
        axis.legend()


def plot_security(axis, security: dict) -> None:
    """Mean throughput per variant, the rounds' range as error bars, each bar labelled with its
    ratio to plaintext."""
    x = np.arange(len(security))
    labels = list(next(iter(security.values()))["mean"])
    width = 0.8 / len(labels)
    for index, label in enumerate(labels):
        offset = (index - (len(labels) - 1) / 2) * width
        means = [entry["mean"][label]["throughput_rps"] for entry in security.values()]
        ranges = [throughput_range(entry["runs"], label) for entry in security.values()]
        spread = [[m - low for m, (low, _) in zip(means, ranges, strict=True)],
                  [high - m for m, (_, high) in zip(means, ranges, strict=True)]]  # fmt: skip
        bars = axis.bar(x + offset, means, width, yerr=spread, capsize=4, label=label)
        ratios = [entry["throughput_over_plaintext"].get(label, 1.0) for entry in security.values()]
        axis.bar_label(bars, [f"{r:.2f}x" for r in ratios], fontsize=8)
    axis.set_xticks(x, list(security))
    axis.set_title("TLS + token: mean throughput, req/s")
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(labels))


if __name__ == "__main__":
    main()

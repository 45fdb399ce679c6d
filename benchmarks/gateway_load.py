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
  gateway formed, vs the gateway's throughput.
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
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc

from logitrec import repository as layout
from logitrec.gateway_process import GatewayFailed, running_gateway
from serving.backends.embedded import EmbeddedBackend
from serving.config import ServeConfig
from serving.engine import Engine
from serving.metrics import GatewayMetrics
from serving.query import prepare_query

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SCRATCH = REPO / "benchmarks" / "scratch" / "serving-repo"


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


async def drive(target: str, requests, concurrency: int, seconds: float, warmup: float = 3.0):
    import grpc

    channel = grpc.aio.insecure_channel(target)
    stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
    records = []
    started = time.monotonic()
    measure_from, stop = started + warmup, started + warmup + seconds

    async def client(offset: int) -> None:
        index = offset
        while time.monotonic() < stop:
            request = requests[index % len(requests)]
            index += concurrency
            sent = time.perf_counter()
            response = await stub.Recommend(request, timeout=60)
            elapsed = time.perf_counter() - sent
            if time.monotonic() >= measure_from:
                records.append((elapsed, response.timings))

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    await channel.close()
    latencies = np.array([r[0] for r in records])
    timing = {
        stage: float(np.mean([getattr(r[1], f"{stage}_seconds") for r in records]) * 1000)
        for stage in ("queue", "encode", "retrieve", "score", "total")
    }
    timing["grpc_and_serialization"] = float(latencies.mean() * 1000) - timing["total"]
    return {
        "requests": len(records),
        "throughput_rps": round(len(records) / seconds, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2),
        "mean_ms": round(float(latencies.mean()) * 1000, 2),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="NAME=CHECKPOINT_DIR")
    parser.add_argument("--report-only", action="store_true", help="Re-render from the JSON.")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    if args.report_only:
        write_report(json.loads((RESULTS / "serving.json").read_text()))
        return
    if not args.model:
        parser.error("--model NAME=CHECKPOINT_DIR is required")
    results = {
        "command": "python benchmarks/gateway_load.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (gateway and load generator "
        "share them)",
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "models": {},
    }
    for spec in args.model:
        name, checkpoint = spec.split("=", 1)
        export(name, Path(checkpoint))
        repository = SCRATCH / name
        requests = requests_for(repository, name)
        entry = {"checkpoint": checkpoint, "scenarios": {}}
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
        results["models"][name] = entry
    write_report(results)


def write_report(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Serving: the gateway under load (embedded backend)",
        "",
        f"Machine: {results['machine']}. Date {results['date']}. Load: {results['concurrency']} "
        f"concurrent closed-loop gRPC clients, Recommend k=10 on real ML-1M test histories, "
        f"{results['seconds']:.0f} s measured after 3 s warm-up.",
        f"Command: `{results['command']}`",
        "",
        "Targets (issue 5): scratch model, batching >= 5x the throughput of max batch 1 with a",
        "lower p99; minilm model, gateway >= 80% of the raw backend's in-process throughput.",
        "",
    ]
    for name, entry in results["models"].items():
        on, off = entry["scenarios"]["batching"], entry["scenarios"]["no batching"]
        lines += [
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
    lines += verdict(results)
    (RESULTS / "serving.md").write_text("\n".join(lines))
    plot(results)


def verdict(results: dict) -> list[str]:
    lines = ["## Against the targets", ""]
    models = results["models"]
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


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    x = np.arange(len(models))
    for offset, label in ((-0.2, "batching"), (0.2, "no batching")):
        axes[0].bar(
            x + offset,
            [results["models"][m]["scenarios"][label]["throughput_rps"] for m in models],
            0.4,
            label=label,
        )
        axes[1].bar(
            x + offset,
            [results["models"][m]["scenarios"][label]["p99_ms"] for m in models],
            0.4,
            label=label,
        )
    for axis, title in zip(axes, ("throughput, req/s", "p99 latency, ms"), strict=True):
        axis.set_xticks(x, models)
        axis.set_title(title)
        axis.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "serving.png", dpi=90)


if __name__ == "__main__":
    main()

"""Reliability of the gateway under what production brings: overload, SIGTERM during traffic.

    python benchmarks/reliability.py --checkpoint artifacts/checkpoints/demo [--overload-seconds 60]

Exports the checkpoint, starts real `logitrec serve` processes (embedded backend) and drives
them with an open-loop gRPC load generator (requests sent at a fixed rate whatever the answers,
as independent callers do), each request with a 1 s deadline. Scenarios:
- capacity: closed-loop throughput with 64 clients (what the gateway can do);
- overload: offered load from 0.5x to 2x capacity, with admission control on and off; goodput =
  answers that came back OK within their deadline, per second; the headline run holds 2x for
  --overload-seconds;
- drain: SIGTERM while 16 closed-loop clients send; every request must end OK or be refused
  with UNAVAILABLE (a client retries those elsewhere): anything else is lost.
Writes benchmarks/results/reliability.{json,md,png}.
"""

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from gateway_load import SCRATCH, drive, export, requests_for
from logitrec_client.proto import recommender_pb2_grpc

from logitrec.atomic import write_json
from logitrec.gateway_process import running_gateway

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
NAME = "reliability"
DEADLINE_SECONDS = 1.0
LOADS = (0.5, 1.0, 1.5, 2.0)  # offered load, in multiples of capacity
CHANNELS = 4


async def open_loop(target: str, requests, rate: float, seconds: float) -> dict:
    """Send `rate` requests per second for `seconds`, each with the deadline; record outcomes."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
    stubs = [recommender_pb2_grpc.RecommenderServiceStub(c) for c in channels]
    outcomes: list[tuple[str, float]] = []  # (status name, seconds)

    async def one(index: int) -> None:
        sent = time.perf_counter()
        try:
            await stubs[index % CHANNELS].Recommend(
                requests[index % len(requests)], timeout=DEADLINE_SECONDS
            )
            code = "OK"
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        outcomes.append((code, time.perf_counter() - sent))

    started, tasks, index = time.monotonic(), [], 0
    while (now := time.monotonic()) < started + seconds:
        due = int((now - started) * rate)
        while index < due:
            tasks.append(asyncio.ensure_future(one(index)))
            index += 1
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    for channel in channels:
        await channel.close()
    return summarize(outcomes, rate, seconds)


def summarize(outcomes: list[tuple[str, float]], rate: float, seconds: float) -> dict:
    codes: dict[str, int] = {}
    for code, _ in outcomes:
        codes[code] = codes.get(code, 0) + 1
    ok = np.array([s for c, s in outcomes if c == "OK"])
    refused = np.array([s for c, s in outcomes if c == "RESOURCE_EXHAUSTED"])
    in_time = int((ok <= DEADLINE_SECONDS).sum()) if len(ok) else 0
    return {
        "offered_rps": round(rate, 1),
        "sent": len(outcomes),
        "codes": codes,
        "goodput_rps": round(in_time / seconds, 1),
        "ok_p99_ms": round(float(np.percentile(ok, 99)) * 1000, 1) if len(ok) else None,
        "refused_p99_ms": round(float(np.percentile(refused, 99)) * 1000, 2)
        if len(refused)
        else None,
    }


def capacity(target: str, requests, seconds: float) -> float:
    return asyncio.run(drive(target, requests, 64, seconds))["throughput_rps"]


def overload(repository: Path, requests, args) -> dict:
    results: dict = {"runs": []}
    with running_gateway(repository, "--log-level", "warning") as gateway:
        results["capacity_rps"] = capacity(gateway.target, requests, args.capacity_seconds)
    print("capacity", results["capacity_rps"], "requests/s", flush=True)
    for admission in (True, False):
        flag = "--admission" if admission else "--no-admission"
        for load in LOADS:
            seconds = args.overload_seconds if load == max(LOADS) else args.sweep_seconds
            with running_gateway(repository, flag, "--log-level", "warning") as gateway:
                rate = load * results["capacity_rps"]
                run = asyncio.run(open_loop(gateway.target, requests, rate, seconds))
            run.update(admission=admission, load=load, seconds=seconds)
            run["goodput_share"] = round(run["goodput_rps"] / results["capacity_rps"], 3)
            results["runs"].append(run)
            print(run, flush=True)
    return results


def drain(repository: Path, requests, clients: int = 16) -> dict:
    """SIGTERM under closed-loop load: how many requests ended other than OK or UNAVAILABLE."""

    async def client(stub, offset: int, outcomes: list) -> None:
        index = offset
        while True:
            try:
                await stub.Recommend(requests[index % len(requests)], timeout=20)
                outcomes.append("OK")
            except grpc.aio.AioRpcError as error:
                outcomes.append(error.code().name)
                if error.code() == grpc.StatusCode.UNAVAILABLE:
                    return
            index += clients

    async def run(target: str, process) -> dict:
        channel = grpc.aio.insecure_channel(target)
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        outcomes: list[str] = []
        tasks = [asyncio.ensure_future(client(stub, i, outcomes)) for i in range(clients)]
        await asyncio.sleep(3)  # steady traffic before the signal
        before = len(outcomes)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        exit_code = await asyncio.to_thread(process.wait, 60)
        await channel.close()
        codes = {c: outcomes.count(c) for c in set(outcomes)}
        lost = sum(n for c, n in codes.items() if c not in ("OK", "UNAVAILABLE"))
        return {
            "clients": clients,
            "answered_before_sigterm": before,
            "answered_after_sigterm": outcomes[before:].count("OK"),
            "codes": codes,
            "lost": lost,
            "exit_code": exit_code,
            "seconds_to_exit": round(time.monotonic() - signalled, 2),
        }

    flags = ("--drain-seconds", "2", "--grace-seconds", "10", "--log-level", "warning")
    with running_gateway(repository, *flags) as gateway:
        result = asyncio.run(run(gateway.target, gateway.process))
    result["drain_seconds"] = 2.0
    print("drain", result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--capacity-seconds", type=float, default=15)
    parser.add_argument("--sweep-seconds", type=float, default=15)
    parser.add_argument("--overload-seconds", type=float, default=60)
    parser.add_argument("--report-only", action="store_true", help="Re-render from the JSON.")
    args = parser.parse_args()
    if args.report_only:
        write_report(json.loads((RESULTS / "reliability.json").read_text()))
        return
    if args.checkpoint is None:
        parser.error("--checkpoint is required")
    export(NAME, args.checkpoint)
    repository = SCRATCH / NAME
    requests = requests_for(repository, NAME)
    results = {
        "command": "python benchmarks/reliability.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (gateway and load generator "
        "share them)",
        "deadline_seconds": DEADLINE_SECONDS,
        "overload": overload(repository, requests, args),
        "drain": drain(repository, requests),
    }
    write_report(results)


def write_report(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "reliability.json", results)
    (RESULTS / "reliability.md").write_text(report_text(results))
    plot(results, RESULTS / "reliability.png")
    print(f"wrote {RESULTS / 'reliability.md'}")


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def report_text(results: dict) -> str:
    load = results["overload"]
    capacity_rps = load["capacity_rps"]
    rows = [
        "| admission | offered (x capacity) | seconds | goodput req/s | goodput / capacity "
        "| OK p99 ms | refused p99 ms | outcomes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in load["runs"]:
        codes = ", ".join(f"{k} {v}" for k, v in sorted(run["codes"].items()))
        rows.append(
            f"| {'on' if run['admission'] else 'off'} | {run['load']} | {run['seconds']:.0f} "
            f"| {run['goodput_rps']} | {run['goodput_share']} | {run['ok_p99_ms']} "
            f"| {run['refused_p99_ms']} | {codes} |"
        )
    peak = next(r for r in load["runs"] if r["admission"] and r["load"] == max(LOADS))
    drain_result = results["drain"]
    refused_fast = peak["refused_p99_ms"] is not None and peak["refused_p99_ms"] < 10
    lines = [
        "# Reliability: overload and shutdown",
        "",
        f"{results['date']}, {results['machine']}. `{results['command']}`. Every request carries "
        f"a {results['deadline_seconds']:.0f} s deadline; goodput counts answers that came back "
        "OK within it. Capacity (closed loop, 64 clients): "
        f"**{capacity_rps} requests/s**.",
        "",
        *rows,
        "",
        "## Against the targets (2x capacity, admission on)",
        f"- goodput >= 90% of capacity: {peak['goodput_share']:.0%} "
        f"({peak['goodput_rps']} of {capacity_rps} req/s): "
        f"{_verdict(peak['goodput_share'] >= 0.9)}",
        f"- rejections answered in < 10 ms p99: {peak['refused_p99_ms']} ms: "
        f"{_verdict(refused_fast)}",
        f"- admitted p99 within the deadline: {peak['ok_p99_ms']} ms: "
        f"{_verdict(peak['ok_p99_ms'] is not None and peak['ok_p99_ms'] <= 1000)}",
        f"- SIGTERM under load ({drain_result['clients']} clients, drain "
        f"{drain_result['drain_seconds']:.0f} s): {drain_result['lost']} lost "
        f"({drain_result['answered_after_sigterm']} answered after the signal, outcomes "
        f"{drain_result['codes']}, exit code {drain_result['exit_code']} after "
        f"{drain_result['seconds_to_exit']} s): {_verdict(drain_result['lost'] == 0)}",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    load = results["overload"]
    fig, axis = plt.subplots(figsize=(6, 4))
    for admission, style in ((True, "o-"), (False, "s--")):
        runs = [r for r in load["runs"] if r["admission"] == admission]
        axis.plot(
            [r["offered_rps"] for r in runs],
            [r["goodput_rps"] for r in runs],
            style,
            label=f"admission {'on' if admission else 'off'}",
        )
    axis.axhline(load["capacity_rps"], color="gray", linewidth=0.8, label="capacity")
    axis.set_xlabel("offered load (requests/s)")
    axis.set_ylabel("goodput (OK within 1 s, requests/s)")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()

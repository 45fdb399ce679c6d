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
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import grpc
import numpy as np
from gateway_load import SCRATCH, drive, export, requests_for
from grpc_health.v1 import health_pb2, health_pb2_grpc
from logitrec_client.proto import recommender_pb2_grpc

from logitrec.atomic import write_json
from logitrec.gateway_process import running_gateway

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
NAME = "reliability"
DEADLINE_SECONDS = 1.0
LOADS = (0.5, 0.8, 1.0, 1.5, 2.0)  # offered load, in multiples of capacity
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


async def closed_loop_rate(target: str, request, seconds: float, clients: int = 64) -> float:
    """Calls per second, answered or refused, that `clients` closed-loop callers get through."""
    channel = grpc.aio.insecure_channel(target)
    stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
    done, stop = 0, time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        while time.monotonic() < stop:
            with suppress(grpc.aio.AioRpcError):
                await stub.Recommend(request, timeout=10)
            done += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    await channel.close()
    return done / seconds


def refusal_cost(repository: Path, requests, seconds: float) -> dict:
    """What a refusal costs the gateway against an answer: the rates of each, closed loop. Every
    call, refused or not, passes through the Python gRPC layer of one process; from the two
    rates follows the most goodput any refusal policy can keep at twice the capacity."""
    answered = requests[0]
    refused = type(answered)()
    refused.CopyFrom(answered)
    refused.k = 0  # INVALID_ARGUMENT at the edge: the cheapest refusal the handler can make
    with running_gateway(repository, "--log-level", "warning") as gateway:
        answer_rate = asyncio.run(closed_loop_rate(gateway.target, answered, seconds))
        refusal_rate = asyncio.run(closed_loop_rate(gateway.target, refused, seconds))
    # Serving x of an offered 2 * answer_rate and refusing the rest fits in one process when
    # x / answer_rate + (2 * answer_rate - x) / refusal_rate <= 1.
    offered = 2 * answer_rate
    best = (1 - offered / refusal_rate) / (1 / answer_rate - 1 / refusal_rate)
    result = {
        "answers_per_second": round(answer_rate, 1),
        "refusals_per_second": round(refusal_rate, 1),
        "refusal_over_answer_cost": round(answer_rate / refusal_rate, 3),
        "best_goodput_share_at_2x": round(max(0.0, best) / answer_rate, 3),
    }
    print("refusal cost", result, flush=True)
    return result


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

    async def run(target: str, process) -> dict:
        channel = grpc.aio.insecure_channel(target)
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        calls: list[tuple[str, int]] = []
        traffic = asyncio.ensure_future(
            closed_loop(stub, requests, calls, asyncio.Event(), clients, until_refused=True)
        )
        await asyncio.sleep(3)  # steady traffic before the signal
        before = len(calls)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(traffic, 60)
        exit_code = await asyncio.to_thread(process.wait, 60)
        await channel.close()
        outcomes = [code for code, _ in calls]
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


async def closed_loop(
    stub, requests, outcomes: list, stop: asyncio.Event, clients: int, *, until_refused=False
) -> None:
    """`clients` closed-loop callers append (code, model_version) of every call to `outcomes`
    until `stop` is set; with `until_refused`, each also stops at its first UNAVAILABLE (a real
    client would go to another replica)."""

    async def client(offset: int) -> None:
        index = offset
        while not stop.is_set():
            try:
                response = await stub.Recommend(requests[index % len(requests)], timeout=20)
                outcomes.append(("OK", response.model_version))
            except grpc.aio.AioRpcError as error:
                outcomes.append((error.code().name, 0))
                if until_refused and error.code() == grpc.StatusCode.UNAVAILABLE:
                    return
            index += clients

    await asyncio.gather(*(client(i) for i in range(clients)))


def roll_in(checkpoint: Path, clients: int = 16) -> dict:
    """A new version exported and loaded (admin LoadModel) while closed-loop clients send."""
    from logitrec_client.proto import admin_pb2, admin_pb2_grpc

    repository = SCRATCH / "roll-in"
    if repository.exists():
        shutil.rmtree(repository)
    shutil.copytree(SCRATCH / NAME, repository)
    requests = requests_for(repository, NAME)

    async def run(target: str) -> dict:
        channel = grpc.aio.insecure_channel(target)
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
        stop, outcomes = asyncio.Event(), []
        traffic = asyncio.ensure_future(closed_loop(stub, requests, outcomes, stop, clients))
        await asyncio.sleep(2)
        started = time.monotonic()
        await asyncio.to_thread(export_version, checkpoint, repository, 2)
        exported = time.monotonic()
        await admin.LoadModel(admin_pb2.LoadModelRequest(model=NAME, version=2), timeout=120)
        loaded = time.monotonic()
        await asyncio.sleep(2)
        stop.set()
        await traffic
        await channel.close()
        codes = {c: sum(1 for code, _ in outcomes if code == c) for c, _ in set(outcomes)}
        versions = [v for code, v in outcomes if code == "OK"]
        return {
            "clients": clients,
            "codes": codes,
            "failed": sum(n for c, n in codes.items() if c != "OK"),
            "answered_by_version": {str(v): versions.count(v) for v in sorted(set(versions))},
            "last_answer_version": versions[-1] if versions else None,
            "export_seconds": round(exported - started, 1),
            "load_seconds": round(loaded - exported, 2),
        }

    with running_gateway(repository, "--log-level", "warning") as gateway:
        result = asyncio.run(run(gateway.target))
    print("roll-in", result, flush=True)
    return result


def export_version(checkpoint: Path, repository: Path, version: int, *extra: str) -> None:
    command = [
        sys.executable, "-m", "logitrec", "export", "--checkpoint", str(checkpoint),
        "--repository", str(repository), "--name", NAME, "--version", str(version), "--force",
        *extra,
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)


def _serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        except grpc.RpcError:
            return False
    return status.status == health_pb2.HealthCheckResponse.SERVING


def _seconds_until(condition, limit: float = 60.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            raise SystemExit(f"no change within {limit:.0f} s")
        time.sleep(0.02)
    return round(time.monotonic() - started, 2)


def triton_faults(checkpoint: Path, probe_seconds: float = 0.5) -> dict:
    """Triton killed under the gateway, then restarted without models: how long the gateway
    takes to say NOT_SERVING, and to be SERVING again without a restart."""
    from logitrec.triton_local import run_triton

    repository = SCRATCH / "triton"
    export_version(checkpoint, repository, 1, "--triton-backend", "python")
    flags = ("--backend-probe-seconds", probe_seconds, "--log-level", "warning")
    with run_triton(repository) as triton:
        ports = triton.ports
        backend = ("--backend", "triton", "--triton-url", triton.grpc_url)
        with running_gateway(repository, *backend, *flags) as gateway:
            triton.process.kill()
            to_not_serving = _seconds_until(lambda: not _serving(gateway.target))
            triton.process.wait()
            restarting = time.monotonic()
            with run_triton(repository, ports=ports):  # back, with nothing loaded
                triton_ready = round(time.monotonic() - restarting, 2)
                _seconds_until(lambda: _serving(gateway.target), 120)
                to_serving = round(time.monotonic() - restarting, 2)
    result = {
        "probe_seconds": probe_seconds,
        "kill_to_not_serving_seconds": to_not_serving,
        "restart_to_triton_ready_seconds": triton_ready,
        "restart_to_serving_seconds": to_serving,
    }
    print("triton", result, flush=True)
    return result


SCENARIOS = ("overload", "refusal_cost", "drain", "roll_in", "triton_faults")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--capacity-seconds", type=float, default=15)
    parser.add_argument("--sweep-seconds", type=float, default=15)
    parser.add_argument("--overload-seconds", type=float, default=60)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="Comma-separated.")
    parser.add_argument("--report-only", action="store_true", help="Re-render from the JSON.")
    args = parser.parse_args()
    if args.report_only:
        write_report(json.loads((RESULTS / "reliability.json").read_text()))
        return
    if args.checkpoint is None:
        parser.error("--checkpoint is required")
    chosen = args.scenarios.split(",")
    if unknown := set(chosen) - set(SCENARIOS):
        parser.error(f"--scenarios: unknown {', '.join(sorted(unknown))}")
    export(NAME, args.checkpoint)
    repository = SCRATCH / NAME
    requests = requests_for(repository, NAME)
    path = RESULTS / "reliability.json"
    # Scenarios run on their own keep the others' last results.
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.update(
        date=time.strftime("%Y-%m-%d"),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs (gateway and load generator "
        "share them)",
        deadline_seconds=DEADLINE_SECONDS,
    )
    runs = {
        "overload": lambda: overload(repository, requests, args),
        "refusal_cost": lambda: refusal_cost(repository, requests, args.capacity_seconds),
        "drain": lambda: drain(repository, requests),
        "roll_in": lambda: roll_in(args.checkpoint),
        "triton_faults": lambda: triton_faults(args.checkpoint),
    }
    command = "python benchmarks/reliability.py " + " ".join(sys.argv[1:])
    for name in chosen:
        results[name] = runs[name]()
        results.setdefault("scenario_commands", {})[name] = command
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
    commands = results.get("scenario_commands", {})
    lines = [
        "# Reliability: overload and shutdown",
        "",
        f"{results['date']}, {results['machine']}. Every request carries "
        f"a {results['deadline_seconds']:.0f} s deadline; goodput counts answers that came back "
        "OK within it. Capacity (closed loop, 64 clients): "
        f"**{capacity_rps} requests/s**.",
        "",
        *rows,
        "",
        "Scenarios and the commands that last measured them: "
        + "; ".join(f"{name}: `{command}`" for name, command in commands.items())
        + ". The checkpoint is `make demo`'s ML-1M model (hidden size 32, window 50).",
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
    if roll := results.get("roll_in"):
        lines.append(
            f"- roll-in under load ({roll['clients']} clients; export {roll['export_seconds']} s, "
            f"LoadModel {roll['load_seconds']} s): {roll['failed']} failed, answers by version "
            f"{roll['answered_by_version']}, the last from version {roll['last_answer_version']}"
            f": {_verdict(roll['failed'] == 0 and roll['last_answer_version'] == 2)}"
        )
    if faults := results.get("triton_faults"):
        lines.append(
            f"- Triton killed: NOT_SERVING after {faults['kill_to_not_serving_seconds']} s; "
            "restarted without models: SERVING again, the models reloaded by the gateway, "
            f"{faults['restart_to_serving_seconds']} s after the restart began (Triton itself "
            f"took {faults['restart_to_triton_ready_seconds']} s to report ready; probe every "
            f"{faults['probe_seconds']} s)"
        )
    cost = results.get("refusal_cost")
    at_capacity = {r["admission"]: r["goodput_share"] for r in load["runs"] if r["load"] == 1.0}
    if cost and len(at_capacity) == 2:
        lines += [
            "",
            "## Why overload collapses on one process",
            f"Closed loop, the same gateway answered {cost['answers_per_second']} requests/s "
            f"and refused {cost['refusals_per_second']} invalid ones per second: a refusal "
            f"costs {cost['refusal_over_answer_cost']:.0%} of an answer, nearly all of it in "
            "the Python gRPC layer every call crosses before a handler runs. So even a policy "
            "that refused exactly the excess at no delay could keep at most "
            f"**{cost['best_goodput_share_at_2x']:.0%} of capacity** at 2x load on one "
            "process; and once the event loop is saturated, calls wait in gRPC's queue before "
            "admission sees them (refusals above arrive after about a second), so they are "
            "refused or expire too late. Admission control decides on the batcher's queue: "
            f"at capacity (1x) it kept {at_capacity[True]:.0%} of the offered load answered in "
            f"time, against {at_capacity[False]:.0%} without it (an open loop at exactly "
            "capacity has no steady state, so that row varies between runs); beyond capacity "
            "it changes little, because the time is lost before any handler runs. There the "
            "remedy is more gateway processes behind the load balancer (each refuses cheaply "
            "only while it is not saturated), not a smarter queue inside one.",
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

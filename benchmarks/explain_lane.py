"""Do explanations slow the requests that do not ask for them? Plain Recommend traffic through
the real gateway alone, and the same traffic while other callers ask for explanations, rounds
interleaved on the same gateway.

    python benchmarks/explain_lane.py [--checkpoint artifacts/checkpoints/demo] [--rounds 3]

Plain load: `--clients` closed-loop callers (k=10, real ML-1M test histories); explanation load:
`--explainers` more callers asking the same with `explain: true`, each sending its next request
when the last is answered. Writes benchmarks/results/explain_lane.{json,md,png}.
"""

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_load import SCRATCH, export, gateway, requests_for

from logitrec.bench.load import Connection, Window, closed_loop, summarize

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
NAME = "lane"


async def load(target: str, plain, explained, args) -> dict:
    """Plain callers (and explaining ones, when `explained`) for one window; each side's figures."""
    window = Window(args.warmup, args.seconds)

    async def side(requests, clients):
        connection = Connection(target, None, (), channels=1, timeout=60)
        return summarize(await closed_loop(connection, requests, clients, window))

    sides = [side(plain, args.clients)]
    if explained:
        sides.append(side(explained, args.explainers))
    results = await asyncio.gather(*sides)
    names = ("plain", "explain")[: len(results)]
    return {name: figures(summary) for name, summary in zip(names, results, strict=True)}


def figures(summary: dict) -> dict:
    latency = summary["latency_ms"]
    return {
        "requests": summary["requests"],
        "throughput_rps": summary["achieved_rps"],
        "p50_ms": round(latency["p50"], 2),
        "p99_ms": round(latency["p99"], 2),
        "status_counts": summary["status_counts"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=REPO / "artifacts/checkpoints/demo")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--explainers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    export(NAME, args.checkpoint)
    repository = SCRATCH / NAME
    plain = requests_for(repository, NAME)
    explained = [type(r)(history=r.history, k=r.k, explain=True) for r in plain]
    runs = []
    with gateway(repository) as (target, _metrics):
        for round_number in range(args.rounds):
            order = ("alone", "with explanations")
            for label in order if round_number % 2 == 0 else reversed(order):
                measured = asyncio.run(
                    load(target, plain, explained if label != "alone" else None, args)
                )
                runs.append({"round": round_number, "scenario": label, **measured})
                print(f"round {round_number} {label}: {json.dumps(measured)}", flush=True)
    results = {
        "command": "python benchmarks/explain_lane.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (server and load share them)",
        "checkpoint": str(args.checkpoint),
        "clients": args.clients,
        "explainers": args.explainers,
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "explain_lane.json").write_text(json.dumps(results, indent=2) + "\n")
    write_report(results)
    plot(results)


def mean(runs: list[dict], scenario: str, side: str, key: str) -> float:
    values = [r[side][key] for r in runs if r["scenario"] == scenario]
    return sum(values) / len(values)


def write_report(results: dict) -> None:
    runs = results["runs"]
    lines = [
        "# Explanations in their own lane",
        "",
        f"Machine: {results['machine']}. Date {results['date']}. Model "
        f"`{results['checkpoint']}`, the embedded backend, {results['clients']} plain "
        f"closed-loop callers (Recommend k=10), joined by {results['explainers']} callers "
        "asking for explanations (k=10, explain: true) in the second scenario; scenarios "
        "interleaved, means over rounds.",
        f"Command: `{results['command']}`",
        "",
        "| scenario | plain req/s | plain p50 ms | plain p99 ms | explain req/s | explain p50 ms "
        "| explain p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario in ("alone", "with explanations"):
        row = [
            f"{mean(runs, scenario, 'plain', key):.1f}"
            for key in ("throughput_rps", "p50_ms", "p99_ms")
        ]
        if scenario == "alone":
            row += ["-", "-", "-"]
        else:
            row += [
                f"{mean(runs, scenario, 'explain', key):.1f}"
                for key in ("throughput_rps", "p50_ms", "p99_ms")
            ]
        lines.append(f"| {scenario} | " + " | ".join(row) + " |")
    alone = mean(runs, "alone", "plain", "p50_ms")
    shared = mean(runs, "with explanations", "plain", "p50_ms")
    lines += [
        "",
        f"Plain requests' median latency with explanations running: {shared / alone:.2f}x "
        "their latency alone. The explanation lane keeps them out of the plain batches' "
        "queue, but both share the encoder's cores: on 2 CPUs shared with the load generator "
        "every explanation batch (about window + features + 1 encoder rows) is compute taken "
        "from the plain traffic.",
    ]
    (RESULTS / "explain_lane.md").write_text("\n".join(lines) + "\n")


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    scenarios = ["alone", "with explanations"]
    fig, (throughput, latency) = plt.subplots(1, 2, figsize=(10, 4))
    throughput.bar(scenarios, [mean(runs, s, "plain", "throughput_rps") for s in scenarios])
    throughput.set_ylabel("plain requests/s")
    for offset, key in enumerate(("p50_ms", "p99_ms")):
        positions = [i + 0.4 * offset for i in range(len(scenarios))]
        latency.bar(positions, [mean(runs, s, "plain", key) for s in scenarios], 0.4, label=key)
    latency.set_xticks([i + 0.2 for i in range(len(scenarios))], scenarios)
    latency.set_ylabel("plain request latency (ms)")
    latency.legend()
    fig.suptitle("plain Recommend traffic, alone and beside explanation traffic")
    fig.tight_layout()
    fig.savefig(RESULTS / "explain_lane.png", dpi=100)


if __name__ == "__main__":
    main()

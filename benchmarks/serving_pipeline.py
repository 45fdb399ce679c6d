"""What the gateway adds over its own pipeline and over gRPC itself, and what overlapping
batches or ONNX Runtime's spin-wait change, all driven by the same load tool in the same run.

    python benchmarks/serving_pipeline.py --model scratch=artifacts/checkpoints/demo \
        --model minilm=artifacts/checkpoints/minilm-short --seconds 15 --rounds 3

For each model, each round (order rotated every round, so no variant always runs first):
- echo: `logitrec bench echo`, the same proto answering a fixed 10-item response, no model:
  the machine's gRPC floor for this load;
- the gateway (embedded backend, max batch 64) with ONNX Runtime's spin-wait on and off and
  one or two batches in flight (every setting named, whatever the defaults);
- in-process: the gateway's own batch function on batches of the size the gateway formed with
  its default settings (no gRPC, no queue).
Each gRPC variant is loaded by `logitrec bench load`'s closed-loop driver (`--concurrency`
callers). Goals: gateway >= 90% of in-process at the same batch size (each model); the
scratch gateway >= 80% of the echo server. Writes benchmarks/results/serving_pipeline.{json,md,png}.
"""

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_load import SCRATCH, drive, export, gateway, mean_batch_size, raw_backend, requests_for

from logitrec.bench.echo import running_echo
from serving.config import ServeConfig

RESULTS = Path(__file__).resolve().parent / "results"
# Every setting named, so a label means the same whatever the gateway's defaults are.
GATEWAY_VARIANTS = {
    f"{'' if spinning else 'no '}spinning, {in_flight} in flight": (
        "--ort-spinning" if spinning else "--no-ort-spinning",
        "--batches-in-flight",
        str(in_flight),
    )
    for spinning in (True, False)
    for in_flight in (1, 2)
}
# The settings every ratio is taken against: the gateway's defaults before they were chosen
# from this benchmark (ONNX Runtime's spin-wait on, one batch in flight).
REFERENCE = "spinning, 1 in flight"


def default_variant() -> str:
    """The variant with the gateway's current defaults."""
    defaults = ServeConfig()
    spinning = "" if defaults.ort_spinning else "no "
    return f"{spinning}spinning, {defaults.batches_in_flight} in flight"


BATCHING = ("--max-batch-size", "64")


def one_variant(label: str, repository: Path, requests, args) -> dict:
    if label == "echo":
        with running_echo() as target:
            return asyncio.run(drive(target, requests, args.concurrency, args.seconds))
    with gateway(repository, *BATCHING, *GATEWAY_VARIANTS[label]) as (target, metrics_url):
        outcome = asyncio.run(drive(target, requests, args.concurrency, args.seconds))
        outcome["mean_batch_size"] = round(mean_batch_size(metrics_url), 1)
    return outcome


def measure_model(name: str, repository: Path, args) -> dict:
    requests = requests_for(repository, name)
    labels = ["echo", *GATEWAY_VARIANTS]
    runs = []
    for round_index in range(args.rounds):
        shift = round_index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            outcome = one_variant(label, repository, requests, args)
            runs.append({"round": round_index + 1, "variant": label, **outcome})
            print(name, runs[-1]["round"], label, outcome["throughput_rps"], flush=True)
        formed = [r["mean_batch_size"] for r in runs if r["variant"] == default_variant()]
        batch = max(1, round(formed[-1]))
        raw = raw_backend(repository, name, requests, batch, args.seconds / 2)
        runs.append({"round": round_index + 1, "variant": "in-process", **raw})
        print(name, runs[-1]["round"], "in-process", raw, flush=True)
    return {"runs": runs, **summary(runs)}


def summary(runs: list[dict]) -> dict:
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    mean = {
        v: round(float(np.mean([r["throughput_rps"] for r in runs if r["variant"] == v])), 1)
        for v in variants
    }
    reference, gateway = mean[REFERENCE], mean[default_variant()]
    return {
        "mean_rps": mean,
        "default_variant": default_variant(),
        "over_reference": {v: round(mean[v] / reference, 3) for v in variants},
        "gateway_over_in_process": round(gateway / mean["in-process"], 3),
        "gateway_over_echo": round(gateway / mean["echo"], 3),
        "best_gateway_variant": max(GATEWAY_VARIANTS, key=lambda v: mean[v]),
    }


def echo_goal(name: str, ratio: float) -> str:
    if name != "scratch":
        return " (no goal for this model)"
    return f" ({'met' if ratio >= 0.8 else 'not met'}: goal 80%)"


def write_report(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving_pipeline.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Serving: the gateway against its own pipeline and the gRPC floor",
        "",
        f"Machine: {results['machine']}. Date {results['date']}. Load: "
        f"{results['concurrency']} closed-loop callers (`logitrec bench load`'s driver), "
        f"Recommend k=10 on real ML-1M test histories, {results['seconds']:.0f} s measured "
        f"after 3 s warm-up, {results['rounds']} rounds, order rotated every round.",
        f"Command: `{results['command']}`",
        *[f"Note: {note}" for note in results.get("notes", [])],
        "",
        "Goals: gateway >= 90% of the same pipeline in-process at the same batch size (each "
        "model); the scratch gateway >= 80% of the echo server's rate.",
        "",
    ]
    for name, entry in results["models"].items():
        lines += [
            f"## {name} (`{entry['checkpoint']}`)",
            "",
            f"| variant | mean req/s | per round | vs {REFERENCE} |",
            "| --- | --- | --- | --- |",
        ]
        for variant, rps in entry["mean_rps"].items():
            rounds = [r["throughput_rps"] for r in entry["runs"] if r["variant"] == variant]
            lines.append(
                f"| {variant} | {rps} | {', '.join(map(str, rounds))} | "
                f"{entry['over_reference'][variant]:.2f}x |"
            )
        in_process, echo = entry["gateway_over_in_process"], entry["gateway_over_echo"]
        lines += [
            "",
            f"- gateway ({entry['default_variant']}, the defaults) / in-process at the same "
            f"batch size: **{in_process:.0%}** "
            f"({'met' if in_process >= 0.9 else 'not met'}: goal 90%).",
            f"- gateway / echo server: **{echo:.0%}**{echo_goal(name, echo)}.",
            f"- fastest gateway variant: {entry['best_gateway_variant']} "
            f"({entry['over_reference'][entry['best_gateway_variant']]:.2f}x {REFERENCE}).",
            "",
        ]
    (RESULTS / "serving_pipeline.md").write_text("\n".join(lines))
    plot(results)


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for axis, name in zip(axes[0], models, strict=True):
        mean = results["models"][name]["mean_rps"]
        axis.bar(range(len(mean)), list(mean.values()))
        axis.set_xticks(range(len(mean)), list(mean), rotation=30, ha="right", fontsize=8)
        axis.set_title(f"{name}: mean throughput, req/s")
    fig.tight_layout()
    fig.savefig(RESULTS / "serving_pipeline.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="NAME=CHECKPOINT_DIR")
    parser.add_argument("--report-only", action="store_true", help="Re-render from the JSON.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    if args.report_only:  # the ratios recomputed: the defaults may have changed since
        results = json.loads((RESULTS / "serving_pipeline.json").read_text())
        for entry in results["models"].values():
            entry.update(summary(entry["runs"]))
        write_report(results)
        return
    if not args.model:
        parser.error("--model NAME=CHECKPOINT_DIR is required")
    results = {
        "command": "python benchmarks/serving_pipeline.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (server and load generator "
        "share them)",
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "models": {},
    }
    for spec in args.model:
        name, checkpoint = spec.split("=", 1)
        export(name, Path(checkpoint))
        entry = measure_model(name, SCRATCH / name, args)
        results["models"][name] = {"checkpoint": checkpoint, **entry}
    write_report(results)


if __name__ == "__main__":
    main()

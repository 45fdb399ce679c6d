"""Benchmark training at catalog scale (issue 16): step time, its breakdown and peak memory on a
~1M-item log, dense AdamW vs sparse rows, with and without the log-Q correction and in-batch
negatives; and quality on ML-1M at equal steps.

    # once: a synthetic log of ~10M interactions over ~1M items (983,063 after prepare)
    logitrec data synth --out artifacts/scale-1m/raw --users 100000 --items 1100000 \\
        --clusters 28 --mean-length 100
    logitrec data prepare artifacts/scale-1m/raw --out artifacts/scale-1m/data \\
        --min-user-interactions 5 --min-item-interactions 1

    python benchmarks/training_scale.py speed [--data artifacts/scale-1m/data] [--steps 20]
    python benchmarks/training_scale.py speed --data artifacts/demo-data --label ml-1m
    python benchmarks/training_scale.py quality [--data artifacts/demo-data] [--seeds 42 7]

`speed` runs every configuration in its own process (so each peak RSS is its own), over the
same batches (the first of epoch 1's shuffle), the configurations interleaved and their order
rotated every round, since the 2 cores are shared with other jobs. `quality` trains the demo
recipe with `--loss sampled-softmax` once per configuration and seed through the CLI and reads
test NDCG@10 from metrics.json. Both merge their section into
benchmarks/results/training_scale.json and print markdown tables.
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from training.batches import evaluation_rows
from training.build import (
    build_model,
    build_objective,
    build_optimizer,
    build_windows,
    seed_everything,
    uses_sparse_rows,
)
from training.config import load_config
from training.data.dataset import load_dataset
from training.features import context_indices
from training.loop import Optimisation, batch_loss, epoch_batches
from training.optimizers import clip_gradients

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "training_scale.json"

# The command: `logitrec train --loss sampled-softmax --negatives 1024 --hidden-size 64`.
SPEED_BASE = {"loss": "sampled-softmax", "negatives": 1024, "hidden_size": 64, "device": "cpu"}
# Settings in TrainConfig's names; the CLI flags of the same runs are in CLI_FLAGS.
CONFIGURATIONS = {
    "before": {"sparse_rows": False, "negative_sampling": "uniform", "logq_correction": False},
    "sparse-rows": {"sparse_rows": True, "negative_sampling": "uniform", "logq_correction": False},
    "after": {},  # the new defaults: sparse rows, popularity negatives, log-Q correction
    "after+in-batch": {"in_batch_negatives": True},
}
DESCRIPTIONS = {
    "before": "dense AdamW, uniform negatives, no log-Q (the code before issue 16)",
    "sparse-rows": "sparse rows + row-wise Adam, uniform negatives, no log-Q",
    "after": "sparse rows, popularity negatives, log-Q (the new default)",
    "after+in-batch": "the new default + --in-batch-negatives",
}
CLI_FLAGS = {
    "before": [
        "--no-sparse-rows",
        "--negative-sampling",
        "uniform",
        "--no-logq-correction",
    ],
    "sparse-rows": ["--sparse-rows", "--negative-sampling", "uniform", "--no-logq-correction"],
    "after": [],
    "after+in-batch": ["--in-batch-negatives"],
}
# The demo recipe (Makefile), with the sampled loss.
DEMO_RECIPE = [
    "--epochs",
    "20",
    "--valid-users",
    "1000",
    "--max-length",
    "50",
    "--hidden-size",
    "32",
    "--windows",
    "newest",
    "--loss",
    "sampled-softmax",
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed_step(run: Optimisation, windows, rows: np.ndarray) -> dict:
    """One optimizer step as the trainer takes it (loop._update), timed phase by phase."""
    started, cpu_started = time.perf_counter(), time.process_time()
    loss = batch_loss(run, windows, rows)
    forward = time.perf_counter()
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    backward = time.perf_counter()
    clip_gradients(run.objective.parameters(), run.config.grad_clip)
    clipped = time.perf_counter()
    run.optimizer.step()
    stepped = time.perf_counter()
    return {
        "sequences": len(rows),
        "forward_loss_s": forward - started,
        "backward_s": backward - forward,
        "clip_s": clipped - backward,
        "optimizer_s": stepped - clipped,
        "step_s": stepped - started,
        "cpu_s": time.process_time() - cpu_started,
        "loss": float(loss),
    }


def measure_configuration(name: str, data: Path, steps: int, warmup: int, threads: int) -> dict:
    """`steps` timed steps (after `warmup`) of one configuration, in this process."""
    torch.set_num_threads(threads)
    config = load_config(None, {**SPEED_BASE, **CONFIGURATIONS[name]})
    dataset = load_dataset(data)
    seed_everything(config.seed)
    model, checkpoint_config = build_model(config, dataset)
    context = context_indices(dataset.users, checkpoint_config.context_vocabulary)
    valid_rows = evaluation_rows(dataset, "valid", config.model.max_length)
    windows = build_windows(dataset, config, valid_rows, None, context)
    setup_rss = peak_rss_mb()
    device = torch.device("cpu")
    sparse = uses_sparse_rows(config, world_size=1)
    run = Optimisation(
        build_objective(model, config, windows, device, sparse),
        build_optimizer(model, config, sparse),
        None,
        config,
        device,
        total_steps=warmup + steps,
        started=time.perf_counter(),
    )
    model.train()
    batches = epoch_batches(windows.lengths, config, 1, rank=0, world_size=1)
    records = [timed_step(run, windows, rows) for rows in batches[: warmup + steps]][warmup:]
    totals = {key: sum(r[key] for r in records) for key in records[0] if key != "loss"}
    return {
        "configuration": name,
        "items": dataset.num_items,
        "windows": len(windows.inputs),
        "threads": threads,
        "steps": steps,
        "sequences_per_s": totals["sequences"] / totals["step_s"],
        "mean_ms": {
            key.removesuffix("_s"): 1000 * totals[key] / steps
            for key in ("forward_loss_s", "backward_s", "clip_s", "optimizer_s", "step_s", "cpu_s")
        },
        "step_s": [round(r["step_s"], 4) for r in records],
        "final_loss": records[-1]["loss"],
        "setup_rss_mb": round(setup_rss, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def run_worker(name: str, args: argparse.Namespace) -> dict:
    """One configuration in a fresh process, so its peak RSS is its own."""
    command = [
        sys.executable,
        __file__,
        "worker",
        name,
        "--data",
        str(args.data),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def speed(args: argparse.Namespace) -> dict:
    names = list(CONFIGURATIONS)
    runs = []
    for round_number in range(args.rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.strftime("%H:%M:%S")
            measured = run_worker(name, args)
            measured.update(round=round_number + 1, started=started)
            print(
                f"round {round_number + 1} {name:15s} {measured['sequences_per_s']:7.1f} seq/s "
                f"step {measured['mean_ms']['step']:7.0f} ms "
                f"peak RSS {measured['peak_rss_mb']:.0f} MB",
                flush=True,
            )
            runs.append(measured)
    return {"command": sys.argv, "settings": SPEED_BASE, "runs": runs, **summary(runs)}


def summary(runs: list[dict]) -> dict:
    """Per configuration: median sequences/s over rounds, mean phase times, peak RSS, ratios."""
    table = {}
    for name in CONFIGURATIONS:
        mine = [r for r in runs if r["configuration"] == name]
        table[name] = {
            "description": DESCRIPTIONS[name],
            "sequences_per_s": float(np.median([r["sequences_per_s"] for r in mine])),
            # The least disturbed round: what the code does when the shared cores are free.
            "best_sequences_per_s": max(r["sequences_per_s"] for r in mine),
            "mean_ms": {
                key: float(np.mean([r["mean_ms"][key] for r in mine])) for key in mine[0]["mean_ms"]
            },
            "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
            "setup_rss_mb": max(r["setup_rss_mb"] for r in mine),
            "epoch_minutes": mine[0]["windows"]
            / np.median([r["sequences_per_s"] for r in mine])
            / 60,
        }
    base = table["before"]["sequences_per_s"]
    best = table["before"]["best_sequences_per_s"]
    for row in table.values():
        row["speedup"] = row["sequences_per_s"] / base
        row["best_speedup"] = row["best_sequences_per_s"] / best
    return {"summary": table, "items": runs[0]["items"], "windows": runs[0]["windows"]}


def speed_table(section: dict) -> str:
    lines = [
        "| configuration | seq/s (median) | x before | seq/s (best round) | x before | "
        "step ms | forward+loss | backward | clip | optimizer | CPU s/step | epoch min | "
        "peak RSS MB |",
        "| --- |" + " ---: |" * 12,
    ]
    for name, row in section["summary"].items():
        ms = row["mean_ms"]
        lines.append(
            f"| {name} | {row['sequences_per_s']:.1f} | {row['speedup']:.2f} | "
            f"{row['best_sequences_per_s']:.1f} | {row['best_speedup']:.2f} | {ms['step']:.0f} | "
            f"{ms['forward_loss']:.0f} | {ms['backward']:.0f} | {ms['clip']:.0f} | "
            f"{ms['optimizer']:.0f} | {ms['cpu'] / 1000:.2f} | {row['epoch_minutes']:.1f} | "
            f"{row['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def train_demo(name: str, data: Path, seed: int, out_root: Path) -> dict:
    out = out_root / f"{name}-seed{seed}"
    command = [
        sys.executable,
        "-m",
        "logitrec",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--force",
        "-q",
        "--seed",
        str(seed),
        *DEMO_RECIPE,
        *CLI_FLAGS[name],
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{name} seed {seed} failed:\n{result.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return {
        "configuration": name,
        "seed": seed,
        "test_ndcg@10": metrics["test"]["ndcg@10"],
        "test_hr@10": metrics["test"]["hr@10"],
        "valid_ndcg@10": metrics["valid"]["ndcg@10"],
        "best_epoch": metrics["best_epoch"],
        "epochs_run": metrics["epochs_run"],
        "steps": log[-1]["step"],
        "train_seconds": round(sum(r["epoch_seconds"] for r in log), 1),
        "command": command[2:],
    }


def quality(args: argparse.Namespace) -> dict:
    runs = []
    for seed in args.seeds:
        for name in args.configurations:
            measured = train_demo(name, args.data, seed, args.out)
            print(
                f"seed {seed} {name:15s} test NDCG@10 {measured['test_ndcg@10']:.4f} "
                f"HR@10 {measured['test_hr@10']:.4f} ({measured['steps']} steps, "
                f"{measured['train_seconds']} s training)",
                flush=True,
            )
            runs.append(measured)
    return {"command": sys.argv, "recipe": DEMO_RECIPE, "runs": earlier_runs(runs) + runs}


def earlier_runs(runs: list[dict]) -> list[dict]:
    """Quality runs already saved for other seeds, so seeds can be added one call at a time."""
    if not RESULTS.is_file():
        return []
    saved = json.loads(RESULTS.read_text()).get("quality", {}).get("runs", [])
    done = {(run["configuration"], run["seed"]) for run in runs}
    return [run for run in saved if (run["configuration"], run["seed"]) not in done]


def quality_table(section: dict) -> str:
    lines = [
        "| configuration | seed | test NDCG@10 | test HR@10 | steps | best epoch | training s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in section["runs"]:
        lines.append(
            f"| {run['configuration']} | {run['seed']} | {run['test_ndcg@10']:.4f} | "
            f"{run['test_hr@10']:.4f} | {run['steps']} | {run['best_epoch']} | "
            f"{run['train_seconds']} |"
        )
    return "\n".join(lines)


def save_section(key: str, section: dict) -> None:
    document = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    document[key] = {
        **section,
        "machine": {
            "platform": platform.platform(),
            "cpus": torch.get_num_threads(),
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")


def plot() -> None:
    """training_scale.png: speed per configuration at ~1M and ML-1M sizes, the CLI epoch, and
    quality at equal steps, from whatever sections the JSON holds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    document = json.loads(RESULTS.read_text())
    fig, (speed_axis, quality_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    sections = [key for key in ("speed_1m-1thread", "speed_1m", "speed_ml-1m") if key in document]
    width = 0.8 / max(len(sections), 1)
    names = list(CONFIGURATIONS)
    for offset, key in enumerate(sections):
        summary_rows = document[key]["summary"]
        values = [summary_rows[name]["best_sequences_per_s"] for name in names]
        positions = [i + offset * width for i in range(len(names))]
        speed_axis.bar(positions, values, width, label=f"{key} (best round)")
    if "epoch_1m" in document:
        epoch_runs = document["epoch_1m"]["runs"]
        for name, run in epoch_runs.items():
            speed_axis.scatter(
                names.index(name) + 0.4, run["sequences_per_second"], color="black", zorder=3
            )
        speed_axis.scatter([], [], color="black", label="one CLI epoch, 1M items")
    speed_axis.axhline(180, color="red", linestyle="--", label="goal: 5x the issue's 36 seq/s")
    speed_axis.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
    speed_axis.set_ylabel("training sequences/s")
    speed_axis.set_title("training speed")
    speed_axis.legend(fontsize=7)
    if "quality" in document:
        runs = document["quality"]["runs"]
        labels = [f"{r['configuration']}\nseed {r['seed']}" for r in runs]
        quality_axis.bar(labels, [r["test_ndcg@10"] for r in runs], color="gray")
        quality_axis.set_ylabel("test NDCG@10 (ML-1M, equal steps)")
        quality_axis.set_title("quality, sampled softmax")
        quality_axis.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS.with_suffix(".png"), dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    speed_parser = commands.add_parser("speed", help="step time and memory on the large log")
    worker_parser = commands.add_parser("worker", help="(internal) one configuration")
    worker_parser.add_argument("name", choices=list(CONFIGURATIONS))
    for sub in (speed_parser, worker_parser):
        sub.add_argument("--data", type=Path, default=REPO / "artifacts" / "scale-1m" / "data")
        sub.add_argument("--steps", type=int, default=20)
        sub.add_argument("--warmup", type=int, default=3)
        sub.add_argument("--threads", type=int, default=torch.get_num_threads())
    speed_parser.add_argument("--rounds", type=int, default=2)
    speed_parser.add_argument(
        "--label", default="1m", help="results key: speed_LABEL (e.g. ml-1m for a small catalog)"
    )
    commands.add_parser("plot", help="redraw training_scale.png from the JSON")
    quality_parser = commands.add_parser("quality", help="test NDCG@10 on ML-1M, equal steps")
    quality_parser.add_argument("--data", type=Path, default=REPO / "artifacts" / "demo-data")
    quality_parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    quality_parser.add_argument(
        "--configurations", nargs="+", choices=list(CONFIGURATIONS), default=list(CONFIGURATIONS)
    )
    quality_parser.add_argument(
        "--out", type=Path, default=REPO / "artifacts" / "training-scale-quality"
    )
    args = parser.parse_args()
    if args.command == "worker":
        print(
            json.dumps(
                measure_configuration(args.name, args.data, args.steps, args.warmup, args.threads)
            )
        )
    elif args.command == "plot":
        plot()
    elif args.command == "speed":
        section = speed(args)
        save_section(f"speed_{args.label}", section)
        plot()
        print(speed_table(section))
    else:
        section = quality(args)
        save_section("quality", section)
        plot()
        print(quality_table(section))


if __name__ == "__main__":
    main()

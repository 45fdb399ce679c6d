"""Benchmark incremental learning on ML-1M (issue 18): update with each new slice of time versus
a full retrain and versus no update (the stale model).

    python benchmarks/incremental.py run [--ml1m ../shared/data/ml-1m] \
        [--work artifacts/incremental]
    python benchmarks/incremental.py report [--note TEXT]   # notes are kept in the JSON

Time: the ML-1M copy here (the SASRec file) has each user's interactions in order but no
timestamps, so "time" is each user's own position in their history: an interaction at position
p of a user's n gets the pseudo-time p / n (x 10^6). "The first 80% of time" is then the first 80%
of every user's history, and each slice is the next 5% of every user's history: every user has
new interactions in every slice, as active users of a live service would.

Stage k (k = 0..3, cut c_k = 0.80 + 0.05 k) uses the dataset D_k of everything before c_k + 0.05,
split in time: trains on what happened before c_k, validates on each user's first interaction in
[c_k, c_k + 0.025), tests on their first in [c_k + 0.025, c_k + 0.05) (the next slice). D_0 comes
from `data prepare`; D_k (k >= 1) from `data prepare SLICE --append-to D_{k-1}`, the slice
being [c_{k-1} + 0.05, c_k + 0.05). Per stage:
- full retrain: `logitrec train` from scratch on D_k (the recipe below);
- incremental: `logitrec train --resume PREVIOUS --data D_k --incremental` (PREVIOUS: the
  stage k - 1 incremental model, the stage-0 model for k = 1), which trains on the 5% slice
  [c_{k-1}, c_k) plus as many replayed windows;
- stale: the stage-0 model, its catalog grown to D_k's (new items get default rows), untrained.
All three are evaluated on D_k's test split (full ranking, all items, seen items excluded).
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
LOGITREC = [sys.executable, "-m", "logitrec"]
CUTS = (0.80, 0.85, 0.90, 0.95)
SLICE = 0.05
SCALE = 1_000_000
RECIPE = [
    "--max-length", "50", "--hidden-size", "64", "--windows", "all", "--epochs", "8",
    "--patience", "100", "--valid-users", "1000", "--device", "cpu",
]  # fmt: skip
INCREMENTAL = ["--epochs", "2", "--warmup-steps", "10", "--replay-ratio", "1", "--device", "cpu"]


def pseudo_timed_log(ml1m: Path, out: Path) -> pl.DataFrame:
    """ml-1m.txt with MovieLens ids and `timestamp` = position / length x 10^6 per user."""
    log = pl.read_csv(
        ml1m / "ml-1m.txt", separator=" ", has_header=False, new_columns=["sas_user", "sas_item"]
    )
    maps = {
        key: pl.read_csv(
            ml1m / f"sas_to_original_{key}s.txt",
            separator=" ",
            has_header=False,
            new_columns=[f"sas_{key}", f"{key}_id"],
        )
        for key in ("user", "item")
    }
    log = log.join(maps["user"], on="sas_user").join(maps["item"], on="sas_item")
    position = pl.int_range(pl.len()).over("sas_user", order_by=None)
    length = pl.len().over("sas_user")
    log = log.with_columns((position * SCALE // length).alias("timestamp"))
    log = log.select("user_id", "item_id", "timestamp")
    out.parent.mkdir(parents=True, exist_ok=True)
    log.write_csv(out)
    return log


def command(arguments: list[str], log: Path) -> float:
    """Run a logitrec command, its output to `log`; its wall seconds."""
    started = time.perf_counter()
    with open(log, "w") as handle:
        subprocess.run([*LOGITREC, *arguments], check=True, stdout=handle, stderr=handle)
    return time.perf_counter() - started


def split_flags(cut: float) -> list[str]:
    return [
        "--split", "temporal",
        "--valid-cutoff", str(int(cut * SCALE)),
        "--test-cutoff", str(int((cut + SLICE / 2) * SCALE)),
    ]  # fmt: skip


def side_tables(ml1m: Path) -> list[str]:
    return ["--items", str(ml1m / "movies.dat"), "--users", str(ml1m / "users.dat")]


def prepare_stages(log: pl.DataFrame, ml1m: Path, work: Path) -> dict[str, float]:
    """D_0 .. D_3; returns the seconds of each prepare."""
    seconds = {}
    for k, cut in enumerate(CUTS):
        data = work / f"data-{k}"
        if (data / "manifest.json").is_file():
            continue
        if k == 0:
            part = log.filter(pl.col("timestamp") < int((cut + SLICE) * SCALE))
            source, extra = work / "log-0.csv", []
        else:
            begin, end = int(cut * SCALE), int((cut + SLICE) * SCALE)
            part = log.filter((pl.col("timestamp") >= begin) & (pl.col("timestamp") < end))
            source, extra = work / f"slice-{k}.csv", ["--append-to", str(work / f"data-{k - 1}")]
        part.write_csv(source)
        seconds[f"prepare-{k}"] = command(
            ["data", "prepare", str(source), "--out", str(data), "--force", "--json",
             *side_tables(ml1m), *split_flags(cut), *extra],
            work / f"prepare-{k}.log",
        )  # fmt: skip
    return seconds


def metrics(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "metrics.json").read_text())


def stale_metrics(base: Path, data: Path) -> dict:
    """The stage-0 model, grown to `data`'s catalog, untrained, on its test split."""
    from training.checkpoint import read_config
    from training.config import TrainConfig
    from training.data.dataset import load_dataset
    from training.evaluate import evaluate_split
    from training.incremental import start_from

    dataset = load_dataset(data)
    config = TrainConfig(model=read_config(base).model)
    model, checkpoint_config, _ = start_from(base, config, dataset)
    return evaluate_split(model.eval(), checkpoint_config, dataset, "test").model


def run(ml1m: Path, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    log = pseudo_timed_log(ml1m, work / "ml-1m-pseudo-timed.csv")
    timings = prepare_stages(log, ml1m, work)
    stages = []
    for k in range(len(CUTS)):
        data = work / f"data-{k}"
        manifest = json.loads((data / "manifest.json").read_text())
        stage = {"stage": k, "cut": CUTS[k], "test_users": manifest["split"]["test_targets"]}
        stage["new_items"] = manifest.get("appended", {}).get("new_items", 0)
        full = work / f"full-{k}"
        seconds = command(
            ["train", "--data", str(data), "--out", str(full), "--force", "-q", *RECIPE],
            work / f"full-{k}.log",
        )
        stage["full"] = {"command_seconds": round(seconds, 1), **_summary(metrics(full))}
        if k > 0:
            previous = work / ("full-0" if k == 1 else f"incremental-{k - 1}")
            updated = work / f"incremental-{k}"
            seconds = command(
                ["train", "--data", str(data), "--out", str(updated), "--force", "-q",
                 "--resume", str(previous), "--incremental", *INCREMENTAL],
                work / f"incremental-{k}.log",
            )  # fmt: skip
            stage["incremental"] = {
                "command_seconds": round(seconds, 1),
                **_summary(metrics(updated)),
            }
            stage["stale"] = {"test": _rounded(stale_metrics(work / "full-0", data))}
        stages.append(stage)
        print(json.dumps(stage), flush=True)
    result = {
        "machine": f"{platform.machine()}, {_cpus()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
        "recipe_full": RECIPE,
        "recipe_incremental": INCREMENTAL,
        "prepare_seconds": {k: round(v, 1) for k, v in timings.items()},
        "stages": stages,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "incremental.json").write_text(json.dumps(result, indent=2) + "\n")
    report()


def _summary(values: dict) -> dict:
    return {
        "train_seconds": values["wall_seconds"],
        "epochs": values["epochs_run"],
        "test": _rounded(values["test"]),
    }


def _rounded(values: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def report() -> None:
    result = json.loads((RESULTS / "incremental.json").read_text())
    lines = [
        "# Incremental learning on ML-1M (issue 18)",
        "",
        f"{result['machine']}, {result['date']}. Produced by `python benchmarks/incremental.py "
        "run`; protocol in the script's docstring (pseudo-time: each user's position in their "
        "own history, since this ML-1M copy has no timestamps).",
        "",
        f"Full retrain recipe: `logitrec train {' '.join(result['recipe_full'])}`; incremental: "
        "`logitrec train --resume PREVIOUS --incremental "
        f"{' '.join(result['recipe_incremental'])}`.",
        "",
        "| stage | trained on | tested on | test users | new items | full retrain NDCG@10 | "
        "incremental NDCG@10 | stale NDCG@10 | incremental / full | full train s | "
        "incremental train s | time ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stage in result["stages"]:
        cut = stage["cut"]
        full = stage["full"]
        row = [
            str(stage["stage"]),
            f"< {cut:.0%}",
            f"[{cut + SLICE / 2:.1%}, {cut + SLICE:.0%})",
            f"{stage['test_users']:,}",
            str(stage["new_items"]),
            f"{full['test']['ndcg@10']:.4f}",
        ]
        if "incremental" in stage:
            inc = stage["incremental"]
            ratio = inc["test"]["ndcg@10"] / full["test"]["ndcg@10"]
            time_ratio = inc["train_seconds"] / full["train_seconds"]
            row += [
                f"{inc['test']['ndcg@10']:.4f}",
                f"{stage['stale']['test']['ndcg@10']:.4f}",
                f"{ratio:.1%}",
                f"{full['train_seconds']:.0f}",
                f"{inc['train_seconds']:.0f}",
                f"{time_ratio:.1%}",
            ]
        else:
            row += ["(base model)", "-", "-", f"{full['train_seconds']:.0f}", "-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    if result.get("notes"):
        lines += ["", *[f"- {note}" for note in result["notes"]]]
    (RESULTS / "incremental.md").write_text("\n".join(lines) + "\n")
    _plot(result)
    print("\n".join(lines))


def _plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in result["stages"] if "incremental" in s]
    x = np.arange(len(stages))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for offset, (name, label) in enumerate(
        [("full", "full retrain"), ("incremental", "incremental"), ("stale", "stale (no update)")]
    ):
        values = [s[name]["test"]["ndcg@10"] for s in stages]
        left.bar(x + (offset - 1) * 0.27, values, 0.27, label=label)
    left.set_xticks(x, [f"slice {s['stage']}" for s in stages])
    left.set_ylabel("test NDCG@10 (next slice)")
    left.legend(loc="lower center", fontsize=8)
    for name, label in [("full", "full retrain"), ("incremental", "incremental")]:
        right.bar(
            x + (0 if name == "full" else 0.4),
            [s[name]["train_seconds"] for s in stages],
            0.4,
            label=label,
        )
    right.set_xticks(x + 0.2, [f"slice {s['stage']}" for s in stages])
    right.set_ylabel("training seconds")
    right.legend(loc="center right", fontsize=8)
    fig.suptitle(f"Incremental updates on ML-1M ({result['machine']})")
    fig.tight_layout()
    fig.savefig(RESULTS / "incremental.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run", "report"])
    parser.add_argument("--ml1m", type=Path, default=REPO.parent / "shared" / "data" / "ml-1m")
    parser.add_argument("--work", type=Path, default=REPO / "artifacts" / "incremental")
    parser.add_argument("--note", action="append", default=[], help="A note for the report.")
    arguments = parser.parse_args()
    if arguments.action == "run":
        run(arguments.ml1m, arguments.work)
    else:
        if arguments.note:
            path = RESULTS / "incremental.json"
            result = json.loads(path.read_text())
            result["notes"] = result.get("notes", []) + arguments.note
            path.write_text(json.dumps(result, indent=2) + "\n")
        report()


if __name__ == "__main__":
    main()

"""Recipes across datasets: today's defaults (`--recipe ml-1m`), `--recipe auto` and a tuned
recipe (`logitrec tune`, its budget stated), each over several seeds, against the published
full-ranking numbers for the same split. One table per dataset, written as a section of
results/quality.md (quality.py keeps it), with the numbers in results/recipes.json.

    python benchmarks/recipes.py --dataset scientific --seeds 1 2 --max-minutes 8 \
        --tune-minutes 8 --trial-minutes 1.5 --threads 1
    python benchmarks/recipes.py --report-only

Runs already recorded are skipped (rerun one with --force), so a dataset can be finished in
several calls and two calls on different datasets can share the machine (one thread each): the
JSON is read, merged and written under a lock. The datasets and their anchors:
benchmarks/datasets.md (how each file was fetched and prepared).
"""

import argparse
import fcntl
import json
import os
import platform
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from logitrec.atomic import write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DEFAULT_RECIPE_RUNS, logitrec

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "artifacts" / "recipes"
RECIPES = ("default", "auto", "tuned")
METRICS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20")
# The settings a recipe chooses that the table shows.
SETTINGS = ("max_length", "hidden_size", "dropout", "weight_decay", "batch_size",
            "learning_rate", "epochs", "patience")  # fmt: skip
SECTION = "recipes (benchmarks/recipes.py)"

# Published full-ranking, leave-one-out NDCG@10 on the same split (benchmarks/datasets.md has
# each paper, table and protocol difference). `sasrec` is the best SASRec-family number, the
# issue's bar; `best` the best number of any model.
DATASETS = {
    "ml-1m": {
        "data": "artifacts/ml-1m",
        "split": "SASRec's ml-1m.txt, 5-core, 6,040 users, 3,416 items",
        "sasrec": ("SASRec+ 3000 (identical file; SASRec full CE on LRURec's rebuild of the "
                   "split: 0.1902)", 0.1857),
        "best": ("LRURec", 0.1930),
    },
    "scientific": {
        "data": "artifacts/datasets/scientific-data",
        "split": "UniSRec's Scientific, 5-core, 8,442 users, 4,385 items",
        "sasrec": ("SASRec (UniSRec paper, RecBole, full CE)", 0.0553),
        "best": ("VQ-Rec", 0.0643),
    },
    "instruments": {
        "data": "artifacts/datasets/instruments-data",
        "split": "LC-Rec's Instruments, 5-core, 24,772 users, 9,922 items",
        "sasrec": ("SASRec (LC-Rec paper)", 0.0690),
        "best": ("LC-Rec", 0.0923),
    },
    "video-games": {
        "data": "artifacts/datasets/video-games-data",
        "split": "SASRec's Video.txt, no extra k-core, 31,013 users, 23,715 items",
        "sasrec": ("SASRec (full CE, LRURec paper)", 0.0583),
        "best": ("LRURec", 0.0620),
    },
}  # fmt: skip


def relative(path: Path) -> str:
    return str(path).replace(f"{REPO}/", "")


@contextmanager
def locked_results():
    """results/recipes.json read and written under an exclusive lock (parallel calls merge)."""
    path = RESULTS / "recipes.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.is_file() else {"datasets": {}}
        yield results
        write_json(path, results)  # renamed when complete: a crash keeps the old


def tune(name: str, data: Path, options) -> dict:
    """`logitrec tune` from the auto recipe, validation split only; its best.toml."""
    out = WORK / name / "tune"
    command = [
        "tune", "--data", str(data), "--out", str(out), "--study", str(out / "study.db"),
        "--recipe", "auto", "--max-minutes", str(options.tune_minutes),
        "--trial-minutes", str(options.trial_minutes), "--trials", "100", "--seed", "42", "-q",
    ]  # fmt: skip
    if options.threads:
        command += ["--threads", str(options.threads)]
    started = time.perf_counter()
    summary = json.loads(logitrec(*command))
    if summary["best"] is None:
        raise SystemExit(f"{name}: no trial completed within --tune-minutes {options.tune_minutes}")
    return {
        "command": "logitrec " + shlex.join(relative(Path(part)) for part in command),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "trials": summary["trials"],
        "best": summary["best"],
        "config": relative(out / "best.toml"),
        "date": time.strftime("%Y-%m-%d"),
    }


def run(name: str, data: Path, recipe: str, seed: int, options, config: str | None) -> dict:
    checkpoint = WORK / name / run_key(recipe, seed, options.variant)
    command = ["train", "--data", str(data), "--out", str(checkpoint), "--force", "-q"]
    command += ["--config", config] if recipe == "tuned" else ["--recipe", recipe]
    command += ["--seed", str(seed), "--max-minutes", str(options.max_minutes)]
    command += options.train_args
    if options.threads:
        command += ["--threads", str(options.threads)]
    started = time.perf_counter()
    logitrec(*command)
    wall = time.perf_counter() - started
    evaluated = json.loads(
        logitrec("evaluate", "--data", str(data), "--checkpoint", str(checkpoint), "--baselines")
    )
    metrics = json.loads((checkpoint / "metrics.json").read_text())
    return {
        "recipe": recipe,
        "variant": options.variant,
        "seed": seed,
        "command": "logitrec " + shlex.join(relative(Path(part)) for part in command),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({metrics['device']}, "
        f"{metrics['threads']} threads)",
        "settings": settings_of(json.loads((checkpoint / "config.json").read_text())),
        "epochs_run": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "stopped": metrics["stopped"],
        "command_wall_seconds": round(wall, 1),
        "test": {k: evaluated[k] for k in METRICS},
        "valid_ndcg@10": metrics["valid"]["ndcg@10"],
        "most_popular_test": {k: evaluated["most_popular"][k] for k in METRICS},
    }


def settings_of(config: dict) -> dict:
    """The settings a recipe chooses, from a checkpoint's config.json (model and train)."""
    merged = {**config["model"], **{k: v for k, v in config["train"].items() if k != "model"}}
    return {k: merged.get(k) for k in SETTINGS}


def ml1m_default_runs() -> dict:
    """ML-1M's default-recipe runs, measured by quality.py (results/quality.json), as rows of
    this table: the same recipe, seeds and protocol, with an hour per run."""
    path = RESULTS / "quality.json"
    if not path.is_file():
        return {}
    runs = json.loads(path.read_text())["runs"]
    rows = {}
    for name in DEFAULT_RECIPE_RUNS:
        if name not in runs:
            continue
        r = runs[name]
        rows[name] = {
            "recipe": "default",
            "seed": r["train"]["seed"],
            "command": r["command"],
            "date": r["date"],
            "machine": r["machine"],
            "settings": settings_of({"model": r["model"], "train": r["train"]}),
            "epochs_run": r["epochs_run"],
            "best_epoch": r["best_epoch"],
            "stopped": r["stopped"],
            "command_wall_seconds": r["command_wall_seconds"],
            "test": {k: r["test"][k] for k in METRICS},
            "most_popular_test": {k: r["most_popular_test"][k] for k in METRICS},
        }
    return rows


def run_key(recipe: str, seed: int, variant: str | None) -> str:
    """The run's name in recipes.json and its checkpoint folder's (no spaces)."""
    slug = "-".join(variant.split()) if variant else ""
    return f"{recipe}+{slug}-seed{seed}" if variant else f"{recipe}-seed{seed}"


def row_name(run: dict) -> str:
    """A table row: the recipe, with the variant's extra flags when there are some."""
    return f"{run['recipe']} + {run['variant']}" if run.get("variant") else run["recipe"]


def measure(options) -> None:
    name = options.dataset
    data = REPO / DATASETS[name]["data"]
    if not (data / "manifest.json").is_file():
        raise SystemExit(f"{name}: no prepared dataset at {data} (benchmarks/datasets.md says how)")
    with locked_results() as results:
        recorded = results["datasets"].setdefault(name, {"runs": {}})
    config = None
    if "tuned" in options.recipes:
        if options.force or "tune" not in recorded:
            tuned = tune(name, data, options)
            with locked_results() as results:
                results["datasets"].setdefault(name, {"runs": {}})["tune"] = tuned
            recorded["tune"] = tuned
            report()
        config = str(REPO / recorded["tune"]["config"])
    for seed in options.seeds:
        for recipe in options.recipes:
            key = run_key(recipe, seed, options.variant)
            if key in recorded["runs"] and not options.force:
                continue
            entry = run(name, data, recipe, seed, options, config)
            print(f"{name} {key}: test NDCG@10 {entry['test']['ndcg@10']:.4f}", flush=True)
            with locked_results() as results:
                results["datasets"].setdefault(name, {"runs": {}})["runs"][key] = entry
            report()


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def row_names(runs: dict) -> list[str]:
    """The table's rows in order: the recipes, each followed by its variants."""
    names = {
        row_name(r): (RECIPES.index(r["recipe"]), bool(r.get("variant"))) for r in runs.values()
    }
    return sorted(names, key=lambda row: (*names[row], row))


def dataset_table(name: str, recorded: dict) -> list[str]:
    spec = DATASETS[name]
    sasrec_label, sasrec = spec["sasrec"]
    best_label, best = spec["best"]
    lines = [
        f"### {name}",
        "",
        f"Split: {spec['split']}; full ranking, leave-one-out, history excluded. Bar: "
        f"{sasrec_label} {sasrec:.4f}; best published {best_label} {best:.4f}.",
        "",
        "| recipe | seeds | test NDCG@10 per seed | mean NDCG@10 | mean HR@10 | vs SASRec-family "
        "| epochs (best), stopped by | minutes per run | settings |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    runs = recorded.get("runs", {})
    for row in row_names(runs):
        chosen = sorted((r for r in runs.values() if row_name(r) == row), key=lambda r: r["seed"])
        scores = [r["test"]["ndcg@10"] for r in chosen]
        gap = mean(scores) - sasrec
        s = chosen[0]["settings"]
        settings = (
            f"len {s['max_length']}, h {s['hidden_size']}, drop {s['dropout']:.2g}, wd "
            f"{s['weight_decay']:.2g}, batch {s['batch_size']}, lr {s['learning_rate']:.2g}"
        )
        seeds = ", ".join(str(r["seed"]) for r in chosen)
        per_seed = ", ".join(f"{value:.4f}" for value in scores)
        hr = mean([r["test"]["hr@10"] for r in chosen])
        epochs = ", ".join(f"{r['epochs_run']} ({r['best_epoch']}) {r['stopped']}" for r in chosen)
        minutes = ", ".join(f"{r['command_wall_seconds'] / 60:.1f}" for r in chosen)
        lines.append(
            f"| {row} | {seeds} | {per_seed} | {mean(scores):.4f} | {hr:.4f} | {gap:+.4f} | "
            f"{epochs} | {minutes} | {settings} |"
        )
    popular = next(iter(runs.values()), {}).get("most_popular_test")
    if popular:
        lines.append(
            f"| most popular | - | - | {popular['ndcg@10']:.4f} | {popular['hr@10']:.4f} | "
            f"{popular['ndcg@10'] - sasrec:+.4f} | - | - | - |"
        )
    lines.append("")
    if "tune" in recorded:
        t = recorded["tune"]
        lines += [
            f"Tuned: `{t['command']}`: {t['trials']} trials in {t['wall_seconds'] / 60:.1f} min "
            f"(budget {t['command'].split('--max-minutes ')[1].split()[0]} min), best validation "
            f"NDCG@10 {t['best']['value']:.4f} (trial {t['best']['trial']}), then each seed "
            f"trained with `--config {t['config']}`.",
            "",
        ]
    lines.append("Commands:")
    lines.append("")
    for r in sorted(runs.values(), key=lambda r: (row_names(runs).index(row_name(r)), r["seed"])):
        lines.append(f"- `{r['command']}` ({r['date']}, {r['machine']})")
    lines.append("")
    return lines


def report() -> None:
    """The section of results/quality.md (between markers quality.py keeps) and recipes.png."""
    path = RESULTS / "recipes.json"
    results = json.loads(path.read_text()) if path.is_file() else {"datasets": {}}
    lines = [f"<!-- section: {SECTION} -->", "## Recipes across datasets", ""]
    lines += [*SUMMARY, ""]
    ml1m = results["datasets"].setdefault("ml-1m", {"runs": {}})
    ml1m["runs"] = {**ml1m_default_runs(), **ml1m["runs"]}
    for name in DATASETS:
        if results["datasets"].get(name, {}).get("runs"):
            lines += dataset_table(name, results["datasets"][name])
            lines += [*NOTES.get(name, []), ""] if name in NOTES else []
    lines.append("<!-- end section -->")
    section = "\n".join(lines)
    quality = RESULTS / "quality.md"
    text = quality.read_text() if quality.is_file() else ""
    begin = f"<!-- section: {SECTION} -->"
    if begin in text:
        start = text.index(begin)
        end = text.index("<!-- end section -->", start) + len("<!-- end section -->")
        text = text[:start] + section + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp = quality.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(quality)
    plot(results)


SUMMARY = [
    "Each run: `logitrec train` with the recipe, `--seed S`, `--max-minutes M` (the cap a new",
    "user would set; `stopped by` says whether early stopping or the cap ended it) and",
    "`--threads 1` (two datasets shared the 2 cores), then `logitrec evaluate --baselines` on",
    "the test split. `tuned` is `logitrec tune` started from `auto` (its first trial is auto's",
    "own settings) on the validation split only, its budget stated under each table. The",
    "three Amazon sets are never used for development elsewhere; their sources, licences and",
    "protocol differences: `benchmarks/datasets.md`.",
    "",
    "Against the issue's bar (at or above the best published SASRec-family NDCG@10 on the",
    "same split): Scientific met by all three recipes (best: tuned, 0.0734 vs 0.0553);",
    "Instruments met by all three (best: default, 0.0834 vs 0.0690); Video Games not met",
    "(best: auto with sampled softmax over 3,000 negatives, 0.0506 vs 0.0583; full softmax",
    "over its 23,715 items got only 3-4 epochs of ~140 s in the 10-minute cap, 0.0193-0.0200",
    "on the mean); ML-1M not met (default 0.1802 vs",
    "SASRec+ 3000's 0.1857, in an hour).",
]


# What each table needs said beside it.
NOTES = {
    "ml-1m": [
        "On ML-1M the default rows are quality.py's four seeds of the default recipe with an",
        "hour each (2 threads). `--recipe auto` resolves there to the same settings but a",
        "warm-up of 60 steps instead of 50 (and 200 epochs with patience 30, which an hour",
        "does not reach), so it was not run again. The default recipe is itself the tuned",
        "one: chosen by 36 runs on a lent H200 (`quality_gpu_sweep.md`); `logitrec tune` was",
        "not run on ML-1M (an hour per trial on these 2 cores).",
    ],
    "scientific": [
        "Every run ended by early stopping (patience) well inside the 6-minute cap, so this",
        "table compares recipes, not budgets: auto (window 20, dropout 0.45, weight decay",
        "0.04) +0.0020 over the default, tuned +0.0017 over auto (same window, dropout 0.46,",
        "batch 64, lr 3.7e-3, weight decay 0.0018); the seeds agree to within 0.0027. Above",
        "the best published number (VQ-Rec 0.0643) too, though RecBole's protocol there does",
        "not mask the history (datasets.md: that can only cost us, by at most 0.0059).",
    ],
    "instruments": [
        "Every run was ended by the 10-minute cap (11-14 epochs of ~45 s on one thread, best",
        "epoch near the last): this table compares what each recipe learns in 10 minutes. The",
        "default (window 200, dropout 0.2, no weight decay) learned fastest and scored best;",
        "auto's heavier regularization (dropout 0.5, weight decay 0.05) trailed by 0.0028 on",
        "both validation and test, and may catch up with more time (not measured). The tuned",
        "settings (2 x 128, window 50, dropout 0.07, lr 1.4e-3) won 2.5-minute trials but got",
        "only 8 epochs in 10 minutes, the larger model being slower: short trials favour fast",
        "starters. Above TIGER (0.0803) with the default; LC-Rec's 0.0923 not reached.",
    ],
    "video-games": [
        "Full softmax over 23,715 items costs ~140 s per epoch on one thread, so the",
        "10-minute cap allowed 3-4 epochs and every full-softmax run stopped still rising",
        "(0.018-0.022). Sampled softmax over 3,000 popularity-drawn negatives (SASRec+ 3000's",
        "loss; `--loss sampled-softmax --negatives 3000`) takes ~25 s per epoch and reached",
        "the rows marked `+ sampled-softmax 3000` in the same cap. `tuned` was not run here:",
        "a 2.5-minute trial is one epoch of full softmax, too short to rank settings.",
    ],
}


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in DATASETS if results["datasets"].get(n, {}).get("runs")]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        runs = results["datasets"][name]["runs"]
        labels = row_names(runs)
        scores = [[r["test"]["ndcg@10"] for r in runs.values() if row_name(r) == row]
                  for row in labels]  # fmt: skip
        axis.bar(range(len(labels)), [mean(seeds) for seeds in scores], color="tab:blue")
        for index, seeds in enumerate(scores):
            axis.plot([index] * len(seeds), seeds, "k.", markersize=4)
        ticks = [label.replace(" + sampled-softmax ", "\n+ sampled\n") for label in labels]
        axis.set_xticks(range(len(labels)), ticks, fontsize=7)
        axis.axhline(DATASETS[name]["sasrec"][1], color="red", linestyle="--", label="SASRec")
        axis.axhline(DATASETS[name]["best"][1], color="gray", linestyle=":", label="best")
        axis.set_title(name)
        axis.set_ylabel("test NDCG@10")
    axes[0][0].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "recipes.png", dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(DATASETS))
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--max-minutes", type=float, default=10.0, help="Each run's cap.")
    parser.add_argument("--tune-minutes", type=float, default=10.0, help="The search's budget.")
    parser.add_argument("--trial-minutes", type=float, default=2.0, help="Each trial's budget.")
    parser.add_argument("--threads", type=int, help="CPU threads per run.")
    parser.add_argument("--force", action="store_true", help="Rerun recorded runs.")
    parser.add_argument(
        "--variant", help="Name for extra train flags (after --): rows 'RECIPE + NAME'."
    )
    parser.add_argument("train_args", nargs="*", help="Extra `logitrec train` flags (after --).")
    parser.add_argument("--report-only", action="store_true")
    options = parser.parse_args()
    if bool(options.variant) != bool(options.train_args):
        parser.error("--variant names the extra train flags given after --: give both or neither")
    if not options.report_only:
        if not options.dataset:
            parser.error("--dataset is required unless --report-only")
        measure(options)
    report()


if __name__ == "__main__":
    main()

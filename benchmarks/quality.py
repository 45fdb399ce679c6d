"""Quality on ML-1M: train a recipe, evaluate by full ranking, and report it next to the anchors.

    python benchmarks/quality.py --name scratch-default -- --max-minutes 60
    python benchmarks/quality.py --name minilm-short -- --backbone minilm --epochs 1 ...
    python benchmarks/quality.py --time-evaluate scratch-88epochs-seed2
    python benchmarks/quality.py --report-only

Everything after `--` goes to `logitrec train` unchanged. Each run is merged into
benchmarks/results/quality.json by name; quality.md and quality.png are regenerated from it.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from logitrec.atomic import write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ML1M = REPO.parent / "shared" / "data" / "ml-1m"
TARGET_NDCG = 0.18
# The target is the default recipe's, so it is judged on these runs: the default settings and
# nothing else but the seed, over the ~88 epochs an hour buys here. Three are `--max-minutes 60`
# (the first spells `--windows all` out: it ran before that became the default); the fourth
# fixes `--epochs 88` (the three's mean) because the host ran 1.3-1.4x slower that day, so an
# hour would have bought fewer epochs than the others had.
DEFAULT_RECIPE_RUNS = (
    "scratch-allwindows-60min",
    "scratch-allwindows-60min-seed7",
    "scratch-allwindows-60min-seed1",
    "scratch-88epochs-seed2",
)
METRICS = ("hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20", "mrr@20")

# Published full-ranking, leave-one-out numbers on this exact ML-1M file (as quoted in issue #3).
ANTKLEN = "antklen/sasrec-bert4rec-recsys23 README (Klenitskiy & Vasilev, RecSys 2023)"
# `split`: whether the number was measured on this very file (benchmarks/datasets.md has the
# sources and what was checked).
ANCHORS = [
    {"model": "SASRec (BCE)", "ndcg@10": 0.1341, "hr@10": 0.25, "source": ANTKLEN,
     "split": "same file"},
    {"model": "BERT4Rec", "ndcg@10": 0.1537, "hr@10": 0.2843, "source": ANTKLEN,
     "split": "same file"},
    {"model": "gSASRec", "ndcg@10": 0.1726, "hr@10": None, "source": "as quoted in issue #3",
     "split": "not verified"},
    {"model": "SASRec+ (full CE)", "ndcg@10": 0.1821, "hr@10": 0.3152, "source": ANTKLEN,
     "split": "same file"},
    {"model": "SASRec+ 3000 (sampled CE)", "ndcg@10": 0.1857, "hr@10": 0.3159,
     "source": ANTKLEN, "split": "same file"},
    {"model": "HSTU-large", "ndcg@10": 0.1893, "hr@10": 0.3294,
     "source": "Meta generative-recommenders (Zhai et al., ICML 2024)",
     "split": "other preprocessing (same-second order changed; ~25% of test targets differ)"},
]  # fmt: skip


NOTES = [
    "- scratch-allwindows-60min is `logitrec train --max-minutes 60 --windows all`, and",
    "  `--windows all` is now the default, so it is the default recipe: 2 layers x 64, dropout",
    "  0.2, lr 3e-3 cosine over the hour, user context gender/age/occupation as prefix tokens,",
    "  full CE computed in chunks, and every training transition of a long history used, in",
    "  windows of 200 going back in time (each user's newest window alone holds 66% of ML-1M's",
    "  training transitions). 84 epochs of ~38 s, best validation NDCG@10 0.1845 at epoch 56;",
    "  test 0.1807. The same with `--seed 7` and `--seed 1`: 89 and 92 epochs, best",
    "  validation 0.1882 / 0.1870 at epochs 63 / 72, test 0.1799 / 0.1777.",
    "- scratch-88epochs-seed2 is the same recipe with `--seed 2` over a fixed 88 epochs (the",
    "  three hour-long runs' mean) instead of `--max-minutes 60`: the host ran 1.3-1.4x",
    "  slower that day (56.8 s per epoch, validation included, against 39-43 s), so an hour",
    "  would have bought ~63 epochs and mixed a slower machine into the seed comparison. Its",
    "  warm-up and cosine decay span the 88 epochs as the others' span the hour. Best",
    "  validation 0.1861 at epoch 75, test 0.1826, in 83 minutes. Four seeds: 0.1777-0.1826,",
    "  mean 0.1802: the 0.18 target met on the mean, by less than the seed spread, and by 2",
    "  of the 4 runs.",
    "- Two one-run variants of that recipe, neither better on test: scratch-validitems-60min",
    "  validates on 1,000 users and trains the other 5,040 on their validation item",
    "  (`--valid-users 1000 --train-valid-items`, HSTU's protocol; 99 epochs of ~35 s): test",
    "  0.1795. scratch-h128-60min is 2 x 128 at lr 2e-3 (h128 beat h64 by 0.007 at equal",
    "  dropout in GPU round 1): 58 epochs of ~62 s, best validation 0.1890 at epoch 45, the",
    "  highest of any run, yet test 0.1794. Both lie inside the default's seed range",
    "  (0.1777-0.1826); validation gains of this size did not carry over to the test split.",
    "- scratch-default-60min is the same command before whole-history windows (the newest",
    "  window per user only, the default then): 120 epochs, best validation NDCG@10 0.1807 at",
    "  epoch 101, test 0.1746. scratch-60min is an older recipe (no user context, lr 1e-3).",
    "- How the recipe was chosen: 36 runs on a lent H200 at the epochs the CPU fits in an hour",
    "  (`quality_gpu_sweep.md`): user context helped; bigger models, more dropout, an untied",
    "  head, attention dropout off and a moving average of the weights did not.",
    "- minilm-h200 is the default minilm recipe (window 200, batch 128, lr 1e-3 / encoder 5e-5,",
    "  no user context: the defaults of that day) run to its end: early stopping (patience 20)",
    "  after 58 epochs, 3.2 minutes on an H200 shared with 10 other runs. minilm-8min is the",
    "  shortened CPU run (window 50, 3 epochs).",
]


def logitrec(*args: str) -> str:
    command = [sys.executable, "-m", "logitrec", *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def ensure_dataset(data: Path) -> None:
    if (data / "manifest.json").is_file():
        return
    if not (ML1M / "ml-1m.txt").is_file():
        raise SystemExit(f"no dataset at {data} and no shared ML-1M at {ML1M}")
    logitrec("data", "prepare", str(ML1M), "--out", str(data), "-q")


def time_evaluate(data: Path, checkpoint: Path, repeats: int = 3) -> float:
    """Median wall seconds of the whole `logitrec evaluate` command (start-up included)."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        logitrec("evaluate", "--data", str(data), "--checkpoint", str(checkpoint))
        seconds.append(time.perf_counter() - started)
    return round(sorted(seconds)[len(seconds) // 2], 1)


def run(name: str, data: Path, train_args: list[str]) -> dict:
    checkpoint = REPO / "artifacts" / "quality" / name
    train_command = [
        "train",
        "--data",
        str(data),
        "--out",
        str(checkpoint),
        "--force",
        "-q",
        *train_args,
    ]
    started = time.perf_counter()
    logitrec(*train_command)
    wall = time.perf_counter() - started
    evaluated = json.loads(
        logitrec("evaluate", "--data", str(data), "--checkpoint", str(checkpoint), "--baselines")
    )
    metrics = json.loads((checkpoint / "metrics.json").read_text())
    config = json.loads((checkpoint / "config.json").read_text())
    return {
        "name": name,
        "command": "logitrec " + " ".join(train_command).replace(f"{REPO}/", ""),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({metrics['device']}, "
        f"{metrics['threads']} threads)",
        "backbone": config["model"]["backbone"],
        "model": config["model"],
        "train": {k: v for k, v in config["train"].items() if k != "model"},
        "epochs_run": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "stopped": metrics["stopped"],
        "train_wall_seconds": metrics["wall_seconds"],
        "command_wall_seconds": round(wall, 1),
        "test": {k: evaluated[k] for k in METRICS},
        "valid": {k: metrics["valid"][k] for k in METRICS},
        "most_popular_test": {k: evaluated["most_popular"][k] for k in METRICS},
    }


def report(results: dict) -> None:
    lines = [
        "# Quality on MovieLens-1M",
        "",
        "Full ranking over all 3,416 items, leave-one-out (last item test, second-to-last",
        "validation), items in the user's history excluded; 6,040 test users. Produced by",
        "`benchmarks/quality.py`; every number below was measured by the command shown.",
        "",
        "## Our runs (test split)",
        "",
        "| run | backbone | epochs (best) | train wall time | machine | HR@10 | NDCG@10 | MRR@10 "
        "| HR@20 | NDCG@20 | MRR@20 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["runs"].values():
        t = r["test"]
        lines.append(
            f"| {r['name']} | {r['backbone']} | {r['epochs_run']} ({r['best_epoch']}) | "
            f"{r['train_wall_seconds'] / 60:.1f} min | {r['machine']} | {t['hr@10']:.4f} | "
            f"{t['ndcg@10']:.4f} | {t['mrr@10']:.4f} | {t['hr@20']:.4f} | {t['ndcg@20']:.4f} | "
            f"{t['mrr@20']:.4f} |"
        )
    popular = next(iter(results["runs"].values()), {}).get("most_popular_test")
    if popular:
        lines.append(
            f"| most popular (baseline) | - | - | - | - | {popular['hr@10']:.4f} | "
            f"{popular['ndcg@10']:.4f} | {popular['mrr@10']:.4f} | {popular['hr@20']:.4f} | "
            f"{popular['ndcg@20']:.4f} | {popular['mrr@20']:.4f} |"
        )
    lines += ["", *target_verdict(results["runs"]), *evaluation_speed(results["runs"])]
    lines += ["", "## Notes", "", *NOTES]
    lines += [
        "",
        "## Published anchors (full ranking, leave-one-out)",
        "",
        "| model | NDCG@10 | HR@10 | split | source |",
        "| --- | --- | --- | --- | --- |",
    ]
    for a in ANCHORS:
        hr = f"{a['hr@10']:.4f}" if a["hr@10"] else "-"
        lines.append(f"| {a['model']} | {a['ndcg@10']:.4f} | {hr} | {a['split']} | {a['source']} |")
    lines += ["", "## Commands", ""]
    for r in results["runs"].values():
        lines += [f"- {r['name']}: `{r['command']}` ({r['date']}, stopped by {r['stopped']})"]
    path = RESULTS / "quality.md"
    kept = kept_sections(path.read_text()) if path.is_file() else ""
    path.write_text("\n".join(lines) + "\n" + kept)
    plot(results)


def target_verdict(runs: dict) -> list[str]:
    """The 0.18 target judged on the default recipe's seeds: every run, their mean and range."""
    seeds = [runs[name] for name in DEFAULT_RECIPE_RUNS if name in runs]
    if not seeds:
        return []

    def schedule(run: dict) -> str:
        minutes = run["train"].get("max_minutes")
        return f"--max-minutes {minutes:.0f}" if minutes else f"--epochs {run['train']['epochs']}"

    scores = [r["test"]["ndcg@10"] for r in seeds]
    mean = sum(scores) / len(scores)
    listed = ", ".join(
        f"{r['test']['ndcg@10']:.4f} (seed {r['train']['seed']}, `{schedule(r)}`: "
        f"{r['epochs_run']} epochs in {r['train_wall_seconds'] / 60:.0f} min)"
        for r in seeds
    )
    reached = sum(score >= TARGET_NDCG for score in scores)
    margin = mean - TARGET_NDCG
    verdict = f"met by {margin:.4f}" if margin >= 0 else f"NOT met, {-margin:.4f} short"
    text = (
        f"Target: the default scratch recipe reaching test NDCG@10 >= {TARGET_NDCG} in about an "
        f"hour on this 2-core machine. The default recipe, {len(seeds)} seeds: {listed}. "
        f"Mean {mean:.4f}, range {min(scores):.4f}-{max(scores):.4f}: **{verdict}** on the "
        f"mean; {reached} of {len(seeds)} runs at or above {TARGET_NDCG}."
    )
    timed = [r["test"]["ndcg@10"] for r in seeds if r["train"].get("max_minutes")]
    if 0 < len(timed) < len(seeds):
        text += f" The {len(timed)} hour-budgeted runs alone: mean {sum(timed) / len(timed):.4f}."
    return [text]


def evaluation_speed(runs: dict) -> list[str]:
    """The issue's other target: ML-1M test evaluation (full ranking) in under a minute on CPU."""
    lines = []
    for r in runs.values():
        if "evaluate_wall_seconds" not in r:
            continue
        seconds = r["evaluate_wall_seconds"]
        lines += [
            "",
            f"Evaluation speed: `logitrec evaluate` (full ranking of all items for the 6,040 "
            f"test users, the whole command with its start-up) on {r['name']}'s checkpoint: "
            f"{seconds:.1f} s, median of 3, on {r['machine']} ({r['evaluate_date']}); target "
            f"under 60 s: **{'met' if seconds < 60 else 'NOT met'}**.",
        ]
    return lines


# Sections other benchmarks write into quality.md (benchmarks/coldstart.py: the backbones);
# regenerating this file keeps them.
SECTION_BEGIN, SECTION_END = "<!-- section:", "<!-- end section -->"


def kept_sections(text: str) -> str:
    """The other benchmarks' sections of an existing quality.md, markers included."""
    kept, rest = [], text
    while SECTION_BEGIN in rest and SECTION_END in rest:
        begin = rest.index(SECTION_BEGIN)
        end = rest.index(SECTION_END, begin) + len(SECTION_END)
        kept.append(rest[begin:end])
        rest = rest[end:]
    return "".join(f"\n{section}\n" for section in kept)


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [a["model"] for a in ANCHORS] + list(results["runs"])
    values = [a["ndcg@10"] for a in ANCHORS] + [
        r["test"]["ndcg@10"] for r in results["runs"].values()
    ]
    colors = ["lightgray"] * len(ANCHORS) + ["tab:blue"] * len(results["runs"])
    fig, axis = plt.subplots(figsize=(9, 4))
    axis.barh(names, values, color=colors)
    axis.axvline(TARGET_NDCG, color="red", linestyle="--", label=f"target {TARGET_NDCG}")
    axis.set_xlabel("test NDCG@10 (ML-1M, full ranking)")
    axis.legend(loc="lower right")  # at the top it hid the newest run's bar
    fig.tight_layout()
    fig.savefig(RESULTS / "quality.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="Run name (its key in quality.json).")
    parser.add_argument("--data", type=Path, default=REPO / "artifacts" / "ml-1m")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--time-evaluate",
        metavar="NAME",
        help="Time `logitrec evaluate` on recorded run NAME's checkpoint and record it.",
    )
    parser.add_argument("train_args", nargs="*", help="Arguments for `logitrec train` (after --).")
    options = parser.parse_args()
    path = RESULTS / "quality.json"
    training = not options.report_only and not options.time_evaluate
    if training:
        if not options.name:
            parser.error("--name is required unless --report-only or --time-evaluate")
        ensure_dataset(options.data)
        measured = run(options.name, options.data, options.train_args)
    # Read after the hour-long run, not before: results recorded meanwhile must survive.
    results = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    if options.time_evaluate:
        entry = results["runs"].get(options.time_evaluate)
        checkpoint = REPO / "artifacts" / "quality" / options.time_evaluate
        if entry is None or not (checkpoint / "model.safetensors").is_file():
            parser.error(f"--time-evaluate: no recorded run with a checkpoint at {checkpoint}")
        entry["evaluate_wall_seconds"] = time_evaluate(options.data, checkpoint)
        entry["evaluate_date"] = time.strftime("%Y-%m-%d")
    elif training:
        results["runs"][options.name] = measured
        results["anchors"] = ANCHORS
    if not options.report_only:
        RESULTS.mkdir(parents=True, exist_ok=True)
        write_json(path, results)  # renamed when complete: a crash keeps the old
    report(results)
    print((RESULTS / "quality.md").read_text())


if __name__ == "__main__":
    main()

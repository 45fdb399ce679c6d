"""Benchmark `logitrec data prepare`: wall time and peak memory on ML-1M and a 25M-row table.

Targets (issue 2): ML-1M in seconds; a 25M-interaction table (ML-25M size: 162,541 users,
59,047 items) within 3 minutes and 8 GB on the 2-core development machine. Each prepare runs
as its own process, exactly as a user runs it; its peak RSS comes from the kernel (wait4).

    python benchmarks/data_prepare.py [--rows 25000000] [--scratch benchmarks/scratch]

Writes benchmarks/results/data_prepare.json and data_prepare.png.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from training.data.synth import SynthOptions, generate

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ML1M = REPO.parent / "shared" / "data" / "ml-1m"
TARGET = {"rows": 25_000_000, "seconds": 180, "peak_rss_gb": 8.0}
ML25M_USERS, ML25M_ITEMS = 162_541, 59_047


def make_ml25m_sized_csv(path: Path, rows: int) -> dict:
    """A ratings.csv shaped like ML-25M's (userId,movieId,rating,timestamp), `rows` long."""
    start = time.perf_counter()
    users = max(1, round(ML25M_USERS * rows / 25_000_000))
    tables = generate(
        SynthOptions(
            users=users,
            items=ML25M_ITEMS,
            clusters=200,
            # +1 makes up for lengths rounded down, so at least `rows` rows come out
            mean_length=rows / users + 1,
            min_length=20,
            max_length=10_000,
            seed=25,
        )
    )
    interactions = tables["interactions"]
    ratings = (interactions["item_id"] * 7 + interactions["user_id"]) % 10 / 2 + 0.5
    interactions.select(
        pl.col("user_id").alias("userId"),
        pl.col("item_id").alias("movieId"),
        ratings.alias("rating"),
        "timestamp",
    ).write_csv(path)
    return {
        "rows": interactions.height,
        "users": users,
        "items": ML25M_ITEMS,
        "bytes": path.stat().st_size,
        "generate_seconds": round(time.perf_counter() - start, 1),
    }


def run_prepare(args: list[str], scratch: Path) -> dict:
    """Run `logitrec data prepare ARGS --json` as a child; return its timings and peak RSS."""
    command = [sys.executable, "-m", "logitrec", "data", "prepare", *args, "--json", "--force"]
    stdout_path, stderr_path = scratch / "prepare.out", scratch / "prepare.err"
    start = time.perf_counter()
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=REPO)
        # wait4 reaps the child and reports its own peak RSS (kilobytes on Linux).
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"prepare failed: {stderr_path.read_text()}")
    manifest = json.loads(stdout_path.read_text())
    return {
        "command": "logitrec data prepare " + " ".join(args).replace(f"{REPO}/", ""),
        "wall_seconds": round(wall, 2),
        "stage_seconds": manifest["timings_seconds"],
        "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 2),
        "counts": manifest["counts"],
        "cleaning": manifest["cleaning"],
        "split": manifest["split"],
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["runs"])
    fig, (times, memory) = plt.subplots(1, 2, figsize=(11, 4))
    bottoms = [0.0] * len(names)
    stages = list(next(iter(results["runs"].values()))["stage_seconds"])
    for stage in stages:
        values = [results["runs"][n]["stage_seconds"].get(stage, 0) for n in names]
        times.bar(names, values, bottom=bottoms, label=stage)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    times.axhline(TARGET["seconds"], color="red", linestyle="--", label="25M-row target")
    times.set_ylabel("seconds")
    times.set_title("prepare time by stage")
    times.legend(fontsize=7)
    memory.bar(names, [results["runs"][n]["peak_rss_gb"] for n in names], color="gray")
    memory.axhline(TARGET["peak_rss_gb"], color="red", linestyle="--", label="25M-row target")
    memory.legend(fontsize=7)
    memory.set_ylabel("peak RSS (GB)")
    memory.set_title("prepare peak memory")
    fig.suptitle(f"logitrec data prepare on {results['machine']['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=25_000_000)
    parser.add_argument("--scratch", type=Path, default=REPO / "benchmarks" / "scratch")
    options = parser.parse_args()
    options.scratch.mkdir(parents=True, exist_ok=True)
    results = {
        "benchmark": "data_prepare",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "polars": pl.__version__,
        },
        "target": TARGET,
        "runs": {},
    }
    if (ML1M / "ml-1m.txt").is_file():
        results["runs"]["ml-1m"] = run_prepare(
            [str(ML1M), "--out", str(options.scratch / "ml-1m")], options.scratch
        )
    csv_path = options.scratch / "ratings.csv"
    name = f"{options.rows / 1e6:g}M rows"
    results["generated_input"] = make_ml25m_sized_csv(csv_path, options.rows)
    run = run_prepare(
        [
            str(csv_path),
            "--user-col",
            "userId",
            "--item-col",
            "movieId",
            "--out",
            str(options.scratch / "table"),
        ],
        options.scratch,
    )
    run["meets_target"] = (
        results["generated_input"]["rows"] >= TARGET["rows"]
        and run["wall_seconds"] <= TARGET["seconds"]
        and run["peak_rss_gb"] <= TARGET["peak_rss_gb"]
    )
    results["runs"][name] = run
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "data_prepare.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / "data_prepare.png")
    shutil.rmtree(options.scratch, ignore_errors=True)
    print(
        json.dumps(
            {
                name: {k: run[k] for k in ("wall_seconds", "peak_rss_gb")}
                for name, run in results["runs"].items()
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""The gateway's exact path at catalog scale: block GEMM over the head plus top-k selection,
before and after selecting by a running threshold instead of partially sorting every block.

    python benchmarks/exact_path.py [--items 1000000] [--dim 64] [--rounds 3]

Random head rows and user vectors (the selection's cost does not depend on what the vectors
mean); batches of 1, 8 and 32 queries with 10 items each and 50 excluded items, the two
implementations interleaved in every round on the same arrays. Writes
benchmarks/results/exact_path.{json,png} and prints a markdown table.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from serving.pipeline import EXACT_BLOCK, Ranked, exact_rankings, top_k  # noqa: E402
from serving.query import Query  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
BATCHES = (1, 8, 32)


def every_block_partitioned(vectors, head, queries, block=EXACT_BLOCK) -> list[Ranked]:
    """The exact path as it was: the best k of every block by a partial sort, then the best k
    of those (the baseline this benchmark compares against)."""
    augmented = np.concatenate([vectors, np.ones((len(vectors), 1), vectors.dtype)], axis=1)
    num_items = len(head) - 1
    keep = max(q.k for q in queries)
    kept_items, kept_logits = [[] for _ in queries], [[] for _ in queries]
    for start in range(0, num_items, block):
        rows = head[1 + start : 1 + start + block]
        logits = augmented @ rows.T
        for row, query in enumerate(queries):
            low, high = np.searchsorted(query.exclude, (start + 1, start + len(rows) + 1))
            logits[row, query.exclude[low:high] - start - 1] = -np.inf
        width = min(keep, len(rows))
        best = np.argpartition(-logits, width - 1, axis=1)[:, :width]
        best_logits = np.take_along_axis(logits, best, axis=1)
        for row in range(len(queries)):
            kept_items[row].append(best[row] + start + 1)
            kept_logits[row].append(best_logits[row])
    rankings = []
    for query, items, values in zip(queries, kept_items, kept_logits, strict=True):
        items, values = np.concatenate(items), np.concatenate(values)
        allowed = np.isfinite(values)
        rankings.append(top_k(items[allowed], values[allowed], query.k))
    return rankings


IMPLEMENTATIONS = {"every block partitioned": every_block_partitioned, "threshold": exact_rankings}


def make_queries(rng, count: int, num_items: int) -> list[Query]:
    return [
        Query(
            items=np.array([1]),
            context=np.zeros(0, np.int64),
            k=10,
            exclude=np.sort(rng.choice(np.arange(1, num_items + 1), 50, replace=False)),
        )
        for _ in range(count)
    ]


def measure(args) -> dict:
    rng = np.random.default_rng(0)
    head = rng.normal(size=(args.items + 1, args.dim + 1)).astype(np.float32)
    runs = []
    for batch in BATCHES:
        vectors = rng.normal(size=(batch, args.dim)).astype(np.float32)
        queries = make_queries(rng, batch, args.items)
        reference = None
        for round_number in range(args.rounds):
            names = list(IMPLEMENTATIONS)
            if round_number % 2:
                names.reverse()
            for name in names:
                started = time.perf_counter()
                answers = IMPLEMENTATIONS[name](vectors, head, queries)
                seconds = time.perf_counter() - started
                items = [a.items.tolist() for a in answers]
                reference = reference or items
                assert items == reference, f"{name} disagrees with the other implementation"
                runs.append(
                    {
                        "implementation": name,
                        "batch": batch,
                        "round": round_number,
                        "seconds": seconds,
                        "queries_per_second": batch / seconds,
                    }
                )
                print(f"batch {batch:3d} {name:24s} {batch / seconds:8.1f} q/s", flush=True)
    return {
        "command": "python benchmarks/exact_path.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "items": args.items,
        "dim": args.dim,
        "runs": runs,
        "summary": summarize(runs),
    }


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    for batch in BATCHES:
        best = {
            name: max(r["queries_per_second"] for r in runs
                      if r["batch"] == batch and r["implementation"] == name)
            for name in IMPLEMENTATIONS
        }  # fmt: skip
        old, new = best["every block partitioned"], best["threshold"]
        rows.append({"batch": batch, "before_qps": round(old, 1), "after_qps": round(new, 1),
                     "speedup": round(new / old, 2)})  # fmt: skip
    return rows


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["summary"]
    positions = np.arange(len(rows))
    fig, axis = plt.subplots(figsize=(7, 4))
    before = [r["before_qps"] for r in rows]
    axis.bar(positions - 0.2, before, 0.4, label="every block partitioned")
    axis.bar(positions + 0.2, [r["after_qps"] for r in rows], 0.4, label="running threshold")
    axis.set_xticks(positions, [f"batch {r['batch']}" for r in rows])
    axis.set_ylabel("queries/s (best round)")
    axis.set_title(f"exact top-10 over {results['items']:,} items, d = {results['dim']}")
    axis.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "exact_path.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = measure(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "exact_path.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results)
    print("| batch | before q/s | after q/s | speed-up |\n| ---: | ---: | ---: | ---: |")
    for row in results["summary"]:
        print(f"| {row['batch']} | {row['before_qps']} | {row['after_qps']} | {row['speedup']}x |")


if __name__ == "__main__":
    main()

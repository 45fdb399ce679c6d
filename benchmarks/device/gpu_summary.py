"""Sum up a gpu_check.sh run: throughput at p99 <= the latency target for each served variant
(from `logitrec bench load` JSON files), the parity of each export, the GPU FAISS sweep.

    python benchmarks/device/gpu_summary.py OUT_DIR  ->  OUT_DIR/summary.json, printed
"""

import json
import sys
from pathlib import Path

P99_TARGET_MS = 20.0
GOAL_RPS = 20_000  # recommendations/s at p99 <= 20 ms, ML-1M model, H100/H200 class


def best_within_target(load: dict, target_ms: float = P99_TARGET_MS) -> dict:
    """The highest OK/s among runs whose p99 met the target (None when none did)."""
    fitting = [
        run
        for run in load["runs"]
        if run.get("latency_ms") and run["latency_ms"]["p99"] <= target_ms
    ]
    best = max(fitting, key=lambda run: run["achieved_rps"], default=None)
    return {
        "rps_at_p99_target": best and best["achieved_rps"],
        "p99_ms": best and best["latency_ms"]["p99"],
        "load": best and (best.get("clients") or best.get("offered_rps")),
        "runs": [
            (run.get("clients"), run["achieved_rps"], (run.get("latency_ms") or {}).get("p99"))
            for run in load["runs"]
        ],
    }


def main(folder: Path) -> dict:
    summary = {"p99_target_ms": P99_TARGET_MS, "goal_rps": GOAL_RPS, "serving": {}}
    for path in sorted(folder.glob("load_*.json")):
        summary["serving"][path.stem.removeprefix("load_")] = best_within_target(
            json.loads(path.read_text())
        )
    for path in sorted(folder.glob("export_*.json")):
        printed = json.loads(path.read_text())
        parity = printed.get("parity", {})
        summary[path.stem] = {
            key: parity.get(key)
            for key in ("passed", "max_abs_logit_diff", "tolerance", "top10_overlap")
        }
    retrieval = folder / "retrieval_gpu.json"
    if retrieval.is_file():
        summary["retrieval"] = [
            {
                "items": size["items"],
                "on_gpu": size["searched_on_gpu"],
                "best": max(size["points"], key=lambda p: (p["recall_at_10"] >= 0.99, p["qps"])),
            }
            for size in json.loads(retrieval.read_text())["sizes"]
        ]
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    result = main(Path(sys.argv[1]))
    print(json.dumps(result, indent=2))
    for variant, numbers in result["serving"].items():
        rps = numbers["rps_at_p99_target"]
        verdict = "no run met the target" if rps is None else f"{rps:,.0f} req/s"
        print(f"throughput at p99 <= {P99_TARGET_MS:g} ms, {variant}: {verdict} "
              f"(goal {GOAL_RPS:,})")  # fmt: skip

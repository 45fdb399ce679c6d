"""Summarise the training runs in a folder (finished or still running) into one JSON file.

Usage: python collect.py RUNS_DIR OUT.json
A finished run contributes its metrics.json; an unfinished one the epochs logged so far in its
staging directory, so a sweep cut short by a time limit still says how far each run got.
"""

import json
import sys
from pathlib import Path


def curve(log: Path) -> list[dict]:
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [
        {
            "epoch": r["epoch"],
            "valid_ndcg@10": round(r["valid"]["ndcg@10"], 4) if "valid" in r else None,
            "epoch_seconds": r["epoch_seconds"],
            "loss": round(r["loss"], 4),
        }
        for r in rows
    ]


def summarise(runs: Path) -> dict:
    summary = {}
    for log_file in sorted(runs.glob("*.log")):
        name = log_file.stem
        done = runs / name
        staging = sorted(runs.glob(f".{name}.tmp-*"))
        folder = done if (done / "metrics.json").is_file() else (staging[-1] if staging else None)
        entry = {"finished": folder == done, "log_tail": log_file.read_text()[-600:]}
        if folder is not None and (folder / "train_log.jsonl").is_file():
            entry["curve"] = curve(folder / "train_log.jsonl")
            entry["best_valid_ndcg@10"] = max(
                (c["valid_ndcg@10"] or 0 for c in entry["curve"]), default=None
            )
        cut_short = folder / "cut_short_test.json" if folder is not None else None
        if not entry["finished"] and cut_short is not None and cut_short.is_file():
            # Written by call4.sh: the test metrics of the best epoch the run reached in time.
            entry["test_of_best_so_far"] = json.loads(cut_short.read_text())
        if entry["finished"]:
            metrics = json.loads((done / "metrics.json").read_text())
            config = json.loads((done / "config.json").read_text())
            entry.update(
                test=metrics["test"],
                valid=metrics["valid"],
                best_epoch=metrics["best_epoch"],
                epochs_run=metrics["epochs_run"],
                stopped=metrics["stopped"],
                wall_seconds=metrics["wall_seconds"],
                device=metrics["device"],
                model=config["model"],
                train=config["train"],
            )
        summary[name] = entry
    return summary


if __name__ == "__main__":
    result = summarise(Path(sys.argv[1]))
    Path(sys.argv[2]).write_text(json.dumps(result, indent=1))
    for name, entry in result.items():
        test = entry.get("test", entry.get("test_of_best_so_far", {})).get("ndcg@10")
        print(
            f"{name:24s} finished={entry['finished']!s:5s} epochs={len(entry.get('curve', []))} "
            f"best_valid={entry.get('best_valid_ndcg@10')} test_ndcg@10={test}"
        )

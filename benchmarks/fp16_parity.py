"""fp16 against fp32 export: logit error and top-10 agreement with the PyTorch model, on CPU
ONNX Runtime (what sets export.parity.FP16_RELATIVE_TOLERANCE).

    python benchmarks/fp16_parity.py --checkpoint artifacts/checkpoints/demo

Exports the checkpoint twice (fp32, fp16) into a scratch repository with `logitrec export`'s
own code, then scores the checkpoint's parity histories and their earlier states (up to 4,096
query states of real users) over the whole catalog with each exported encoder + scorer, against
PyTorch in fp32. Writes benchmarks/results/fp16_parity.{json,md} (or --out PREFIX).
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from export import exporter, parity
from export.calibrate import history_prefixes
from logitrec import repository as layout
from training.checkpoint import load_checkpoint, load_parity_sample

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SCRATCH = REPO / "benchmarks" / "scratch" / "fp16_parity"
QUERY_STATES = 4096
CHUNK = 256


def reference(model, histories, context) -> np.ndarray:
    with torch.no_grad():
        rows = []
        for start in range(0, len(histories), CHUNK):
            items = torch.as_tensor(histories[start : start + CHUNK])
            ctx = torch.as_tensor(context[start : start + CHUNK]) if context.shape[1] else None
            rows.append(model.logits(model.user_vectors(items, ctx)).numpy())
    return np.concatenate(rows)


def onnx_logits(repository: Path, name: str, histories, context, num_items: int) -> np.ndarray:
    encoder = parity.session(layout.model_file(repository, name, "encoder", 1))
    scorer = parity.session(layout.model_file(repository, name, "scorer", 1))
    rows = []
    for start in range(0, len(histories), CHUNK):
        feed = parity.encoder_feed(histories[start : start + CHUNK], context[start : start + CHUNK])
        (vectors,) = encoder.run(None, feed)
        candidates = np.tile(np.arange(1, num_items + 1, dtype=np.int64), (len(vectors), 1))
        (logits,) = scorer.run(None, {"user_vector": vectors, "candidates": candidates})
        rows.append(logits)
    return np.concatenate(rows)


def compare(expected: np.ndarray, found: np.ndarray) -> dict:
    difference = np.abs(found - expected)
    scale = float(np.abs(expected).max())
    expected_top = np.argsort(-expected, axis=1, kind="stable")[:, : parity.TOP] + 1
    found_top = np.argsort(-found, axis=1, kind="stable")[:, : parity.TOP] + 1
    worst = float(difference.max())
    return {
        "max_abs_logit_diff": worst,
        "p99_abs_logit_diff": float(np.quantile(difference, 0.99)),
        "largest_abs_logit": scale,
        "max_diff_relative_to_largest": worst / scale,
        "top10_overlap": parity.overlap(expected_top, found_top),
        "top10_identical_share": float((expected_top == found_top).all(axis=1).mean()),
        "top10_near_ties_only_share": parity.near_ties_only(
            expected, found_top, parity.logit_tolerance("fp16", expected)
        )
        / len(expected),
    }


def export_both(checkpoint: Path) -> Path:
    repository = SCRATCH / "repository"
    shutil.rmtree(repository, ignore_errors=True)
    for precision in ("fp32", "fp16"):
        exporter.export(
            exporter.ExportOptions(
                checkpoint=checkpoint,
                repository=repository,
                name=precision,
                version="1",
                precision=precision,
            )
        )
    return repository


def write_markdown(results: dict, path: Path) -> None:
    lines = [
        "# fp16 export parity (CPU ONNX Runtime)",
        "",
        f"`{results['command']}` on {results['date']}, {results['machine']}.",
        f"Checkpoint `{results['checkpoint']}`: {results['items']:,} items, "
        f"{results['query_states']:,} query states (parity users and their earlier states), "
        "whole catalog scored; reference: the PyTorch model in fp32.",
        "",
        "| export | max abs logit diff | p99 | max / largest abs logit | top-10 overlap "
        "| top-10 identical | only near-ties differ |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for precision, row in results["precisions"].items():
        lines.append(
            f"| {precision} | {row['max_abs_logit_diff']:.2e} | {row['p99_abs_logit_diff']:.2e} "
            f"| {row['max_diff_relative_to_largest']:.2e} | {row['top10_overlap']:.4f} "
            f"| {row['top10_identical_share']:.1%} | {row['top10_near_ties_only_share']:.1%} |"
        )
    lines += [
        "",
        f"Tolerance for fp16 (export.parity): {results['fp16_relative_tolerance']} of the largest "
        "|logit|, top-10 differences only among items within twice that of the 10th best.",
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=RESULTS / "fp16_parity")
    args = parser.parse_args(argv)
    model, config = load_checkpoint(args.checkpoint)
    histories, context = load_parity_sample(args.checkpoint)
    states, rows = history_prefixes(histories, QUERY_STATES)
    context = context[rows]
    repository = export_both(args.checkpoint)
    expected = reference(model, states, context)
    results = {
        "command": "python benchmarks/fp16_parity.py " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "checkpoint": str(args.checkpoint),
        "items": config.num_items,
        "query_states": len(states),
        "fp16_relative_tolerance": parity.FP16_RELATIVE_TOLERANCE,
        "precisions": {},
    }
    for precision in ("fp32", "fp16"):
        found = onnx_logits(repository, precision, states, context, config.num_items)
        results["precisions"][precision] = compare(expected, found)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()

"""Candidate pruning with the FAISS index on a GPU, as the gateway runs it with --device cuda:
export's default index (logitrec export builds it), copied to the GPU by serving.faiss_device,
searched through logitrec.mips.search; recall@10 after exact re-scoring and queries/s per
nprobe, against exact top-k by torch on the same device.

    python benchmarks/device/gpu_retrieval.py --sizes 1000000,5000000 --out OUT/retrieval_gpu.json

Catalogs are benchmarks/retrieval.py's synthetic ones (shaped by the ML-1M demo model). With
--device cpu (no GPU, for a dry run) everything runs on the CPU at whatever sizes are given.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from retrieval import FALLBACK_PROFILE, synthetic_catalog

from export.index import build_index
from logitrec.mips import search, search_parameter
from serving.faiss_device import GPU_MAX_K, GpuSearch, place_index

NPROBES = (8, 16, 32, 64, 128, 256, 512, 1024)
BATCH = 64  # queries per search call, as the gateway batches them
TOP = 10


def exact_top(weight, bias, queries, device: str, k: int = TOP) -> tuple[np.ndarray, float]:
    """(true top-k item indices from 1, queries/s) by one matmul + topk per batch."""
    w = torch.as_tensor(weight, device=device)
    b = torch.as_tensor(bias, device=device)
    q = torch.as_tensor(queries, device=device)
    tops = []
    _sync(device)
    started = time.perf_counter()
    for start in range(0, len(q), BATCH):
        logits = q[start : start + BATCH] @ w.T + b
        tops.append(torch.topk(logits, k, dim=1).indices.cpu())
    _sync(device)
    seconds = time.perf_counter() - started
    return torch.cat(tops).numpy() + 1, len(q) / seconds


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def set_nprobe(index, nprobe: int) -> None:
    import faiss

    if isinstance(index, GpuSearch):
        faiss.GpuParameterSpace().set_index_parameter(index.gpu_index, "nprobe", nprobe)
        faiss.ParameterSpace().set_index_parameter(index.cpu_index, "nprobe", nprobe)
    else:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)


def measure(index, queries, truth, candidates: int) -> dict:
    """Recall@10 of the candidates (the gateway re-scores them exactly, so a true top-10 item
    among them is ranked right) and queries/s of the search alone."""
    found = []
    started = time.perf_counter()
    for start in range(0, len(queries), BATCH):
        found.append(search(index, queries[start : start + BATCH], candidates))
    seconds = time.perf_counter() - started
    found = np.concatenate(found)
    hits = [len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True)]
    return {"recall_at_10": float(np.mean(hits) / TOP), "qps": len(queries) / seconds}


def run_size(items: int, args) -> dict:
    catalog = synthetic_catalog(items, args.dim, args.queries, dict(FALLBACK_PROFILE), args.seed)
    started = time.perf_counter()
    index, info = build_index(catalog.weight, catalog.bias)
    build_seconds = time.perf_counter() - started
    torch_device = "cuda" if args.device == "cuda" else "cpu"
    truth, exact_qps = exact_top(catalog.weight, catalog.bias, catalog.queries, torch_device)
    placed = place_index(index, args.device)
    entry = {
        "items": items,
        "dim": args.dim,
        "index": info.factory,
        "built_on_gpu": info.gpu,
        "build_seconds": round(build_seconds, 1),
        "searched_on_gpu": isinstance(placed, GpuSearch),
        "exact_torch_qps": round(exact_qps, 1),
        "candidates": args.candidates,
        "points": [],
    }
    exact_index = search_parameter(index) is None  # flat (small catalogs): one point
    for nprobe in (None,) if exact_index else NPROBES:
        if nprobe is not None:
            set_nprobe(placed, nprobe)
        point = measure(placed, catalog.queries, truth, args.candidates)
        point = {"nprobe": nprobe, **point, "speedup_over_exact": point["qps"] / exact_qps}
        entry["points"].append(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in point.items()}
        )
        print(
            f"{items:>9,} items nprobe {nprobe or '-':>4}: recall@10 {point['recall_at_10']:.4f} "
            f"{point['qps']:>10,.0f} q/s ({point['speedup_over_exact']:.1f}x exact)",
            flush=True,
        )
        if point["recall_at_10"] >= args.enough:
            break
    return entry


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
    parser.add_argument("--sizes", type=ints, default=[1_000_000, 5_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=4096)
    parser.add_argument("--candidates", type=int, default=1024, help=f"at most {GPU_MAX_K} on GPU")
    parser.add_argument("--enough", type=float, default=0.995, help="stop the nprobe sweep here")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    results = {"command": " ".join(sys.argv), "device": args.device, "sizes": []}
    if args.device == "cuda":
        results["gpu"] = torch.cuda.get_device_name()
    for items in args.sizes:
        results["sizes"].append(run_size(items, args))
        args.out.write_text(json.dumps(results, indent=2) + "\n")  # partial results survive


if __name__ == "__main__":
    main()

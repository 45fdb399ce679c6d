"""Benchmark candidate pruning: recall and queries/s of FAISS indexes against exact brute force.

Issue 16: at 100k, 1M and (memory permitting) 5M items, d = 64 and 384, measure the recall the
gateway delivers when it searches `candidate_count` candidates and re-scores them exactly (the
exact top-k among the candidates vs the exact top-k over the whole catalog, bias included), and
its queries/s against exact batched brute force (BLAS GEMM + top-k, torch, FAISS IndexFlatIP) on
the same vectors. Goal: at 1M items, >= 20x the best exact baseline at recall@10 >= 0.99.

Indexes are built in the MIPS-to-L2 space of logitrec.mips (what export ships) and searched with
logitrec.mips.search, so a setting measured here is one the gateway can run. Families: IVF-Flat
(several nlist, nprobe sweep), HNSW (M 16/32, efSearch sweep), and the levers the issue names:
IVF-SQ8 and IVF-PQ 4-bit fast scan (quantized scan; the gateway's exact re-score is the refine),
and PCA to 32 (or 64) dimensions before the IVF scan (lower-dimensional scan + exact re-rank).

Vectors: the demo ML-1M checkpoint (3,416 items, d = 32) is benchmarked as it is, with real
user vectors from its encoder; it also shapes the synthetic catalogs (item norms, bias values and
their order by popularity, spectrum, cluster tightness, the mean direction, how close users sit to
a cluster, and the logit scale). Without the artifacts, the profile measured from it is used.

    python benchmarks/retrieval.py --sizes 100000,1000000,5000000 --dims 64,384 --queries 1024

Writes benchmarks/results/retrieval.{json,md,png} (or --out PREFIX). Absolute numbers on a shared
2-core machine are noisy: every family's speed-up is against an exact baseline timed just before
its sweep, so each ratio compares runs made back to back.
"""

import argparse
import gc
import json
import math
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import torch
from faiss.contrib.ivf_tools import add_preassigned

from export.calibrate import exact_top, history_prefixes
from export.index import default_factory
from logitrec.mips import item_points, search, search_parameter, set_search_parameter

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
REAL_SCORER = REPO / "artifacts" / "model_repository" / "demo_scorer" / "1"
REAL_ENCODER = REPO / "artifacts" / "model_repository" / "demo_encoder" / "1" / "model.onnx"
REAL_SEQUENCES = REPO / "artifacts" / "demo-data" / "sequences.parquet"

BATCH = 64  # queries per search call, as the gateway batches them
RECALL_AT = (10, 100)
TOP_K = max(RECALL_AT)  # every pipeline returns its top-100, sorted
GOAL = {"items": 1_000_000, "speedup": 20.0, "recall_at_10": 0.99}
ITEMS_PER_CLUSTER = 100  # as k-means at 34 clusters on the real 3,416 items
TRAIN_POINTS_PER_LIST = 64  # k-means sample per IVF list (FAISS asks >= 39; export uses 256)
KMEANS_ITERATIONS = 10  # FAISS's own default for IVF training
# items x (d + 2) above which HNSW is not built: it must keep efSearch >= the candidate count,
# which at 100k items already makes it slower than brute force, and a 1M-item graph takes
# many minutes to build on 2 cores.
HNSW_MAX_CELLS = 40_000_000
# The largest IVF list counts trained here: k-means and assigning every item cost
# nlist x N x d, about 3 minutes at 4096 x 1M x 66 or 2048 x 1M x 386 on 2 shared cores.
MAX_NLIST = {64: 4096, 384: 2048}
# Stop a sweep once recall@10 is here: wider settings only cost time.
ENOUGH_AT_10 = 0.995

# Measured from the demo checkpoint (ML-1M, 3,416 items, d = 32) with this script's
# `real_profile`; used when the artifacts are not on this machine.
FALLBACK_PROFILE = {
    "source": "recorded profile of the demo ML-1M checkpoint (artifacts not found)",
    "items": 3416,
    "dim": 32,
    "item_norm_quantiles": [0.645, 0.896, 0.985, 1.072, 1.178, 1.307, 1.950],
    "bias_quantiles": [-0.278, -0.172, -0.121, -0.068, -0.003, 0.085, 0.269],
    "spectrum_alpha": 0.515,
    "mean_direction_norm": 0.236,
    "item_center_cos": 0.623,
    "query_center_cos": 0.739,
    "query_norm_quantiles": [5.50, 6.16, 6.43, 6.63, 6.84, 7.07, 7.46],
    "logit_ratio": 19.0,
    "popularity_zipf": 0.722,
    "bias_popularity_spearman": 0.858,
}
QUANTILES = (0, 10, 25, 50, 75, 90, 100)
# The cosines the generator uses (item to its cluster centre, query to the centre it is drawn
# near). The measured real ones (0.62 and 0.74, to k-means centroids) put into the generator
# give a same-size twin of the real catalog that is harder for IVF than the real one: its true
# top-10 spans 4.3-4.9 IVF lists (real: 3.2) and IVF recall@10 at nprobe 4 of 58 is 0.79-0.81
# (real: 0.90). With these values the twin matches (3.1-3.3 lists, 0.91-0.93); every run
# repeats that check (`twin_check` in the JSON).
GENERATOR_COSINES = {"item_center": 0.70, "query_center": 0.80}
# A sensitivity variant with much tighter clusters than the trained catalog has (--tight).
TIGHT_COSINES = {"item_center": 0.90, "query_center": 0.90}
TWIN_LISTS = 58  # sqrt(3,416): the IVF the twin check compares on
TWIN_NPROBE = (1, 2, 4, 8, 16)


# --- real vectors and the profile they give the synthetic catalogs --------------------------


def real_catalog():
    """(weight [N, d], bias [N], user vectors [Q, d]) of the demo checkpoint, or None.

    User vectors come from the exported encoder on the parity histories and their earlier
    states (export.calibrate.history_prefixes), with each history's context features."""
    head_path = REAL_SCORER / "head.npy"
    if not (head_path.exists() and REAL_ENCODER.exists()):
        return None
    import onnxruntime

    from export.parity import encoder_feed

    head = np.load(head_path)  # [N + 1, d + 1]: W and b side by side, row 0 padding
    weight, bias = np.ascontiguousarray(head[1:, :-1]), np.ascontiguousarray(head[1:, -1])
    histories = np.load(REAL_SCORER / "parity_histories.npy")
    context = np.load(REAL_SCORER / "parity_context.npy")
    rows, source = history_prefixes(histories)  # up to 1,024 query states
    session = onnxruntime.InferenceSession(str(REAL_ENCODER), providers=["CPUExecutionProvider"])
    vectors = session.run(None, encoder_feed(rows, context[source]))[0]
    return weight, bias, np.ascontiguousarray(vectors, dtype=np.float32)


def real_profile(weight: np.ndarray, bias: np.ndarray, vectors: np.ndarray) -> dict:
    """The shape of a trained catalog that the synthetic ones copy."""
    directions = unit(weight)
    clusters = max(1, len(weight) // ITEMS_PER_CLUSTER)
    kmeans = faiss.Kmeans(weight.shape[1], clusters, niter=20, seed=1, verbose=False)
    kmeans.cp.min_points_per_centroid = 1
    kmeans.train(directions)
    centers = unit(kmeans.centroids)
    _, own = kmeans.index.search(directions, 1)
    item_logits = vectors @ weight.T
    profile = {
        "source": f"demo ML-1M checkpoint ({REAL_SCORER.relative_to(REPO)}/head.npy)",
        "items": len(weight),
        "dim": weight.shape[1],
        "item_norm_quantiles": quantiles(np.linalg.norm(weight, axis=1)),
        "bias_quantiles": quantiles(bias),
        "spectrum_alpha": spectrum_alpha(directions),
        "mean_direction_norm": round(float(np.linalg.norm(directions.mean(0))), 3),
        "item_center_cos": median((directions * centers[own[:, 0]]).sum(1)),
        "query_center_cos": median((unit(vectors) @ centers.T).max(1)),
        "query_norm_quantiles": quantiles(np.linalg.norm(vectors, axis=1)),
        "logit_ratio": median(item_logits.std(axis=1) / bias.std()),
        "top10_unchanged_without_bias": top10_overlap(item_logits + bias, item_logits),
    }
    profile.update(popularity_profile(bias))
    return profile


def popularity_profile(bias: np.ndarray) -> dict:
    """How popularity falls with rank (Zipf exponent) and how bias follows it, from ML-1M."""
    if not REAL_SEQUENCES.exists():
        keys = ("popularity_zipf", "bias_popularity_spearman")
        return {key: FALLBACK_PROFILE[key] for key in keys}
    import polars as pl

    items = pl.read_parquet(REAL_SEQUENCES)["item_indices"].explode().to_numpy()
    counts = np.bincount(items, minlength=len(bias) + 1)[1 : len(bias) + 1]
    ranked = np.sort(counts)[::-1][:2000]
    ranked = ranked[ranked > 0]
    slope = np.polyfit(np.log(np.arange(1, len(ranked) + 1)), np.log(ranked), 1)[0]
    return {
        "popularity_zipf": round(float(-slope), 3),
        "bias_popularity_spearman": round(spearman(bias, counts), 3),
    }


def unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.ascontiguousarray(rows / np.maximum(norms, 1e-12), dtype=np.float32)


def quantiles(values: np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in np.percentile(values, QUANTILES)]


def median(values: np.ndarray) -> float:
    return round(float(np.median(values)), 3)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def spectrum_alpha(directions: np.ndarray) -> float:
    """Exponent of a power law fitted to the covariance eigenvalues (lambda_j ~ j^-alpha)."""
    eigen = np.linalg.eigvalsh(np.cov((directions - directions.mean(0)).T))[::-1]
    ranks = np.arange(1, len(eigen) + 1)
    return round(float(-np.polyfit(np.log(ranks), np.log(np.maximum(eigen, 1e-12)), 1)[0]), 3)


def top10_overlap(logits: np.ndarray, other: np.ndarray) -> float:
    a = np.argpartition(-logits, 9, axis=1)[:, :10]
    b = np.argpartition(-other, 9, axis=1)[:, :10]
    shared = [len(np.intersect1d(x, y)) for x, y in zip(a, b, strict=True)]
    return round(float(np.mean(shared)) / 10, 3)


# --- synthetic catalogs --------------------------------------------------------------------


@dataclass
class Catalog:
    name: str
    weight: np.ndarray  # [N, d]
    bias: np.ndarray  # [N]
    queries: np.ndarray  # [Q, d] user vectors
    real: bool
    check: dict = field(default_factory=dict)  # the synthetic catalog's own profile
    variant: str = "real"  # or "shaped by real", "tight clusters"


def synthetic_catalog(
    items: int, dim: int, queries: int, profile: dict, seed: int, tight: bool = False
) -> Catalog:
    """Clustered items, Zipf popularity in the bias, queries near popular clusters (seeded).

    Item direction = normalize(g + c_k + s n_i): g a shared offset (trained catalogs have a mean
    direction), c_k the cluster centre, n_i noise, centres and noise Gaussian with the real
    spectrum stretched to `dim` dimensions. s and |g| are set so that an item's cosine to its
    centre and the mean direction match the real catalog; norms are drawn from the real ones.
    Popularity is Zipf over clusters times Zipf within one; the real bias values are handed out
    in (noisy) popularity order. Queries pick a cluster by popularity and sit at the real
    cosine from it; their norms follow the real ones, scaled to the real logit spread."""
    rng = np.random.default_rng(seed)
    clusters = max(1, items // ITEMS_PER_CLUSTER)
    scale = np.arange(1, dim + 1, dtype=np.float64) ** (-profile["spectrum_alpha"] / 2)
    scale = (scale / np.sqrt(np.square(scale).sum())).astype(np.float32)  # E|c|^2 = 1
    offset_sq, item_noise, query_noise = noise_levels(
        profile, TIGHT_COSINES if tight else GENERATOR_COSINES
    )
    offset = unit(rng.standard_normal((1, dim)).astype(np.float32))[0] * math.sqrt(offset_sq)
    centers = rng.standard_normal((clusters, dim), dtype=np.float32) * scale + offset
    cluster_of = rng.integers(0, clusters, items)
    weight = np.empty((items, dim), dtype=np.float32)
    for start in range(0, items, 65_536):
        rows = slice(start, min(items, start + 65_536))
        noise = rng.standard_normal((rows.stop - start, dim), dtype=np.float32) * scale
        weight[rows] = unit(centers[cluster_of[rows]] + item_noise * noise)
        weight[rows] *= draw(profile["item_norm_quantiles"], rows.stop - start, rng)[:, None]
    popularity, cluster_weight = zipf_popularity(cluster_of, clusters, profile, rng)
    bias = bias_by_popularity(popularity, profile, rng)
    picked = rng.choice(clusters, queries, p=cluster_weight / cluster_weight.sum())
    noise = rng.standard_normal((queries, dim), dtype=np.float32) * scale
    users = unit(centers[picked] + query_noise * noise)
    users *= draw(profile["query_norm_quantiles"], queries, rng)[:, None]
    users *= logit_scale(users, weight, bias, profile["logit_ratio"], rng)
    variant = "tight clusters" if tight else "shaped by real"
    catalog = Catalog(f"synthetic {items:,} x {dim}, {variant}", weight, bias, users, False)
    catalog.variant = variant
    catalog.check = synthetic_check(catalog, centers, cluster_of, picked, popularity, rng)
    return catalog


def noise_levels(profile: dict, cosines: dict) -> tuple[float, float, float]:
    """(|g|^2, s, t): with A = |g|^2 + 1, an item's cosine to its centre is sqrt(A/(A+s^2)),
    the mean direction's norm |g|/sqrt(A+s^2), and a query's cosine sqrt(A/(A+t^2))."""
    item_cos, query_cos = cosines["item_center"], cosines["query_center"]
    mean_norm = profile["mean_direction_norm"]
    offset_sq = mean_norm**2 / max(item_cos**2 - mean_norm**2, 1e-3)
    spread = offset_sq + 1
    item_noise = math.sqrt(spread * (1 / item_cos**2 - 1))
    query_noise = math.sqrt(spread * (1 / query_cos**2 - 1))
    return offset_sq, item_noise, query_noise


def draw(quantile_values: list[float], count: int, rng) -> np.ndarray:
    """Samples from the distribution with these QUANTILES (piecewise-linear inverse CDF)."""
    return np.interp(rng.random(count) * 100, QUANTILES, quantile_values).astype(np.float32)


def zipf_popularity(cluster_of, clusters: int, profile: dict, rng):
    """(item popularity, cluster weight): Zipf over clusters times Zipf within a cluster."""
    exponent = profile["popularity_zipf"]
    cluster_weight = rng.permutation(clusters).astype(np.float64) + 1.0
    cluster_weight = cluster_weight**-exponent
    order = np.argsort(cluster_of, kind="stable")
    starts = np.searchsorted(cluster_of[order], np.arange(clusters))
    rank_within = np.empty(len(cluster_of), dtype=np.float64)
    rank_within[order] = np.arange(len(cluster_of)) - starts[cluster_of[order]] + 1.0
    return cluster_weight[cluster_of] * rank_within**-exponent, cluster_weight


def bias_by_popularity(popularity: np.ndarray, profile: dict, rng) -> np.ndarray:
    """The real bias distribution, the highest values to the most popular items; rank noise
    keeps the order loose (the real bias follows popularity with Spearman ~0.86)."""
    noisy = np.log(popularity)
    noisy = noisy + rng.standard_normal(len(noisy)) * 0.5 * noisy.std()
    ranks = np.empty(len(noisy))
    ranks[np.argsort(noisy)] = np.linspace(0, 100, len(noisy))
    return np.interp(ranks, QUANTILES, profile["bias_quantiles"]).astype(np.float32)


def logit_scale(users, weight, bias, ratio: float, rng) -> float:
    """The factor that gives std_i(h . W_i) / std(b) its real median."""
    sample = weight[rng.choice(len(weight), min(len(weight), 20_000), replace=False)]
    spread = (users[:256] @ sample.T).std(axis=1) / bias.std()
    return float(ratio / np.median(spread))


def synthetic_check(catalog: Catalog, centers, cluster_of, picked, popularity, rng) -> dict:
    """The generated catalog's own profile, to set beside the real one."""
    sample = rng.choice(len(catalog.weight), min(len(catalog.weight), 20_000), replace=False)
    directions = unit(catalog.weight[sample])
    center_dirs = unit(centers)
    logits = catalog.queries[:256] @ catalog.weight[sample].T
    return {
        "item_norm_quantiles": quantiles(np.linalg.norm(catalog.weight[sample], axis=1)),
        "bias_quantiles": quantiles(catalog.bias),
        "mean_direction_norm": round(float(np.linalg.norm(directions.mean(0))), 3),
        "item_center_cos": median((directions * center_dirs[cluster_of[sample]]).sum(1)),
        "query_center_cos": median((unit(catalog.queries) * center_dirs[picked]).sum(1)),
        "query_norm_quantiles": quantiles(np.linalg.norm(catalog.queries, axis=1)),
        "logit_ratio": median(logits.std(axis=1) / catalog.bias.std()),
        "bias_popularity_spearman": round(spearman(catalog.bias[sample], popularity[sample]), 3),
        "clusters": len(centers),
    }


def twin_check(real: tuple, profile: dict, seed: int) -> dict:
    """IVF recall@10 vs nprobe and how many lists the true top-10 spans, on the real catalog
    and on a synthetic one of the same size and dimension: does the generator give IVF the
    real difficulty?"""
    weight, _, users = real
    twin = synthetic_catalog(len(weight), weight.shape[1], len(users), profile, seed)
    out = {"nlist": TWIN_LISTS, "nprobe": list(TWIN_NPROBE)}
    for name, (w, b, q) in (("real", real), ("twin", (twin.weight, twin.bias, twin.queries))):
        truth = numpy_top(w, b, q, 10)
        points, _ = item_points(w, b)
        coarse = Coarse(points, TWIN_LISTS, seed)
        index = ivf_index(coarse, points, "Flat")
        curve = []
        for nprobe in TWIN_NPROBE:
            set_search_parameter(index, "nprobe", nprobe)
            curve.append(recall(search(index, q, 10), truth, 10))
        out[f"{name}_recall_at_10"] = curve
        spans = [len(set(lists)) for lists in coarse.lists[truth - 1]]
        out[f"{name}_lists_in_top10"] = round(float(np.mean(spans)), 2)
    return out


# --- exact baselines -------------------------------------------------------------------------


def numpy_top(weight, bias, queries, k: int = TOP_K) -> np.ndarray:
    """Item indices (from 1) of the k highest logits, best first: GEMM + argpartition."""
    out = np.empty((len(queries), k), dtype=np.int64)
    cut = len(weight) - k
    for start in range(0, len(queries), BATCH):
        logits = queries[start : start + BATCH] @ weight.T
        logits += bias
        part = np.argpartition(logits, cut, axis=1)[:, cut:]
        order = np.argsort(-np.take_along_axis(logits, part, 1), axis=1)
        out[start : start + BATCH] = np.take_along_axis(part, order, 1) + 1
    return out


def torch_top(weight_t, bias_t, queries, k: int = TOP_K) -> np.ndarray:
    """The same with torch.addmm + torch.topk (CPU)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, len(queries), BATCH):
            batch = torch.from_numpy(queries[start : start + BATCH])
            logits = torch.addmm(bias_t, batch, weight_t.T)
            out[start : start + BATCH] = torch.topk(logits, k, dim=1).indices.numpy() + 1
    return out


def flat_ip_top(index, queries, k: int = TOP_K) -> np.ndarray:
    """The same with FAISS IndexFlatIP over [W_i, b_i] and queries [h, 1]."""
    ones = np.ones((len(queries), 1), dtype=np.float32)
    augmented = np.ascontiguousarray(np.concatenate([queries, ones], 1))
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), BATCH):
        out[start : start + BATCH] = index.search(augmented[start : start + BATCH], k)[1] + 1
    return out


class Exact:
    """The three exact methods over one catalog; `time(name, queries)` -> (q/s, ids)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.weight_t = torch.from_numpy(catalog.weight)
        self.bias_t = torch.from_numpy(catalog.bias)
        self.flat_ip = faiss.IndexFlatIP(catalog.weight.shape[1] + 1)
        self.flat_ip.add(np.concatenate([catalog.weight, catalog.bias[:, None]], 1))
        self.k = min(TOP_K, len(catalog.weight) - 1)

    def run(self, name: str, queries: np.ndarray) -> np.ndarray:
        c = self.catalog
        if name == "numpy GEMM + argpartition":
            return numpy_top(c.weight, c.bias, queries, self.k)
        if name == "torch addmm + topk":
            return torch_top(self.weight_t, self.bias_t, queries, self.k)
        return flat_ip_top(self.flat_ip, queries, self.k)

    def time(self, name: str, queries: np.ndarray) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        ids = self.run(name, queries)
        return len(queries) / (time.perf_counter() - start), ids


EXACT_METHODS = ("numpy GEMM + argpartition", "torch addmm + topk", "FAISS IndexFlatIP")


def recall(found: np.ndarray, truth: np.ndarray, at: int) -> float:
    """Mean share of each row's true top-`at` found in its first `at` entries."""
    at = min(at, truth.shape[1])
    hits = [len(np.intersect1d(f[:at], t[:at])) for f, t in zip(found, truth, strict=True)]
    return round(float(np.mean(hits)) / at, 4)


# --- pruned: search, then exact re-score of the candidates -----------------------------------


RESCORE_CHUNK = 8  # queries whose candidate rows are gathered at once


def rescore(weight, bias, queries, candidates, k: int, rows_buffer=None) -> np.ndarray:
    """The exact top-k (item indices from 1, best first) among each row's candidates (0 =
    none), as the gateway's scorer re-scores them. The candidate rows are gathered into one
    reused buffer: a fresh C x d array per call costs page faults that dwarf the arithmetic."""
    count = candidates.shape[1]
    if rows_buffer is None:
        rows_buffer = np.empty((RESCORE_CHUNK, count, weight.shape[1]), dtype=weight.dtype)
    out = np.zeros((len(queries), k), dtype=np.int64)
    keep = min(k, count)
    for start in range(0, len(queries), RESCORE_CHUNK):
        ids = candidates[start : start + RESCORE_CHUNK]
        rows = np.maximum(ids - 1, 0)
        gathered = rows_buffer[: len(ids)]
        np.take(weight, rows, axis=0, out=gathered, mode="clip")  # "raise" would copy again
        logits = np.einsum("qcd,qd->qc", gathered, queries[start : start + RESCORE_CHUNK])
        logits += bias[rows]
        logits[ids <= 0] = -np.inf
        part = np.argpartition(-logits, keep - 1, axis=1)[:, :keep]
        order = np.argsort(-np.take_along_axis(logits, part, 1), axis=1)
        chosen = np.take_along_axis(part, order, 1)
        out[start : start + RESCORE_CHUNK, :keep] = np.take_along_axis(ids, chosen, 1)
    return out


@dataclass
class Point:
    """One search setting at one candidate count, measured."""

    candidates: int
    value: int | None  # nprobe / efSearch
    queries: int
    search_qps: float
    qps: float  # search + exact re-score
    speedup: float
    recall_at_10: float
    recall_at_100: float
    raw_recall_at_10: float  # the index's own top-10, before the re-score
    raw_recall_at_100: float
    filled: float  # share of the candidate count the index returned
    stopped_early: bool = False  # slower than exact after two batches: not finished


def measure_point(index, catalog, truth, count: int, reference_qps: float) -> Point:
    """Search every query batch for `count` candidates, re-score them exactly, time both.
    Stops after two batches when it runs slower than the exact reference."""
    queries = catalog.queries
    found, raw = [], []
    searching = rescoring = 0.0
    returned = 0
    buffer = np.empty((RESCORE_CHUNK, count, catalog.weight.shape[1]), dtype=np.float32)
    for start in range(0, len(queries), BATCH):
        batch = queries[start : start + BATCH]
        t0 = time.perf_counter()
        hits = search(index, batch, count)
        t1 = time.perf_counter()
        found.append(rescore(catalog.weight, catalog.bias, batch, hits, TOP_K, buffer))
        rescoring += time.perf_counter() - t1
        searching += t1 - t0
        raw.append(hits[:, :TOP_K])
        returned += int((hits > 0).sum())
        done = start + len(batch)
        if start and done < len(queries) and done / (searching + rescoring) < reference_qps:
            break
    done = sum(len(f) for f in found)
    found, raw, truth = np.concatenate(found), np.concatenate(raw), truth[:done]
    qps = done / (searching + rescoring)
    return Point(
        candidates=count,
        value=None,
        queries=done,
        search_qps=round(done / searching, 1),
        qps=round(qps, 1),
        speedup=round(qps / reference_qps, 2),
        recall_at_10=recall(found, truth, 10),
        recall_at_100=recall(found, truth, 100),
        raw_recall_at_10=recall(raw, truth, 10),
        raw_recall_at_100=recall(raw, truth, 100),
        filled=round(returned / done / count, 4),
        stopped_early=done < len(queries),
    )


def ladder(parameter: str | None, index, count: int) -> list[int | None]:
    """Search breadths to sweep, about x1.4 apart. IVF: nprobe from the last one that leaves the
    candidate count unfilled; HNSW: efSearch from the candidate count (it cannot return more)."""
    if parameter is None:
        return [None]
    if parameter == "efSearch":
        return [int(count * f) for f in (1, 1.5, 2, 3, 4, 6, 8)]
    lists = faiss.extract_index_ivf(index).nlist
    per_list = index.ntotal / lists
    values = sorted({round(2 ** (i / 2)) for i in range(0, 2 * int(math.log2(lists)) + 2)})
    values = [v for v in values if v < lists] + [lists]
    first = max([v for v in values if v * per_list < count] or [1])
    return [v for v in values if v >= first]


def sweep(index, catalog, truth, counts, reference_qps: float) -> list[dict]:
    """Every (candidate count, breadth) until recall is saturated or it is slower than exact."""
    parameter = search_parameter(index)
    points = []
    for count in counts:
        for value in ladder(parameter, index, count):
            if parameter:
                set_search_parameter(index, parameter, value)
            point = measure_point(index, catalog, truth, count, reference_qps)
            point.value = value
            points.append(point.__dict__)
            if point.recall_at_10 >= ENOUGH_AT_10 or point.speedup < 1:
                break
    return points


# --- index builds --------------------------------------------------------------------------


class Coarse:
    """An IVF coarse quantizer trained once per (space, nlist) and every point's list,
    shared by the IVF variants built over the same points."""

    def __init__(self, points: np.ndarray, nlist: int, seed: int):
        start = time.perf_counter()
        rng = np.random.default_rng(seed)
        sample_size = min(len(points), TRAIN_POINTS_PER_LIST * nlist)
        self.sample = points[np.sort(rng.choice(len(points), sample_size, replace=False))]
        kmeans = faiss.Kmeans(points.shape[1], nlist, niter=KMEANS_ITERATIONS, seed=seed)
        kmeans.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
        kmeans.train(self.sample)
        self.quantizer = faiss.IndexFlatL2(points.shape[1])
        self.quantizer.add(kmeans.centroids)
        self.train_s = time.perf_counter() - start
        start = time.perf_counter()
        self.lists = self.quantizer.search(points, 1)[1][:, 0]
        self.assign_s = time.perf_counter() - start
        self.nlist = nlist


def ivf_index(coarse: Coarse, points: np.ndarray, code: str):
    """IVF over `coarse` with codes 'Flat', 'SQ8' or 'PQ{M}x4fs' (M sub-quantizers, 4 bits)."""
    dim, nlist, quantizer = points.shape[1], coarse.nlist, coarse.quantizer
    if code == "Flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist)
    elif code == "SQ8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit)
    else:
        subquantizers = int(code.removeprefix("PQ").split("x")[0])
        index = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, subquantizers, 4)
    index.train(coarse.sample)  # the quantizer is trained: this trains the codes only
    if code.endswith("fs"):
        index.add(points)  # fast scan packs codes in blocks as it adds: no pre-assigned path
    else:
        add_preassigned(index, points, coarse.lists)
    return index


def pca_ivf_index(points: np.ndarray, reduced: int, nlist: int, seed: int):
    """PCA (with a random rotation) to `reduced` dims, IVF-Flat there: a cheaper scan whose
    candidates the gateway re-scores in full. Returns (index, build seconds)."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    sample = points[rng.choice(len(points), min(len(points), 100_000), replace=False)]
    pca = faiss.PCAMatrix(points.shape[1], reduced, 0, True)
    pca.train(sample)
    projected = np.concatenate(
        [pca.apply(points[i : i + 262_144]) for i in range(0, len(points), 262_144)]
    )
    coarse = Coarse(projected, nlist, seed)
    inner = ivf_index(coarse, projected, "Flat")
    index = faiss.IndexPreTransform(pca, inner)
    return index, time.perf_counter() - start


def hnsw_index(points: np.ndarray, neighbours: int):
    index = faiss.IndexHNSWFlat(points.shape[1], neighbours)
    index.add(points)
    return index


def index_bytes(index) -> int:
    return int(faiss.serialize_index(index).nbytes)


def nlists(items: int, dim: int) -> list[int]:
    """sqrt(N) and, as export's default, 4 sqrt(N) lists (2 sqrt(N) at d > 128), at most
    MAX_NLIST; above 1M items only sqrt(N) (the build time grows as nlist x N)."""
    root = math.sqrt(items)
    factors = (1,) if items > 1_000_000 else (1, 4 if dim <= 128 else 2)
    cap = MAX_NLIST[64] if dim <= 128 else MAX_NLIST[384]
    return sorted({max(1, min(round(root * f), cap, items // 39)) for f in factors})


def pq_code(dim: int) -> str:
    """4-bit PQ with 2 dimensions per sub-quantizer (MIPS points have d + 2 dimensions)."""
    return f"PQ{max(1, dim // 2)}x4fs"


def families(catalog: Catalog, hnsw_max_cells: int) -> list[tuple[str, str, object]]:
    """(family, setting, builder) in the order they are measured; a builder returns
    (index, build seconds) given the points and the shared coarse quantizers."""
    items, dim = catalog.weight.shape
    lists = nlists(items, dim)
    widest = lists[-1]
    export_factory = default_factory(items)
    out = []
    for nlist in lists:
        note = " (export default)" if export_factory == f"IVF{nlist},Flat" else ""
        out.append(("IVF-Flat", f"IVF{nlist},Flat{note}", ("ivf", nlist, "Flat")))
    if items >= 50_000:  # below, export builds a flat index: pruning is for large catalogs
        code = pq_code(dim + 2)
        if items <= 1_000_000:  # SQ8 scans no faster than Flat here, at the same recall
            out.append(("IVF-SQ8", f"IVF{widest},SQ8", ("ivf", widest, "SQ8")))
        out.append(("IVF-PQ 4-bit fast scan", f"IVF{widest},{code}", ("ivf", widest, code)))
        for reduced in [r for r in ((32, 64) if dim >= 256 else (32,)) if r < dim]:
            spec = ("pca", widest, reduced)
            out.append((f"PCA{reduced} + IVF-Flat", f"PCAR{reduced},IVF{widest},Flat", spec))
    if items * (dim + 2) <= hnsw_max_cells:
        for neighbours in (16, 32):
            out.append(("HNSW", f"HNSW{neighbours}", ("hnsw", neighbours, None)))
    return out


class Builder:
    """Builds each family's index, training each coarse quantizer once."""

    def __init__(self, points: np.ndarray, seed: int):
        self.points, self.seed, self.coarse = points, seed, {}

    def build(self, spec) -> tuple[object, float, str]:
        """(index, build seconds, note). An IVF variant over an already trained coarse
        quantizer is charged that quantizer's training and assignment too."""
        kind, a, b = spec
        start = time.perf_counter()
        if kind == "hnsw":
            return hnsw_index(self.points, a), time.perf_counter() - start, ""
        if kind == "pca":
            return *pca_ivf_index(self.points, b, a, self.seed), ""
        shared = a in self.coarse
        if not shared:
            self.coarse[a] = Coarse(self.points, a, self.seed)
        coarse = self.coarse[a]
        start = time.perf_counter()
        index = ivf_index(coarse, self.points, b)
        seconds = coarse.train_s + coarse.assign_s + time.perf_counter() - start
        note = "coarse quantizer trained once, shared with IVF-Flat" if shared else ""
        return index, seconds, note


# --- one (catalog) run -----------------------------------------------------------------------


def run_catalog(catalog: Catalog, args) -> dict:
    items, dim = catalog.weight.shape
    counts = [c for c in args.candidates if c < items] or [items - 1]
    print(f"== {catalog.name}: {len(catalog.queries)} queries, candidates {counts}", flush=True)
    exact = Exact(catalog)
    few = catalog.queries[: args.reference_queries]
    # torch first over every query: its answer is the ground truth (checked against the
    # others and against export's own exact_top).
    baselines = {}
    qps, truth = exact.time("torch addmm + topk", catalog.queries)
    baselines["torch addmm + topk"] = {"qps": round(qps, 1), "queries": len(catalog.queries)}
    for name in ("numpy GEMM + argpartition", "FAISS IndexFlatIP"):
        qps, ids = exact.time(name, few)
        baselines[name] = {"qps": round(qps, 1), "queries": len(few)}
        baselines[name]["recall_at_10"] = recall(ids, truth[: len(ids)], 10)
        baselines[name]["recall_at_100"] = recall(ids, truth[: len(ids)], 100)
    export_truth = exact_top(few[:BATCH], catalog.weight, catalog.bias, 10)
    truth_agrees = recall(export_truth, truth[:BATCH], 10)
    best = max(baselines, key=lambda name: baselines[name]["qps"])
    print(f"   exact: {json.dumps(baselines)}; fastest {best}", flush=True)

    points, max_norm = item_points(catalog.weight, catalog.bias)
    builder = Builder(points, args.seed)
    settings = []
    for family, setting, spec in families(catalog, args.hnsw_max_cells):
        index, build_s, note = builder.build(spec)
        memory = index_bytes(index)
        reference, _ = exact.time(best, few)  # back to back with this family's sweep
        swept = sweep(index, catalog, truth, counts, reference)
        settings.append(
            {
                "family": family,
                "setting": setting,
                "build_s": round(build_s, 1),
                "index_mb": round(memory / 2**20, 1),
                "reference": {"method": best, "qps": round(reference, 1)},
                "points": swept,
                **({"note": note} if note else {}),
            }
        )
        print(f"   {setting}: built in {build_s:.0f}s, {memory / 2**20:.0f} MB; "
              + summary(swept), flush=True)  # fmt: skip
        del index
        gc.collect()
    del builder, points, exact
    gc.collect()
    return {
        "catalog": catalog.name,
        "real": catalog.real,
        "variant": catalog.variant,
        "items": items,
        "dim": dim,
        "queries": len(catalog.queries),
        "candidate_counts": counts,
        "max_norm": round(max_norm, 4),
        "exact": baselines,
        "fastest_exact": best,
        "truth_matches_export_exact_top": truth_agrees,
        "settings": settings,
        "profile_check": catalog.check,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def summary(points: list[dict]) -> str:
    good = [p for p in points if p["recall_at_10"] >= GOAL["recall_at_10"]]
    if not good:
        return f"recall@10 < {GOAL['recall_at_10']} at every setting tried"
    p = max(good, key=lambda p: p["speedup"])
    return (f"best at recall@10 >= {GOAL['recall_at_10']}: C={p['candidates']} "
            f"{p['value']} -> {p['qps']} q/s, x{p['speedup']}")  # fmt: skip


def needed_gb(items: int, dim: int) -> float:
    """Peak memory of a run: W and b, item_points' float64 temporaries (three N x (d+2)
    arrays), the float32 points, the FlatIP copy, one index and its serialized copy."""
    floats = items * dim + 3 * 2 * items * (dim + 2) + 4 * items * (dim + 2)
    return floats * 4 / 2**30


# --- report ----------------------------------------------------------------------------------


def best_points(run: dict, count: int) -> list[dict]:
    """Per family, the fastest point at recall@10 >= the goal for this candidate count."""
    best = {}
    for setting in run["settings"]:
        for p in setting["points"]:
            if p["candidates"] != count or p["recall_at_10"] < GOAL["recall_at_10"]:
                continue
            if p["stopped_early"]:
                continue
            row = {
                **p,
                "setting": setting["setting"],
                "build_s": setting["build_s"],
                "index_mb": setting["index_mb"],
                "reference_qps": setting["reference"]["qps"],
            }
            family = setting["family"]
            if family not in best or row["speedup"] > best[family]["speedup"]:
                best[family] = row  # fmt: skip
    return sorted(best.values(), key=lambda row: -row["speedup"])


def goal_verdict(runs: list[dict]) -> list[dict]:
    verdicts = []
    for run in runs:
        if run["items"] != GOAL["items"] or run["variant"] == "real":
            continue
        for count in run["candidate_counts"]:
            rows = best_points(run, count)
            top = rows[0] if rows else None
            verdicts.append({
                "variant": run["variant"],
                "dim": run["dim"],
                "candidates": count,
                "best_speedup": top["speedup"] if top else None,
                "setting": f"{top['setting']} @ {top['value']}" if top else None,
                "recall_at_10": top["recall_at_10"] if top else None,
                "met": bool(top and top["speedup"] >= GOAL["speedup"]),
            })  # fmt: skip
    return verdicts


def write_markdown(results: dict, path: Path) -> None:
    lines = [
        "# Candidate pruning: recall vs speed (issue 16)",
        "",
        f"`{results['command']}` on {results['machine']['cpus']} CPUs "
        f"(FAISS threads {results['machine']['faiss_threads']}, torch threads "
        f"{results['machine']['torch_threads']}), load average "
        f"{results['machine']['load_before']} before, {results['machine']['load_after']} after. "
        "The machine is shared with other jobs: absolute queries/s are noisy; each family's "
        "speed-up is against the fastest exact baseline timed just before its sweep.",
        "",
        "Recall is what the gateway delivers: the exact top-k among the index's candidates "
        "(re-scored exactly, bias included) vs the exact top-k over all items; *raw* is the "
        "index's own top-k. Queries/s include the re-score (gather C rows, logits, top-100), "
        f"batches of {BATCH}. Goal: at 1M items >= {GOAL['speedup']:.0f}x the best exact "
        f"baseline at recall@10 >= {GOAL['recall_at_10']}.",
        "",
        "## Goal at 1M items",
        "",
    ]
    for v in results["goal"]:
        status = "met" if v["met"] else "not met"
        lines.append(
            f"- {v['variant']}, d = {v['dim']}, C = {v['candidates']}: **{status}**, "
            f"best x{v['best_speedup']} "
            f"({v['setting']}, recall@10 {v['recall_at_10']})"
        )
    if not results["goal"]:
        lines.append("- no 1M-item catalog in this run")
    lines += ["", "## Vectors", "", vectors_note(results), ""]
    for run in results["runs"]:
        lines += run_markdown(run)
    for skipped in results["skipped"]:
        lines.append(f"- skipped {skipped['items']:,} x {skipped['dim']}: {skipped['why']}")
    path.write_text("\n".join(lines) + "\n")


def vectors_note(results: dict) -> str:
    p, g = results["profile"], results["generator_cosines"]
    text = (
        f"Real: the demo ML-1M checkpoint ({p['items']:,} items, d = {p['dim']}) with user "
        "vectors from its ONNX encoder on the parity histories and their earlier states. "
        "Synthetic: every other catalog, seeded, shaped by that profile (source: "
        f"{p['source']}): item norms (median {p['item_norm_quantiles'][3]}), the real bias "
        f"values handed out in Zipf popularity order (exponent {p['popularity_zipf']}; the real "
        f"bias-popularity Spearman is {p['bias_popularity_spearman']}), covariance spectrum "
        f"j^-{p['spectrum_alpha']}, mean direction {p['mean_direction_norm']}, "
        f"{ITEMS_PER_CLUSTER} items per cluster, queries near popular clusters, logit spread "
        f"std(h.W)/std(b) = {p['logit_ratio']} (bias matters: without it "
        f"{p.get('top10_unchanged_without_bias', 'n/a')} of the real top-10 stays). Cluster "
        f"tightness: item-centre cosine {g['item_center']} and query-centre cosine "
        f"{g['query_center']} (measured to k-means centroids: {p['item_center_cos']}, "
        f"{p['query_center_cos']}), chosen so that a same-size synthetic twin of the real "
        "catalog is as hard for IVF as the real one"
    )
    twin = results.get("twin_check")
    if twin:
        text += (
            f": IVF{twin['nlist']} recall@10 at nprobe {twin['nprobe']}: real "
            f"{twin['real_recall_at_10']}, twin {twin['twin_recall_at_10']}; the true top-10 "
            f"spans {twin['real_lists_in_top10']} lists (real) and "
            f"{twin['twin_lists_in_top10']} (twin)"
        )
    return text + (
        ". Each run's `profile_check` in the JSON gives the generated catalog's own values. "
        "The real catalog has d = 32; at 64 and 384 dimensions its shape is extrapolated."
    )


def run_markdown(run: dict) -> list[str]:
    lines = [f"## {run['items']:,} items x d = {run['dim']} ({run['variant']})", ""]
    lines += ["| exact baseline | queries/s | recall@10 |", "| --- | --- | --- |"]
    for name, b in run["exact"].items():
        lines.append(f"| {name} | {b['qps']} | {b.get('recall_at_10', 'truth')} |")
    lines.append("")
    for count in run["candidate_counts"]:
        rows = best_points(run, count)
        lines += [
            f"Best per family at recall@10 >= {GOAL['recall_at_10']}, C = {count} candidates:",
            "",
            "| setting | breadth | q/s (search only) | speed-up | recall@10 | recall@100 "
            "| raw @10 | filled | build s | index MB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            lines.append(
                f"| {r['setting']} | {r['value']} | {r['qps']} ({r['search_qps']}) "
                f"| x{r['speedup']} | {r['recall_at_10']} | {r['recall_at_100']} "
                f"| {r['raw_recall_at_10']} | {r['filled']} | {r['build_s']} | {r['index_mb']} |"
            )
        if not rows:
            lines.append("| none reached it | | | | | | | | | |")
        lines += ["", *unreached(run, count), ""]
    return lines


def unreached(run: dict, count: int) -> list[str]:
    """A line per setting that never reached the recall goal at this candidate count: the
    best recall@10 it got and why its sweep ended."""
    lines = []
    for setting in run["settings"]:
        points = [p for p in setting["points"] if p["candidates"] == count]
        if not points or any(p["recall_at_10"] >= GOAL["recall_at_10"] for p in points):
            continue
        best = max(points, key=lambda p: p["recall_at_10"])
        ended = "slower than exact" if points[-1]["speedup"] < 1 else "the widest setting"
        lines.append(
            f"- {setting['setting']}: best recall@10 {best['recall_at_10']} (breadth "
            f"{best['value']}, x{best['speedup']}); sweep ended at {ended}"
        )
    return lines


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    columns = min(3, len(runs)) or 1
    rows = math.ceil(len(runs) / columns) or 1
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.5 * rows), squeeze=False)
    colours = {}
    for ax, run in zip(axes.flat, runs, strict=False):
        for setting in run["settings"]:
            for count in run["candidate_counts"]:
                style = "-" if count == run["candidate_counts"][-1] else "--"
                pts = [p for p in setting["points"] if p["candidates"] == count]
                if not pts:
                    continue
                colour = colours.setdefault(setting["family"], f"C{len(colours)}")
                ax.plot([p["speedup"] for p in pts], [p["recall_at_10"] for p in pts], style,
                        marker=".", color=colour, alpha=0.8,
                        label=f"{setting['family']}" if count == run["candidate_counts"][-1]
                        else None)  # fmt: skip
        ax.axhline(GOAL["recall_at_10"], color="grey", lw=0.8)
        ax.axvline(GOAL["speedup"], color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_ylim(0.8, 1.003)  # the region around the goal; lower recalls fall off the plot
        ax.set_title(f"{run['items']:,} x {run['dim']} ({run['variant']}); C = "
                     + " dashed, ".join(map(str, run["candidate_counts"])) + " solid")  # fmt: skip
        ax.set_xlabel("speed-up over the fastest exact baseline")
        ax.set_ylabel("recall@10 (candidates re-scored)")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower left")
    for ax in list(axes.flat)[len(runs) :]:
        ax.axis("off")
    fig.suptitle("Pruned-then-exact recall@10 vs speed-up (one line per family and setting)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- main --------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
    parser.add_argument("--sizes", type=ints, default=[100_000, 1_000_000, 5_000_000])
    parser.add_argument("--dims", type=ints, default=[64, 384])
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--candidates", type=ints, default=[1024, 4096])
    parser.add_argument(
        "--reference-queries",
        type=int,
        default=256,
        help="queries the exact baselines other than torch are timed on",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--memory-gb",
        type=float,
        default=None,
        help="skip catalogs whose run needs more (default: 80%% of RAM)",
    )
    parser.add_argument(
        "--hnsw-max-cells",
        type=int,
        default=HNSW_MAX_CELLS,
        help="build HNSW only when items x (d + 2) is at most this",
    )
    parser.add_argument("--no-real", action="store_true", help="skip the real demo catalog")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite PREFIX.md and .png from PREFIX.json")  # fmt: skip
    parser.add_argument("--tight", type=sizes_by_dim, default=[(1_000_000, 64)],
                        help="ITEMSxDIM,...: catalogs also run with tight clusters "
                        "(a sensitivity check; '' for none)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS / "retrieval",
                        help="path prefix: writes PREFIX.json, .md and .png")  # fmt: skip
    return parser.parse_args(argv)


def sizes_by_dim(text: str) -> list[tuple[int, int]]:
    """'1000000x64,100000x384' -> [(1000000, 64), (100000, 384)]."""
    pairs = [item.split("x") for item in text.split(",") if item]
    if any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(f"--tight: expected ITEMSxDIM,..., got {text!r}")
    return [(int(items), int(dim)) for items, dim in pairs]


def total_memory_gb() -> float:
    with open("/proc/meminfo") as meminfo:
        return int(meminfo.readline().split()[1]) / 2**20


def plan(args) -> tuple[list[tuple[int, int, bool]], list[dict]]:
    """The (items, dim, tight) catalogs to run: d = 64 first, then larger dims, then larger
    sizes (as the issue orders them), then the tight-cluster variants; and those skipped for
    memory."""
    budget = args.memory_gb or 0.8 * total_memory_gb()
    small = [s for s in args.sizes if s <= 1_000_000]
    large = [s for s in args.sizes if s > 1_000_000]
    order = [(s, d, False) for d in args.dims for s in small]
    order += [(s, d, False) for s in large for d in args.dims]
    order += [(s, d, True) for s, d in args.tight]
    runs, skipped = [], []
    for items, dim, tight in order:
        need = needed_gb(items, dim)
        if need > budget:
            why = f"needs ~{need:.0f} GB (W, item_points' float64 temporaries, points, indexes)"
            skipped.append({"items": items, "dim": dim, "why": f"{why}; budget {budget:.0f} GB"})
        else:
            runs.append((items, dim, tight))
    return runs, skipped


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.report_only:  # rewrite the .md and .png from the .json, measuring nothing
        results = json.loads(args.out.with_suffix(".json").read_text())
        write(results, args.out)
        return results
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    real = None if args.no_real else real_catalog()
    profile = real_profile(*real) if real else dict(FALLBACK_PROFILE)  # from every real query
    combos, skipped = plan(args)
    results = {
        "command": "python benchmarks/retrieval.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine(args),
        "profile": profile,
        "generator_cosines": GENERATOR_COSINES,
        "twin_check": twin_check(real, profile, args.seed) if real else None,
        "goal": [],
        "runs": [],
        "skipped": skipped,
    }
    catalogs = []
    if real:
        weight, bias, users = real
        catalogs.append(
            lambda: Catalog("real demo ML-1M", weight, bias, users[: args.queries], True)
        )
    for items, dim, tight in combos:
        seed = args.seed + items + dim
        catalogs.append(
            lambda i=items, d=dim, s=seed, t=tight: synthetic_catalog(
                i, d, args.queries, profile, s, t
            )
        )
    for make in catalogs:
        catalog = make()
        results["runs"].append(run_catalog(catalog, args))
        del catalog
        gc.collect()
        results["goal"] = goal_verdict(results["runs"])
        results["machine"]["load_after"] = load_average()
        write(results, args.out)  # after every catalog: a stopped run keeps what it measured
    return results


def machine(args) -> dict:
    import os

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "torch_threads": torch.get_num_threads(),
        "load_before": load_average(),
        "load_after": None,
        "batch": BATCH,
        "threads_asked": args.threads,
    }


def load_average() -> list[float]:
    import os

    return [round(v, 2) for v in os.getloadavg()]


def write(results: dict, prefix: Path) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results, prefix.with_suffix(".md"))
    plot(results, prefix.with_suffix(".png"))


if __name__ == "__main__":
    main()

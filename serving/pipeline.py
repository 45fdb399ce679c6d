"""The gateway's pure batch core: pad a batch, pick candidates, rank (requests become Query
records in serving/query.py).

No I/O and no asyncio here: the batch shell (serving/engine.py) calls these around the
encoder, the FAISS search and the scorer, and unit tests call them directly.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from serving.query import Query
from serving.registry import ModelVersion


@dataclass(frozen=True, eq=False)
class Ranked:
    items: np.ndarray  # item indices, best first (Score: request order)
    logits: np.ndarray


def pad_histories(queries: Sequence[Query]) -> np.ndarray:
    """[B, L] left-padded item indices, L the longest history of the batch (at least 1)."""
    width = max(1, *(len(q.items) for q in queries))
    out = np.zeros((len(queries), width), dtype=np.int64)
    for row, query in enumerate(queries):
        if len(query.items):
            out[row, width - len(query.items) :] = query.items
    return out


def context_matrix(queries: Sequence[Query]) -> np.ndarray:
    return np.stack([q.context for q in queries]).astype(np.int64)


def pad_candidates(candidates: Sequence[np.ndarray]) -> np.ndarray:
    """[B, C] item indices, right-padded with 0 (the scorer gives padding -inf)."""
    width = max(1, *(len(c) for c in candidates))
    out = np.zeros((len(candidates), width), dtype=np.int64)
    for row, values in enumerate(candidates):
        out[row, : len(values)] = values
    return out


def exact_candidates(query: Query, num_items: int) -> np.ndarray:
    if query.score_items is not None:
        return query.score_items
    if query.allowed is not None:
        return query.allowed
    everything = np.arange(1, num_items + 1, dtype=np.int64)
    return np.setdiff1d(everything, query.exclude, assume_unique=True)


def pruned_candidates(query: Query, found: np.ndarray, count: int) -> np.ndarray:
    """The index's hits for one query (item indices, best first, 0 = none) minus exclusions."""
    hits = found[found > 0]
    keep = ~np.isin(hits, query.exclude)
    return hits[keep][:count]


def search_width(query: Query, candidate_count: int, num_items: int) -> int:
    """How many hits to ask the index for, so `candidate_count` survive the exclusions."""
    return min(num_items, candidate_count + len(query.exclude))


def top_k(candidates: np.ndarray, logits: np.ndarray, k: int) -> Ranked:
    """The k best (candidate, logit) pairs of one row, best first; padding (-inf) never wins."""
    real = candidates > 0
    candidates, logits = candidates[real], logits[real]
    k = min(k, len(candidates))
    if k < len(candidates):
        part = np.argpartition(-logits, k - 1)[:k]
    else:
        part = np.arange(len(candidates))
    order = part[np.argsort(-logits[part], kind="stable")]
    return Ranked(items=candidates[order], logits=logits[order])


# Items scored per GEMM block in the exact path: memory stays at batch x block floats.
EXACT_BLOCK = 65_536


def exact_rankings(
    vectors: np.ndarray, head: np.ndarray, queries: Sequence[Query], block: int = EXACT_BLOCK
) -> list[Ranked]:
    """Each query's top-k over the whole catalog minus its exclusions: logits [h, 1] . [W_i, b_i]
    as one GEMM per block of items, excluded items masked to -inf, the block's best k kept,
    the survivors ranked. No [batch, catalog] id matrix is ever built."""
    augmented = np.concatenate([vectors, np.ones((len(vectors), 1), vectors.dtype)], axis=1)
    augmented = augmented.astype(head.dtype, copy=False)
    num_items = len(head) - 1
    keep = max(q.k for q in queries)
    kept_items = [[] for _ in queries]
    kept_logits = [[] for _ in queries]
    for start in range(0, num_items, block):
        rows = head[1 + start : 1 + start + block]  # items start + 1 .. start + len(rows)
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
        allowed = np.isfinite(values)  # an excluded item never fills a short list
        rankings.append(top_k(items[allowed], values[allowed], query.k))
    return rankings


def in_request_order(candidates: np.ndarray, logits: np.ndarray) -> Ranked:
    real = candidates > 0
    return Ranked(items=candidates[real], logits=logits[real])


def popularity_ranking(model: ModelVersion, query: Query) -> Ranked:
    """Most popular first, honouring exclusions and the allowed list; the 'logit' reported is
    the log of the item's share of training interactions."""
    candidates = exact_candidates(query, model.num_items)
    counts = model.popularity[candidates - 1] + 1.0  # add-one: unseen items stay rankable
    logits = np.log(counts / counts.sum())
    return top_k(candidates, logits.astype(np.float32), query.k)

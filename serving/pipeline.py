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
    """How many hits to ask the index for, so `candidate_count` survive the exclusions (the
    filters' are not counted: they can rule out most of the catalog; a filtered query left
    with too few candidates is widened to the whole catalog instead)."""
    return min(num_items, candidate_count + len(query.exclude) - query.filter_exclusions)


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
FIRST_BLOCK = 4_096


def exact_rankings(
    vectors: np.ndarray,
    head: np.ndarray,
    queries: Sequence[Query],
    block: int = EXACT_BLOCK,
    first_block: int = FIRST_BLOCK,
) -> list[Ranked]:
    """Each query's top-k over the whole catalog minus its exclusions: logits [h, 1] . [W_i, b_i]
    as one GEMM per block of items, excluded items masked to -inf, the survivors ranked. No
    [batch, catalog] id matrix is ever built.

    Selecting the best k of every block (a partial sort of batch x block logits) cost several
    times the GEMM itself; so only a small first block is partially sorted, and each later
    block passes just the items at or above the row's k-th best logit so far (one comparison
    per logit): after the first block, a handful per row."""
    augmented = np.concatenate([vectors, np.ones((len(vectors), 1), vectors.dtype)], axis=1)
    augmented = augmented.astype(head.dtype, copy=False)
    num_items = len(head) - 1
    best = [_RunningBest(query.depth) for query in queries]
    # A small first block sets each row's threshold cheaply; the later, full blocks then pass
    # only the few items that beat it.
    first = min(block, first_block)
    for start, stop in _blocks(num_items, first, block):
        rows = head[1 + start : 1 + stop]  # items start + 1 .. stop
        logits = augmented @ rows.T
        for row, query in enumerate(queries):
            low, high = np.searchsorted(query.exclude, (start + 1, stop + 1))
            logits[row, query.exclude[low:high] - start - 1] = -np.inf
        thresholds = np.array([b.threshold for b in best], dtype=logits.dtype)
        hit_rows, hit_columns = np.nonzero(logits >= thresholds[:, None])
        hit_logits = logits[hit_rows, hit_columns]
        bounds = np.searchsorted(hit_rows, np.arange(len(queries) + 1))
        for row, running in enumerate(best):
            span = slice(bounds[row], bounds[row + 1])
            running.add(hit_columns[span] + start + 1, hit_logits[span])
    return [running.ranked() for running in best]


def _blocks(total: int, first: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) item offsets: one block of `first`, then blocks of `size`."""
    starts = [0, *range(first, total, size)] if total > first else [0]
    return [(start, min(total, start + (first if start == 0 else size))) for start in starts]


class _RunningBest:
    """One row's best k (item, logit) pairs so far, and the logit a newcomer must reach."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.items = np.zeros(0, np.int64)
        self.logits = np.zeros(0, np.float32)
        self.threshold = -np.inf  # -inf passes every finite logit until k are held

    def add(self, items: np.ndarray, logits: np.ndarray) -> None:
        finite = np.isfinite(logits)  # an excluded item never fills a short list
        if not finite.any():
            return
        self.items = np.concatenate([self.items, items[finite]])
        self.logits = np.concatenate([self.logits, logits[finite]])
        if len(self.items) > self.k:
            keep = np.argpartition(-self.logits, self.k - 1)[: self.k]
            self.items, self.logits = self.items[keep], self.logits[keep]
        if len(self.items) == self.k:
            self.threshold = float(self.logits.min())

    def ranked(self) -> Ranked:
        return top_k(self.items, self.logits, self.k)


def in_request_order(candidates: np.ndarray, logits: np.ndarray) -> Ranked:
    real = candidates > 0
    return Ranked(items=candidates[real], logits=logits[real])


def popularity_ranking(model: ModelVersion, query: Query) -> Ranked:
    """Most popular first, honouring exclusions and the allowed list; the 'logit' reported is
    the log of the item's share of training interactions."""
    candidates = exact_candidates(query, model.num_items)
    counts = model.popularity[candidates - 1] + 1.0  # add-one: unseen items stay rankable
    logits = np.log(counts / counts.sum())
    return top_k(candidates, logits.astype(np.float32), query.depth)

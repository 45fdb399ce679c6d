"""Choose the candidate index's search breadth for a recall target, by measuring it.

The gateway asks the index for `candidate_count` items and re-scores them exactly, so what a
user sees is the exact top-10 among the candidates: its recall@10 is the share of the true
top-10 (over the whole catalog, bias included) that the candidates contain. Export measures
that on real held-out histories (the checkpoint's sample, plus each history with its newest
items dropped: earlier states of the same users) for increasing breadths (IVF `nprobe`, HNSW
`efSearch`) and keeps the smallest that reaches the target while returning the full candidate
count; the manifest records it and the gateway searches with it.
"""

from dataclasses import dataclass

import numpy as np

from logitrec.mips import search, search_parameter, set_search_parameter

RECALL_AT = 10
MAX_QUERIES = 1024
QUERY_CHUNK = 64  # exact logits are computed for this many queries at a time: chunk x catalog
FULL = 0.999  # the share of the candidate count the index must return


@dataclass(frozen=True)
class Calibration:
    parameter: str | None  # "nprobe", "efSearch", or None for an exact (flat) index
    value: int | None
    recall_at_10: float
    filled: float  # mean share of candidate_count the index returned
    candidate_count: int
    recall_target: float
    queries: int
    met: bool
    tried: tuple[tuple[int, float, float], ...]  # (value, recall@10, filled) per breadth tried

    def as_dict(self) -> dict:
        return {
            "parameter": self.parameter,
            "value": self.value,
            "recall_at_10": round(self.recall_at_10, 4),
            "filled": round(self.filled, 4),
            "candidate_count": self.candidate_count,
            "recall_target": self.recall_target,
            "queries": self.queries,
            "met": self.met,
            "tried": [list(t) for t in self.tried],
        }


def history_prefixes(histories: np.ndarray, max_rows: int = MAX_QUERIES):
    """(rows, source): the left-padded histories, then each with its newest 1, 2, ... items
    dropped (keeping at least one), up to `max_rows` rows: more query states of the same real
    users. `source[i]` is the history row i came from (for its context)."""
    width = histories.shape[1]
    lengths = (histories != 0).sum(axis=1)
    out, source = [histories], [np.arange(len(histories))]
    for dropped in range(1, width):
        keep = np.flatnonzero(lengths - dropped >= 1)
        if not len(keep) or sum(len(o) for o in out) >= max_rows:
            break
        shifted = np.zeros((len(keep), width), dtype=histories.dtype)
        shifted[:, dropped:] = histories[keep, :-dropped]
        out.append(shifted)
        source.append(keep)
    return np.concatenate(out)[:max_rows], np.concatenate(source)[:max_rows]


def exact_top(vectors: np.ndarray, weight: np.ndarray, bias: np.ndarray, k: int) -> np.ndarray:
    """Item indices (from 1) of the k highest logits per row, computed in query chunks."""
    tops = []
    for start in range(0, len(vectors), QUERY_CHUNK):
        logits = vectors[start : start + QUERY_CHUNK] @ weight.T + bias
        tops.append(np.argpartition(-logits, k - 1, axis=1)[:, :k] + 1)
    return np.concatenate(tops)


def measure(index, vectors: np.ndarray, truth: np.ndarray, candidate_count: int):
    """(recall@10 of the pruned-then-exact top-10, share of candidate_count returned)."""
    found = search(index, vectors, candidate_count)
    hits = [np.isin(true, hits).sum() for true, hits in zip(truth, found, strict=True)]
    recall = float(np.mean(hits) / truth.shape[1])
    filled = float((found > 0).sum(axis=1).mean() / candidate_count)
    return recall, filled


def _ladder(parameter: str, index, candidate_count: int) -> list[int]:
    """Breadths to try, about x1.5 apart, from the cheapest to the exhaustive."""
    if parameter == "nprobe":
        import faiss

        low, high = 1, faiss.extract_index_ivf(index).nlist
    else:  # efSearch: below the number of results asked for, HNSW cannot return them all
        low, high = candidate_count, 16 * candidate_count
    values, value = [], low
    while value < high:
        values.append(value)
        value = max(value + 1, int(value * 1.5))
    return [*values, high]


def calibrate(
    index,
    vectors: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    candidate_count: int,
    recall_target: float,
) -> Calibration:
    """Set `index` to the smallest breadth meeting the target (else the widest tried) and
    say what was measured. `weight` [N, d] and `bias` [N] are the real items' head rows."""
    candidate_count = min(candidate_count, len(weight))
    truth = exact_top(vectors, weight, bias, min(RECALL_AT, len(weight)))
    parameter = search_parameter(index)
    tried = []
    values = _ladder(parameter, index, candidate_count) if parameter else [None]
    for value in values:
        if parameter:
            set_search_parameter(index, parameter, value)
        recall, filled = measure(index, vectors, truth, candidate_count)
        tried.append((value, round(recall, 4), round(filled, 4)))
        if recall >= recall_target and filled >= FULL:
            break
    met = recall >= recall_target and filled >= FULL
    return Calibration(
        parameter, value, recall, filled, candidate_count, recall_target, len(vectors), met,
        tuple(t for t in tried if t[0] is not None),
    )  # fmt: skip

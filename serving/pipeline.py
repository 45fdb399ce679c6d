"""The gateway's pure core: validate and map a request, pad a batch, pick candidates, rank.

No I/O and no asyncio here: the batch shell (serving/engine.py) calls these around the
encoder, the FAISS search and the scorer, and unit tests call them directly.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from serving.errors import InvalidRequest
from serving.registry import ModelVersion


@dataclass
class Query:
    """One validated request with ids mapped to item indices (1..N), ready to batch."""

    items: np.ndarray  # known history, oldest first, at most the model's window
    context: np.ndarray  # [F] context indices (0 = unknown)
    k: int
    exclude: np.ndarray  # item indices never to return (seen + excluded)
    allowed: np.ndarray | None = None  # rank only these (Recommend with allowed_item_ids)
    score_items: np.ndarray | None = None  # Score: exactly these, in this order
    unknown_item_ids: list[str] = field(default_factory=list)
    truncated_to: int = 0  # > 0: the history was cut to its newest this many items
    deadline: float | None = None  # time.monotonic() after which nobody waits for the answer

    @property
    def fallback(self) -> bool:
        """No known history: answered by popularity instead of the model."""
        return len(self.items) == 0 and self.score_items is None


@dataclass
class Ranked:
    items: np.ndarray  # item indices, best first (Score: request order)
    logits: np.ndarray


def _map_ids(model: ModelVersion, ids: Sequence[str], name: str, *, unique: bool) -> np.ndarray:
    """Known ids -> indices; duplicates are an error where order or counts would be ambiguous."""
    if unique and len(set(ids)) != len(ids):
        seen, duplicate = set(), None
        for item_id in ids:
            if item_id in seen:
                duplicate = item_id
                break
            seen.add(item_id)
        raise InvalidRequest(name, f"duplicate id {duplicate!r}")
    found = [model.index_of.get(item_id, 0) for item_id in ids]
    return np.asarray([i for i in found if i], dtype=np.int64)


def prepare_query(
    model: ModelVersion,
    history: Sequence[str],
    *,
    context: Mapping[str, str] | None = None,
    k: int = 10,
    exclude_seen: bool = True,
    exclude_ids: Sequence[str] = (),
    allowed_ids: Sequence[str] = (),
    score_ids: Sequence[str] | None = None,
    max_history: int = 10_000,
) -> Query:
    """Validate one request against `model` (errors name the field) and map its ids."""
    if len(history) > max_history:
        raise InvalidRequest("history", f"{len(history)} events exceed the limit of {max_history}")
    if any(not item_id for item_id in history):
        raise InvalidRequest("history", "an event has an empty item_id")
    if score_ids is None:
        if k <= 0:
            raise InvalidRequest("k", f"must be at least 1, got {k}")
        if k > model.num_items:
            raise InvalidRequest("k", f"{k} exceeds the catalog's {model.num_items} items")
    elif not score_ids:
        raise InvalidRequest("item_ids", "no items to score")
    unknown_context = sorted(set(context or {}) - set(model.context_lookup))
    if unknown_context:
        expected = ", ".join(model.context_lookup) or "none"
        raise InvalidRequest(
            "context", f"unknown feature(s) {', '.join(unknown_context)} (expected: {expected})"
        )
    known = [model.index_of.get(item_id, 0) for item_id in history]
    unknown = list(dict.fromkeys(i for i, index in zip(history, known, strict=True) if not index))
    known_items = np.asarray([i for i in known if i], dtype=np.int64)  # oldest first
    items = known_items
    truncated_to = 0
    if len(items) > model.max_length:
        items, truncated_to = items[-model.max_length :], model.max_length
    features = model.context_lookup
    context_row = np.asarray(
        [features[f].get((context or {}).get(f, ""), 0) for f in features], dtype=np.int64
    )
    exclude = _map_ids(model, exclude_ids, "exclude_item_ids", unique=True)
    if exclude_seen:
        exclude = np.union1d(exclude, known_items)
    query = Query(
        items=items,
        context=context_row,
        k=k,
        exclude=exclude.astype(np.int64),
        unknown_item_ids=unknown,
        truncated_to=truncated_to,
    )
    if allowed_ids:
        allowed = _map_ids(model, allowed_ids, "allowed_item_ids", unique=True)
        query.allowed = np.setdiff1d(allowed, query.exclude)
        if len(query.allowed) == 0:
            raise InvalidRequest("allowed_item_ids", "no known, non-excluded item is allowed")
        query.k = min(k, len(query.allowed))
    if score_ids is not None:
        if len(items) == 0:
            raise InvalidRequest("history", "no item the model knows: nothing to score against")
        query.score_items = _map_ids(model, score_ids, "item_ids", unique=True)
        if len(query.score_items) == 0:
            raise InvalidRequest("item_ids", "none of the items is in the catalog")
    return query


def unknown_scored_ids(model: ModelVersion, score_ids: Sequence[str]) -> list[str]:
    return [item_id for item_id in score_ids if item_id not in model.index_of]


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


def softmax(logits: np.ndarray) -> np.ndarray:
    if len(logits) == 0:
        return logits
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()

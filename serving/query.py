"""A request in the model's terms and back: validate it and map external ids to item indices
(a frozen Query, built once), and map ranked item indices back to ids, titles and probabilities.

Pure: no I/O and no asyncio; errors name the request field.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np

from serving.errors import InvalidRequest, quote
from serving.registry import ModelVersion
from serving.rerank import MetadataFilter, RerankSettings, candidate_pool


@dataclass(frozen=True, eq=False)
class Query:
    """One validated request with ids mapped to item indices (1..N), ready to batch."""

    items: np.ndarray  # known history, oldest first, at most the model's window
    context: np.ndarray  # [F] context indices (0 = unknown)
    k: int
    exclude: np.ndarray  # item indices never to return (seen + excluded), sorted
    allowed: np.ndarray | None = None  # rank only these (Recommend with allowed_item_ids)
    score_items: np.ndarray | None = None  # Score: exactly these, in this order
    unknown_item_ids: tuple[str, ...] = ()
    truncated_to: int = 0  # > 0: the history was cut to its newest this many items
    deadline: float | None = None  # time.monotonic() after which nobody waits for the answer
    # Re-ranking of the exactly scored candidates (None: the model's order): the ranking stage
    # then keeps `depth` items by logit for the re-ranker to choose k from.
    rerank: RerankSettings | None = None
    depth_by_logit: int = 0  # 0: k
    # Metadata filters, folded into `exclude` (so every path honours them); `filter_exclusions`
    # is how many of those exclusions only the filters made, which the index search does not
    # count when sizing itself.
    eligible_items: int = 0  # items the filters left (0 without filters)
    filter_exclusions: int = 0
    explain: int = 0  # contributors per returned item (0: no explanation)

    @property
    def filtered(self) -> bool:
        return self.eligible_items > 0  # filters that leave nothing are refused

    @property
    def depth(self) -> int:
        """How many items the ranking stage keeps by logit."""
        return self.depth_by_logit or self.k

    @property
    def fallback(self) -> bool:
        """No known history: answered by popularity instead of the model."""
        return len(self.items) == 0 and self.score_items is None


@dataclass(frozen=True)
class RankedItem:
    """One returned item in the caller's terms."""

    item_id: str
    title: str
    logit: float
    probability: float  # softmax over the returned items
    rank: int  # from 1


def _map_ids(model: ModelVersion, ids: Sequence[str], name: str, *, unique: bool) -> np.ndarray:
    """Known ids -> indices; duplicates are an error where order or counts would be ambiguous."""
    if unique and len(set(ids)) != len(ids):
        seen, duplicate = set(), None
        for item_id in ids:
            if item_id in seen:
                duplicate = item_id
                break
            seen.add(item_id)
        raise InvalidRequest(name, f"duplicate id {quote(duplicate)}")
    found = [model.index_of.get(item_id, 0) for item_id in ids]
    return np.asarray([i for i in found if i], dtype=np.int64)


def check_count(name: str, values: Sequence, limit: int, what: str = "ids") -> None:
    """The edge's first check: how many values a field holds, before any is looked at."""
    if len(values) > limit:
        raise InvalidRequest(name, f"{len(values)} {what} exceed the limit of {limit}")


def _check_counts(history, k, exclude_ids, allowed_ids, score_ids, limits) -> None:
    max_history, max_ids, max_k = limits
    check_count("history", history, max_history, "events")
    check_count("exclude_item_ids", exclude_ids, max_ids)
    check_count("allowed_item_ids", allowed_ids, max_ids)
    if score_ids is not None:
        check_count("item_ids", score_ids, max_ids)
    elif k > max_k:
        raise InvalidRequest("k", f"{k} exceeds the limit of {max_k}")


def _check_shape(model, history, context, k, score_ids) -> None:
    if any(not item_id for item_id in history):
        raise InvalidRequest("history", "an event has an empty item_id")
    if score_ids is None:
        if k <= 0:
            raise InvalidRequest("k", f"must be at least 1, got {k}")
        if k > model.num_items:
            raise InvalidRequest("k", f"{k} exceeds the catalog's {model.num_items} items")
    elif not score_ids:
        raise InvalidRequest("item_ids", "no items to score")
    _check_context(model, context)


def _check_context(model: ModelVersion, context: Mapping[str, str]) -> None:
    """Unknown feature names are an error; the message names a few, each cut short."""
    known = model.context_lookup
    unknown_count = len(context) - sum(1 for name in known if name in context)
    if unknown_count:
        first = islice((name for name in context if name not in known), 3)
        named = ", ".join(quote(name) for name in first)
        more = f" and {unknown_count - 3} more" if unknown_count > 3 else ""
        expected = ", ".join(known) or "none"
        raise InvalidRequest("context", f"unknown feature(s) {named}{more} (expected: {expected})")


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
    max_ids: int = 10_000,
    max_k: int = 1_000,
    deadline: float | None = None,
    rerank: RerankSettings | None = None,
    filters: Sequence[MetadataFilter] = (),
    explain: int = 0,
) -> Query:
    """Validate one request against `model` (errors name the field) and map its ids.

    Counts are checked first, against the limits, so an oversized request costs nothing more.
    """
    _check_counts(history, k, exclude_ids, allowed_ids, score_ids, (max_history, max_ids, max_k))
    _check_shape(model, history, context or {}, k, score_ids)
    # Then a plain dict (only known features are left): a protobuf map is slow to look up in.
    context = dict(context) if context else {}
    known = [model.index_of.get(item_id, 0) for item_id in history]
    unknown = tuple(dict.fromkeys(i for i, index in zip(history, known, strict=True) if not index))
    known_items = np.asarray([i for i in known if i], dtype=np.int64)  # oldest first
    items, truncated_to = known_items, 0
    if len(items) > model.max_length:
        items, truncated_to = items[-model.max_length :], model.max_length
    features = model.context_lookup
    context_row = np.asarray([features[f].get(context.get(f, ""), 0) for f in features], np.int64)
    exclude = _map_ids(model, exclude_ids, "exclude_item_ids", unique=True)
    if exclude_seen:
        exclude = np.union1d(exclude, known_items)
    exclude = np.sort(exclude).astype(np.int64)  # sorted: the exact path masks it by ranges
    eligible_items, filter_exclusions = 0, 0
    if filters:
        ineligible = _filtered_out(model, filters)
        eligible_items = model.num_items - len(ineligible)
        if eligible_items == 0:
            raise InvalidRequest("filters", "no item of the catalog matches every filter")
        requested = len(exclude)
        exclude = np.union1d(exclude, ineligible).astype(np.int64)
        filter_exclusions = len(exclude) - requested
    allowed = score_items = None
    if allowed_ids:
        allowed = _map_ids(model, allowed_ids, "allowed_item_ids", unique=True)
        allowed = np.setdiff1d(allowed, exclude)
        if len(allowed) == 0:
            raise InvalidRequest("allowed_item_ids", "no known, non-excluded item is allowed")
        k = min(k, len(allowed))
    if score_ids is not None:
        if len(items) == 0:
            raise InvalidRequest("history", "no item the model knows: nothing to score against")
        score_items = _map_ids(model, score_ids, "item_ids", unique=True)
        if len(score_items) == 0:
            raise InvalidRequest("item_ids", "none of the items is in the catalog")
    rerank = None if rerank is None or rerank.is_identity() else rerank
    if rerank is not None:
        _check_rerank_metadata(model, rerank)
    depth = min(candidate_pool(k, rerank), model.num_items) if rerank is not None else 0
    if allowed is not None and depth:
        depth = min(depth, len(allowed))
    return Query(
        items=items,
        context=context_row,
        k=k,
        exclude=exclude,
        allowed=allowed,
        score_items=score_items,
        unknown_item_ids=unknown,
        truncated_to=truncated_to,
        deadline=deadline,
        rerank=rerank,
        depth_by_logit=depth,
        eligible_items=eligible_items,
        filter_exclusions=filter_exclusions,
        explain=explain,
    )


def _filtered_out(model: ModelVersion, filters: Sequence[MetadataFilter]) -> np.ndarray:
    """Item indices (sorted) that fail a filter; errors name the filter and the field."""
    if model.metadata is None:
        raise InvalidRequest(
            "filters",
            f"{model.name} version {model.version} was exported without item metadata: "
            "re-export it from a dataset whose items table has metadata columns",
        )
    eligible = np.ones(model.num_items + 1, dtype=bool)
    for position, condition in enumerate(filters):
        try:
            eligible &= model.metadata.eligible([condition], model.num_items)
        except ValueError as error:  # one filter at a time, so the message can say which
            raise InvalidRequest(f"filters[{position}]", str(error)) from None
    return np.flatnonzero(~eligible[1:]).astype(np.int64) + 1


def _check_rerank_metadata(model: ModelVersion, settings: RerankSettings) -> None:
    """A category cap or calibration needs the categorical field it counts."""
    try:
        settings.check_against(model.metadata)
    except ValueError as error:
        raise InvalidRequest("rerank", str(error)) from None


def unknown_scored_ids(model: ModelVersion, score_ids: Sequence[str]) -> list[str]:
    return [item_id for item_id in score_ids if item_id not in model.index_of]


def softmax(logits: np.ndarray) -> np.ndarray:
    if len(logits) == 0:
        return logits
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def ranked_items(model: ModelVersion, items: np.ndarray, logits: np.ndarray) -> list[RankedItem]:
    """Item indices (best first) and their logits -> ids, titles, probabilities and ranks."""
    probabilities = softmax(logits.astype(float))
    return [
        RankedItem(
            item_id=str(model.item_ids[index - 1]),
            title=model.titles[index - 1] or "",
            logit=float(logit),
            probability=float(p),
            rank=rank,
        )
        for rank, (index, logit, p) in enumerate(
            zip(items, logits, probabilities, strict=True), start=1
        )
    ]


def item_ids_of(model: ModelVersion, items: np.ndarray) -> list[str]:
    return [str(model.item_ids[index - 1]) for index in items]

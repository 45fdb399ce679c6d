"""What the gateway answers: frozen dataclasses that iterate over their items and print tables."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from logitrec_client._table import format_table


@dataclass(frozen=True)
class Timings:
    """Where the gateway's time went, in seconds (all zero when the server sent none).

    Batched stages report the whole batch's time, shared by the requests in it.
    """

    queue_seconds: float = 0.0
    encode_seconds: float = 0.0
    retrieve_seconds: float = 0.0
    score_seconds: float = 0.0
    total_seconds: float = 0.0
    rerank_seconds: float = 0.0  # this request's own
    explain_seconds: float = 0.0  # this request's own


@dataclass(frozen=True)
class Contribution:
    """Why an item was recommended: how much its logit drops when one history item (or one
    context feature) is left out; positive means it pushed the item up."""

    logit_delta: float
    item_id: str = ""  # the history item ("" for a context feature)
    title: str = ""
    context_feature: str = ""  # the context feature ("" for a history item)
    context_value: str = ""
    history_position: int = -1  # 0 = oldest item the model read; -1 for a context feature

    def __str__(self) -> str:
        if self.context_feature:
            because = f"your {self.context_feature} is {self.context_value or 'unknown'}"
        else:
            because = f"you watched {self.title or self.item_id}"
        return f"because {because} ({self.logit_delta:+.1f})"


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: its logit, its softmax probability over the returned items, its rank
    (1 is best) and its catalog title ("" when unknown)."""

    item_id: str
    logit: float
    probability: float
    rank: int
    title: str = ""
    contributions: tuple[Contribution, ...] = ()  # with explain: largest first


@dataclass(frozen=True)
class Recommendations:
    """The answer to one recommend query: ranked items plus what the gateway did to get them.

    Iterate over it (or index it) for the Recommendation items, best first; print it for a table.
    `unknown_item_ids` are history items the model's catalog does not know (skipped);
    `popularity_fallback` is true when no history item was known and the items are the most
    popular ones; `history_truncated_to` > 0 says only the newest that many items were read.
    With filters, `eligible_items` is how many catalog items matched them and `filters_widened`
    says the pruned candidates held too few matches, so the whole catalog was ranked.
    """

    items: tuple[Recommendation, ...]
    model: str
    model_version: int
    unknown_item_ids: tuple[str, ...] = ()
    popularity_fallback: bool = False
    history_truncated_to: int = 0
    timings: Timings = Timings()
    request_id: str = ""
    filters_widened: bool = False
    eligible_items: int = 0

    def __iter__(self) -> Iterator[Recommendation]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Recommendation:
        return self.items[index]

    @property
    def item_ids(self) -> list[str]:
        """The recommended item ids, best first."""
        return [item.item_id for item in self.items]

    def __str__(self) -> str:
        rows = [(i.rank, i.item_id, i.title, i.logit, i.probability) for i in self.items]
        table = format_table(("rank", "item_id", "title", "logit", "probability"), rows)
        notes = [f"model {self.model} v{self.model_version}", f"request {self.request_id}"]
        notes.append(f"{self.timings.total_seconds * 1000:.1f} ms")
        if self.popularity_fallback:
            notes.append("popularity fallback (no known history item)")
        if self.history_truncated_to:
            notes.append(f"history truncated to the newest {self.history_truncated_to}")
        if self.unknown_item_ids:
            notes.append("unknown history items: " + ", ".join(self.unknown_item_ids))
        if self.eligible_items:
            notes.append(f"{self.eligible_items} items match the filters")
        if self.filters_widened:
            notes.append("filters widened the search to the whole catalog")
        # "Because" reads only for what pushed an item up; the rest stay in `contributions`.
        supporting = [[c for c in item.contributions if c.logit_delta > 0] for item in self.items]
        explained = [
            f"{item.rank}. {item.title or item.item_id}: " + "; ".join(map(str, reasons))
            for item, reasons in zip(self.items, supporting, strict=True)
            if reasons
        ]
        lines = [table, *explained, f"({'; '.join(notes)})"]
        return "\n".join(lines)


@dataclass(frozen=True)
class ScoredItem:
    """One requested item and the model's logit for it given the history."""

    item_id: str
    logit: float


@dataclass(frozen=True)
class Scores:
    """The answer to a score call: logits of the known requested items, in request order.

    Iterate over it for ScoredItems; `as_dict()` maps item id to logit. Requested items the
    catalog does not know are in `unknown_scored_item_ids`, unknown history items in
    `unknown_item_ids`.
    """

    items: tuple[ScoredItem, ...]
    model: str
    model_version: int
    unknown_item_ids: tuple[str, ...] = ()
    unknown_scored_item_ids: tuple[str, ...] = ()
    timings: Timings = Timings()
    request_id: str = ""

    def __iter__(self) -> Iterator[ScoredItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> ScoredItem:
        return self.items[index]

    def as_dict(self) -> dict[str, float]:
        """Item id -> logit."""
        return {item.item_id: item.logit for item in self.items}

    def __str__(self) -> str:
        table = format_table(("item_id", "logit"), [(i.item_id, i.logit) for i in self.items])
        notes = [f"model {self.model} v{self.model_version}", f"request {self.request_id}"]
        if self.unknown_scored_item_ids:
            notes.append("not in the catalog: " + ", ".join(self.unknown_scored_item_ids))
        if self.unknown_item_ids:
            notes.append("unknown history items: " + ", ".join(self.unknown_item_ids))
        return f"{table}\n({'; '.join(notes)})"


@dataclass(frozen=True)
class ModelInfo:
    """What a served model is: catalog size, dimensions, loaded versions, index and backend.

    `candidate_count` is how many candidates the index hands to exact scoring (0: every item is
    scored exactly).
    """

    model: str
    model_version: int
    loaded_versions: tuple[int, ...]
    num_items: int
    hidden_size: int
    max_length: int
    context_features: tuple[str, ...]
    index_type: str
    backend: str
    candidate_count: int
    metadata_fields: tuple[str, ...] = ()  # usable in filters and category caps

    def __str__(self) -> str:
        rows = [
            ("model", self.model),
            ("model_version", self.model_version),
            ("loaded_versions", ", ".join(map(str, self.loaded_versions))),
            ("num_items", self.num_items),
            ("hidden_size", self.hidden_size),
            ("max_length", self.max_length),
            ("context_features", ", ".join(self.context_features) or "-"),
            ("index_type", self.index_type),
            ("backend", self.backend),
            ("candidate_count", self.candidate_count),
            ("metadata_fields", ", ".join(self.metadata_fields) or "-"),
        ]
        return format_table(("field", "value"), [(name, str(value)) for name, value in rows])


class HealthStatus(Enum):
    """The standard gRPC health answer for one service name."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2
    # The server does not know the service name asked about.
    SERVICE_UNKNOWN = 3

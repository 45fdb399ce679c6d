"""What a caller asks for: history events and per-user recommendation queries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_K = 10


@dataclass(frozen=True)
class Event:
    """One interaction of a user's history: an item id, optionally its type and Unix time."""

    item_id: str
    event_type: str = ""
    timestamp: int = 0


HistoryLike = Sequence[str | Event]


def item_ids(values: Iterable[str] | None, name: str) -> tuple[str, ...]:
    """`values` as a tuple of item ids; a bare string is refused (it would split into letters)."""
    if values is None:
        return ()
    if isinstance(values, str):
        raise TypeError(f"{name} must be a list of item ids, not one string: {values!r}")
    return tuple(str(value) for value in values)


def history_events(history: HistoryLike) -> tuple[Event, ...]:
    """A history (item-id strings or Events, oldest first) as a tuple of Events."""
    if isinstance(history, str):
        raise TypeError(f"history must be a list of item ids or Events, not a string: {history!r}")
    return tuple(event if isinstance(event, Event) else Event(str(event)) for event in history)


def context_strings(context: Mapping[str, object] | None) -> dict[str, str]:
    """User context features as the string map the proto carries."""
    return {str(key): str(value) for key, value in (context or {}).items()}


@dataclass(frozen=True, kw_only=True)
class Rerank:
    """Re-ranking of the exactly scored candidates; None fields take the model's defaults.

    popularity_beta: score = logit - beta * log p(item); > 0 favours less popular items, < 0
        popular ones (range -5..5). mmr_lambda: maximal marginal relevance, 1 = the model's
        order, lower = more diverse (0..1). category_cap: at most this many items per category
        of cap_field (e.g. 3 per genre; 0 = no cap). calibration: weight toward the genre mix of
        the history (0..1). The returned logits stay the model's.
    """

    popularity_beta: float | None = None
    mmr_lambda: float | None = None
    category_cap: int | None = None
    cap_field: str = ""
    calibration: float | None = None


@dataclass(frozen=True)
class Filter:
    """Return only items whose metadata `field` has any of `any_of` (a category, e.g. genres),
    or lies within [at_least, at_most] (a number, e.g. year)."""

    field: str
    any_of: Sequence[str] = ()
    at_least: float | None = None
    at_most: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "any_of", item_ids(self.any_of, "any_of"))

    @classmethod
    def parse(cls, text: str) -> Filter:
        """`genres=Comedy,Drama`, `year>=1990` or `year<=1999` (the CLI's --filter)."""
        for operator in (">=", "<="):
            name, found, bound = text.partition(operator)
            if found:
                try:
                    value = float(bound)
                except ValueError:
                    raise ValueError(f"{text!r}: expected a number after {operator}") from None
                if operator == ">=":
                    return cls(name.strip(), at_least=value)
                return cls(name.strip(), at_most=value)
        name, found, values = text.partition("=")
        if not found or not name.strip():
            raise ValueError(f"{text!r}: expected FIELD=A,B or FIELD>=N or FIELD<=N")
        return cls(name.strip(), any_of=[v.strip() for v in values.split(",") if v.strip()])


@dataclass(frozen=True, kw_only=True)
class RecommendQuery:
    """One user's request inside `recommend_batch`; the fields mean what `recommend`'s arguments do.

    `history` may be given as item-id strings or Events; it is stored as a tuple of Events.
    `exclude` and `allowed` become tuples, `context` a dict of strings.
    """

    history: HistoryLike
    k: int = DEFAULT_K
    user_id: str | None = None
    context: Mapping[str, str] | None = field(default=None, hash=False)
    exclude_seen: bool = True
    exclude: Sequence[str] | None = None
    allowed: Sequence[str] | None = None
    explain: bool = False
    explain_contributors: int | None = None
    rerank: Rerank | None = None
    filters: Sequence[Filter] = ()
    model: str | None = None
    model_version: int | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        # Normalised once here, so that a wrong type fails where the query is written.
        object.__setattr__(self, "history", history_events(self.history))
        object.__setattr__(self, "exclude", item_ids(self.exclude, "exclude"))
        object.__setattr__(self, "allowed", item_ids(self.allowed, "allowed"))
        object.__setattr__(self, "context", context_strings(self.context))
        object.__setattr__(self, "filters", tuple(self.filters))
        if isinstance(self.k, bool) or not isinstance(self.k, int):
            raise TypeError(f"k must be an int, not {self.k!r}")

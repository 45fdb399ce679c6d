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
    model: str | None = None
    model_version: int | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        # Normalised once here, so that a wrong type fails where the query is written.
        object.__setattr__(self, "history", history_events(self.history))
        object.__setattr__(self, "exclude", item_ids(self.exclude, "exclude"))
        object.__setattr__(self, "allowed", item_ids(self.allowed, "allowed"))
        object.__setattr__(self, "context", context_strings(self.context))
        if isinstance(self.k, bool) or not isinstance(self.k, int):
            raise TypeError(f"k must be an int, not {self.k!r}")

"""Re-ranking after exact scoring: popularity debiasing, diversity (maximal marginal relevance
and per-category caps), calibration to the genre mix of the user's history, and filters on
item metadata.

Pure numpy: no I/O and no torch. The gateway builds an ItemMetadata once per model version
from its catalog.parquet, asks `candidate_pool` how many of the best items by logit to score,
and passes them to `rerank`; the benchmark (benchmarks/rerank.py) calls the same functions, so
what is measured is what is served.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from serving.pipeline import Ranked

# catalog.parquet columns that are not item metadata.
CATALOG_COLUMNS = ("index", "item_id", "title", "popularity")
# Multi-valued text fields (MovieLens genres) hold their values joined by this.
VALUE_SEPARATOR = "|"
# Known values listed in an error message, at most.
LISTED_VALUES = 20

BETA_RANGE = (-5.0, 5.0)
# Calibration's smoothing of the list's distribution toward the history's (Steck 2018's
# alpha): keeps the divergence finite while the list lacks a category of the history.
CALIBRATION_SMOOTHING = 0.01
# The pool re-ranking chooses from: POOL_FACTOR times k, and never fewer than POOL_MIN items.
POOL_FACTOR = 10
POOL_MIN = 200


@dataclass(frozen=True, eq=False)
class Categories:
    """A categorical field, possibly multi-valued (an item with several genres): item index
    i's value codes are codes[offsets[i]:offsets[i + 1]]; item 0 (padding) has none."""

    values: tuple[str, ...]  # code -> value, sorted
    offsets: np.ndarray  # int64 [N + 2]
    codes: np.ndarray  # int64, one per (item, value)
    owners: np.ndarray  # int64, the item index of each code

    @property
    def num_items(self) -> int:
        return len(self.offsets) - 2

    def of(self, item: int) -> np.ndarray:
        """Item index `item`'s value codes."""
        return self.codes[self.offsets[item] : self.offsets[item + 1]]

    def code(self, value: str) -> int | None:
        position = int(np.searchsorted(self.values, value))
        if position < len(self.values) and self.values[position] == value:
            return position
        return None

    def having_any(self, codes: Sequence[int]) -> np.ndarray:
        """bool [N + 1]: the items with at least one of `codes`."""
        hits = self.owners[np.isin(self.codes, codes)]
        return np.bincount(hits, minlength=self.num_items + 1) > 0

    def membership(self, items: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """bool [len(items), len(columns)]: whether each item has each value code of
        `columns` (sorted codes). Built for a few hundred items at a time, so a field with a
        million distinct values costs only the values these items have."""
        rows, codes = self._flat(items)
        place = np.searchsorted(columns, codes)
        inside = place < len(columns)
        inside[inside] = columns[place[inside]] == codes[inside]
        out = np.zeros((len(items), len(columns)), dtype=bool)
        out[rows[inside], place[inside]] = True
        return out

    def codes_of(self, items: np.ndarray) -> np.ndarray:
        """The sorted distinct value codes that `items` have."""
        return np.unique(self._flat(items)[1])

    def _flat(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in `items`, value code) of every value the items have."""
        starts, ends = self.offsets[items], self.offsets[items + 1]
        counts = ends - starts
        rows = np.repeat(np.arange(len(items)), counts)
        # Each value's place in `codes`: its item's start plus its place within that item.
        flat = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
        return rows, self.codes[flat]


@dataclass(frozen=True)
class MetadataFilter:
    """Keep the items whose `field` has at least one of `any_of` (categorical fields) or lies
    within [at_least, at_most] (numeric fields; an unknown value never matches)."""

    field: str  # "genres", "year", ...
    any_of: tuple[str, ...] = ()
    at_least: float | None = None
    at_most: float | None = None

    @property
    def has_bounds(self) -> bool:
        return self.at_least is not None or self.at_most is not None


@dataclass(frozen=True, eq=False)
class ItemMetadata:
    """Item metadata of one model version, per item index (1..N; row 0 is padding).

    `fields` maps a field name to Categories (text columns, "|"-separated values) or to a
    float64 array [N + 1] (numeric columns; NaN where unknown)."""

    fields: dict[str, "Categories | np.ndarray"]
    num_items: int

    @classmethod
    def from_catalog(cls, catalog: pl.DataFrame) -> "ItemMetadata | None":
        """The metadata columns of a catalog (every column but index, item_id, title and
        popularity); None when it has none, as in versions exported before metadata."""
        catalog = catalog.sort("index")
        names = [c for c in catalog.columns if c not in CATALOG_COLUMNS]
        if not names:
            return None
        fields = {name: _field(catalog[name]) for name in names}
        return cls(fields=fields, num_items=catalog.height)

    def known_fields(self) -> str:
        return ", ".join(sorted(self.fields))

    def categories(self, field: str = "genres") -> Categories:
        """The value codes per item of a categorical field (caps, calibration, diversity)."""
        values = self._field(field)
        if not isinstance(values, Categories):
            raise ValueError(f"{field}: a numeric item metadata field, not a categorical one")
        return values

    def numeric(self, field: str) -> np.ndarray:
        values = self._field(field)
        if isinstance(values, Categories):
            raise ValueError(f"{field}: a categorical item metadata field, not a numeric one")
        return values

    def check(self, filters: Sequence[MetadataFilter]) -> None:
        """ValueError naming the field of the first filter this metadata cannot apply."""
        for rule in filters:
            values = self._field(rule.field)
            if isinstance(values, Categories):
                _check_categorical(rule, values)
            else:
                _check_numeric(rule)

    def eligible(self, filters: Sequence[MetadataFilter], num_items: int) -> np.ndarray:
        """bool [N + 1]: the items every filter keeps; row 0 (padding) is never eligible."""
        if num_items != self.num_items:
            raise ValueError(
                f"num_items: the metadata describes {self.num_items} items, not {num_items}"
            )
        self.check(filters)
        keep = np.ones(num_items + 1, dtype=bool)
        keep[0] = False
        for rule in filters:
            keep &= self._matching(rule)
        return keep

    def _matching(self, rule: MetadataFilter) -> np.ndarray:
        values = self.fields[rule.field]
        if isinstance(values, Categories):
            return values.having_any([values.code(v) for v in rule.any_of])
        low = -np.inf if rule.at_least is None else rule.at_least
        high = np.inf if rule.at_most is None else rule.at_most
        with np.errstate(invalid="ignore"):
            return (values >= low) & (values <= high)  # NaN (unknown) compares False

    def _field(self, field: str) -> "Categories | np.ndarray":
        if field not in self.fields:
            raise ValueError(
                f"{field}: no such item metadata field (known fields: {self.known_fields()})"
            )
        return self.fields[field]


def check_filters(metadata: ItemMetadata | None, filters: Sequence[MetadataFilter]) -> None:
    """ValueError when any filter cannot apply, including a model without item metadata."""
    if not filters:
        return
    if metadata is None:
        raise ValueError(
            f"{filters[0].field}: this model version has no item metadata to filter on "
            "(export it again from a checkpoint whose items table has metadata columns)"
        )
    metadata.check(filters)


def _field(column: pl.Series) -> "Categories | np.ndarray":
    if column.dtype.is_numeric():
        values = column.cast(pl.Float64).fill_null(float("nan")).to_numpy()
        return np.concatenate([[np.nan], values])
    return _categories(column)


def _categories(column: pl.Series) -> Categories:
    if isinstance(column.dtype, pl.List):
        lists = column.cast(pl.List(pl.String))
    else:
        lists = column.cast(pl.String).str.split(VALUE_SEPARATOR)
    lists = lists.list.eval(pl.element().str.strip_chars()).list.eval(
        pl.element().filter(pl.element() != "")
    )
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = lists.explode().drop_nulls().to_numpy().astype(str)
    values, codes = np.unique(flat, return_inverse=True)
    offsets = np.concatenate([[0, 0], np.cumsum(lengths)]).astype(np.int64)
    owners = np.repeat(np.arange(1, len(lengths) + 1), lengths)
    return Categories(tuple(values.tolist()), offsets, codes.astype(np.int64), owners)


def _check_categorical(rule: MetadataFilter, values: Categories) -> None:
    if rule.has_bounds:
        raise ValueError(
            f"{rule.field}: a categorical field takes any_of values, not numeric bounds"
        )
    if not rule.any_of:
        raise ValueError(f"{rule.field}: a filter needs at least one any_of value")
    for value in rule.any_of:
        if values.code(value) is None:
            known = ", ".join(values.values[:LISTED_VALUES])
            more = len(values.values) - LISTED_VALUES
            known += f" and {more} more" if more > 0 else ""
            raise ValueError(f"{rule.field}: no item has the value {value[:64]!r} (known: {known})")


def _check_numeric(rule: MetadataFilter) -> None:
    if rule.any_of:
        raise ValueError(
            f"{rule.field}: a numeric field takes at_least/at_most bounds, not any_of values"
        )
    if not rule.has_bounds:
        raise ValueError(f"{rule.field}: a filter needs at_least, at_most or both")
    for name in ("at_least", "at_most"):
        bound = getattr(rule, name)
        if bound is not None and math.isnan(bound):
            raise ValueError(f"{rule.field}: {name} is not a number")
    if rule.at_least is not None and rule.at_most is not None and rule.at_least > rule.at_most:
        raise ValueError(
            f"{rule.field}: at_least {rule.at_least:g} is above at_most {rule.at_most:g}"
        )


@dataclass(frozen=True)
class RerankSettings:
    """How to re-rank the exact logits; the defaults change nothing."""

    popularity_beta: float = 0.0  # score = logit - beta * log p(i): beta > 0 favours the tail
    mmr_lambda: float = 1.0  # maximal marginal relevance weight of relevance (1 = score order)
    category_cap: int = 0  # at most this many items per value of cap_field (0 = no cap)
    cap_field: str = "genres"  # the categorical field of the cap and of calibration
    calibration: float = 0.0  # weight toward the history's mix of cap_field (0 = off)

    def is_identity(self) -> bool:
        return (
            self.popularity_beta == 0
            and self.mmr_lambda == 1
            and self.category_cap == 0
            and self.calibration == 0
        )

    def needs_categories(self) -> bool:
        return self.category_cap > 0 or self.calibration > 0

    def validate(self) -> None:
        """ValueError naming the first setting out of range."""
        low, high = BETA_RANGE
        if not low <= self.popularity_beta <= high:  # also refuses NaN
            raise ValueError(
                f"popularity_beta: expected a number in [{low:g}, {high:g}], "
                f"got {self.popularity_beta!r}"
            )
        for name in ("mmr_lambda", "calibration"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
        if isinstance(self.category_cap, bool) or not isinstance(self.category_cap, int):
            raise ValueError(f"category_cap: expected an integer, got {self.category_cap!r}")
        if self.category_cap < 0:
            raise ValueError(f"category_cap: expected 0 (off) or more, got {self.category_cap}")

    def check_against(self, metadata: ItemMetadata | None) -> None:
        """ValueError when the cap or calibration asks for a field the model lacks."""
        if not self.needs_categories():
            return
        setting = "category_cap" if self.category_cap > 0 else "calibration"
        if metadata is None:
            raise ValueError(
                f"{setting}: this model version has no item metadata "
                f"(no {self.cap_field!r} to diversify on)"
            )
        try:
            metadata.categories(self.cap_field)
        except ValueError as error:
            raise ValueError(f"{setting}: {error}") from None


def candidate_pool(k: int, settings: RerankSettings) -> int:
    """How many of the best items by logit the re-ranker chooses k from.

    Re-ranking can only promote an item it is shown, so the pool must reach well below the
    top k, but MMR and calibration cost pool x k steps, and a popularity shift of beta * log p
    rarely lifts an item from beyond the first few hundred by logit into the top k (the
    benchmark measures how often the pool's answer differs from re-ranking the whole catalog).
    Without re-ranking, the top k is all there is to choose from."""
    if settings.is_identity():
        return k
    return max(POOL_FACTOR * k, POOL_MIN)


def log_popularity(popularity: np.ndarray) -> np.ndarray:
    """log p(i) per item index [N + 1] (row 0: 0), p add-one smoothed training popularity: an
    item never seen in training keeps a finite score."""
    every_item = np.arange(1, len(popularity) + 1)
    return np.concatenate([[0.0], log_popularity_of(popularity, every_item)])


def log_popularity_of(popularity: np.ndarray, items: np.ndarray) -> np.ndarray:
    """`log_popularity(popularity)[items]` without the catalog-wide array: a request reads its
    pool's few hundred items, not all of a million-item catalog."""
    counts = np.asarray(popularity, dtype=np.float64)
    total = counts.sum() + len(counts)
    return np.log((counts[items - 1] + 1.0) / total)


def rerank(
    items: np.ndarray,
    logits: np.ndarray,
    k: int,
    settings: RerankSettings,
    *,
    popularity: np.ndarray,
    vectors: np.ndarray | None,
    metadata: ItemMetadata | None,
    history: np.ndarray,
) -> "Ranked":
    """The k items of the pool `items` (indices 1..N with their exact `logits`, any order;
    padding and -inf are ignored) chosen and ordered by `settings`, with their original logits.

    `popularity`: training interactions per item (item i at i - 1); `vectors`: the head rows
    [N + 1, d + 1] (the bias column is dropped for similarity); `history`: the user's item
    indices, for calibration. With a category cap that the pool cannot satisfy, the remaining
    places go to the best items left, so k items come back whenever the pool holds k."""
    # Imported here: serving.pipeline needs serving.query, which needs this module.
    from serving.pipeline import Ranked, top_k

    settings.validate()
    settings.check_against(metadata)
    real = (items > 0) & np.isfinite(logits)
    items, logits = items[real], logits[real]
    if settings.is_identity():
        return top_k(items, logits, k)
    relevance = logits.astype(np.float64)
    if settings.popularity_beta:
        relevance -= settings.popularity_beta * log_popularity_of(popularity, items)
    if settings.mmr_lambda == 1 and not settings.needs_categories():
        # Popularity alone re-orders without interactions between picks: a top-k by the new
        # score (positions from 1, since top_k treats 0 as padding).
        chosen = top_k(np.arange(1, len(items) + 1), relevance, k).items - 1
    else:
        chosen = _greedy(items, relevance, k, settings, vectors, metadata, history)
    return Ranked(items=items[chosen], logits=logits[chosen])


def _greedy(items, relevance, k, settings, vectors, metadata, history) -> np.ndarray:
    """Positions in the pool of the k picks, one at a time: each the best by relevance,
    lowered by its similarity to the picks so far (MMR) and by how far it would move the
    list's category mix from the history's (calibration), among those within the cap."""
    order = np.argsort(-relevance, kind="stable")  # ties: the earlier, better-logit item
    relevance = _unit_range(relevance[order])
    pool = items[order]
    count = min(k, len(pool))
    score_of = _Objective(pool, relevance, settings, vectors, metadata, history)
    available = np.ones(len(pool), dtype=bool)
    picks = []
    for _ in range(count):
        allowed = available & ~score_of.capped()
        if not allowed.any():  # the cap cannot hold within this pool: fill with the best left
            allowed = available
        pick = int(np.argmax(np.where(allowed, score_of.scores(), -np.inf)))
        picks.append(pick)
        available[pick] = False
        score_of.take(pick)
    return order[np.array(picks, dtype=np.int64)]


def _unit_range(values: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] over the pool, so lambda and the calibration weight trade relevance
    against a similarity or a divergence on a fixed scale whatever the logits' spread."""
    if len(values) == 0 or values.max() == values.min():
        return np.ones_like(values)
    return (values - values.min()) / (values.max() - values.min())


class _Objective:
    """The greedy re-ranker's state over one pool: the marginal score of each pool item given
    the picks so far, and which items the category cap excludes."""

    def __init__(self, pool, relevance, settings: RerankSettings, vectors, metadata, history):
        self.settings, self.relevance = settings, relevance
        self.max_similarity = np.zeros(len(pool))
        self.unit = None
        if settings.mmr_lambda < 1:
            if vectors is None:
                raise ValueError("mmr_lambda: below 1 needs the item vectors")
            self.unit = _unit_rows(vectors[pool, :-1])
        self.membership = self.target = None
        if settings.needs_categories():
            categories = metadata.categories(settings.cap_field)
            history = np.asarray(history, dtype=np.int64)
            history = history[(history > 0) & (history <= categories.num_items)]
            columns = np.union1d(categories.codes_of(pool), categories.codes_of(history))
            self.membership = categories.membership(pool, columns)
            self.per_category = np.zeros(len(columns), dtype=np.int64)
            self.target = _category_mix(categories.membership(history, columns))
            self.item_mix = _row_mix(self.membership)
            self.list_mix = np.zeros(len(columns))
            self.picked = 0

    def capped(self) -> np.ndarray:
        cap = self.settings.category_cap
        if not cap:
            return np.zeros(len(self.relevance), dtype=bool)
        full = self.per_category >= cap
        return (self.membership & full).any(axis=1)

    def scores(self) -> np.ndarray:
        lam = self.settings.mmr_lambda
        score = lam * self.relevance - (1 - lam) * self.max_similarity
        weight = self.settings.calibration
        if weight and self.target is not None:
            mix = (self.list_mix + self.item_mix) / (self.picked + 1)
            score = (1 - weight) * score - weight * _divergence(self.target, mix)
        return score

    def take(self, pick: int) -> None:
        if self.unit is not None:
            # One matrix-vector product per pick, not the pool's whole similarity matrix: k
            # rows are all MMR reads, and a small GEMM measured 50x slower than these on a
            # busy machine (BLAS threads waiting on each other).
            similarity = self.unit @ self.unit[pick]
            self.max_similarity = np.maximum(self.max_similarity, similarity)
        if self.membership is not None:
            self.per_category += self.membership[pick]
            self.list_mix += self.item_mix[pick]
            self.picked += 1


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero), so dot products are cosines."""
    vectors = vectors.astype(np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def _row_mix(membership: np.ndarray) -> np.ndarray:
    """p(c | item): an item's categories share it equally (Steck 2018); none: all zero."""
    counts = membership.sum(axis=1, keepdims=True)
    return np.divide(membership, counts, out=np.zeros(membership.shape), where=counts > 0)


def _category_mix(membership: np.ndarray) -> np.ndarray | None:
    """p(c | history): the mean of its items' p(c | item); None without any category."""
    mix = _row_mix(membership)
    described = mix.sum(axis=1) > 0
    if not described.any():
        return None
    return mix[described].mean(axis=0)


def _divergence(target: np.ndarray, mixes: np.ndarray) -> np.ndarray:
    """KL(target || smoothed mix) for each row of `mixes`, the smoothing toward the target."""
    alpha = CALIBRATION_SMOOTHING
    smoothed = (1 - alpha) * mixes + alpha * target
    present = target > 0
    return (target[present] * np.log(target[present] / smoothed[:, present])).sum(axis=1)

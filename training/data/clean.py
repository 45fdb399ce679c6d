"""Clean normalized interactions: drop malformed rows, filter, order stably, dedupe, k-core."""

from dataclasses import dataclass

import numpy as np
import polars as pl

DEDUP_MODES = ("exact", "first", "none")


@dataclass(frozen=True, kw_only=True)
class CleanOptions:
    """What to keep. Defaults follow the SASRec/BERT4Rec preprocessing (5-core, all ratings)."""

    min_rating: float | None = None
    keep_events: tuple[str, ...] = ()
    # exact: the same user, item and timestamp twice (without timestamps: the same item twice
    # in a row); first: keep only a user's first interaction with each item; none: keep all.
    dedup: str = "exact"
    min_user_interactions: int = 5
    min_item_interactions: int = 5


@dataclass
class CleanReport:
    """How many rows each step removed, for the manifest and the summary."""

    rows_read: int = 0
    malformed_rows: int = 0
    filtered_by_rating: int = 0
    filtered_by_event: int = 0
    duplicate_rows: int = 0
    kcore_removed_rows: int = 0
    kcore_removed_users: int = 0  # users (items) with rows before the k-core and none after
    kcore_removed_items: int = 0
    kcore_iterations: int = 0
    ordering: str = "file order"


def sort_key(frame: pl.DataFrame) -> list[str]:
    """Time, then the explicit order column, then input order: ties keep the input order."""
    return [c for c in ("timestamp", "order") if c in frame.columns] + ["row"]


def clean(frame: pl.DataFrame, options: CleanOptions) -> tuple[pl.DataFrame, CleanReport]:
    """Return the kept interactions sorted by (user code, time, input order) and a report.

    The result has dense 0-based `user_code`/`item_code` columns in external-id order.
    """
    report = CleanReport(rows_read=frame.height)
    required = [c for c in ("user", "item", "timestamp", "order") if c in frame.columns]
    well_formed = pl.all_horizontal(pl.col(c).is_not_null() for c in required)
    kept = frame.filter(well_formed)
    report.malformed_rows = frame.height - kept.height
    if "timestamp" in frame.columns:
        report.ordering = "timestamp"
    elif "order" in frame.columns:
        report.ordering = "order column"

    if options.min_rating is not None:
        before = kept.height
        kept = kept.filter(pl.col("rating") >= options.min_rating)
        report.filtered_by_rating = before - kept.height
    if options.keep_events:
        before = kept.height
        kept = kept.filter(pl.col("event").is_in(list(options.keep_events)))
        report.filtered_by_event = before - kept.height

    kept = _with_codes(kept).sort(["user_code", *sort_key(kept)])
    before = kept.height
    kept = _dedupe(kept, options.dedup)
    report.duplicate_rows = before - kept.height

    keep, report.kcore_iterations = k_core_mask(
        kept["user_code"].to_numpy(),
        kept["item_code"].to_numpy(),
        options.min_user_interactions,
        options.min_item_interactions,
    )
    report.kcore_removed_rows = int((~keep).sum())
    for role in ("user", "item"):
        codes = kept[f"{role}_code"].to_numpy()
        removed = len(np.unique(codes)) - len(np.unique(codes[keep]))
        setattr(report, f"kcore_removed_{role}s", removed)
    kept = _with_codes(kept.filter(pl.Series(keep)))
    return kept, report


def _with_codes(frame: pl.DataFrame) -> pl.DataFrame:
    """Dense 0-based codes in sorted external-id order (so indices do not depend on row order)."""
    return frame.with_columns(
        (pl.col("user").rank("dense") - 1).cast(pl.Int32).alias("user_code"),
        (pl.col("item").rank("dense") - 1).cast(pl.Int32).alias("item_code"),
    )


def _dedupe(frame: pl.DataFrame, mode: str) -> pl.DataFrame:
    if mode == "none" or frame.height == 0:
        return frame
    if mode == "first":
        return frame.unique(["user_code", "item_code"], keep="first", maintain_order=True)
    if "timestamp" in frame.columns:
        keys = ["user_code", "item_code", "timestamp"]
        if "event" in frame.columns:
            keys.append("event")
        return frame.unique(keys, keep="first", maintain_order=True)
    repeat = (pl.col("user_code") == pl.col("user_code").shift(1)) & (
        pl.col("item_code") == pl.col("item_code").shift(1)
    )
    return frame.filter(~repeat.fill_null(False))


def k_core_mask(
    user_codes: np.ndarray, item_codes: np.ndarray, min_user: int, min_item: int
) -> tuple[np.ndarray, int]:
    """Rows to keep so every kept user and item has enough interactions (a fixed point)."""
    keep = np.ones(len(user_codes), dtype=bool)
    if len(user_codes) == 0:
        return keep, 0
    n_users, n_items = int(user_codes.max()) + 1, int(item_codes.max()) + 1
    iterations = 0
    while True:
        iterations += 1
        user_counts = np.bincount(user_codes[keep], minlength=n_users)
        item_counts = np.bincount(item_codes[keep], minlength=n_items)
        still = keep & (user_counts[user_codes] >= min_user) & (item_counts[item_codes] >= min_item)
        if still.sum() == keep.sum():
            return keep, iterations
        keep = still

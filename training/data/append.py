"""`logitrec data prepare --append-to DATASET NEW_LOG`: new interactions on an existing dataset.

The new dataset keeps the old one's id maps: a known item or user keeps its index, new ones are
appended after the old ones (in external-id order, as `prepare` orders them). Each user's new
events follow their old ones, so every old sequence is a prefix of the new one: a model trained
on the old dataset reads the new one unchanged, and incremental training can tell which
transitions it has not yet learned from (see training/incremental.py).

Cleaning applies to the new log alone (malformed rows, ratings, events, duplicates), but no
k-core over it: one day's slice would lose most of its users. Instead a new item needs
`--min-item-interactions` events in the new log and a new user `--min-user-interactions`;
known items and users are always kept. An event older than its user's newest known event (late
data) is kept, in arrival order, with its timestamp raised to that newest time so histories
stay in time order; the manifest counts them.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from logitrec.atomic import atomic_directory
from logitrec.errors import InputError
from logitrec.progress import StageTimer
from training.data import split as splits
from training.data.clean import clean
from training.data.dataset import Dataset, load_dataset, write_dataset
from training.data.prepare import PrepareOptions, apply_id_maps, build_manifest
from training.data.readers import read_interactions
from training.data.tables import read_side_table


def append(
    options: PrepareOptions,
    previous: Path,
    out_dir: Path,
    *,
    force: bool = False,
    timer: StageTimer | None = None,
) -> dict:
    """Write `previous` plus the new interactions of `options` as a new dataset; its manifest."""
    timer = timer or StageTimer(show=False)
    old = load_dataset(previous)
    if Path(out_dir).resolve() == Path(previous).resolve():
        raise InputError(f"--out: {out_dir} is the dataset appended to; write a new directory")
    with timer.stage("reading new interactions"):
        frame, fmt = read_interactions(options.interactions)
        frame = apply_id_maps(frame, options)
        item_table = options.items and read_side_table(options.items, "item")
        user_table = options.users and read_side_table(options.users, "user")
    _check_timestamps(old, frame, options.interactions.path)
    with timer.stage("cleaning"):
        no_core = replace(options.cleaning, min_user_interactions=1, min_item_interactions=1)
        kept, report = clean(frame, no_core)
        del frame
    with timer.stage("mapping ids"):
        kept = kept.with_columns(
            pl.col("item").cast(pl.String).alias("item_id"),
            pl.col("user").cast(pl.String).alias("user_id"),
        )
        kept, dropped_items = _drop_rare_new(kept, "item", old.items, options)
        kept, dropped_users = _drop_rare_new(kept, "user", old.users, options)
        items = _grown_table(old.items, kept, "item", item_table)
        users = _grown_table(old.users, kept, "user", user_table)
        kept = kept.join(items.select("item_id", "item_index"), on="item_id", how="left")
        kept = kept.join(users.select("user_id", "user_index"), on="user_id", how="left")
    if kept.height == 0:
        raise InputError(
            f"{options.interactions.path}: no new interactions left to append (read "
            f"{report.rows_read} rows; malformed {report.malformed_rows}, duplicates "
            f"{report.duplicate_rows}, events of new items or users below "
            f"--min-item-interactions / --min-user-interactions {dropped_items + dropped_users})"
        )
    with timer.stage("building sequences and split"):
        sequences, late = _appended_sequences(old, kept.sort("user_index", "row"), users.height)
        lengths = sequences["item_indices"].list.len().to_numpy()
        if options.split.kind == "temporal":
            times = sequences["timestamps"].explode().to_numpy()
            positions = splits.temporal(lengths, times, options.split)
        else:
            positions = splits.leave_one_out(lengths)
    manifest = build_manifest(options, fmt, report, sequences, positions, items, users)
    manifest["appended"] = {
        "to": str(Path(previous).resolve()),
        "previous_content_hash": old.manifest.get("content_hash"),
        "previous_items": old.num_items,
        "previous_users": old.num_users,
        "new_interactions": int(kept.height),
        "new_items": int(items.height - old.num_items),
        "new_users": int(users.height - old.num_users),
        "rows_of_rare_new_items_dropped": dropped_items,
        "rows_of_rare_new_users_dropped": dropped_users,
        "late_events_clamped": late,
        "new_items_without_title": _untitled(items, old.num_items),
    }
    with timer.stage("writing dataset"), atomic_directory(out_dir, force=force) as staging:
        manifest = write_dataset(
            staging,
            sequences=sequences,
            split=positions,
            items=items,
            users=users,
            manifest=manifest,
        )
    return manifest


def _check_timestamps(old: Dataset, frame: pl.DataFrame, path: Path) -> None:
    has_old, has_new = old.timestamps is not None, "timestamp" in frame.columns
    if has_old != has_new:
        which = "has timestamps and the new log has none" if has_old else "has no timestamps"
        raise InputError(
            f"{path}: cannot append: the dataset {which}"
            + ("" if has_old else " but the new log has them")
            + "; both must be ordered the same way (pass --time-col or --order-col to match)"
        )


def _drop_rare_new(
    kept: pl.DataFrame, key: str, known: pl.DataFrame, options: PrepareOptions
) -> tuple[pl.DataFrame, int]:
    """Drop the events of new ids (not in `known`) that have fewer than the minimum."""
    minimum = getattr(options.cleaning, f"min_{key}_interactions")
    id_column = f"{key}_id"
    is_new = ~pl.col(id_column).is_in(known[id_column].implode())
    rare = is_new & (pl.len().over(id_column) < minimum)
    before = kept.height
    kept = kept.filter(~rare)
    return kept, before - kept.height


def _grown_table(
    old: pl.DataFrame, kept: pl.DataFrame, key: str, table: pl.DataFrame | None
) -> pl.DataFrame:
    """The old index table plus one row per id the new events bring (indices after the old
    ones, in external-id order as `prepare` numbers them), with the side table's columns."""
    index, id_column = f"{key}_index", f"{key}_id"
    fresh = kept.select(id_column).unique().join(old.select(id_column), on=id_column, how="anti")
    fresh = fresh.sort(pl.col(id_column).cast(pl.Int64, strict=False), id_column)
    fresh = fresh.with_row_index(index, offset=old.height + 1).with_columns(
        pl.col(index).cast(old[index].dtype)
    )
    if table is not None and fresh.height:
        side = table.with_columns(pl.col(key).cast(pl.String).alias(id_column)).drop(key)
        side = side.select(
            id_column, *[c for c in side.columns if c in old.columns and c != id_column]
        )
        fresh = fresh.join(side.unique(id_column, keep="first"), on=id_column, how="left")
    return pl.concat([old, fresh], how="diagonal_relaxed").select(old.columns)


def _untitled(items: pl.DataFrame, known: int) -> int:
    fresh = items.filter(pl.col("item_index") > known)
    if "title" not in fresh.columns:
        return fresh.height
    return int(fresh["title"].is_null().sum())


def _appended_sequences(
    old: Dataset, kept: pl.DataFrame, num_users: int
) -> tuple[pl.DataFrame, int]:
    """Every user's old sequence followed by their new events (`kept`, sorted by user and
    arrival); and how many new events were older than their user's newest old event (their
    timestamps are raised to it)."""
    old_lengths = np.zeros(num_users, dtype=np.int64)
    old_lengths[: old.num_users] = old.lengths
    new_users = kept["user_index"].to_numpy().astype(np.int64) - 1
    new_lengths = np.bincount(new_users, minlength=num_users)
    offsets = np.concatenate([[0], np.cumsum(old_lengths + new_lengths)])
    # Where each old event and each new event lands in the combined flat arrays.
    old_slots = _slots(offsets[:-1], old_lengths)
    new_slots = _slots(offsets[:-1] + old_lengths, new_lengths)
    items = np.empty(offsets[-1], dtype=np.int32)
    items[old_slots] = old.item_indices
    items[new_slots] = kept["item_index"].to_numpy()
    columns = {
        "user_index": np.repeat(np.arange(1, num_users + 1, dtype=np.int32), np.diff(offsets)),
        "item_indices": items,
    }
    late = 0
    if old.timestamps is not None:
        newest_old = np.full(num_users, np.iinfo(np.int64).min)
        # Every old user has events (the k-core kept them), so no reduceat segment is empty.
        newest_old[: old.num_users] = np.maximum.reduceat(old.timestamps, old.offsets[:-1])
        arrived = kept["timestamp"].to_numpy().astype(np.int64)
        floor = newest_old[new_users]
        late = int((arrived < floor).sum())
        times = np.empty(offsets[-1], dtype=np.int64)
        times[old_slots] = old.timestamps
        times[new_slots] = np.maximum(arrived, floor)
        columns["timestamps"] = times
    flat = pl.DataFrame(columns)
    aggregated = [pl.col("item_indices")] + (
        [pl.col("timestamps")] if "timestamps" in columns else []
    )
    sequences = flat.group_by("user_index", maintain_order=True).agg(aggregated)
    return sequences, late


def _slots(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat positions starts[u] .. starts[u] + lengths[u] - 1 for every u, in order."""
    total = int(lengths.sum())
    first = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return first + np.arange(total)

"""`logitrec data prepare`: raw logs (+ item and user tables) -> a dataset directory."""

import datetime
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

import logitrec
from logitrec.atomic import atomic_directory, file_sha256
from logitrec.errors import InputError
from logitrec.progress import StageTimer
from training.data import split as splits
from training.data.clean import CleanOptions, CleanReport, clean
from training.data.dataset import write_dataset
from training.data.readers import InteractionSource, read_interactions
from training.data.tables import TableSource, align_id_types, read_id_map, read_side_table


@dataclass(frozen=True, kw_only=True)
class PrepareOptions:
    """Everything `prepare` needs; the CLI builds it from flags."""

    interactions: InteractionSource
    items: TableSource | None = None
    users: TableSource | None = None
    # Maps from the interaction file's ids to the side tables' ids (e.g. SASRec's remapped
    # ids -> MovieLens ids). The dataset then uses the side tables' ids as external ids.
    item_map: Path | None = None
    user_map: Path | None = None
    cleaning: CleanOptions = field(default_factory=CleanOptions)
    split: splits.SplitOptions = field(default_factory=splits.SplitOptions)


def known_layout(directory: Path) -> dict:
    """Source files for a directory in a layout we know (MovieLens, the SASRec ML-1M folder)."""
    directory = Path(directory)

    def existing(name: str) -> Path | None:
        path = directory / name
        return path if path.is_file() else None

    if existing("ml-1m.txt"):  # the SASRec benchmark file plus the mapping to MovieLens ids
        item_map, user_map = (
            existing("sas_to_original_items.txt"),
            existing("sas_to_original_users.txt"),
        )
        return {
            "interactions": directory / "ml-1m.txt",
            "items": existing("movies.dat") if item_map else None,
            "users": existing("users.dat") if user_map else None,
            "item_map": item_map if existing("movies.dat") else None,
            "user_map": user_map if existing("users.dat") else None,
        }
    if existing("ratings.dat"):
        return {
            "interactions": directory / "ratings.dat",
            "items": existing("movies.dat"),
            "users": existing("users.dat"),
        }
    if existing("u.data"):
        return {
            "interactions": directory / "u.data",
            "items": existing("u.item"),
            "users": existing("u.user"),
        }
    if existing("interactions.csv"):  # what `logitrec data synth` writes
        return {
            "interactions": directory / "interactions.csv",
            "items": existing("items.csv"),
            "users": existing("users.csv"),
        }
    raise InputError(
        f"{directory}: no known dataset layout (ml-1m.txt, ratings.dat, u.data or "
        "interactions.csv); "
        "pass the interactions file instead"
    )


def prepare(
    options: PrepareOptions, out_dir: Path, *, force: bool = False, timer: StageTimer | None = None
) -> dict:
    """Run every step and write the dataset directory atomically; return its manifest."""
    timer = timer or StageTimer(show=False)
    _check_options(options)
    with timer.stage("reading interactions"):
        frame, fmt = read_interactions(options.interactions)
    with timer.stage("reading side tables"):
        frame = apply_id_maps(frame, options)
        item_table = options.items and read_side_table(options.items, "item")
        user_table = options.users and read_side_table(options.users, "user")
    if options.split.kind == "temporal" and "timestamp" not in frame.columns:
        raise InputError(
            f"{options.interactions.path}: --split temporal needs timestamps, and this "
            f"{fmt} file has none; use --split leave-one-out or pass --time-col"
        )
    with timer.stage("cleaning and k-core filtering"):
        kept, report = clean(frame, options.cleaning)
        del frame
    if kept.height == 0:
        raise InputError(_empty_message(options, report))
    with timer.stage("building sequences and split"):
        sequences = _sequences(kept)
        lengths = sequences["item_indices"].list.len().to_numpy()
        if options.split.kind == "temporal":
            positions = splits.temporal(lengths, kept["timestamp"].to_numpy(), options.split)
        else:
            positions = splits.leave_one_out(lengths)
        items = _catalog(kept, "item", item_table)
        users = _catalog(kept, "user", user_table)
        del kept
    manifest = build_manifest(options, fmt, report, sequences, positions, items, users)
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


def _check_options(options: PrepareOptions) -> None:
    cleaning = options.cleaning
    for name in ("min_user_interactions", "min_item_interactions"):
        if getattr(cleaning, name) < 1:
            raise InputError(f"--{name.replace('_', '-')}: expected an integer >= 1")
    if options.split.kind not in splits.SPLITS:
        raise InputError(f"--split: expected one of {', '.join(splits.SPLITS)}")


def apply_id_maps(frame: pl.DataFrame, options: PrepareOptions) -> pl.DataFrame:
    """The interactions with their ids translated by `--item-map` / `--user-map`, if given."""
    if options.item_map:
        frame = _apply_id_map(frame, "item", options.item_map)
    if options.user_map:
        frame = _apply_id_map(frame, "user", options.user_map)
    return frame


def _apply_id_map(frame: pl.DataFrame, key: str, map_path: Path) -> pl.DataFrame:
    id_map = read_id_map(map_path)
    source, from_ids = align_id_types(frame[key], id_map["from_id"])
    mapped = source.replace_strict(from_ids, id_map["to_id"], default=None)
    missing = source.is_not_null() & mapped.is_null()
    if missing.any():
        raise InputError(
            f"{map_path}: {key} id {source.filter(missing)[0]!r} from the interactions has no "
            "entry in this map"
        )
    return frame.with_columns(mapped.alias(key))


def _sequences(kept: pl.DataFrame) -> pl.DataFrame:
    columns = [(pl.col("item_code") + 1).alias("item_indices")]
    if "timestamp" in kept.columns:
        columns.append(pl.col("timestamp").alias("timestamps"))
    grouped = kept.group_by("user_code", maintain_order=True).agg(columns)
    return grouped.select((pl.col("user_code") + 1).alias("user_index"), *grouped.columns[1:])


def _catalog(kept: pl.DataFrame, key: str, table: pl.DataFrame | None) -> pl.DataFrame:
    """index -> external id (as text), with the side table's columns joined on."""
    code = f"{key}_code"
    ids = (
        kept.group_by(code)
        .agg(pl.col(key).first())
        .sort(code)
        .select((pl.col(code) + 1).alias(f"{key}_index"), pl.col(key))
    )
    if table is not None:
        left, right = align_id_types(ids[key], table[key])
        ids = ids.with_columns(left.alias(key)).join(
            table.with_columns(right.alias(key)), on=key, how="left"
        )
    return ids.with_columns(pl.col(key).cast(pl.String)).rename({key: f"{key}_id"})


def _source_description(path: Path | None, fmt: str | None = None) -> dict | None:
    if path is None:
        return None
    path = Path(path)
    described = {
        "path": str(path.resolve()),
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }
    if fmt:
        described["format"] = fmt
    return described


def build_manifest(options, fmt, report: CleanReport, sequences, positions, items, users) -> dict:
    lengths = sequences["item_indices"].list.len().to_numpy()
    train_lengths = positions.train_end
    context_columns = [c for c in users.columns if c not in ("user_index", "user_id")]
    text_columns = [c for c in items.columns if c not in ("item_index", "item_id")]
    titled = items["title"].is_not_null().sum() if "title" in items.columns else 0
    return {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "logitrec_version": logitrec.__version__,
        "source": {
            "interactions": _source_description(options.interactions.path, fmt),
            "items": _source_description(options.items and options.items.path),
            "users": _source_description(options.users and options.users.path),
            "item_map": _source_description(options.item_map),
            "user_map": _source_description(options.user_map),
        },
        "options": _jsonable(
            {
                "interactions": options.interactions,
                "cleaning": options.cleaning,
                "split": options.split,
            }
        ),
        "ordering": report.ordering,
        "cleaning": asdict(report),
        "counts": {
            "users": len(lengths),
            "items": int(items.height),
            "interactions": int(lengths.sum()),
        },
        "split": {
            "kind": options.split.kind,
            "train_interactions": int(train_lengths.sum()),
            "train_users": int((train_lengths > 0).sum()),
            "valid_targets": int((positions.valid_position >= 0).sum()),
            "test_targets": int((positions.test_position >= 0).sum()),
            "cutoffs": positions.cutoffs,
        },
        "item_text": {"columns": text_columns, "items_with_title": int(titled)},
        "user_context": {c: int(users[c].n_unique()) for c in context_columns},
        "id_maps": {
            "items": "items.parquet: item_index -> item_id",
            "users": "users.parquet: user_index -> user_id",
        },
    }


def _jsonable(value):
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _empty_message(options: PrepareOptions, report: CleanReport) -> str:
    cleaning = options.cleaning
    return (
        f"{options.interactions.path}: no interactions left after filtering "
        f"(read {report.rows_read} rows; malformed {report.malformed_rows}, "
        f"below --min-rating {report.filtered_by_rating}, other events {report.filtered_by_event}, "
        f"duplicates {report.duplicate_rows}, k-core removed {report.kcore_removed_rows}); "
        f"lower --min-user-interactions ({cleaning.min_user_interactions}) or "
        f"--min-item-interactions ({cleaning.min_item_interactions})"
    )

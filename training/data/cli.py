"""`logitrec data ...`: prepare, stats and synth, a thin shell over the pure data cores."""

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from logitrec.atomic import atomic_directory
from logitrec.errors import InputError
from logitrec.progress import StageTimer
from training.data.append import append
from training.data.clean import DEDUP_MODES, CleanOptions
from training.data.dataset import load_dataset
from training.data.prepare import PrepareOptions, known_layout, prepare
from training.data.readers import FORMATS, InteractionSource
from training.data.split import SPLITS, SplitOptions
from training.data.stats import dataset_stats
from training.data.synth import SynthOptions, generate, write_synthetic
from training.data.tables import TableSource

data_app = typer.Typer(
    help="Prepare interaction data: clean, filter, sequence, split.", no_args_is_help=True
)


def _choice(value: str, allowed, flag: str) -> str:
    if value not in allowed:
        raise InputError(f"{flag}: expected one of {', '.join(allowed)}, got {value!r}")
    return value


@data_app.command("prepare")
def prepare_command(
    source: Path = typer.Argument(
        ...,
        help="Interactions file, or a folder in a known layout (MovieLens, SASRec ml-1m, synth).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to create."),
    fmt: str = typer.Option("auto", "--format", help=f"Interactions format: {', '.join(FORMATS)}."),
    user_col: str = typer.Option("user_id", help="User column (CSV/TSV/Parquet)."),
    item_col: str = typer.Option("item_id", help="Item column (CSV/TSV/Parquet)."),
    time_col: str | None = typer.Option(
        None, help="Timestamp column (integer seconds). Default: 'timestamp' if present."
    ),
    order_col: str | None = typer.Option(
        None, help="Explicit integer order column instead of time."
    ),
    rating_col: str | None = typer.Option(None, help="Rating column (for --min-rating)."),
    min_rating: float | None = typer.Option(None, help="Keep interactions with rating >= this."),
    event_col: str | None = typer.Option(None, help="Event-type column (for --keep-events)."),
    keep_events: str | None = typer.Option(None, help="Comma-separated event types to keep."),
    encoding: str = typer.Option("utf-8", help="Text encoding of the interactions file."),
    items: Path | None = typer.Option(
        None, help="Items table: movies.dat, u.item, CSV/TSV/Parquet."
    ),
    items_id_col: str = typer.Option(
        "item_id", help="Item id column of a CSV/Parquet items table."
    ),
    users: Path | None = typer.Option(
        None, help="Users table: users.dat, u.user, CSV/TSV/Parquet."
    ),
    users_id_col: str = typer.Option(
        "user_id", help="User id column of a CSV/Parquet users table."
    ),
    item_map: Path | None = typer.Option(
        None, help="'interaction-id table-id' per line for items."
    ),
    user_map: Path | None = typer.Option(
        None, help="'interaction-id table-id' per line for users."
    ),
    dedup: str = typer.Option("exact", help=f"Duplicate handling: {', '.join(DEDUP_MODES)}."),
    min_user_interactions: int = typer.Option(5, help="k-core: minimum interactions per user."),
    min_item_interactions: int = typer.Option(5, help="k-core: minimum interactions per item."),
    split: str = typer.Option("leave-one-out", help=f"Split: {', '.join(SPLITS)}."),
    valid_cutoff: int | None = typer.Option(None, help="Temporal split: validation cut-off (s)."),
    test_cutoff: int | None = typer.Option(None, help="Temporal split: test cut-off (s)."),
    valid_fraction: float = typer.Option(
        0.1, help="Temporal split: share of interactions in valid."
    ),
    test_fraction: float = typer.Option(0.1, help="Temporal split: share of interactions in test."),
    append_to: Path | None = typer.Option(
        None,
        "--append-to",
        help="An existing dataset directory: the new interactions extend it, keeping its item "
        "and user indices (new ones come after); the k-core minimums apply to new items and "
        "users only.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the manifest (and stage timings) as JSON."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Turn raw interaction logs into a dataset directory (sequences, split, id maps), or
    extend an existing one with new interactions (--append-to)."""
    layout = {"interactions": source}
    if source.is_dir():
        layout = known_layout(source)
    elif not source.exists():
        raise InputError(f"{source}: not found (expected an interactions file or a folder)")
    options = PrepareOptions(
        interactions=InteractionSource(
            path=layout["interactions"],
            format=_choice(fmt, FORMATS, "--format"),
            user_col=user_col,
            item_col=item_col,
            time_col=time_col,
            order_col=order_col,
            rating_col=rating_col or ("rating" if min_rating is not None else None),
            event_col=event_col,
            encoding=encoding,
        ),
        items=_table(items or layout.get("items"), items_id_col),
        users=_table(users or layout.get("users"), users_id_col),
        item_map=item_map or layout.get("item_map"),
        user_map=user_map or layout.get("user_map"),
        cleaning=CleanOptions(
            min_rating=min_rating,
            keep_events=tuple(e.strip() for e in keep_events.split(",")) if keep_events else (),
            dedup=_choice(dedup, DEDUP_MODES, "--dedup"),
            min_user_interactions=min_user_interactions,
            min_item_interactions=min_item_interactions,
        ),
        split=SplitOptions(
            kind=_choice(split, SPLITS, "--split"),
            valid_cutoff=valid_cutoff,
            test_cutoff=test_cutoff,
            valid_fraction=valid_fraction,
            test_fraction=test_fraction,
        ),
    )
    if keep_events and not event_col:
        raise InputError("--keep-events needs --event-col (the column holding the event type)")
    timer = StageTimer(show=not quiet and not as_json)
    if append_to is not None:
        manifest = append(options, append_to, out, force=force, timer=timer)
    else:
        manifest = prepare(options, out, force=force, timer=timer)
    if as_json:
        typer.echo(json.dumps({**manifest, "timings_seconds": timer.seconds}, indent=2))
    else:
        _print_summary(out, manifest, timer)


def _table(path: Path | None, id_col: str) -> TableSource | None:
    return TableSource(path=path, id_col=id_col) if path else None


def _print_summary(out: Path, manifest: dict, timer: StageTimer) -> None:
    cleaning, counts, split = manifest["cleaning"], manifest["counts"], manifest["split"]
    table = Table(title=f"Prepared {out}", show_header=False)
    rows = [
        ("rows read", cleaning["rows_read"]),
        ("malformed rows dropped", cleaning["malformed_rows"]),
        ("below --min-rating", cleaning["filtered_by_rating"]),
        ("other event types", cleaning["filtered_by_event"]),
        ("duplicates dropped", cleaning["duplicate_rows"]),
        _kcore_row(manifest),
        ("ordering", cleaning["ordering"]),
        ("users", counts["users"]),
        ("items", counts["items"]),
        ("interactions", counts["interactions"]),
        (
            f"split ({split['kind']})",
            f"{split['valid_targets']} valid / {split['test_targets']} test targets",
        ),
        ("items with a title", manifest["item_text"]["items_with_title"]),
        *_appended_rows(manifest.get("appended")),
        ("time", f"{sum(timer.seconds.values()):.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)


def _kcore_row(manifest: dict) -> tuple[str, object]:
    cleaning = manifest["cleaning"]
    options = manifest["options"]["cleaning"]
    minimums = f"{options['min_user_interactions']}/{options['min_item_interactions']}"
    if manifest.get("appended"):  # no k-core over a new slice: minimums for new ids only
        return ("k-core", f"none (new users / items need {minimums} events)")
    return (
        f"k-core {minimums} removed ({cleaning['kcore_iterations']} passes)",
        f"{cleaning['kcore_removed_rows']} rows, {cleaning.get('kcore_removed_users', 0)} "
        f"users, {cleaning.get('kcore_removed_items', 0)} items",
    )


def _appended_rows(appended: dict | None) -> list[tuple[str, object]]:
    if not appended:
        return []
    return [
        ("appended to", appended["to"]),
        ("new interactions", appended["new_interactions"]),
        ("new items / users", f"{appended['new_items']:,} / {appended['new_users']:,}"),
        (
            "events of rare new items / users dropped",
            f"{appended['rows_of_rare_new_items_dropped']:,} / "
            f"{appended['rows_of_rare_new_users_dropped']:,}",
        ),
        ("late events (time raised)", appended["late_events_clamped"]),
    ]


@data_app.command("stats")
def stats_command(
    directory: Path = typer.Argument(..., help="A dataset directory written by `data prepare`."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Users, items, interactions, sequence-length percentiles and split sizes."""
    stats = dataset_stats(load_dataset(directory))
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
        return
    table = Table(title=f"Dataset {directory}", show_header=False)
    for key, value in stats.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)


@data_app.command("synth")
def synth_command(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for interactions/items/users CSVs."),
    users: int = typer.Option(2000, help="Number of users."),
    items: int = typer.Option(500, help="Number of items."),
    clusters: int = typer.Option(10, help="Latent item clusters."),
    mean_length: float = typer.Option(40.0, help="Mean interactions per user."),
    min_length: int = typer.Option(8, help="Minimum interactions per user."),
    max_length: int = typer.Option(2000, help="Maximum interactions per user."),
    follow_probability: float = typer.Option(0.5, help="Chance the next item is the successor."),
    drift_probability: float = typer.Option(0.1, help="Chance to drift to the next cluster."),
    seed: int = typer.Option(0, help="Random seed."),
    force: bool = typer.Option(False, "--force", help="Replace an existing folder."),
) -> None:
    """Write a synthetic log with planted sequential structure (items, users with context)."""
    options = SynthOptions(
        users=users,
        items=items,
        clusters=clusters,
        mean_length=mean_length,
        min_length=min_length,
        max_length=max_length,
        follow_probability=follow_probability,
        drift_probability=drift_probability,
        seed=seed,
    )
    tables = generate(options)
    with atomic_directory(out, force=force) as staging:
        write_synthetic(tables, staging)
    rows = tables["interactions"].height
    typer.echo(f"wrote {out}: {rows:,} interactions, {users:,} users, {items:,} items")

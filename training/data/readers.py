"""Read interaction logs in the formats users have into one normalized polars frame.

Every reader returns the columns `user`, `item` (external ids, as read), `row` (input order,
0-based over the data lines) and, when the source has them, `timestamp` (int64 seconds),
`order` (int64, an explicit per-user sort key), `rating` (float64) and `event` (string).
Rows whose user or item is missing, or whose line has the wrong number of fields, are kept
with a null user/item so the cleaning step can count and drop them.
"""

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from logitrec.errors import InputError
from training.data.tables import external_ids
from training.data.text import read_delimited, read_lines, read_table_columns, table_format

# Fixed-layout text formats: separator and the meaning of each field, in order.
FIXED_LAYOUTS = {
    # MovieLens 1M/10M ratings.dat: UserID::MovieID::Rating::Timestamp
    "movielens": ("::", ["user", "item", "rating", "timestamp"]),
    # MovieLens 100k u.data: user id <tab> item id <tab> rating <tab> timestamp
    "movielens-100k": ("\t", ["user", "item", "rating", "timestamp"]),
    # SASRec/BERT4Rec benchmark text: "user item" per line, lines in time order
    "sasrec": (" ", ["user", "item"]),
}
# One line per user: "user item item ..." (the S3Rec / RecBole sequence layout), items oldest
# first, separated by spaces or tabs.
SEQUENCES = "sequences"
TABLE_FORMATS = ("csv", "tsv", "parquet")
FORMATS = ("auto", *TABLE_FORMATS, *FIXED_LAYOUTS, SEQUENCES)
# What each text layout looks like, for the error when most lines are not that.
EXPECTED_LINES = {
    "movielens": "UserID::MovieID::Rating::Timestamp",
    "movielens-100k": "user<TAB>item<TAB>rating<TAB>timestamp",
    "sasrec": "'user item', one interaction per line",
    SEQUENCES: "'user item item ...', one user per line",
}
# Lines sniffed to tell a .txt file's layout.
SNIFFED_LINES = 50


@dataclass(frozen=True, kw_only=True)
class InteractionSource:
    """Where the interactions are and how to read them."""

    path: Path
    format: str = "auto"
    user_col: str = "user_id"
    item_col: str = "item_id"
    # None: use a column named "timestamp" when the table has one, else the file order.
    time_col: str | None = None
    order_col: str | None = None
    rating_col: str | None = None
    event_col: str | None = None
    encoding: str = "utf-8"


def detect_format(path: Path) -> str:
    """Guess the format from the file name; raise if it cannot be guessed."""
    name = path.name.lower()
    if name == "u.data":
        return "movielens-100k"
    if name.endswith(".dat"):
        return "movielens"
    if name.endswith(".txt"):
        return _text_layout(path)
    guessed = table_format(path)
    if guessed is None:
        raise InputError(
            f"{path}: cannot tell the format from the file name; pass --format "
            f"({', '.join(FORMATS[1:])})"
        )
    return guessed


def _text_layout(path: Path) -> str:
    """A .txt file holds either one interaction per line ("user item": sasrec) or one user per
    line ("user item item ...": sequences); most of its first lines say which."""
    fields = []
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.strip():
                fields.append(len(line.split()))
            if len(fields) == SNIFFED_LINES:
                break
    longer = sum(1 for count in fields if count > 2)
    return SEQUENCES if fields and longer * 2 > len(fields) else "sasrec"


def read_interactions(source: InteractionSource) -> tuple[pl.DataFrame, str]:
    """Read `source` into the normalized frame; also return the format actually used."""
    path = Path(source.path)
    if not path.is_file():
        raise InputError(f"{path}: interactions file not found (expected a file)")
    fmt = detect_format(path) if source.format == "auto" else source.format
    if fmt not in FORMATS:
        raise InputError(f"--format: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == SEQUENCES:
        frame = _read_sequences(path, source.encoding)
    elif fmt in FIXED_LAYOUTS:
        frame = _read_fixed_layout(path, fmt, source.encoding)
    else:
        frame = _read_table(path, fmt, source)
    return frame, fmt


def _read_fixed_layout(path: Path, fmt: str, encoding: str) -> pl.DataFrame:
    separator, fields = FIXED_LAYOUTS[fmt]
    parts = pl.col("line").str.strip_chars().str.split(separator)
    well_formed = parts.list.len() == len(fields)
    lines = read_lines(path, encoding).to_frame("line").with_row_index("row")
    _check_mostly_well_formed(path, fmt, lines, lines.select(well_formed)["line"])
    raw = lines.select(
        "row",
        *(pl.when(well_formed).then(parts.list.get(i)).alias(f) for i, f in enumerate(fields)),
    )
    return _typed(raw, path, first_line=1, unit="line", labels={f: f"field {f}" for f in fields})


def _read_sequences(path: Path, encoding: str) -> pl.DataFrame:
    """One user per line, items oldest first: one interaction per item, in file order (a user
    on several lines gets the lines' items one after the other)."""
    lines = read_lines(path, encoding).to_frame("line").with_row_index("line_number")
    tokens = pl.col("line").str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ")
    _check_mostly_well_formed(path, SEQUENCES, lines, lines.select(tokens.list.len() >= 2)["line"])
    users = lines.filter(pl.col("line").str.strip_chars() != "").select(
        "line_number",
        tokens.list.first().alias("user"),
        tokens.list.slice(1).alias("item"),
    )
    has_items = pl.col("item").list.len() > 0
    exploded = users.filter(has_items).explode("item")
    # A line with a user and no item keeps one row with a null item, counted as malformed.
    empty = users.filter(~has_items).select(
        "line_number", "user", pl.lit(None, pl.String).alias("item")
    )
    raw = (
        pl.concat([exploded, empty])
        .sort("line_number", maintain_order=True)
        .with_row_index("row")
        .select("row", "user", "item")
    )
    labels = {"user": "user (first field)", "item": "items"}
    return _typed(raw, path, first_line=1, unit="interaction", labels=labels)


def _check_mostly_well_formed(path: Path, fmt: str, lines: pl.DataFrame, good: pl.Series) -> None:
    """Most lines not in the layout means the wrong layout (or file): say so with the first
    such line, rather than let cleaning drop them all and report an empty dataset."""
    blank = lines["line"].str.strip_chars() == ""
    bad = ~good.fill_null(False) & ~blank
    if int(bad.sum()) * 2 <= int((~blank).sum()):
        return
    first = int(bad.arg_true()[0])
    other = ", ".join(f for f in EXPECTED_LINES if f != fmt)
    raise InputError(
        f"{path}: {int(bad.sum())} of {int((~blank).sum())} lines are not in the {fmt} layout "
        f"({EXPECTED_LINES[fmt]}); line {first + 1} reads {lines['line'][first][:80]!r}. "
        f"Pass --format for another layout ({other}; csv, tsv, parquet with --user-col and "
        "--item-col)"
    )


def _read_table(path: Path, fmt: str, source: InteractionSource) -> pl.DataFrame:
    available = read_table_columns(path, fmt, source.encoding)
    time_col = source.time_col
    if time_col is None and source.order_col is None and "timestamp" in available:
        time_col = "timestamp"
    wanted = {
        "user": source.user_col,
        "item": source.item_col,
        "timestamp": time_col,
        "order": source.order_col,
        "rating": source.rating_col,
        "event": source.event_col,
    }
    wanted = {role: column for role, column in wanted.items() if column is not None}
    for role, column in wanted.items():
        if column not in available:
            flag = "--time-col" if role == "timestamp" else f"--{role}-col"
            raise InputError(
                f"{path}: missing column {column!r} (set by {flag}); "
                f"the file has: {', '.join(available)}"
            )
    if fmt == "parquet":
        raw = pl.read_parquet(path, columns=list(wanted.values()))
    else:
        raw = read_delimited(path, fmt, list(wanted.values()), source.encoding)
    raw = raw.select(**{role: pl.col(column) for role, column in wanted.items()})
    # CSV data starts on line 2, after the header; Parquet rows are reported 1-based.
    first_line, unit = (1, "row") if fmt == "parquet" else (2, "line")
    return _typed(raw.with_row_index("row"), path, first_line, unit, labels=wanted)


def _typed(raw: pl.DataFrame, path: Path, first_line: int, unit: str, labels: dict) -> pl.DataFrame:
    """Cast the raw columns to their roles' types, with an error naming the first bad value."""

    def fail(role: str, index: int, expected: str, value) -> InputError:
        return InputError(
            f"{path}: {unit} {index + first_line}, column {labels[role]!r}: "
            f"expected {expected}, got {value!r}"
        )

    out = {
        "row": raw["row"].cast(pl.Int64),
        "user": external_ids(raw["user"]),
        "item": external_ids(raw["item"]),
    }
    if "timestamp" in raw.columns:
        out["timestamp"] = _integer_column(
            raw["timestamp"], lambda i, v: fail("timestamp", i, "an integer timestamp", v)
        )
    if "order" in raw.columns:
        out["order"] = _integer_column(raw["order"], lambda i, v: fail("order", i, "an integer", v))
    if "rating" in raw.columns:
        out["rating"] = _numeric_column(
            raw["rating"], lambda i, v: fail("rating", i, "a number", v)
        )
    if "event" in raw.columns:
        out["event"] = raw["event"].cast(pl.String)
    return pl.DataFrame(out)


def _integer_column(column: pl.Series, fail) -> pl.Series:
    if column.dtype.is_integer():
        return column.cast(pl.Int64)
    if column.dtype.is_temporal():  # Parquet datetimes become epoch seconds
        return column.cast(pl.Datetime("us")).dt.epoch("s")
    return _cast_text(column, pl.Int64, fail)


def _numeric_column(column: pl.Series, fail) -> pl.Series:
    if column.dtype.is_numeric():
        return column.cast(pl.Float64)
    return _cast_text(column, pl.Float64, fail)


def _cast_text(column: pl.Series, dtype, fail) -> pl.Series:
    text = column.cast(pl.String).str.strip_chars()
    cast = text.cast(dtype, strict=False)
    failed = text.is_not_null() & (text != "") & cast.is_null()
    if failed.any():
        index = int(failed.arg_true()[0])
        raise fail(index, text[index])
    return cast

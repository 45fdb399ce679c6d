"""Read side tables: item text (title, genres), user context, and id maps between files."""

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from logitrec.errors import InputError
from training.data.text import read_delimited, read_lines, read_table_columns, table_format

# ML-100k's u.genre, in flag order; used when u.genre is not beside u.item.
ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]

# Fixed-layout MovieLens side tables: separator and field names (the first is the id).
MOVIELENS_TABLES = {
    "movies.dat": ("::", ["item", "title", "genres"]),
    "users.dat": ("::", ["user", "gender", "age", "occupation", "zip_code"]),
    "u.user": ("|", ["user", "age", "gender", "occupation", "zip_code"]),
    "u.item": ("|", ["item", "title", "release_date", "video_release_date", "imdb_url"]),
}
# A MovieLens title ends with its release year: "Toy Story (1995)".
TITLE_YEAR = r"\((\d{4})\)\s*$"


@dataclass(frozen=True, kw_only=True)
class TableSource:
    """A side table (items or users) and how to read it."""

    path: Path
    id_col: str
    encoding: str | None = None  # None: latin-1 for MovieLens files, utf-8 otherwise


def read_side_table(source: TableSource, key: str) -> pl.DataFrame:
    """Read an items (`key="item"`) or users (`key="user"`) table.

    Returns the id as column `key` plus every other column as strings (a MovieLens items table
    also gets `year`, an integer parsed from the title, null when the title has none); ids
    repeat at most once.
    """
    path = Path(source.path)
    if not path.is_file():
        raise InputError(f"{path}: {key}s table not found (expected a file)")
    if path.name in MOVIELENS_TABLES:
        frame = _with_year(_read_movielens_table(path, source.encoding or "latin-1"))
    else:
        frame = _read_generic_table(path, source, key)
    if key not in frame.columns:
        raise InputError(f"{path}: this file is not a {key}s table (it has no {key} ids)")
    frame = frame.with_columns(external_ids(frame[key]).alias(key)).filter(
        pl.col(key).is_not_null()
    )
    duplicated = frame[key].is_duplicated()
    if duplicated.any():
        first = frame[key].filter(duplicated)[0]
        raise InputError(f"{path}: {key} id {first!r} appears more than once; ids must be unique")
    return frame


def _read_movielens_table(path: Path, encoding: str) -> pl.DataFrame:
    separator, fields = MOVIELENS_TABLES[path.name]
    parts = read_lines(path, encoding).drop_nulls().str.split(separator)
    if path.name == "u.item":
        flags = len(ML100K_GENRES)
        bad = parts.list.len() != len(fields) + flags
        _reject_bad_lines(path, bad, f"{len(fields) + flags} '|'-separated fields")
        names = _ml100k_genre_names(path)
        genres = parts.list.slice(len(fields), flags).list.eval(
            pl.element().cast(pl.Int8, strict=False) == 1
        )
        frame = pl.DataFrame({"parts": parts, "flags": genres}).select(
            *(pl.col("parts").list.get(i).alias(name) for i, name in enumerate(fields)),
            pl.col("flags")
            .list.eval(pl.element().arg_true())
            .list.eval(pl.element().replace_strict(dict(enumerate(names)), return_dtype=pl.String))
            .list.join("|")
            .alias("genres"),
        )
        return frame.drop("video_release_date", "imdb_url")
    bad = parts.list.len() != len(fields)
    _reject_bad_lines(path, bad, f"{len(fields)} {separator!r}-separated fields")
    return pl.DataFrame({"parts": parts}).select(
        pl.col("parts").list.get(i).alias(name) for i, name in enumerate(fields)
    )


def _with_year(frame: pl.DataFrame) -> pl.DataFrame:
    """The release year from the title, for filters on it in serving ("released after T")."""
    if "title" not in frame.columns:
        return frame
    year = pl.col("title").str.extract(TITLE_YEAR, 1).cast(pl.Int32, strict=False)
    return frame.with_columns(year.alias("year"))


def _ml100k_genre_names(item_path: Path) -> list[str]:
    genre_file = item_path.with_name("u.genre")
    if not genre_file.is_file():
        return ML100K_GENRES
    lines = read_lines(genre_file, "latin-1").drop_nulls()
    return [line.split("|")[0] for line in lines if line.strip()]


def _reject_bad_lines(path: Path, bad: pl.Series, expected: str) -> None:
    if bad.any():
        line = int(bad.arg_true()[0]) + 1
        raise InputError(f"{path}: line {line}: expected {expected}")


def _read_generic_table(path: Path, source: TableSource, key: str) -> pl.DataFrame:
    fmt = table_format(path)
    if fmt is None:
        raise InputError(f"{path}: expected a .csv, .tsv or .parquet {key}s table")
    encoding = source.encoding or "utf-8"
    columns = read_table_columns(path, fmt, encoding)
    if source.id_col not in columns:
        raise InputError(
            f"{path}: missing id column {source.id_col!r} (set by --{key}s-id-col); "
            f"the file has: {', '.join(columns)}"
        )
    if fmt == "parquet":
        frame = pl.read_parquet(path)
    else:
        frame = read_delimited(path, fmt, columns, encoding)
    others = [c for c in frame.columns if c != source.id_col]
    return frame.select(
        pl.col(source.id_col).alias(key), *(pl.col(c).cast(pl.String) for c in others)
    )


def read_id_map(path: Path) -> pl.DataFrame:
    """A two-column map, `from_id to_id` per line (whitespace- or comma-separated)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: id map not found (expected a file)")
    lines = read_lines(path, "utf-8").drop_nulls().str.strip_chars()
    parts = lines.str.replace_all(r"[,\s]+", " ").str.split_exact(" ", 1)
    frame = parts.struct.unnest()
    frame.columns = ["from_id", "to_id"]
    if frame["to_id"].null_count():
        line = int(frame["to_id"].is_null().arg_true()[0]) + 1
        raise InputError(f"{path}: line {line}: expected two ids separated by a space")
    frame = frame.select(external_ids(frame["from_id"]), external_ids(frame["to_id"]))
    for column in frame.columns:
        if frame[column].is_duplicated().any():
            value = frame[column].filter(frame[column].is_duplicated())[0]
            raise InputError(f"{path}: id {value!r} appears twice; the map must be one-to-one")
    return frame


def external_ids(column: pl.Series) -> pl.Series:
    """External ids: integers when every present value is one, trimmed strings otherwise."""
    if column.dtype.is_integer():
        return column.cast(pl.Int64)
    text = column.cast(pl.String).str.strip_chars()
    text = text.set(text == "", None) if (text == "").any() else text
    as_int = text.cast(pl.Int64, strict=False)
    # Integers only when nothing is lost: "007" and "7" must stay different ids.
    if as_int.null_count() == text.null_count() and (as_int.cast(pl.String) == text).all():
        return as_int
    return text


def align_id_types(left: pl.Series, right: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Make two id columns joinable: both integers, or both strings."""
    if left.dtype == right.dtype:
        return left, right
    return left.cast(pl.String), right.cast(pl.String)

"""Read delimited text with polars; encoding trouble becomes an error naming the line."""

import io
from pathlib import Path

import polars as pl

from logitrec.errors import InputError

SEPARATORS = {"csv": ",", "tsv": "\t"}
# A byte that does not occur in line-oriented data: it makes polars read each line as one field.
_NO_SEPARATOR = "\x1f"


def table_format(path: Path) -> str | None:
    """csv, tsv or parquet from the file name (also .csv.gz style names), else None."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    for fmt, endings in (("parquet", [".parquet", ".pq"]), ("csv", [".csv"]), ("tsv", [".tsv"])):
        if any(ending in suffixes for ending in endings):
            return fmt
    return None


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig", "ascii")


def _source(path: Path, encoding: str):
    """What polars should read: the path itself for UTF-8, else the file re-encoded as UTF-8."""
    if _is_utf8(encoding):
        return path
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except LookupError:
        raise InputError(f"--encoding: unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise _decode_error(path, encoding, line, data[error.start]) from None
    return io.BytesIO(text.encode("utf-8"))


def _decode_error(path: Path, encoding: str, line: int, bad_byte: int) -> InputError:
    return InputError(
        f"{path}: line {line} is not valid {encoding} (byte 0x{bad_byte:02x}); "
        "pass the file's encoding with --encoding (MovieLens .dat files are latin-1)"
    )


def _locate_bad_utf8(path: Path) -> InputError:
    """Only called after polars refused the file: find the first bad line for the message."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return _decode_error(path, "utf-8", number, line[error.start])
    return InputError(f"{path}: not valid utf-8; pass the file's encoding with --encoding")


def _polars_read(path: Path, encoding: str, **options) -> pl.DataFrame:
    try:
        return pl.read_csv(_source(path, encoding), **options)
    except pl.exceptions.ComputeError as error:
        if "utf-8" in str(error).lower() or "utf8" in str(error).lower():
            raise _locate_bad_utf8(path) from None
        raise InputError(f"{path}: cannot be read as {encoding} text: {error}") from None
    except (pl.exceptions.NoDataError, OSError) as error:
        raise InputError(f"{path}: cannot be read: {error}") from None


def read_lines(path: Path, encoding: str) -> pl.Series:
    """Every line of the file as a string (blank lines are null), in file order."""
    frame = _polars_read(
        path,
        encoding,
        has_header=False,
        separator=_NO_SEPARATOR,
        quote_char=None,
        schema={"line": pl.String},
        raise_if_empty=False,
    )
    return frame["line"]


def read_table_columns(path: Path, fmt: str, encoding: str) -> list[str]:
    """The column names of a CSV/TSV header or a Parquet schema."""
    if fmt == "parquet":
        try:
            return list(pl.read_parquet_schema(path))
        except Exception as error:
            raise InputError(f"{path}: not a readable Parquet file: {error}") from None
    header = _polars_read(path, encoding, separator=SEPARATORS[fmt], n_rows=0, infer_schema=False)
    if not header.columns:
        raise InputError(f"{path}: empty file, expected a header row with column names")
    return header.columns


def read_delimited(path: Path, fmt: str, columns: list[str], encoding: str) -> pl.DataFrame:
    """Selected columns of a CSV/TSV file, all as strings; short lines give nulls."""
    return _polars_read(
        path,
        encoding,
        separator=SEPARATORS[fmt],
        columns=columns,
        infer_schema=False,
        truncate_ragged_lines=True,
    )

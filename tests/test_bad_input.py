"""Bad input: one line naming the file, line or column, exit status 2, and nothing half-written."""

import polars as pl
from conftest import run_cli

LENIENT = ("--min-user-interactions", 1, "--min-item-interactions", 1)


def prepare_fails(source, out, *args) -> str:
    result = run_cli("data", "prepare", source, "--out", out, *args, check=False)
    assert result.returncode == 2, result.stderr
    assert not out.exists(), "a failed prepare must not leave an output directory"
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), "staging directory left behind"
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    assert "Traceback" not in result.stderr
    return message


def test_missing_column_names_it_and_lists_what_exists(tmp_path):
    (tmp_path / "log.csv").write_text("user,item\n1,2\n")
    message = prepare_fails(tmp_path / "log.csv", tmp_path / "out", "--user-col", "user")
    assert "log.csv" in message and "'item_id'" in message and "--item-col" in message
    assert "user, item" in message


def test_non_integer_timestamp_names_line_and_column(tmp_path):
    (tmp_path / "log.csv").write_text("user_id,item_id,ts\n1,2,100\n1,3,yesterday\n")
    message = prepare_fails(tmp_path / "log.csv", tmp_path / "out", "--time-col", "ts")
    assert "line 3" in message and "'ts'" in message and "'yesterday'" in message
    assert "integer" in message


def test_wrong_encoding_names_the_line_and_suggests_the_flag(tmp_path):
    (tmp_path / "log.csv").write_bytes(b"user_id,item_id\n1,2\n1,caf\xe9\n")
    message = prepare_fails(tmp_path / "log.csv", tmp_path / "out")
    assert "log.csv" in message and "line 3" in message and "--encoding" in message
    # And with the right encoding it reads.
    run_cli(
        "data",
        "prepare",
        tmp_path / "log.csv",
        "--out",
        tmp_path / "ok",
        "--encoding",
        "latin-1",
        *LENIENT,
        "-q",
    )


def test_unreadable_files(tmp_path):
    (tmp_path / "log.parquet").write_bytes(b"this is not parquet")
    message = prepare_fails(tmp_path / "log.parquet", tmp_path / "out")
    assert "log.parquet" in message and "Parquet" in message
    message = prepare_fails(tmp_path / "missing.csv", tmp_path / "out")
    assert "missing.csv" in message and "not found" in message
    (tmp_path / "empty.csv").write_text("")
    message = prepare_fails(tmp_path / "empty.csv", tmp_path / "out")
    assert "empty.csv" in message
    (tmp_path / "log.json").write_text("{}")
    message = prepare_fails(tmp_path / "log.json", tmp_path / "out")
    assert "--format" in message


def test_empty_result_after_filtering_says_why(tmp_path):
    (tmp_path / "log.csv").write_text("user_id,item_id\n1,2\n1,3\n2,2\n")
    message = prepare_fails(tmp_path / "log.csv", tmp_path / "out")
    assert "no interactions left" in message and "k-core removed 3" in message
    assert "--min-user-interactions (5)" in message


def test_bad_side_tables_and_maps(tmp_path):
    (tmp_path / "log.txt").write_text("1 1\n1 2\n")
    (tmp_path / "map.txt").write_text("1 10\n")
    message = prepare_fails(
        tmp_path / "log.txt", tmp_path / "out", "--item-map", tmp_path / "map.txt", *LENIENT
    )
    assert "map.txt" in message and "item id 2" in message
    pl.DataFrame({"id": [1, 2], "title": ["a", "b"]}).write_csv(tmp_path / "items.csv")
    message = prepare_fails(
        tmp_path / "log.txt", tmp_path / "out", "--items", tmp_path / "items.csv", *LENIENT
    )
    assert "items.csv" in message and "'item_id'" in message and "--items-id-col" in message


def test_temporal_split_without_timestamps(tmp_path):
    (tmp_path / "log.txt").write_text("1 1\n1 2\n1 3\n")
    message = prepare_fails(tmp_path / "log.txt", tmp_path / "out", "--split", "temporal", *LENIENT)
    assert "timestamps" in message and "sasrec" in message


def test_existing_output_needs_force_and_is_kept_on_failure(tmp_path):
    (tmp_path / "log.txt").write_text("1 1\n1 2\n1 3\n")
    out = tmp_path / "out"
    run_cli("data", "prepare", tmp_path / "log.txt", "--out", out, *LENIENT, "-q")
    before = (out / "manifest.json").read_text()
    result = run_cli("data", "prepare", tmp_path / "log.txt", "--out", out, *LENIENT, check=False)
    assert result.returncode == 2 and "--force" in result.stderr
    # A failing forced run leaves the old dataset as it was.
    (tmp_path / "bad.txt").write_text("")
    result = run_cli(
        "data", "prepare", tmp_path / "bad.txt", "--out", out, "--force", *LENIENT, check=False
    )
    assert result.returncode == 2
    assert (out / "manifest.json").read_text() == before


def test_export_without_a_checkpoint_names_the_flag():
    result = run_cli("export", check=False)
    assert result.returncode == 2 and "--checkpoint: required" in result.stderr


def test_stats_on_a_folder_that_is_not_a_dataset(tmp_path):
    result = run_cli("data", "stats", tmp_path, check=False)
    assert result.returncode == 2 and "manifest.json" in result.stderr

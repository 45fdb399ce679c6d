"""Each input format a user has, prepared end to end through the CLI on small files written here."""

import json

import polars as pl
from conftest import prepare_small, run_cli

from training.data.dataset import load_dataset


def external_sequences(dataset) -> dict[str, list[str]]:
    """user id -> item ids in the prepared order, in external ids (what a user checks by eye)."""
    item_ids = dataset.items.sort("item_index")["item_id"].to_list()
    user_ids = dataset.users.sort("user_index")["user_id"].to_list()
    return {
        user_ids[u - 1]: [item_ids[i - 1] for i in dataset.sequence(u)]
        for u in range(1, dataset.num_users + 1)
    }


def test_movielens_100k_folder_with_items_and_users(tmp_path):
    raw = tmp_path / "ml-100k"
    raw.mkdir()
    # u.data: user item rating timestamp, tab-separated, not sorted by time.
    rows = [(1, 10, 5, 300), (1, 20, 3, 100), (1, 30, 4, 200), (2, 10, 2, 50), (2, 30, 5, 60)]
    (raw / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    flags = {10: "0|1|0", 20: "0|0|1", 30: "0|1|1"}  # only the first 3 of 19 genre flags vary
    (raw / "u.item").write_bytes(
        "".join(
            f"{i}|Caf\u00e9 {i} (1995)|01-Jan-1995||http://x|{flags[i]}|{'|'.join(['0'] * 16)}\n"
            for i in (10, 20, 30)
        ).encode("latin-1")
    )
    (raw / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")

    prepare_small(raw, tmp_path / "ds")
    dataset = load_dataset(tmp_path / "ds")

    assert external_sequences(dataset) == {"1": ["20", "30", "10"], "2": ["10", "30"]}
    items = dataset.items.sort("item_id")
    assert items["title"].to_list() == [
        "Caf\u00e9 10 (1995)",
        "Caf\u00e9 20 (1995)",
        "Caf\u00e9 30 (1995)",
    ]
    assert items["genres"].to_list() == ["Action", "Adventure", "Action|Adventure"]
    assert items["year"].to_list() == [1995, 1995, 1995]
    users = dataset.users.sort("user_id")
    assert users["occupation"].to_list() == ["technician", "other"]
    assert dataset.manifest["source"]["interactions"]["format"] == "movielens-100k"


def test_movielens_ratings_dat_with_rating_filter_and_latin1_titles(tmp_path):
    raw = tmp_path / "ml"
    raw.mkdir()
    lines = ["1::1::5::10", "1::2::1::20", "1::3::4::30", "2::1::4::5", "2::3::5::6", "2::2::2::7"]
    (raw / "ratings.dat").write_text("\n".join(lines) + "\n")
    (raw / "movies.dat").write_bytes(
        "1::Am\u00e9lie (2001)::Comedy|Romance\n2::B (1999)::Drama\n3::C::Drama\n".encode("latin-1")
    )
    prepare_small(raw, tmp_path / "ds", "--min-rating", 4)
    dataset = load_dataset(tmp_path / "ds")
    assert external_sequences(dataset) == {"1": ["1", "3"], "2": ["1", "3"]}
    assert dataset.manifest["cleaning"]["filtered_by_rating"] == 2
    titles = dict(zip(dataset.items["item_id"], dataset.items["title"], strict=True))
    assert titles["1"] == "Am\u00e9lie (2001)"
    # The release year comes from the title; a title without one has none.
    years = dict(zip(dataset.items["item_id"], dataset.items["year"], strict=True))
    assert years == {"1": 2001, "3": None}


def test_generic_csv_with_named_columns_events_and_string_ids(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(
        "who,what,when,kind\n"
        "alice,apple,3,view\n"
        "alice,pear,1,view\n"
        "alice,plum,2,buy\n"
        "bob,apple,1,view\n"
        "bob,pear,1,view\n"  # same time as the line above: input order decides
        ",pear,9,view\n"  # malformed: no user
        "bob,plum,2,view\n"
        "bob,plum,2,view\n"  # exact duplicate
        "carol,apple,1,spam\n"
    )
    result = prepare_small(
        path,
        tmp_path / "ds",
        "--user-col",
        "who",
        "--item-col",
        "what",
        "--time-col",
        "when",
        "--event-col",
        "kind",
        "--keep-events",
        "view,buy",
        "--json",
    )
    manifest = json.loads(result.stdout)
    assert manifest["cleaning"]["malformed_rows"] == 1
    assert manifest["cleaning"]["duplicate_rows"] == 1
    assert manifest["cleaning"]["filtered_by_event"] == 1
    dataset = load_dataset(tmp_path / "ds")
    assert external_sequences(dataset) == {
        "alice": ["pear", "plum", "apple"],
        "bob": ["apple", "pear", "plum"],
    }
    # Indices follow the sorted external ids, so they do not depend on the row order.
    assert dataset.items.sort("item_index")["item_id"].to_list() == ["apple", "pear", "plum"]


def test_parquet_with_datetime_timestamps_and_tsv_with_order_column(tmp_path):
    frame = pl.DataFrame(
        {
            "user_id": [7, 7, 7, 8, 8, 8],
            "item_id": [1, 2, 3, 3, 2, 1],
            "timestamp": pl.Series(
                ["2024-01-03", "2024-01-01", "2024-01-02", "2024-01-01", "2024-01-02", "2024-01-03"]
            ).str.to_datetime("%Y-%m-%d"),
        }
    )
    frame.write_parquet(tmp_path / "log.parquet")
    prepare_small(tmp_path / "log.parquet", tmp_path / "p")
    dataset = load_dataset(tmp_path / "p")
    assert external_sequences(dataset) == {"7": ["2", "3", "1"], "8": ["3", "2", "1"]}
    assert dataset.timestamps[0] == 1704067200  # 2024-01-01 in seconds

    (tmp_path / "log.tsv").write_text("u\ti\tstep\nx\ta\t2\nx\tb\t1\nx\tc\t3\n")
    prepare_small(
        tmp_path / "log.tsv",
        tmp_path / "t",
        "--user-col",
        "u",
        "--item-col",
        "i",
        "--order-col",
        "step",
    )
    dataset = load_dataset(tmp_path / "t")
    assert external_sequences(dataset) == {"x": ["b", "a", "c"]}
    assert dataset.manifest["ordering"] == "order column"


def test_sasrec_text_keeps_file_order_and_maps_ids(tmp_path):
    (tmp_path / "log.txt").write_text("1 3\n1 1\n1 2\n2 2\n2 3\n2 1\n")
    (tmp_path / "items.map").write_text("1 100\n2 200\n3 300\n")
    prepare_small(tmp_path / "log.txt", tmp_path / "ds", "--item-map", tmp_path / "items.map")
    dataset = load_dataset(tmp_path / "ds")
    assert external_sequences(dataset) == {"1": ["300", "100", "200"], "2": ["200", "300", "100"]}
    assert dataset.timestamps is None


def test_one_user_per_line_sequences_load_in_line_order(tmp_path):
    # The S3Rec / RecBole layout: "user item item ...", items oldest first; told apart from
    # "user item" lines by the file itself. A user without items is a malformed row.
    (tmp_path / "Beauty.txt").write_text("u1 30 10 20\nu2 20  30\tq\nu3\n")
    prepare_small(tmp_path / "Beauty.txt", tmp_path / "ds")
    dataset = load_dataset(tmp_path / "ds")
    assert external_sequences(dataset) == {"u1": ["30", "10", "20"], "u2": ["20", "30", "q"]}
    assert dataset.manifest["source"]["interactions"]["format"] == "sequences"
    assert dataset.manifest["cleaning"]["malformed_rows"] == 1
    # With --format it is read as asked; a user on two lines gets both, in file order.
    (tmp_path / "two.txt").write_text("u1 30\nu2 5\nu1 10 20\n")
    prepare_small(tmp_path / "two.txt", tmp_path / "ds2", "--format", "sequences")
    assert external_sequences(load_dataset(tmp_path / "ds2"))["u1"] == ["30", "10", "20"]


def test_a_file_mostly_not_in_its_layout_is_refused_naming_the_line_and_layouts(tmp_path):
    (tmp_path / "log.txt").write_text("u1,7\nu1,8\nu2,7\n")  # a CSV named .txt
    result = run_cli("data", "prepare", tmp_path / "log.txt", "--out", tmp_path / "ds", check=False)
    assert result.returncode == 2
    assert "3 of 3 lines are not in the sasrec layout" in result.stderr
    assert "line 1 reads 'u1,7'" in result.stderr and "sequences" in result.stderr
    assert not (tmp_path / "ds").exists()


def test_prepare_reports_the_users_and_items_the_k_core_removed(tmp_path):
    lines = [f"u{u} {' '.join(f'i{i}' for i in range(5))}" for u in range(5)]
    (tmp_path / "log.txt").write_text("\n".join([*lines, "lone i0 i1 i9"]) + "\n")
    result = run_cli("data", "prepare", tmp_path / "log.txt", "--out", tmp_path / "ds")
    cleaning = load_dataset(tmp_path / "ds").manifest["cleaning"]
    assert (cleaning["kcore_removed_users"], cleaning["kcore_removed_items"]) == (1, 1)
    assert "k-core 5/5 removed" in result.stdout and "1 users, 1 items" in result.stdout


def test_ids_with_leading_zeros_stay_distinct(tmp_path):
    (tmp_path / "log.csv").write_text("user_id,item_id\nu,007\nu,7\nu,0007\n")
    prepare_small(tmp_path / "log.csv", tmp_path / "ds")
    dataset = load_dataset(tmp_path / "ds")
    assert external_sequences(dataset) == {"u": ["007", "7", "0007"]}

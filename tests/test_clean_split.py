"""The pure cores: cleaning, k-core to a fixed point, and both splits."""

import numpy as np
import polars as pl
import pytest

from logitrec.errors import InputError
from training.data.clean import CleanOptions, clean, k_core_mask
from training.data.split import SplitOptions, leave_one_out, temporal


def naive_k_core(pairs: list[tuple[int, int]], min_user: int, min_item: int) -> set[int]:
    """Reference: drop rows one pass at a time with Python counters until nothing changes."""
    alive = set(range(len(pairs)))
    while True:
        users, items = {}, {}
        for row in alive:
            users[pairs[row][0]] = users.get(pairs[row][0], 0) + 1
            items[pairs[row][1]] = items.get(pairs[row][1], 0) + 1
        kept = {
            r for r in alive if users[pairs[r][0]] >= min_user and items[pairs[r][1]] >= min_item
        }
        if kept == alive:
            return alive
        alive = kept


@pytest.mark.parametrize("seed", range(5))
def test_k_core_matches_reference_and_is_a_fixed_point(seed):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 60, size=800)
    items = (rng.zipf(1.6, size=800) - 1) % 90
    keep, iterations = k_core_mask(users, items, 5, 4)
    assert set(np.flatnonzero(keep)) == naive_k_core(list(zip(users, items, strict=True)), 5, 4)
    assert np.all(np.bincount(users[keep])[np.unique(users[keep])] >= 5)
    assert np.all(np.bincount(items[keep])[np.unique(items[keep])] >= 4)
    assert iterations >= 2  # this data needs more than one pass: the iteration matters


def test_k_core_cascades_through_users_and_items():
    # Items 9 and 8 have one interaction each. Dropping them leaves users 2 and 4 with one
    # interaction each (item 7), so a second pass must remove those too.
    frame = pl.DataFrame(
        {
            "user": [1, 1, 2, 2, 3, 3, 4, 4],
            "item": [5, 6, 9, 7, 5, 6, 7, 8],
            "row": range(8),
        }
    )
    kept, report = clean(frame, CleanOptions(min_user_interactions=2, min_item_interactions=2))
    assert sorted(zip(kept["user"], kept["item"], strict=True)) == [(1, 5), (1, 6), (3, 5), (3, 6)]
    assert report.kcore_removed_rows == 4
    assert report.kcore_iterations == 3  # two passes that remove, one that confirms


def test_clean_orders_stably_and_dedupes():
    frame = pl.DataFrame(
        {
            "user": [1, 1, 1, 1, 1],
            "item": [10, 11, 12, 11, 10],
            "timestamp": [5, 5, 1, 5, 9],
            "row": range(5),
        }
    )
    lenient = CleanOptions(min_user_interactions=1, min_item_interactions=1)
    kept, report = clean(frame, lenient)
    # Ties at t=5 keep input order; (user 1, item 11, t=5) twice is an exact duplicate.
    assert kept["item"].to_list() == [12, 10, 11, 10]
    assert report.duplicate_rows == 1
    kept, _ = clean(
        frame, CleanOptions(dedup="first", min_user_interactions=1, min_item_interactions=1)
    )
    assert kept["item"].to_list() == [12, 10, 11]
    kept, _ = clean(
        frame, CleanOptions(dedup="none", min_user_interactions=1, min_item_interactions=1)
    )
    assert kept.height == 5


def test_without_timestamps_only_back_to_back_repeats_are_duplicates():
    frame = pl.DataFrame({"user": [1, 1, 1, 1], "item": [3, 3, 4, 3], "row": range(4)})
    kept, report = clean(frame, CleanOptions(min_user_interactions=1, min_item_interactions=1))
    assert kept["item"].to_list() == [3, 4, 3]
    assert report.duplicate_rows == 1


def test_leave_one_out_positions():
    split = leave_one_out(np.array([5, 3, 2]))
    assert split.train_end.tolist() == [3, 1, 2]
    assert split.valid_position.tolist() == [3, 1, -1]
    assert split.test_position.tolist() == [4, 2, -1]


def test_temporal_split_uses_global_cutoffs():
    # user 1: t=1,2,3,8 ; user 2: t=4,6,9 ; user 3: t=7,9 (no history before the valid cut-off)
    lengths = np.array([4, 3, 2])
    timestamps = np.array([1, 2, 3, 8, 4, 6, 9, 7, 9])
    split = temporal(
        lengths, timestamps, SplitOptions(kind="temporal", valid_cutoff=5, test_cutoff=8)
    )
    assert split.train_end.tolist() == [3, 1, 0]
    assert split.valid_position.tolist() == [-1, 1, -1]  # user 2's t=6 is in [5, 8)
    assert split.test_position.tolist() == [3, 2, 1]  # first event at or after t=8
    assert split.cutoffs == {"valid": 5, "test": 8}


def test_temporal_fractions_are_checked():
    with pytest.raises(InputError, match="--test-fraction"):
        temporal(np.array([2]), np.array([1, 2]), SplitOptions(kind="temporal", test_fraction=1.5))

"""The shared ML-1M folder (SASRec benchmark file) prepares to the published counts."""

import json

import numpy as np
from conftest import run_cli

from training.data.dataset import load_dataset


def test_ml1m_counts_split_and_order(ml1m_dir, tmp_path):
    out = tmp_path / "ml-1m"
    run_cli("data", "prepare", ml1m_dir, "--out", out, "-q")
    stats = json.loads(run_cli("data", "stats", out, "--json").stdout)
    assert (stats["users"], stats["items"], stats["interactions"]) == (6040, 3416, 999_611)
    assert stats["split"]["kind"] == "leave-one-out"
    assert stats["split"]["test_targets"] == 6040
    assert stats["split"]["valid_targets"] == 6040
    assert stats["sequence_length"]["min"] == 18 and stats["sequence_length"]["max"] == 2277

    dataset = load_dataset(out)
    # Every item has its MovieLens title, and users carry their context.
    assert dataset.items["title"].null_count() == 0
    assert set(dataset.users.columns) >= {"gender", "age", "occupation"}

    # User 1's sequence is the file's order, mapped to MovieLens ids.
    sas_to_movie = dict(
        line.split() for line in (ml1m_dir / "sas_to_original_items.txt").read_text().splitlines()
    )
    sas_to_user = dict(
        line.split() for line in (ml1m_dir / "sas_to_original_users.txt").read_text().splitlines()
    )
    first_user_items = []
    with open(ml1m_dir / "ml-1m.txt") as handle:
        for line in handle:
            user, item = line.split()
            if user != "1":
                break
            first_user_items.append(sas_to_movie[item])
    user_index = dataset.users.filter(dataset.users["user_id"] == sas_to_user["1"])["user_index"][0]
    item_ids = dataset.items.sort("item_index")["item_id"].to_numpy()
    assert item_ids[dataset.sequence(user_index) - 1].tolist() == first_user_items
    # Leave-one-out: the test target is the last item, its history everything before it.
    assert dataset.split.test_position[user_index - 1] == len(first_user_items) - 1
    assert np.all(dataset.split.test_position == dataset.lengths - 1)

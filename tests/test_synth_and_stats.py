"""The synthetic generator is seeded, well-formed, and learnable; stats report the right numbers."""

import json

import numpy as np
from conftest import prepare_small, run_cli

from training.data.dataset import load_dataset
from training.data.synth import SynthOptions, generate


def hit_rate_at_10(dataset, scores_for_user) -> float:
    """Leave-one-out test HR@10 with seen items excluded, for a scoring function."""
    hits = 0
    users = np.flatnonzero(dataset.split.test_position >= 0) + 1
    for user in users:
        sequence = dataset.sequence(user)
        position = dataset.split.test_position[user - 1]
        history, target = sequence[:position], sequence[position]
        scores = scores_for_user(history).astype(float)
        scores[0] = -np.inf
        scores[history] = -np.inf
        hits += target in np.argpartition(-scores, 10)[:10]
    return hits / len(users)


def test_synthetic_data_is_learnable_beyond_popularity(tmp_path):
    run_cli("data", "synth", "--out", tmp_path / "raw", "--users", 1500, "--items", 400)
    run_cli("data", "prepare", tmp_path / "raw", "--out", tmp_path / "ds", "-q")
    dataset = load_dataset(tmp_path / "ds")
    n = dataset.num_items + 1
    train = [
        dataset.sequence(u)[: dataset.split.train_end[u - 1]]
        for u in range(1, dataset.num_users + 1)
    ]
    popularity = np.bincount(np.concatenate(train), minlength=n)
    transitions = np.zeros((n, n))
    for sequence in train:
        np.add.at(transitions, (sequence[:-1], sequence[1:]), 1)

    popular = hit_rate_at_10(dataset, lambda history: popularity)
    markov = hit_rate_at_10(dataset, lambda history: transitions[history[-1]] + 1e-3 * popularity)
    assert markov > 2 * popular, (markov, popular)
    assert markov > 0.3


def test_synth_is_seeded_and_carries_titles_and_context():
    options = SynthOptions(users=50, items=40, clusters=4, seed=3)
    first, again = generate(options), generate(options)
    assert first["interactions"].equals(again["interactions"])
    assert not first["interactions"].equals(
        generate(SynthOptions(users=50, items=40, clusters=4, seed=4))["interactions"]
    )
    items = first["items"]
    # An item's genre (its latent cluster's theme) is in its title: text carries signal.
    assert all(genre in title for title, genre in zip(items["title"], items["genres"], strict=True))
    assert set(first["users"].columns) == {"user_id", "gender", "age", "occupation"}
    lengths = first["interactions"].group_by("user_id").len()["len"]
    assert lengths.min() >= options.min_length
    timestamps = first["interactions"]["timestamp"].to_numpy()
    users = first["interactions"]["user_id"].to_numpy()
    assert np.all(np.diff(timestamps)[np.diff(users) == 0] > 0), "time increases within a user"


def test_stats_json_matches_the_dataset(tmp_path):
    (tmp_path / "log.csv").write_text(
        "user_id,item_id,timestamp\n"
        + "".join(f"{u},{i},{u * 100 + i}\n" for u in range(1, 5) for i in range(1, u + 3))
    )
    prepare_small(tmp_path / "log.csv", tmp_path / "ds")
    stats = json.loads(run_cli("data", "stats", tmp_path / "ds", "--json").stdout)
    # Users have 3, 4, 5 and 6 interactions.
    assert (stats["users"], stats["items"], stats["interactions"]) == (4, 6, 18)
    assert stats["sequence_length"]["min"] == 3 and stats["sequence_length"]["max"] == 6
    assert stats["sequence_length"]["p50"] == 4.5
    assert stats["split"] == {
        "kind": "leave-one-out",
        "train_users": 4,
        "train_interactions": 18 - 8,
        "valid_targets": 4,
        "test_targets": 4,
        "cutoffs": None,
    }
    # The readable form prints the same numbers.
    assert "18" in run_cli("data", "stats", tmp_path / "ds").stdout

"""Evaluation that scales to large catalogs: the fast ranks equal a full sort's, the popularity
baseline's per-user shortcut equals masking a full row, and a sampled evaluation reports an
interval that holds the full-population value."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import run_cli

from training import evaluate, metrics
from training.batches import left_padded
from training.evaluate import (
    model_scores,
    rank_targets,
    sample_users,
    shared_score_ranks,
    summarize,
)
from training.metrics import confidence_intervals, ranking_metrics

NUM_ITEMS = 30
MAX_LENGTH = 6


def random_rows(rng: np.random.Generator, users: int) -> dict[str, np.ndarray]:
    """Evaluation rows as `evaluation_rows` builds them, with repeated items in histories and
    some targets the user has already seen."""
    lengths = rng.integers(1, 12, size=users)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    seen = rng.integers(1, NUM_ITEMS + 1, size=offsets[-1])
    targets = rng.integers(1, NUM_ITEMS + 1, size=users)
    repeat = rng.random(users) < 0.2
    targets[repeat] = seen[offsets[1:][repeat] - 1]  # the newest seen item again
    return {
        "users": np.arange(users),
        "histories": left_padded(seen, offsets[:-1], offsets[1:], MAX_LENGTH),
        "targets": targets,
        "seen_offsets": offsets,
        "seen_items": seen,
    }


def sorted_ranks(scores: torch.Tensor, rows: dict[str, np.ndarray]) -> np.ndarray:
    """The reference: mask seen items, sort every row in full, and take the first position
    holding the target's score (ties counted in the target's favour)."""
    scores = scores.clone().numpy().astype(np.float64)
    ranks = []
    for row, target in enumerate(rows["targets"]):
        begin, end = rows["seen_offsets"][row], rows["seen_offsets"][row + 1]
        scores[row, rows["seen_items"][begin:end] - 1] = -np.inf
        ranked = scores[row, np.argsort(-scores[row], kind="stable")]
        ranks.append(int(np.flatnonzero(ranked == scores[row, target - 1])[0]))
    return np.array(ranks)


class FixedVectors:
    """Stands in for the model behind ModelScores: user vectors and a head of small multiples
    of 1/4, so every logit is exact whatever the order of the GEMM's sums, and items come in
    groups with identical vectors and bias, so their logits tie exactly. A user's vector is
    looked up by its context index (the row number)."""

    def __init__(self, rng: np.random.Generator, users: int, tied_groups: int = 7) -> None:
        self.num_items = NUM_ITEMS
        self.vectors = torch.as_tensor(
            rng.integers(-4, 5, size=(users, 8)) / 4, dtype=torch.float32
        )
        groups = rng.integers(-4, 5, size=(tied_groups, 8)) / 4
        member = np.arange(NUM_ITEMS) % tied_groups
        self.weight = torch.as_tensor(groups[member], dtype=torch.float32)
        self.bias = torch.as_tensor(np.linspace(-1, 1, tied_groups)[member] // 0.25 * 0.25)

    def user_vectors(self, histories: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.vectors[context[:, 0]]

    def head(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight, self.bias.float()

    def logits(self) -> torch.Tensor:
        return self.vectors @ self.weight.T + self.bias.float()


def test_model_ranks_equal_a_full_sort_with_ties_and_seen_targets(monkeypatch):
    rng = np.random.default_rng(1)
    rows = random_rows(rng, users=40)
    model = FixedVectors(rng, users=40)
    context = np.arange(40)[:, None]
    expected = sorted_ranks(model.logits(), rows)
    assert len(set(model.logits()[0].tolist())) < NUM_ITEMS  # the case does have ties
    order = np.arange(40)
    ranks = rank_targets(model_scores(model, context, "cpu"), rows, order, batch_size=16)
    assert ranks.tolist() == expected.tolist()
    # A catalog too large for the score buffer evaluates fewer users per batch, same ranks.
    monkeypatch.setattr(evaluate, "SCORE_BUFFER_BYTES", 4 * NUM_ITEMS * 3)
    assert evaluate.scoring_batch_size(16, NUM_ITEMS) == 3
    ranks = rank_targets(model_scores(model, context, "cpu"), rows, order[::-1], batch_size=16)
    assert ranks.tolist() == expected[::-1].tolist()


def test_any_score_function_ranks_equal_a_full_sort_on_integer_scores():
    rng = np.random.default_rng(2)
    rows = random_rows(rng, users=50)
    scores = torch.as_tensor(rng.integers(0, 5, size=(50, NUM_ITEMS)), dtype=torch.float32)
    expected = sorted_ranks(scores, rows)

    def score(histories, users):
        return scores[users].clone()

    assert rank_targets(score, rows, np.arange(50), batch_size=8).tolist() == expected.tolist()


def test_popularity_ranks_equal_masking_each_users_full_row():
    rng = np.random.default_rng(3)
    rows = random_rows(rng, users=200)
    counts = rng.integers(0, 6, size=NUM_ITEMS).astype(np.float32)  # many tied counts
    expected = sorted_ranks(torch.as_tensor(counts).expand(200, -1), rows)
    assert shared_score_ranks(counts, rows, np.arange(200)).tolist() == expected.tolist()
    subset = np.array([5, 17, 199])
    assert shared_score_ranks(counts, rows, subset).tolist() == expected[subset].tolist()


def population_ranks(users: int = 20_000) -> np.ndarray:
    """Ranks like a fair model's: a third of the targets in the top 20, a long tail after."""
    return np.random.default_rng(4).geometric(0.02, size=users) - 1


def test_sampled_intervals_hold_the_full_value_95_times_in_100_and_narrow_with_more_users():
    ranks = population_ranks()
    full = ranking_metrics(ranks)
    widths = {}
    for count in (500, 4000):
        covered, width = {name: 0 for name in full}, []
        for seed in range(200):
            sample = sample_users(np.arange(len(ranks)), count, seed)
            metrics = summarize(ranks[sample.rows], sample)
            for name, value in full.items():
                low, high = metrics["ci95"][name]
                assert low <= metrics[name] <= high
                covered[name] += low <= value <= high
            width.append(metrics["ci95"]["ndcg@10"][1] - metrics["ci95"]["ndcg@10"][0])
        assert metrics["users"] == count and metrics["sample"]["population"] == len(ranks)
        for name, hits in covered.items():
            # The normal approximation under-covers skewed MRR a little at 500 users (~92%).
            assert 0.88 <= hits / 200 <= 0.99, (name, count, hits)
        widths[count] = np.mean(width)
    assert widths[4000] < widths[500] / 2  # sqrt(8) narrower, and a fifth of the population


def test_the_same_seed_draws_the_same_sample_and_all_users_means_no_sample():
    candidates = np.arange(100, 1100)
    first, again = sample_users(candidates, 50, seed=3), sample_users(candidates, 50, seed=3)
    assert first.rows.tolist() == again.rows.tolist()
    assert set(first.rows) <= set(candidates) and len(set(first.rows)) == 50
    assert sample_users(candidates, 1000, seed=3) is None
    assert sample_users(candidates, None, seed=3) is None
    # Sampling every user leaves no uncertainty (finite-population correction).
    ranks = population_ranks(1000)
    low, high = confidence_intervals(ranks, population=1000)["hr@10"]
    assert low == high == pytest.approx(ranking_metrics(ranks)["hr@10"])


def test_eval_users_below_two_is_refused_before_anything_loads(tmp_path):
    result = run_cli(
        "evaluate",
        "--data",
        tmp_path / "none",
        "--checkpoint",
        tmp_path / "none",
        "--eval-users",
        1,
        check=False,
    )
    assert result.returncode == 2 and "--eval-users" in result.stderr, result.stderr


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A one-epoch run on a small synthetic dataset, its final evaluation on 150 users."""
    root = tmp_path_factory.mktemp("sampled")
    synth = ("--users", 300, "--items", 40, "--clusters", 4, "--mean-length", 12)
    run_cli("data", "synth", "--out", root / "raw", *synth)
    run_cli("data", "prepare", root / "raw", "--out", root / "ds", "-q")
    size = ("--max-length", 10, "--hidden-size", 16, "--num-heads", 2, "--epochs", 1, "-q")
    run_cli("train", "--data", root / "ds", "--out", root / "ckpt", "--eval-users", 150, *size)
    return root / "ds", root / "ckpt"


def test_train_and_evaluate_record_the_sample_and_its_intervals(small_run):
    data, checkpoint = small_run
    metrics = json.loads((checkpoint / "metrics.json").read_text())
    test = metrics["test"]
    assert test["users"] == 150 and test["sample"]["population"] == 300
    assert test["sample"]["seed"] == 42  # the run's --seed
    assert test["ci95"]["ndcg@10"][0] <= test["ndcg@10"] <= test["ci95"]["ndcg@10"][1]
    assert metrics["baselines"]["most_popular"]["test"]["users"] == 150
    sampled = json.loads(
        run_cli("evaluate", "--data", data, "--checkpoint", checkpoint, "--eval-users", 150).stdout
    )
    # The same seed draws the same users, so `evaluate` reproduces the run's figures.
    assert sampled["ndcg@10"] == pytest.approx(test["ndcg@10"], abs=1e-6)
    assert sampled["ci95"]["hr@10"] == pytest.approx(test["ci95"]["hr@10"], abs=1e-6)
    # Beyond accuracy, next to the ranking metrics: the synthetic items have genres.
    for name in ("coverage@10", "gini@10", "tail_share@10", "ild_genre@10", "ild_vector@10"):
        assert 0 <= sampled[name] <= 1, name
    assert sampled["avg_popularity@10"] > 0


def test_top_columns_find_each_rows_best_scores_across_short_blocks():
    rng = np.random.default_rng(5)
    scores = torch.as_tensor(rng.normal(size=(20, 1000)), dtype=torch.float32)
    scores[3, :990] = -torch.inf  # a row whose best lie in the short last block
    scores[4, :] = 0.5  # every column tied
    for block in (64, 256):  # 1000 = 15 x 64 + 40: a short last block
        columns = metrics.top_columns(scores, 10, block=block)
        assert columns.shape == (20, 10)
        expected = scores.topk(10, dim=1).values
        assert torch.equal(scores.gather(1, columns), expected)
        assert all(len(set(row)) == 10 for row in columns.tolist())


def test_lists_come_from_the_same_pass_as_the_ranks_and_skip_seen_items():
    rng = np.random.default_rng(6)
    rows = random_rows(rng, users=40)
    model = FixedVectors(rng, users=40)
    context = np.arange(40)[:, None]
    order = np.arange(40)
    ranks, lists = evaluate.rank_and_list(
        model_scores(model, context, "cpu"), rows, order, batch_size=16, list_length=5
    )
    assert ranks.tolist() == sorted_ranks(model.logits(), rows).tolist()
    logits = model.logits().numpy()
    for row, listed in enumerate(lists):
        seen = set(rows["seen_items"][rows["seen_offsets"][row] : rows["seen_offsets"][row + 1]])
        unseen = [i for i in range(1, NUM_ITEMS + 1) if i not in seen]
        best = sorted((logits[row, i - 1] for i in unseen), reverse=True)[:5]
        assert [logits[row, i - 1] for i in listed] == best  # best first; ties in any order
        assert not seen & set(listed.tolist())


def recbole_gini(lists: np.ndarray, num_items: int) -> float:
    """RecBole's GiniIndex, as it computes it (counts of the recommended items only)."""
    counts = np.array(sorted(Counter(lists.flatten().tolist()).values()))
    index = np.arange(num_items - len(counts) + 1, num_items + 1)
    return float(np.sum((2 * index - num_items - 1) * counts) / lists.size / num_items)


def test_list_metrics_on_lists_worked_by_hand():
    popularity = np.array([50, 40, 30, 20, 10, 0, 0, 0, 0, 0])  # items 1..10
    lists = np.array([[1, 2, 3], [1, 2, 6], [1, 4, 7]])
    genres = metrics.GenreSets(["A", "A|B", "B", "C", None, "C", "A", None, None, None])
    vectors = np.zeros((10, 2))
    vectors[[0, 1, 2, 3, 5, 6]] = [[1, 0], [1, 0], [0, 1], [0, 1], [-1, 0], [1, 1]]
    got = metrics.list_metrics(lists, popularity, vectors=vectors, genres=genres)
    assert got["coverage@3"] == pytest.approx(6 / 10)
    assert got["gini@3"] == pytest.approx(recbole_gini(lists, 10))
    # The least popular 80%: items 3..10 (counts 30 and below, ties by index).
    assert got["tail_share@3"] == pytest.approx(np.mean([1 / 3, 1 / 3, 2 / 3]))
    assert got["avg_popularity@3"] == pytest.approx(np.mean([40, 30, 70 / 3]))
    # Genre Jaccard distances: list 1 {A},{A,B},{B}: 1/2, 1, 1/2; list 2 {A},{A,B},{C}: 1/2,
    # 1, 1; list 3 {A},{C},{A}: 1, 0, 1.
    assert got["ild_genre@3"] == pytest.approx(np.mean([2 / 3, 5 / 6, 2 / 3]))
    # Cosine distances: list 1: 0, 1, 1; list 2: 0, 2, 2; list 3: 1, 1 - 1/sqrt 2, 1 - 1/sqrt 2.
    third = (1 + 2 * (1 - 1 / np.sqrt(2))) / 3
    assert got["ild_vector@3"] == pytest.approx(np.mean([2 / 3, 4 / 3, third]))
    # One item recommended to everyone is as unequal as it gets; every item equally, not.
    assert metrics.gini_index(np.ones((5, 1), np.int64), 10) == pytest.approx(0.9)
    assert metrics.gini_index(np.arange(1, 11)[:, None], 10) == pytest.approx(0.0)

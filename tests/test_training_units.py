"""Pure cores of training: metrics on a hand-computed example, batching, the model's contracts."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from training.averaging import WeightAverage
from training.batches import (
    left_padded,
    length_bucketed_batches,
    training_windows,
    validation_subset,
    with_validation_items,
)
from training.config import ModelConfig, TrainConfig, load_config
from training.evaluate import evaluate_scores
from training.metrics import ranking_metrics, target_ranks
from training.model import LogitLM, build_backbone, scratch_backbone_config
from training.trainer import learning_rate_factor, training_ends


def test_metrics_match_a_hand_computed_example():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.3],  # target 0 is first: rank 0
            [0.9, 0.1, 0.5, 0.3],  # target 2 is second: rank 1
            [0.9, 0.1, 0.5, 0.3],  # target 1 is last: rank 3
        ]
    )
    ranks = target_ranks(scores, torch.tensor([0, 2, 1])).numpy()
    assert ranks.tolist() == [0, 1, 3]
    metrics = ranking_metrics(np.array([0, 1, 3, 9, 10, 25]))
    assert metrics["hr@10"] == pytest.approx(4 / 6)
    assert metrics["ndcg@10"] == pytest.approx(
        (1 + 1 / math.log2(3) + 1 / math.log2(5) + 1 / math.log2(11)) / 6
    )
    assert metrics["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 10) / 6)
    assert metrics["hr@20"] == pytest.approx(5 / 6)
    assert metrics["ndcg@20"] == pytest.approx(
        (1 + 1 / math.log2(3) + 1 / math.log2(5) + 1 / math.log2(11) + 1 / math.log2(12)) / 6
    )


def test_seen_items_are_excluded_from_the_ranking():
    # One user, 5 items; history is items 1 and 2, the target is item 3.
    rows = {
        "users": np.array([0]),
        "histories": np.array([[0, 1, 2]]),
        "targets": np.array([3]),
        "seen_offsets": np.array([0, 2]),
        "seen_items": np.array([1, 2]),
    }

    def favour_history(histories, users):
        return torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])  # items 1..5

    assert evaluate_scores(favour_history, rows)["ndcg@10"] == 1.0  # rank 0 once 1, 2 are out
    kept = evaluate_scores(favour_history, rows, exclude_seen=False)
    assert kept["ndcg@10"] == pytest.approx(1 / math.log2(4))  # rank 2


def test_left_padding_keeps_the_newest_items():
    flat = np.array([1, 2, 3, 4, 5, 6, 7])
    padded = left_padded(flat, starts=np.array([0, 4]), ends=np.array([4, 6]), width=3)
    assert padded.tolist() == [[2, 3, 4], [0, 5, 6]]


def test_bucketed_batches_cover_every_row_once_with_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=1000)
    batches = length_bucketed_batches(lengths, 32, rng, bucket_batches=8)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 60  # random batches of 32 would span ~190


def two_user_log(lengths=(12, 3)) -> SimpleNamespace:
    """The parts of a Dataset that training_windows reads: leave-one-out over items 1.."""
    lengths = np.array(lengths)
    return SimpleNamespace(
        item_indices=np.arange(1, lengths.sum() + 1),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        split=SimpleNamespace(train_end=lengths - 2, valid_position=lengths - 2),
    )


def test_all_windows_train_on_every_transition_of_a_long_history_once():
    log = two_user_log()
    newest, newest_targets, newest_users = training_windows(log, width=4)
    inputs, targets, users = training_windows(log, width=4, older=True)
    # User 1 has one training item: nothing to predict. User 0's 10 training items hold 9
    # transitions: windows of 4, 4 and 1 going back in time, the newest one first.
    assert newest_users.tolist() == [0] and users.tolist() == [0, 0, 0]
    assert (inputs[0] == newest[0]).all() and (targets[0] == newest_targets[0]).all()
    pairs = [
        (i, t) for row in range(3) for i, t in zip(inputs[row], targets[row], strict=True) if t
    ]
    assert sorted(pairs) == [(item, item + 1) for item in range(1, 10)]


def test_users_outside_the_validation_subset_train_on_their_validation_item_only():
    log = two_user_log(lengths=(12, 3, 6))  # items 1-12, 13-15, 16-21; the last of each is test
    first_item = log.offsets[:-1] + 1
    valid_items = first_item + log.split.valid_position
    test_items = first_item + log.split.valid_position + 1
    # User 0 is validated on; users 1 and 2 are not, so their validation item trains.
    train_end = with_validation_items(log.split, np.array([1, 2]))
    assert train_end.tolist() == [10, 2, 5] and log.split.train_end.tolist() == [10, 1, 4]
    _, targets, users = training_windows(log, width=4, older=True, train_end=train_end)
    trained = set(targets[targets != 0].tolist())
    assert set(valid_items[1:].tolist()) <= trained  # 15 and 20
    assert valid_items[0] not in trained  # the validated user's target stays unseen
    assert not trained & set(test_items.tolist())  # no test target ever trains
    assert 1 in users.tolist()  # a 3-item history now has a transition to learn


def test_only_users_outside_the_validation_subset_and_only_when_asked_train_on_it():
    log = two_user_log(lengths=(12, 3, 6))
    rows = {"users": np.array([0, 1, 2])}
    validated = np.array([1])  # row 1 of the validation split: user 1
    asked = TrainConfig(valid_users=1, train_valid_items=True)
    assert training_ends(log, asked, rows, validated).tolist() == [11, 1, 5]
    assert training_ends(log, TrainConfig(valid_users=1), rows, validated).tolist() == [10, 1, 4]
    assert training_ends(log, asked, rows, None).tolist() == [10, 1, 4]  # everyone validates


def test_validation_subset_is_fixed_by_the_seed_and_all_users_when_not_smaller():
    first, again = validation_subset(100, 10, seed=3), validation_subset(100, 10, seed=3)
    assert first.tolist() == again.tolist() == sorted(set(first.tolist()))
    assert len(first) == 10 and first.max() < 100
    assert validation_subset(100, 100, seed=3) is None
    assert validation_subset(100, None, seed=3) is None and validation_subset(100, 0, 3) is None


def test_weight_average_follows_the_weights_and_swaps_in_and_out():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    for _ in range(200):
        average.update()
    own = model.weight.detach().clone()
    with average.swapped_in():
        # Long after the change the average has caught up with the new weights.
        assert torch.allclose(model.weight, own, atol=1e-6)
    with torch.no_grad():
        model.weight.copy_(start)
    average.update()  # one step at decay 0.9 moves 10% of the way back
    with average.swapped_in():
        assert torch.allclose(model.weight, own - 0.1, atol=1e-5)
    assert torch.equal(model.weight, start)  # the model's own weights came back
    restored = WeightAverage(model, decay=0.9)
    restored.load_state(average.state())
    assert restored.updates == 201
    assert all(torch.equal(a, b) for a, b in zip(restored.average, average.average, strict=True))


def test_attention_dropout_defaults_to_dropout_and_can_be_set_apart():
    shared = scratch_backbone_config(ModelConfig(dropout=0.2), 0)
    apart = scratch_backbone_config(ModelConfig(dropout=0.2, attention_dropout=0.0), 0)
    assert shared["attn_pdrop"] == 0.2 and shared["resid_pdrop"] == 0.2
    assert apart["attn_pdrop"] == 0.0 and apart["resid_pdrop"] == 0.2


def small_model(context=()) -> LogitLM:
    config = ModelConfig(hidden_size=16, num_heads=2, max_length=8, dropout=0.0)
    backbone = build_backbone(scratch_backbone_config(config, len(context)))
    return LogitLM(config, backbone, num_items=30, context_cardinalities=list(context)).eval()


def test_model_is_causal_padding_invariant_and_never_predicts_padding():
    torch.manual_seed(0)
    model = small_model()
    items = torch.tensor([[0, 0, 3, 4, 5]])
    changed = torch.tensor([[0, 0, 3, 4, 9]])
    with torch.no_grad():
        before, after = model.hidden_states(items), model.hidden_states(changed)
        assert torch.allclose(before[:, :-1], after[:, :-1], atol=1e-6)  # the future is unseen
        assert not torch.allclose(before[:, -1], after[:, -1])
        longer = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]])
        assert torch.allclose(model.user_vectors(items), model.user_vectors(longer), atol=1e-5)
        assert model(items).shape == (1, 30)  # one logit per real item, none for padding


def test_context_tokens_change_the_user_vector():
    torch.manual_seed(0)
    model = small_model(context=(3,))
    items = torch.tensor([[1, 2, 3], [1, 2, 3]])
    with torch.no_grad():
        vectors = model.user_vectors(items, torch.tensor([[1], [2]]))
    assert not torch.allclose(vectors[0], vectors[1])


def test_warmup_then_cosine_schedule():
    config = TrainConfig(warmup_steps=10)
    assert learning_rate_factor(config, 0, 0.0) == pytest.approx(0.1)
    assert learning_rate_factor(config, 10, 0.0) == pytest.approx(1.0)
    assert learning_rate_factor(config, 50, 0.5) == pytest.approx(0.5)
    assert learning_rate_factor(config, 99, 1.0) == pytest.approx(0.0)


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text(
        '[train]\nepochs = 7\n[train.model]\nhidden_size = 32\ncontext_features = ["age"]\n'
    )
    config = load_config(path, {"dropout": 0.5, "batch_size": None})
    assert (config.epochs, config.model.hidden_size, config.model.dropout) == (7, 32, 0.5)
    assert config.model.context_features == ("age",)
    path.write_text("[train]\nepoch = 7\n")
    with pytest.raises(Exception, match="unknown setting"):
        load_config(path)


def test_chunked_cross_entropy_equals_the_plain_one_in_value_and_gradients():
    from training.losses import full_softmax

    torch.manual_seed(0)
    hidden = torch.randn(300, 8, requires_grad=True)
    weight = torch.randn(51, 8, requires_grad=True)  # row 0 is padding, as in the model
    bias = torch.randn(51, requires_grad=True)
    targets = torch.randint(1, 51, (300,))
    plain = torch.nn.functional.cross_entropy(hidden @ weight[1:].T + bias[1:], targets - 1)
    expected = torch.autograd.grad(plain, [hidden, weight, bias])
    chunked = full_softmax(hidden, targets, weight[1:], bias[1:], chunk_rows=64)
    got = torch.autograd.grad(chunked, [hidden, weight, bias])
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-6)
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_auto_context_uses_low_cardinality_user_columns_only():
    import polars as pl

    from training.features import context_vocabulary

    users = pl.DataFrame(
        {
            "user_index": [1, 2, 3, 4],
            "user_id": ["a", "b", "c", "d"],
            "gender": ["F", "M", "M", None],
            "zip_code": [f"{i:05d}" for i in range(4)],
            "constant": ["x"] * 4,
        }
    )
    # zip_code is unique per user here too, but auto draws its line at 100 distinct values.
    assert set(context_vocabulary(users, "auto")) == {"gender", "zip_code"}
    many = pl.DataFrame({"user_index": range(1, 202), "zip_code": [str(i) for i in range(201)]})
    assert context_vocabulary(many, "auto") == {}
    assert context_vocabulary(users, ("gender",)) == {"gender": ["F", "M"]}

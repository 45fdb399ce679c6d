"""Pure cores of training: metrics on a hand-computed example, batching, the model's contracts,
losses, the trainer's state across --resume, and the checkpoint's config and readers."""

import json
import math
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from logitrec.errors import InputError
from training import checkpoint as ckpt
from training.averaging import WeightAverage
from training.batches import (
    left_padded,
    length_bucketed_batches,
    training_windows,
    validation_subset,
    with_validation_items,
)
from training.build import training_ends
from training.config import ModelConfig, TrainConfig, load_config
from training.evaluate import evaluate_scores
from training.loop import learning_rate_factor, parameter_groups
from training.losses import with_negatives
from training.metrics import ranking_metrics, target_ranks
from training.model import LogitLM, build_backbone, scratch_backbone_config
from training.state import TrainerState, load_resume, save_resume, stop_reason


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
    with pytest.raises(InputError, match="unknown setting"):
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


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# Two rows over a 3-item head with one-dimensional hidden states, so each logit is one number:
# item 1 scores 0.5, item 2 scores -1.0 and item 3 scores 2.0 for both rows. Row 0's target is
# item 1 and the shared negatives are items 1 and 3, so row 0 drew its own target.
SCORES = (0.5, -1.0, 2.0)


def accidental_hit_case():
    hidden = torch.ones(2, 1)
    weight = torch.tensor([[s] for s in SCORES])
    return hidden, torch.tensor([1, 2]), weight, torch.zeros(3), torch.tensor([1, 3])


def test_sampled_softmax_does_not_count_a_sampled_target_as_a_negative():
    s1, s2, s3 = SCORES
    # Row 0: its target against item 3 only; row 1: item 2 against items 1 and 3.
    row0 = -math.log(math.exp(s1) / (math.exp(s1) + math.exp(s3)))
    row1 = -math.log(math.exp(s2) / (math.exp(s2) + math.exp(s1) + math.exp(s3)))
    unmasked_row0 = -math.log(math.exp(s1) / (2 * math.exp(s1) + math.exp(s3)))
    loss = with_negatives("sampled-softmax", *accidental_hit_case()).item()
    assert loss == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert loss != pytest.approx((unmasked_row0 + row1) / 2, rel=1e-3)


def test_bce_does_not_count_a_sampled_target_as_a_negative():
    s1, s2, s3 = SCORES
    positive = (softplus(-s1) + softplus(-s2)) / 2
    # Three (row, negative) pairs remain: (0, item 3), (1, item 1), (1, item 3).
    negative = (softplus(s3) + softplus(s1) + softplus(s3)) / 3
    unmasked = (2 * softplus(s1) + 2 * softplus(s3)) / 4
    loss = with_negatives("bce", *accidental_hit_case()).item()
    assert loss == pytest.approx(positive + negative, rel=1e-6)
    assert loss != pytest.approx(positive + unmasked, rel=1e-3)


def test_trainer_state_json_round_trip_and_older_states_without_the_counter():
    state = TrainerState(
        epoch=3,
        step=42,
        best_ndcg=0.25,
        best_epoch=2,
        elapsed=12.5,
        history=[{"epoch": 1, "loss": 3.0, "valid": {"ndcg@10": 0.25}}],
        epochs_without_gain=1,
    )
    assert TrainerState.from_json(json.loads(json.dumps(state.to_json()))) == state
    older = {k: v for k, v in state.to_json().items() if k != "epochs_without_gain"}
    assert TrainerState.from_json(older).epochs_without_gain == 0
    assert TrainerState.from_json(older).best_epoch == 2


def test_stop_reasons():
    config = TrainConfig(patience=3, max_minutes=1.0)
    assert stop_reason(TrainerState(epochs_without_gain=2, elapsed=59.0), config) is None
    assert stop_reason(TrainerState(epochs_without_gain=3), config) == "patience"
    assert stop_reason(TrainerState(elapsed=60.0), config) == "time budget"
    assert stop_reason(TrainerState(elapsed=1e6), TrainConfig()) is None  # no budget set


def test_resume_keeps_counting_epochs_without_gain_towards_patience(tmp_path):
    config = TrainConfig(patience=3)
    torch.manual_seed(0)
    model = small_model()
    optimizer = torch.optim.AdamW(parameter_groups(model, config))
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    optimizer.step()
    state = TrainerState()
    assert state.observe(0.30, epoch=1, eval_every=1)  # the best so far
    assert not state.observe(0.29, epoch=2, eval_every=1)
    assert not state.observe(0.30, epoch=3, eval_every=1)  # equal is no gain
    state.epoch = 3
    assert stop_reason(state, config) is None
    (tmp_path / "run").mkdir()
    save_resume(tmp_path / "run" / "resume", model, optimizer, None, state)

    resumed_model = small_model()
    resumed_optimizer = torch.optim.AdamW(parameter_groups(resumed_model, config))
    resumed = load_resume(resumed_model, resumed_optimizer, None, config, tmp_path / "run")
    assert resumed == state and resumed.epochs_without_gain == 2
    assert torch.equal(resumed_model.head_bias, model.head_bias)
    # One more epoch without gain after the resume reaches the patience of 3.
    assert not resumed.observe(0.28, epoch=4, eval_every=1)
    assert stop_reason(resumed, config) == "patience"


def version_1_checkpoint(directory):
    """A checkpoint as the version-1 writer left it: config.json with exactly its keys, the
    weights, and items.parquet without popularity; no parity sample."""
    model_values = {
        "backbone": "scratch",
        "max_length": 8,
        "hidden_size": 16,
        "num_layers": 2,
        "num_heads": 2,
        "ffn_size": None,
        "dropout": 0.0,
        "attention_dropout": None,
        "tie_weights": True,
        "item_text": None,
        "context_features": ["gender"],
    }
    model_config = ModelConfig(**{**model_values, "context_features": ("gender",)})
    backbone_config = scratch_backbone_config(model_config, 1)
    items = pl.DataFrame(
        {"item_index": list(range(1, 31)), "item_id": [f"m{i}" for i in range(1, 31)]}
    )
    values = {
        "format": "logitrec.checkpoint",
        "format_version": 1,
        "model": model_values,
        "backbone_config": backbone_config,
        "num_items": 30,
        "hidden_size": 16,
        "context_vocabulary": {"gender": ["F", "M"]},
        "item_text": None,
        "catalog_sha256": ckpt.catalog_hash(items),
        "dataset": {"path": "/data/somewhere", "content_hash": "0" * 64},
        "train": {"model": model_values, "epochs": 3, "seed": 42, "valid_users": None},
        "versions": {"logitrec": "0.1.0", "torch": "2.13.0", "transformers": "4.0"},
    }
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(values, indent=2))
    torch.manual_seed(0)
    model = LogitLM(model_config, build_backbone(backbone_config), 30, [2]).eval()
    ckpt.save_weights(model, directory / "model.safetensors")
    items.write_parquet(directory / "items.parquet")
    return values, model


def test_a_version_1_checkpoint_loads_and_its_config_round_trips(tmp_path):
    values, model = version_1_checkpoint(tmp_path / "v1")
    loaded, config = ckpt.load_checkpoint(tmp_path / "v1")
    assert isinstance(config, ckpt.CheckpointConfig) and config.format_version == 1
    assert config.model.max_length == 8 and config.model.context_features == ("gender",)
    assert (config.num_items, config.hidden_size) == (30, 16)
    assert config.context_vocabulary == {"gender": ["F", "M"]}
    written = json.loads((tmp_path / "v1" / "config.json").read_text())
    # Same keys, same values: it writes back unchanged, but for model settings added since
    # (item-id dropout), which appear at their defaults: the behaviour the checkpoint had.
    added_since = {"item_id_dropout": 0.0}
    assert config.to_json() == {**written, "model": {**written["model"], **added_since}}
    assert list(config.to_json()) == list(values)
    assert ckpt.CheckpointConfig.from_json(config.to_json()) == config
    items, context = torch.tensor([[0, 3, 4, 5]]), torch.tensor([[2]])
    with torch.no_grad():
        assert torch.equal(loaded(items, context), model(items, context))


def test_a_version_1_checkpoint_says_how_to_add_what_export_needs(tmp_path):
    version_1_checkpoint(tmp_path / "v1")
    for reader in (ckpt.load_items, ckpt.load_parity_sample):
        with pytest.raises(InputError) as caught:
            reader(tmp_path / "v1")
        message = str(caught.value)
        assert str(tmp_path / "v1") in message
        assert f"logitrec checkpoint upgrade {tmp_path / 'v1'} --data DATASET_DIR" in message


def test_checkpoint_readers_refuse_other_formats_and_versions(tmp_path):
    values, _ = version_1_checkpoint(tmp_path / "v1")
    for changes in ({"format_version": 3}, {"format": "something.else"}):
        (tmp_path / "v1" / "config.json").write_text(json.dumps({**values, **changes}))
        with pytest.raises(InputError, match=r"expected logitrec\.checkpoint version 1 to 2"):
            ckpt.read_config(tmp_path / "v1")
    del values["catalog_sha256"]
    (tmp_path / "v1" / "config.json").write_text(json.dumps(values))
    with pytest.raises(InputError, match="catalog_sha256"):
        ckpt.read_config(tmp_path / "v1")


def test_items_and_parity_sample_round_trip_through_the_checkpoint(tmp_path):
    items = pl.DataFrame(
        {"item_id": ["c", "a", "b"], "item_index": [3, 1, 2], "title": ["C", "A", None]}
    )
    ckpt.write_items(tmp_path, items, np.array([7, 0, 2]))  # counts of items 1, 2, 3
    loaded = ckpt.load_items(tmp_path)
    assert loaded.columns == ["item_index", "item_id", "title", "popularity"]
    assert loaded["item_id"].to_list() == ["a", "b", "c"]
    assert loaded["popularity"].to_list() == [7, 0, 2] and loaded["popularity"].dtype == pl.Int64
    histories, context = np.arange(12).reshape(3, 4), np.zeros((3, 0), dtype=np.int32)
    ckpt.write_parity_sample(tmp_path, histories, context)
    got_histories, got_context = ckpt.load_parity_sample(tmp_path)
    assert got_histories.dtype == got_context.dtype == np.int64
    assert np.array_equal(got_histories, histories) and got_context.shape == (3, 0)
    assert not list(tmp_path.glob(".*.tmp"))

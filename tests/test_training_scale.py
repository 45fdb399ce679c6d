"""Training that scales with the rows it touches: sparse row updates of the item tables, the
log-Q corrected sampled softmax, in-batch negatives, and their flags end to end."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN, run_cli

from training.config import ModelConfig, TrainConfig
from training.loop import Objective
from training.losses import full_softmax, negative_loss, sampled_logits, with_negatives
from training.model import LogitLM, build_backbone, scratch_backbone_config
from training.negatives import NegativeSampler
from training.optimizers import RowSparseAdamW, clip_gradients

NUM_ITEMS = 40


def small_model(tie_weights: bool) -> LogitLM:
    config = ModelConfig(
        hidden_size=8, num_heads=2, max_length=6, dropout=0.0, tie_weights=tie_weights
    )
    backbone = build_backbone(scratch_backbone_config(config, 0))
    return LogitLM(config, backbone, num_items=NUM_ITEMS, context_cardinalities=[])


def sparse_objective(model: LogitLM, negatives: int = 3, **settings) -> Objective:
    config = TrainConfig(loss="sampled-softmax", negatives=negatives, **settings)
    counts = np.ones(NUM_ITEMS + 1, dtype=np.int64)
    sampler = NegativeSampler(counts, negatives, "uniform", torch.device("cpu"))
    return Objective(model, config, sampler, sparse_rows=True)


def item_tables(model: LogitLM) -> list[torch.Tensor]:
    tables = [model.item_embedding.weight, model.head_bias]
    return tables + ([model.head_weight] if model.head_weight is not None else [])


@pytest.mark.parametrize("tie_weights", [True, False], ids=["tied", "untied"])
def test_a_sparse_step_moves_only_the_rows_the_batch_touched(tie_weights):
    torch.manual_seed(0)
    model = small_model(tie_weights)
    objective = sparse_objective(model)
    optimizer = RowSparseAdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    inputs = torch.tensor([[0, 3, 5, 7], [2, 3, 4, 6]])
    targets = torch.tensor([[0, 5, 7, 8], [3, 4, 6, 9]])
    before = [table.detach().clone() for table in item_tables(model)]
    torch.manual_seed(1)
    drawn = objective.sampler.draw()
    torch.manual_seed(1)  # the objective draws the same negatives
    loss = objective(inputs, targets, torch.zeros(2, 0, dtype=torch.long))
    loss.backward()
    assert all(table.grad.is_sparse for table in item_tables(model))
    clip_gradients(model.parameters(), 1.0)
    optimizer.step()

    touched = set(inputs.flatten().tolist()) | set(targets.flatten().tolist())
    touched |= set(drawn.tolist())
    touched.discard(0)
    untouched = sorted(set(range(NUM_ITEMS + 1)) - touched)
    for table, old in zip(item_tables(model), before, strict=True):
        assert torch.equal(table.detach()[untouched], old[untouched])  # bit-identical
        assert not torch.equal(table.detach()[sorted(touched)], old[sorted(touched)])
        state = optimizer.state[table]
        assert not state["exp_avg"][untouched].any() and not state["exp_avg_sq"][untouched].any()
    # The transformer (dense gradients) took an ordinary AdamW step.
    assert all(not p.grad.is_sparse for p in model.backbone.parameters() if p.grad is not None)


def sparse_gradient(rows: list[int], values: torch.Tensor, shape) -> torch.Tensor:
    index = torch.tensor([rows])
    return torch.sparse_coo_tensor(index, values, shape, check_invariants=True)


def test_row_sparse_adamw_is_sparse_adams_update_on_the_rows_it_holds():
    torch.manual_seed(0)
    start = torch.randn(20, 4)
    ours, reference = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    optimizers = [
        RowSparseAdamW([ours], lr=0.05, weight_decay=0.0),
        torch.optim.SparseAdam([reference], lr=0.05),
    ]
    for step in range(5):
        rows = [step, step + 1, 7, 7]  # row 7 every step, twice
        values = torch.randn(4, 4)
        for parameter, optimizer in zip([ours, reference], optimizers, strict=True):
            parameter.grad = sparse_gradient(rows, values, parameter.shape)
            optimizer.step()
    # SparseAdam adds eps before the bias correction, AdamW after: equal up to that.
    assert torch.allclose(ours, reference, atol=1e-4)
    assert torch.equal(ours.detach()[10:], start[10:])  # never touched


def test_row_sparse_adamw_equals_adamw_when_every_row_is_touched():
    torch.manual_seed(0)
    start = torch.randn(6, 3)
    sparse, dense = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    optimizers = [
        RowSparseAdamW([sparse], lr=0.05, weight_decay=0.1),
        torch.optim.AdamW([dense], lr=0.05, weight_decay=0.1),
    ]
    for _ in range(4):
        gradient = sparse_gradient([5, 4, 3, 2, 1, 0], torch.randn(6, 3), start.shape)
        sparse.grad, dense.grad = gradient, gradient.to_dense()
        for optimizer in optimizers:
            optimizer.step()
    assert torch.allclose(sparse, dense, atol=1e-6)
    # The same state layout, so checkpoints and --resume work whichever optimizer wrote them.
    states = [optimizer.state_dict()["state"][0] for optimizer in optimizers]
    assert states[0].keys() == states[1].keys()


def test_clipping_counts_a_row_looked_up_twice_once_like_the_dense_gradient():
    sparse = torch.nn.Parameter(torch.ones(5, 2))
    dense = torch.nn.Parameter(torch.ones(5, 2))
    rows = torch.tensor([1, 1, 3])
    (torch.nn.functional.embedding(rows, sparse, sparse=True).sum() * 10).backward()
    (torch.nn.functional.embedding(rows, dense).sum() * 10).backward()
    sparse_norm = clip_gradients([sparse], 1.0)
    dense_norm = clip_gradients([dense], 1.0)
    assert sparse_norm.item() == pytest.approx(dense_norm.item())
    assert torch.allclose(sparse.grad.to_dense(), dense.grad)


def random_head(rows: int = 6, items: int = 12, dim: int = 4):
    torch.manual_seed(0)
    hidden = torch.randn(rows, dim)
    weight, bias = torch.randn(items, dim), torch.randn(items)
    targets = torch.randint(1, items + 1, (rows,))
    return hidden, targets, weight, bias


def test_corrected_sampled_softmax_over_every_item_once_is_the_full_softmax():
    hidden, targets, weight, bias = random_head()
    items = weight.shape[0]
    sampler = NegativeSampler(np.ones(items + 1), items, "uniform", torch.device("cpu"))
    every_item = torch.arange(1, items + 1)
    log_expected = sampler.log_expected_count(every_item, in_batch=0)
    assert torch.allclose(log_expected, torch.zeros(items))  # each expected exactly once
    sampled = with_negatives(
        "sampled-softmax", hidden, targets, weight, bias, every_item, log_expected
    )
    full = full_softmax(hidden, targets, weight, bias)
    assert sampled.item() == pytest.approx(full.item(), rel=1e-6)


def test_corrected_popularity_sampled_softmax_converges_to_the_full_softmax():
    hidden, targets, weight, bias = random_head()
    items = weight.shape[0]
    counts = np.concatenate([[0], np.arange(items, 0, -1) ** 2])  # steeply skewed popularity
    sampler = NegativeSampler(counts, 20_000, "popularity", torch.device("cpu"))
    torch.manual_seed(0)
    drawn = sampler.draw()
    full = full_softmax(hidden, targets, weight, bias).item()
    corrected = with_negatives(
        "sampled-softmax",
        hidden,
        targets,
        weight,
        bias,
        drawn,
        sampler.log_expected_count(drawn, 0),
    ).item()
    uncorrected = with_negatives("sampled-softmax", hidden, targets, weight, bias, drawn).item()
    assert corrected == pytest.approx(full, rel=0.02)
    assert abs(uncorrected - full) > 1.0  # without the correction it estimates something else


def test_popularity_sampling_can_draw_every_item_of_a_million_item_catalog():
    # One blockbuster and a million items seen once: each tail item's share (~1e-8) is below
    # float32's resolution of the CDF near 1, where it would get no width and never be drawn.
    counts = np.concatenate([[0, 100_000_000], np.zeros(1_000_000)])
    sampler = NegativeSampler(counts, 1024, "popularity", torch.device("cpu"))
    assert bool((torch.diff(sampler.cumulative) > 0).all())
    drawn = sampler.draw()
    assert int(drawn.min()) >= 1 and int(drawn.max()) <= 1_000_001


def test_in_batch_negatives_are_the_batch_targets_with_accidental_hits_masked():
    hidden, targets, weight, bias = random_head(rows=4)
    targets = torch.tensor([2, 5, 5, 9])
    items = weight.shape[0]
    counts = np.concatenate([[0], np.arange(1, items + 1)])
    sampler = NegativeSampler(counts, 4, "uniform", torch.device("cpu"))
    drawn = torch.tensor([1, 5, 7, 11])
    negatives = sampler.negatives(drawn, targets)
    assert negatives.items.tolist() == [1, 5, 7, 11, 2, 5, 5, 9]  # all 4 targets join
    positive, negative = sampled_logits(
        hidden,
        (weight[targets - 1], bias[targets - 1]),
        (weight[negatives.items - 1], bias[negatives.items - 1]),
        negatives.log_expected,
    )
    loss = negative_loss("sampled-softmax", positive, negative, targets, negatives.items)

    target_share = counts[1:] / counts.sum()
    expected_loss = 0.0
    for row, target in enumerate(targets.tolist()):
        scores = hidden[row] @ weight.T + bias
        terms = [math.exp(scores[target - 1])]
        for item in negatives.items.tolist():
            if item == target:  # the row's own target, drawn or from the batch: masked
                continue
            expected = 4 / items + 4 * target_share[item - 1]  # 4 uniform + 4 in-batch draws
            terms.append(math.exp(scores[item - 1]) / expected)
        expected_loss += -math.log(terms[0] / sum(terms)) / len(targets)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)


def test_in_batch_negatives_are_capped_at_the_negative_count():
    sampler = NegativeSampler(np.ones(NUM_ITEMS + 1), 5, "uniform", torch.device("cpu"))
    targets = torch.arange(1, 31)
    negatives = sampler.negatives(sampler.draw(), targets)
    assert len(negatives.items) == 10
    assert set(negatives.items[5:].tolist()) <= set(targets.tolist())


def train(tiny_dataset, out, *flags, check=True):
    return run_cli("train", "--data", tiny_dataset, "--out", out, *TINY_TRAIN, *flags, check=check)


def test_the_sampled_loss_flags_train_end_to_end_and_resume(tiny_dataset, tmp_path):
    sampled = ("--loss", "sampled-softmax", "--negatives", 16)
    runs = {
        "after": (*sampled, "--in-batch-negatives"),
        "before": (*sampled, "--no-sparse-rows", "--negative-sampling", "uniform"),
        "bce": ("--loss", "bce", "--negatives", 16, "--in-batch-negatives"),
    }
    for name, flags in runs.items():
        result = json.loads(train(tiny_dataset, tmp_path / name, *flags).stdout)
        assert result["test"]["ndcg@10"] > 0
    config = json.loads((tmp_path / "after" / "config.json").read_text())["train"]
    assert config["in_batch_negatives"] is True and config["negative_sampling"] == "auto"
    # The row-wise optimizer's state goes through the checkpoint and back.
    resumed = tmp_path / "resumed"
    train(tiny_dataset, resumed, *runs["after"], "--resume", tmp_path / "after", "--epochs", 4)
    log = (resumed / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [4]


def test_sampled_only_flags_are_refused_with_full_softmax(tiny_dataset, tmp_path):
    for flag in ("--sparse-rows", "--in-batch-negatives"):
        result = train(tiny_dataset, tmp_path / "x", flag, check=False)
        assert (
            result.returncode == 2 and flag in result.stderr and "sampled-softmax" in result.stderr
        )
    result = train(tiny_dataset, tmp_path / "y", "--negative-sampling", "zipf", check=False)
    assert result.returncode == 2 and "--negative-sampling" in result.stderr

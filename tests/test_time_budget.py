"""`--max-minutes` bounds the whole `logitrec train` command: epochs stop part-way, the partial
epoch is validated, and a final evaluation that would overrun ranks a sample of users.

No test here times anything itself: they read what the command recorded in metrics.json and
train_log.jsonl, with margins no busy machine should reach.
"""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli

from training.budget import (
    FIXED_SECONDS,
    MIN_FINAL_USERS,
    SAFETY,
    Budget,
    Costs,
    Workload,
    affordable_users,
    reserve_seconds,
)
from training.build import build_objective
from training.config import ModelConfig, TrainConfig
from training.loop import (
    Epoch,
    Optimisation,
    TrainingWindows,
    parameter_groups,
    train_one_epoch,
)
from training.model import LogitLM, build_backbone, scratch_backbone_config
from training.state import TrainerState, stop_reason

# What a command may spend past its budget: the last training step and the end's estimates
# running slower than measured. The interpreter's exit after metrics.json is reserved for
# (FIXED_SECONDS) but not recorded.
TOLERANCE_SECONDS = 3.0


def test_the_reserve_scales_the_validation_pass_to_both_final_splits():
    costs = Costs(rank_per_user=0.01, baseline_per_user=0.001, weights_file=0.5)
    work = Workload(validated_users=100, final_users=(100, 300), weight_files=3)
    expected = SAFETY * (0.01 * 100 + 400 * (0.01 + 0.001) + 3 * 0.5) + FIXED_SECONDS
    assert reserve_seconds(costs, work) == pytest.approx(expected)
    # Before any validation, a training step's share per window stands in (an overestimate).
    guessed = Costs(training_per_window=0.02)
    assert reserve_seconds(guessed, work) > reserve_seconds(Costs(rank_per_user=0.01), work)
    # Tuning has no final evaluation: one validation pass and the files remain.
    tuning = Workload(validated_users=100, final_users=(), weight_files=3)
    assert reserve_seconds(costs, tuning) < reserve_seconds(costs, work)


def test_affordable_users_samples_only_when_the_whole_evaluation_does_not_fit():
    assert affordable_users(100.0, 0.01, [300, 300]) is None  # 6 s of 100
    sampled = affordable_users(4.0, 0.01, [300, 300])
    assert MIN_FINAL_USERS <= sampled < 300
    assert sampled == 200 and 0.01 * 2 * sampled <= 4.0 + 1e-9
    # Past the budget already: the fewest users that still say something.
    assert affordable_users(-5.0, 0.01, [300, 300]) == MIN_FINAL_USERS
    assert affordable_users(-5.0, 0.01, [50, 60]) is None  # fewer than that: all of them


def test_the_cosine_follows_the_time_training_may_take():
    budget = Budget(100.0, origin=0.0, work=Workload(10, (10, 10), 3))
    budget.costs.rank_per_user = 0.1  # reserve: 1.25 * (1 + 2 + 0) + 5 = 8.75 s
    assert budget.reserve() == pytest.approx(8.75)
    assert budget.training_share(now=91.25 / 2) == pytest.approx(0.5)
    assert budget.training_left(now=50.0) == pytest.approx(100 - 50 - 8.75)
    unbounded = Budget(None, origin=0.0, work=Workload(10, (), 3))
    assert unbounded.training_share(now=1e9) == 0.0 and unbounded.left() == float("inf")


def test_the_final_sample_is_what_the_time_left_affords_and_says_why():
    budget = Budget(60.0, origin=0.0, work=Workload(300, (300, 300), 3))
    budget.costs.rank_per_user = 0.01  # all 600 users: 6 s
    assert budget.final_sample(None, now=10.0) == (None, None)  # 45 s left after FIXED
    assert budget.final_sample(50, now=10.0) == (50, None)  # --eval-users as asked
    users, record = budget.final_sample(None, now=60.0 - FIXED_SECONDS - 4.0)  # 4 s left
    assert users == record["users_per_split"] == 200
    assert "time budget left 4.0 s" in record["reason"] and "600 users" in record["reason"]
    assert budget.final_sample(120, now=56.0 - FIXED_SECONDS)[0] == 120  # asked fewer still
    unbounded = Budget(None, origin=0.0, work=Workload(300, (300, 300), 3))
    assert unbounded.final_sample(None, now=1e9) == (None, None)


def test_stop_reasons_with_the_budget_spent():
    config = TrainConfig(patience=3, max_minutes=10.0)
    assert stop_reason(TrainerState(elapsed=1.0), config) is None
    assert stop_reason(TrainerState(elapsed=1.0), config, out_of_time=True) == "time budget"
    assert stop_reason(TrainerState(epochs_without_gain=3), config, out_of_time=True) == (
        "patience"
    )


def test_an_epoch_stops_between_steps_when_asked():
    torch.manual_seed(0)
    config = TrainConfig()
    model_config = ModelConfig(max_length=4, hidden_size=8, num_heads=2)
    backbone = build_backbone(scratch_backbone_config(model_config, 0))
    model = LogitLM(model_config, backbone, num_items=5, context_cardinalities=[])
    inputs = np.tile(np.array([[1, 2, 3, 4]]), (8, 1))
    windows = TrainingWindows(inputs, inputs % 5 + 1, np.zeros((8, 0), dtype=np.int64), 5)
    objective = build_objective(model, config, windows, torch.device("cpu"), False)
    optimizer = torch.optim.AdamW(parameter_groups(model, config))
    run = Optimisation(objective, optimizer, None, config, torch.device("cpu"), 100, 0.0)
    asked = []

    def stop(step_seconds: float, rows: int) -> bool:
        asked.append(rows)
        return len(asked) == 2  # after the second step

    batches = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5]), np.array([6, 7])]
    outcome = train_one_epoch(run, windows, Epoch(1, batches, 0, stop), show=False)
    assert outcome.cut_short and outcome.steps_taken == 2 and outcome.step == 2
    assert asked == [2, 2]  # never before an epoch's first step
    whole = train_one_epoch(run, windows, Epoch(2, batches, 2), show=False)
    assert not whole.cut_short and whole.steps_taken == 4


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    run_cli("data", "synth", "--out", root / "raw", "--users", 300, "--items", 60)
    run_cli("data", "prepare", root / "raw", "--out", root / "ds", "-q")
    return root


def _train(root, name: str, minutes: float, *args) -> tuple[dict, list[dict]]:
    out = root / name
    run_cli(
        "train", "--data", root / "ds", "--out", out, "--max-minutes", minutes,
        "--epochs", 1000, "--patience", 1000, "--threads", 1,
        "--max-length", 20, "--hidden-size", 32, "-q", *args,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return metrics, log


def test_train_returns_within_its_budget_final_evaluation_included(synthetic):
    metrics, log = _train(synthetic, "budgeted", 0.4)
    assert metrics["stopped"] == "time budget" and metrics["budget_seconds"] == 24.0
    # From the process's start to metrics.json written: training, validations, the final
    # evaluation of both splits with the baseline, and the checkpoint's files.
    assert metrics["total_seconds"] <= metrics["budget_seconds"] + TOLERANCE_SECONDS
    assert FIXED_SECONDS <= metrics["reserve_seconds"] < metrics["budget_seconds"]
    # Whether the whole final evaluation fitted depends on how busy the machine was (the
    # reserve is estimated from this run's own validation time): either way it says what it did.
    sampled = metrics["evaluation_sampled"]
    if sampled is None:
        assert metrics["test"]["users"] == 300 and "sample" not in metrics["test"]
    else:
        assert "time budget" in sampled["reason"]
        assert metrics["test"]["users"] == sampled["users_per_split"] < 300
    assert len(log) >= 2 and metrics["epochs_run"] == len(log)
    # Every epoch that trained was validated, the last (perhaps cut short) one too.
    assert all("valid" in record for record in log)
    for record in log:
        if "partial" in record:
            assert record is log[-1] and record["partial"]["steps"] < record["partial"]["of"]


def test_a_budget_too_short_for_the_final_evaluation_samples_users_and_says_so(synthetic):
    # Less than the reserve's fixed part: the first epoch stops after one step, is validated,
    # and the final evaluation ranks the fewest users worth reporting.
    metrics, log = _train(synthetic, "seconds", 0.05, "--batch-size", 64)
    assert metrics["stopped"] == "time budget" and metrics["best_epoch"] == 1
    assert log[0]["partial"]["steps"] == 1 and log[0]["partial"]["of"] > 1
    assert "valid" in log[0]
    sampled = metrics["evaluation_sampled"]
    assert sampled["users_per_split"] == MIN_FINAL_USERS and "time budget" in sampled["reason"]
    for split in ("valid", "test"):
        assert metrics[split]["users"] == MIN_FINAL_USERS
        assert metrics[split]["sample"]["population"] == 300 and "ci95" in metrics[split]
        baseline = metrics["baselines"]["most_popular"][split]
        assert baseline["users"] == MIN_FINAL_USERS

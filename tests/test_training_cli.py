"""Training end to end through the CLI on small synthetic data: quality, checkpoints, failures."""

import json
import math
import shutil
import sys

import numpy as np
import polars as pl
import pytest
import torch
from conftest import REPO, run_cli

from logitrec.errors import InputError
from training.checkpoint import load_items, load_parity_sample
from training.data.dataset import load_dataset
from training.evaluate import popularity_scores
from training.features import context_indices

# Small and quick, but with real sequential structure to learn.
FAST = (
    "--max-length",
    20,
    "--hidden-size",
    32,
    "--num-heads",
    2,
    "--batch-size",
    64,
    "--learning-rate",
    5e-3,
    "--warmup-steps",
    5,
    "--dropout",
    0.1,
    "-q",
)


@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    run_cli(
        "data",
        "synth",
        "--out",
        root / "raw",
        "--users",
        500,
        "--items",
        80,
        "--clusters",
        6,
        "--mean-length",
        20,
        "--follow-probability",
        0.6,
    )
    run_cli("data", "prepare", root / "raw", "--out", root / "ds", "-q")
    return root / "ds"


@pytest.fixture(scope="module")
def trained(synthetic_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("checkpoints") / "scratch"
    result = run_cli("train", "--data", synthetic_dataset, "--out", out, "--epochs", 12, *FAST)
    return out, json.loads(result.stdout)


def test_trained_model_beats_popularity_and_evaluate_reproduces_it(synthetic_dataset, trained):
    checkpoint, printed = trained
    metrics = json.loads((checkpoint / "metrics.json").read_text())
    popular = metrics["baselines"]["most_popular"]["test"]
    assert metrics["test"]["ndcg@10"] > 2 * popular["ndcg@10"], (metrics["test"], popular)
    assert metrics["test"]["hr@10"] > popular["hr@10"] + 0.1
    # `logitrec evaluate` rebuilds the model from the checkpoint alone and gets the same numbers.
    evaluated = json.loads(
        run_cli(
            "evaluate", "--data", synthetic_dataset, "--checkpoint", checkpoint, "--baselines"
        ).stdout
    )
    for key in ("hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20"):
        assert evaluated[key] == pytest.approx(metrics["test"][key], abs=1e-6)
        assert printed["test"][key] == pytest.approx(metrics["test"][key], abs=1e-6)
    assert evaluated["users"] == 500 and evaluated["split"] == "test"
    assert evaluated["most_popular"]["ndcg@10"] == pytest.approx(popular["ndcg@10"])


def test_checkpoint_directory_describes_itself(trained):
    checkpoint, _ = trained
    names = {p.name for p in checkpoint.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "items.parquet",
        "metrics.json",
        "train_log.jsonl",
        "training_curve.png",
        "resume",
        "parity_histories.npy",
        "parity_context.npy",
    } <= names
    config = json.loads((checkpoint / "config.json").read_text())
    # The keys version 1 wrote, in its order: older readers of config.json find what they knew.
    assert list(config) == [
        "format",
        "format_version",
        "model",
        "backbone_config",
        "num_items",
        "hidden_size",
        "context_vocabulary",
        "item_text",
        "catalog_sha256",
        "dataset",
        "train",
        "versions",
    ]
    assert config["format_version"] == 2 and config["model"]["context_features"] == list(
        config["context_vocabulary"]
    )
    assert config["num_items"] == 80 and config["backbone_config"]["model_type"] == "gpt2"
    assert config["train"]["epochs"] == 12
    log = [json.loads(line) for line in (checkpoint / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, len(log) + 1))
    assert not list(checkpoint.parent.glob(".scratch.tmp-*"))


def test_evaluate_refuses_a_dataset_with_another_catalog(trained, tmp_path):
    checkpoint, _ = trained
    run_cli("data", "synth", "--out", tmp_path / "raw", "--users", 100, "--items", 50)
    run_cli("data", "prepare", tmp_path / "raw", "--out", tmp_path / "other", "-q")
    result = run_cli(
        "evaluate", "--data", tmp_path / "other", "--checkpoint", checkpoint, check=False
    )
    assert result.returncode == 2 and "catalog" in result.stderr and "80 items" in result.stderr
    result = run_cli("checkpoint", "upgrade", checkpoint, "--data", tmp_path / "other", check=False)
    assert result.returncode == 2 and "catalog" in result.stderr and "80 items" in result.stderr


def test_checkpoint_carries_popularity_and_a_parity_sample(synthetic_dataset, trained):
    checkpoint, _ = trained
    dataset = load_dataset(synthetic_dataset)
    items = load_items(checkpoint)
    assert items.columns == ["item_index", "item_id", "title", "popularity"]
    assert items["item_index"].to_list() == list(range(1, 81))
    assert items["popularity"].to_list() == popularity_scores(dataset).long().tolist()
    assert items["popularity"].sum() == int(dataset.split.train_end.sum())
    histories, context = load_parity_sample(checkpoint)
    vocabulary = json.loads((checkpoint / "config.json").read_text())["context_vocabulary"]
    assert histories.shape == (64, 20) and context.shape == (64, len(vocabulary)) == (64, 3)
    assert histories.dtype == context.dtype == np.int64
    # A fixed random 64 of the 500 test users (seed 0), each with the newest 20 items before
    # their test target, left-padded, and that user's context.
    test_users = np.flatnonzero(dataset.split.test_position >= 0)
    chosen = test_users[np.sort(np.random.default_rng(0).choice(500, 64, replace=False))]
    for row, user in zip(histories, chosen, strict=True):
        newest = dataset.sequence(user + 1)[: dataset.split.test_position[user]][-20:]
        assert row[20 - len(newest) :].tolist() == newest.tolist()
        assert not row[: 20 - len(newest)].any()
    assert np.array_equal(context, context_indices(dataset.users, vocabulary)[chosen])


def test_upgrade_adds_what_a_version_1_checkpoint_lacks(synthetic_dataset, trained, tmp_path):
    checkpoint, _ = trained
    old = tmp_path / "old"
    shutil.copytree(checkpoint, old)
    # What the version-1 writer left: no popularity, no parity sample, format_version 1.
    pl.read_parquet(old / "items.parquet").drop("popularity").write_parquet(old / "items.parquet")
    (old / "parity_histories.npy").unlink()
    (old / "parity_context.npy").unlink()
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**config, "format_version": 1}))
    with pytest.raises(InputError, match="logitrec checkpoint upgrade"):
        load_items(old)
    with pytest.raises(InputError, match="logitrec checkpoint upgrade"):
        load_parity_sample(old)

    # The same catalog with other interactions (a temporal split) is not what it trained on.
    resplit = tmp_path / "resplit"
    run_cli("data", "prepare", synthetic_dataset.parent / "raw", "--out", resplit,
            "--split", "temporal", "-q")  # fmt: skip
    result = run_cli("checkpoint", "upgrade", old, "--data", resplit, check=False)
    assert result.returncode == 2 and "not the dataset" in result.stderr, result.stderr

    result = run_cli("checkpoint", "upgrade", old, "--data", synthetic_dataset)
    assert json.loads(result.stdout)["written"] == [
        "items.parquet",
        "parity_histories.npy",
        "parity_context.npy",
    ]
    assert load_items(old).equals(load_items(checkpoint))
    for upgraded, written in zip(
        load_parity_sample(old), load_parity_sample(checkpoint), strict=True
    ):
        assert np.array_equal(upgraded, written)
    again = run_cli("checkpoint", "upgrade", old, "--data", synthetic_dataset)
    assert json.loads(again.stdout)["written"] == []
    assert not list(old.glob(".*"))  # no temporary files left behind


def test_resume_continues_and_nan_loss_keeps_the_best_checkpoint(
    synthetic_dataset, trained, tmp_path
):
    checkpoint, _ = trained
    best = json.loads((checkpoint / "metrics.json").read_text())
    resumed = tmp_path / "resumed"
    run_cli(
        "train",
        "--data",
        synthetic_dataset,
        "--out",
        resumed,
        "--resume",
        checkpoint,
        "--epochs",
        13,
        *FAST,
    )
    log = [json.loads(line) for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [13]  # continued where the first run stopped

    exploded = tmp_path / "exploded"
    result = run_cli(
        "train",
        "--data",
        synthetic_dataset,
        "--out",
        exploded,
        "--resume",
        checkpoint,
        "--epochs",
        14,
        *FAST[:-3],
        "--learning-rate",
        1e30,
        "-q",
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert (
        "loss became nan" in result.stderr.lower() and "kept the best checkpoint" in result.stderr
    )
    kept = json.loads((exploded / "metrics.json").read_text())
    assert kept["best_epoch"] == best["best_epoch"]
    assert kept["test"]["ndcg@10"] == pytest.approx(best["test"]["ndcg@10"], abs=1e-6)


def test_resume_keeps_counting_epochs_without_gain(synthetic_dataset, tmp_path):
    # At a learning rate of 0 the weights never change, so only epoch 1 is a gain.
    frozen = (*FAST, "--learning-rate", 0, "--patience", 3)
    first = tmp_path / "first"
    run_cli("train", "--data", synthetic_dataset, "--out", first, "--epochs", 2, *frozen)
    state = json.loads((first / "resume" / "trainer_state.json").read_text())
    assert (state["best_epoch"], state["epochs_without_gain"]) == (1, 1)
    resumed = tmp_path / "resumed"
    run_cli("train", "--data", synthetic_dataset, "--out", resumed, "--resume", first,
            "--epochs", 10, *frozen)  # fmt: skip
    log = [json.loads(line) for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    # Epochs 2, 3 and 4 without gain: the patience of 3 runs out after epoch 4, not epoch 5.
    assert [r["epoch"] for r in log] == [3, 4]
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert (metrics["stopped"], metrics["epochs_run"], metrics["best_epoch"]) == ("patience", 4, 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda(synthetic_dataset, tmp_path):
    result = run_cli(
        "train",
        "--data",
        synthetic_dataset,
        "--out",
        tmp_path / "c",
        "--device",
        "cuda",
        check=False,
    )
    assert result.returncode == 2 and "CUDA" in result.stderr
    assert not (tmp_path / "c").exists()


def test_missing_dataset_and_bad_settings(tmp_path):
    result = run_cli("train", "--data", tmp_path / "nope", "--out", tmp_path / "c", check=False)
    assert result.returncode == 2 and "manifest.json" in result.stderr
    result = run_cli(
        "train", "--data", tmp_path, "--out", tmp_path / "c", "--loss", "mse", check=False
    )
    assert result.returncode == 2 and "--loss" in result.stderr


def test_sampled_losses_and_user_context_train(synthetic_dataset, tmp_path):
    for loss in ("bce", "sampled-softmax"):
        run_cli(
            "train",
            "--data",
            synthetic_dataset,
            "--out",
            tmp_path / loss,
            "--epochs",
            2,
            "--loss",
            loss,
            "--negatives",
            16,
            "--context-features",
            "age,gender",
            *FAST,
        )
        config = json.loads((tmp_path / loss / "config.json").read_text())
        assert config["context_vocabulary"]["gender"] == ["F", "M"]
        evaluated = json.loads(
            run_cli("evaluate", "--data", synthetic_dataset, "--checkpoint", tmp_path / loss).stdout
        )
        assert evaluated["users"] == 500
    result = run_cli(
        "train",
        "--data",
        synthetic_dataset,
        "--out",
        tmp_path / "x",
        "--context-features",
        "shoe_size",
        check=False,
    )
    assert result.returncode == 2 and "shoe_size" in result.stderr and "age" in result.stderr


def test_validation_subset_is_what_training_and_evaluate_report(synthetic_dataset, tmp_path):
    out = tmp_path / "subset"
    run_cli(
        "train", "--data", synthetic_dataset, "--out", out, "--epochs", 2, "--valid-users", 120,
        "--train-valid-items", *FAST,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "config.json").read_text())["train"]["train_valid_items"] is True
    # The other 380 users trained on their validation item, so validation counts only the 120.
    assert metrics["valid"]["users"] == 120 and metrics["test"]["users"] == 500
    assert metrics["baselines"]["most_popular"]["valid"]["users"] == 120
    evaluated = json.loads(
        run_cli(
            "evaluate", "--data", synthetic_dataset, "--checkpoint", out, "--split", "valid"
        ).stdout
    )
    assert evaluated["users"] == 120
    assert evaluated["ndcg@10"] == pytest.approx(metrics["valid"]["ndcg@10"], abs=1e-6)


def test_minilm_backbone_trains_end_to_end(synthetic_dataset, tmp_path):
    out = tmp_path / "minilm"
    run_cli(
        "train",
        "--data",
        synthetic_dataset,
        "--out",
        out,
        "--backbone",
        "minilm",
        "--epochs",
        1,
        "--max-length",
        8,
        "--batch-size",
        128,
        "-q",
    )
    config = json.loads((out / "config.json").read_text())
    assert config["backbone_config"]["model_type"] == "bert"
    assert config["backbone_config"]["is_decoder"] is True  # causal: every position predicts
    assert config["item_text"]["dim"] == 384 and config["hidden_size"] == 384
    evaluated = json.loads(
        run_cli("evaluate", "--data", synthetic_dataset, "--checkpoint", out).stdout
    )
    # Rebuilt from config.json alone (the title embeddings come back from model.safetensors),
    # the model scores what the trained one did.
    trained = json.loads((out / "metrics.json").read_text())["test"]
    for key in ("users", "hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20", "mrr@20"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6), key
    assert evaluated["ndcg@10"] > 0


@pytest.mark.skipif(
    shutil.which("torchrun") is None and sys.platform != "linux", reason="torchrun unavailable"
)
def test_ddp_with_two_gloo_processes(synthetic_dataset, tmp_path):
    import subprocess

    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "logitrec",
        "train",
        "--data",
        str(synthetic_dataset),
        "--out",
        str(out),
        "--epochs",
        2,
        "--threads",
        1,
        *map(str, FAST),
    ]
    result = subprocess.run(
        list(map(str, command)), capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    # Every process builds the same windows (all of each history, 20 items each) and takes
    # half of the batches of 64 each epoch.
    from training.batches import training_windows
    from training.data.dataset import load_dataset

    rows = len(training_windows(load_dataset(synthetic_dataset), 20, older=True)[2])
    per_process = math.ceil(rows / 64) // 2
    assert rows > 500, "long synthetic histories should make more windows than users"
    assert [r["step"] for r in log] == [per_process, 2 * per_process]
    assert json.loads((out / "metrics.json").read_text())["test"]["users"] == 500

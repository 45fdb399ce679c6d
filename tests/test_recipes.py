"""Recipes: `ml-1m` is today's defaults, `auto` derives settings from the dataset's statistics,
and a `--config` file and flags override either; the checkpoint records what was used."""

import json

import pytest
from conftest import run_cli

from logitrec.errors import InputError
from training.config import TrainConfig, load_config
from training.recipes import AUTO_SETTINGS, DEFAULT_RECIPE, auto_recipe


def stats(users, items, interactions, p90):
    """The parts of `dataset_stats` that `auto_recipe` reads, for a leave-one-out split."""
    return {
        "users": users,
        "items": items,
        "interactions": interactions,
        "density": interactions / (users * items),
        "sequence_length": {"p90": p90},
        "split": {"train_users": users, "train_interactions": interactions - 2 * users},
    }


# SASRec's ML-1M and the S3Rec split of Amazon Beauty (~9 events per user, 12k items).
ML_1M = stats(6_040, 3_416, 999_611, p90=400)
BEAUTY = stats(22_363, 12_101, 198_502, p90=15)
# LastFM-sized: a thousand users, dense enough, but few transitions.
SMALL = stats(1_090, 3_646, 52_551, p90=90)


def test_auto_on_ml_1m_statistics_is_close_to_the_ml_1m_recipe():
    settings = auto_recipe(ML_1M)
    assert set(settings) == set(AUTO_SETTINGS)
    defaults = TrainConfig()
    assert settings["max_length"] == defaults.model.max_length == 200
    assert settings["dropout"] == defaults.model.dropout == 0.2
    assert settings["weight_decay"] == defaults.weight_decay == 0.0
    assert settings["batch_size"] == defaults.batch_size == 128
    assert settings["learning_rate"] == 3e-3
    assert settings["epochs"] == defaults.epochs and settings["patience"] == defaults.patience
    assert settings["windows"] == defaults.windows and settings["schedule"] == "cosine"
    assert abs(settings["warmup_steps"] - defaults.warmup_steps) <= 20


def test_auto_on_sparse_short_histories_reads_shorter_windows_and_regularizes_more():
    beauty, ml_1m = auto_recipe(BEAUTY), auto_recipe(ML_1M)
    assert beauty["max_length"] == 20 < ml_1m["max_length"]
    assert beauty["dropout"] == 0.5 > ml_1m["dropout"]
    assert beauty["weight_decay"] > ml_1m["weight_decay"]
    # More steps per epoch than ML-1M: fewer epochs of cosine and of patience.
    assert beauty["epochs"] < ml_1m["epochs"] and 5 <= beauty["patience"] < ml_1m["patience"]


def test_auto_on_a_small_dataset_takes_smaller_batches_at_a_lower_rate():
    small = auto_recipe(SMALL)
    assert small["batch_size"] == 64 and small["learning_rate"] < 3e-3
    assert 0.2 < small["dropout"] <= 0.5  # few transitions overfit sooner
    assert small["max_length"] == 90


def test_precedence_recipe_then_file_then_flags(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('[train]\nrecipe = "auto"\nbatch_size = 32\n[train.model]\ndropout = 0.1\n')
    config = load_config(path, {"dropout": 0.3}, stats=BEAUTY)
    assert config.recipe == "auto"
    assert config.model.max_length == 20  # the recipe's
    assert config.batch_size == 32  # the file's over the recipe's
    assert config.model.dropout == 0.3  # the flag's over both
    # A flag names the recipe over the file.
    assert load_config(path, {"recipe": "ml-1m"}).model.max_length == 200


def test_default_is_today_s_settings_and_names_ml_1m():
    assert DEFAULT_RECIPE == "ml-1m"
    assert load_config(None) == load_config(None, {"recipe": "default"}) == TrainConfig()
    assert load_config(None, {"recipe": "ml-1m"}, stats=BEAUTY) == TrainConfig()
    with pytest.raises(InputError, match="statistics"):
        load_config(None, {"recipe": "auto"})
    with pytest.raises(InputError, match="--recipe"):
        load_config(None, {"recipe": "beauty"})


def test_the_checkpoint_records_the_recipe_and_what_it_resolved_to(tmp_path):
    run_cli("data", "synth", "--out", tmp_path / "raw", "--users", 300, "--items", 60)
    run_cli("data", "prepare", tmp_path / "raw", "--out", tmp_path / "ds", "-q")
    dataset_stats = json.loads(run_cli("data", "stats", tmp_path / "ds", "--json").stdout)
    out = tmp_path / "auto"
    result = run_cli(
        "train", "--data", tmp_path / "ds", "--out", out, "--recipe", "auto",
        "--epochs", 1, "--hidden-size", 32, "--threads", 1,
    )  # fmt: skip
    assert "recipe auto: max_length" in result.stderr  # what auto chose, shown
    train = json.loads((out / "config.json").read_text())["train"]
    expected = {**auto_recipe(dataset_stats), "epochs": 1}
    assert train["recipe"] == "auto"
    assert train["model"]["max_length"] == expected["max_length"]
    assert train["model"]["dropout"] == expected["dropout"]
    for name in ("weight_decay", "batch_size", "learning_rate", "warmup_steps", "epochs"):
        assert train[name] == expected[name], name
    assert train["model"]["hidden_size"] == 32  # the flag over the recipe
    # The checkpoint rebuilds its model from config.json alone.
    evaluated = run_cli("evaluate", "--data", tmp_path / "ds", "--checkpoint", out, "-q")
    assert json.loads(evaluated.stdout)["users"] == 300

"""`logitrec tune`: seeded Optuna trials on the validation split only, pruned through the
trainer's validation hook, resumable from the study file, and a best.toml that
`logitrec train --config` accepts."""

import json
import time
import tomllib

import pytest
from conftest import run_cli

from training.config import load_config
from training.data.dataset import load_dataset
from training.trainer import train
from training.tune import SEARCHED, Search, report_markdown, settings_toml


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    run_cli("data", "synth", "--out", root / "raw", "--users", 300, "--items", 60)
    run_cli("data", "prepare", root / "raw", "--out", root / "ds", "-q")
    return root / "ds"


def test_settings_toml_is_what_train_config_reads(tmp_path):
    config = load_config(
        None,
        {"learning_rate": 1.5e-05, "dropout": 0.35, "context_features": ("age",), "seed": 7},
    )
    path = tmp_path / "best.toml"
    path.write_text(settings_toml(config, ["a header", "on two lines"]))
    document = tomllib.loads(path.read_text())
    assert set(document["train"]) >= {"recipe", "learning_rate", "model"}
    assert "device" not in document["train"] and "threads" not in document["train"]
    assert load_config(path) == config


def test_search_stops_before_a_trial_it_could_only_half_give():
    now = time.perf_counter()
    assert Search(5, 60.0, 20.0, now - 1000).next_trial_seconds() is None  # long over
    assert Search(5, 100.0, 20.0, now).next_trial_seconds() == 20.0
    assert Search(5, 15.0, 20.0, now).next_trial_seconds() == pytest.approx(15.0, abs=1)
    assert Search(5, 9.0, 20.0, now).next_trial_seconds() is None


def test_report_lists_every_trial_with_its_settings():
    records = [
        {"number": 0, "state": "complete", "value": 0.1, "seconds": 3.0, "stopped": "epochs",
         "params": {"learning_rate": 1e-3, "max_length": 50}},
        {"number": 1, "state": "pruned", "value": 0.05, "seconds": 1.0,
         "stopped": "pruned after epoch 2", "params": {"learning_rate": 2e-3}},
    ]  # fmt: skip
    report = report_markdown(records, best=0)
    assert "| 0 (best) | complete | 0.1000 |" in report and "| 1 | pruned |" in report
    assert all(name in report for name in SEARCHED)


def test_without_the_final_evaluation_the_test_split_is_never_evaluated(dataset_dir, tmp_path):
    seen = []
    config = load_config(None, {"epochs": 2, "threads": 1, "max_length": 20, "hidden_size": 16})
    metrics = train(
        config,
        load_dataset(dataset_dir),
        tmp_path / "trial",
        show_progress=False,
        final_evaluation=False,
        on_validation=lambda epoch, valid: seen.append((epoch, valid["ndcg@10"])),
    )
    assert "test" not in metrics and "baselines" not in metrics
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert metrics["valid"]["ndcg@10"] == max(value for _, value in seen)
    written = json.loads((tmp_path / "trial" / "metrics.json").read_text())
    assert "test" not in written

    # A hook that raises ends the run and leaves no checkpoint (how a trial is pruned).
    class Pruned(Exception):
        pass

    def prune(epoch, valid):
        raise Pruned

    with pytest.raises(Pruned):
        train(config, load_dataset(dataset_dir), tmp_path / "pruned", show_progress=False,
              final_evaluation=False, on_validation=prune)  # fmt: skip
    assert not (tmp_path / "pruned").exists()


def _tune(dataset_dir, out, trials):
    return run_cli(
        "tune", "--data", dataset_dir, "--out", out, "--trials", trials,
        "--max-minutes", 2, "--trial-minutes", 0.15, "--epochs", 4, "--threads", 1,
        "--seed", 3,
    )  # fmt: skip


def test_tune_writes_best_settings_and_report_and_resumes_its_study(dataset_dir, tmp_path):
    out = tmp_path / "tune"
    first = _tune(dataset_dir, out, 2)
    assert first.stderr.count("valid ndcg@10") == 2  # one line per finished trial
    assert json.loads(first.stdout)["trials"] == 2
    second = _tune(dataset_dir, out, 1)  # the same study file: a third trial
    summary = json.loads(second.stdout)
    assert (summary["trials_this_call"], summary["trials"]) == (1, 3)
    trials = json.loads((out / "trials.json").read_text())
    assert [t["number"] for t in trials] == [0, 1, 2]
    assert all(t["seconds"] > 0 and set(t["params"]) == set(SEARCHED) for t in trials)
    # The first trial is the recipe the search started from (ml-1m's settings; its weight
    # decay of 0 at the search space's floor); the resumed sampler does not repeat the first
    # call's own suggestion.
    assert trials[0]["params"] == {
        "learning_rate": 3e-3, "dropout": 0.2, "weight_decay": 1e-5, "max_length": 200,
        "hidden_size": 64, "batch_size": 128,
    }  # fmt: skip
    assert trials[2]["params"] != trials[1]["params"]
    assert (out / "report.md").read_text().count("\n| ") == 4  # header and three trials

    best = summary["best"]
    assert best["value"] == max(t["value"] for t in trials if t["state"] == "complete")
    checkpoint = tmp_path / "from-best"
    run_cli(
        "train", "--data", dataset_dir, "--config", out / "best.toml", "--out", checkpoint,
        "--epochs", 1, "--max-minutes", 1, "-q",
    )  # fmt: skip
    train_settings = json.loads((checkpoint / "config.json").read_text())["train"]
    assert train_settings["learning_rate"] == pytest.approx(best["params"]["learning_rate"])
    assert train_settings["model"]["max_length"] == best["params"]["max_length"]
    assert train_settings["batch_size"] == best["params"]["batch_size"]

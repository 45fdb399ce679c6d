"""Hyperparameter search (`logitrec tune`): Optuna trials of the trainer, judged on the
validation split only, pruned epoch by epoch, within a wall-clock budget, resumable from a
SQLite study file.

Each trial trains with the trainer itself, without the final evaluation (the test split is
never evaluated), and reports every epoch's validation NDCG@10 so the pruner can stop trials
that fall behind the others at the same epoch. The best settings are written as a TOML file
that `logitrec train --config` reads, and every trial into a report.
"""

import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from logitrec.atomic import write_json, write_text
from logitrec.errors import InputError
from training.config import TrainConfig, as_dict, new_parameter_learning_rate, with_overrides
from training.data.dataset import Dataset
from training.trainer import TrainingStopped, train

# The search space, by flag names. The ranges bracket ML-1M's defaults (3e-3, 0.2, 0, 200, 64,
# 128; a weight decay of 1e-5 is as good as none) and the choices SASRec-family papers report
# for sparser datasets (dropout 0.5, windows of 50).
LEARNING_RATES = (3e-4, 1e-2)  # log scale
DROPOUTS = (0.0, 0.6)
WEIGHT_DECAYS = (1e-5, 0.1)  # log scale (AdamW's decoupled decay)
MAX_LENGTHS = (20, 50, 100, 200)
HIDDEN_SIZES = (32, 64, 128)  # two heads divide each
BATCH_SIZES = (64, 128, 256)
SEARCHED = ("learning_rate", "dropout", "weight_decay", "max_length", "hidden_size", "batch_size")
PRUNERS = ("median", "halving", "none")
# Pruning compares trials from this epoch on (the first epochs are noisy warm-up).
PRUNE_AFTER_EPOCHS = 2
STUDY_NAME = "logitrec"


def suggest_settings(trial: optuna.Trial) -> dict:
    """One trial's settings from the search space (flag names; model settings among them)."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", *LEARNING_RATES, log=True),
        "dropout": trial.suggest_float("dropout", *DROPOUTS),
        "weight_decay": trial.suggest_float("weight_decay", *WEIGHT_DECAYS, log=True),
        "max_length": trial.suggest_categorical("max_length", MAX_LENGTHS),
        "hidden_size": trial.suggest_categorical("hidden_size", HIDDEN_SIZES),
        "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
    }


def starting_settings(base: TrainConfig) -> dict:
    """The settings the search starts from, as its first trial: the recipe's own (its nearest
    point in the search space). With trials as short as a budget allows, random first
    suggestions often fall far below the recipe; judged beside them, the best of the search
    is never a recipe the trials rank below the one it started from."""

    def nearest(value, choices):
        return min(choices, key=lambda choice: abs(choice - value))

    def within(value, bounds):
        return min(max(value, bounds[0]), bounds[1])

    return {
        "learning_rate": within(new_parameter_learning_rate(base), LEARNING_RATES),
        "dropout": within(base.model.dropout, DROPOUTS),
        "weight_decay": within(base.weight_decay, WEIGHT_DECAYS),
        "max_length": nearest(base.model.max_length, MAX_LENGTHS),
        "hidden_size": nearest(base.model.hidden_size, HIDDEN_SIZES),
        "batch_size": nearest(base.batch_size, BATCH_SIZES),
    }


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=PRUNE_AFTER_EPOCHS)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=PRUNE_AFTER_EPOCHS)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise InputError(f"--pruner: expected one of {', '.join(PRUNERS)}, got {name!r}")


def open_study(path: Path, seed: int, pruner: str) -> optuna.Study:
    """The study in the SQLite file `path`, created or resumed. The sampler's seed moves on by
    the trials already there, so a resumed search does not repeat its first suggestions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        storage=f"sqlite:///{path}",
        study_name=STUDY_NAME,
        direction="maximize",
        load_if_exists=True,
        pruner=make_pruner(pruner),
    )
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


@dataclass(frozen=True)
class Search:
    """What one `logitrec tune` call may spend: trials, the whole search's seconds (counted
    from `started`, a time.perf_counter() reading) and each trial's."""

    trials: int
    seconds: float
    trial_seconds: float
    started: float

    def left(self) -> float:
        return self.started + self.seconds - time.perf_counter()

    def next_trial_seconds(self) -> float | None:
        """The next trial's budget, or None to stop: a trial given less than half of the
        others' time would be judged against them unfairly."""
        budget = min(self.trial_seconds, self.left())
        return budget if budget >= self.trial_seconds / 2 else None


class _Pruned(Exception):
    """A trial the pruner stopped (raised out of the trainer's validation hook)."""


def _reporter(trial: optuna.Trial) -> Callable[[int, dict], None]:
    def report(epoch: int, valid: dict) -> None:
        trial.report(valid["ndcg@10"], epoch)
        if trial.should_prune():
            raise _Pruned(epoch)

    return report


def run_trial(
    study: optuna.Study, base: TrainConfig, dataset: Dataset, seconds: float, scratch: Path
) -> FrozenTrial:
    """Ask the study for settings, train them for at most `seconds` on the validation split,
    and tell it the best validation NDCG@10 (or that the trial was pruned or failed)."""
    trial = study.ask()
    config = replace(with_overrides(base, suggest_settings(trial)), max_minutes=seconds / 60)
    began = time.perf_counter()
    value, state = None, TrialState.COMPLETE
    with tempfile.TemporaryDirectory(dir=scratch) as directory:
        try:
            metrics = train(
                config,
                dataset,
                Path(directory) / "checkpoint",
                show_progress=False,
                final_evaluation=False,
                on_validation=_reporter(trial),
            )
            value = metrics["valid"]["ndcg@10"]
            trial.set_user_attr("epochs", metrics["epochs_run"])
            trial.set_user_attr("stopped", metrics["stopped"])
        except _Pruned as pruned:
            state = TrialState.PRUNED
            trial.set_user_attr("stopped", f"pruned after epoch {pruned.args[0]}")
        except TrainingStopped as error:  # a non-finite loss: these settings diverge
            state = TrialState.FAIL
            trial.set_user_attr("stopped", str(error))
    trial.set_user_attr("seconds", round(time.perf_counter() - began, 1))
    return study.tell(trial, value, state=state)


def search(
    study: optuna.Study,
    base: TrainConfig,
    dataset: Dataset,
    limits: Search,
    scratch: Path,
    on_trial: Callable[[FrozenTrial], None],
) -> int:
    """Trials until `limits` run out; `on_trial` sees each as it finishes. Returns how many
    ran."""
    if not study.trials:  # a new study: the recipe itself first
        study.enqueue_trial(starting_settings(base))
    ran = 0
    while ran < limits.trials:
        seconds = limits.next_trial_seconds()
        if seconds is None:
            break
        on_trial(run_trial(study, base, dataset, seconds, scratch))
        ran += 1
    return ran


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return max(complete, key=lambda t: t.value) if complete else None


# Settings of the machine, not the model: left to the command that trains.
_MACHINE = ("device", "threads")


def settings_toml(config: TrainConfig, header: list[str]) -> str:
    """`config` as a TOML file with [train] and [train.model] tables (unset values, None, left
    out: they resolve as they did), after `header` lines as comments."""
    values = as_dict(config)
    model = values.pop("model")
    lines = [f"# {line}" for line in header] + ["", "[train]"]
    lines += [
        f"{name} = {_toml_value(value)}"
        for name, value in values.items()
        if value is not None and name not in _MACHINE
    ]
    lines += ["", "[train.model]"]
    lines += [
        f"{name} = {_toml_value(value)}" for name, value in model.items() if value is not None
    ]
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"not a TOML number: {value}")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"no TOML form for {value!r}")


def trial_records(study: optuna.Study) -> list[dict]:
    """Every trial of the study: number, state, value, seconds, how it stopped, settings."""
    return [
        {
            "number": trial.number,
            "state": trial.state.name.lower(),
            "value": trial.value,
            "seconds": trial.user_attrs.get("seconds"),
            "epochs": trial.user_attrs.get("epochs"),
            "stopped": trial.user_attrs.get("stopped"),
            "params": trial.params,
        }
        for trial in study.trials
    ]


def report_markdown(records: list[dict], best: int | None) -> str:
    """The trials as a markdown table, best marked."""
    names = SEARCHED
    lines = [
        "# logitrec tune: trials",
        "",
        "Value: best validation NDCG@10 of the trial (pruned: its last reported epoch).",
        "",
        "| trial | state | value | seconds | stopped | " + " | ".join(names) + " |",
        "|" + "---|" * (5 + len(names)),
    ]
    for record in records:
        value = "" if record["value"] is None else f"{record['value']:.4f}"
        mark = " (best)" if record["number"] == best else ""
        params = [_short(record["params"].get(name)) for name in names]
        lines.append(
            f"| {record['number']}{mark} | {record['state']} | {value} | "
            f"{record['seconds']} | {record['stopped'] or ''} | " + " | ".join(params) + " |"
        )
    return "\n".join(lines) + "\n"


def _short(value) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_results(study: optuna.Study, base: TrainConfig, out: Path, study_path: Path) -> dict:
    """best.toml (when a trial completed), trials.json and report.md in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    records = trial_records(study)
    best = best_trial(study)
    write_json(out / "trials.json", records)
    write_text(out / "report.md", report_markdown(records, best.number if best else None))
    summary = {"trials": len(records), "study": str(study_path), "best": None}
    if best is not None:
        config = with_overrides(base, best.params)
        header = [
            f"Best of {len(records)} trials of `logitrec tune` (study {study_path}, trial "
            f"{best.number}): validation NDCG@10 {best.value:.4f}.",
            "max_minutes is each trial's budget, counted from the trial's start; `logitrec "
            "train` counts its own start-up (imports, data) in it too.",
            "A --max-minutes flag overrides it: give a little more, or much more for longer "
            "training.",
            f"Use: logitrec train --data DATASET --config {out / 'best.toml'} --out CHECKPOINT",
        ]
        write_text(out / "best.toml", settings_toml(config, header))
        summary["best"] = {"trial": best.number, "value": best.value, "params": best.params}
    return summary

"""`logitrec tune`: a thin shell over training/tune.py."""

import json
from pathlib import Path

import typer

from training.budget import process_started


def tune_command(
    data: Path = typer.Option(
        ..., "--data", help="Dataset directory from `logitrec data prepare`."
    ),
    out: Path = typer.Option(
        Path("artifacts/tune"),
        "--out",
        "-o",
        help="Folder for best.toml (the best settings, for `logitrec train --config`), "
        "trials.json and report.md.",
    ),
    study: Path | None = typer.Option(
        None,
        "--study",
        help="SQLite study file (default: OUT/study.db); an existing one is resumed and "
        "this call adds trials to it.",
    ),
    trials: int = typer.Option(20, help="Most trials this call runs."),
    max_minutes: float = typer.Option(
        60.0, help="Wall-clock budget of the whole search (this call)."
    ),
    trial_minutes: float = typer.Option(
        5.0, help="Each trial's budget (`train --max-minutes`); the cosine decays within it."
    ),
    pruner: str = typer.Option(
        "median",
        help="Stop trials behind the others' validation NDCG@10 at the same epoch: median, "
        "halving (successive halving) or none.",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="TOML file with the 'train' settings the search starts from."
    ),
    recipe: str | None = typer.Option(
        None, help="Recipe the search starts from: default (= ml-1m), ml-1m or auto."
    ),
    epochs: int | None = typer.Option(None, help="Most epochs per trial."),
    patience: int | None = typer.Option(None, help="Epochs without validation gain (per trial)."),
    valid_users: int | None = typer.Option(
        None, help="Validate on a fixed random subset of this many users (faster trials)."
    ),
    seed: int = typer.Option(42, help="Seed of the sampler and of every trial's training."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    threads: int | None = typer.Option(None, help="CPU threads."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per trial."),
) -> None:
    """Search learning rate, dropout, weight decay, window length, hidden size and batch size
    with Optuna (TPE, seeded) on the validation split only; write the best settings as a TOML
    file for `logitrec train --config` and a report of every trial."""
    started = process_started()  # --max-minutes bounds the whole search
    import optuna

    from logitrec.errors import InputError
    from training.config import load_config
    from training.data.dataset import load_dataset
    from training.data.stats import dataset_stats
    from training.tune import Search, open_study, search, write_results

    if trials < 1 or max_minutes <= 0 or trial_minutes <= 0:
        raise InputError("--trials, --max-minutes and --trial-minutes: expected positive numbers")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours
    dataset = load_dataset(data)
    overrides = {
        "recipe": recipe,
        "epochs": epochs,
        "patience": patience,
        "valid_users": valid_users,
        "seed": seed,
        "device": device,
        "threads": threads,
        "max_minutes": trial_minutes,
    }
    base = load_config(config, overrides, stats=dataset_stats(dataset))
    study_path = study or out / "study.db"
    opened = open_study(study_path, seed, pruner)
    out.mkdir(parents=True, exist_ok=True)

    def finished(trial) -> None:
        summary = write_results(opened, base, out, study_path)
        if not quiet:
            typer.echo(_trial_line(trial, summary["best"]), err=True)

    limits = Search(trials, max_minutes * 60, trial_minutes * 60, started)
    ran = search(opened, base, dataset, limits, out, finished)
    summary = write_results(opened, base, out, study_path)
    typer.echo(json.dumps({"trials_this_call": ran, **summary, "out": str(out)}, indent=2))


def _trial_line(trial, best: dict | None) -> str:
    value = "" if trial.value is None else f"{trial.value:.4f}"
    params = ", ".join(
        f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}"
        for name, value in trial.params.items()
    )
    leader = f"best {best['value']:.4f} (trial {best['trial']})" if best else "best -"
    stopped = trial.user_attrs.get("stopped") or ""
    return (
        f"trial {trial.number:>3}  {trial.state.name.lower():<8} valid ndcg@10 {value:<6}  "
        f"{leader}  {trial.user_attrs.get('seconds', 0):.0f} s  {stopped}  [{params}]"
    )

"""`logitrec train`, `logitrec evaluate` and `logitrec checkpoint upgrade`: thin shells over
trainer.train, evaluate.evaluate_split and serving_inputs.upgrade_checkpoint."""

import json
from pathlib import Path

import typer

from logitrec.errors import InputError
from training.budget import process_started

_NOT_SETTINGS = (
    "data",
    "out",
    "config",
    "resume",
    "incremental",
    "force",
    "quiet",
    "eval_users",
    "started",
)


def train_command(
    data: Path = typer.Option(
        ..., "--data", help="Dataset directory from `logitrec data prepare`."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint directory to write."),
    config: Path | None = typer.Option(
        None, "--config", help="TOML file with 'train' settings (over the recipe's)."
    ),
    recipe: str | None = typer.Option(
        None,
        help="Where the settings start: default (= ml-1m for now), ml-1m (the settings tuned on "
        "MovieLens-1M), or auto (window, dropout, weight decay, batch, learning rate, warm-up, "
        "epochs and patience derived from this dataset's statistics; not the default until "
        "measured). --config and the flags below override it.",
    ),
    backbone: str | None = typer.Option(None, help="scratch, minilm, or a local HF model dir."),
    epochs: int | None = typer.Option(None, help="Maximum epochs."),
    max_minutes: float | None = typer.Option(
        None,
        help="Wall-time budget of the whole command, final evaluation included; the cosine "
        "decays within it, an epoch may stop part-way, and a final evaluation that would "
        "overrun ranks a sample of users.",
    ),
    batch_size: int | None = typer.Option(None, help="Sequences per step (per process)."),
    windows: str | None = typer.Option(
        None, help="all (default: whole histories, in windows) or newest (the newest window)."
    ),
    learning_rate: float | None = typer.Option(None, help="LR of new parameters."),
    encoder_learning_rate: float | None = typer.Option(None, help="LR of pretrained weights."),
    weight_decay: float | None = typer.Option(None, help="AdamW weight decay."),
    warmup_steps: int | None = typer.Option(None, help="Linear warm-up steps."),
    schedule: str | None = typer.Option(None, help="cosine or constant."),
    max_length: int | None = typer.Option(None, help="History window (items)."),
    hidden_size: int | None = typer.Option(None, help="Hidden size (scratch)."),
    num_layers: int | None = typer.Option(None, help="Transformer layers (scratch)."),
    num_heads: int | None = typer.Option(None, help="Attention heads (scratch)."),
    ffn_size: int | None = typer.Option(None, help="Feed-forward width (scratch; default hidden)."),
    dropout: float | None = typer.Option(None, help="Dropout (scratch)."),
    attention_dropout: float | None = typer.Option(
        None, help="Dropout on attention weights (scratch; default: --dropout)."
    ),
    item_text: bool | None = typer.Option(
        None, "--item-text/--no-item-text", help="Title embeddings."
    ),
    item_id_dropout: float | None = typer.Option(
        None,
        help="With item text: chance per item and step of reading it from its title alone "
        "(teaches the title projection to stand for new items; default 0).",
    ),
    tie_weights: bool | None = typer.Option(
        None, "--tie-weights/--no-tie-weights", help="Head shares the input item vectors."
    ),
    context_features: str | None = typer.Option(
        None, help="User context columns: auto (default), none, or NAME,NAME."
    ),
    ema_decay: float | None = typer.Option(
        None, help="Keep a moving average of the weights (decay per step; 0: off)."
    ),
    loss: str | None = typer.Option(None, help="ce, bce or sampled-softmax."),
    negatives: int | None = typer.Option(None, help="Negatives for bce / sampled-softmax."),
    negative_sampling: str | None = typer.Option(
        None,
        help="Negatives from: uniform, popularity, or auto (default: popularity for "
        "sampled-softmax, uniform for bce).",
    ),
    logq_correction: bool | None = typer.Option(
        None,
        "--logq-correction/--no-logq-correction",
        help="Sampled softmax: correct negatives' logits by log(expected count) (default on).",
    ),
    in_batch_negatives: bool | None = typer.Option(
        None,
        "--in-batch-negatives/--no-in-batch-negatives",
        help="Also use the batch's targets (up to --negatives) as negatives (default off).",
    ),
    sparse_rows: bool | None = typer.Option(
        None,
        "--sparse-rows/--no-sparse-rows",
        help="Row-wise updates of the item tables (default: on for bce / sampled-softmax, "
        "one process).",
    ),
    patience: int | None = typer.Option(
        None, help="Epochs without validation gain before stopping."
    ),
    valid_users: int | None = typer.Option(
        None, help="Validate on a fixed random subset of this many users (default: all)."
    ),
    train_valid_items: bool | None = typer.Option(
        None,
        "--train-valid-items/--no-train-valid-items",
        help="Users outside the validation subset train on their validation item (default off).",
    ),
    eval_users: int | None = typer.Option(
        None,
        help="Final evaluation on a fixed random sample of this many users per split (seeded "
        "by --seed), with 95% intervals (default: all users).",
    ),
    seed: int | None = typer.Option(None, help="Random seed."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    threads: int | None = typer.Option(None, help="CPU threads."),
    resume: Path | None = typer.Option(None, help="Continue from this checkpoint's resume state."),
    incremental: bool = typer.Option(
        False,
        "--incremental",
        help="With --resume: update that checkpoint on --data, a dataset extending its own "
        "(`data prepare --append-to`): new items get rows, and it trains on the interactions it "
        "has not learned from plus --replay-ratio times as many it has.",
    ),
    replay_ratio: float | None = typer.Option(
        None, help="--incremental: replayed windows of learned interactions per new one (1)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing checkpoint directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Train a logit language model; keep the best epoch by validation NDCG@10."""
    started = process_started()  # --max-minutes bounds the whole command
    overrides = {k: v for k, v in locals().items() if k not in _NOT_SETTINGS}
    from training.config import load_config
    from training.data.dataset import load_dataset
    from training.data.stats import dataset_stats
    from training.evaluate import check_eval_users
    from training.trainer import train

    check_eval_users(eval_users)  # before training, not after it

    if context_features is not None and context_features not in ("auto",):
        names = context_features.split(",") if context_features != "none" else []
        overrides["context_features"] = tuple(f.strip() for f in names if f.strip())
    if incremental:
        _refuse_model_settings(overrides)
    # The flags and the file are checked before the dataset is read (a bad flag is found at
    # once); `auto` then needs the dataset's statistics.
    load_config(config, {**overrides, "recipe": "ml-1m"})
    dataset = load_dataset(data)
    train_config = load_config(config, overrides, stats=dataset_stats(dataset))
    if not quiet and train_config.recipe != "ml-1m":
        typer.echo(f"recipe {train_config.recipe}: {recipe_summary(train_config)}", err=True)
    metrics = train(
        train_config,
        dataset,
        out,
        resume_from=resume,
        force=force,
        show_progress=not quiet,
        eval_users=eval_users,
        incremental=incremental,
        started=started,
    )
    if metrics:
        typer.echo(
            json.dumps(
                {"checkpoint": str(out), "test": metrics["test"], "valid": metrics["valid"]},
                indent=2,
            )
        )


def recipe_summary(config) -> str:
    """The settings `auto` derives, as this run resolved them (files and flags included)."""
    from training.config import as_dict
    from training.recipes import AUTO_SETTINGS

    settings = as_dict(config)
    values = {**settings, **settings["model"]}
    return ", ".join(f"{name} {values[name]}" for name in AUTO_SETTINGS)


def _refuse_model_settings(overrides: dict) -> None:
    """An incremental run keeps the checkpoint's model: a shape flag would be silently unused."""
    from dataclasses import fields

    from training.config import ModelConfig

    given = [
        name for name in (f.name for f in fields(ModelConfig)) if overrides.get(name) is not None
    ]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise InputError(f"{flag}: with --incremental the model's settings come from --resume")


def evaluate_command(
    data: Path = typer.Option(..., "--data", help="Dataset directory."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint directory."),
    split: str = typer.Option("test", help="test or valid."),
    batch_size: int = typer.Option(256, help="Users per batch."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    baselines: bool = typer.Option(False, "--baselines", help="Also evaluate most-popular."),
    eval_users: int | None = typer.Option(
        None,
        help="Evaluate a fixed random sample of this many users, with 95% intervals "
        "(default: all users).",
    ),
    eval_seed: int = typer.Option(42, help="Seed that draws the --eval-users sample."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    as_json: bool = typer.Option(True, "--json/--table", help="One JSON object (default)."),
) -> None:
    """Full-ranking HR/NDCG/MRR at 10 and 20 on a split, seen items excluded, and what the
    model's top-10 lists recommend: catalog coverage, Gini index, tail share, average
    popularity and intra-list diversity (genres when the items have them, item vectors)."""
    from training.build import resolve_device
    from training.checkpoint import check_catalog, load_checkpoint
    from training.data.dataset import load_dataset
    from training.evaluate import check_eval_users, evaluate_split

    if split not in ("test", "valid"):
        raise InputError(f"--split: expected test or valid, got {split!r}")
    check_eval_users(eval_users)
    dataset = load_dataset(data)
    target_device = resolve_device(device)
    model, config = load_checkpoint(checkpoint, target_device)
    check_catalog(config, dataset.items, data, checkpoint)
    evaluated = evaluate_split(
        model,
        config,
        dataset,
        split,
        device=target_device,
        batch_size=batch_size,
        baselines=baselines,
        eval_users=eval_users,
        seed=eval_seed,
        show_progress=not quiet,
        beyond_accuracy=True,
    )
    result = {"split": split, "checkpoint": str(checkpoint), **evaluated.model}
    if baselines:
        result["most_popular"] = evaluated.most_popular
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            typer.echo(f"{key:>14}  {value}")


checkpoint_app = typer.Typer(
    help="Maintain checkpoint directories.", no_args_is_help=True, pretty_exceptions_enable=False
)


@checkpoint_app.command("upgrade")
def upgrade_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint directory to complete in place."),
    data: Path = typer.Option(..., "--data", help="The dataset it was trained on."),
) -> None:
    """Add what an older checkpoint lacks for export (item popularity, parity histories)."""
    from training.serving_inputs import upgrade_checkpoint

    written = upgrade_checkpoint(checkpoint, data)
    typer.echo(json.dumps({"checkpoint": str(checkpoint), "written": written}, indent=2))


@checkpoint_app.command("add-items")
def add_items_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint of a model that reads item text."),
    items: Path = typer.Option(
        ..., "--items", help="Table of new items: an id column and a title (CSV/TSV/Parquet)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The grown checkpoint to write."),
    items_id_col: str = typer.Option("item_id", help="Item id column of the table."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Add new items to a checkpoint's catalog by their text, without training (cold start):
    each new item's vector is its title's projection."""
    from training.data.tables import TableSource
    from training.incremental import add_items

    added = add_items(checkpoint, TableSource(path=items, id_col=items_id_col), out, force=force)
    typer.echo(json.dumps(added, indent=2))

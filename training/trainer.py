"""The training run: AdamW, warm-up + cosine, clipping, early stopping on validation NDCG@10,
the best epoch kept in the checkpoint directory.

Runs unchanged on CPU and CUDA, and under `torchrun` (DDP: gloo on CPU, NCCL on CUDA), where
each process trains on its shard of users and only rank 0 writes the checkpoint. The steps of
an epoch are in loop.py, the state carried between epochs (and across `--resume`) in state.py.
"""

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from logitrec.atomic import atomic_directory, write_json
from logitrec.errors import InputError
from training import checkpoint as ckpt
from training.averaging import WeightAverage
from training.batches import evaluation_rows, validated_users
from training.build import (
    Distributed,
    build_model,
    build_objective,
    build_optimizer,
    build_windows,
    init_distributed,
    resolve_device,
    seed_everything,
    training_ends,
    uses_sparse_rows,
)
from training.checkpoint import CheckpointConfig
from training.config import TrainConfig
from training.data.dataset import Dataset
from training.evaluate import ScoreFunction, evaluate_scores, evaluate_split, model_scores
from training.features import context_indices
from training.incremental import incremental_config, incremental_windows, start_from
from training.loop import (
    Epoch,
    Optimisation,
    TrainingWindows,
    epoch_batches,
    steps_per_epoch,
    train_one_epoch,
)
from training.model import LogitLM
from training.report import append_log, log_epoch, plot_curve
from training.serving_inputs import write_serving_inputs
from training.state import TrainerState, load_resume, save_resume, stop_reason

__all__ = ["TrainingStopped", "resolve_device", "train"]


class TrainingStopped(InputError):
    """Training could not go on (NaN loss); the best checkpoint so far was kept."""


@dataclass(frozen=True)
class Validation:
    """What every epoch validates on: the validation rows, the users counted (None: all) and
    the model's score function."""

    rows: dict[str, np.ndarray]
    subset: np.ndarray | None
    score: ScoreFunction


@dataclass(frozen=True)
class Run:
    """One training run's parts, set up once by `_set_up`."""

    config: TrainConfig
    dataset: Dataset
    model: LogitLM
    checkpoint: CheckpointConfig
    optimisation: Optimisation
    windows: TrainingWindows
    validation: Validation
    distributed: Distributed
    show: bool  # progress output (rank 0 only)


def train(
    config: TrainConfig,
    dataset: Dataset,
    out_dir: Path,
    *,
    resume_from: Path | None = None,
    force: bool = False,
    show_progress: bool = True,
    eval_users: int | None = None,
    incremental: bool = False,
) -> dict:
    """Train, keep the best epoch by validation NDCG@10, and write the checkpoint directory.

    With `eval_users`, the final evaluation of each split runs on a fixed random sample of that
    many users (drawn with the run's seed) and reports 95% intervals. With `incremental`,
    `resume_from` is a checkpoint trained on a dataset that `dataset` extends: its model grows
    to the new catalog and trains on what it has not learned (training/incremental.py)."""
    if incremental:
        if resume_from is None:
            raise InputError("--incremental: needs --resume CHECKPOINT (the model to update)")
        config = incremental_config(config, resume_from)
    run, state = _set_up(config, dataset, resume_from, show_progress, incremental)
    target = Path(out_dir)
    main = run.distributed.is_main
    writer = (
        atomic_directory(target, force=force or resume_from is not None)
        if main
        else contextlib.nullcontext()
    )
    with writer as staging:
        if main:
            _write_inputs(run, staging, None if incremental else resume_from)
        stopped, failure = _train_epochs(run, state, staging)
        if main:
            metrics = _finish(
                run, state, staging, stopped=stopped, failure=failure, eval_users=eval_users
            )
    if run.distributed.world_size > 1:
        dist.barrier()
    if failure:
        raise TrainingStopped(
            f"{failure}; kept the best checkpoint (epoch {state.best_epoch}) in {target}. "
            "Lower --learning-rate or --grad-clip and resume with --resume."
        )
    return metrics if main else {}


def _set_up(
    config: TrainConfig,
    dataset: Dataset,
    resume_from: Path | None,
    show: bool,
    incremental: bool = False,
) -> tuple[Run, TrainerState]:
    """Process, seeds, model, optimizer (resumed when asked), windows and validation rows.

    An incremental run starts from the checkpoint's best weights, grown to the new catalog,
    with a fresh optimizer and schedule (the old moments have the old shapes)."""
    distributed, device = init_distributed(resolve_device(config.device))
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    if int((dataset.split.valid_position >= 0).sum()) == 0:
        raise InputError(f"{dataset.path}: the dataset has no validation targets to stop on")

    learned = None
    if incremental:
        model, checkpoint_config, learned = start_from(resume_from, config, dataset)
    else:
        model, checkpoint_config = build_model(config, dataset)
    state = TrainerState()
    sparse_rows = uses_sparse_rows(config, distributed.world_size)
    optimizer = build_optimizer(model, config, sparse_rows)
    model.to(device)
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    if resume_from is not None and not incremental:
        state = load_resume(model, optimizer, average, config, Path(resume_from))

    context = context_indices(dataset.users, checkpoint_config.context_vocabulary)
    valid_rows = evaluation_rows(dataset, "valid", config.model.max_length)
    validation = Validation(
        valid_rows,
        # From the checkpoint's own record, so `logitrec evaluate --split valid` counts the
        # same users.
        validated_users(checkpoint_config, len(valid_rows["targets"])),
        model_scores(model, context, device, amp=config.amp),
    )
    if learned is None:
        windows = build_windows(dataset, config, validation.rows, validation.subset, context)
    else:
        train_end = training_ends(dataset, config, validation.rows, validation.subset)
        windows = incremental_windows(dataset, config, train_end, learned, context)
    objective = build_objective(model, config, windows, device, sparse_rows)
    if distributed.world_size > 1:
        objective = torch.nn.parallel.DistributedDataParallel(objective)
    optimisation = Optimisation(
        objective,
        optimizer,
        average,
        config,
        device,
        total_steps=steps_per_epoch(windows.lengths, config, distributed.world_size)
        * config.epochs,
        started=time.perf_counter() - state.elapsed,
    )
    run = Run(
        config=config,
        dataset=dataset,
        model=model,
        checkpoint=checkpoint_config,
        optimisation=optimisation,
        windows=windows,
        validation=validation,
        distributed=distributed,
        show=show and distributed.is_main,
    )
    return run, state


def _write_inputs(run: Run, staging: Path, resume_from: Path | None) -> None:
    """What the checkpoint holds from the start: config, catalog, parity sample."""
    ckpt.write_config(staging, run.checkpoint)
    write_serving_inputs(staging, run.dataset, run.checkpoint)
    validation = run.validation
    trained = training_ends(run.dataset, run.config, validation.rows, validation.subset)
    ckpt.write_trained_users(staging, run.dataset.users, trained)
    if resume_from is not None and (Path(resume_from) / "model.safetensors").is_file():
        # The best weights so far travel with the resumed run.
        shutil.copyfile(Path(resume_from) / "model.safetensors", staging / "model.safetensors")


def _train_epochs(run: Run, state: TrainerState, staging: Path | None) -> tuple[str, str | None]:
    """Epochs until one of the stop reasons; returns it and, after a non-finite loss, why."""
    for number in range(state.epoch + 1, run.config.epochs + 1):
        failure = _one_epoch(run, state, number, staging)
        if failure:
            return "nan", failure
        reason = stop_reason(state, run.config)
        if reason:
            return reason, None
    return "epochs", None


def _one_epoch(run: Run, state: TrainerState, number: int, staging: Path | None) -> str | None:
    """Train (and validate, when due) one epoch; returns why the loss went non-finite, if it did."""
    config, distributed = run.config, run.distributed
    run.model.train()
    batches = epoch_batches(
        run.windows.lengths, config, number, distributed.rank, distributed.world_size
    )
    epoch_start = time.perf_counter()
    outcome = train_one_epoch(
        run.optimisation, run.windows, Epoch(number, batches, state.step), show=run.show
    )
    state.step = outcome.step
    if outcome.failure:
        return f"{outcome.failure} (epoch {number})"
    state.epoch = number
    state.elapsed = time.perf_counter() - run.optimisation.started
    epoch_seconds = time.perf_counter() - epoch_start
    # This process's windows; under torchrun every rank trains as many.
    sequences = sum(len(batch) for batch in batches) * distributed.world_size
    record = {
        "epoch": number,
        "step": state.step,
        "loss": outcome.loss,
        "lr": run.optimisation.optimizer.param_groups[0]["lr"],
        "epoch_seconds": round(epoch_seconds, 2),
        "sequences_per_second": round(sequences / epoch_seconds, 1),
        "elapsed_seconds": round(state.elapsed, 1),
    }
    if number % config.eval_every == 0 or number == config.epochs:
        record["valid"] = _validate(run, state, number, staging)
    state.history.append(record)
    if distributed.is_main:
        log_epoch(record, state, run.show)
        append_log(staging / "train_log.jsonl", record)
    return None


def _validate(run: Run, state: TrainerState, number: int, staging: Path | None) -> dict:
    """Validation metrics of this epoch's weights (the average's, with --ema-decay); the best
    so far are saved as model.safetensors."""
    run.model.eval()
    average = run.optimisation.average
    validation = run.validation
    with average.swapped_in() if average else contextlib.nullcontext():
        with torch.no_grad():
            valid = evaluate_scores(
                validation.score,
                validation.rows,
                device=run.optimisation.device,
                subset=validation.subset,
                show_progress=run.show,
            )
        improved = state.observe(valid["ndcg@10"], number, run.config.eval_every)
        if improved and run.distributed.is_main:
            ckpt.save_weights(run.model, staging / "model.safetensors")
    return valid


def _finish(
    run: Run,
    state: TrainerState,
    staging: Path,
    *,
    stopped: str,
    failure: str | None,
    eval_users: int | None = None,
) -> dict:
    """Resume state (unless the last weights are unusable), final metrics and the curve."""
    if state.best_epoch == 0:
        raise TrainingStopped(
            f"{failure or 'training ended'} before any epoch finished; nothing was written"
        )
    if failure is None:  # after a non-finite loss the last weights are unusable
        optimisation = run.optimisation
        save_resume(
            staging / "resume", run.model, optimisation.optimizer, optimisation.average, state
        )
    outcome = {"stopped": stopped, "failure": failure}
    return _final_metrics(run, state, staging, outcome, eval_users)


def _final_metrics(
    run: Run, state: TrainerState, staging: Path, outcome: dict, eval_users: int | None
) -> dict:
    """The best weights' metrics on both splits, and the baseline's, in metrics.json (on a
    sample of `eval_users` users per split, with intervals, when given)."""
    ckpt.load_weights(run.model, staging / "model.safetensors")
    run.model.eval()
    device = run.optimisation.device
    evaluation_started = time.perf_counter()
    results = {
        split: evaluate_split(
            run.model,
            run.checkpoint,
            run.dataset,
            split,
            device=device,
            baselines=True,
            amp=run.config.amp,
            eval_users=eval_users,
            seed=run.config.seed,
            show_progress=run.show,
        )
        for split in ("valid", "test")
    }
    metrics = {
        **{split: result.model for split, result in results.items()},
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        **outcome,
        "wall_seconds": round(state.elapsed, 1),
        # The final evaluation (both splits, model and baseline), outside wall_seconds.
        "evaluation_seconds": round(time.perf_counter() - evaluation_started, 1),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "baselines": {
            "most_popular": {split: result.most_popular for split, result in results.items()}
        },
    }
    write_json(staging / "metrics.json", metrics)
    plot_curve(state.history, staging / "training_curve.png")
    return metrics

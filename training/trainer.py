"""The training run: AdamW, warm-up + cosine, clipping, early stopping on validation NDCG@10,
the best epoch kept in the checkpoint directory.

Runs unchanged on CPU and CUDA, and under `torchrun` (DDP: gloo on CPU, NCCL on CUDA), where
each process trains on its shard of users and only rank 0 writes the checkpoint. The steps of
an epoch are in loop.py, the state carried between epochs (and across `--resume`) in state.py,
the time budget (`--max-minutes` for the whole command, final evaluation included) in
budget.py: an epoch stops between steps when training has used its share, that partial
epoch is validated like any other, and a final evaluation that would still overrun ranks a
sample of users.
"""

import contextlib
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from logitrec.atomic import atomic_directory, write_json
from logitrec.errors import InputError
from training import checkpoint as ckpt
from training.averaging import WeightAverage
from training.batches import evaluation_rows, validated_users
from training.budget import Budget, Workload
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
from training.evaluate import (
    ScoreFunction,
    evaluate_scores,
    evaluate_split,
    model_scores,
    popularity_ranks,
)
from training.features import context_indices
from training.incremental import incremental_config, incremental_windows, start_from
from training.loop import (
    Epoch,
    EpochOutcome,
    Optimisation,
    StopCheck,
    TrainingWindows,
    epoch_batches,
    steps_per_epoch,
    train_one_epoch,
)
from training.model import LogitLM
from training.report import append_log, log_epoch, plot_curve
from training.serving_inputs import write_serving_inputs
from training.state import TrainerState, load_resume, save_resume, stop_reason

__all__ = ["TrainingStopped", "ValidationHook", "resolve_device", "train"]

# Called after every validation with the epoch's number and its validation metrics; it may
# raise to end the run (`logitrec tune` prunes a trial that way), leaving no checkpoint.
ValidationHook = Callable[[int, dict], None]


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
class Ending:
    """What happens after the last epoch: the final evaluation of both splits (off for
    `logitrec tune`, which must not see the test split) on `eval_users` users per split (None:
    all), and when the command started (time.perf_counter())."""

    final_evaluation: bool = True
    eval_users: int | None = None
    started: float = 0.0


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
    budget: Budget
    ending: Ending
    on_validation: ValidationHook | None = None


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
    started: float | None = None,
    final_evaluation: bool = True,
    on_validation: ValidationHook | None = None,
) -> dict:
    """Train, keep the best epoch by validation NDCG@10, and write the checkpoint directory.

    With `eval_users`, the final evaluation of each split runs on a fixed random sample of that
    many users (drawn with the run's seed) and reports 95% intervals. With `incremental`,
    `resume_from` is a checkpoint trained on a dataset that `dataset` extends: its model grows
    to the new catalog and trains on what it has not learned (training/incremental.py).

    `config.max_minutes` bounds everything from `started` (the command's time.perf_counter()
    at its start; default: now) to the checkpoint written. Without `final_evaluation` only the
    validation split is ever evaluated (metrics hold the best epoch's validation metrics);
    `on_validation` sees each validation as it happens."""
    ending = Ending(
        final_evaluation, eval_users, time.perf_counter() if started is None else started
    )
    if incremental:
        if resume_from is None:
            raise InputError("--incremental: needs --resume CHECKPOINT (the model to update)")
        config = incremental_config(config, resume_from)
    run, state = _set_up(
        config, dataset, resume_from, show_progress, incremental, ending, on_validation
    )
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
            metrics = _finish(run, state, staging, stopped=stopped, failure=failure)
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
    incremental: bool,
    ending: Ending,
    on_validation: ValidationHook | None,
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
    budget = _budget(config, dataset, validation, ending, state.elapsed)
    if budget.bounded:
        budget.costs.rank_per_user = _rank_seconds_per_user(model, validation, device)
    optimisation = Optimisation(
        objective,
        optimizer,
        average,
        config,
        device,
        total_steps=steps_per_epoch(windows.lengths, config, distributed.world_size)
        * config.epochs,
        started=time.perf_counter() - state.elapsed,
        budget=budget,
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
        budget=budget,
        ending=ending,
        on_validation=on_validation,
    )
    return run, state


def _budget(
    config: TrainConfig,
    dataset: Dataset,
    validation: Validation,
    ending: Ending,
    trained_seconds: float,
) -> Budget:
    """The command's budget, counted from its start less the training time of the runs it
    resumes (the cosine spans them all), with what its end will rank and write."""
    validated = _validated_count(validation)
    final_users: tuple[int, ...] = ()
    if ending.final_evaluation:
        tested = int((dataset.split.test_position >= 0).sum())
        final_users = tuple(min(n, ending.eval_users or n) for n in (validated, tested))
    # The resume state: the weights, AdamW's two moments of each, and the weight average.
    weight_files = 3 + (1 if config.ema_decay else 0)
    budget = Budget(
        config.max_minutes * 60 if config.max_minutes else None,
        ending.started - trained_seconds,
        Workload(validated, final_users, weight_files),
    )
    if budget.bounded and final_users:
        budget.costs.baseline_per_user = _baseline_seconds_per_user(dataset, validation)
    return budget


def _validated_count(validation: Validation) -> int:
    if validation.subset is None:
        return len(validation.rows["targets"])
    return len(validation.subset)


# Users ranked before training to price the budget's validation and final evaluation.
CALIBRATION_USERS = 64


def _rank_seconds_per_user(model: torch.nn.Module, validation: Validation, device) -> float:
    """The model's seconds to rank one user, timed on a few validation users before training.
    Without it the first epoch would price ranking by a training step (forward, backward and
    the loss at every position of a window): several times too dear, so a short budget (a
    `logitrec tune` trial) stopped after a few steps to keep room for a validation that costs
    far less. The weights do not change the cost, so the untrained model stands in."""
    order = validation.subset
    if order is None:
        order = np.arange(len(validation.rows["targets"]))
    sample = order[:CALIBRATION_USERS]
    if len(sample) == 0:
        return 0.0
    model.eval()
    began = time.perf_counter()
    with torch.no_grad():
        evaluate_scores(validation.score, validation.rows, device=device, subset=sample)
    model.train()
    return (time.perf_counter() - began) / len(sample)


def _baseline_seconds_per_user(dataset: Dataset, validation: Validation) -> float:
    """The most-popular baseline's seconds per user, timed on the validation rows (it costs a
    user's history, so the validation split stands for both)."""
    order = validation.subset
    if order is None:
        order = np.arange(len(validation.rows["targets"]))
    began = time.perf_counter()
    popularity_ranks(dataset, validation.rows, order)
    return (time.perf_counter() - began) / max(1, len(order))


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
        outcome = _one_epoch(run, state, number, staging)
        if outcome.failure:
            return "nan", f"{outcome.failure} (epoch {number})"
        budget = run.budget
        # Less time left than a validation pass takes: training on would cost more to check
        # than it could add (and the cosine has all but reached zero).
        out_of_time = budget.bounded and _agreed(
            outcome.cut_short or budget.training_left() < budget.validation_seconds(), run
        )
        reason = stop_reason(state, run.config, out_of_time=out_of_time)
        if reason:
            return reason, None
    return "epochs", None


def _agreed(flag: bool, run: Run) -> bool:
    """`flag` if any process raised it: under torchrun every rank must stop at the same step
    (DDP would wait forever for one that went on)."""
    if run.distributed.world_size == 1:
        return flag
    value = torch.tensor([int(flag)], device=run.optimisation.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _stop_check(run: Run) -> StopCheck | None:
    """Between steps: stop once the next step would end past the time training may take."""
    budget = run.budget
    if not budget.bounded:
        return None

    def stop(step_seconds: float, windows: int) -> bool:
        budget.costs.training_per_window = step_seconds / max(1, windows)
        return _agreed(budget.training_left() < step_seconds, run)

    return stop


def _one_epoch(run: Run, state: TrainerState, number: int, staging: Path | None) -> EpochOutcome:
    """Train (and validate, when due or cut short) one epoch."""
    config, distributed = run.config, run.distributed
    run.model.train()
    batches = epoch_batches(
        run.windows.lengths, config, number, distributed.rank, distributed.world_size
    )
    epoch_start = time.perf_counter()
    outcome = train_one_epoch(
        run.optimisation,
        run.windows,
        Epoch(number, batches, state.step, _stop_check(run)),
        show=run.show,
    )
    state.step = outcome.step
    if outcome.failure:
        return outcome
    state.epoch = number
    state.elapsed = time.perf_counter() - run.optimisation.started
    epoch_seconds = time.perf_counter() - epoch_start
    # This process's windows; under torchrun every rank trains as many.
    trained = batches[: outcome.steps_taken]
    sequences = sum(len(batch) for batch in trained) * distributed.world_size
    record = {
        "epoch": number,
        "step": state.step,
        "loss": outcome.loss,
        "lr": run.optimisation.optimizer.param_groups[0]["lr"],
        "epoch_seconds": round(epoch_seconds, 2),
        "sequences_per_second": round(sequences / epoch_seconds, 1),
        "elapsed_seconds": round(state.elapsed, 1),
    }
    if outcome.cut_short:  # the time budget: the steps it took, of the epoch's
        record["partial"] = {"steps": outcome.steps_taken, "of": len(batches)}
    if number % config.eval_every == 0 or number == config.epochs or outcome.cut_short:
        record["valid"] = _validate(run, state, number, staging)
    state.history.append(record)
    if distributed.is_main:
        log_epoch(record, state, run.show)
        append_log(staging / "train_log.jsonl", record)
    if "valid" in record and run.on_validation is not None:
        run.on_validation(number, record["valid"])
    return outcome


def _validate(run: Run, state: TrainerState, number: int, staging: Path | None) -> dict:
    """Validation metrics of this epoch's weights (the average's, with --ema-decay); the best
    so far are saved as model.safetensors."""
    run.model.eval()
    average = run.optimisation.average
    validation = run.validation
    costs = run.budget.costs
    with average.swapped_in() if average else contextlib.nullcontext():
        began = time.perf_counter()
        with torch.no_grad():
            valid = evaluate_scores(
                validation.score,
                validation.rows,
                device=run.optimisation.device,
                subset=validation.subset,
                show_progress=run.show,
            )
        costs.rank_per_user = (time.perf_counter() - began) / max(1, valid["users"])
        improved = state.observe(valid["ndcg@10"], number, run.config.eval_every)
        if improved and run.distributed.is_main:
            began = time.perf_counter()
            ckpt.save_weights(run.model, staging / "model.safetensors")
            costs.weights_file = time.perf_counter() - began
    return valid


def _finish(
    run: Run,
    state: TrainerState,
    staging: Path,
    *,
    stopped: str,
    failure: str | None,
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
    metrics = {
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped": stopped,
        "failure": failure,
        "wall_seconds": round(state.elapsed, 1),
        "device": str(run.optimisation.device),
        "threads": torch.get_num_threads(),
    }
    if run.ending.final_evaluation:
        metrics = _final_metrics(run, staging) | metrics
    else:  # the best epoch's own validation: the test split stays unread
        best = next(r for r in state.history if r["epoch"] == state.best_epoch)
        metrics = {"valid": best["valid"], **metrics}
    plot_curve(state.history, staging / "training_curve.png")
    metrics.update(run.budget.record())
    # Everything from the command's start but the directory's rename and the printout.
    metrics["total_seconds"] = round(time.perf_counter() - run.ending.started, 1)
    write_json(staging / "metrics.json", metrics)
    return metrics


def _final_metrics(run: Run, staging: Path) -> dict:
    """The best weights' metrics on both splits, and the baseline's (on a sample of users per
    split, with intervals, when --eval-users asks or the time budget leaves too little)."""
    ckpt.load_weights(run.model, staging / "model.safetensors")
    run.model.eval()
    device = run.optimisation.device
    eval_users, sampled = run.budget.final_sample(run.ending.eval_users)
    if run.show:
        tqdm.write(
            "final evaluation: valid and test splits, model and most-popular baseline"
            + (f", {eval_users} users per split ({sampled['reason']})" if sampled else ""),
            file=sys.stderr,
        )
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
    return {
        **{split: result.model for split, result in results.items()},
        # The final evaluation (both splits, model and baseline), outside wall_seconds.
        "evaluation_seconds": round(time.perf_counter() - evaluation_started, 1),
        "evaluation_sampled": sampled,
        "baselines": {
            "most_popular": {split: result.most_popular for split, result in results.items()}
        },
    }

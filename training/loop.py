"""One epoch of optimisation: the loss module, parameter groups, the learning-rate schedule,
length-bucketed batches shared out between processes, and the steps themselves."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from tqdm import tqdm

from training import losses
from training.averaging import WeightAverage
from training.batches import length_bucketed_batches
from training.budget import Budget
from training.config import TrainConfig, new_parameter_learning_rate
from training.model import LogitLM, mixed_precision
from training.negatives import NegativeSampler
from training.optimizers import clip_gradients


class Objective(torch.nn.Module):
    """The loss as a module, so DDP sees one forward per step.

    With `sparse_rows` (sampled losses only) the item tables are read row by row, so their
    gradients are sparse tensors over the rows the batch touched (history items, targets,
    negatives) instead of dense catalog-sized ones.
    """

    def __init__(
        self, model: LogitLM, config: TrainConfig, sampler: NegativeSampler, sparse_rows: bool
    ) -> None:
        super().__init__()
        self.model, self.config = model, config
        self.sampler, self.sparse_rows = sampler, sparse_rows

    def forward(self, inputs, targets, context):
        # Drawn for every loss (ce ignores them) so the random stream is the same whatever the loss.
        drawn = self.sampler.draw()
        self.model.drop_item_ids()
        hidden = self.model.hidden_states(inputs, context, sparse=self.sparse_rows)
        real = targets != 0
        hidden, targets = hidden[real], targets[real]
        if self.config.loss == "ce":
            weight, bias = self.model.head()
            return losses.full_softmax(hidden, targets, weight, bias)
        return self.sampled_loss(hidden, targets, drawn)

    def sampled_loss(self, hidden, targets, drawn):
        """Sampled softmax or BCE of real positions (hidden [M, d], targets [M])."""
        config = self.config
        negatives = self.sampler.negatives(drawn, targets if config.in_batch_negatives else None)
        weight, bias = self.head_rows(torch.cat([targets, negatives.items]))
        rows = len(targets)
        corrected = config.loss == "sampled-softmax" and config.logq_correction
        positive, negative = losses.sampled_logits(
            hidden,
            (weight[:rows], bias[:rows]),
            (weight[rows:], bias[rows:]),
            negatives.log_expected if corrected else None,
        )
        return losses.negative_loss(config.loss, positive, negative, targets, negatives.items)

    def head_rows(self, items):
        """Head rows (W, b) of `items` (from 1): looked up alone with sparse rows, else indexed
        out of the whole head (dense gradients, as before sparse rows existed)."""
        if self.sparse_rows:
            return self.model.head_rows(items, sparse=True)
        weight, bias = self.model.head()
        return weight[items - 1], bias[items - 1]


def parameter_groups(model: LogitLM, config: TrainConfig) -> list[dict]:
    """New parameters learn at learning_rate; pretrained weights at encoder_learning_rate."""
    pretrained = config.model.backbone != "scratch"
    encoder, new = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (encoder if pretrained and name.startswith("backbone.") else new).append(parameter)
    rate = new_parameter_learning_rate(config)
    groups = [{"params": new, "lr": rate, "base_lr": rate}]
    if encoder:
        groups.append(
            {
                "params": encoder,
                "lr": config.encoder_learning_rate,
                "base_lr": config.encoder_learning_rate,
            }
        )
    return groups


def learning_rate_factor(config: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up, then cosine decay to zero over `progress` (0..1) or constant."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class TrainingWindows:
    """Next-item training rows: left-padded inputs and targets [rows, L], each row's user
    context [rows, F], and the catalog size negatives are drawn from."""

    inputs: np.ndarray
    targets: np.ndarray
    context: np.ndarray
    num_items: int

    @cached_property
    def lengths(self) -> np.ndarray:
        """Transitions per row: what batches are bucketed by."""
        return (self.targets != 0).sum(axis=1)

    @cached_property
    def target_counts(self) -> np.ndarray:
        """How often each item (index 0: padding, never counted) is a target [num_items + 1]:
        the distribution in-batch negatives come from, and popularity sampling's."""
        targets = self.targets[self.targets != 0]
        return np.bincount(targets, minlength=self.num_items + 1)


# Asked before each step after an epoch's first, with the mean seconds a step has taken so far
# and the windows per batch: True stops the epoch there (the time budget is spent).
StopCheck = Callable[[float, int], bool]


@dataclass(frozen=True)
class Epoch:
    """What one epoch trains on: its number (1-based), this process's batches of window rows,
    the optimizer step it starts at, and what may cut it short."""

    number: int
    batches: list[np.ndarray]
    first_step: int
    stop: StopCheck | None = None


@dataclass(frozen=True)
class EpochOutcome:
    loss: float  # mean over the rows trained on
    step: int  # the next optimizer step
    failure: str | None = None  # why the loss went non-finite, when it did
    steps_taken: int = 0
    cut_short: bool = False  # stopped before its last batch (the time budget)


@dataclass(frozen=True)
class Optimisation:
    """What every step uses: the loss (DDP-wrapped under torchrun), the optimizer, the optional
    weight average, the settings, and the extent of the schedule."""

    objective: torch.nn.Module
    optimizer: torch.optim.Optimizer
    average: WeightAverage | None
    config: TrainConfig
    device: torch.device
    total_steps: int
    started: float  # time.perf_counter() at which the run's wall clock (resumes included) was 0
    budget: Budget | None = None  # the command's time budget, which the cosine follows


def epoch_batches(
    lengths: np.ndarray, config: TrainConfig, epoch: int, rank: int, world_size: int
) -> list[np.ndarray]:
    """This process's share of the epoch's batches (the same shuffle on every process)."""
    batches = length_bucketed_batches(
        lengths, config.batch_size, np.random.default_rng(config.seed + epoch)
    )
    # Every rank takes an equal share of the batches (the remainder sits this epoch out):
    # unequal step counts would leave DDP waiting forever on the shortest rank.
    share = len(batches) // world_size
    return batches[rank::world_size][:share]


def steps_per_epoch(lengths: np.ndarray, config: TrainConfig, world_size: int) -> int:
    batches = length_bucketed_batches(lengths, config.batch_size, np.random.default_rng(0))
    return len(batches) // world_size


def _set_learning_rate(run: Optimisation, step: int) -> None:
    config = run.config
    # With a time budget the cosine follows whichever runs out first, steps or the time
    # training may take (the budget less what its end needs).
    elapsed_share = run.budget.training_share() if run.budget is not None else 0.0
    factor = learning_rate_factor(config, step, max(step / run.total_steps, elapsed_share))
    for group in run.optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


def batch_loss(run: Optimisation, windows: TrainingWindows, rows: np.ndarray) -> torch.Tensor:
    """The loss of one batch of window rows (the forward pass of a training step)."""
    device = run.device
    # Drop the columns that are padding in every row: short histories train faster.
    first = int((windows.inputs[rows] != 0).any(axis=0).argmax())
    inputs = torch.as_tensor(windows.inputs[rows, first:], device=device)
    targets = torch.as_tensor(windows.targets[rows, first:], device=device)
    context = torch.as_tensor(windows.context[rows], device=device)
    with mixed_precision(run.config.amp, device):
        return run.objective(inputs, targets, context)


def _update(run: Optimisation, loss: torch.Tensor) -> None:
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(run.objective.parameters(), run.config.grad_clip)
    run.optimizer.step()
    if run.average is not None:
        run.average.update()


def train_one_epoch(
    run: Optimisation, windows: TrainingWindows, epoch: Epoch, *, show: bool
) -> EpochOutcome:
    """One pass over the epoch's batches; stops at the first non-finite loss and says why, or
    between steps when `epoch.stop` says so."""
    step, total_loss, total_rows, start = epoch.first_step, 0.0, 0, time.perf_counter()
    progress = tqdm(
        epoch.batches,
        desc=f"epoch {epoch.number}",
        disable=not show,
        leave=False,
        mininterval=2,
        unit="batch",
    )
    for taken, rows in enumerate(progress):
        if taken and epoch.stop is not None:
            mean_step = (time.perf_counter() - start) / taken
            if epoch.stop(mean_step, len(rows)):
                progress.close()
                return EpochOutcome(total_loss / total_rows, step, None, taken, cut_short=True)
        _set_learning_rate(run, step)
        loss = batch_loss(run, windows, rows)
        if not torch.isfinite(loss):
            failure = f"the loss became {loss.item()} at step {step}"
            return EpochOutcome(total_loss / max(1, total_rows), step, failure, taken)
        _update(run, loss)
        step += 1
        total_loss += loss.item() * len(rows)
        total_rows += len(rows)
        progress.set_postfix(
            loss=f"{loss.item():.3f}",
            seq_per_s=f"{total_rows / (time.perf_counter() - start):.0f}",
        )
    return EpochOutcome(total_loss / max(1, total_rows), step, None, len(epoch.batches))

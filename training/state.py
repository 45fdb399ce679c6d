"""The trainer's progress between epochs and across `--resume`: counters, best epoch, history,
the early-stopping counter, and the decision to stop."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from logitrec.atomic import write_json
from logitrec.errors import InputError
from training import checkpoint as ckpt
from training.averaging import WeightAverage
from training.config import TrainConfig
from training.loop import parameter_groups
from training.model import LogitLM

STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """Where a run stands after its last finished epoch (saved as resume/trainer_state.json)."""

    epoch: int = 0  # last finished epoch
    step: int = 0  # optimizer steps taken
    best_ndcg: float = -1.0  # best validation NDCG@10 so far
    best_epoch: int = 0  # its epoch (0: none yet)
    elapsed: float = 0.0  # training wall time in seconds, resumed runs included
    history: list[dict] = field(default_factory=list)  # one record per epoch (train_log.jsonl)
    # Epochs since the best validation NDCG@10: saved so `--resume` keeps counting towards
    # `--patience` instead of starting again from zero.
    epochs_without_gain: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict) -> "TrainerState":
        return cls(
            epoch=values["epoch"],
            step=values["step"],
            best_ndcg=values["best_ndcg"],
            best_epoch=values["best_epoch"],
            elapsed=values["elapsed"],
            history=values["history"],
            # Written from version 2 of the checkpoint on; older resume states start at 0.
            epochs_without_gain=values.get("epochs_without_gain", 0),
        )

    def observe(self, ndcg: float, epoch: int, eval_every: int) -> bool:
        """Count a validation result; True when it is the best so far (keep these weights)."""
        if ndcg > self.best_ndcg:
            self.best_ndcg, self.best_epoch = ndcg, epoch
            self.epochs_without_gain = 0
            return True
        self.epochs_without_gain += eval_every
        return False


def stop_reason(
    state: TrainerState, config: TrainConfig, *, out_of_time: bool = False
) -> str | None:
    """Why training should stop after this epoch ("patience", "time budget"), or None.

    `out_of_time`: the command's budget (training/budget.py) leaves training no more time;
    training time alone past --max-minutes is out of time too, whatever else is measured."""
    if state.epochs_without_gain >= config.patience:
        return "patience"
    if out_of_time or (config.max_minutes and state.elapsed >= config.max_minutes * 60):
        return "time budget"
    return None


def save_resume(
    directory: Path,
    model: LogitLM,
    optimizer: torch.optim.Optimizer,
    average: WeightAverage | None,
    state: TrainerState,
) -> None:
    """The last epoch's weights, optimizer moments and trainer state, for `--resume`."""
    directory.mkdir(exist_ok=True)
    ckpt.save_weights(model, directory / "model.safetensors")
    ckpt.save_optimizer(optimizer, directory)
    if average is not None:
        ckpt.save_tensors(average.state(), directory / "weight_average.safetensors")
    write_json(directory / STATE_FILE, state.to_json())


def load_resume(
    model: LogitLM,
    optimizer: torch.optim.Optimizer,
    average: WeightAverage | None,
    config: TrainConfig,
    checkpoint: Path,
) -> TrainerState:
    """Last-epoch weights, optimizer moments and trainer state from `checkpoint/resume/`."""
    directory = Path(checkpoint) / "resume"
    path = directory / STATE_FILE
    if not path.is_file():
        raise InputError(f"{checkpoint}: no resume state (resume/{STATE_FILE})")
    ckpt.load_weights(model, directory / "model.safetensors")
    ckpt.load_optimizer(optimizer, directory)
    if average is not None:
        # A run that had no average starts one from the resumed weights.
        average.average = [p.detach().clone() for p in average.parameters]
        saved = directory / "weight_average.safetensors"
        if saved.is_file():
            average.load_state(ckpt.load_tensors(saved))
    # The optimizer's moments carry over; learning rates come from this run's settings.
    for group, fresh in zip(optimizer.param_groups, parameter_groups(model, config), strict=True):
        group["base_lr"] = fresh["base_lr"]
    return read_state(path)


def read_state(path: Path) -> TrainerState:
    try:
        return TrainerState.from_json(json.loads(Path(path).read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(f"{path}: not a trainer state ({error!r})") from None

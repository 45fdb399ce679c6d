"""Setting a run up: the device and process group, seeds, a new model with the checkpoint config
that rebuilds it, the training prefixes and windows."""

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from logitrec.errors import InputError
from training.batches import training_windows, with_validation_items
from training.checkpoint import CheckpointConfig, new_checkpoint_config
from training.config import TrainConfig, uses_item_text
from training.data.dataset import Dataset
from training.features import (
    MINILM,
    context_vocabulary,
    item_texts,
    minilm_path,
    text_embeddings,
)
from training.loop import Objective, TrainingWindows, parameter_groups
from training.model import (
    LogitLM,
    build_backbone,
    pretrained_backbone_config,
    scratch_backbone_config,
)
from training.negatives import NegativeSampler, resolve_sampling
from training.optimizers import RowSparseAdamW


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA was asked for, but torch sees no CUDA device")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise InputError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    return torch.device(name)


@dataclass(frozen=True)
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _backbone(config: TrainConfig, context_tokens: int) -> tuple[dict, str | None]:
    """The backbone's HF config and, for a pretrained one, where its weights are."""
    model_config = config.model
    if model_config.backbone == "scratch":
        return scratch_backbone_config(model_config, context_tokens), None
    weights_path = minilm_path() if model_config.backbone == MINILM else model_config.backbone
    backbone_config = pretrained_backbone_config(weights_path)
    limit = backbone_config.get("max_position_embeddings", 512)
    if model_config.max_length + context_tokens > limit:
        raise InputError(
            f"--max-length {model_config.max_length} plus {context_tokens} context tokens "
            f"exceeds the backbone's {limit} positions"
        )
    return backbone_config, weights_path


def build_model(config: TrainConfig, dataset: Dataset) -> tuple[LogitLM, CheckpointConfig]:
    """A new model for `dataset` and the checkpoint config that rebuilds it."""
    vocabulary = context_vocabulary(dataset.users, config.model.context_features)
    backbone_config, weights_path = _backbone(config, len(vocabulary))
    use_text = uses_item_text(config.model)
    item_text = text_embeddings(item_texts(dataset.items), minilm_path()) if use_text else None
    model = LogitLM(
        config.model,
        build_backbone(backbone_config, weights_path),
        dataset.num_items,
        [len(values) for values in vocabulary.values()],
        item_text=item_text,
    )
    checkpoint_config = new_checkpoint_config(
        config,
        dataset,
        vocabulary=vocabulary,
        backbone_config=backbone_config,
        hidden_size=model.hidden_size,
        item_text_dim=item_text.shape[1] if item_text is not None else None,
    )
    return model, checkpoint_config


def training_ends(
    dataset: Dataset, config: TrainConfig, valid_rows: dict, valid_subset: np.ndarray | None
) -> np.ndarray:
    """The split's training prefixes, plus the validation item of users not validated on."""
    if not config.train_valid_items or valid_subset is None:
        return dataset.split.train_end
    trained = np.setdiff1d(valid_rows["users"], valid_rows["users"][valid_subset])
    return with_validation_items(dataset.split, trained)


def build_windows(
    dataset: Dataset,
    config: TrainConfig,
    valid_rows: dict,
    valid_subset: np.ndarray | None,
    context: np.ndarray,
) -> TrainingWindows:
    """The run's next-item windows, with each window's user context."""
    inputs, targets, users = training_windows(
        dataset,
        config.model.max_length,
        older=config.windows == "all",
        train_end=training_ends(dataset, config, valid_rows, valid_subset),
    )
    return TrainingWindows(inputs, targets, context[users], dataset.num_items)


def uses_sparse_rows(config: TrainConfig, world_size: int) -> bool:
    """Whether the item tables learn from sparse row gradients (see TrainConfig.sparse_rows)."""
    if config.sparse_rows is None:
        return config.loss != "ce" and world_size == 1
    if config.sparse_rows and world_size > 1:
        raise InputError(
            "--sparse-rows: not under torchrun (DDP all-reduces dense gradients); "
            "leave it unset or pass --no-sparse-rows"
        )
    return config.sparse_rows


def build_optimizer(
    model: LogitLM, config: TrainConfig, sparse_rows: bool
) -> torch.optim.Optimizer:
    """AdamW over the parameter groups; with sparse rows, the row-wise kind for the item tables."""
    groups = parameter_groups(model, config)
    if sparse_rows:
        return RowSparseAdamW(groups, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def build_objective(
    model: LogitLM,
    config: TrainConfig,
    windows: TrainingWindows,
    device: torch.device,
    sparse_rows: bool,
) -> Objective:
    """The loss module with its negative sampler (drawing from `windows`' targets)."""
    sampler = NegativeSampler(
        windows.target_counts,
        config.negatives,
        resolve_sampling(config.negative_sampling, config.loss),
        device,
    )
    return Objective(model, config, sampler, sparse_rows)

"""The checkpoint directory: config.json rebuilds the model, model.safetensors fills it.

Also written: items.parquet (index -> external id, title), metrics.json, train_log.jsonl,
training_curve.png, and the resume state (optimizer.safetensors + trainer_state.json).
No pickle anywhere.
"""

import hashlib
import json
import os
from pathlib import Path

import polars as pl
import torch
from safetensors.torch import load_file, save_file

from logitrec.errors import InputError
from training.config import ModelConfig
from training.model import LogitLM, build_backbone

FORMAT = "logitrec.checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("config.json", "model.safetensors", "items.parquet")


def catalog_hash(items: pl.DataFrame) -> str:
    """Identifies a catalog: the external ids in index order."""
    ids = items.sort("item_index")["item_id"].to_list()
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def write_json(path: Path, value) -> None:
    """Write JSON through a temporary file so a reader never sees half of it."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(temporary, path)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """A safetensors file, written beside its name and renamed when complete."""
    temporary = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(temporary))
    os.replace(temporary, path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def save_weights(model: LogitLM, path: Path) -> None:
    save_tensors(model.state_dict(), path)


def load_weights(model: LogitLM, path: Path) -> None:
    """Fill `model` from a safetensors file; a shape or name mismatch is a user error."""
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise InputError(f"{path}: weights do not match config.json ({first_line})") from None


def read_config(directory: Path) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: checkpoint directory not found")
    missing = [name for name in REQUIRED if not (directory / name).is_file()]
    if missing:
        raise InputError(f"{directory}: not a complete checkpoint (missing {', '.join(missing)})")
    try:
        config = json.loads((directory / "config.json").read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{directory / 'config.json'}: not valid JSON ({error})") from None
    if config.get("format") != FORMAT or config.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            f"{directory / 'config.json'}: expected {FORMAT} version <= {FORMAT_VERSION}, got "
            f"{config.get('format')!r} version {config.get('format_version')!r}"
        )
    return config


def model_from_config(config: dict) -> LogitLM:
    """An untrained model with the checkpoint's exact shapes (no download, no training defaults)."""
    model_config = ModelConfig(
        **{**config["model"], "context_features": tuple(config["model"]["context_features"])}
    )
    text = config.get("item_text")
    item_text = torch.zeros(config["num_items"] + 1, text["dim"]) if text else None
    return LogitLM(
        model_config,
        build_backbone(config["backbone_config"]),
        config["num_items"],
        [len(values) for values in config["context_vocabulary"].values()],
        item_text=item_text,
    )


def load_checkpoint(directory: Path, device: str | torch.device = "cpu") -> tuple[LogitLM, dict]:
    directory = Path(directory)
    config = read_config(directory)
    model = model_from_config(config)
    load_weights(model, directory / "model.safetensors")
    return model.to(device).eval(), config


def check_catalog(config: dict, items: pl.DataFrame, dataset_path: Path, checkpoint: Path) -> None:
    """Refuse to score a dataset whose catalog differs from the one the model was trained on."""
    if config["num_items"] != items.height or config["catalog_sha256"] != catalog_hash(items):
        raise InputError(
            f"{checkpoint}: trained on a catalog of {config['num_items']} items that differs from "
            f"{dataset_path}'s ({items.height} items); evaluate on the dataset it was trained on"
        )


def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for parameter, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{parameter}.{key}"] = value
            else:
                scalars[f"{parameter}.{key}"] = value
    save_tensors(tensors, directory / "optimizer.safetensors")
    write_json(
        directory / "optimizer.json", {"param_groups": state["param_groups"], "scalars": scalars}
    )


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    tensors = load_file(str(directory / "optimizer.safetensors"))
    meta = json.loads((directory / "optimizer.json").read_text())
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        parameter, name = key.split(".", 1)
        state.setdefault(int(parameter), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})

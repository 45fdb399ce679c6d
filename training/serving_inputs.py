"""What export and serving need from the dataset, saved into the checkpoint so they need only it:
training popularity per item (the popularity fallback) and a fixed sample of real test
histories (the export's parity check)."""

from pathlib import Path

import numpy as np
import polars as pl

from logitrec.errors import InputError
from training import checkpoint as ckpt
from training.batches import evaluation_rows
from training.checkpoint import CheckpointConfig
from training.data.dataset import Dataset, load_dataset
from training.evaluate import item_popularity
from training.features import context_indices

PARITY_USERS = 64


def sample_inputs(
    rows: dict[str, np.ndarray], context: np.ndarray, count: int = PARITY_USERS
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed sample of real test histories (left-padded, int64 [S, L]) and their users'
    context indices (int64 [S, F]); `rows` are `evaluation_rows`, `context` is per user row."""
    users = len(rows["targets"])
    chosen = np.sort(np.random.default_rng(0).choice(users, min(count, users), replace=False))
    histories = rows["histories"][chosen]
    return np.ascontiguousarray(histories), np.ascontiguousarray(
        context[rows["users"][chosen]].astype(np.int64)
    )


def parity_sample(dataset: Dataset, config: CheckpointConfig) -> tuple[np.ndarray, np.ndarray]:
    """The checkpoint's parity sample: `sample_inputs` over the test split at its window."""
    rows = evaluation_rows(dataset, "test", config.model.max_length)
    return sample_inputs(rows, context_indices(dataset.users, config.context_vocabulary))


def write_items_with_popularity(directory: Path, items: pl.DataFrame, dataset: Dataset) -> None:
    """`items` (the checkpoint's catalog rows) with the dataset's training popularity."""
    ckpt.write_items(directory, items, item_popularity(dataset))


def write_serving_inputs(directory: Path, dataset: Dataset, config: CheckpointConfig) -> None:
    """items.parquet (with popularity) and the parity sample, as training writes them."""
    write_items_with_popularity(directory, dataset.items, dataset)
    ckpt.write_parity_sample(directory, *parity_sample(dataset, config))


def upgrade_checkpoint(checkpoint: Path, data: Path) -> list[str]:
    """Write what an older checkpoint lacks (item popularity, the parity sample) from the
    dataset it was trained on; returns the names of the files written (none when complete)."""
    checkpoint, data = Path(checkpoint), Path(data)
    config = ckpt.read_config(checkpoint)
    dataset = load_dataset(data)
    ckpt.check_catalog(config, dataset.items, data, checkpoint)
    trained_on = config.dataset.get("content_hash")
    if trained_on and trained_on != dataset.manifest.get("content_hash"):
        # Same catalog, other interactions (re-prepared or re-split): its popularity and test
        # histories are not the ones the model was trained and evaluated on.
        raise InputError(
            f"{data}: not the dataset {checkpoint} was trained on (content hash "
            f"{dataset.manifest.get('content_hash')}, expected {trained_on})"
        )
    written = []
    items = pl.read_parquet(checkpoint / ckpt.ITEMS)
    if "popularity" not in items.columns:
        write_items_with_popularity(checkpoint, items, dataset)
        written.append(ckpt.ITEMS)
    if not ckpt.has_parity_sample(checkpoint):
        ckpt.write_parity_sample(checkpoint, *parity_sample(dataset, config))
        written += [ckpt.PARITY_HISTORIES, ckpt.PARITY_CONTEXT]
    return written

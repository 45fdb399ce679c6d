"""The dataset directory: the artifact `logitrec data prepare` writes and training reads.

Layout (indices are dense and start at 1; 0 is padding and never a real user or item):
- `sequences.parquet`: one row per user, `user_index`, `item_indices` (list, time order) and,
  when the source had timestamps, `timestamps` (list, seconds);
- `split.parquet`: `user_index`, `train_end`, `valid_position`, `test_position` (see split.py);
- `items.parquet`: `item_index`, `item_id` (external id, as text), `title` and other item text;
- `users.parquet`: `user_index`, `user_id` (external id, as text) and user context columns;
- `manifest.json`: source, options, counts, cleaning report, file hashes.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from logitrec.atomic import file_sha256, write_json
from logitrec.errors import InputError
from training.data.split import SplitPositions

FORMAT = "logitrec.dataset"
FORMAT_VERSION = 1
FILES = {
    "sequences": "sequences.parquet",
    "split": "split.parquet",
    "items": "items.parquet",
    "users": "users.parquet",
}


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: flat item indices with per-user offsets (CSR), split, side tables."""

    path: Path
    manifest: dict
    offsets: np.ndarray  # [users + 1]; user_index u owns item_indices[offsets[u-1]:offsets[u]]
    item_indices: np.ndarray  # int32, all users' sequences back to back
    timestamps: np.ndarray | None
    split: SplitPositions
    items: pl.DataFrame
    users: pl.DataFrame

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_items(self) -> int:
        return self.items.height

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user_index: int) -> np.ndarray:
        return self.item_indices[self.offsets[user_index - 1] : self.offsets[user_index]]


def write_dataset(
    directory: Path,
    *,
    sequences: pl.DataFrame,
    split: SplitPositions,
    items: pl.DataFrame,
    users: pl.DataFrame,
    manifest: dict,
) -> dict:
    """Write every file into `directory` (a staging dir) and return the completed manifest."""
    split_frame = pl.DataFrame(
        {
            "user_index": sequences["user_index"],
            "train_end": split.train_end.astype(np.int32),
            "valid_position": split.valid_position.astype(np.int32),
            "test_position": split.test_position.astype(np.int32),
        }
    )
    frames = {"sequences": sequences, "split": split_frame, "items": items, "users": users}
    hashes = {}
    for key, frame in frames.items():
        path = directory / FILES[key]
        frame.write_parquet(path, statistics=False)
        hashes[FILES[key]] = file_sha256(path)
    combined = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **manifest,
        "files": FILES,
        "file_sha256": hashes,
        "content_hash": combined,
    }
    write_json(directory / "manifest.json", manifest)
    return manifest


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{directory}: not a dataset directory (no manifest.json)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path}: expected format {FORMAT!r}, got {manifest.get('format')!r}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            f"{path}: dataset format version {manifest['format_version']} is newer than this "
            f"logitrec reads ({FORMAT_VERSION}); upgrade logitrec"
        )
    return manifest


def load_dataset(directory: Path) -> Dataset:
    directory = Path(directory)
    manifest = read_manifest(directory)
    paths = {key: directory / name for key, name in manifest["files"].items()}
    for key, path in paths.items():
        if not path.is_file():
            raise InputError(f"{path}: missing {key} file of the dataset")
    sequences = pl.read_parquet(paths["sequences"])
    lengths = sequences["item_indices"].list.len().to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    item_indices = sequences["item_indices"].explode().to_numpy().astype(np.int32)
    timestamps = None
    if "timestamps" in sequences.columns:
        timestamps = sequences["timestamps"].explode().to_numpy().astype(np.int64)
    split_frame = pl.read_parquet(paths["split"])
    split = SplitPositions(
        train_end=split_frame["train_end"].to_numpy().astype(np.int64),
        valid_position=split_frame["valid_position"].to_numpy().astype(np.int64),
        test_position=split_frame["test_position"].to_numpy().astype(np.int64),
        cutoffs=manifest.get("split", {}).get("cutoffs"),
    )
    return Dataset(
        path=directory,
        manifest=manifest,
        offsets=offsets,
        item_indices=item_indices,
        timestamps=timestamps,
        split=split,
        items=pl.read_parquet(paths["items"]),
        users=pl.read_parquet(paths["users"]),
    )

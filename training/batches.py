"""Turn CSR sequences into left-padded id matrices for training and evaluation (pure numpy)."""

from typing import TYPE_CHECKING

import numpy as np

from training.data.dataset import Dataset
from training.data.split import SplitPositions

if TYPE_CHECKING:  # checkpoint.py imports the model; batches stays pure numpy
    from training.checkpoint import CheckpointConfig


def left_padded(flat: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """Row r holds the last `width` items of flat[starts[r]:ends[r]], right-aligned, 0-padded."""
    starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    index = ends[:, None] - width + np.arange(width)[None, :]
    valid = index >= starts[:, None]
    out = np.zeros((len(ends), width), dtype=np.int64)
    out[valid] = flat[index[valid]]
    return out


def training_windows(
    dataset: Dataset, width: int, older: bool = False, train_end: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Next-item pairs from every user's training prefix: inputs, targets [rows, width], user rows.

    The newest `width` transitions of each training prefix (SASRec's window); with `older`, also
    the transitions before them, cut into further windows of `width` going back in time, so
    long histories train on all their items (on ML-1M the newest windows alone cover 66% of the
    training transitions). Users with fewer than two training items have nothing to learn from.
    `train_end` overrides the split's training prefix lengths (see `with_validation_items`).
    """
    train_end = dataset.split.train_end if train_end is None else train_end
    users, starts, ends = _window_bounds(dataset, width, older, train_end)
    inputs = left_padded(dataset.item_indices, starts, ends - 1, width)
    targets = left_padded(dataset.item_indices, starts + 1, ends, width)
    return inputs, targets, users


def _window_bounds(
    dataset: Dataset, width: int, older: bool, train_end: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each window's user row and the flat [start, end) of the sequence part it ends at."""
    users = np.flatnonzero(train_end >= 2)
    starts = dataset.offsets[users]
    ends = starts + train_end[users]
    if older:
        # Window k of a user ends k * width transitions before the newest; keep those that
        # still hold at least one transition (an input item and its target).
        counts = (ends - starts - 2) // width + 1
        users = np.repeat(users, counts)
        starts = np.repeat(starts, counts)
        back = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        ends = np.repeat(ends, counts) - back * width
    return users, starts, ends


def windows_by_age(
    dataset: Dataset,
    width: int,
    train_end: np.ndarray,
    learned: np.ndarray,
    replay_ratio: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training windows for an incremental run: every window with a transition the model has
    not learned from (a target at position >= `learned[user]`), plus a seeded random sample of
    `replay_ratio` times as many windows of already-learned transitions (against forgetting).

    Each window keeps its whole history as input; its targets are only the new transitions,
    or only the old ones for a replayed window. Returns inputs, targets and user rows, new
    windows first.
    """
    users, starts, ends = _window_bounds(dataset, width, True, train_end)
    inputs = left_padded(dataset.item_indices, starts, ends - 1, width)
    targets = left_padded(dataset.item_indices, starts + 1, ends, width)
    # Sequence position of each target column: column j of a window ending at `end` holds
    # the item at end - width + j.
    position = (ends - starts)[:, None] - width + np.arange(width)[None, :]
    is_new = (targets != 0) & (position >= learned[users][:, None])
    new_targets = np.where(is_new, targets, 0)
    old_targets = np.where(is_new, 0, targets)
    fresh = np.flatnonzero(new_targets.any(axis=1))
    replayable = np.flatnonzero(old_targets.any(axis=1))
    count = min(len(replayable), round(replay_ratio * len(fresh)))
    replayed = np.sort(np.random.default_rng(seed).choice(replayable, count, replace=False))
    rows = np.concatenate([fresh, replayed])
    chosen_targets = np.concatenate([new_targets[fresh], old_targets[replayed]])
    return inputs[rows], chosen_targets, users[rows]


def validation_subset(num_targets: int, count: int | None, seed: int) -> np.ndarray | None:
    """Rows of the validation split to validate on: a fixed random `count` of them; None: all."""
    if not count or count >= num_targets:
        return None
    return np.sort(np.random.default_rng(seed).choice(num_targets, count, replace=False))


def validated_users(checkpoint_config: "CheckpointConfig", num_targets: int) -> np.ndarray | None:
    """The validation subset a checkpoint was trained with (rows of the validation split),
    rebuilt from the `valid_users` and `seed` its config.json records (None: every user)."""
    train = checkpoint_config.train
    return validation_subset(num_targets, train.get("valid_users"), train.get("seed", 42))


def with_validation_items(split: SplitPositions, users: np.ndarray) -> np.ndarray:
    """Training prefix lengths where `users` also train on their validation target.

    For users outside the validation subset that item is just their newest known transition:
    withholding it from training only throws away the data closest in time to the test target.
    """
    train_end = split.train_end.copy()
    train_end[users] = split.valid_position[users] + 1
    return train_end


def evaluation_rows(dataset: Dataset, split: str, width: int) -> dict[str, np.ndarray]:
    """Histories (left-padded), targets, user rows and the full seen-item lists of one split."""
    positions = {"valid": dataset.split.valid_position, "test": dataset.split.test_position}[split]
    users = np.flatnonzero(positions >= 0)
    starts = dataset.offsets[users]
    ends = starts + positions[users]
    seen_lengths = ends - starts
    seen_index = np.repeat(
        starts - np.concatenate([[0], np.cumsum(seen_lengths)[:-1]]), seen_lengths
    )
    seen_index += np.arange(seen_lengths.sum())
    return {
        "users": users,
        "histories": left_padded(dataset.item_indices, starts, ends, width),
        "targets": dataset.item_indices[ends].astype(np.int64),
        "seen_offsets": np.concatenate([[0], np.cumsum(seen_lengths)]),
        "seen_items": dataset.item_indices[seen_index].astype(np.int64),
    }


def length_bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket_batches: int = 50
) -> list[np.ndarray]:
    """Shuffled batches of row indices whose rows have similar lengths (less padding to compute).

    Rows are shuffled, cut into buckets of `bucket_batches` batches, sorted by length inside a
    bucket, split into batches, and the batches are shuffled again.
    """
    order = rng.permutation(len(lengths))
    batches = []
    bucket = batch_size * bucket_batches
    for begin in range(0, len(order), bucket):
        chunk = order[begin : begin + bucket]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]

"""Leave-one-out (or temporal) evaluation by full ranking over every item, batched."""

from collections.abc import Callable

import numpy as np
import torch

from training.data.dataset import Dataset
from training.metrics import ranking_metrics, target_ranks

# scores for a batch: (histories [B, L] left-padded, user rows [B]) -> [B, num_items]
ScoreFunction = Callable[[torch.Tensor, np.ndarray], torch.Tensor]


def evaluate_scores(
    score: ScoreFunction,
    rows: dict[str, np.ndarray],
    *,
    batch_size: int = 256,
    exclude_seen: bool = True,
    device: torch.device | str = "cpu",
    subset: np.ndarray | None = None,
) -> dict[str, float]:
    """Rank each target among all items; items in the user's history are excluded when asked."""
    order = np.arange(len(rows["targets"])) if subset is None else subset
    ranks = []
    for begin in range(0, len(order), batch_size):
        batch = order[begin : begin + batch_size]
        histories = rows["histories"][batch]
        first = int((histories != 0).any(axis=0).argmax())  # all-padding columns change nothing
        histories = torch.as_tensor(histories[:, first:], device=device)
        scores = score(histories, rows["users"][batch]).float()
        if exclude_seen:
            starts, ends = rows["seen_offsets"][batch], rows["seen_offsets"][batch + 1]
            seen_rows = np.repeat(np.arange(len(batch)), ends - starts)
            seen_items = np.concatenate(
                [rows["seen_items"][s:e] for s, e in zip(starts, ends, strict=True)]
            )
            scores[
                torch.as_tensor(seen_rows, device=device),
                torch.as_tensor(seen_items - 1, device=device),
            ] = -torch.inf
        targets = torch.as_tensor(rows["targets"][batch] - 1, device=device)
        ranks.append(target_ranks(scores, targets).cpu().numpy())
    metrics = ranking_metrics(np.concatenate(ranks) if ranks else np.zeros(0))
    metrics["users"] = len(order)
    return metrics


def popularity_scores(dataset: Dataset) -> torch.Tensor:
    """Training-interaction counts per item: the most-popular baseline's scores."""
    train_end = dataset.split.train_end
    mask = np.arange(len(dataset.item_indices)) < np.repeat(
        dataset.offsets[:-1] + train_end, dataset.lengths
    )
    counts = np.bincount(dataset.item_indices[mask], minlength=dataset.num_items + 1)[1:]
    return torch.as_tensor(counts, dtype=torch.float32)


def evaluate_popularity(
    dataset: Dataset, rows: dict[str, np.ndarray], subset: np.ndarray | None = None
) -> dict[str, float]:
    """The most-popular baseline on the same evaluation rows as the model."""
    counts = popularity_scores(dataset)
    return evaluate_scores(
        lambda histories, users: counts.expand(len(users), -1).clone(), rows, subset=subset
    )

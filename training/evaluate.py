"""Leave-one-out (or temporal) evaluation by full ranking over every item, batched."""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from training.batches import evaluation_rows, validated_users
from training.checkpoint import CheckpointConfig
from training.data.dataset import Dataset
from training.features import context_indices
from training.metrics import ranking_metrics, target_ranks
from training.model import LogitLM, mixed_precision

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


def item_popularity(dataset: Dataset) -> np.ndarray:
    """Training interactions per item (int64 [num_items]; entry i - 1 is item index i)."""
    train_end = dataset.split.train_end
    mask = np.arange(len(dataset.item_indices)) < np.repeat(
        dataset.offsets[:-1] + train_end, dataset.lengths
    )
    return np.bincount(dataset.item_indices[mask], minlength=dataset.num_items + 1)[1:].astype(
        np.int64
    )


def popularity_scores(dataset: Dataset) -> torch.Tensor:
    """Training-interaction counts per item: the most-popular baseline's scores."""
    return torch.as_tensor(item_popularity(dataset), dtype=torch.float32)


def evaluate_popularity(
    dataset: Dataset, rows: dict[str, np.ndarray], subset: np.ndarray | None = None
) -> dict[str, float]:
    """The most-popular baseline on the same evaluation rows as the model."""
    counts = popularity_scores(dataset)
    return evaluate_scores(
        lambda histories, users: counts.expand(len(users), -1).clone(), rows, subset=subset
    )


def model_scores(
    model: LogitLM, context: np.ndarray, device: torch.device | str, *, amp: bool = False
) -> ScoreFunction:
    """The model's logits for a batch, each user with their row of `context` ([users, F]);
    with `amp`, under bf16 autocast on CUDA (as training validates)."""

    def score(histories: torch.Tensor, users: np.ndarray) -> torch.Tensor:
        with mixed_precision(amp, torch.device(device)):
            return model(histories, torch.as_tensor(context[users], device=device))

    return score


@dataclass(frozen=True)
class SplitEvaluation:
    """One split's metrics for the model and, when asked, for the most-popular baseline."""

    model: dict[str, float]
    most_popular: dict[str, float] | None = None


@torch.no_grad()
def evaluate_split(
    model: LogitLM,
    config: CheckpointConfig,
    dataset: Dataset,
    split: str,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    baselines: bool = False,
    amp: bool = False,
) -> SplitEvaluation:
    """A checkpoint's model on the test or valid split of `dataset` (full ranking, seen items
    excluded), with the most-popular baseline on the same rows when `baselines`.

    The valid split counts only the users the checkpoint validated on (its `valid_users` and
    `seed`): with `train_valid_items` the others trained on their validation item.
    """
    rows = evaluation_rows(dataset, split, config.model.max_length)
    subset = validated_users(config, len(rows["targets"])) if split == "valid" else None
    score = model_scores(
        model, context_indices(dataset.users, config.context_vocabulary), device, amp=amp
    )
    metrics = evaluate_scores(score, rows, batch_size=batch_size, device=device, subset=subset)
    popular = evaluate_popularity(dataset, rows, subset) if baselines else None
    return SplitEvaluation(metrics, popular)

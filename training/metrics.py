"""Full-ranking metrics: the rank of each target among all items, then HR, NDCG and MRR at k."""

import numpy as np
import torch

CUTOFFS = (10, 20)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target column among all columns (ties counted in its favour)."""
    target_scores = scores.gather(1, targets[:, None])
    return (scores > target_scores).sum(dim=1)


def ranking_metrics(ranks: np.ndarray, cutoffs=CUTOFFS) -> dict[str, float]:
    """HR@k (target in the top k), NDCG@k (1/log2(rank+2) in the top k), MRR@k (1/(rank+1))."""
    ranks = np.asarray(ranks, dtype=np.float64)
    metrics = {}
    for k in cutoffs:
        hit = ranks < k
        metrics[f"hr@{k}"] = float(hit.mean())
        metrics[f"ndcg@{k}"] = float(np.where(hit, 1 / np.log2(ranks + 2), 0).mean())
        metrics[f"mrr@{k}"] = float(np.where(hit, 1 / (ranks + 1), 0).mean())
    return metrics

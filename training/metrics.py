"""Full-ranking metrics: the rank of each target among all items, then HR, NDCG and MRR at k,
with confidence intervals when the users are a random sample."""

import math
from statistics import NormalDist

import numpy as np
import torch

CUTOFFS = (10, 20)
CONFIDENCE = 0.95
# A float32 sum of 0/1 values is exact while every partial sum stays below 2**24.
EXACT_FLOAT_COUNT = 1 << 24


def target_ranks(
    scores: torch.Tensor, targets: torch.Tensor, *, overwrite: bool = False
) -> torch.Tensor:
    """0-based rank of each target column among all columns (ties counted in its favour): the
    number of columns scoring strictly above it. With `overwrite`, `scores` is scratch space."""
    target_scores = scores.gather(1, targets[:, None])
    if overwrite and scores.dtype == torch.float32 and scores.shape[1] < EXACT_FLOAT_COUNT:
        # gt_ leaves 1.0 / 0.0 in place and a float sum counts them: on CPU a tenth of the time
        # of summing a bool matrix, which converts every element to int64 first.
        return scores.gt_(target_scores).sum(dim=1).long()
    return (scores > target_scores).sum(dim=1)


def per_user_metrics(ranks: np.ndarray, cutoffs=CUTOFFS) -> dict[str, np.ndarray]:
    """Each user's HR@k (target in the top k), NDCG@k (1/log2(rank+2) in the top k) and MRR@k
    (1/(rank+1) in the top k), float64 [users] per metric."""
    ranks = np.asarray(ranks, dtype=np.float64)
    values = {}
    for k in cutoffs:
        hit = ranks < k
        values[f"hr@{k}"] = hit.astype(np.float64)
        values[f"ndcg@{k}"] = np.where(hit, 1 / np.log2(ranks + 2), 0)
        values[f"mrr@{k}"] = np.where(hit, 1 / (ranks + 1), 0)
    return values


def ranking_metrics(ranks: np.ndarray, cutoffs=CUTOFFS) -> dict[str, float]:
    """The mean over users of each of `per_user_metrics`."""
    return {name: float(values.mean()) for name, values in per_user_metrics(ranks, cutoffs).items()}


def confidence_intervals(
    ranks: np.ndarray, population: int, cutoffs=CUTOFFS
) -> dict[str, list[float]]:
    """A 95% interval for each metric's mean over all `population` users, from the ranks of a
    simple random sample of them drawn without replacement.

    Normal approximation over the per-user values (the sample mean of a few hundred or more
    users is close to normal even for 0/1 hits), with the finite-population correction
    sqrt(1 - n / population): the sample is drawn without replacement, so sampling every user
    leaves no uncertainty. Bounds are clipped to [0, 1], the range of every metric here.
    """
    sampled = len(ranks)
    if sampled < 2:
        raise ValueError(f"an interval needs at least 2 sampled users, got {sampled}")
    z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
    correction = math.sqrt(max(0.0, 1 - sampled / population))
    intervals = {}
    for name, values in per_user_metrics(ranks, cutoffs).items():
        mean = values.mean()
        half_width = z * values.std(ddof=1) / math.sqrt(sampled) * correction
        intervals[name] = [float(max(0.0, mean - half_width)), float(min(1.0, mean + half_width))]
    return intervals

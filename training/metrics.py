"""Full-ranking metrics: the rank of each target among all items, then HR, NDCG and MRR at k,
with confidence intervals when the users are a random sample; and beyond accuracy, what the
top-10 lists recommend (coverage, Gini index, tail share, popularity, intra-list diversity)."""

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np
import polars as pl
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


# Beyond accuracy: what the model's top-10 lists recommend, over all evaluated users.
LIST_LENGTH = 10
# Tail items: the least popular 80% of the catalog by training interactions (the issue's
# definition; RecBole's TailPercentage with tail_ratio 0.8).
TAIL_RATIO = 0.8
# Columns per block when finding a row's best columns (see top_columns).
TOP_BLOCK = 256
# Users whose lists' pairwise distances are computed at once (bounds the memory).
DISTANCE_CHUNK_USERS = 4096


def top_columns(scores: torch.Tensor, k: int, block: int = TOP_BLOCK) -> torch.Tensor:
    """Columns of each row's k highest scores, best first, [B, k] (ties broken arbitrarily).

    A full-row top-k cost 40% of the evaluation's GEMM at 1M items; the maximum of each block
    of `block` columns is one pass over memory, and a row's best k columns lie in its k blocks
    with the highest maxima (any other block's maximum is below k better columns), so only
    those k x block columns are searched."""
    rows, width = scores.shape
    k = min(k, width)
    if width <= block * k:
        return scores.topk(k, dim=1).indices
    full = width // block * block
    maxima = scores[:, :full].unfold(1, block, block).amax(dim=2)
    if full < width:
        maxima = torch.cat([maxima, scores[:, full:].amax(dim=1, keepdim=True)], dim=1)
    blocks = maxima.topk(k, dim=1, sorted=False).indices
    offsets = torch.arange(block, device=scores.device)
    columns = (blocks[:, :, None] * block + offsets).reshape(rows, -1)
    outside = columns >= width  # the short last block's missing columns
    values = scores.gather(1, columns.clamp(max=width - 1)).masked_fill_(outside, -torch.inf)
    return columns.gather(1, values.topk(k, dim=1).indices)


def list_metrics(
    lists: np.ndarray,
    popularity: np.ndarray,
    *,
    vectors: np.ndarray | None = None,
    genres: "GenreSets | None" = None,
) -> dict[str, float]:
    """Beyond-accuracy metrics of top-k lists (item indices [users, k], 0 = no item), with
    RecBole's definitions where it has one: ItemCoverage, GiniIndex, TailPercentage and
    AveragePopularity; intra-list diversity as the mean pairwise distance within a list (genre
    Jaccard distance, and cosine distance of the item vectors `vectors` [N, d], item i at row
    i - 1). `popularity`: training interactions per item (item i at i - 1)."""
    k = lists.shape[1]
    popularity = np.asarray(popularity)
    metrics = {
        f"coverage@{k}": item_coverage(lists, len(popularity)),
        f"gini@{k}": gini_index(lists, len(popularity)),
        f"tail_share@{k}": tail_share(lists, popularity),
        f"avg_popularity@{k}": average_popularity(lists, popularity),
    }
    if genres is not None:
        metrics[f"ild_genre@{k}"] = intra_list_distance(lists, genres.jaccard_distances)
    if vectors is not None:
        metrics[f"ild_vector@{k}"] = intra_list_distance(lists, cosine_distances(vectors))
    return metrics


def item_coverage(lists: np.ndarray, num_items: int) -> float:
    """The share of the catalog recommended to at least one user."""
    recommended = np.unique(lists[lists > 0])
    return len(recommended) / num_items


def gini_index(lists: np.ndarray, num_items: int) -> float:
    """Inequality of how often each item is recommended (never-recommended items count as 0):
    0 when every item is recommended equally often, near 1 when a few items take every slot."""
    counts = np.sort(np.bincount(lists[lists > 0], minlength=num_items + 1)[1:])
    total = counts.sum()
    if total == 0:
        return 0.0
    position = np.arange(1, num_items + 1)
    return float(np.sum((2 * position - num_items - 1) * counts) / (num_items * total))


def tail_items(popularity: np.ndarray, ratio: float = TAIL_RATIO) -> np.ndarray:
    """bool [N + 1]: the least popular `ratio` of the items by training count (ties: lower
    index first, as RecBole sorts them)."""
    order = np.lexsort((np.arange(len(popularity)), popularity))
    tail = np.zeros(len(popularity) + 1, dtype=bool)
    tail[order[: max(int(len(popularity) * ratio), 1)] + 1] = True
    return tail


def tail_share(lists: np.ndarray, popularity: np.ndarray, ratio: float = TAIL_RATIO) -> float:
    """The mean over users of the share of their list's items that are tail items."""
    return _mean_over_slots(lists, tail_items(popularity, ratio).astype(np.float64))


def average_popularity(lists: np.ndarray, popularity: np.ndarray) -> float:
    """The mean over users of the mean training count of their list's items."""
    per_item = np.concatenate([[0.0], np.asarray(popularity, dtype=np.float64)])
    return _mean_over_slots(lists, per_item)


def _mean_over_slots(lists: np.ndarray, per_item: np.ndarray) -> float:
    filled = lists > 0
    counts = filled.sum(axis=1)
    sums = np.where(filled, per_item[lists], 0.0).sum(axis=1)
    listed = counts > 0
    return float((sums[listed] / counts[listed]).mean()) if listed.any() else 0.0


# distances(a, b): item indices [M] and [M] -> the distance of each pair [M]
PairDistance = Callable[[np.ndarray, np.ndarray], np.ndarray]


def intra_list_distance(lists: np.ndarray, distance: PairDistance) -> float:
    """The mean over users of the mean distance between two items of their list."""
    first, second = np.triu_indices(lists.shape[1], k=1)
    per_user = []
    for begin in range(0, len(lists), DISTANCE_CHUNK_USERS):
        chunk = lists[begin : begin + DISTANCE_CHUNK_USERS]
        a, b = chunk[:, first], chunk[:, second]
        real = (a > 0) & (b > 0)
        values = np.zeros(a.shape)
        values[real] = distance(a[real], b[real])
        pairs = real.sum(axis=1)
        listed = pairs > 0
        per_user.append(values.sum(axis=1)[listed] / pairs[listed])
    flat = np.concatenate(per_user) if per_user else np.zeros(0)
    return float(flat.mean()) if len(flat) else 0.0


def cosine_distances(vectors: np.ndarray) -> PairDistance:
    """1 - cosine similarity of two items' vectors ([N, d], item i at row i - 1). Only the
    listed items' rows are read: normalising a million-item head cost seconds."""

    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        left = np.asarray(vectors[a - 1], dtype=np.float64)
        right = np.asarray(vectors[b - 1], dtype=np.float64)
        norms = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
        dots = np.einsum("md,md->m", left, right)
        return 1.0 - np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)

    return distance


class GenreSets:
    """Each item's genres as bits (64 genres per uint64 word), for Jaccard distances of many
    pairs at once without a per-pair set."""

    def __init__(self, genres: "Sequence[str | None] | pl.Series", separator: str = "|") -> None:
        """`genres`: per item index 1..N, its genres joined by `separator` (None: unknown)."""
        lists = (
            pl.Series(genres, dtype=pl.String)
            .str.split(separator)
            .list.eval(pl.element().str.strip_chars().filter(pl.element() != ""))
        )
        lengths = lists.list.len().fill_null(0).to_numpy()
        owners = np.repeat(np.arange(1, len(lengths) + 1), lengths)
        flat = lists.explode().drop_nulls()
        codes = (flat.rank("dense").to_numpy() - 1).astype(np.int64)  # by sorted genre name
        words = max(1, -(-flat.n_unique() // 64))
        self.bits = np.zeros((len(lengths) + 1, words), dtype=np.uint64)
        flags = np.left_shift(np.uint64(1), (codes % 64).astype(np.uint64))
        np.bitwise_or.at(self.bits, (owners, codes // 64), flags)

    def jaccard_distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """1 - |G_a & G_b| / |G_a | G_b| per pair; two items without genres are at 0."""
        left, right = self.bits[a], self.bits[b]
        shared = np.bitwise_count(left & right).sum(axis=1).astype(np.float64)
        either = np.bitwise_count(left | right).sum(axis=1).astype(np.float64)
        return 1.0 - np.divide(shared, either, out=np.ones_like(shared), where=either > 0)

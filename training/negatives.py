"""Negatives for the sampled losses: drawn from a distribution over the catalog (uniform or by
popularity), optionally joined by the batch's own targets, and each draw's expected count so a
sampled softmax can correct its logits (the log-Q correction).

Why the correction: a softmax over K sampled negatives estimates the full partition function
sum_i exp(s_i) only once each sampled term is weighted by 1 / E[count_i], E[count_i] being the
number of times item i is expected among the draws. In logits that is s_i - log E[count_i].
Without it, popularity-sampled negatives push popular items down far more than the full softmax
would, and uniform negatives push every item down too little (K of N terms).
"""

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Negatives:
    """Shared negatives of one step: item indices (from 1) [K] and log E[count] of each [K]."""

    items: torch.Tensor
    log_expected: torch.Tensor


def resolve_sampling(sampling: str, loss: str) -> str:
    """`auto`: popularity for sampled softmax (corrected by log Q, measured better on ML-1M),
    uniform for BCE (which has no partition function to correct)."""
    if sampling != "auto":
        return sampling
    return "popularity" if loss == "sampled-softmax" else "uniform"


class NegativeSampler:
    """Draws `count` shared negatives per step and knows their expected counts.

    `target_counts[i]` is how often item i (from 1; index 0 is padding) is a training target:
    the batch's targets are draws from it, and `popularity` sampling draws from it too, add-one
    smoothed so every item can be drawn (an item never drawn would never be pushed down).
    """

    def __init__(
        self, target_counts: np.ndarray, count: int, sampling: str, device: torch.device
    ) -> None:
        if sampling not in ("uniform", "popularity"):
            raise ValueError(f"sampling must be uniform or popularity, got {sampling!r}")
        counts = torch.as_tensor(np.asarray(target_counts[1:], dtype=np.float64))
        self.num_items = len(counts)
        self.count = count
        self.sampling = sampling
        self.device = device
        # Index 0 (padding) is never drawn: probabilities are stored for items 1..N at 0..N-1.
        self.target_probability = (counts / counts.sum().clamp(min=1)).float().to(device)
        if sampling == "uniform":
            self.probability = torch.full((self.num_items,), 1.0 / self.num_items, device=device)
            self.cumulative = None
        else:
            smoothed = counts + 1.0
            self.probability = (smoothed / smoothed.sum()).float().to(device)
            # float64: at ~1M items a tail item's step in the CDF (~1e-7) is below float32's
            # resolution near 1.0, which would skew who gets drawn away from `probability`.
            self.cumulative = torch.cumsum(smoothed / smoothed.sum(), 0).to(device)

    def draw(self) -> torch.Tensor:
        """`count` item indices (from 1), with replacement."""
        if self.cumulative is None:
            # The same call (and random stream) as before popularity sampling existed.
            return torch.randint(1, self.num_items + 1, (self.count,), device=self.device)
        uniform = torch.rand(self.count, dtype=torch.float64, device=self.device)
        index = torch.searchsorted(self.cumulative, uniform, right=True)
        return index.clamp(max=self.num_items - 1) + 1

    def negatives(self, drawn: torch.Tensor, batch_targets: torch.Tensor | None) -> Negatives:
        """This step's negatives: the `drawn` items, plus (given the batch's real targets [M])
        up to `count` of those targets as in-batch negatives, with their log expected counts."""
        in_batch = 0
        items = drawn
        if batch_targets is not None and len(batch_targets):
            batch_items = self.in_batch(batch_targets)
            in_batch = len(batch_items)
            items = torch.cat([drawn, batch_items])
        return Negatives(items, self.log_expected_count(items, in_batch))

    def in_batch(self, targets: torch.Tensor) -> torch.Tensor:
        """The batch's targets as negatives: all of them, or `count` drawn at random positions
        when there are more (a batch of long histories has tens of thousands)."""
        if len(targets) <= self.count:
            return targets
        return targets[torch.randint(len(targets), (self.count,), device=targets.device)]

    def log_expected_count(self, items: torch.Tensor, in_batch: int) -> torch.Tensor:
        """log E[count of item i among this step's negatives]: `count` draws from the sampling
        distribution plus `in_batch` draws from the training targets' distribution."""
        expected = self.count * self.probability[items - 1]
        if in_batch:
            expected = expected + in_batch * self.target_probability[items - 1]
        return expected.log()

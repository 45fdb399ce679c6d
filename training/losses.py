"""Next-item losses over the item head: full softmax, sampled softmax, and BCE with negatives."""

import torch
import torch.nn.functional as F


def full_softmax(hidden: torch.Tensor, targets: torch.Tensor, weight, bias) -> torch.Tensor:
    """Cross-entropy over every item. hidden [M, d]; targets [M] item indices (from 1)."""
    return F.cross_entropy(hidden @ weight.T + bias, targets - 1)


def with_negatives(
    kind: str, hidden: torch.Tensor, targets: torch.Tensor, weight, bias, negatives: torch.Tensor
) -> torch.Tensor:
    """Sampled softmax or BCE against `negatives` [K] (uniform, shared by the whole batch).

    A negative that happens to be the row's target is masked out (an "accidental hit").
    """
    positive = (hidden * weight[targets - 1]).sum(-1) + bias[targets - 1]
    negative = hidden @ weight[negatives - 1].T + bias[negatives - 1]
    accidental = negatives[None, :] == targets[:, None]
    if kind == "sampled-softmax":
        negative = negative.masked_fill(accidental, -torch.inf)
        logits = torch.cat([positive[:, None], negative], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(targets))
    positive_loss = F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive))
    negative_loss = F.binary_cross_entropy_with_logits(
        negative, torch.zeros_like(negative), reduction="none"
    )
    keep = (~accidental).float()
    return positive_loss + (negative_loss * keep).sum() / keep.sum().clamp(min=1)

"""The three exported graphs as torch modules: encoder, scorer and full-catalog top-k.

Item indices follow the training convention: 0 is padding, items are 1..N. Histories are
left-padded (the newest item in the last column), exactly as the model was trained.
"""

import torch
from torch import nn

from training.model import LogitLM


class Encoder(nn.Module):
    """items [B, L] (+ context [B, F]) -> user_vector h [B, d]: the state at the newest item.

    The item input vectors (id embedding plus the projected title embedding, when the model has
    one) are folded into one constant table, so neither the title embeddings nor the head travel
    with the encoder.
    """

    def __init__(self, model: LogitLM) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.register_buffer("input_table", model.item_vectors().detach().clone())

    def forward(self, items: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        states = self.model.encode(self.input_table[items], items != 0, context)
        return states[:, -1]


def head_table(model: LogitLM) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) with a padding row 0: W [N + 1, d] (row 0 zero), b [N + 1] (b[0] = -inf).

    Candidate index 0 then scores -inf, so padded candidate lists need no special case.
    """
    weight, bias = model.head()
    weight = torch.cat([weight.new_zeros(1, weight.shape[1]), weight]).detach()
    bias = torch.cat([bias.new_full((1,), float("-inf")), bias]).detach()
    return weight, bias


class Scorer(nn.Module):
    """user_vector [B, d] + candidates [B, C] (item indices) -> exact logits [B, C]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight.clone())
        self.register_buffer("bias", bias.clone())

    def forward(self, user_vector: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        vectors = self.weight[candidates]  # [B, C, d]
        return (vectors @ user_vector.unsqueeze(-1)).squeeze(-1) + self.bias[candidates]


class TopK(nn.Module):
    """items [B, L] (+ context) and k [B, 1] -> the k best logits and item indices [B, k].

    One k serves the whole batch (the largest asked for): Triton batches requests of one shape,
    and the caller keeps the first k of its own row.
    """

    def __init__(self, encoder: Encoder, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("weight", weight[1:].clone())
        self.register_buffer("bias", bias[1:].clone())

    def forward(
        self, items: torch.Tensor, k: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        user_vector = self.encoder(items, context)
        logits = user_vector @ self.weight.T + self.bias
        count = k.max().clamp(min=1, max=self.weight.shape[0]).reshape(1)
        values, indices = torch.topk(logits, count, dim=1)
        return values, indices + 1

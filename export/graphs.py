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
    with the encoder. A GPT-2 backbone (`scratch`) runs through `gpt2_newest_state`, which skips
    the work whose result serving never reads; other backbones run their own forward.
    """

    def __init__(self, model: LogitLM) -> None:
        super().__init__()
        self.model = model
        self.newest_only = plain_gpt2(model.backbone)
        with torch.no_grad():
            self.register_buffer("input_table", model.item_vectors().detach().clone())

    def forward(self, items: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        inputs, mask = self.input_table[items], items != 0
        if self.newest_only:
            backbone_inputs = self.model.backbone_inputs(inputs, mask, context)
            return gpt2_newest_state(self.model.backbone, *backbone_inputs)
        return self.model.encode(inputs, mask, context)[:, -1]


def plain_gpt2(backbone: nn.Module) -> bool:
    """A GPT-2 whose attention is the textbook one (what `gpt2_newest_state` reproduces)."""
    config = backbone.config
    return (
        config.model_type == "gpt2"
        and not config.scale_attn_by_inverse_layer_idx
        and not config.reorder_and_upcast_attn
        and not config.add_cross_attention
    )


def gpt2_newest_state(
    backbone: nn.Module, inputs: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """GPT-2's final state at the last position only, the same numbers as its full forward.

    Serving reads one state per history, so the last block needs one query: it computes keys and
    values for every position but attention, projection and feed-forward for the newest only
    (the 2-layer ML-1M model: 1.9x to 2.9x faster in ONNX Runtime at batch 1 to 32 than the
    full forward, results/export.md). Masked scores are set to the dtype's minimum rather
    than -inf so that left-padding rows, which have nothing to attend to, stay finite: they
    are keys later, and a NaN there would poison real rows even at zero weight.
    """
    hidden = inputs + backbone.wpe(positions)
    length = mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    allowed = causal[None, None] & mask[:, None, None, :].bool()  # [B, 1, L, L]
    minimum = torch.finfo(hidden.dtype).min
    blocks = list(backbone.h)
    for index, block in enumerate(blocks):
        attention = block.attn
        query, key, value = attention.c_attn(block.ln_1(hidden)).split(attention.split_size, 2)
        visible = allowed
        if index == len(blocks) - 1:
            query, hidden, visible = query[:, -1:], hidden[:, -1:], allowed[:, :, -1:]
        query, key, value = (_heads(t, attention.head_dim) for t in (query, key, value))
        scores = torch.where(visible, query @ key.transpose(-1, -2) * attention.scaling, minimum)
        attended = torch.softmax(scores, dim=-1) @ value  # [B, heads, Q, head_dim]
        attended = attended.transpose(1, 2).reshape(hidden.shape)
        hidden = hidden + attention.c_proj(attended)
        hidden = hidden + block.mlp(block.ln_2(hidden))
    return backbone.ln_f(hidden[:, -1])


def _heads(states: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[B, T, heads * head_dim] -> [B, heads, T, head_dim]."""
    return states.reshape(states.shape[0], states.shape[1], -1, head_dim).transpose(1, 2)


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

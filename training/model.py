"""The logit language model: item sequence (+ context prefix) -> transformer -> one logit per item.

Conventions: items are indexed from 1 and 0 is padding; histories are left-padded, so the last
column is always the newest item and its hidden state is the user vector h. Position ids count
back from the newest item (0 = newest), so a shorter window means the same positions.
Logits are `h @ W[1:].T + b[1:]`: output column j is item j + 1 and padding is never predicted.
"""

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, GPT2Config

from training.config import ModelConfig


def mixed_precision(enabled: bool, device: torch.device):
    """bf16 autocast on CUDA when enabled; on CPU it measured no faster, so plain fp32."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def scratch_backbone_config(config: ModelConfig, context_tokens: int) -> dict:
    """A small GPT-2 (SASRec-sized) read through `inputs_embeds`: its token table is unused."""
    return GPT2Config(
        vocab_size=1,
        bos_token_id=0,
        eos_token_id=0,
        n_positions=config.max_length + context_tokens,
        n_embd=config.hidden_size,
        n_layer=config.num_layers,
        n_head=config.num_heads,
        n_inner=config.ffn_size or config.hidden_size,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout if config.attention_dropout is None else config.attention_dropout,
    ).to_dict()


def pretrained_backbone_config(path: str) -> dict:
    """The local model's config, switched to causal attention (every position predicts the next)."""
    hf_config = AutoConfig.from_pretrained(path, local_files_only=True)
    hf_config.is_decoder = True
    return hf_config.to_dict()


def build_backbone(backbone_config: dict, weights_path: str | None = None) -> nn.Module:
    """The transformer from its config; pretrained weights are loaded when a path is given."""
    values = dict(backbone_config)
    hf_config = AutoConfig.for_model(values.pop("model_type"), **values)
    if weights_path is None:
        model = AutoModel.from_config(hf_config)
    else:
        # safetensors only: a pickled checkpoint (pytorch_model.bin) could run code on load.
        model = AutoModel.from_pretrained(
            weights_path, config=hf_config, local_files_only=True, use_safetensors=True
        )
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # BERT's pooler is not used: h is the last position's state
    # The token table is never read (items come in as inputs_embeds): freeze it so optimizers and
    # DDP leave it alone.
    model.get_input_embeddings().weight.requires_grad_(False)
    return model


class _SparseRowGather(torch.autograd.Function):
    """table[index] whose gradient is a sparse tensor over the gathered rows. F.embedding offers
    this for 2-D tables only; the head bias is 1-D."""

    @staticmethod
    def forward(ctx, table, index):
        ctx.table_shape = table.shape
        ctx.save_for_backward(index)
        return table[index]

    @staticmethod
    def backward(ctx, grad_output):
        (index,) = ctx.saved_tensors
        values = grad_output.reshape(-1, *ctx.table_shape[1:])
        # The indices were valid rows in forward: no need to check them again.
        gradient = torch.sparse_coo_tensor(
            index.reshape(1, -1), values, ctx.table_shape, check_invariants=False
        )
        return gradient, None


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index], with a sparse gradient for `table`."""
    return _SparseRowGather.apply(table, index)


class LogitLM(nn.Module):
    """Item ids (+ user context) in, hidden states and per-item logits out."""

    def __init__(
        self,
        config: ModelConfig,
        backbone: nn.Module,
        num_items: int,
        context_cardinalities: list[int],
        item_text: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_items = num_items
        self.backbone = backbone
        hidden = backbone.get_input_embeddings().weight.shape[1]
        self.hidden_size = hidden
        self.item_embedding = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=1 / math.sqrt(hidden))
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        if item_text is not None:
            # Frozen title embeddings [num_items + 1, text_dim]; row 0 (padding) is zero.
            self.register_buffer("item_text", item_text.float())
            self.text_projection = nn.Linear(item_text.shape[1], hidden)
        else:
            self.item_text = None
            self.text_projection = None
        self._id_keep: torch.Tensor | None = None  # this step's item-id dropout mask
        self.context_embeddings = nn.ModuleList(
            nn.Embedding(cardinality + 1, hidden) for cardinality in context_cardinalities
        )
        self.head_weight = (
            None if config.tie_weights else nn.Parameter(torch.randn(num_items + 1, hidden) * 0.02)
        )
        self.head_bias = nn.Parameter(torch.zeros(num_items + 1))

    @property
    def context_tokens(self) -> int:
        return len(self.context_embeddings)

    def drop_item_ids(self, generator: torch.Generator | None = None) -> None:
        """Draw this training step's item-id dropout: each item's id embedding is left out
        (the item is its title projection alone) with probability `item_id_dropout`, so the
        projection learns to stand for items it has never seen (cold start). Off in eval mode."""
        rate = self.config.item_id_dropout
        if not (self.training and rate > 0 and self.text_projection is not None):
            self._id_keep = None
            return
        device = self.item_embedding.weight.device
        draw = torch.rand(self.num_items + 1, generator=generator, device=device)
        self._id_keep = (draw >= rate).to(self.item_embedding.weight.dtype)

    def item_vectors(
        self, items: torch.Tensor | None = None, *, sparse: bool = False
    ) -> torch.Tensor:
        """Input vectors of `items` (all items, padding row included, when None). With `sparse`
        the id table's gradient is a sparse tensor holding only the looked-up rows."""
        keep = self._id_keep if self.training else None
        if items is None:
            vectors = self.item_embedding.weight
            if keep is not None:
                vectors = vectors * keep[:, None]
            if self.text_projection is not None:
                vectors = vectors + self.text_projection(self.item_text)
            return vectors
        vectors = F.embedding(items, self.item_embedding.weight, padding_idx=0, sparse=sparse)
        if keep is not None:
            vectors = vectors * keep[items].unsqueeze(-1)
        if self.text_projection is not None:
            vectors = vectors + self.text_projection(self.item_text[items])
        return vectors

    def head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, b) over real items only: rows 1..N, so output column j is item j + 1."""
        weight = self.item_vectors() if self.head_weight is None else self.head_weight
        return weight[1:], self.head_bias[1:]

    def head_rows(
        self, items: torch.Tensor, *, sparse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, b) rows of `items` (indices from 1) only, for losses that score a few items: the
        whole head is never built, and with `sparse` its gradients hold just these rows."""
        if self.head_weight is None:
            weight = self.item_vectors(items, sparse=sparse)
        else:
            weight = F.embedding(items, self.head_weight, sparse=sparse)
        bias = gather_rows(self.head_bias, items) if sparse else self.head_bias[items]
        return weight, bias

    def hidden_states(
        self, items: torch.Tensor, context: torch.Tensor | None = None, *, sparse: bool = False
    ) -> torch.Tensor:
        """[B, L] left-padded item indices (+ [B, F] context indices) -> [B, L, d]."""
        return self.encode(self.item_vectors(items, sparse=sparse), items != 0, context)

    def encode(
        self, inputs: torch.Tensor, mask: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Item input vectors [B, L, d] and their padding mask [B, L] -> hidden states [B, L, d].

        Split from `hidden_states` so an exported encoder can look its inputs up in a folded
        table instead of recomputing the title projection.
        """
        inputs, mask, positions = self.backbone_inputs(inputs, mask, context)
        output = self.backbone(
            inputs_embeds=inputs, attention_mask=mask.long(), position_ids=positions
        ).last_hidden_state
        return output[:, self.context_tokens :]

    def backbone_inputs(
        self, inputs: torch.Tensor, mask: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the backbone reads: the context prefix prepended to the item vectors, with the
        attention mask and position ids to match ([B, F + L, d], [B, F + L], [B, F + L])."""
        batch, length = mask.shape
        positions = torch.arange(length - 1, -1, -1, device=mask.device).clamp(
            max=self.config.max_length - 1
        )
        positions = positions.unsqueeze(0).expand(batch, length)
        if self.context_tokens:
            prefix = torch.stack(
                [table(context[:, j]) for j, table in enumerate(self.context_embeddings)], dim=1
            )
            inputs = torch.cat([prefix, inputs], dim=1)
            mask = torch.cat([mask.new_ones(batch, self.context_tokens), mask], dim=1)
            prefix_positions = self.config.max_length + torch.arange(
                self.context_tokens, device=mask.device
            )
            positions = torch.cat([prefix_positions.unsqueeze(0).expand(batch, -1), positions], 1)
        return inputs, mask, positions

    def user_vectors(
        self, items: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """h: the hidden state at the newest item (the last column) -> [B, d]."""
        return self.hidden_states(items, context)[:, -1]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight, bias = self.head()
        return hidden @ weight.T + bias

    def forward(self, items: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over all real items at the newest position: [B, num_items]."""
        return self.logits(self.user_vectors(items, context))

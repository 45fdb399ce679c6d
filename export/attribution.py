"""The cheap attribution graph: one call gives, for every returned item, how much each history
position's input embedding contributed to its logit (gradient x input, or integrated gradients
with a few steps), instead of the L + 1 encoder rows of leave-one-out (serving/explain.py).

    items [B, L] + targets [B, k] (+ context [B, F]) -> attributions [B, k, L]

attribution[b, t, j] = sum_e x[b, j, e] * mean_s d logit_t / d x[b, j, e] at (s + 1/2)/steps * x,
the gradient of target t's logit with respect to the item input vector x at position j, summed
over the embedding dimension (steps = 1: gradient x input at x itself). Padding positions get 0.

Exporting it: the forward needs the real gradient, computed by autograd, inside the graph. The
TorchScript exporter (`torch.onnx.export(dynamo=False)`) cannot do that: its tracer does not
record the backward pass (the backward's saved tensors reach it as constants that require grad,
and it refuses them); the dynamo exporter needs onnxscript, which is not installed. So the
forward and its backward are first captured together as one graph of plain aten operations with
`make_fx` (how AOTAutograd captures a joint graph; symbolic shapes, so batch, length and k stay
dynamic), the backward operations decomposed into primitives; that graph, after a few rewrites
of operations the TorchScript exporter does not handle, is exported like any other module. It
is autograd's own gradient, op for op, not a hand-written or linearised one, and the exporter
checks it against autograd on the checkpoint's real histories before anything is installed.
"""

import contextlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.graphs import Encoder, gpt2_newest_state
from logitrec.errors import InputError
from logitrec.repository import CONTEXT, ITEMS, TARGETS

# Integrated-gradient steps of the exported model; 1 is plain gradient x input. Each step is
# one more forward and backward per (request, target) row.
STEPS = 1
# |ONNX - autograd| allowed, relative to the largest attribution of the sample (fp32 arithmetic
# in a different order through a forward and a backward pass).
TOLERANCE = 1e-3
PARITY_USERS = 32
PARITY_TARGETS = 5


class Attribution(nn.Module):
    """items [B, L], targets [B, k] (item indices) (+ context [B, F]) -> attributions [B, k, L]."""

    def __init__(self, encoder: Encoder, weight: torch.Tensor, steps: int = STEPS) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps: expected >= 1, got {steps}")
        self.encoder = encoder
        self.steps = steps
        table = encoder.input_table
        # A tied head is the input table itself: keep one tensor, so the graph holds one copy.
        self.register_buffer("weight", table if torch.equal(weight, table) else weight.clone())

    @property
    def num_items(self) -> int:
        return self.weight.shape[0] - 1

    def forward(
        self, items: torch.Tensor, targets: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        # Sizes spelled out, never -1: the captured graph would compute a -1 from the example's
        # element count and keep that constant.
        batch, length = items.shape
        count, dim = targets.shape[1], self.weight.shape[1]
        rows = count * self.steps  # one gradient row per (target, step) of each request
        mask = items != 0
        inputs = self.encoder.input_table[items]  # [B, L, d]
        with torch.enable_grad():
            scaled = inputs[:, None, None] * self._alphas(inputs.dtype)[:, None, None]
            scaled = scaled.expand(batch, count, self.steps, length, dim)
            scaled = scaled.reshape(batch * rows, length, dim).detach().requires_grad_(True)
            repeated_context = None if context is None else context.repeat_interleave(rows, 0)
            vectors = self._user_vectors(scaled, mask.repeat_interleave(rows, 0), repeated_context)
            heads = self.weight[targets.repeat_interleave(self.steps, 1).reshape(-1)]
            # Rows are independent, so the gradient of the sum is each row's own gradient.
            (gradient,) = torch.autograd.grad((vectors * heads).sum(), scaled)
        gradient = gradient.reshape(batch, count, self.steps, length, dim).mean(2)
        return (gradient * inputs[:, None]).sum(-1) * mask[:, None]

    def _alphas(self, dtype: torch.dtype) -> torch.Tensor:
        """Where on the path from 0 to x each step takes its gradient: the midpoints of `steps`
        equal parts, or x itself for gradient x input."""
        if self.steps == 1:
            return torch.ones(1, dtype=dtype)
        return (torch.arange(self.steps, dtype=dtype) + 0.5) / self.steps

    def _user_vectors(self, inputs, mask, context) -> torch.Tensor:
        """The encoder's user vector from input vectors instead of item indices (the same two
        paths as Encoder.forward)."""
        model = self.encoder.model
        if self.encoder.newest_only:
            return gpt2_newest_state(model.backbone, *model.backbone_inputs(inputs, mask, context))
        return model.encode(inputs, mask, context)[:, -1]


def example_inputs(context_tokens: int, num_items: int) -> dict:
    """Sizes that no other dimension shares (symbolic tracing would tie equal sizes together)."""
    batch, length, count = 2, 11, 7
    items = torch.arange(batch * length).reshape(batch, length) % num_items + 1
    items[0, :4] = 0  # left padding, so the traced graph keeps the masking path
    targets = torch.arange(batch * count).reshape(batch, count) % num_items + 1
    inputs = {ITEMS: items, TARGETS: targets}
    if context_tokens:
        inputs[CONTEXT] = torch.ones(batch, context_tokens, dtype=torch.long)
    return inputs


def joint_graph(module: Attribution, args: tuple) -> torch.fx.GraphModule:
    """The forward and autograd's backward as one graph of aten operations, shapes symbolic."""
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental import _config as fx_config
    from torch.fx.experimental.proxy_tensor import make_fx

    backbone = module.encoder.model.backbone
    # Equal example sizes stay separate symbols; attention as plain matrix products, whose
    # backward decomposes (the fused kernel's backward has no decomposition and no ONNX form).
    with fx_config.patch(use_duck_shape=False), _eager_attention(backbone):
        graph = make_fx(
            module,
            decomposition_table=core_aten_decompositions(),
            tracing_mode="symbolic",
            _allow_non_fake_inputs=True,  # the weights are real tensors, constants of the graph
        )(*args)
    _rewrite_for_torchscript(graph)
    return graph


@contextlib.contextmanager
def _eager_attention(backbone: nn.Module):
    """A Hugging Face backbone with its attention implemented in eager PyTorch for a while (the
    same arithmetic as scaled_dot_product_attention)."""
    current = getattr(backbone.config, "_attn_implementation", None)
    if current in (None, "eager") or not hasattr(backbone, "set_attn_implementation"):
        yield
        return
    backbone.set_attn_implementation("eager")
    try:
        yield
    finally:
        backbone.set_attn_implementation(current)


# -- rewrites: the captured graph's aten calls in forms the TorchScript tracer records ----------
def _size(tensor, dim):
    """aten.sym_size as a traced size: the exported graph reads it at run time."""
    return tensor.size(dim)


def _view(tensor, size):
    return tensor.reshape(size)


def _expand(tensor, size, implicit=False):
    return tensor.expand(size)


def _full(size, value, *, dtype=None, **_placement):
    return torch.full(size, int(value) if isinstance(value, bool) else value, dtype=dtype)


def _full_like(tensor, value, *, dtype=None, **_placement):
    return torch.full_like(tensor, int(value) if isinstance(value, bool) else value, dtype=dtype)


def _scalar_tensor(value, *, dtype=None, **_placement):
    return torch.scalar_tensor(value, dtype=dtype)


def _arange(start, end, step=1, *, dtype=None, **_placement):
    return torch.arange(start, end, step, dtype=dtype)


def _slice(tensor, dim=0, start=None, end=None, step=1):
    return tensor[(slice(None),) * dim + (slice(start, _end(end), step),)]


def _end(end):
    """aten spells 'to the end' as the largest int64; Python slicing as None."""
    return None if isinstance(end, int) and end >= 2**62 else end


def _slice_scatter(tensor, source, dim=0, start=None, end=None, step=1):
    """`tensor` with `source` written over tensor[start:end] along `dim` (the backward of a
    slice), as a concatenation: ONNX opset 17 has no slice-scatter."""
    if step != 1:
        raise InputError(f"the attribution graph slices with step {step}: cannot export it")
    size = tensor.shape[dim]
    start = 0 if start is None else start
    start = start + size if start < 0 else start
    end = _end(end)
    end = size if end is None else (end + size if end < 0 else end)
    parts = [tensor.narrow(dim, 0, start), source, tensor.narrow(dim, end, size - end)]
    return torch.cat(parts, dim)


def _to_copy(tensor, *, dtype=None, **_placement):
    return tensor.to(dtype) if dtype is not None else tensor.clone()


def _softmax(tensor, dim, half_to_float=False):
    return torch.softmax(tensor, dim)


def _sum(tensor, dims, keepdim=False, *, dtype=None):
    """A sum over the empty dimension list means every dimension (not ONNX's empty axes)."""
    if not list(dims):
        return tensor.sum(dtype=dtype)
    return tensor.sum(dims, keepdim=keepdim, dtype=dtype)


def _logical_and(first, second):
    return first & second if first.dtype != torch.bool else torch.logical_and(first, second)


COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")


def _rewrites() -> dict:
    aten = torch.ops.aten
    return {
        aten.sym_size.int: _size,
        aten.view.default: _view,
        aten.expand.default: _expand,
        aten.full.default: _full,
        aten.full_like.default: _full_like,
        aten.scalar_tensor.default: _scalar_tensor,
        aten.arange.start_step: _arange,
        aten.slice.Tensor: _slice,
        aten.slice_scatter.default: _slice_scatter,
        aten._softmax.default: _softmax,
        aten._to_copy.default: _to_copy,
        aten.lift_fresh_copy.default: torch.clone,
        aten.sum.dim_IntList: _sum,
        aten.bitwise_and.Tensor: _logical_and,  # opset 17 has And for booleans, no BitwiseAnd
        # Comparisons with a size (BERT's attention mask): torch's take a traced one.
        **{getattr(aten, name).Scalar: getattr(torch, name) for name in COMPARISONS},
    }


def _rewrite_for_torchscript(graph: torch.fx.GraphModule) -> None:
    """Call the same operations through torch's Python functions: those take traced sizes (so
    batch, length and k stay dynamic in the ONNX graph) and have ONNX translations; the aten
    overloads want plain ints, and some (_softmax, slice_scatter, bitwise_and on booleans, a sum
    over no dimensions) have none."""
    rewrites = _rewrites()
    for node in graph.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target == torch.ops.aten.cat.default:
            _drop_empty_parts(node)
        if node.target in rewrites:
            node.target = rewrites[node.target]
        elif isinstance(node.target, torch._ops.OpOverload) and _reads_sizes(node):
            raise InputError(
                f"the attribution graph calls {node.target} with a run-time size: it would "
                "export with the example's sizes fixed (add a rewrite in export/attribution.py)"
            )
    graph.recompile()


def _drop_empty_parts(node: torch.fx.Node) -> None:
    """torch.cat accepts an empty 1-D tensor beside tensors of any rank (a key-value cache's
    first step, in BERT's decoder mode); ONNX Concat wants one rank, and the empty part adds
    nothing."""
    parts, *rest = node.args
    ranks = {len(p.meta["val"].shape) for p in parts}
    kept = [p for p in parts if tuple(p.meta["val"].shape) != (0,) or ranks == {1}]
    if len(kept) < len(parts):
        node.args = (kept, *rest)


def _reads_sizes(node: torch.fx.Node) -> bool:
    """Whether an argument is a symbolic size (computed from an input's shape)."""
    values = [*node.args, *node.kwargs.values()]
    flat = [v for value in values for v in (value if isinstance(value, list | tuple) else [value])]
    return any(
        isinstance(v, torch.fx.Node) and isinstance(v.meta.get("val"), torch.SymInt) for v in flat
    )


# -- parity ---------------------------------------------------------------------------------------
def parity_targets(model, histories: np.ndarray, context: np.ndarray) -> np.ndarray:
    """Each history's model top PARITY_TARGETS items: what explanations are asked about."""
    with torch.no_grad():
        ctx = torch.as_tensor(context) if context.shape[1] else None
        logits = model(torch.as_tensor(histories), ctx)
    return (torch.topk(logits, PARITY_TARGETS, dim=1).indices + 1).numpy()


def check(module: Attribution, path: Path, histories: np.ndarray, context: np.ndarray) -> dict:
    """ONNX Runtime against autograd on real histories and their top items, at the sample's
    length and trimmed to its last 5 items with 2 targets (other dynamic sizes than traced)."""
    from export.parity import session

    histories, context = histories[:PARITY_USERS], context[:PARITY_USERS]
    targets = parity_targets(module.encoder.model, histories, context)
    onnx_session = session(path)
    differences, largest = [], 0.0
    for rows, wanted in ((histories, targets), (histories[:, -5:], targets[:, :2])):
        known = (rows != 0).any(axis=1)  # a trimmed history can be all padding: never served
        feed = {ITEMS: rows[known], TARGETS: wanted[known]}
        if context.shape[1]:
            feed[CONTEXT] = context[known]
        (got,) = onnx_session.run(None, feed)
        expected = module(*(torch.as_tensor(v) for v in feed.values())).detach().numpy()
        differences.append(float(np.abs(got - expected).max()))
        largest = max(largest, float(np.abs(expected).max()))
    worst = max(differences)
    return {
        "users": len(histories),
        "targets": PARITY_TARGETS,
        "max_abs_diff": worst,
        "largest_attribution": largest,
        "tolerance": TOLERANCE,
        "passed": bool(worst <= TOLERANCE * max(1.0, largest)),
    }

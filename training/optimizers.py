"""Optimisation that scales with the rows a step touches: AdamW whose sparse-gradient parameters
(the item tables under sampled losses) are updated row by row, and gradient clipping that
accepts sparse gradients.

Why not dense AdamW on the item tables: at 1M items x 64 a dense step reads and writes the
whole table, both moments and a dense gradient (about 1 GB of memory traffic), and the backward
pass fills a 256 MB gradient with zeros, while a batch touches some 50k rows. Measured in
benchmarks/results/training_scale.md.
"""

import math

import torch


class RowSparseAdamW(torch.optim.AdamW):
    """AdamW for the dense parameters; parameters whose gradient is sparse move only in the rows
    that gradient holds, and only those rows' moments are updated ("lazy" Adam, the update of
    torch.optim.SparseAdam, written here so one optimizer, one state dict and one learning-rate
    schedule serve both kinds).

    Per touched row the update is AdamW's, bias correction included (the step count is the
    parameter's, as in SparseAdam). Weight decay, which SparseAdam lacks, is AdamW's decoupled
    decay applied to the touched rows when they are touched: a row nobody looks up is not decayed.
    Rows outside the gradient stay bit-identical, and so do their moments.
    """

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("RowSparseAdamW.step takes no closure")
        sparse = [
            (group, parameter)
            for group in self.param_groups
            for parameter in group["params"]
            if parameter.grad is not None and parameter.grad.is_sparse
        ]
        gradients = [parameter.grad for _, parameter in sparse]
        # AdamW skips parameters without a gradient: hide the sparse ones from it.
        for _, parameter in sparse:
            parameter.grad = None
        try:
            super().step()
        finally:
            for (_, parameter), gradient in zip(sparse, gradients, strict=True):
                parameter.grad = gradient
        for (group, parameter), gradient in zip(sparse, gradients, strict=True):
            self._update_rows(group, parameter, gradient)

    def _update_rows(self, group: dict, parameter: torch.Tensor, gradient: torch.Tensor) -> None:
        if group["amsgrad"] or group["maximize"]:
            raise ValueError("RowSparseAdamW: amsgrad and maximize are not supported")
        gradient = gradient.coalesce()
        rows, values = gradient.indices()[0], gradient.values()
        state = self._row_state(parameter)
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = group["betas"]
        learning_rate, eps, decay = group["lr"], group["eps"], group["weight_decay"]

        exp_avg = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].index_select(0, rows)
        exp_avg_sq.mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)

        denominator = exp_avg_sq.sqrt_().div_(math.sqrt(1 - beta2**step)).add_(eps)
        weights = parameter.index_select(0, rows)
        if decay:
            weights.mul_(1 - learning_rate * decay)
        weights.addcdiv_(exp_avg, denominator, value=-learning_rate / (1 - beta1**step))
        parameter.index_copy_(0, rows, weights)

    def _row_state(self, parameter: torch.Tensor) -> dict:
        """AdamW's state layout (step, exp_avg, exp_avg_sq), so checkpoints and --resume work
        the same whichever optimizer wrote them."""
        state = self.state[parameter]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
        return state


def clip_gradients(parameters, max_norm: float) -> torch.Tensor:
    """Scale all gradients so their joint L2 norm is at most `max_norm`; returns the norm before.

    The same as torch.nn.utils.clip_grad_norm_ (which it calls when every gradient is dense),
    but sparse gradients are accepted: they are coalesced first, so a row looked up several times
    in a step counts once with its summed gradient, exactly as in the dense gradient.
    """
    parameters = [p for p in parameters if p.grad is not None]
    if not any(p.grad.is_sparse for p in parameters):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    for parameter in parameters:
        if parameter.grad.is_sparse:
            parameter.grad = parameter.grad.coalesce()
    values = [p.grad.values() if p.grad.is_sparse else p.grad for p in parameters]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in values]))
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for value in values:
        value.mul_(scale)
    return total

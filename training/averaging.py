"""An exponential moving average of the trainable weights, validated and kept instead of them.

Averaging the last few thousand steps smooths the noise of the final steps (a cheap ensemble
along the trajectory): one extra copy of the weights and one fused lerp per step.
"""

import contextlib

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def update(self) -> None:
        # Early on the average follows the weights closely, so it does not hold on to the
        # random initialisation (the usual (1 + n) / (10 + n) warm-up of the decay).
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.average, [p.detach() for p in self.parameters], 1.0 - decay)

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped_in(self):
        """Inside the block the model holds the averaged weights; its own come back after."""
        own = [p.detach().clone() for p in self.parameters]
        torch._foreach_copy_([p.data for p in self.parameters], self.average)
        try:
            yield
        finally:
            torch._foreach_copy_([p.data for p in self.parameters], own)

    def state(self) -> dict[str, torch.Tensor]:
        tensors = {f"average.{i}": t.detach().cpu() for i, t in enumerate(self.average)}
        return {**tensors, "updates": torch.tensor(self.updates)}

    @torch.no_grad()
    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if len(tensors) - 1 != len(self.average):
            raise ValueError("the saved weight average does not match this model")
        for i, tensor in enumerate(self.average):
            tensor.copy_(tensors[f"average.{i}"])
        self.updates = int(tensors["updates"])

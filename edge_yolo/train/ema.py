"""Exponential moving average of the model weights (what is evaluated and saved)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """EMA of parameters and buffers, with a decay that ramps up over the first updates.

    ``decay(updates) = decay * (1 - exp(-updates / tau))``: the early, noisy weights are
    forgotten quickly and the average settles once training has moved away from the init.
    BN running statistics are averaged like the weights (they are floating-point buffers).
    """

    def __init__(
        self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0
    ) -> None:
        self.ema = copy.deepcopy(unwrap(model)).eval()
        self.ema.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        source = unwrap(model).state_dict()
        averaged, current = [], []
        for name, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                averaged.append(value)
                current.append(source[name].detach())
            else:  # num_batches_tracked: follow the model
                value.copy_(source[name])
        # ema = d * ema + (1 - d) * current, as multi-tensor kernels (a loop of ~1300 small
        # in-place ops otherwise)
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.ema.load_state_dict(state)
        self.updates = updates


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel / a training wrapper."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model

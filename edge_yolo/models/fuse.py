"""Re-parameterisation for inference: fold BatchNorm into convs and RepConvN into one 3x3 conv."""

from __future__ import annotations

from torch import nn


def fuse_model(model: nn.Module) -> nn.Module:
    """Fuse every block that knows how (``fuse()`` method), in place; puts the model in eval mode.

    Fusing uses BatchNorm running statistics, so it is only meaningful in eval mode.
    """
    model.eval()
    # Children before parents: RepConvN.fuse() fuses its own Conv children first anyway,
    # and collecting the list up front keeps the walk stable while modules are replaced.
    fusable = [m for m in model.modules() if m is not model and callable(getattr(m, "fuse", None))]
    for module in fusable:
        module.fuse()
    return model


def is_fused(model: nn.Module) -> bool:
    return not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())

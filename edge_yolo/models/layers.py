"""GELAN building blocks (YOLOv9, arXiv 2402.13616), written from the paper's block definitions.

Every fusable block has a ``fuse()`` method; :func:`edge_yolo.models.fuse.fuse_model` walks a
model and calls them, so an exported graph holds plain convolutions with biases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.03


class Conv(nn.Module):
    """Conv2d (no bias, 'same' padding) -> BatchNorm2d -> SiLU; after ``fuse()``, a biased conv."""

    def __init__(
        self, c1: int, c2: int, k: int = 1, s: int = 1, *, groups: int = 1, act: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, padding=k // 2, groups=groups, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act: nn.Module = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        if isinstance(self.bn, nn.Identity):
            return
        self.conv = fold_bn(self.conv, self.bn)
        self.bn = nn.Identity()


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a biased conv computing ``bn(conv(x))`` in eval mode."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
    ).to(conv.weight.device, conv.weight.dtype)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    fused.requires_grad_(conv.weight.requires_grad)
    return fused


class AConv(nn.Module):
    """2x2 average pool (stride 1) then a stride-2 3x3 Conv: halves the resolution."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2, 1, 0, False, True)  # a module, so an exporter can swap it
        self.conv = Conv(c1, c2, 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class RepConvN(nn.Module):
    """3x3 Conv+BN plus 1x1 Conv+BN, summed, then SiLU; ``fuse()`` makes one biased 3x3 conv."""

    def __init__(self, c1: int, c2: int, s: int = 1) -> None:
        super().__init__()
        self.conv1 = Conv(c1, c2, 3, s, act=False)
        self.conv2 = Conv(c1, c2, 1, s, act=False)
        self.act = nn.SiLU(inplace=True)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        return self.act(self.conv1(x) + self.conv2(x))

    @torch.no_grad()
    def fuse(self) -> None:
        if self.fused is not None:
            return
        self.conv1.fuse()
        self.conv2.fuse()
        k3, k1 = self.conv1.conv, self.conv2.conv
        fused = nn.Conv2d(k3.in_channels, k3.out_channels, 3, k3.stride, 1, bias=True)
        fused = fused.to(k3.weight.device, k3.weight.dtype)
        fused.weight.copy_(k3.weight + F.pad(k1.weight, [1, 1, 1, 1]))
        fused.bias.copy_(k3.bias + k1.bias)
        self.fused = fused
        del self.conv1, self.conv2


class RepNBottleneck(nn.Module):
    """RepConvN -> 3x3 Conv, with a residual add when input and output widths match."""

    def __init__(self, c1: int, c2: int, *, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = RepConvN(c1, c2)
        self.cv2 = Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class RepNCSP(nn.Module):
    """CSP block over ``n`` RepNBottlenecks: two 1x1 branches, concatenated, then a 1x1 Conv."""

    def __init__(self, c1: int, c2: int, n: int = 1) -> None:
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c1, c_, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(RepNBottleneck(c_, c_) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class ELAN1(nn.Module):
    """Plain ELAN: 1x1 Conv, split in two, two chained 3x3 Convs, concat all four, 1x1 Conv."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c3, 1)
        self.cv2 = Conv(c3 // 2, c4, 3)
        self.cv3 = Conv(c4, c4, 3)
        self.cv4 = Conv(c3 + 2 * c4, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.append(self.cv2(y[-1]))
        y.append(self.cv3(y[-1]))
        return self.cv4(torch.cat(y, 1))


class RepNCSPELAN4(nn.Module):
    """GELAN block: ELAN whose computational units are RepNCSP + 3x3 Conv."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int, n: int = 1) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c3, 1)
        self.cv2 = nn.Sequential(RepNCSP(c3 // 2, c4, n), Conv(c4, c4, 3))
        self.cv3 = nn.Sequential(RepNCSP(c4, c4, n), Conv(c4, c4, 3))
        self.cv4 = Conv(c3 + 2 * c4, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.append(self.cv2(y[-1]))
        y.append(self.cv3(y[-1]))
        return self.cv4(torch.cat(y, 1))


class SPPELAN(nn.Module):
    """Spatial pyramid pooling as ELAN: 1x1 Conv, three chained 5x5 max-pools, concat, 1x1 Conv."""

    def __init__(self, c1: int, c2: int, c3: int, k: int = 5) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c3, 1)
        self.pool = nn.MaxPool2d(k, 1, k // 2)
        self.cv5 = Conv(4 * c3, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv5(torch.cat(y, 1))

"""GELAN-t / GELAN-s and their PGI-trained forms YOLOv9-T / YOLOv9-S.

YOLOv9: Learning What You Want to Learn Using Programmable Gradient Information
(Wang, Yeh, Liao; arXiv 2402.13616). GELAN is the inference network; PGI adds an auxiliary
FPN-style neck and head on the shared backbone during training (:mod:`.pgi`) that
:meth:`YOLO.drop_auxiliary` removes, leaving exactly GELAN.

Layer numbers in comments refer to the table in docs/MODEL_FACTS.md (t widths; s doubles them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..contract import REG_MAX, STRIDES, inference_name
from .head import DDetect, LevelOutput
from .layers import ELAN1, SPPELAN, AConv, Conv, RepNCSPELAN4
from .pgi import AuxiliaryBranch


@dataclass(frozen=True)
class GELANConfig:
    """Architecture of one variant. ``width`` is the stem width (t: 16, s: 32); every
    other channel count is a fixed multiple of it. ``depth`` is RepNCSP's bottleneck count."""

    name: str
    width: int
    depth: int = 3
    pgi: bool = False
    num_classes: int = 80
    reg_max: int = REG_MAX
    strides: tuple[int, int, int] = STRIDES
    # (box, class) branch widths of the heads; None = head.head_widths' rule. Pretrained
    # reference weights fix them (the official YOLOv9-T class branch is 128 wide).
    head_widths: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.width <= 0 or self.width % 8:
            raise ValueError(
                f"{self.name}: width must be a positive multiple of 8, got {self.width}"
            )
        if self.depth < 1:
            raise ValueError(f"{self.name}: depth must be >= 1, got {self.depth}")
        if self.num_classes < 1:
            raise ValueError(f"{self.name}: num_classes must be >= 1, got {self.num_classes}")
        if self.reg_max < 2:
            raise ValueError(f"{self.name}: reg_max must be >= 2, got {self.reg_max}")
        if tuple(self.strides) != STRIDES:
            raise ValueError(f"{self.name}: strides must be {STRIDES}, got {self.strides}")
        if self.head_widths is not None and (
            len(self.head_widths) != 2 or min(self.head_widths) < 1 or self.head_widths[0] % 4
        ):
            raise ValueError(
                f"{self.name}: head_widths must be (box, cls) > 0 with box a multiple of 4, "
                f"got {self.head_widths}"
            )

    @property
    def level_channels(self) -> tuple[int, int, int]:
        """Channels of P3, P4, P5 (the head's inputs) and of B3, B4, B5 (the backbone's)."""
        w = self.width
        return 4 * w, 6 * w, 8 * w

    def inference_config(self) -> GELANConfig:
        """The same network without the PGI branch (``yolov9-t`` -> ``gelan-t``)."""
        name = inference_name(self.name) if self.pgi else self.name
        return dataclasses.replace(self, name=name, pgi=False)


class Backbone(nn.Module):
    """Layers 0-8: stem, ELAN1, then three AConv + RepNCSPELAN4 stages (B3, B4, B5)."""

    def __init__(self, w: int, n: int) -> None:
        super().__init__()
        self.stem = Conv(3, w, 3, 2)  # 0: /2
        self.down1 = Conv(w, 2 * w, 3, 2)  # 1: /4
        self.elan1 = ELAN1(2 * w, 2 * w, 2 * w, w)  # 2
        self.down2 = AConv(2 * w, 4 * w)  # 3: /8
        self.stage3 = RepNCSPELAN4(4 * w, 4 * w, 4 * w, 2 * w, n)  # 4: B3
        self.down3 = AConv(4 * w, 6 * w)  # 5: /16
        self.stage4 = RepNCSPELAN4(6 * w, 6 * w, 6 * w, 3 * w, n)  # 6: B4
        self.down4 = AConv(6 * w, 8 * w)  # 7: /32
        self.stage5 = RepNCSPELAN4(8 * w, 8 * w, 8 * w, 4 * w, n)  # 8: B5

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.elan1(self.down1(self.stem(x)))
        b3 = self.stage3(self.down2(x))
        b4 = self.stage4(self.down3(b3))
        b5 = self.stage5(self.down4(b4))
        return b3, b4, b5


class PANNeck(nn.Module):
    """Layers 9-21: SPPELAN, top-down (upsample + concat) and bottom-up (AConv + concat) paths."""

    def __init__(self, w: int, n: int) -> None:
        super().__init__()
        self.spp = SPPELAN(8 * w, 8 * w, 4 * w)  # 9
        self.up = nn.Upsample(scale_factor=2, mode="nearest")  # 10, 13
        self.top_down4 = RepNCSPELAN4(14 * w, 6 * w, 6 * w, 3 * w, n)  # 12
        self.top_down3 = RepNCSPELAN4(10 * w, 4 * w, 4 * w, 2 * w, n)  # 15: P3
        self.down4 = AConv(4 * w, 3 * w)  # 16
        self.bottom_up4 = RepNCSPELAN4(9 * w, 6 * w, 6 * w, 3 * w, n)  # 18: P4
        self.down5 = AConv(6 * w, 4 * w)  # 19
        self.bottom_up5 = RepNCSPELAN4(12 * w, 8 * w, 8 * w, 4 * w, n)  # 21: P5

    def forward(self, feats: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        b3, b4, b5 = feats
        s5 = self.spp(b5)
        t4 = self.top_down4(torch.cat((self.up(s5), b4), 1))
        p3 = self.top_down3(torch.cat((self.up(t4), b3), 1))
        p4 = self.bottom_up4(torch.cat((self.down4(p3), t4), 1))
        p5 = self.bottom_up5(torch.cat((self.down5(p4), s5), 1))
        return [p3, p4, p5]


class YOLO(nn.Module):
    """A GELAN detector; with ``config.pgi`` it also carries the auxiliary branch (``aux``)."""

    def __init__(self, config: GELANConfig) -> None:
        super().__init__()
        self.config = config
        w, n = config.width, config.depth
        self.backbone = Backbone(w, n)
        self.neck = PANNeck(w, n)
        widths = config.head_widths
        self.head = DDetect(
            config.num_classes, config.level_channels, config.strides, config.reg_max, widths
        )
        self.aux: AuxiliaryBranch | None = None
        if config.pgi:
            self.aux = AuxiliaryBranch(
                w, n, config.num_classes, config.strides, config.reg_max, widths=widths
            )

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def strides(self) -> tuple[int, int, int]:
        return self.config.strides

    @property
    def reg_max(self) -> int:
        return self.config.reg_max

    def forward(self, x: torch.Tensor, with_aux: bool = False) -> Any:
        """Main head's raw per-level outputs ``[(box_logits, cls_logits)] * 3``; with
        ``with_aux``, ``(main, aux)`` where ``aux`` is ``None`` without PGI.

        One ``forward`` for both, so whatever wraps the forward pass (DDP, NNCF's
        quantization hooks) also wraps the training pass; the auxiliary branch runs after the
        main path, on the same backbone features.
        """
        feats = self.backbone(x)
        main = self.head(self.neck(feats))
        if not with_aux:
            return main
        return main, (self.aux(feats) if self.aux is not None else None)

    def forward_train(self, x: torch.Tensor) -> tuple[list[LevelOutput], list[LevelOutput] | None]:
        """Main and auxiliary raw outputs; the auxiliary ones are ``None`` without PGI."""
        return self(x, with_aux=True)

    def drop_auxiliary(self) -> YOLO:
        """Remove the PGI branch in place: the model becomes the matching gelan-* network."""
        self.aux = None
        self.config = self.config.inference_config()
        return self

    def fuse(self) -> YOLO:
        """Fold every Conv+BN and RepConvN into plain biased convolutions (in place, eval mode)."""
        from .fuse import fuse_model

        return fuse_model(self)


_REGISTRY: dict[str, Callable[..., YOLO]] = {}


def register_model(fn: Callable[..., YOLO]) -> Callable[..., YOLO]:
    _REGISTRY[fn.__name__.replace("_", "-")] = fn
    return fn


@register_model
def gelan_t(num_classes: int = 80) -> YOLO:
    return YOLO(GELANConfig("gelan-t", width=16, num_classes=num_classes))


@register_model
def gelan_s(num_classes: int = 80) -> YOLO:
    return YOLO(GELANConfig("gelan-s", width=32, num_classes=num_classes))


@register_model
def yolov9_t(num_classes: int = 80) -> YOLO:
    return YOLO(GELANConfig("yolov9-t", width=16, pgi=True, num_classes=num_classes))


@register_model
def yolov9_s(num_classes: int = 80) -> YOLO:
    return YOLO(GELANConfig("yolov9-s", width=32, pgi=True, num_classes=num_classes))


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 80) -> YOLO:
    """Build a registered model with freshly initialised weights."""
    try:
        factory = _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None
    return factory(num_classes=num_classes)


def model_from_config(config: GELANConfig) -> YOLO:
    return YOLO(config)

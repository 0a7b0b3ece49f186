"""Importing published YOLOv9-T/S weights: reference (pickled) and MIT (state_dict) layouts.

No weights can be downloaded here, so the test writes files the way each code base does. For
the reference repository (WongKinYiu/yolov9) it defines look-alike layer classes under the
reference's own module paths (``models.common.Conv``, ``models.yolo.DualDDetect``, ...), with
its attribute names and its forward computation transcribed from ``gelan-{t,s}.yaml`` /
``yolov9-{t,s}.yaml``, and ``torch.save``s a half-precision ``{'model': ..., 'ema': ...}`` dict.
The MIT layout is derived from the same model with the MIT converter's renaming rules. The
edge-yolo model loaded from either file must compute what the look-alike computes.
"""

from __future__ import annotations

import builtins
import copy
import math
import os
import re
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge_yolo.models import create_model, load_model, save_checkpoint
from edge_yolo.train.pretrained import (
    MIT,
    REFERENCE,
    PretrainedError,
    create_model_for_weights,
    load_pretrained,
    read_pretrained,
)

torch.set_num_threads(1)
IMG = 64

# --------------------------------------------------------------------------------------------
# Look-alikes of the reference's layer classes: same module paths, attribute names and maths.
# --------------------------------------------------------------------------------------------
_DEFAULT_ACT = nn.SiLU()  # the reference shares one class-level activation between all Convs


class Conv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = _DEFAULT_ACT if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class AConv(nn.Module):
    def __init__(self, c1, c2):
        super().__init__()
        self.cv1 = Conv(c1, c2, 3, 2)

    def forward(self, x):
        return self.cv1(F.avg_pool2d(x, 2, 1, 0, False, True))


class ADown(AConv):
    """Only its name matters: a yolov9-c/m layer where GELAN-t/s has AConv."""


class ELAN1(nn.Module):
    def __init__(self, c1, c2, c3, c4):
        super().__init__()
        self.c = c3 // 2
        self.cv1 = Conv(c1, c3, 1)
        self.cv2 = Conv(c3 // 2, c4, 3)
        self.cv3 = Conv(c4, c4, 3)
        self.cv4 = Conv(c3 + 2 * c4, c2, 1)

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in (self.cv2, self.cv3))
        return self.cv4(torch.cat(y, 1))


class RepConvN(nn.Module):
    def __init__(self, c1, c2):
        super().__init__()
        self.g, self.c1, self.c2 = 1, c1, c2
        self.act = _DEFAULT_ACT
        self.bn = None
        self.conv1 = Conv(c1, c2, 3, act=False)
        self.conv2 = Conv(c1, c2, 1, act=False)

    def forward(self, x):
        return self.act(self.conv1(x) + self.conv2(x))


class RepNBottleneck(nn.Module):
    def __init__(self, c1, c2):
        super().__init__()
        self.cv1 = RepConvN(c1, c2)
        self.cv2 = Conv(c2, c2, 3)
        self.add = c1 == c2

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class RepNCSP(nn.Module):
    def __init__(self, c1, c2, n):
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c1, c_, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(RepNBottleneck(c_, c_) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class RepNCSPELAN4(nn.Module):
    def __init__(self, c1, c2, c3, c4, n):
        super().__init__()
        self.c = c3 // 2
        self.cv1 = Conv(c1, c3, 1)
        self.cv2 = nn.Sequential(RepNCSP(c3 // 2, c4, n), Conv(c4, c4, 3))
        self.cv3 = nn.Sequential(RepNCSP(c4, c4, n), Conv(c4, c4, 3))
        self.cv4 = Conv(c3 + 2 * c4, c2, 1)

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in (self.cv2, self.cv3))
        return self.cv4(torch.cat(y, 1))


class SP(nn.Module):
    def __init__(self, k=5):
        super().__init__()
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        return self.m(x)


class SPPELAN(nn.Module):
    def __init__(self, c1, c2, c3):
        super().__init__()
        self.c = c3
        self.cv1 = Conv(c1, c3, 1)
        self.cv2, self.cv3, self.cv4 = SP(5), SP(5), SP(5)
        self.cv5 = Conv(4 * c3, c2, 1)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(m(y[-1]) for m in (self.cv2, self.cv3, self.cv4))
        return self.cv5(torch.cat(y, 1))


class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


class DFL(nn.Module):
    def __init__(self, c1=16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1


def _branches(ch, c_box, c_cls, nc):
    box = nn.ModuleList(
        nn.Sequential(
            Conv(x, c_box, 3), Conv(c_box, c_box, 3, g=4), nn.Conv2d(c_box, 64, 1, groups=4)
        )
        for x in ch
    )
    cls = nn.ModuleList(
        nn.Sequential(Conv(x, c_cls, 3), Conv(c_cls, c_cls, 3), nn.Conv2d(c_cls, nc, 1)) for x in ch
    )
    return box, cls


def _official_widths(ch0, nc):
    # yolo.py: c2 = make_divisible(max(ch0 // 4, 4 * reg_max, 16), 4), c3 = max(ch0, min(2nc, 128))
    return math.ceil(max(ch0 // 4, 64, 16) / 4) * 4, max(ch0, min(nc * 2, 128))


class DDetect(nn.Module):
    def __init__(self, nc, ch):
        super().__init__()
        self.nc, self.nl, self.reg_max, self.no = nc, len(ch), 16, nc + 64
        self.stride = torch.tensor([8.0, 16.0, 32.0])
        self.cv2, self.cv3 = _branches(ch, *_official_widths(ch[0], nc), nc)
        self.dfl = DFL(16)

    def forward(self, x):
        return [(self.cv2[i](x[i]), self.cv3[i](x[i])) for i in range(self.nl)]


class DualDDetect(nn.Module):
    def __init__(self, nc, ch):
        super().__init__()
        self.nc, self.nl, self.reg_max, self.no = nc, len(ch) // 2, 16, nc + 64
        self.stride = torch.tensor([8.0, 16.0, 32.0])
        aux, main = ch[: self.nl], ch[self.nl :]
        self.cv2, self.cv3 = _branches(aux, *_official_widths(aux[0], nc), nc)
        self.cv4, self.cv5 = _branches(main, *_official_widths(main[0], nc), nc)
        self.dfl, self.dfl2 = DFL(16), DFL(16)

    def forward(self, x):
        n = self.nl
        main = [(self.cv4[i](x[n + i]), self.cv5[i](x[n + i])) for i in range(n)]
        aux = [(self.cv2[i](x[i]), self.cv3[i](x[i])) for i in range(n)]
        return main, aux


class DetectionModel(nn.Module):
    def __init__(self, layers, nc):
        super().__init__()
        for i, (f, m) in enumerate(layers):
            m.i, m.f, m.type = i, f, f"{type(m).__module__}.{type(m).__name__}"
            m.np = sum(p.numel() for p in m.parameters())
        self.model = nn.Sequential(*(m for _, m in layers))
        inputs = {j for f, _ in layers for j in ([f] if isinstance(f, int) else f)}
        self.save = sorted(inputs - {-1})
        self.yaml = {"nc": nc, "depth_multiple": 1.0, "width_multiple": 1.0}
        self.names = [str(i) for i in range(nc)]
        self.nc = nc
        self.stride = torch.tensor([8.0, 16.0, 32.0])

    def forward(self, x):
        y: list = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x)
        return x


_COMMON = (Conv, AConv, ADown, ELAN1, RepConvN, RepNBottleneck, RepNCSP, RepNCSPELAN4, SP)
_COMMON += (SPPELAN, Concat, DFL)
_YOLO = (DDetect, DualDDetect, DetectionModel)
for _cls in _COMMON:
    _cls.__module__ = "models.common"
for _cls in _YOLO:
    _cls.__module__ = "models.yolo"


def reference_model(width: int, nc: int, aux: bool, n: int = 3, seed: int = 0) -> DetectionModel:
    """The yolov9-{t,s}.yaml / gelan-{t,s}.yaml layer lists, random weights and BN statistics."""
    torch.manual_seed(seed)
    w = width

    def up():
        return nn.Upsample(None, 2, "nearest")

    layers = [
        (-1, Conv(3, w, 3, 2)),
        (-1, Conv(w, 2 * w, 3, 2)),
        (-1, ELAN1(2 * w, 2 * w, 2 * w, w)),
        (-1, AConv(2 * w, 4 * w)),
        (-1, RepNCSPELAN4(4 * w, 4 * w, 4 * w, 2 * w, n)),
        (-1, AConv(4 * w, 6 * w)),
        (-1, RepNCSPELAN4(6 * w, 6 * w, 6 * w, 3 * w, n)),
        (-1, AConv(6 * w, 8 * w)),
        (-1, RepNCSPELAN4(8 * w, 8 * w, 8 * w, 4 * w, n)),
        (-1, SPPELAN(8 * w, 8 * w, 4 * w)),  # 9
        (-1, up()),
        ([-1, 6], Concat(1)),
        (-1, RepNCSPELAN4(14 * w, 6 * w, 6 * w, 3 * w, n)),  # 12
        (-1, up()),
        ([-1, 4], Concat(1)),
        (-1, RepNCSPELAN4(10 * w, 4 * w, 4 * w, 2 * w, n)),  # 15
        (-1, AConv(4 * w, 3 * w)),
        ([-1, 12], Concat(1)),
        (-1, RepNCSPELAN4(9 * w, 6 * w, 6 * w, 3 * w, n)),  # 18
        (-1, AConv(6 * w, 4 * w)),
        ([-1, 9], Concat(1)),
        (-1, RepNCSPELAN4(12 * w, 8 * w, 8 * w, 4 * w, n)),  # 21
    ]
    if aux:
        layers += [
            (8, SPPELAN(8 * w, 8 * w, 4 * w)),  # 22
            (-1, up()),
            ([-1, 6], Concat(1)),
            (-1, RepNCSPELAN4(14 * w, 6 * w, 6 * w, 3 * w, n)),  # 25
            (-1, up()),
            ([-1, 4], Concat(1)),
            (-1, RepNCSPELAN4(10 * w, 4 * w, 4 * w, 2 * w, n)),  # 28
            ([28, 25, 22, 15, 18, 21], DualDDetect(nc, (4 * w, 6 * w, 8 * w) * 2)),  # 29
        ]
    else:
        layers.append(([15, 18, 21], DDetect(nc, (4 * w, 6 * w, 8 * w))))  # 22
    model = DetectionModel(layers, nc)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0, 0.5)
    return model.eval()


@contextmanager
def reference_modules(classes: dict[str, tuple[type, ...]] | None = None) -> Iterator[None]:
    """Make ``models.common`` / ``models.yolo`` importable (pickle checks this when saving)."""
    classes = classes or {"models.common": _COMMON, "models.yolo": _YOLO}
    mods = {"models": types.ModuleType("models")}
    for name, members in classes.items():
        mods[name] = types.ModuleType(name)
        for cls in members:
            setattr(mods[name], cls.__name__, cls)
    assert not set(mods) & set(sys.modules)
    sys.modules.update(mods)
    try:
        yield
    finally:
        for name in mods:
            sys.modules.pop(name, None)


def save_reference(path: Path, ckpt: dict) -> Path:
    with reference_modules():
        torch.save(ckpt, path)
    return path


def converted_checkpoint(model: DetectionModel) -> dict:
    """The layout of ``*-converted.pt``: the whole model in half precision, training state None."""
    keys = ("optimizer", "best_fitness", "ema", "updates", "opt", "git", "date")
    return {"model": copy.deepcopy(model).half(), **dict.fromkeys(keys), "epoch": -1}


def half_rounded(model: nn.Module) -> nn.Module:
    """What the file holds, back in float32: the expected-output model."""
    return copy.deepcopy(model).half().float().eval()


def _x(seed: int = 1) -> torch.Tensor:
    return torch.rand(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(seed))


def assert_levels_equal(ours, ref) -> None:
    assert len(ours) == len(ref) == 3
    for (box, cls), (rbox, rcls) in zip(ours, ref):
        torch.testing.assert_close(box, rbox, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(cls, rcls, rtol=1e-4, atol=1e-4)


# MIT converter rules (MultimediaTechLab/YOLO): AConv ``cv1`` -> ``conv``, ``cvN`` -> ``convN``,
# ``m`` -> ``bottleneck``, auxiliary layers 22/25/28 -> 23/26/29, DualDDetect (layer 29)
# cv4/cv5 -> head 22 and cv2/cv3 -> head 30 as ``heads.<level>.anchor_conv`` / ``class_conv``.
_ACONV = {3, 5, 7, 16, 19}


def mit_key(ref_key: str) -> str | None:
    _, index, *rest = ref_key.split(".")
    i = int(index)
    if i == 29:
        if rest[0].startswith("dfl"):
            return None
        head = "30" if rest[0] in ("cv2", "cv3") else "22"
        kind = "anchor_conv" if rest[0] in ("cv2", "cv4") else "class_conv"
        return ".".join([head, "heads", rest[1], kind, *rest[2:]])
    if i in _ACONV:
        rest[0] = "conv"
    else:
        rest = ["bottleneck" if t == "m" else re.sub(r"^cv(\d)$", r"conv\1", t) for t in rest]
    return ".".join([str(i + 1 if i in (22, 25, 28) else i), *rest])


def mit_state_dict(model: DetectionModel) -> dict[str, torch.Tensor]:
    sd = {k2: v.clone() for k, v in model.state_dict().items() if (k2 := mit_key(k))}
    for head in ("22", "30"):
        for level in range(3):
            proj = torch.arange(16, dtype=torch.float32).view(1, 16, 1, 1, 1)
            sd[f"{head}.heads.{level}.anc2vec.anc2vec.weight"] = proj
    return sd


# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ref_gelan_t() -> DetectionModel:
    return reference_model(16, 80, aux=False)


@pytest.fixture(scope="module")
def ref_yolov9_t() -> DetectionModel:
    return reference_model(16, 80, aux=True, seed=1)


def test_reference_gelan_t_converted_round_trip(tmp_path, ref_gelan_t):
    path = save_reference(tmp_path / "gelan-t-converted.pt", converted_checkpoint(ref_gelan_t))
    assert "models.common" not in sys.modules
    model, summary = create_model_for_weights(None, path)
    assert "models" not in sys.modules and "models.common" not in sys.modules
    assert (model.name, model.num_classes) == ("gelan-t", 80)
    assert summary.source_format == REFERENCE
    # The official class branch is max(ch0, min(2 * nc, 128)) = 128 wide, ours defaults to 80.
    assert summary.head_widths == (64, 128)
    assert model.config.head_widths == (64, 128)
    assert summary.refitted_heads == ["head: widths (box, cls) (64, 80) -> (64, 128)"]
    assert not summary.missing and not summary.reinitialised
    assert set(summary.skipped) == {"model.22.dfl.conv.weight"}
    assert len(summary.loaded) == len(model.state_dict())
    assert next(model.parameters()).dtype == torch.float32
    model.eval()
    with torch.no_grad():
        assert_levels_equal(model(_x()), half_rounded(ref_gelan_t)(_x()))
    text = str(summary)
    assert "gelan-t" in text and "80 classes" in text and "cls 128" in text
    assert len(text.splitlines()) <= 6


def test_reference_yolov9_t_loads_ema_and_auxiliary_branch(tmp_path, ref_yolov9_t):
    stale = reference_model(16, 80, aux=True, seed=7)  # 'model' holds other weights than 'ema'
    ckpt = {
        "epoch": 3,
        "best_fitness": np.array([0.41]),  # unstripped checkpoints keep numpy metadata
        "model": copy.deepcopy(stale).half(),
        "ema": copy.deepcopy(ref_yolov9_t).half(),
        "updates": 1234,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
        "opt": {"epochs": 500, "hyp": {"lr0": 0.01}, "cfg": "models/detect/yolov9-t.yaml"},
    }
    path = save_reference(tmp_path / "yolov9-t.pt", ckpt)
    model = create_model("yolov9-t")
    summary = load_pretrained(model, path)
    assert summary.source_model == "yolov9-t"
    assert not summary.missing and not summary.reinitialised
    assert set(summary.skipped) == {"model.29.dfl.conv.weight", "model.29.dfl2.conv.weight"}
    assert model.aux is not None and model.aux.head.cls[0][0].conv.out_channels == 128
    model.eval()
    with torch.no_grad():
        main, aux = model.forward_train(_x())
        ref_main, ref_aux = half_rounded(ref_yolov9_t)(_x())
    assert_levels_equal(main, ref_main)
    assert_levels_equal(aux, ref_aux)


def test_reference_yolov9_into_gelan_drops_auxiliary_branch(tmp_path, ref_yolov9_t):
    path = save_reference(tmp_path / "yolov9-t.pt", converted_checkpoint(ref_yolov9_t))
    model = create_model("gelan-t")
    summary = load_pretrained(model, path)
    no_aux = "auxiliary branch, the model has none"
    dropped = [k for k, why in summary.skipped.items() if why == no_aux]
    assert dropped and all(k.startswith("aux.") for k in dropped)
    assert any(k.startswith("aux.head.cls.") for k in dropped)
    assert not summary.missing
    model.eval()
    with torch.no_grad():
        assert_levels_equal(model(_x()), half_rounded(ref_yolov9_t)(_x())[0])


def test_gelan_weights_into_yolov9_leave_auxiliary_branch_initialised(tmp_path, ref_gelan_t):
    path = save_reference(tmp_path / "gelan-t.pt", converted_checkpoint(ref_gelan_t))
    model = create_model("yolov9-t")
    fresh_aux = copy.deepcopy(model.aux.neck.state_dict())
    summary = load_pretrained(model, path)
    assert summary.missing and all(k.startswith("aux.") for k in summary.missing)
    assert set(summary.missing.values()) == {"auxiliary branch, trained from scratch"}
    # The aux head is resized with the main one, so both are 128 wide (checkpoint config).
    assert model.aux.head.cls[0][0].conv.out_channels == 128
    for key, value in model.aux.neck.state_dict().items():
        torch.testing.assert_close(value, fresh_aux[key])
    assert "not in checkpoint" in str(summary)


def test_class_change_reinitialises_only_class_outputs(tmp_path, ref_yolov9_t):
    path = save_reference(tmp_path / "yolov9-t.pt", converted_checkpoint(ref_yolov9_t))
    model = create_model("yolov9-t", num_classes=3)
    summary = load_pretrained(model, path)
    assert summary.source_num_classes == 80
    expected = {
        f"{head}.cls.{level}.2.{p}"
        for head in ("head", "aux.head")
        for level in range(3)
        for p in ("weight", "bias")
    }
    assert set(summary.reinitialised) == expected
    assert set(summary.reinitialised.values()) == {"class count 80 -> 3"}
    assert not summary.missing and len(summary.loaded) == len(model.state_dict()) - len(expected)
    ref = half_rounded(ref_yolov9_t)
    model.eval()
    with torch.no_grad():
        main, aux = model.forward_train(_x())
        ref_main, ref_aux = ref(_x())
        for (box, _), (rbox, _) in zip(main + aux, ref_main + ref_aux):
            torch.testing.assert_close(box, rbox, rtol=1e-4, atol=1e-4)
    head_ref = ref.model[29]
    for level, stride in enumerate((8, 16, 32)):
        ours = model.head.cls[level]
        # The class branch's hidden convs come from the checkpoint (cv5 = main class branch) ...
        torch.testing.assert_close(ours[1].conv.weight, head_ref.cv5[level][1].conv.weight)
        # ... its output conv is fresh, with the class-prior bias of a 3-class model.
        prior = math.log(5 / 3 / (640 / stride) ** 2)
        torch.testing.assert_close(ours[2].bias, torch.full((3,), prior))
        assert not torch.allclose(ours[2].weight, head_ref.cv5[level][2].weight[:3])
    with pytest.raises(PretrainedError, match="80 classes, the model 3"):
        load_pretrained(create_model("yolov9-t", num_classes=3), path, strict_classes=True)


def test_reference_yolov9_s_round_trip(tmp_path):
    ref = reference_model(32, 80, aux=True, seed=2)
    path = save_reference(tmp_path / "yolov9-s.pt", converted_checkpoint(ref))
    model, summary = create_model_for_weights(None, path)
    assert model.name == "yolov9-s" and summary.head_widths == (64, 128)
    assert not summary.refitted_heads  # the s head is 128 wide under either rule
    model.eval()
    with torch.no_grad():
        main, aux = model.forward_train(_x())
        ref_main, ref_aux = half_rounded(ref)(_x())
    assert_levels_equal(main, ref_main)
    assert_levels_equal(aux, ref_aux)


def test_loader_never_uses_the_reference_classes(tmp_path, ref_gelan_t):
    """Even with ``models.common`` importable, loading builds inert stand-ins, not its classes."""
    path = save_reference(tmp_path / "gelan-t.pt", converted_checkpoint(ref_gelan_t))
    calls: list[str] = []

    def trap(name: str) -> type:
        def refuse(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was constructed")

        return type(name, (), {"__new__": refuse, "__setstate__": refuse})

    names = {c.__name__ for c in _COMMON + _YOLO}
    traps = {m: tuple(trap(n) for n in sorted(names)) for m in ("models.common", "models.yolo")}
    with reference_modules(traps):
        weights = read_pretrained(path)
    assert not calls
    assert weights.model_name == "gelan-t" and weights.num_classes == 80


class _Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class Evil(nn.Module):
    """A class under the reference's module path but not a GELAN layer."""


Evil.__module__ = "models.common"


@pytest.mark.parametrize("kind", ["os.system", "eval", "exec", "unknown-layer-class"])
def test_malicious_pickles_are_refused_and_not_executed(tmp_path, ref_gelan_t, kind):
    marker = tmp_path / "pwned"
    payload = {
        "os.system": lambda: _Payload(os.system, f"touch {marker}"),
        "eval": lambda: _Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "exec": lambda: _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "unknown-layer-class": lambda: Evil(),
    }[kind]()
    ckpt = {**converted_checkpoint(ref_gelan_t), "opt": payload}
    path = tmp_path / "gelan-t-evil.pt"
    with reference_modules({"models.common": (*_COMMON, Evil), "models.yolo": _YOLO}):
        torch.save(ckpt, path)
    refused = {
        "os.system": os.system.__module__ + ".system",  # posix.system on Linux
        "eval": "builtins.eval",
        "exec": "builtins.exec",
        "unknown-layer-class": "models.common.Evil",
    }[kind]
    with pytest.raises(PretrainedError) as err:
        load_pretrained(create_model("gelan-t"), path)
    message = str(err.value)
    assert str(path) in message and refused in message and "refused" in message
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# MultimediaTechLab/YOLO state_dicts
# --------------------------------------------------------------------------------------------
def test_mit_v9_t_round_trip_with_auxiliary(tmp_path, ref_yolov9_t):
    sd = mit_state_dict(ref_yolov9_t)
    assert "22.heads.0.class_conv.2.weight" in sd
    assert "29.conv2.0.bottleneck.0.conv1.conv1.conv.weight" in sd
    path = tmp_path / "v9-t.pt"
    torch.save(sd, path)
    model, summary = create_model_for_weights(None, path)
    assert summary.source_format == MIT and model.name == "yolov9-t"
    assert summary.head_widths == (64, 128)
    projections = {f"{h}.heads.{i}.anc2vec.anc2vec.weight" for h in (22, 30) for i in range(3)}
    assert set(summary.skipped) == projections
    assert not summary.missing and len(summary.loaded) == len(model.state_dict())
    model.eval()
    with torch.no_grad():
        main, aux = model.forward_train(_x())
        ref_main, ref_aux = ref_yolov9_t(_x())
    assert_levels_equal(main, ref_main)
    assert_levels_equal(aux, ref_aux)


def test_mit_into_gelan_with_class_change(tmp_path, ref_yolov9_t):
    path = tmp_path / "v9-t.pt"
    torch.save({k: v.half() for k, v in mit_state_dict(ref_yolov9_t).items()}, path)
    model = create_model("gelan-t", num_classes=3)
    summary = load_pretrained(model, path)
    outputs = {f"head.cls.{i}.2.{p}" for i in range(3) for p in ("weight", "bias")}
    assert set(summary.reinitialised) == outputs
    assert any(k.startswith("aux.") for k in summary.skipped)
    model.eval()
    with torch.no_grad():
        for (box, _), (rbox, _) in zip(model(_x()), half_rounded(ref_yolov9_t)(_x())[0]):
            torch.testing.assert_close(box, rbox, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("container", ["model_state_dict", "lightning"])
def test_mit_checkpoint_containers(tmp_path, ref_yolov9_t, container):
    sd = mit_state_dict(ref_yolov9_t)
    obj = (
        {"model_state_dict": sd, "epoch": 3}
        if container == "model_state_dict"
        else {"state_dict": {f"model.model.{k}": v for k, v in sd.items()}, "epoch": 3}
    )
    torch.save(obj, tmp_path / "v9-t.ckpt")
    weights = read_pretrained(tmp_path / "v9-t.ckpt")
    assert weights.source_format == MIT and weights.model_name == "yolov9-t"
    assert len(weights.state) == len(sd) - 6


# --------------------------------------------------------------------------------------------
def test_edge_yolo_checkpoint_as_weights_and_refitted_head_survives_saving(tmp_path, ref_gelan_t):
    path = save_reference(tmp_path / "gelan-t.pt", converted_checkpoint(ref_gelan_t))
    model, _ = create_model_for_weights("gelan-t", path, 5)
    saved = save_checkpoint(tmp_path / "finetuned.pt", model)
    reloaded, _ = load_model(saved)  # the config carries the 128-wide class branch
    assert reloaded.config.head_widths == (64, 128)
    again = create_model("gelan-t", num_classes=2)
    summary = load_pretrained(again, saved)
    assert summary.source_format == "edge-yolo" and again.head.cls[0][0].conv.out_channels == 128
    assert len(summary.reinitialised) == 6
    for m in (model, reloaded, again):
        m.eval()
    with torch.no_grad():
        assert_levels_equal(reloaded(_x()), model(_x()))
        for (box, _), (rbox, _) in zip(again(_x()), model(_x())):
            torch.testing.assert_close(box, rbox)


def test_unusable_files_get_clear_errors(tmp_path, ref_gelan_t):
    with pytest.raises(PretrainedError, match="no such weights file"):
        read_pretrained(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(PretrainedError, match="junk.pt: not a torch.save checkpoint"):
        read_pretrained(junk)
    unrelated = {"fc.weight": torch.zeros(2, 2), "bn.bn.running_mean": torch.zeros(2)}
    torch.save(unrelated, tmp_path / "x.pt")
    with pytest.raises(PretrainedError, match="x.pt: layers 2-3 are not ELAN"):
        read_pretrained(tmp_path / "x.pt")

    wrong = copy.deepcopy(ref_gelan_t)
    down = ADown(32, 64)
    down.i, down.f = 3, -1
    wrong.model[3] = down
    path = save_reference(tmp_path / "gelan-c-like.pt", converted_checkpoint(wrong))
    with pytest.raises(PretrainedError, match="layer 3 is ADown where GELAN-t/s has AConv"):
        read_pretrained(path)

    fused = copy.deepcopy(ref_gelan_t)
    del fused.model[0].bn
    path = save_reference(tmp_path / "fused.pt", converted_checkpoint(fused))
    with pytest.raises(PretrainedError, match="fused.pt: fused checkpoint"):
        read_pretrained(path)

    t_path = save_reference(tmp_path / "gelan-t.pt", converted_checkpoint(ref_gelan_t))
    with pytest.raises(PretrainedError, match=r"weights are gelan-t \(width 16.*model is gelan-s"):
        load_pretrained(create_model("gelan-s"), t_path)
    with pytest.raises(PretrainedError, match="before fusing"):
        load_pretrained(create_model("gelan-t").eval().fuse(), t_path)

"""Where each published YOLOv9-T/S tensor goes in edge-yolo's named modules.

Both public code bases number layers as in the reference model tables (our gelan.py comments):

* WongKinYiu/yolov9 (``models/detect/gelan-{t,s}.yaml``, ``yolov9-{t,s}.yaml``): keys
  ``model.<i>.<block attrs>``. gelan: layers 0-21 then ``22 DDetect`` (``cv2`` box / ``cv3``
  class branches, ``dfl``). yolov9: auxiliary neck ``22 SPPELAN``, ``25``/``28``
  RepNCSPELAN4, then ``29 DualDDetect`` over ``[28, 25, 22, 15, 18, 21]``: ``cv2``/``cv3``
  are the auxiliary head, ``cv4``/``cv5`` the main one. Block attributes match ours except
  ``AConv.cv1`` (ours ``conv``).
* MultimediaTechLab/YOLO (``yolo/config/model/v9-{t,s}.yaml``, ``yolo/model/module.py``):
  plain state_dicts of an ``nn.ModuleList``: keys ``<i>.<block attrs>``, same layer indices
  0-21, ``22`` the main ``MultiheadDetection`` (``heads.<level>.anchor_conv`` /
  ``class_conv``, ``anc2vec``), auxiliary neck ``23``/``26``/``29``, auxiliary head ``30``.
  Blocks name their convolutions ``conv1..conv5`` and RepNCSP's bottlenecks ``bottleneck``.

Mapping is by layer index plus the block-internal renames below; nothing is matched by
shape, so a tensor can only land in the module it was trained as.
"""

from __future__ import annotations

import re

# Layers 0-21 have the same index in both code bases: index -> (our module path, block kind).
MAIN_LAYERS: dict[int, tuple[str, str]] = {
    0: ("backbone.stem", "conv"),
    1: ("backbone.down1", "conv"),
    2: ("backbone.elan1", "elan"),
    3: ("backbone.down2", "aconv"),
    4: ("backbone.stage3", "csp_elan"),
    5: ("backbone.down3", "aconv"),
    6: ("backbone.stage4", "csp_elan"),
    7: ("backbone.down4", "aconv"),
    8: ("backbone.stage5", "csp_elan"),
    9: ("neck.spp", "sppelan"),
    12: ("neck.top_down4", "csp_elan"),
    15: ("neck.top_down3", "csp_elan"),
    16: ("neck.down4", "aconv"),
    18: ("neck.bottom_up4", "csp_elan"),
    19: ("neck.down5", "aconv"),
    21: ("neck.bottom_up5", "csp_elan"),
}
REFERENCE_AUX_LAYERS = {
    22: ("aux.neck.spp", "sppelan"),
    25: ("aux.neck.top_down4", "csp_elan"),
    28: ("aux.neck.top_down3", "csp_elan"),
}
MIT_AUX_LAYERS = {
    23: ("aux.neck.spp", "sppelan"),
    26: ("aux.neck.top_down4", "csp_elan"),
    29: ("aux.neck.top_down3", "csp_elan"),
}
REFERENCE_GELAN_HEAD = 22
REFERENCE_DUAL_HEAD = 29
# Reference head attribute -> our branch, for DDetect (gelan) and DualDDetect (yolov9).
REFERENCE_GELAN_BRANCHES = {"cv2": "head.box", "cv3": "head.cls"}
REFERENCE_DUAL_BRANCHES = {
    "cv2": "aux.head.box",
    "cv3": "aux.head.cls",
    "cv4": "head.box",
    "cv5": "head.cls",
}
MIT_HEADS = {22: "head", 30: "aux.head"}
MIT_BRANCHES = {"anchor_conv": "box", "class_conv": "cls"}

# Layer types of the reference model lists, by index (both t and s).
_GELAN_TS_TYPES = (
    ["Conv", "Conv", "ELAN1", "AConv", "RepNCSPELAN4", "AConv", "RepNCSPELAN4", "AConv"]
    + ["RepNCSPELAN4", "SPPELAN", "Upsample", "Concat", "RepNCSPELAN4", "Upsample", "Concat"]
    + ["RepNCSPELAN4", "AConv", "Concat", "RepNCSPELAN4", "AConv", "Concat", "RepNCSPELAN4"]
)
REFERENCE_GELAN_TYPES = (*_GELAN_TS_TYPES, "DDetect")
REFERENCE_YOLOV9_TYPES = (
    *_GELAN_TS_TYPES,
    *("SPPELAN", "Upsample", "Concat", "RepNCSPELAN4", "Upsample", "Concat", "RepNCSPELAN4"),
    "DualDDetect",
)
REFERENCE_HEAD_INPUTS = {
    "DDetect": [15, 18, 21],
    "DualDDetect": [28, 25, 22, 15, 18, 21],
}

FIXED_PROJECTION = "fixed DFL projection (arange(reg_max)), not a learned weight"
NO_COUNTERPART = "no counterpart in edge-yolo's GELAN-t/s"
_CONV_N = re.compile(r"conv([1-5])")


def _mit_block_tokens(kind: str, t: list[str]) -> list[str]:
    """MIT block attribute path -> ours: ``convN`` -> ``cvN``, ``bottleneck`` -> ``m``."""
    t = list(t)
    if kind in ("elan", "csp_elan", "sppelan") and (m := _CONV_N.fullmatch(t[0])):
        t[0] = f"cv{m[1]}"
    # RepNCSP sits at cv2.0 / cv3.0 of a RepNCSPELAN; its bottlenecks hold RepConv + Conv.
    if kind == "csp_elan" and t[0] in ("cv2", "cv3") and len(t) > 3 and t[1] == "0":
        if t[2] == "bottleneck":
            t[2] = "m"
            if len(t) > 4 and (m := _CONV_N.fullmatch(t[4])):
                t[4] = f"cv{m[1]}"
        elif m := _CONV_N.fullmatch(t[2]):
            t[2] = f"cv{m[1]}"
    return t


def _reference_block_tokens(kind: str, t: list[str]) -> list[str]:
    if kind == "aconv" and t[0] == "cv1":
        return ["conv", *t[1:]]
    return list(t)


def reference_to_ours(key: str, *, dual_head: bool) -> tuple[str | None, str]:
    """Reference key -> ``(our key, "")`` (``model.4.cv1...`` -> ``backbone.stage3.cv1...``)."""
    parts = key.split(".")
    if len(parts) < 3 or parts[0] != "model" or not parts[1].isdigit():
        return None, NO_COUNTERPART
    index, tokens = int(parts[1]), parts[2:]
    layers = {**MAIN_LAYERS, **(REFERENCE_AUX_LAYERS if dual_head else {})}
    if index in layers:
        path, kind = layers[index]
        return ".".join([path, *_reference_block_tokens(kind, tokens)]), ""
    head = REFERENCE_DUAL_HEAD if dual_head else REFERENCE_GELAN_HEAD
    branches = REFERENCE_DUAL_BRANCHES if dual_head else REFERENCE_GELAN_BRANCHES
    if index == head:
        if tokens[0].startswith("dfl"):
            return None, FIXED_PROJECTION
        if tokens[0] in branches and len(tokens) > 2:
            return ".".join([branches[tokens[0]], *tokens[1:]]), ""
    return None, NO_COUNTERPART


def mit_to_ours(key: str) -> tuple[str | None, str]:
    """MIT key -> ``(our key, "")`` (``22.heads.0.class_conv.2...`` -> ``head.cls.0.2...``)."""
    parts = key.split(".")
    if len(parts) < 2 or not parts[0].isdigit():
        return None, NO_COUNTERPART
    index, tokens = int(parts[0]), parts[1:]
    layers = {**MAIN_LAYERS, **MIT_AUX_LAYERS}
    if index in layers:
        path, kind = layers[index]
        return ".".join([path, *_mit_block_tokens(kind, tokens)]), ""
    if index in MIT_HEADS and len(tokens) > 3 and tokens[0] == "heads":
        level, branch, rest = tokens[1], tokens[2], tokens[3:]
        if branch == "anc2vec":
            return None, FIXED_PROJECTION
        if branch in MIT_BRANCHES:
            return ".".join([MIT_HEADS[index], MIT_BRANCHES[branch], level, *rest]), ""
    return None, NO_COUNTERPART

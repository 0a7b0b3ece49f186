"""Shared by the runtime tests: a small model fitted to the raccoon fixture photos and the bundles
exported from it, each built once per test session (module-level cache under pytest's tmp dir).

The model is gelan-t (1 class) fitted for a few dozen steps on the six photos with the real
training loss, so it finds the raccoons with confident, image-dependent outputs: random
weights give near-constant outputs that would make cross-backend agreement meaningless.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RACCOON = REPO / "tests" / "fixtures" / "raccoon"
IMGSZ = 160
_CACHE: dict[tuple, Path] = {}


def raccoon_photos() -> list[Path]:
    return sorted((RACCOON / "images").glob("*.jpg"))


def voc_boxes(image: Path) -> np.ndarray:
    """Ground-truth xyxy boxes of one fixture photo, from its Pascal VOC annotation."""
    root = ET.parse(RACCOON / "annotations" / f"{image.stem}.xml").getroot()
    keys = ("xmin", "ymin", "xmax", "ymax")
    return np.array(
        [[float(o.find("bndbox").find(k).text) for k in keys] for o in root.iter("object")],
        np.float32,
    ).reshape(-1, 4)


def fitted_checkpoint(root: Path, steps: int = 40, model_name: str = "gelan-t") -> Path:
    """``model_name`` (nc=1) fitted on the six photos at ``IMGSZ`` (deterministic: seeded);
    a yolov9-* model is fitted with its PGI branch and dual loss."""
    key = ("checkpoint", steps, model_name)
    if key in _CACHE:
        return _CACHE[key]
    import torch

    from edge_yolo.models import create_model, save_checkpoint
    from edge_yolo.runtime import processing
    from edge_yolo.train.loss import build_loss

    torch.set_num_threads(1)  # the CI box has 2 cores shared by everything else
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=1)
    images, targets = [], []
    for i, photo in enumerate(raccoon_photos()):
        boxed, info = processing.letterbox(processing.read_image(str(photo)), IMGSZ)
        images.append(boxed)
        boxes = voc_boxes(photo) * info.ratio + np.array(info.pad * 2, np.float32)
        targets += [[i, 0, *b] for b in boxes]
    x = torch.from_numpy(processing.to_blob(images))
    t = torch.tensor(targets, dtype=torch.float32)
    loss_fn = build_loss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        loss, _ = loss_fn(model.forward_train(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Few steps leave BN running statistics near their init: set them from this data.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average
        model(x)
    model.eval()
    path = save_checkpoint(root / f"raccoon-{model_name}.pt", model, names=["raccoon"],
                           imgsz=IMGSZ)
    _CACHE[key] = path
    return path


def exported_bundle(root: Path, target: str, precision: str) -> Path:
    """The fitted checkpoint exported through ``edge_yolo.export`` (once per session)."""
    key = ("bundle", target, precision)
    if key in _CACHE:
        return _CACHE[key]
    from edge_yolo.export import export

    ckpt = fitted_checkpoint(root)
    bundle = export(
        ckpt,
        target,
        precision=precision,
        imgsz=IMGSZ,
        calib=str(RACCOON / "images"),
        out=root / "exports",
        threads=1,
    )
    _CACHE[key] = Path(bundle)
    return _CACHE[key]


def cache_root(tmp_path_factory) -> Path:
    """One directory per test session for the shared checkpoint and bundles."""
    root = tmp_path_factory.getbasetemp() / "runtime-models"
    root.mkdir(exist_ok=True)
    return root

"""Checkpoints for the exporter tests: an untrained model whose outputs depend on the image.

A freshly initialised GELAN gives near-constant outputs (activations shrink layer by layer),
which would make every agreement check pass trivially. Re-estimating the BatchNorm statistics
on real photos restores unit-scale activations, so the raw outputs vary with the input the
way a trained model's do, and quantization error becomes visible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RACCOON_IMAGES = REPO / "tests" / "fixtures" / "raccoon" / "images"
NAMES = ["raccoon", "dog", "cat"]


def textured_checkpoint(path: Path, imgsz: int = 96, *, model: str = "yolov9-t", **extra) -> Path:
    """Save a 3-class checkpoint with BN statistics estimated on the fixture photos."""
    import cv2
    import torch

    from edge_yolo.data.synthetic import sample_scene
    from edge_yolo.models import create_model, save_checkpoint
    from edge_yolo.runtime.processing import preprocess

    torch.manual_seed(0)
    net = create_model(model, num_classes=len(NAMES))
    images = [cv2.imread(str(p)) for p in sorted(RACCOON_IMAGES.glob("*.jpg"))]
    images += [sample_scene(imgsz, seed=i) for i in range(3)]
    x = torch.from_numpy(np.concatenate([preprocess(im, imgsz)[0] for im in images]))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batch
    net.train()
    with torch.no_grad():
        net.forward_train(x)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                # floor near-constant channels: their 1/std gain would turn float rounding
                # noise into whole logits on images unlike the few seen here
                m.running_var.add_(0.03 * m.running_var.mean())
        for branch in net.head.cls:  # a few anchors above the 0.25 confidence threshold
            branch[-1].bias.fill_(-1.2)
    net.eval()
    return save_checkpoint(path, net, names=NAMES, imgsz=imgsz, **extra)

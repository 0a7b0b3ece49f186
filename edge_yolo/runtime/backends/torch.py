"""PyTorch backend: runs an edge-yolo checkpoint (``.pt``) or a model object directly.

It is the reference every exported artifact is compared with, so it runs the same export form
(:class:`edge_yolo.models.ExportModel`: fused, auxiliary branch dropped, raw outputs) through
the same numpy pre/post-processing as the device backends.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...contract import INPUT_NAME, OUTPUT_NAMES, STRIDES, inference_name, num_anchors
from ...errors import option
from ..bundle import BundleMeta, TensorSpec
from .base import Backend, BackendError


class TorchBackend(Backend):
    name = "torch"
    requires = ("torch",)

    def load(self, *, model: Any = None) -> None:
        import torch

        from edge_yolo.models import ExportModel, load_model

        # torch's intra-op pool is process-wide: only an explicit ``threads`` changes it (a
        # training process evaluating its model keeps its own setting).
        if self.threads_given:
            torch.set_num_threads(self.threads)
        #: a QAT checkpoint's record: the model runs fake-quantized (edge_yolo.quant.qat)
        self.qat: dict[str, Any] | None = None
        if model is None:
            model, ckpt = load_model(self.model_path)
            self.qat = ckpt.get("qat")
        if getattr(model, "aux", None) is not None:
            model.drop_auxiliary()
        model = model.eval()
        if hasattr(model, "fuse"):
            model.fuse()
        try:
            self.torch_device = torch.device(self.device or "cpu")
        except RuntimeError:
            raise BackendError(
                f"{self.model_path}: {option('device', self.device)}: expected cpu, cuda or cuda:N"
            ) from None
        if self.torch_device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(
                f"{self.model_path}: {option('device', self.device)}: CUDA is not available")
        self.model = ExportModel(model).to(self.torch_device).eval()
        self._dtype = next(self.model.parameters()).dtype  # an fp16 EMA takes fp16 input
        self._torch = torch
        with torch.no_grad():  # validate the metadata against the model's real outputs
            h, w = self.meta.imgsz
            shape = (1, 3, h, w) if self.meta.layout == "NCHW" else (1, h, w, 3)
            box, cls = self.model(
                torch.zeros(1, 3, h, w, device=self.torch_device, dtype=self._dtype)
            )
        self.check_io(shape, dict(zip(OUTPUT_NAMES, (tuple(box.shape), tuple(cls.shape)))))

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("torch") is not None

    @classmethod
    def read_metadata(cls, model_path: Path) -> BundleMeta:
        """Metadata built from what the checkpoint stores (names, input size, model name)."""
        from edge_yolo.models import load_checkpoint

        ckpt = load_checkpoint(model_path)
        return torch_meta(
            ckpt["model"], ckpt["names"], ckpt.get("imgsz", 640), Path(model_path).name
        )

    @classmethod
    def from_model(
        cls,
        model: Any,
        *,
        imgsz: int | tuple[int, int] = 640,
        names: Sequence[str] | None = None,
        threads: int | None = None,
        device: str | None = None,
    ) -> TorchBackend:
        """A backend on a model object (copied, so fusing leaves the caller's model alone)."""
        import copy

        names = (
            list(names) if names is not None else [f"class{i}" for i in range(model.num_classes)]
        )
        if len(names) != model.num_classes:
            raise ValueError(f"{len(names)} class names for a {model.num_classes}-class model")
        meta = torch_meta(model.name, names, imgsz, f"<{model.name} in memory>")
        return cls(
            Path(meta.model_file), meta, threads=threads, device=device, model=copy.deepcopy(model)
        )

    @property
    def max_batch(self) -> int:
        return 32

    def infer(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(blob, dtype=np.float32))
        if self.meta.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
        try:
            with torch.inference_mode():
                box, cls = self.model(x.to(self.torch_device, self._dtype))
        except RuntimeError as e:
            raise BackendError(f"{self.model_path}: torch inference failed ({e})") from e
        return box.float().cpu().numpy(), cls.float().cpu().numpy()


def torch_meta(
    model_name: str, names: Sequence[str], imgsz: int | Sequence[int], model_file: str
) -> BundleMeta:
    """Bundle-style metadata for a torch model, so the Detector treats it like an artifact."""
    h, w = (int(imgsz), int(imgsz)) if isinstance(imgsz, (int, np.integer)) else map(int, imgsz)
    anchors = num_anchors(h, w, STRIDES)
    box_name, cls_name = OUTPUT_NAMES
    return BundleMeta(
        model=inference_name(model_name),
        names=list(names),
        imgsz=[h, w],
        target="torch",
        precision="fp32",
        backend="torch",
        model_file=model_file,
        inputs=[TensorSpec(INPUT_NAME, [1, 3, h, w], meaning="RGB 0..1, letterboxed")],
        outputs=[
            TensorSpec(box_name, [1, 64, anchors], meaning="DFL logits, 4 sides x 16 bins"),
            TensorSpec(cls_name, [1, len(names), anchors], meaning="class logits"),
        ],
    )

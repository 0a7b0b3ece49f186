"""The resolved export: options, board profile, the float model and its calibration set."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..contract import INPUT_NAME, OUTPUT_NAMES, num_anchors
from ..data.synthetic import sample_scene
from ..errors import option
from ..fileio import sha256_file
from ..quant.calibration import DEFAULT_SIZE, CalibrationError, CalibrationSet
from ..runtime.bundle import Calibration, TensorSpec
from ..runtime.processing import preprocess
from .options import ExportError, ExportOptions
from .targets import DeviceProfile, TargetError, TargetSpec

if TYPE_CHECKING:
    import torch

DEFAULT_OPSET = 18
MAX_DROP_IMAGES = 200  # labelled images --max-drop measures each candidate on


class ExportJob:
    """Everything a target's ``build`` needs, resolved once."""

    def __init__(
        self,
        options: ExportOptions,
        spec: TargetSpec,
        precision: str,
        device: DeviceProfile | None,
        weights: Path,
        target_options: Any,
    ) -> None:
        from ..models import ExportModel, load_model

        self.options = options
        self.spec = spec
        self.precision = precision
        self.device = device
        self.weights = weights
        self.target_options = target_options
        # shared options as the target honours them (unsupported ones were refused already)
        self.dynamic = bool(options.dynamic)
        self.opset = options.opset or DEFAULT_OPSET
        self.simplify = options.simplify is not False
        model, ckpt = load_model(weights)
        #: a QAT checkpoint's record (edge_yolo.quant.qat): the model carries its quantizers
        self.qat: dict[str, Any] | None = ckpt.get("qat")
        if self.qat is not None:
            self._check_qat(weights, spec, precision)
        if model.aux is not None:
            model.drop_auxiliary()
        model.fuse().eval()
        self.yolo = model
        self.model = ExportModel(model).eval()
        self.ckpt = ckpt
        self.model_name: str = model.name
        self.names: list[str] = list(ckpt["names"])
        self.imgsz: int = int(
            options.imgsz or (device.imgsz if device else 0) or ckpt.get("imgsz") or 640
        )
        if self.imgsz % 32:
            raise TargetError(f"imgsz must be a multiple of 32, got {self.imgsz}")
        self.checkpoint_sha256 = sha256_file(weights)
        board_calib = device.calib_size if device else DEFAULT_SIZE
        self.calib_size = options.calib_size or board_calib
        board = f"board profile {device.name}" if device else None
        #: where each setting came from (flag / keyword, board profile, checkpoint, default)
        self.sources: dict[str, str] = {
            "precision": "given" if options.precision else board or f"{spec.name} default",
            "imgsz": "given" if options.imgsz else (
                board if device and device.imgsz else "checkpoint" if ckpt.get("imgsz")
                else "default"),
            "calib_size": "given" if options.calib_size else board or "default",
        }
        self._calibration: CalibrationSet | None = None
        #: blocks kept in float by ``--max-drop`` (mixed precision), and how they were chosen
        self.float_blocks: list[str] = []
        self.mixed_precision: dict[str, Any] | None = None

    def _check_qat(self, weights: Path, spec: TargetSpec, precision: str) -> None:
        qat = self.qat or {}
        source = qat.get("source_checkpoint", "its source checkpoint")
        if precision != "int8":
            raise ExportError(
                f"{weights} is a QAT checkpoint (fine-tuned for int8 on {qat.get('target')}): "
                f"export it with {option('precision', 'int8')}; {precision} comes from {source}"
            )
        if qat.get("target") != spec.name:
            raise ExportError(
                f"{weights} was fine-tuned for {qat.get('target')!r}'s quantization scheme, not "
                f"{spec.name!r}: export it to {qat.get('target')}, or run edge-yolo qat "
                f"--target {spec.name} from {source}"
            )

    @property
    def needs_calibration(self) -> bool:
        """INT8 needs calibration images, except from a QAT model whose quantizers carry their
        ranges (TFLite's converter quantizes by itself, so it calibrates even then)."""
        if self.precision != "int8":
            return False
        return self.qat is None or self.spec.name == "rpi"

    def quantization_record(self) -> dict[str, Any]:
        """What the bundle's metadata says about how it was quantized: ``quantization_kind``
        (``ptq`` / ``qat``) and, for QAT, from which checkpoint, recipe and calibration."""
        if self.precision != "int8":
            return {}
        if self.qat is None:
            mixed = {} if self.mixed_precision is None else {
                "float_blocks": list(self.float_blocks), "mixed_precision": self.mixed_precision}
            return {"quantization_kind": "ptq", **mixed}
        keep = ("target", "variant", "scheme", "source_checkpoint", "source_sha256", "recipe",
                "calibration", "ignored_scope", "quantizers", "nncf", "overflow_fix", "stage",
                "updates", "schedule", "data", "holdout")
        return {"quantization_kind": "qat",
                "qat": {k: self.qat[k] for k in keep if k in self.qat}
                | {"checkpoint": self.weights.name, "checkpoint_sha256": self.checkpoint_sha256}}

    def choose_float_blocks(self, max_drop: float) -> None:
        """``--max-drop``: rank blocks by int8 sensitivity and keep the worst in float until
        the fake-quantized model's measured drop on labelled images is at most ``max_drop``."""
        import sys

        from ..data import DatasetError, FirstN, load_dataset, spec_kwargs
        from ..eval import evaluate_model
        from ..quant.sensitivity import choose_float_blocks

        if self.precision != "int8":
            raise ExportError(f"{option('max_drop')} is for int8 exports, not {self.precision}")
        if self.qat is not None:
            raise ExportError(f"{option('max_drop')} is for post-training quantization; a QAT "
                              "model keeps blocks in float through its recipe's "
                              "qat.ignored_scope")
        source = self.calib_source
        try:
            val = load_dataset(source, split="val", **spec_kwargs(source, self.imgsz))
        except (OSError, ValueError, DatasetError) as e:
            raise ExportError(
                f"{option('max_drop')} measures the drop on labelled images, and {source} has no "
                f"usable val split ({e}); pass {option('calib', 'DATASET')}"
            ) from e
        val = FirstN(val, MAX_DROP_IMAGES)

        def evaluate(model: Any) -> float:
            return float(evaluate_model(model, val, imgsz=self.imgsz, progress=False).map50_95)

        mixed = choose_float_blocks(
            self.yolo, self.calibration(), self.imgsz, self.spec.name, max_drop, evaluate,
            len(val), log=lambda line: print(line, file=sys.stderr, flush=True),
        )
        self.float_blocks = mixed.float_blocks
        self.mixed_precision = mixed.to_dict() | {"eval_data": f"{source} [val]"}

    # -- inputs -------------------------------------------------------------------------------

    @property
    def calib_source(self) -> str | None:
        """The calibration source: ``--calib``, else the dataset the checkpoint was trained on."""
        if self.options.calib:
            return str(self.options.calib)
        train_config = self.ckpt.get("train_config")
        for holder in (self.ckpt, train_config if isinstance(train_config, dict) else {}):
            for key in ("data", "dataset"):
                value = holder.get(key)
                if isinstance(value, str) and value:
                    return value
        return None

    def calibration(self) -> CalibrationSet:
        """Up to ``calib_size`` images from the calibration source (recorded in the bundle)."""
        if self._calibration is None:
            source = self.calib_source
            if source is None:
                raise ExportError(
                    f"{self.precision} export for {self.spec.name!r} needs calibration images and "
                    f"the checkpoint {self.weights} does not name its dataset: pass "
                    f"{option('calib', 'DATA')} "
                    "(a dataset spec such as data.yaml / a COCO json, or an image folder)"
                )
            try:
                self._calibration = CalibrationSet.load(
                    source, self.calib_size, split=self.options.calib_split,
                    asked=self.sources["calib_size"] == "given",
                )
            except CalibrationError as e:
                raise ExportError(str(e)) from e
        return self._calibration

    @property
    def calibration_provenance(self) -> Calibration | None:
        """What the bundle records: the set used here, else the one that initialised a QAT
        model's quantizer ranges, else None."""
        if self._calibration is not None:
            return self._calibration.provenance()
        if self.qat is not None and isinstance(self.qat.get("calibration"), dict):
            return Calibration(**self.qat["calibration"])
        return None

    def sample_images(self, n: int) -> tuple[list[np.ndarray], str]:
        """Images for references and agreement, and where they came from: calibration images
        when a source was given or already loaded, else the val images of the dataset the
        checkpoint names (what it was trained to find), else deterministic synthetic scenes
        (4:3, so padding is exercised)."""
        if self._calibration is not None or self.options.calib:
            calib = self.calibration()
            return calib.images[:n], calib.source
        source = self.calib_source
        if source is not None:
            from ..data import DatasetError, load_images

            try:
                return load_images(source, n, split="val"), f"{source} [val]"
            except (OSError, ValueError, DatasetError):
                pass  # gone or unreadable here: the scenes still compare the two models
        return [sample_scene(self.imgsz, seed=i) for i in range(n)], "synthetic scenes"

    def example_input(self, batch: int = 1) -> torch.Tensor:
        import torch

        blob = preprocess(sample_scene(self.imgsz, seed=0), self.imgsz)[0]
        return torch.from_numpy(np.repeat(blob, batch, 0))

    def float_outputs(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The float PyTorch model's raw outputs for an NCHW blob."""
        import torch

        with torch.inference_mode():
            box, cls = self.model(torch.from_numpy(np.ascontiguousarray(blob)))
        return box.numpy(), cls.numpy()

    # -- tensor specs -------------------------------------------------------------------------

    def float_io(self, layout: str = "NCHW") -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Input/output specs of a float model in the canonical layout."""
        b = -1 if self.dynamic else 1
        s = self.imgsz
        shape = [b, 3, s, s] if layout == "NCHW" else [b, s, s, 3]
        inputs = [TensorSpec(INPUT_NAME, shape, "float32", f"letterboxed RGB in [0, 1], {layout}")]
        a, reg_max = num_anchors(s, s, self.yolo.strides), self.yolo.reg_max
        box_name, cls_name = OUTPUT_NAMES
        outputs = [
            TensorSpec(box_name, [b, 4 * reg_max, a], "float32",
                       f"DFL logits, {reg_max} bins x LTRB per anchor (P3, P4, P5 row-major)"),
            TensorSpec(cls_name, [b, len(self.names), a], "float32",
                       "class logits (sigmoid -> scores) per anchor"),
        ]
        return inputs, outputs

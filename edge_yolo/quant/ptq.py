"""Post-training quantization: NNCF on OpenVINO models, onnxruntime Q/DQ for TensorRT.

Why two libraries. OpenVINO's own int8 path is NNCF (``nncf.quantize`` on the ``ov.Model``).
For TensorRT the graph must carry explicit Q/DQ in one exact form: symmetric int8 with zero
point 0, per-channel weights on axis 0, per-tensor activations, standard ONNX ops only.
``onnxruntime.quantization.quantize_static`` produces that form directly from our simplified
ONNX (``QuantFormat.QDQ``, ``QInt8`` + ``ActivationSymmetric``/``WeightSymmetric``,
``per_channel``), and every one of those properties is a switch we set. NNCF's torch path
would need a second export of a fake-quantized module, and its symmetric quantizers on
non-negative tensors (after SiLU) are unsigned, i.e. uint8 Q/DQ, which is not that form.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .calibration import BlobReader

if TYPE_CHECKING:
    import onnx
    import openvino as ov

PRESETS = ("mixed", "performance")
CALIBRATE_METHODS = ("minmax", "percentile", "entropy")


def quantize_openvino(
    model: ov.Model,
    blobs: Sequence[np.ndarray],
    *,
    preset: str = "mixed",
    overflow_fix: str = "disable",
    ignored_scope: Sequence[str] = (),
    fast_bias_correction: bool = True,
) -> ov.Model:
    """NNCF post-training quantization of an OpenVINO model on preprocessed blobs.

    ``preset``: ``mixed`` (symmetric weights, asymmetric activations: SiLU outputs are
    non-negative-heavy, so an asymmetric range spends no codes on unused negatives) or
    ``performance`` (all symmetric). ``model_type`` stays None: this is a CNN, not a
    transformer. ``ignored_scope``: node names kept in float.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    params = AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow_fix))
    scope = nncf.IgnoredScope(names=list(ignored_scope)) if ignored_scope else None
    return nncf.quantize(
        model,
        nncf.Dataset(list(blobs)),
        preset=nncf.QuantizationPreset(preset),
        target_device=nncf.TargetDevice.CPU,
        subset_size=len(blobs),
        fast_bias_correction=fast_bias_correction,
        model_type=None,
        ignored_scope=scope,
        advanced_parameters=params,
    )


def quantize_qdq_onnx(
    model: onnx.ModelProto,
    blobs: Sequence[np.ndarray],
    output_path: str | Path,
    *,
    input_name: str = "images",
    calibrate_method: str = "minmax",
    nodes_to_exclude: Sequence[str] = (),
) -> dict[str, Any]:
    """Explicit Q/DQ int8 ONNX for TensorRT, written to ``output_path``; returns the settings.

    Only Conv nodes are quantized (their input activation and weights), the placement
    TensorRT expects: it fuses Conv + SiLU + the next QuantizeLinear into one int8 kernel and
    propagates scales through Concat/MaxPool/Resize, whereas Q/DQ pairs between Sigmoid and
    Mul of every SiLU would split those fusions. Biases stay float (TensorRT folds them);
    the outputs stay float.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if calibrate_method not in methods:
        raise ValueError(
            f"calibrate_method must be one of {', '.join(methods)}, got {calibrate_method!r}"
        )
    extra = {
        "ActivationSymmetric": True,  # int8 zero point 0 on activations
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "DedicatedQDQPair": False,
        "QDQOpTypePerChannelSupportToAxis": {"Conv": 0},
    }
    settings = {
        "format": "QDQ",
        "op_types": ["Conv"],
        "activations": "int8 symmetric per-tensor (zero point 0)",
        "weights": "int8 symmetric per-channel (axis 0, zero point 0)",
        "bias": "float",
        "calibrate_method": calibrate_method,
        "calibration_images": len(blobs),
        "nodes_excluded": list(nodes_to_exclude),
        "library": "onnxruntime.quantization.quantize_static",
    }
    # onnxruntime logs a generic "consider pre-processing" warning on the root logger; our
    # graph is already shape-inferred and simplified by onnxslim.
    root = logging.getLogger()
    quiet = _DropMessages("pre-processing")
    root.addFilter(quiet)
    try:
        quantize_static(
            model,
            str(output_path),
            BlobReader(input_name, blobs),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(nodes_to_exclude) or None,
            calibrate_method=methods[calibrate_method],
            extra_options=extra,
        )
    finally:
        root.removeFilter(quiet)
    return settings


class _DropMessages(logging.Filter):
    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle

    def filter(self, record: logging.LogRecord) -> bool:
        return self.needle not in record.getMessage()

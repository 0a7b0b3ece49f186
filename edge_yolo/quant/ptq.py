"""Post-training quantization for every target, from one :class:`CalibrationSet`.

- intel: NNCF on the ``ov.Model``;
- jetson: onnxruntime's ``quantize_static`` writes TensorRT's explicit Q/DQ form;
- rpi: ai-edge-quantizer on the float ``.tflite`` (float16 weights, or full integer).

Why NNCF and onnxruntime. OpenVINO's own int8 path is NNCF (``nncf.quantize`` on the ``ov.Model``).
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..contract import INPUT_NAME
from ..runtime.cpu import cpu_has_vnni
from .calibration import CalibrationSet

if TYPE_CHECKING:
    import onnx
    import openvino as ov

LOGGER = logging.getLogger(__name__)

PRESETS = ("mixed", "performance")
OVERFLOW_FIXES = ("auto", "enable", "first_layer_only", "disable")
CALIBRATE_METHODS = ("minmax", "percentile", "entropy")
#: How TFLite activation ranges are aggregated over the calibration images: the extremes seen
#: on any image (TFLite's classic calibrator), or ai-edge-quantizer's default moving average,
#: which clips the images with the widest ranges (on a fitted gelan-t it flipped a 0.99 score).
TFLITE_RANGES = {"minmax": "min_max_update", "moving-average": "moving_average_update"}


def resolve_overflow_fix(setting: str, cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """``auto`` -> ``enable`` on CPUs without VNNI, ``disable`` with it; else the setting.

    Without VNNI, OpenVINO's int8 convolutions go through 16-bit pairwise sums (pmaddubsw)
    that saturate with full 8-bit weights; NNCF's overflow fix stores weights in 7 bits to
    avoid that. With VNNI it only costs accuracy.
    """
    if setting not in OVERFLOW_FIXES:
        raise ValueError(
            f"overflow_fix must be one of {', '.join(OVERFLOW_FIXES)}, got {setting!r}"
        )
    if setting != "auto":
        return setting
    return "disable" if cpu_has_vnni(cpuinfo) else "enable"


def quantize_openvino(
    model: ov.Model,
    calib: CalibrationSet,
    imgsz: int,
    *,
    preset: str = "performance",
    overflow_fix: str = "disable",
    ignored_scope: Sequence[str] = (),
    ignored_patterns: Sequence[str] = (),
    fast_bias_correction: bool = True,
) -> ov.Model:
    """NNCF post-training quantization of an OpenVINO model on preprocessed blobs.

    ``preset``: ``mixed`` (symmetric weights, asymmetric activations: SiLU outputs are
    non-negative-heavy, so an asymmetric range spends no codes on unused negatives) or
    ``performance`` (all symmetric). ``model_type`` stays None: this is a CNN, not a
    transformer. ``ignored_scope``: node names kept in float; ``ignored_patterns``: regexes
    over node names (whole blocks, see :func:`edge_yolo.quant.sensitivity.openvino_patterns`).
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    params = AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow_fix))
    scope = None
    if ignored_scope or ignored_patterns:
        scope = nncf.IgnoredScope(names=list(ignored_scope), patterns=list(ignored_patterns),
                                  validate=False)
    from .nncf_setup import quiet_nncf

    with quiet_nncf():
        return nncf.quantize(
            model,
            calib.nncf_dataset(imgsz),
            preset=nncf.QuantizationPreset(preset),
            target_device=nncf.TargetDevice.CPU,
            subset_size=len(calib),
            fast_bias_correction=fast_bias_correction,
            model_type=None,
            ignored_scope=scope,
            advanced_parameters=params,
        )


def quantize_qdq_onnx(
    model: onnx.ModelProto,
    calib: CalibrationSet,
    imgsz: int,
    output_path: str | Path,
    *,
    input_name: str = INPUT_NAME,
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
        "calibration_images": len(calib),
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
            calib.onnx_reader(input_name, imgsz),
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


def quantize_tflite_fp16_weights(float_model: bytes) -> bytes:
    """Cast conv weights to float16 (weights-only; compute stays float32)."""
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    qt = quantizer.Quantizer(bytearray(float_model))
    qt.add_weight_only_config(".*", "*", 16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    return bytes(qt.quantize(enable_progress_report=False).quantized_model)


def quantize_tflite_full_integer(
    float_model: bytes,
    calib: CalibrationSet,
    imgsz: int,
    *,
    signature: str = "serving_default",
    input_name: str = INPUT_NAME,
    ranges: str = "minmax",
    exact_input_range: bool = True,
    threads: int | None = None,
    float_regexes: Sequence[str] = (),
    range_overrides: Mapping[str, tuple[float, float]] | None = None,
) -> bytes:
    """Static int8 quantization with ai-edge-quantizer: int8 weights (per channel),
    activations (per tensor), input and outputs, calibrated on NHWC blobs.

    ``range_overrides`` replaces the calibrated ``(min, max)`` of the tensors it names: a QAT
    model's learned activation ranges (:func:`edge_yolo.quant.qat_export.tflite_qat_ranges`).

    ``exact_input_range`` pins the input range to [0, 1] instead of the calibrated one, so its
    scale is exactly 1/255 with zero point -128: a letterboxed 8-bit pixel ``p`` enters the
    model as ``p - 128`` without rounding or clipping.
    """
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.utils import qsv_utils

    from ..runtime.backends import default_threads

    if ranges not in TFLITE_RANGES:
        raise ValueError(
            f"calibration ranges must be one of {', '.join(TFLITE_RANGES)}, got {ranges!r}"
        )
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe.static_wi8_ai8())
    for regex in float_regexes:  # mixed precision: these ops stay float
        manager.add_quantization_config(regex, "*", None, AlgorithmName.NO_QUANTIZE)
    calibrate = calibrator.Calibrator(
        bytes(float_model),
        num_threads=threads or default_threads(),
        qsv_update_func=getattr(qsv_utils, TFLITE_RANGES[ranges]),
    )
    calibrate.calibrate({signature: calib.signature_feed(input_name, imgsz)}, manager)
    result = calibrate.get_model_qsvs()
    for name, (low, high) in (range_overrides or {}).items():
        if name in result:
            ref = result[name]["min"]
            result[name] = {**result[name], "min": np.full_like(ref, low),
                            "max": np.full_like(ref, high)}
    if exact_input_range:
        name = Interpreter(model_content=float_model).get_input_details()[0]["name"]
        if name not in result:
            raise ValueError(f"calibration recorded no range for the input tensor {name!r}")
        ref = result[name]["min"]
        result[name] = {"min": np.zeros_like(ref), "max": np.ones_like(ref)}
    dead = sorted(k for k, v in result.items() if np.all(v["min"] == 0) and np.all(v["max"] == 0))
    if dead:
        # A constant-zero activation gets a zero scale, and the int32 bias after it overflows.
        LOGGER.warning(
            "%d activation tensors were constant 0 on the calibration set, e.g. %s",
            len(dead),
            dead[0],
        )
    qt = quantizer.Quantizer(bytearray(float_model))
    qt.load_quantization_recipe(manager.get_quantization_recipe())
    with np.errstate(invalid="ignore", over="ignore"):
        quantized = qt.quantize(result, enable_progress_report=False).quantized_model
    return bytes(quantized)

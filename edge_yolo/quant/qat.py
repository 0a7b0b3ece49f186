"""Quantization-aware fine-tuning (QAT) with NNCF, and the PGI branch kept in float.

The model that is quantized is the one that is deployed: fused (BatchNorm folded, RepConvN
merged). :func:`quantize_model` runs ``nncf.quantize`` on that torch module, which inserts
fake-quantize modules with learnable ranges (straight-through estimator) where the target's
runtime quantizes: the input activation and the weights of every convolution. The head's
decode side (reshape/concat of the raw outputs) and the outputs stay float. The training loop
then fine-tunes the quantized model like any other (:class:`edge_yolo.train.loop.ModelSetup`).

**PGI.** ``nncf.quantize`` traces ``YOLO.forward`` without the auxiliary branch, so only the
main path gets quantizers. The training pass, ``forward(x, with_aux=True)``, runs through the
same hooks and then the auxiliary neck and head in float on the (fake-quantized) backbone
features: the dual loss keeps sending the auxiliary branch's gradients into the quantized
backbone. The branch is dropped afterwards, as after float training.

**Variants** (:data:`VARIANTS`): ``task`` (the main head's loss; a PGI branch is dropped before
quantizing), ``distill`` (task loss plus distillation from the float model's outputs, for
few labels) and ``pgi`` (the dual loss, auxiliary branch in float).

**Per target** (:data:`SCHEMES`):

- ``intel``: NNCF's mixed preset (symmetric per-channel weights, asymmetric per-tensor
  activations), what OpenVINO's CPU plugin runs; the overflow fix as PTQ chooses it.
- ``rpi``: TFLite's int8 scheme is the same (symmetric per-channel weights with 127 levels,
  asymmetric per-tensor activations).
- ``jetson``: TensorRT's explicit form: symmetric signed int8 everywhere, zero point 0, no
  overflow fix. NNCF's hardware configuration refuses a request for signed activations
  (``signedness_to_force`` conflicts with every hardware config), so after range
  initialisation the activation quantizers are switched to signed: same range, the negative
  half of the codes unused on non-negative tensors, exactly as TensorRT will run them.

A QAT checkpoint stores the quantizer placement as JSON text (:func:`quantizer_config`) beside
the weights, so ``torch.load(weights_only=True)`` still reads it and
:func:`restore_quantizers` rebuilds the model without calibration data.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EdgeYoloError
from .calibration import CalibrationSet

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..models.gelan import YOLO

LOGGER = logging.getLogger(__name__)

#: QAT variants: which loss fine-tunes the quantized model
VARIANTS = ("pgi", "distill", "task")
QAT_FORMAT_VERSION = 1


class QATError(EdgeYoloError, ValueError):
    """A QAT run or checkpoint that cannot be used as asked; the message says why."""


@dataclass(frozen=True)
class QATScheme:
    """How one target's runtime quantizes, as NNCF settings."""

    target: str
    preset: str  # NNCF preset: mixed (asymmetric activations) | performance (symmetric)
    signed_activations: bool  # force signed int8 activations (TensorRT)
    overflow_fix: str  # "auto": as PTQ resolves it for this CPU; else an NNCF OverflowFix value
    description: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SCHEMES: dict[str, QATScheme] = {
    "intel": QATScheme(
        "intel", "mixed", False, "auto",
        "int8 weights symmetric per output channel; int8 activations asymmetric per tensor "
        "(OpenVINO CPU)",
    ),
    "rpi": QATScheme(
        "rpi", "mixed", False, "disable",
        "int8 weights symmetric per output channel (127 levels); int8 activations asymmetric "
        "per tensor (TFLite)",
    ),
    "jetson": QATScheme(
        "jetson", "performance", True, "disable",
        "int8 weights symmetric per output channel (zero point 0); int8 activations symmetric "
        "signed per tensor (zero point 0): TensorRT's explicit quantization",
    ),
}


# ------------------------------------------------------------------ NNCF's C++ extension


#: seconds a first build of NNCF's torch kernels may take before it is called stuck
EXTENSION_TIMEOUT_S = 300
#: a build lock older than this is left over from a killed build
STALE_LOCK_S = 600


def extensions_dir() -> Path:
    """Where NNCF's compiled torch kernels live: ``$TORCH_EXTENSIONS_DIR`` when set, else
    ``~/.cache/edge-yolo/torch_extensions`` (one per user, reused by every run)."""
    env = os.environ.get("TORCH_EXTENSIONS_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge-yolo" / (
        "torch_extensions"
    )


def prepare_extensions(log: Callable[[str], None] = print) -> Path:
    """Set NNCF's extension cache and build timeout explicitly, remove a stale build lock and
    build the CPU kernels now, saying so (a first build takes 20-60 s on 2 cores)."""
    root = extensions_dir()
    root.mkdir(parents=True, exist_ok=True)
    os.environ["TORCH_EXTENSIONS_DIR"] = str(root)
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", str(EXTENSION_TIMEOUT_S))
    now = time.time()
    for lock in root.rglob("lock"):
        age = now - lock.stat().st_mtime
        if age > STALE_LOCK_S:
            log(f"removing a stale build lock left by a killed build ({age / 60:.0f} min old): "
                f"{lock}")
            lock.unlink(missing_ok=True)
    built = any(root.rglob("quantized_functions_cpu*.so"))
    if not built:
        log(f"NNCF: compiling its C++ quantization kernels into {root} (first use only; up to "
            f"{os.environ['NNCF_EXTENSION_LOAD_TIMEOUT']} s) ...")
    t0 = time.perf_counter()
    with quiet_nncf():
        from nncf.torch import force_build_cpu_extensions

        try:
            force_build_cpu_extensions()
        except Exception as e:  # a compiler missing or a timeout: NNCF falls back to torch ops
            log(f"NNCF: its C++ kernels did not build ({str(e).splitlines()[0]}); using its "
                "slower pure-torch kernels")
            return root
    if not built:
        log(f"NNCF: kernels ready ({time.perf_counter() - t0:.0f} s)")
    return root


@contextlib.contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF logs INFO lines (extension builds, algorithm steps) and draws its own progress
    bars: our output says what is happening instead. Its logger stays at WARNING once we have
    used it (the extension also loads lazily, at a model's first forward pass)."""
    logging.getLogger("nncf").setLevel(logging.WARNING)
    with _no_progress_bars():
        yield


# ------------------------------------------------------------------ quantizing the model


def scheme_for(target: str) -> QATScheme:
    try:
        return SCHEMES[target]
    except KeyError:
        raise QATError(
            f"no QAT scheme for target {target!r}; one of {', '.join(SCHEMES)}"
        ) from None


def torch_dataset(calib: CalibrationSet, imgsz: int) -> Any:
    """An ``nncf.Dataset`` of NCHW torch tensors, letterboxed by the runtime's own code."""
    import nncf
    import torch

    from ..runtime.processing import preprocess

    return nncf.Dataset(calib.images, lambda im: torch.from_numpy(preprocess(im, imgsz)[0]))


def quantize_model(
    model: YOLO,
    calib: CalibrationSet,
    imgsz: int,
    target: str,
    *,
    ignored_scope: Sequence[str] = (),
    fast_bias_correction: bool = True,
) -> YOLO:
    """Fake-quantize a fused YOLO for ``target`` in place (NNCF, ranges from ``calib``).

    Without training this is post-training quantization in torch: the "fake-quant torch"
    row beside a runtime's PTQ row. ``ignored_scope`` holds module-path patterns (regex)
    kept in float, e.g. ``head\\..*`` (see :mod:`edge_yolo.quant.sensitivity`).
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    from ..models.fuse import is_fused
    from .ptq import resolve_overflow_fix

    scheme = scheme_for(target)
    if not is_fused(model):
        raise QATError("QAT quantizes the deployed graph: fuse the model first")
    model.eval()
    overflow = resolve_overflow_fix(scheme.overflow_fix)
    params = AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow))
    scope = None
    if ignored_scope:
        scope = nncf.IgnoredScope(patterns=[_scope_pattern(p) for p in ignored_scope],
                                  validate=False)
    with quiet_nncf():
        quantized = nncf.quantize(
            model,
            torch_dataset(calib, imgsz),
            preset=nncf.QuantizationPreset(scheme.preset),
            target_device=nncf.TargetDevice.CPU,
            subset_size=len(calib),
            fast_bias_correction=fast_bias_correction,
            ignored_scope=scope,
            advanced_parameters=params,
        )
    if scheme.signed_activations:
        force_signed_activations(quantized)
    return quantized


def _scope_pattern(block: str) -> str:
    """A block name (``backbone.stage3``) as a pattern over NNCF's node names, which spell
    module paths with slashes (``backbone/stage3/cv1/conv/conv2d/0``)."""
    return "^" + block.replace(".", "/").rstrip("/") + "/.*"


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """NNCF draws rich progress bars on stdout whatever its logger's level: switch them off
    (its ``track`` class takes ``disable``; every algorithm imports the class itself)."""
    try:
        from nncf.common.logging.track_progress import track
    except ImportError:  # pragma: no cover - layout of a future NNCF
        yield
        return
    original = track.__init__

    def disabled(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    track.__init__ = disabled  # type: ignore[method-assign]
    try:
        yield
    finally:
        track.__init__ = original  # type: ignore[method-assign]


def quantizers(model: nn.Module) -> list[tuple[str, Any]]:
    """NNCF's quantizer modules of a wrapped model, by hook name."""
    from nncf.torch.quantization.layers import BaseQuantizer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, BaseQuantizer)]


def force_signed_activations(model: nn.Module) -> int:
    """Switch per-tensor symmetric (activation) quantizers to signed; returns how many."""
    from nncf.torch.quantization.layers import SymmetricQuantizer

    n = 0
    for _, q in quantizers(model):
        if isinstance(q, SymmetricQuantizer) and not q.per_channel and not q.signed:
            q.signed = True
            n += 1
    return n


def describe(model: nn.Module) -> dict[str, Any]:
    """What the quantizers are: counts by kind, for the checkpoint and the bundle."""
    from nncf.torch.quantization.layers import AsymmetricQuantizer

    weights = activations = asym = unsigned = 0
    for _, q in quantizers(model):
        is_weight = q.per_channel
        weights += is_weight
        activations += not is_weight
        if not is_weight and isinstance(q, AsymmetricQuantizer):
            asym += 1
        elif not is_weight and not q.signed:
            unsigned += 1
    return {"weight_quantizers": weights, "activation_quantizers": activations,
            "asymmetric_activations": asym, "unsigned_activations": unsigned}


# ------------------------------------------------------------------ saving and restoring


def quantizer_config(model: nn.Module) -> str:
    """NNCF's description of where the quantizers sit and how they are set up, as JSON text
    (plain text keeps the checkpoint readable with ``weights_only=True``)."""
    import nncf.torch

    def plain(o: Any) -> Any:
        if isinstance(o, enum.Enum):
            return o.value
        raise TypeError(f"cannot store {type(o).__name__} in a QAT checkpoint")

    return json.dumps(nncf.torch.get_config(model), default=plain, sort_keys=True)


def restore_quantizers(model: YOLO, config: str) -> YOLO:
    """Put the quantizers described by :func:`quantizer_config` back on a fused model (their
    values come with the checkpoint's ``state_dict``)."""
    import nncf.torch
    from nncf.common.quantization.structs import QuantizationScheme

    try:
        doc = json.loads(config)
        for entry in doc["compression_state"]:
            module_config = entry["module_config"]
            if "mode" in module_config:
                module_config["mode"] = QuantizationScheme(module_config["mode"])
            if "scale_shape" in module_config:
                module_config["scale_shape"] = tuple(module_config["scale_shape"])
    except (ValueError, KeyError, TypeError) as e:
        raise QATError(f"the checkpoint's quantizer setup is unreadable ({e})") from e
    with quiet_nncf():
        return nncf.torch.load_from_config(model, doc)


def is_quantized(model: Any) -> bool:
    return any(k.startswith("__nncf_hooks.") for k in model.state_dict())


# ------------------------------------------------------------------ the training seam


def distillation_loss(teacher: nn.Module, weight: float = 1.0) -> Callable[..., torch.Tensor]:
    """An extra loss term for :class:`~edge_yolo.train.loop.ModelSetup`: the student's main
    head is pulled towards the float teacher's outputs on the same batch.

    Classes: binary cross-entropy against the teacher's sigmoid scores; boxes: cross-entropy
    of the student's DFL bins against the teacher's softmax. Each is averaged over anchors and
    scaled by the batch size (the task loss is a per-image sum) and ``weight``.
    """
    import torch
    import torch.nn.functional as F

    from ..models.decode import flatten_outputs

    teacher = teacher.eval().requires_grad_(False)

    def term(images: torch.Tensor, outputs: Any) -> torch.Tensor:
        main = outputs[0] if isinstance(outputs, tuple) else outputs
        with torch.no_grad():
            t_box, t_cls = flatten_outputs(teacher(images))
        s_box, s_cls = flatten_outputs(main)
        b, _, a = s_box.shape
        cls = F.binary_cross_entropy_with_logits(s_cls, t_cls.sigmoid(), reduction="sum")
        s_bins = s_box.view(b, 4, -1, a).log_softmax(2)
        t_bins = t_box.view(b, 4, -1, a).softmax(2)
        dfl = -(t_bins * s_bins).sum()
        return weight * (cls + dfl) / a

    return term


# ------------------------------------------------------------------ exports of a QAT model


def export_qdq_onnx(export_model: nn.Module, example: torch.Tensor, path: Path, *,
                    opset: int, input_name: str, output_names: Sequence[str],
                    dynamic: bool = False) -> None:
    """The fake-quantized model as explicit ONNX ``QuantizeLinear``/``DequantizeLinear``
    pairs carrying the learned ranges (NNCF's Q/DQ export mode), for TensorRT."""
    import torch
    from nncf.torch.quantization.layers import QuantizerExportMode

    model = copy.deepcopy(export_model).eval()
    for _, q in quantizers(model):
        q.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
    axes = None
    if dynamic:
        axes = {input_name: {0: "batch"}, **{n: {0: "batch"} for n in output_names}}
    with quiet_nncf(), torch.no_grad(), _quiet_warnings():
        torch.onnx.export(model, (example,), str(path), opset_version=opset, dynamo=False,
                          input_names=[input_name], output_names=list(output_names),
                          dynamic_axes=axes, do_constant_folding=True)
    import onnx
    import onnxslim

    graph = onnx.load(str(path))
    with contextlib.redirect_stdout(io.StringIO()):
        graph = onnxslim.slim(graph)  # Identity/Constant chains of the TorchScript exporter
    fold_weight_quantizers(graph)
    onnx.save(graph, str(path))


def fold_weight_quantizers(model: Any) -> int:
    """Store each quantized weight as its int8 values feeding the DequantizeLinear (the form
    onnxruntime's PTQ writes and TensorRT reads), instead of float weights + QuantizeLinear:
    a quarter of the size, the same numbers (QuantizeLinear rounds half to even, as here)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    keep, folded = [], 0
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and all(i in inits for i in node.input[:3]):
            w, scale, zero = (numpy_helper.to_array(inits[i]) for i in node.input[:3])
            if scale.size > 1:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                shape = [1] * w.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            q = np.clip(np.rint(w.astype(np.float32) / scale) + zero.astype(np.int32),
                        -128, 127).astype(np.int8)
            model.graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
            folded += 1
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return folded


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def check_tensorrt_qdq(model: Any) -> dict[str, Any]:
    """Check an ONNX graph is in TensorRT's explicit-quantization form and say what it holds:
    int8 Q/DQ only, zero point 0 everywhere, per-channel scales only on axis 0 of conv
    weights, per-tensor scales on activations, no unsigned types, standard ops only.
    Raises :class:`QATError` naming the first node that is not."""
    from onnx import numpy_helper

    consts: dict[str, np.ndarray] = {
        t.name: numpy_helper.to_array(t) for t in model.graph.initializer
    }
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    weights = set(consts)
    per_channel = per_tensor = pairs = 0
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise QATError(
                f"{node.name or node.op_type}: non-standard op {node.domain}.{node.op_type}"
            )
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        pairs += node.op_type == "QuantizeLinear"
        scale = consts.get(node.input[1])
        zero = consts.get(node.input[2]) if len(node.input) > 2 else None
        if scale is None or zero is None:
            raise QATError(f"{node.name}: scale and zero point must be constants")
        if zero.dtype != np.int8:
            raise QATError(f"{node.name}: zero point is {zero.dtype}, TensorRT needs int8")
        if np.any(zero != 0):
            raise QATError(f"{node.name}: zero point is not 0 (asymmetric)")
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.size > 1:
            if axis != 0 or node.input[0] not in weights and node.op_type == "QuantizeLinear":
                raise QATError(f"{node.name}: per-channel scales only on axis 0 of weights")
            per_channel += node.op_type == "DequantizeLinear"
        else:
            per_tensor += node.op_type == "DequantizeLinear"
    if not pairs and not per_channel:
        raise QATError("the graph has no QuantizeLinear/DequantizeLinear nodes")
    return {"qdq_dequantize_per_channel": per_channel, "qdq_dequantize_per_tensor": per_tensor}


def weight_quantizers(model: YOLO, imgsz: int = 64) -> list[tuple[str, Any]]:
    """``(parameter name, quantizer)`` of every weight quantizer, found through NNCF's graph
    (its op names do not spell module paths: a ModuleList index stands alone)."""
    import torch
    from nncf.torch.function_hook.hook_storage import decode_hook_name
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.model_graph_manager import get_const_node

    graph = build_nncf_graph(model, torch.zeros(1, 3, imgsz, imgsz))
    found = []
    for name, q in get_hook_storage(model).named_hooks():
        hook_type, op_name, port = decode_hook_name(name)
        if hook_type != "pre_hooks":
            continue
        const = get_const_node(graph.get_node_by_name(op_name), port, graph)
        if const is not None:
            found.append((const.layer_attributes.name, q))
    return found


def bake_weights(model: YOLO) -> YOLO:
    """A plain float copy of a QAT model whose conv weights are their fake-quantized values:
    the QAT-adapted weights, on their int8 grid, for a converter that quantizes by itself
    (TFLite). Activation quantizers are dropped; the converter calibrates those."""
    import torch

    from ..models.checkpoint import model_from_checkpoint

    baked = {k: v.clone() for k, v in model.state_dict().items()
             if not k.startswith("__nncf_hooks.")}
    with torch.no_grad():
        for key, q in weight_quantizers(model):
            if key not in baked:
                raise QATError(f"a weight quantizer sits on {key}, which the model lacks")
            baked[key] = q.quantize(baked[key], execute_traced_op_as_identity=False).detach()
    ckpt = {"config": asdict(model.config), "state_dict": baked, "fused": True}
    return model_from_checkpoint(ckpt, "<baked QAT weights>").eval()


# ------------------------------------------------------------------ what a checkpoint records


def qat_record(
    *, model: nn.Module, target: str, variant: str, source: Path, source_sha256: str,
    calib: CalibrationSet, recipe: dict[str, Any], ignored_scope: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``qat`` entry of a QAT checkpoint (plain types): the quantizer setup and where the
    model came from. :func:`restore_quantizers` reads ``nncf_config`` back."""
    from importlib.metadata import version

    return {
        "version": QAT_FORMAT_VERSION,
        "target": target,
        "scheme": scheme_for(target).to_dict(),
        "variant": variant,
        "source_checkpoint": str(source),
        "source_sha256": source_sha256,
        "calibration": asdict(calib.provenance()),
        "recipe": recipe,
        "ignored_scope": list(ignored_scope),
        "quantizers": describe(model),
        "nncf": version("nncf"),
        "nncf_config": quantizer_config(model),
    }


def check_record(record: Any, path: str | os.PathLike) -> dict[str, Any]:
    """Refuse a ``qat`` entry this edge-yolo cannot rebuild."""
    if not isinstance(record, dict) or not isinstance(record.get("nncf_config"), str):
        raise QATError(f"{path}: the checkpoint's 'qat' entry has no quantizer setup")
    if record.get("version", 0) > QAT_FORMAT_VERSION:
        raise QATError(f"{path}: QAT format {record.get('version')} is newer than this edge-yolo")
    if record.get("target") not in SCHEMES:
        raise QATError(f"{path}: QAT target {record.get('target')!r} is unknown")
    return record

"""A QAT model in each target's form: TensorRT's explicit Q/DQ ONNX with the learned ranges
(:func:`export_qdq_onnx`, checked by :func:`check_tensorrt_qdq`), and the QAT-adapted weights
on their int8 grid for a converter that quantizes by itself (:func:`bake_weights`, TFLite).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .nncf_setup import quiet_nncf
from .qat import QATError, quantizers

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..models.gelan import YOLO


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


def tflite_qat_ranges(model: YOLO, float_tflite: bytes, blob: np.ndarray, *,
                      tolerance: float = 1e-3) -> tuple[dict[str, tuple[float, float]], int, int]:
    """The QAT model's learned activation ranges, by the TFLite tensor each one belongs to.

    TFLite's converter quantizes by itself, so a QAT model reaches it as float weights (baked
    on their grid) plus calibration. This carries the other half of what QAT learned, the
    activation ranges: every activation quantizer's input is computed in torch (activation
    quantizers off, weights fake-quantized: the model the converter was given), every float
    tensor of ``float_tflite`` on the same NCHW ``blob``, and a quantizer's range goes to each
    TFLite tensor of the same (NHWC) shape holding the same values (relative error under
    ``tolerance``). Tensor names do not survive the conversion; values do. A tensor seen by
    several quantizers gets the union of their ranges. Returns ``{tensor name: (min, max)}``
    for :func:`edge_yolo.quant.ptq.quantize_tflite_full_integer`'s ``range_overrides``, the
    number of activation quantizers matched, and their number.
    """
    import torch
    from ai_edge_litert.interpreter import Interpreter

    student = copy.deepcopy(model).eval()
    weights = {id(q) for _, q in weight_quantizers(student)}
    seen: dict[str, list[tuple[np.ndarray, float, float]]] = {}
    handles = []
    for name, q in quantizers(student):
        if id(q) in weights:
            continue
        low, high = (float(v.detach().reshape(-1)[0]) for v in q.get_input_low_input_high())
        q.disable_quantization()

        def grab(_module: Any, args: tuple, *, key: str = name, lo: float = low,
                 hi: float = high) -> None:
            seen.setdefault(key, []).append((args[0].detach().numpy().copy(), lo, hi))

        handles.append(q.register_forward_pre_hook(grab))
    with torch.no_grad(), quiet_nncf():
        student(torch.from_numpy(np.ascontiguousarray(blob)))
    for h in handles:
        h.remove()

    interp = Interpreter(model_content=float_tflite, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.ascontiguousarray(blob.transpose(0, 2, 3, 1)))
    interp.invoke()
    by_shape: dict[tuple[int, ...], list[tuple[str, np.ndarray]]] = {}
    for d in interp.get_tensor_details():
        if d["dtype"] != np.float32 or d["index"] == inp["index"] or len(d["shape"]) != 4:
            continue
        try:
            value = interp.get_tensor(d["index"])
        except ValueError:  # a constant folded away, or a tensor the runtime did not keep
            continue
        by_shape.setdefault(tuple(int(s) for s in d["shape"]), []).append((d["name"], value))

    ranges: dict[str, tuple[float, float]] = {}
    matched = 0
    for captures in seen.values():
        hit = False
        for x, low, high in captures:
            if x.ndim != 4:
                continue
            nhwc = x.transpose(0, 2, 3, 1)
            norm = float(np.linalg.norm(nhwc)) or 1.0
            for tname, value in by_shape.get(nhwc.shape, []):
                if float(np.linalg.norm(value - nhwc)) / norm < tolerance:
                    lo, hi = ranges.get(tname, (low, high))
                    ranges[tname] = (min(lo, low), max(hi, high))
                    hit = True
        matched += hit
    return ranges, matched, len(seen)

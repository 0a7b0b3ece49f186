"""``intel`` target: OpenVINO IR (``model.xml`` + ``model.bin``), FP32 / FP16 / INT8.

- FP32: float weights (``save_model(..., compress_to_fp16=False)``; OpenVINO's default
  would silently halve them).
- FP16: FP16-compressed weights, decompressed at load; the CPU plugin still computes in its
  own inference precision (bf16/f32), so this is a size option, not a speed one.
- BF16: the FP32 IR, run with ``INFERENCE_PRECISION_HINT=bf16``: on CPUs with AVX512-BF16 or
  AMX (recent Xeon and EPYC) the float layers compute in bfloat16, about as fast as INT8 and
  without calibration; elsewhere OpenVINO computes in f32 (the Detector says which).
  FP32 bundles stay f32-forced, for exact parity with the float model.
- INT8: NNCF post-training quantization of the converted ``ov.Model`` on calibration images
  letterboxed exactly as the runtime does; overflow fix chosen from the CPU's VNNI support;
  the ``performance`` preset (symmetric activations) by default, ``--nncf-preset mixed`` for
  asymmetric ones (a little more accurate, 1.6x slower on the CPU plugin's u8 kernels).
  From a QAT checkpoint (``edge-yolo qat --target intel``) the fake-quantized torch model
  converts directly: its quantizers become FakeQuantize nodes with the learned ranges.

The model is converted straight from the fused torch module (``ov.convert_model``, whose
torch frontend traces with TorchScript: deprecated in torch 2.13 but exact here, whereas
converting a ``torch.export`` program leaves the spatial dimensions dynamic and took longer),
static input shape unless ``dynamic``; the bundle metadata is embedded in ``rt_info`` under
``edge_yolo`` so a lone ``.xml`` still loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..contract import INPUT_NAME, OUTPUT_NAMES
from ..runtime.bundle import META_KEY, BundleMeta
from ..runtime.cpu import cpu_has_vnni
from .base import Artifact, Exporter, ExportError
from .job import ExportJob

if TYPE_CHECKING:
    import openvino as ov

MODEL_FILE = "model.xml"


@dataclass
class OpenVINOOptions:
    """Extras of the ``intel`` target."""

    # NNCF preset: performance (symmetric int8 activations) | mixed (asymmetric u8). Measured
    # on AMX and VNNI Xeons (gelan-t, 640 px, 2 threads): mixed's u8 convolutions ran 1.6x
    # slower (35 vs 22 ms) for a 0.4-point smaller drop, within the interval (the demo report)
    preset: str = "performance"
    overflow_fix: str = "auto"  # auto (enable without VNNI) | enable | first_layer_only | disable
    ignored_scope: list[str] = field(default_factory=list)  # node names kept in float (int8)
    fast_bias_correction: bool = True


def convert(job: ExportJob) -> ov.Model:
    """The job's fused float model as an ``ov.Model`` with our input/output names."""
    import openvino as ov

    s = job.imgsz
    shape = [-1 if job.dynamic else 1, 3, s, s]
    try:
        model = ov.convert_model(job.model, example_input=job.example_input(), input=[shape])
    except Exception as e:
        raise ExportError(f"torch -> OpenVINO conversion of {job.model_name} failed: {e}") from e
    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    for port, name in zip(model.outputs, OUTPUT_NAMES):
        port.get_tensor().set_names({name})
    return model


def save(model: ov.Model, xml: Path) -> None:
    """Write the IR as-is (weights already compressed where wanted): never re-compress."""
    import openvino as ov

    ov.save_model(model, str(xml), compress_to_fp16=False)


def describe_int8(model: ov.Model) -> str:
    """What NNCF quantized, read from the graph (for the bundle's metadata)."""
    consumers = set()
    for op in model.get_ops():
        if op.get_type_name() == "FakeQuantize":
            consumers |= {t.get_node().get_type_name() for t in op.output(0).get_target_inputs()}
    return (
        "int8 weights of every (Group)Convolution, per output channel; int8 activations per "
        f"tensor (FakeQuantize) at the inputs of {', '.join(sorted(consumers))}; "
        "model input and outputs float32"
    )


class OpenVINOExporter(Exporter):
    options_type = OpenVINOOptions

    def build(self, job: ExportJob, staging: Path) -> Artifact:
        import openvino as ov

        opts: OpenVINOOptions = job.target_options
        model = convert(job)
        inputs, outputs = job.float_io()
        xml = staging / MODEL_FILE
        extra: dict[str, object] = {"openvino": ov.get_version(), "converted_from": "torch"}
        quantization = "none"
        if job.precision == "fp16":
            ov.save_model(model, str(xml), compress_to_fp16=True)
            quantization = "fp16-weights"
        elif job.precision == "bf16":
            save(model, xml)  # f32 weights: bfloat16 is the CPU plugin's compute precision
            extra["inference_precision_hint"] = "bf16"
        elif job.precision == "int8" and job.qat is not None:
            # the QAT model's fake quantizers convert to FakeQuantize with their learned ranges
            save(model, xml)
            quantization = "qdq"
            if "overflow_fix" in job.qat:  # QAT checkpoints before this was recorded lack it
                extra["overflow_fix"] = job.qat["overflow_fix"]
            extra.update(
                quantized=describe_int8(model),
                fake_quantize_nodes=sum(
                    op.get_type_name() == "FakeQuantize" for op in model.get_ops()
                ),
            )
        elif job.precision == "int8":
            from ..quant.ptq import quantize_openvino, resolve_overflow_fix
            from ..quant.sensitivity import openvino_patterns

            overflow_fix = resolve_overflow_fix(opts.overflow_fix)
            quantized = quantize_openvino(
                model,
                job.calibration(),
                job.imgsz,
                preset=opts.preset,
                overflow_fix=overflow_fix,
                ignored_scope=opts.ignored_scope,
                ignored_patterns=openvino_patterns(job.float_blocks),
                fast_bias_correction=opts.fast_bias_correction,
            )
            save(quantized, xml)
            quantization = "qdq"  # OpenVINO's FakeQuantize pairs: int8 inside, float I/O
            extra.update(
                nncf_preset=opts.preset,
                overflow_fix=overflow_fix,
                overflow_fix_setting=opts.overflow_fix,
                cpu_vnni=cpu_has_vnni(),
                ignored_scope=list(opts.ignored_scope),
                quantized=describe_int8(quantized),
                fake_quantize_nodes=sum(
                    op.get_type_name() == "FakeQuantize" for op in quantized.get_ops()
                ),
            )
        else:
            save(model, xml)
        return Artifact(MODEL_FILE, inputs, outputs, quantization, extra=extra)

    def embed_metadata(self, model_path: Path, meta: BundleMeta) -> None:
        import openvino as ov

        model = ov.Core().read_model(str(model_path))
        model.set_rt_info(meta.to_json(), [META_KEY])
        tmp = model_path.with_name(".embed." + model_path.name)
        save(model, tmp)
        del model  # release the mmap of the old .bin before replacing it
        os.replace(tmp.with_suffix(".bin"), model_path.with_suffix(".bin"))
        os.replace(tmp, model_path)

    def readme_section(self, meta: BundleMeta, job: ExportJob) -> str:
        threads = job.device.threads if job.device else "N"
        vnni = ""
        if meta.precision == "int8" and meta.extra.get("overflow_fix", "enable") != "enable":
            vnni = (
                "\n\nQuantized for CPUs with VNNI (AVX512-VNNI, AVX-VNNI or AMX: 11th-gen Core, "
                "2nd-gen Xeon Scalable and later): NNCF's overflow fix is off, so on an older "
                "CPU the int8 convolutions can saturate (`edge-yolo verify` fails and says "
                "why). For such a CPU, export with `--overflow-fix enable`."
            )
        return (
            "## OpenVINO notes\n"
            f"`Detector(bundle, threads={threads})` compiles for the CPU with "
            "PERFORMANCE_HINT=LATENCY. The IR is `model.xml` + `model.bin` (keep them together)."
            + vnni
        )

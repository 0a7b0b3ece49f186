"""Sensitivity ranking and mixed precision: blocks found under every naming scheme, the
greedy choice against a measured drop, and each target leaving the chosen blocks in float."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import runtime_models as rm

from edge_yolo.quant import sensitivity as sens


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    from edge_yolo.models import load_model

    model, _ = load_model(rm.fitted_checkpoint(rm.cache_root(tmp_path_factory)))
    return model.fuse().eval()


@pytest.fixture(scope="module")
def calib():
    from edge_yolo.quant.calibration import CalibrationSet

    return CalibrationSet.load(str(rm.RACCOON / "images"), 6)


def test_block_of_reads_every_naming_scheme():
    assert sens.block_of("backbone/stage3/cv1/conv/conv2d/0") == "backbone.stage3"  # NNCF
    assert sens.block_of("__module.model.neck.spp.cv1.conv/aten::_convolution/Conv") == "neck.spp"
    assert sens.block_of("model.backbone.stem.conv.weight") == "backbone.stem"  # ONNX weight
    assert sens.block_of("head/0/conv/conv2d/0") == "head"
    assert sens.block_of("model.aux.neck.spp") is None  # the PGI branch is not deployed
    assert sens.block_of("something/else") is None
    with pytest.raises(ValueError, match="unknown block"):
        sens.check_blocks(["backbone.stage9"])


def test_every_quantizer_of_the_model_belongs_to_a_block(fused, calib):
    import copy

    from edge_yolo.quant.qat import quantize_model, quantizers

    q = quantize_model(copy.deepcopy(fused), calib, rm.IMGSZ, "intel")
    names = [n.split("hooks.", 1)[-1] for n, _ in quantizers(q)]
    assert names and all(sens.block_of(n) in sens.BLOCKS for n in names), names[:5]
    # an ignored block keeps float weights and inputs (only its output may stay quantized,
    # for the next block's int8 input)
    q2 = quantize_model(copy.deepcopy(fused), calib, rm.IMGSZ, "intel",
                        ignored_scope=["head", "backbone.stage3"])
    inside = [(n, q) for n, q in quantizers(q2)
              if sens.block_of(n.split("hooks.", 1)[-1]) in ("head", "backbone.stage3")]
    assert not [n for n, q in inside if q.per_channel or "pre_hooks" in n]
    assert len(quantizers(q2)) < len(quantizers(q)) - 40


def test_ranking_restores_one_block_at_a_time(fused, calib):
    ranking = sens.rank_blocks(fused, calib, rm.IMGSZ, "intel")
    assert {r.block for r in ranking} == set(sens.BLOCKS)
    gains = [r.gain for r in ranking]
    assert gains == sorted(gains, reverse=True) and all(np.isfinite(gains))
    assert ranking[0].gain > 0  # restoring the worst block removes some of the int8 error


def test_greedy_keeps_blocks_in_float_until_the_measured_drop_fits(fused, calib):
    from edge_yolo.quant.qat import is_quantized, quantizers

    ranking = sens.rank_blocks(fused, calib, rm.IMGSZ, "intel")
    culprits = {ranking[0].block, ranking[1].block}

    def evaluate(model) -> float:  # 10 points lost while either culprit is quantized
        if not is_quantized(model):
            return 0.9
        present = {sens.block_of(n.split("hooks.", 1)[-1]) for n, q in quantizers(model)
                   if q.per_channel}  # blocks whose weights are int8
        return 0.9 - 0.1 * bool(present & culprits)

    chosen = sens.choose_float_blocks(fused, calib, rm.IMGSZ, "intel", 1.0, evaluate, 6,
                                      log=lambda _: None)
    assert set(chosen.float_blocks) == culprits and chosen.measured_drop == 0
    assert [s["drop"] for s in chosen.steps] == [10.0, 10.0, 0.0]


def test_each_target_translates_blocks_to_its_own_names():
    assert sens.openvino_patterns(["backbone.stage3"]) == [r".*\.backbone\.stage3[./].*"]
    name = ("...ExportModel_inner/edge_yolo.models.gelan.YOLO_model/edge_yolo.models.gelan."
            "Backbone_backbone/edge_yolo.models.layers.RepNCSPELAN4_stage3/torch.nn.Conv2d_conv;")
    import re

    (regex,) = sens.tflite_regexes(["backbone.stage3"])
    assert re.fullmatch(regex, name)
    assert not re.fullmatch(sens.tflite_regexes(["backbone.stage4"])[0], name)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["intel", "jetson", "rpi"])
def test_float_blocks_stay_float_in_every_target(target, tmp_path, tmp_path_factory,
                                                 monkeypatch):
    from edge_yolo.export import export
    from edge_yolo.export import job as job_module
    from edge_yolo.runtime.bundle import BundleMeta

    blocks = ["head"]

    def fixed(self, max_drop):
        self.float_blocks = list(blocks)
        self.mixed_precision = {"max_drop": max_drop, "float_blocks": list(blocks)}

    monkeypatch.setattr(job_module.ExportJob, "choose_float_blocks", fixed)
    weights = rm.fitted_checkpoint(rm.cache_root(tmp_path_factory))
    bundle = Path(export(weights, target, precision="int8", imgsz=rm.IMGSZ,
                         calib=str(rm.RACCOON / "images"), out=tmp_path, threads=1,
                         max_drop=1.0))
    meta = BundleMeta.read(bundle)
    assert meta.extra["float_blocks"] == blocks
    model_file = bundle / meta.model_file
    if target == "intel":
        import openvino as ov

        ir = ov.Core().read_model(str(model_file))
        head_fq = [op for op in ir.get_ops() if op.get_type_name() == "FakeQuantize"
                   and all(sens.block_of(t.get_node().get_friendly_name()) == "head"
                           for t in op.output(0).get_target_inputs())]
        others = [op for op in ir.get_ops() if op.get_type_name() == "FakeQuantize"]
        assert others and not head_fq
    elif target == "jetson":
        import onnx

        g = onnx.load(str(model_file)).graph
        produced = {o: n for n in g.node for o in n.output}
        head = [n for n in g.node if n.op_type == "Conv" and sens.block_of(n.input[1]) == "head"]
        quantized = [n for n in g.node if n.op_type == "Conv"
                     and produced.get(n.input[0]) is not None
                     and produced[n.input[0]].op_type == "DequantizeLinear"]
        assert head and quantized and not set(map(id, head)) & set(map(id, quantized))
    else:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(model_file))
        details = interp.get_tensor_details()
        head = [d for d in details if "DDetect_head" in d["name"]]
        assert head and all(d["dtype"] == np.float32 for d in head
                            if "Conv2d" in d["name"] and d["name"].endswith(";"))
    shutil.rmtree(bundle)

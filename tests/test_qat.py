"""Quantization-aware fine-tuning: NNCF quantizers on the fused model, PGI's auxiliary branch
trained in float through them, the training loop's seam, resumable self-describing
checkpoints, and each target's export of the QAT model run by its real runtime.

The model is yolov9-t fitted on the six raccoon fixture photos (``runtime_models``); QAT makes
two updates at 160 px on three of the four training photos (one is held out), one thread."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import runtime_models as rm
import torch

from edge_yolo.cli import main

DATA = str(rm.RACCOON)
QAT_ARGS = ["--data", DATA, "--updates", "2", "--imgsz", str(rm.IMGSZ), "--batch", "3",
            "--calib-size", "6", "--threads", "1", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def float_pgi(tmp_path_factory) -> Path:
    return rm.fitted_checkpoint(rm.cache_root(tmp_path_factory), steps=40, model_name="yolov9-t")


def _qat(tmp_path_factory, float_pgi: Path, target: str, *extra: str) -> Path:
    key = ("qat", target, extra)
    if key not in rm._CACHE:
        out = rm.cache_root(tmp_path_factory) / f"qat-{target}-{'-'.join(extra) or 'pgi'}"
        shutil.rmtree(out, ignore_errors=True)
        code = main(["qat", "--weights", str(float_pgi), "--target", target, "--out", str(out),
                     *QAT_ARGS, *extra])
        assert code == 0
        rm._CACHE[key] = out / "best.pt"
    return rm._CACHE[key]


@pytest.fixture(scope="module")
def qat_jetson(tmp_path_factory, float_pgi) -> Path:
    return _qat(tmp_path_factory, float_pgi, "jetson")


def test_qat_checkpoint_describes_itself_and_loads_weights_only(qat_jetson, float_pgi):
    from edge_yolo.models import load_model
    from edge_yolo.quant.qat import is_quantized, quantizers

    raw = torch.load(qat_jetson, map_location="cpu", weights_only=True)
    qat = raw["qat"]
    assert qat["target"] == "jetson" and qat["variant"] == "pgi"
    assert qat["source_sha256"] and Path(qat["source_checkpoint"]) == float_pgi
    assert qat["calibration"]["num_images"] == 3  # the fixture's train split less 1 held out
    assert json.loads(qat["nncf_config"])["compression_state"]
    assert qat["quantizers"]["weight_quantizers"] > 50
    # TensorRT's scheme: no asymmetric or unsigned activation quantizer
    assert qat["quantizers"]["asymmetric_activations"] == 0
    assert qat["quantizers"]["unsigned_activations"] == 0
    model, _ = load_model(qat_jetson)  # rebuilt from the record: quantizers back in place
    assert is_quantized(model) and len(quantizers(model)) > 100
    assert model.aux is not None  # the PGI branch trained along (dropped at export)


def test_pgi_branch_trains_in_float_through_the_quantized_backbone(qat_jetson, float_pgi):
    source = torch.load(float_pgi, map_location="cpu", weights_only=True)["state_dict"]
    # the raw (non-EMA) weights after the fine-tune: last.pt keeps them (best.pt ships)
    raw = torch.load(qat_jetson.parent / "last.pt", map_location="cpu",
                     weights_only=True)["train"]["model"]
    aux_keys = [k for k in raw if k.startswith("aux.")]
    assert aux_keys and not any("aux/" in k for k in raw if k.startswith("__nncf_hooks"))
    # the auxiliary branch received gradients (its weights moved); it carries no quantizer
    from edge_yolo.models import create_model

    fused = create_model("yolov9-t", num_classes=1)
    fused.load_state_dict(source)
    fused.fuse()
    ref = fused.state_dict()
    moved = [k for k in aux_keys if k.endswith("weight") and not torch.equal(raw[k], ref[k])]
    assert len(moved) > 10


def test_fake_quant_model_is_close_to_float_but_not_equal(qat_jetson, float_pgi):
    from edge_yolo.runtime.detector import Detector

    image = rm.raccoon_photos()[0]
    from edge_yolo.runtime.processing import read_image

    im = read_image(str(image))
    fq = Detector(qat_jetson, threads=1, conf=0.1)(im)
    fl = Detector(float_pgi, threads=1, conf=0.1)(im)
    assert len(fq) and len(fl)
    # best first: the top box is the same raccoon, within a few pixels of the photo
    assert np.abs(fq.xyxy[0] - fl.xyxy[0]).max() < 0.05 * max(im.shape)
    assert not np.array_equal(fq.scores, fl.scores)


def test_qat_jetson_exports_tensorrt_qdq_that_onnxruntime_runs_like_the_torch_model(
    qat_jetson, tmp_path
):
    import onnx

    from edge_yolo.export import export
    from edge_yolo.quant.qat_export import check_tensorrt_qdq
    from edge_yolo.runtime.bundle import BundleMeta
    from edge_yolo.runtime.detector import Detector
    from edge_yolo.runtime.processing import read_image

    bundle = Path(export(qat_jetson, "jetson", precision="int8", out=tmp_path, threads=1))
    assert bundle.name.endswith("-jetson-int8-qat")
    meta = BundleMeta.read(bundle)
    assert meta.extra["quantization_kind"] == "qat"
    assert meta.extra["qat"]["variant"] == "pgi" and meta.extra["qat"]["checkpoint_sha256"]
    assert meta.calibration is not None and meta.calibration.num_images == 3
    graph = onnx.load(str(bundle / meta.model_file))
    form = check_tensorrt_qdq(graph)  # int8, zero point 0, per-channel axis 0, standard ops
    assert form["qdq_dequantize_per_channel"] > 50 and form["qdq_dequantize_per_tensor"] > 50
    types = {n.op_type for n in graph.graph.node}
    assert "FakeQuantize" not in types and "Conv" in types
    im = read_image(str(rm.raccoon_photos()[1]))
    ort = Detector(bundle, backend="onnxruntime", threads=1, conf=0.05)
    ref = Detector(qat_jetson, threads=1, conf=0.05)
    a, b = ort(im), ref(im)
    assert len(a) == len(b) > 0
    # int8 rounding at a tie can flip one code between NNCF and onnxruntime: a few hundredths
    np.testing.assert_allclose(a.scores, b.scores, atol=0.05)


def test_tensorrt_form_check_refuses_asymmetric_or_unsigned_qdq():
    import onnx
    from onnx import helper, numpy_helper

    from edge_yolo.quant.qat import QATError
    from edge_yolo.quant.qat_export import check_tensorrt_qdq

    def graph(zero: np.ndarray) -> onnx.ModelProto:
        inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                 numpy_helper.from_array(zero, "z")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q0"),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq0")]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1])],
                              [helper.make_tensor_value_info("y", 1, [1])], inits)
        return helper.make_model(g)

    assert check_tensorrt_qdq(graph(np.array(0, np.int8)))["qdq_dequantize_per_tensor"] == 1
    with pytest.raises(QATError, match="uint8"):
        check_tensorrt_qdq(graph(np.array(0, np.uint8)))
    with pytest.raises(QATError, match="not 0"):
        check_tensorrt_qdq(graph(np.array(3, np.int8)))


def test_pgi_variant_needs_a_pgi_checkpoint(tmp_path, tmp_path_factory, capsys):
    gelan = rm.fitted_checkpoint(rm.cache_root(tmp_path_factory))
    code = main(["qat", "--weights", str(gelan), "--target", "intel", "--out",
                 str(tmp_path / "q"), *QAT_ARGS, "--variant", "pgi"])
    err = capsys.readouterr().err
    assert code == 2 and "no PGI branch" in err and "--variant distill" in err
    assert len(err.strip().splitlines()) == 1


def test_a_qat_checkpoint_exports_only_int8_for_its_own_target(qat_jetson, tmp_path, capsys):
    assert main(["export", "--weights", str(qat_jetson), "--target", "intel",
                 "--precision", "int8", "--out", str(tmp_path)]) == 2
    assert "fine-tuned for 'jetson'" in capsys.readouterr().err
    assert main(["export", "--weights", str(qat_jetson), "--target", "jetson",
                 "--precision", "fp16", "--out", str(tmp_path)]) == 2
    assert "--precision int8" in capsys.readouterr().err


def test_distillation_term_is_stationary_when_student_equals_teacher():
    from edge_yolo.models import create_model
    from edge_yolo.quant.qat import distillation_loss

    torch.manual_seed(0)
    teacher = create_model("gelan-t", num_classes=2).eval()
    student = create_model("gelan-t", num_classes=2).eval()
    student.load_state_dict(teacher.state_dict())
    x = torch.rand(2, 3, 64, 64)
    term = distillation_loss(teacher)
    loss = term(x, (student(x), None))
    loss.backward()
    grads = [p.grad.abs().max() for p in student.parameters() if p.grad is not None]
    assert max(grads) < 1e-5  # cross-entropy to the teacher is minimal at the teacher
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert term(x, (student(x), None)) > loss + 1e-3


@pytest.mark.slow
def test_qat_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(
    tmp_path, float_pgi, monkeypatch
):
    from edge_yolo.train import loop

    args = ["--data", DATA, "--updates", "4", "--imgsz", str(rm.IMGSZ), "--batch", "2",
            "--calib-size", "3", "--threads", "1", "--workers", "0", "--no-progress"]
    full = tmp_path / "full"
    assert main(["qat", "--weights", str(float_pgi), "--target", "intel", "--out", str(full),
                 *args]) == 0

    class Killed(Exception):
        pass

    def kill_at(updates: int, _model: object) -> None:
        if updates == 3:  # 3 training images, batch 2: two updates an epoch; so epoch 2
            raise Killed

    real_train = loop.train
    monkeypatch.setattr(loop, "train", functools.partial(real_train, on_step=kill_at))
    cut = tmp_path / "cut"
    with pytest.raises(Killed):
        main(["qat", "--weights", str(float_pgi), "--target", "intel", "--out", str(cut),
              "--debug", *args])
    monkeypatch.setattr(loop, "train", real_train)
    assert torch.load(cut / "last.pt", weights_only=True)["train"]["epoch"] == 1
    assert main(["qat", "--resume", str(cut), "--threads", "1"]) == 0
    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(cut / "last.pt", weights_only=True)
    assert b["train"]["epoch"] == 2 and b["qat"]["nncf_config"] == a["qat"]["nncf_config"]
    for k, v in a["state_dict"].items():
        assert torch.allclose(v.float(), b["state_dict"][k].float(), atol=1e-6), k


@pytest.mark.slow
def test_qat_intel_exports_an_int8_ir_with_the_learned_ranges(tmp_path_factory, float_pgi,
                                                              tmp_path):
    from edge_yolo.export import export
    from edge_yolo.quant.ptq import resolve_overflow_fix
    from edge_yolo.runtime.bundle import BundleMeta
    from edge_yolo.runtime.detector import Detector
    from edge_yolo.runtime.processing import read_image

    qat = _qat(tmp_path_factory, float_pgi, "intel", "--variant", "distill")
    assert torch.load(qat, weights_only=True)["qat"]["variant"] == "distill"
    bundle = Path(export(qat, "intel", precision="int8", out=tmp_path, threads=1))
    meta = BundleMeta.read(bundle)
    assert meta.extra["quantization_kind"] == "qat" and meta.extra["fake_quantize_nodes"] > 50
    # the overflow fix NNCF used, recorded so a CPU without VNNI can say the bundle is at risk
    assert meta.extra["overflow_fix"] == meta.extra["qat"]["overflow_fix"]
    assert meta.extra["overflow_fix"] == resolve_overflow_fix("auto")
    im = read_image(str(rm.raccoon_photos()[2]))
    ov = Detector(bundle, threads=1, conf=0.05)(im)
    ref = Detector(qat, threads=1, conf=0.05)(im)
    assert len(ov) > 0 and len(ref) > 0
    assert abs(float(ov.scores.max()) - float(ref.scores.max())) < 0.05


@pytest.mark.slow
def test_qat_rpi_exports_full_integer_tflite_from_the_adapted_weights(tmp_path_factory,
                                                                      float_pgi, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from edge_yolo.export import export
    from edge_yolo.models import load_model
    from edge_yolo.quant.qat_export import bake_weights, weight_quantizers
    from edge_yolo.runtime.bundle import BundleMeta

    qat = _qat(tmp_path_factory, float_pgi, "rpi", "--variant", "task")
    model, _ = load_model(qat)
    baked = bake_weights(model).state_dict()
    found = weight_quantizers(model)
    assert len(found) > 50
    for key, q in found:  # every baked conv weight sits on its quantizer's int8 grid
        w = baked[key]
        on_grid = q.quantize(w, execute_traced_op_as_identity=False).detach()
        assert torch.allclose(on_grid, w, atol=1e-6), key
    bundle = Path(export(qat, "rpi", precision="int8", calib=DATA, out=tmp_path, threads=1))
    meta = BundleMeta.read(bundle)
    assert meta.quantization == "full-integer" and meta.extra["quantization_kind"] == "qat"
    assert "QAT activation quantizers" in meta.extra["activation_ranges"]
    interp = Interpreter(model_path=str(bundle / meta.model_file))
    assert interp.get_input_details()[0]["dtype"] == np.int8

    # The learned activation ranges reach the int8 file: found by value in the float
    # conversion, nearly every quantizer has its tensor, and each such int8 tensor's scale is
    # the learned range over 255 levels, not the calibrated one.
    from edge_yolo.export.tflite import convert_float
    from edge_yolo.models import ExportModel
    from edge_yolo.quant.qat_export import tflite_qat_ranges
    from edge_yolo.runtime.processing import preprocess, read_image

    float_file = convert_float(ExportModel(bake_weights(model)).eval(), rm.IMGSZ)
    blob = preprocess(read_image(str(rm.raccoon_photos()[0])), rm.IMGSZ)[0]
    ranges, matched, total = tflite_qat_ranges(model, float_file, blob)
    assert total > 50 and matched >= 0.9 * total
    scales = {t["name"]: t["quantization_parameters"]["scales"]
              for t in interp.get_tensor_details() if t["dtype"] == np.int8}
    learned = [scales[name][0] == pytest.approx((max(high, 0) - min(low, 0)) / 255, rel=0.02)
               for name, (low, high) in ranges.items()
               if name in scales and scales[name].size == 1]
    # a few tensors share their neighbour's scale (the quantizer's own constraints, e.g. around
    # a concatenation); the rest carry exactly the learned range
    print(f"{sum(learned)} of {len(learned)} matched int8 tensors carry the learned scale")
    assert len(learned) >= 0.5 * len(ranges) and sum(learned) >= 0.7 * len(learned)


def test_a_stale_extension_build_lock_is_cleared_and_said(tmp_path, monkeypatch):
    import os
    import time

    from edge_yolo.quant.nncf_setup import STALE_LOCK_S, extensions_dir, prepare_extensions

    root = extensions_dir()  # the real cache: the kernels are built there already
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(root))
    stale = root / "edge-yolo-test-stale" / "lock"
    fresh = root / "edge-yolo-test-fresh" / "lock"
    for lock in (stale, fresh):
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()
    old = time.time() - STALE_LOCK_S - 60
    os.utime(stale, (old, old))
    said: list[str] = []
    try:
        assert prepare_extensions(said.append) == root
        assert not stale.exists() and fresh.exists()  # a build in progress keeps its lock
        assert any("stale build lock" in line and str(stale) in line for line in said)
        assert os.environ["NNCF_EXTENSION_LOAD_TIMEOUT"] == "0"  # none, or a lock is left
        assert any("another process is building" in line for line in said)  # the fresh one
    finally:
        for lock in (stale, fresh):
            shutil.rmtree(lock.parent, ignore_errors=True)


def test_info_says_a_checkpoint_is_qat(qat_jetson, capsys):
    assert main(["info", str(qat_jetson)]) == 0
    out = capsys.readouterr().out
    assert "QAT for jetson (variant pgi)" in out and "--precision int8" in out
    assert "QAT made 2 updates; fidelity to the float model on 1 held-out images" in out


@pytest.mark.parametrize("argv, needle", [
    (["qat", "--data", DATA], "--weights and --target are required"),
    (["qat", "--weights", "{w}", "--target", "onnx"], "QAT is for an int8 target"),
    (["qat", "--weights", "{w}", "--target", "nosuchboard"], "--target"),
    (["qat", "--resume", "{run}", "--target", "intel"], "cannot change on --resume"),
    (["qat", "--resume", "{w}"], "cannot be resumed"),
])
def test_qat_command_line_mistakes_are_one_line(argv, needle, float_pgi, qat_jetson, capsys):
    argv = [a.format(w=float_pgi, run=qat_jetson.parent) for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_qat_counts_its_schedule_in_updates_and_scores_its_start_and_end(qat_jetson):
    from edge_yolo.data import load_dataset
    from edge_yolo.data.unlabeled import carve

    run = qat_jetson.parent
    last = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    # --updates 2, batch 3, 3 training images: one update an epoch, every batch a step
    assert last["train"]["ema_updates"] == 2 and last["train"]["epoch"] == 2
    assert last["train_config"]["nbs"] == last["train_config"]["batch"] == 3
    assert last["train_config"]["max_updates"] == 2
    record = torch.load(qat_jetson, map_location="cpu", weights_only=True)["qat"]
    assert record["updates"] == 2 and record["schedule"]["steps_per_epoch"] == 1
    held = record["holdout"]
    assert held["images"] == 1 and record["data"]["labeled"]
    for stage in ("init", "end"):  # labeled: fidelity to the float model and mAP, both
        scores = held[stage]
        assert 0 <= scores["fidelity"] <= 100 and len(scores["fidelity_ci"]) == 2
        assert 0 <= scores["map50_95"] <= 1 and scores["float_map50_95"] > 0
    assert len(held["fidelity_gain_ci"]) == 2 and "fidelity_gain" in held
    # the start is its own QAT checkpoint: quantizers initialised, no update made
    init = torch.load(run / "init.pt", map_location="cpu", weights_only=True)
    assert init["qat"]["stage"] == "init" and init["qat"]["updates"] == 0
    assert init["qat"]["nncf_config"] == record["nncf_config"]
    assert json.loads((run / "qat.json").read_text())["updates"] == 2
    # the held-out photo is the one the seeded carve keeps apart, never trained on
    rest, out = carve(load_dataset(DATA, "train"), 1, seed=0)
    assert len(out) == 1 and not set(out.indices) & set(rest.indices)


def test_update_count_is_exact_where_an_epoch_has_more_batches(tmp_path, float_pgi):
    code = main(["qat", "--weights", str(float_pgi), "--target", "jetson", "--out",
                 str(tmp_path / "q"), "--data", DATA, "--updates", "3", "--batch", "1",
                 "--imgsz", str(rm.IMGSZ), "--calib-size", "3", "--threads", "1",
                 "--workers", "0", "--no-progress"])
    assert code == 0
    last = torch.load(tmp_path / "q" / "last.pt", map_location="cpu", weights_only=True)
    # 3 batches an epoch: the run stops after the third update, inside its first epoch
    assert last["train"]["ema_updates"] == 3 and last["train"]["epoch"] == 1


def test_label_free_qat_learns_from_a_folder_of_images_by_distillation(tmp_path, float_pgi,
                                                                         capsys):
    folder = tmp_path / "footage"
    folder.mkdir()
    for photo in rm.raccoon_photos():  # images only: no labels anywhere
        shutil.copy(photo, folder / photo.name)
    args = ["--data", str(folder), "--updates", "2", "--batch", "3", "--imgsz", str(rm.IMGSZ),
            "--threads", "1", "--workers", "0", "--no-progress", "--target", "intel"]
    code = main(["qat", "--weights", str(float_pgi), "--out", str(tmp_path / "q"), *args])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "no labels: distillation from the float model alone" in printed
    record = torch.load(tmp_path / "q" / "best.pt", weights_only=True)["qat"]
    assert record["variant"] == "distill" and not record["data"]["labeled"]
    assert record["holdout"]["images"] == 1 and record["updates"] == 2
    end = record["holdout"]["end"]
    assert "map50_95" not in end and 0 <= end["fidelity"] <= 100  # no labels: fidelity only
    # what it learnt from: the distillation terms (box 0, cls, dfl), not a task loss
    history = json.loads((tmp_path / "q" / "results.json").read_text())["epochs"]
    assert history[-1]["train/box_loss"] == 0 and history[-1]["train/cls_loss"] > 0
    assert history[-1]["train/dfl_loss"] > 0
    # a variant that learns from labels is refused in one line
    code = main(["qat", "--weights", str(float_pgi), "--out", str(tmp_path / "p"), *args,
                 "--variant", "pgi"])
    err = capsys.readouterr().err
    assert code == 2 and "has no labels" in err and len(err.strip().splitlines()) == 1


def test_qat_recipes_refuse_an_epoch_schedule(tmp_path):
    from edge_yolo.quant.qat import QATError
    from edge_yolo.quant.qat_run import load_qat_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 3\n")
    with pytest.raises(QATError, match="qat.updates"):
        load_qat_recipe(recipe, {}, {})
    recipe.write_text("batch: 4\nqat:\n  accumulate: 2\n  updates: 50\n")
    cfg, qcfg = load_qat_recipe(recipe, {}, {})
    assert cfg.nbs == 8 and cfg.max_updates == 50 and qcfg.variant is None
    cfg, _ = load_qat_recipe(None, {"batch": 8}, {})
    assert cfg.nbs == 8 and cfg.eval_interval == 0  # no accumulation unless asked


@pytest.mark.slow
def test_the_report_scores_a_qat_run_beside_its_start(qat_jetson, float_pgi, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["report", "--weights", str(float_pgi), "--data", DATA, "--split", "all",
                 "--qat", str(qat_jetson), "--resamples", "10", "--threads", "1",
                 "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().out
    rows = {r["name"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    init = rows["torch fake-quant jetson int8 QAT init (pgi)"]
    end = rows["torch fake-quant jetson int8 QAT (pgi, 2 updates)"]
    assert init["quantization"] == "qat-init" and end["quantization"] == "qat"
    assert rows["jetson int8 QAT (pgi, 2 updates)"]["backend"] == "onnxruntime"
    for row in (init, end):
        assert 0 <= row["fidelity"] <= 100 and row["fidelity_ci"][0] <= row["fidelity_ci"][1]


@pytest.mark.slow
def test_compare_ptq_ships_the_artifact_closer_to_the_float_model(qat_jetson, float_pgi,
                                                                  tmp_path, capsys):
    from edge_yolo.runtime.bundle import BundleMeta

    code = main(["export", "--weights", str(qat_jetson), "--target", "jetson", "--precision",
                 "int8", "--compare-ptq", "--out", str(tmp_path), "--threads", "1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    (bundle,) = tmp_path.glob("*-jetson-int8-qat")
    meta = BundleMeta.read(bundle)
    decision = meta.extra["compared_with"]
    assert decision["images"] == 1 and decision["ships"] in ("qat", "ptq")
    better = max(("qat", "ptq"), key=lambda k: decision[f"{k}_fidelity"])
    assert decision["ships"] == better and meta.extra["quantization_kind"] == better
    assert f"ships {better.upper()}: fidelity to the float model" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == [bundle.name]  # no candidate left
    code = main(["export", "--weights", str(float_pgi), "--target", "jetson", "--precision",
                 "int8", "--compare-ptq", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "is not a QAT checkpoint" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_qat_run_killed_while_scoring_its_end_finishes_on_resume(tmp_path, float_pgi,
                                                                   monkeypatch, capsys):
    from edge_yolo.quant import qat_run

    class Killed(Exception):
        pass

    real_finish = qat_run._finish

    def killed(*_args: object, **_kwargs: object) -> None:
        raise Killed

    monkeypatch.setattr(qat_run, "_finish", killed)
    run = tmp_path / "q"
    with pytest.raises(Killed):
        main(["qat", "--weights", str(float_pgi), "--target", "jetson", "--out", str(run),
              "--debug", *QAT_ARGS])
    monkeypatch.setattr(qat_run, "_finish", real_finish)
    assert "end" not in torch.load(run / "best.pt", weights_only=True)["qat"]["holdout"]
    assert main(["qat", "--resume", str(run)]) == 0  # no update made again: only the scoring
    record = torch.load(run / "best.pt", weights_only=True)["qat"]
    assert record["updates"] == 2 and "end" in record["holdout"]
    capsys.readouterr()
    assert main(["qat", "--resume", str(run)]) == 2  # now complete: says so
    assert "already finished 2 of 2 updates" in capsys.readouterr().err

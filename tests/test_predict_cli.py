"""`edge-yolo predict` on an image, a folder and a video file, and the examples/ scripts."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import runtime_models as rm

from edge_yolo import Detector
from edge_yolo.cli import main
from edge_yolo.runtime.backends.base import BackendError

REPO = rm.REPO


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return rm.exported_bundle(rm.cache_root(tmp_path_factory), "onnx", "fp32")


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.strip().splitlines()


def test_predict_one_image(bundle, raccoon_images, capsys, tmp_path):
    photo = raccoon_images[-1]  # two raccoons
    assert main(["predict", str(bundle), str(photo), "--threads", "1", "--conf", "0.3"]) == 0
    lines = _lines(capsys)
    assert lines[0].startswith("Detector(gelan-t onnx/fp32 on onnxruntime")
    assert lines[1].startswith(f"{photo}: 2 raccoon (pre ")
    assert "infer" in lines[1] and "post" in lines[1]
    assert not (tmp_path / photo.name).exists()  # nothing written without --out


def test_predict_folder_writes_annotated_images_and_json(bundle, raccoon_images, capsys, tmp_path):
    out = tmp_path / "out"
    rc = main(
        ["predict", str(bundle), str(raccoon_images[0].parent), "--out", str(out), "--threads", "1"]
    )
    assert rc == 0
    lines = _lines(capsys)[1:]
    assert [ln.split(":")[0] for ln in lines] == [str(p) for p in raccoon_images]
    records = json.loads((out / "predictions.json").read_text())
    det = Detector(bundle, threads=1)
    for photo in raccoon_images:
        drawn = cv2.imread(str(out / photo.name))
        original = cv2.imread(str(photo))
        assert drawn.shape == original.shape
        assert np.abs(drawn.astype(int) - original).max() > 100  # boxes were drawn
        want = det(photo)
        got = records[photo.name]["detections"]
        assert len(got) == len(want) > 0
        np.testing.assert_allclose([d["xyxy"] for d in got], want.xyxy, atol=0.02)


def test_predict_video(bundle, raccoon_images, capsys, tmp_path):
    frame = cv2.resize(cv2.imread(str(raccoon_images[0])), (320, 208))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 208))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.roll(frame, 8 * i, axis=1))  # the raccoon moves right
    writer.release()
    out = tmp_path / "out"
    assert main(["predict", str(bundle), str(video), "--out", str(out), "--threads", "1"]) == 0
    lines = _lines(capsys)
    assert [ln.split(":")[0] for ln in lines[1:6]] == [f"clip.avi frame {i}" for i in range(1, 6)]
    assert all("1 raccoon" in ln for ln in lines[1:6])
    assert lines[-1].startswith("clip.avi: 5 frames in")
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert cap.isOpened()
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 5 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 320
    records = json.loads((out / "predictions.json").read_text())
    xs = [records[str(i)]["detections"][0]["xyxy"][0] for i in range(1, 6)]
    assert xs[-1] > xs[0]  # the box follows the raccoon


def test_predict_errors(bundle, raccoon_images, capsys, tmp_path):
    # refused before any work (a source may also be a camera, URL or glob: checked in run)
    assert main(["predict", str(bundle), str(tmp_path / "nope.jpg")]) == 2
    assert "nope.jpg: no such file, folder, camera or stream" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "no-bundle"), str(raccoon_images[0])]) == 2
    assert "no-bundle: no such bundle directory or model file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(bundle), str(empty)]) == 2
    assert "no images" in capsys.readouterr().err
    # A folder with one broken image: the others are processed, the exit code says it failed.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(raccoon_images[0], mixed / "a.jpg")
    (mixed / "b.jpg").write_bytes(b"not a jpeg")
    assert main(["predict", str(bundle), str(mixed), "--threads", "1"]) == 1
    captured = capsys.readouterr()
    assert "b.jpg: skipped" in captured.err and "not a readable image" in captured.err
    assert "a.jpg: 1 raccoon" in captured.out
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    assert main(["predict", str(bundle), str(broken)]) == 2


# ---------------------------------------------------------------- examples/


def _example(script: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / f"{script}.py"), *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.fixture(scope="module")
def clip(raccoon_images, tmp_path_factory):
    """A 6-frame mp4v video of the fixture photos: the camera stand-in for the examples."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for photo in raccoon_images:
        writer.write(cv2.resize(cv2.imread(str(photo)), (320, 240)))
    writer.release()
    assert _frames(path) == len(raccoon_images)
    return path


def test_camera_example_runs_headless_on_a_video(bundle, clip, tmp_path):
    out = tmp_path / "rec.mp4"
    proc = _example("camera", "--bundle", str(bundle), "--source", str(clip), "--headless",
                    "--out", str(out), "--max-frames", "4", "--threads", "1")
    assert "4 frames" in proc.stdout.splitlines()[-1]
    assert _frames(out) == 4


def test_video_file_example_annotates_every_frame(bundle, clip, tmp_path):
    out = tmp_path / "annotated.mp4"
    proc = _example("video_file", "--bundle", str(bundle), "--source", str(clip), "--out",
                    str(out), "--threads", "1")
    assert proc.stdout.startswith(f"{_frames(clip)} frames -> {out}")
    assert _frames(out) == _frames(clip)


def test_benchmark_example_reports_the_split(bundle, raccoon_images):
    proc = _example("benchmark_device", "--bundle", str(bundle), "--image",
                    str(raccoon_images[0]), "--runs", "3", "--warmup", "1", "--threads", "1",
                    "--json")
    result = json.loads(proc.stdout)
    assert result["runs"] == 3
    ms = result["ms"]
    assert set(ms) == {"pre", "infer", "post", "total"}
    assert 0 < ms["infer"] < ms["total"] and result["fps"] > 0


def test_benchmark_command_runs_bundles_side_by_side(bundle, raccoon_images, tmp_path, capsys):
    out = tmp_path / "bench.json"
    copy = shutil.copytree(bundle, tmp_path / "second")
    assert main(["benchmark", str(bundle), str(copy), "--runs", "3", "--warmup", "1",
                 "--threads", "1", "--image", str(raccoon_images[0]), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "gelan-t-onnx-fp32" in printed and "second" in printed and "peak MB" in printed
    results = json.loads(out.read_text())["results"]
    assert [Path(r["bundle"]).name for r in results] == [bundle.name, "second"]
    assert "interleaved rounds" in printed
    for r in results:
        # both loaded at once, each in its own process, their 3 runs taken in 3 rounds
        assert r["runs"] == 3 and r["rounds"] == 3 and r["load_s"] > 0 and r["peak_rss_mb"] > 10
        assert r["p99_ms"] >= r["p90_ms"] >= r["ms"]["total"] * 0.5 > 0
        assert r["ms"]["infer"] < r["ms"]["total"] and r["detections"] >= 1


def test_image_folder_example_on_the_fixtures(bundle, raccoon_images, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "image_folder.py"),
            "--bundle",
            str(bundle),
            "--source",
            str(raccoon_images[0].parent),
            "--out",
            str(tmp_path),
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "detections.json").read_text())
    assert sorted(summary) == sorted(p.name for p in raccoon_images)
    assert all(len(v["detections"]) >= 1 for v in summary.values())
    assert all((tmp_path / p.name).is_file() for p in raccoon_images)


# ---------------------------------------------------------------- edge-yolo verify


def test_verify_passes_on_an_intact_bundle_and_fails_on_wrong_references(bundle, capsys, tmp_path):
    assert main(["verify", str(bundle), "--threads", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"PASS {bundle}: 2 reference inputs")
    copy = shutil.copytree(bundle, tmp_path / bundle.name)
    with np.load(copy / "reference.npz") as ref:
        refs = dict(ref)
    refs["cls_logits"] = refs["cls_logits"] + 1.0  # what a miscompiled runtime would give
    np.savez(copy / "reference.npz", **refs)
    # the changed file no longer matches its export checksum: refused before any number
    assert main(["verify", str(copy), "--threads", "1"]) == 2
    assert "reference.npz: the file differs from what was exported" in capsys.readouterr().err
    # compared anyway, the numbers say FAIL
    assert main(["verify", str(copy), "--threads", "1", "--no-check-files"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL") and "score max |diff|" in out
    (copy / "reference.npz").write_bytes(b"junk")
    assert main(["verify", str(copy), "--no-check-files"]) == 2
    assert "reference.npz: unreadable reference file" in capsys.readouterr().err


def test_a_thin_image_in_a_folder_is_skipped_and_the_rest_written(bundle, raccoon_images,
                                                                  capsys, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(raccoon_images[0], folder / "a.jpg")
    cv2.imwrite(str(folder / "strip.png"), np.full((1, 640, 3), 90, np.uint8))
    out = tmp_path / "out"
    assert main(["predict", str(bundle), str(folder), "--threads", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "strip.png: skipped (image 640x1 is too thin for a 160x160 input" in err
    records = json.loads((out / "predictions.json").read_text())
    assert records["a.jpg"]["detections"] and "too thin" in records["strip.png"]["error"]
    assert (out / "a.jpg").is_file() and not (out / "strip.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "precision"),
    [("onnx", "fp32"), ("intel", "fp32"), ("intel", "fp16"), ("intel", "int8"), ("rpi", "fp32"),
     ("rpi", "fp16"), ("rpi", "int8"), ("jetson", "fp16"), ("jetson", "int8")],
)
def test_verify_on_every_bundle_kind(tmp_path_factory, tmp_path, capsys, target, precision):
    bundle = rm.exported_bundle(rm.cache_root(tmp_path_factory), target, precision)
    capsys.readouterr()  # the converters' own chatter while exporting
    # a Jetson bundle is verified on this host by onnxruntime (TensorRT needs the board)
    backend = ["--backend", "onnxruntime"] if target == "jetson" else []
    assert main(["verify", str(bundle), "--threads", "1", *backend]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"PASS {bundle}: 2 reference inputs") and "tolerance" in out
    copy = shutil.copytree(bundle, tmp_path / bundle.name)
    with np.load(copy / "reference.npz") as ref:
        refs = dict(ref)
    refs["cls_logits"] = refs["cls_logits"] + 3.0  # what a miscompiled runtime would give
    np.savez(copy / "reference.npz", **refs)
    assert main(["verify", str(copy), "--threads", "1", "--no-check-files", *backend]) == 1
    assert capsys.readouterr().out.startswith(f"FAIL {copy}")


def test_info_describes_a_bundle(bundle, capsys):
    assert main(["info", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert f"{bundle}: gelan-t bundle for onnx, fp32 (none) on onnxruntime, 160x160 NCHW" in out
    assert "agreement with the float model" in out and "files: 3 with SHA-256 recorded" in out


@pytest.mark.slow
def test_a_jetson_bundle_without_tensorrt_says_how_to_run_it_here(tmp_path_factory, capsys):
    """The hint names the option as the reader types it: the flag on the CLI, the keyword in
    Python."""
    pytest.importorskip("onnx")
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here: the bundle would load")
    bundle = rm.exported_bundle(rm.cache_root(tmp_path_factory), "jetson", "fp16")
    with pytest.raises(BackendError, match=r"backend='onnxruntime'"):
        Detector(bundle)
    capsys.readouterr()
    image = str(rm.RACCOON / "images" / sorted(os.listdir(rm.RACCOON / "images"))[0])
    assert main(["predict", str(bundle), image]) == 2
    err = capsys.readouterr().err
    assert "--backend onnxruntime" in err and "backend=" not in err and len(err.splitlines()) == 1

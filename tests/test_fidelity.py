"""Fidelity to the float model (``edge_yolo.eval.fidelity``) and the image sources it reads
without labels (``edge_yolo.data.unlabeled``): exactly 100 for the float model itself, an
interval that narrows as images are added, and the report's gate on it."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import runtime_models as rm
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_yolo.eval.fidelity import REFERENCE_CONF, FidelityScorer, reference
from edge_yolo.eval.report import gate
from edge_yolo.eval.val import Collected

NAMES = ["a", "b", "c"]


def _float_model(n: int, seed: int = 0) -> Collected:
    """n images of detections as a float model leaves them: a few confident boxes per image
    and a tail of low-score ones (no labels: empty ground truth)."""
    rng = np.random.default_rng(seed)
    preds = []
    for _ in range(n):
        k = int(rng.integers(0, 6))
        xy = rng.uniform(0, 500, (k, 2))
        wh = rng.uniform(20, 120, (k, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        scores = rng.uniform(0.01, 0.99, k).astype(np.float32)
        preds.append((boxes, scores, rng.integers(0, len(NAMES), k)))
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    return Collected(preds, [empty] * n, [f"f{i}" for i in range(n)], [], NAMES)


def _quantized(base: Collected, jitter: float, seed: int = 1) -> Collected:
    """The same detections moved by up to ``jitter`` pixels and rescored a little: what an
    int8 model does to a float model's boxes."""
    rng = np.random.default_rng(seed)
    preds = [(b + rng.uniform(-jitter, jitter, b.shape).astype(np.float32),
              np.clip(s + rng.normal(0, 0.02, s.shape), 0, 1).astype(np.float32), c)
             for b, s, c in base.predictions]
    return Collected(preds, base.ground_truths, base.paths, [], NAMES)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 30), seed=st.integers(0, 10_000))
def test_the_float_model_against_itself_scores_exactly_100(n, seed):
    base = _float_model(n, seed)
    scorer = FidelityScorer(base)
    if scorer.reference_boxes == 0:
        assert math.isnan(scorer.score(base))  # nothing to agree on: said, not 100
        return
    fid = scorer.measure(base, resamples=20)
    assert fid.score == 100.0 and fid.ci == (0.0, 0.0) and fid.drop == 0.0


def test_reference_is_the_float_models_confident_boxes():
    base = _float_model(20)
    ref = reference(base)
    for (boxes, scores, classes), (ref_boxes, ref_classes) in zip(base.predictions, ref):
        keep = scores >= REFERENCE_CONF
        np.testing.assert_array_equal(ref_boxes, boxes[keep])
        np.testing.assert_array_equal(ref_classes, classes[keep])


def test_a_moved_model_drops_and_its_interval_narrows_as_images_are_added():
    widths = {}
    for n in (50, 800):
        base = _float_model(n)
        fid = FidelityScorer(base).measure(_quantized(base, jitter=3.0), resamples=100)
        assert fid.score < 100 and fid.ci[0] <= fid.score - 100 <= fid.ci[1]
        widths[n] = fid.ci[1] - fid.ci[0]
    # 16x the images: the interval about 4x narrower (sqrt); at least 2.5x
    assert widths[800] < widths[50] / 2.5, widths


def test_on_1000_images_a_drop_under_a_third_of_a_point_is_resolved():
    base = _float_model(1000)
    scorer = FidelityScorer(base)
    small, larger = (scorer.measure(_quantized(base, j), 100) for j in (0.5, 0.7))
    # a drop under 0.3 points whose interval excludes 0: told from the float model
    assert 0 < small.drop < 0.3 and small.ci[1] < 0
    # and a row under a point further down is told from it: the intervals do not meet
    assert small.drop < larger.drop < small.drop + 1.0 and larger.ci[1] < small.ci[0]


def test_fidelity_refuses_rows_that_saw_other_images():
    with pytest.raises(ValueError, match="same images"):
        FidelityScorer(_float_model(5)).score(_float_model(6))


def test_the_gate_says_which_measure_it_limits():
    report = {"rows": [
        {"name": "base", "delta": 0.0, "fidelity": 100.0, "backend": "torch"},
        {"name": "int8", "delta": -0.2, "fidelity": 97.0, "backend": "openvino"},
        {"name": "sim", "delta": -5.0, "fidelity": 50.0, "backend": "torch (fake-quant)"},
        {"name": "blind", "delta": 0.0, "fidelity": math.nan, "backend": "tflite"},
    ]}
    assert gate(report, 1.0, "map") == []
    assert gate(report, 1.0, "fidelity") == [
        "int8: 3.00 fidelity points > 1", "blind: nan fidelity points > 1"]
    with pytest.raises(ValueError, match="gate on one of"):
        gate(report, 1.0, "speed")


# ---------------------------------------------------------------- images without labels


def _video(path, frames: int, size=(96, 64)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), 0, np.uint8)
        cv2.putText(frame, str(i), (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        frame[:, :, 2] = i * 5  # the red channel counts frames
        writer.write(frame)
    writer.release()


def test_a_video_gives_frames_spread_evenly_over_its_length(tmp_path):
    from edge_yolo.data.unlabeled import VideoFrames, open_images

    video = tmp_path / "cam.avi"
    _video(video, 40)
    frames = open_images(video, NAMES, max_frames=5)
    assert isinstance(frames, VideoFrames) and len(frames) == 5
    assert [frames.image_path(i).rsplit("=", 1)[1] for i in range(5)] == [
        "0", "10", "20", "29", "39"]
    sample = frames[2]
    assert sample.image.shape == (64, 96, 3) and len(sample.boxes) == 0
    assert abs(int(np.median(sample.image[:, :, 2])) - 100) <= 6  # frame 20, JPEG-kept
    assert len(open_images(video, NAMES, max_frames=500)) == 40  # never more than it has


def test_open_images_reads_folders_datasets_and_refuses_the_rest(tmp_path):
    from edge_yolo.data import DatasetError
    from edge_yolo.data.unlabeled import UnlabeledImages, is_labeled, open_images

    folder = open_images(rm.RACCOON / "images", ["raccoon"])
    assert isinstance(folder, UnlabeledImages) and len(folder) == 6 and not is_labeled(folder)
    dataset = open_images(str(rm.RACCOON), ["raccoon"], split="all")
    assert is_labeled(dataset) and dataset.num_boxes() > 0
    with pytest.raises(DatasetError, match="1 classes, the model has 3"):
        open_images(str(rm.RACCOON), NAMES)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a dataset, an image"):
        open_images(tmp_path / "notes.txt", NAMES)
    with pytest.raises(DatasetError, match="does not exist"):
        open_images(tmp_path / "gone", NAMES)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(DatasetError, match="broken.mp4"):
        open_images(broken, NAMES)


def test_of_ptq_and_qat_the_one_closer_to_float_ships_and_says_why():
    from edge_yolo.eval.fidelity import Fidelity
    from edge_yolo.eval.report import Row, choose_shipped

    def row(name, quantization, fidelity, backend="onnxruntime", target="jetson"):
        r = Row(name, target, "int8", quantization, backend, name, 0.5, 0.6, {})
        r.fidelity = fidelity
        return r

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.3, 100)
    fid = lambda score, shift=0.0: Fidelity(score, (0, 0), 100, 50,  # noqa: E731
                                            list(score - 100 + noise + shift))
    rows = [row("base", "float", 100.0, "torch", "torch"), row("ptq", "ptq", 97.0),
            row("qat", "qat", 95.0), row("sim", "qat", 99.9, "torch (fake-quant)")]
    fids = [fid(100.0), fid(97.0), fid(95.0), fid(99.9)]
    (choice,) = choose_shipped(rows, fids)
    # QAT did worse than PTQ here: PTQ ships; the fake-quant simulation never competes
    assert choice["ships"] == "ptq" and choice["over"] == "qat" and choice["resolved"]
    assert rows[1].ships is True and rows[2].ships is False and rows[3].ships is None
    assert "fidelity 97.00 against 95.00" in choice["why"]
    rows[2].fidelity, fids[2] = 97.1, fid(97.1, rng.normal(0, 0.5, 100))
    (choice,) = choose_shipped(rows, fids)
    assert choice["ships"] == "qat" and not choice["resolved"] and "within noise" in choice["why"]
    assert choose_shipped(rows[:2], fids[:2]) == []  # no QAT to choose from: nothing to say


def test_calibration_takes_what_the_data_has_and_warns_only_when_more_was_asked(caplog):
    from edge_yolo.quant.calibration import CalibrationSet

    folder = str(rm.RACCOON / "images")
    with caplog.at_level("WARNING"):
        default = CalibrationSet.load(folder)  # up to 300: the six photos, nothing to say
    assert len(default) == 6 and default.provenance().requested == 6
    assert "asked for" not in caplog.text
    with caplog.at_level("WARNING"):
        asked = CalibrationSet.load(folder, 10)
    assert len(asked) == 6 and asked.provenance().requested == 10
    assert "10 images asked for" in caplog.text

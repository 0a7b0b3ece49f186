"""COCO evaluation against hand-checked cases, and the model / detector evaluation paths."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edge_yolo.data.dataset import Sample
from edge_yolo.eval import EvalResult, evaluate, evaluate_detector, evaluate_model


def gt(boxes, classes):
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64)


def pred(boxes, scores, classes):
    return (
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(scores, np.float32),
        np.asarray(classes, np.int64),
    )


NO_PRED = pred(np.zeros((0, 4)), [], [])
BOX = [10.0, 20.0, 110.0, 120.0]
BOX2 = [200.0, 50.0, 260.0, 90.0]
FAR = [400.0, 400.0, 450.0, 450.0]


def test_perfect_predictions_score_one():
    r = evaluate(
        [pred([BOX, BOX2], [0.9, 0.8], [0, 1]), pred([BOX2], [0.7], [1])],
        [gt([BOX, BOX2], [0, 1]), gt([BOX2], [1])],
        ["cat", "dog"],
    )
    assert r.map50_95 == pytest.approx(1.0) and r.map50 == pytest.approx(1.0)
    assert r.per_class == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}
    assert (r.num_images, r.num_targets) == (2, 3)
    assert r.per_class_targets == {"cat": 1, "dog": 2}


def test_iou_072_counts_at_half_of_the_thresholds():
    # Same left/top/right, bottom cut to 72% of the height: IoU exactly 0.72, a match at
    # thresholds 0.50, 0.55, 0.60, 0.65, 0.70 (5 of 10).
    shifted = [10.0, 20.0, 110.0, 92.0]
    r = evaluate([pred([shifted], [0.9], [0])], [gt([BOX], [0])], ["cat"])
    assert r.map50 == pytest.approx(1.0)
    assert r.map50_95 == pytest.approx(0.5)


def test_higher_scoring_false_positive_follows_101_point_interpolation():
    # Ranked: TP (0.9), FP (0.8), TP (0.7) over 2 GTs -> recall 0.5 @ precision 1, then
    # recall 1 @ precision 2/3. Recall thresholds 0.00..0.50 (51) read 1, 0.51..1.00 (50) 2/3.
    r = evaluate(
        [pred([BOX, FAR, BOX2], [0.9, 0.8, 0.7], [0, 0, 0])],
        [gt([BOX, BOX2], [0, 0])],
        ["cat"],
    )
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert r.map50 == pytest.approx(expected, abs=1e-6)
    assert r.map50_95 == pytest.approx(expected, abs=1e-6)


def test_missed_ground_truth_and_image_without_predictions():
    # One of two GTs found (in image 0); image 1's GT has no prediction: recall stops at 0.5.
    expected = 51 / 101
    r = evaluate([pred([BOX], [0.9], [0]), NO_PRED], [gt([BOX], [0]), gt([BOX2], [0])], ["cat"])
    assert r.map50 == pytest.approx(expected, abs=1e-6)
    assert r.map50_95 == pytest.approx(expected, abs=1e-6)


def test_false_positive_on_an_image_without_ground_truth():
    # The background image's detection outranks the true one: precision 1/2 at recall 1.
    r = evaluate(
        [pred([BOX], [0.8], [0]), pred([BOX], [0.9], [0])],
        [gt([BOX], [0]), gt(np.zeros((0, 4)), [])],
        ["cat"],
    )
    assert r.map50_95 == pytest.approx(0.5, abs=1e-6)
    assert r.num_targets == 1 and r.num_images == 2


def test_per_class_ap_and_classes_without_ground_truth():
    # cat perfect, dog missed (predicted as cat elsewhere would be a cat FP: keep it clean),
    # bird has no GT but a detection: excluded from the mean, reported as NaN.
    r = evaluate(
        [pred([BOX, FAR], [0.9, 0.5], [0, 2])],
        [gt([BOX, BOX2], [0, 1])],
        ["cat", "dog", "bird"],
    )
    assert r.per_class["cat"] == pytest.approx(1.0)
    assert r.per_class["dog"] == pytest.approx(0.0)
    assert math.isnan(r.per_class["bird"])
    assert r.map50_95 == pytest.approx(0.5) and r.map50 == pytest.approx(0.5)
    d = r.to_dict()
    assert d["per_class"]["bird"] is None
    json.dumps(d, allow_nan=False)  # strict JSON
    assert "dog" in str(r) and "mAP50-95 0.5000" in str(r)


def test_wrong_class_is_not_a_match():
    r = evaluate([pred([BOX], [0.9], [1])], [gt([BOX], [0])], ["cat", "dog"])
    assert r.map50_95 == pytest.approx(0.0)
    assert math.isnan(r.per_class["dog"])


def test_no_ground_truth_at_all_gives_nan():
    r = evaluate([NO_PRED], [gt(np.zeros((0, 4)), [])], ["cat"])
    assert math.isnan(r.map50_95) and math.isnan(r.map50)
    assert r.to_dict()["map50_95"] is None


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="1 predictions for 2"):
        evaluate([NO_PRED], [gt([BOX], [0]), gt([BOX], [0])], ["cat"])
    with pytest.raises(ValueError, match=r"image 0: boxes must be \(N, 4\)"):
        evaluate([NO_PRED], [(np.zeros((1, 5)), np.zeros(1))], ["cat"])
    with pytest.raises(ValueError, match=r"predictions of image 0: class ids must be in \[0, 1\)"):
        evaluate([pred([BOX], [0.9], [3])], [gt([BOX], [0])], ["cat"])
    with pytest.raises(ValueError, match="1 boxes but 2 scores"):
        evaluate([pred([BOX], [0.9, 0.1], [0])], [gt([BOX], [0])], ["cat"])


class ListDataset(list):
    """The dataset interface evaluation needs: ``len``, ``[i] -> Sample``, ``names``."""

    def __init__(self, samples, names):
        super().__init__(samples)
        self.names = list(names)


# Two images of different sizes whose letterbox to 128 px puts their object at the same
# network-input box (30, 36, 70, 76): 128x96 -> ratio 1, pad (0, 16); 256x192 -> ratio 0.5,
# pad (0, 16). Their ground truth in original pixels, computed by hand:
NET_BOX = (30.0, 36.0, 70.0, 76.0)
ORACLE_SET = ListDataset(
    [
        Sample(np.full((96, 128, 3), 50, np.uint8), *gt([[30, 20, 70, 60]], [1]), "a.png"),
        Sample(np.full((192, 256, 3), 90, np.uint8), *gt([[60, 40, 140, 120]], [1]), "b.png"),
    ],
    ["cat", "dog"],
)


def _oracle_model():
    """A module whose raw outputs (YOLO layout) encode one fixed box of class 1 at the P3
    anchor (52, 52) of every image: exercises letterbox, batching, decode and rescaling."""
    import torch

    class Oracle(torch.nn.Module):
        name, num_classes, strides, reg_max = "oracle", 2, (8, 16, 32), 16

        def __init__(self) -> None:
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            b, _, h, w = x.shape
            outs = []
            for s in self.strides:
                box = torch.full((b, 64, h // s, w // s), 0.0)
                cls = torch.full((b, 2, h // s, w // s), -20.0)
                outs.append([box, cls])
            box, cls = outs[0]
            ax, ay = 52.0, 52.0  # anchor of cell (6, 6) at stride 8
            x1, y1, x2, y2 = NET_BOX
            dist = [(ax - x1) / 8, (ay - y1) / 8, (x2 - ax) / 8, (y2 - ay) / 8]
            for side, d in enumerate(dist):  # two-bin distribution whose expectation is d
                lo = int(d)
                logits = torch.full((16,), -30.0)
                logits[lo], logits[lo + 1] = math.log(lo + 1 - d), math.log(d - lo + 1e-12)
                box[:, side * 16 : (side + 1) * 16, 6, 6] = logits[None]
            cls[:, 1, 6, 6] = 8.0
            return [tuple(o) for o in outs]

    return Oracle()


def test_evaluate_model_maps_boxes_back_through_the_letterbox():
    model = _oracle_model().train()
    r = evaluate_model(model, ORACLE_SET, imgsz=128, batch_size=2, progress=False)
    assert r.map50_95 == pytest.approx(1.0) and r.map50 == pytest.approx(1.0)
    assert r.num_images == 2 and r.num_targets == 2
    assert model.training  # mode restored
    # Evaluated at a size where the letterbox differs, the same outputs miss: the mapping
    # back to original pixels really depends on the letterbox of each image.
    r = evaluate_model(model, ORACLE_SET, imgsz=160, batch_size=1, progress=False)
    assert r.map50_95 < 0.5


def test_evaluate_model_runs_a_real_model():
    import torch

    from edge_yolo.models import create_model

    torch.manual_seed(0)
    model = create_model("gelan-t", num_classes=2).eval()
    r = evaluate_model(model, ORACLE_SET, imgsz=64, batch_size=2, progress=False)
    assert isinstance(r, EvalResult) and r.num_images == 2 and r.num_targets == 2
    assert 0.0 <= r.map50_95 <= r.map50 <= 1.0
    assert not model.training
    with pytest.raises(ValueError, match="predicts 3 classes but the dataset has 2"):
        evaluate_model(create_model("gelan-t", num_classes=3), ORACLE_SET, progress=False)


@pytest.mark.parametrize("imgsz", [128, 160])
def test_detector_evaluation_matches_model_evaluation(imgsz):
    # The runtime Detector on the same model must score exactly what training-time
    # evaluation scores: same letterbox, same post-processing, same evaluator.
    from edge_yolo.runtime.detector import Detector

    model = _oracle_model()
    detector = Detector.from_model(
        model, imgsz=imgsz, names=ORACLE_SET.names, threads=1, conf=0.001, iou=0.7
    )
    by_detector = evaluate_detector(detector, ORACLE_SET, progress=False)
    by_model = evaluate_model(model, ORACLE_SET, imgsz=imgsz, progress=False)
    assert by_detector.to_dict() == by_model.to_dict()
    if imgsz == 128:
        assert by_detector.map50_95 == pytest.approx(1.0)


def test_evaluate_detector_refuses_a_class_table_mismatch():
    from edge_yolo.runtime.detector import Detector

    detector = Detector.from_model(_oracle_model(), imgsz=128, names=["a", "b"], threads=1)
    three = ListDataset(list(ORACLE_SET), ["a", "b", "c"])
    with pytest.raises(ValueError, match="predicts 2 classes but the dataset has 3"):
        evaluate_detector(detector, three, progress=False)


def test_a_corrupt_validation_image_is_skipped_and_reported(tmp_path):
    import shutil

    import torch

    from edge_yolo.data import load_dataset
    from edge_yolo.models import create_model

    shutil.copytree(Path(__file__).parent / "fixtures" / "raccoon", tmp_path / "voc")
    (tmp_path / "voc" / "images" / "raccoon-10.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    dataset = load_dataset(tmp_path / "voc", split="all")
    torch.manual_seed(0)
    model = create_model("gelan-t", num_classes=len(dataset.names)).eval()
    r = evaluate_model(model, dataset, imgsz=64, batch_size=4, progress=False)
    assert r.num_images == len(dataset) - 1
    assert "raccoon-10.jpg" in str(dataset.report.to_dict())


def test_an_image_too_thin_for_the_input_is_skipped_and_counted():
    model = _oracle_model()
    thin = Sample(np.full((1, 640, 3), 50, np.uint8), *gt([[0, 0, 10, 1]], [1]), "strip.png")
    dataset = ListDataset([*ORACLE_SET, thin], ORACLE_SET.names)
    r = evaluate_model(model, dataset, imgsz=128, batch_size=4, progress=False)
    assert r.num_images == 2 and r.map50_95 == pytest.approx(1.0)
    assert len(r.skipped) == 1 and r.skipped[0].startswith("strip.png: image 640x1 is too thin")
    assert "1 images skipped" in str(r) and r.to_dict()["skipped"] == r.skipped

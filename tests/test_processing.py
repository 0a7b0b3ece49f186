"""numpy pre/post-processing (edge_yolo.runtime.processing): letterbox geometry, decode held to
the torch decode on a real model's outputs, anchor pruning, class-aware NMS, image checks."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_yolo.models import create_model
from edge_yolo.models.decode import decode_outputs, flatten_outputs
from edge_yolo.runtime import processing
from edge_yolo.runtime.processing import ImageError, LetterboxInfo

torch.set_num_threads(1)


# ---------------------------------------------------------------- letterbox


@pytest.mark.parametrize(
    ("hw", "size", "ratio", "pad"),
    [
        ((480, 640), 320, 0.5, (0.0, 40.0)),  # landscape: pad top/bottom
        ((640, 480), 320, 0.5, (40.0, 0.0)),  # portrait: pad left/right
        ((100, 100), 160, 1.6, (0.0, 0.0)),  # square, scaled up
        ((417, 650), 160, 160 / 650, (0.0, 28.0)),  # raccoon-1: 103 rows, 57 px of pad split 28/29
    ],
)
def test_letterbox_ratio_and_padding(hw, size, ratio, pad):
    h, w = hw
    image = np.full((h, w, 3), 200, np.uint8)
    boxed, info = processing.letterbox(image, size)
    assert boxed.shape == (size, size, 3)
    assert info.ratio == pytest.approx(ratio)
    assert info.pad == pytest.approx(pad)
    assert info.orig_shape == (h, w) and info.new_shape == (size, size)
    # The image sits where ratio/pad say; the border is the YOLO pad value 114.
    left, top = int(info.pad[0]), int(info.pad[1])
    rw, rh = round(w * info.ratio), round(h * info.ratio)
    assert (boxed[top : top + rh, left : left + rw] == 200).all()
    border = np.ones((size, size), bool)
    border[top : top + rh, left : left + rw] = False
    assert (boxed[border] == processing.PAD_VALUE).all()


def test_letterbox_rectangular_target_and_boxes_map_back_exactly():
    image = np.zeros((300, 500, 3), np.uint8)
    cv2.rectangle(image, (100, 50), (199, 149), (255, 255, 255), -1)
    boxed, info = processing.letterbox(image, (256, 320))
    assert boxed.shape == (256, 320, 3)
    orig = np.array([[100, 50, 200, 150], [0, 0, 500, 300]], np.float32)
    net = orig * info.ratio + np.array(info.pad * 2, np.float32)
    # The white square lands where the forward mapping puts it (to a resampled pixel).
    ys, xs = np.nonzero(boxed[..., 0] > 128)
    assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == pytest.approx(net[0], abs=1.0)
    np.testing.assert_allclose(processing.scale_boxes(net, info), orig, atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 1400),
    w=st.integers(1, 1400),
    channels=st.sampled_from([None, 1, 3, 4]),
    size=st.sampled_from([32, 96, 160, (128, 224), 320]),
    scaleup=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_letterbox_into_a_batch_slot_is_letterbox(h, w, channels, size, scaleup, seed):
    """The Detector letterboxes each image straight into its slot of the batch (a strided
    view of a larger buffer, full of stale pixels): the slot must end up exactly what
    letterbox() returns, borders included, and nothing outside the slot may change."""
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels is None else (h, w, channels)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    expected, info = processing.letterbox(image, size, scaleup=scaleup, color=7)
    nh, nw = expected.shape[:2]
    batch = rng.integers(0, 256, (3, nh + 2, nw + 5, *shape[2:]), dtype=np.uint8)
    before = batch.copy()
    slot = batch[1, 1 : 1 + nh, 2 : 2 + nw]
    assert processing.letterbox_into(image, slot, scaleup=scaleup, color=7) == info
    np.testing.assert_array_equal(slot, expected)
    outside = np.ones(batch.shape[:3], bool)
    outside[1, 1 : 1 + nh, 2 : 2 + nw] = False
    np.testing.assert_array_equal(batch[outside], before[outside])
    # the image sits where ratio and pad say, the rest is the pad colour
    left, top = int(info.pad[0]), int(info.pad[1])
    rw, rh = max(1, round(w * info.ratio)), max(1, round(h * info.ratio))
    border = np.ones((nh, nw), bool)
    border[top : top + rh, left : left + rw] = False
    assert (expected[border] == 7).all()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 20),
    ratio=st.floats(0.05, 4.0),
    pad=st.tuples(st.integers(0, 200), st.integers(0, 200)),
    seed=st.integers(0, 2**16),
)
def test_scale_boxes_is_the_inverse_letterbox_map_clipped(n, ratio, pad, seed):
    rng = np.random.default_rng(seed)
    boxes = (rng.random((n, 4)) * 900 - 100).astype(np.float32)
    info = LetterboxInfo(ratio, (float(pad[0]), float(pad[1])), (480, 640), (640, 640))
    offset = np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)
    ref = ((boxes - offset) / np.float32(ratio)).clip(0, [640, 480, 640, 480])
    out = processing.scale_boxes(boxes, info)
    assert out.dtype == np.float32 and out.shape == (n, 4)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-4)


def test_scale_boxes_clips_to_the_image():
    info = LetterboxInfo(ratio=0.5, pad=(0.0, 40.0), orig_shape=(480, 640), new_shape=(320, 320))
    out = processing.scale_boxes(np.array([[-10, 20, 400, 300]], np.float32), info)
    np.testing.assert_allclose(out, [[0, 0, 640, 480]])


# ---------------------------------------------------------------- decode vs torch


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics and head weights, so raw outputs vary per anchor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
        for seq in (*model.head.box, *model.head.cls):
            last = seq[-1]
            last.weight.copy_(torch.randn(last.weight.shape, generator=g) * 0.5)
            last.bias.copy_(torch.randn(last.bias.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def raw_outputs(raccoon_images):
    """gelan-t (randomised) raw outputs on a real photo at 160 px."""
    model = _randomize(create_model("gelan-t", num_classes=3))
    image = processing.read_image(str(raccoon_images[0]))
    blob, info = processing.preprocess(image, 160)
    with torch.no_grad():
        outputs = model(torch.from_numpy(blob))
    return model, outputs, info


def test_numpy_decode_matches_torch_decode_on_a_real_model(raw_outputs):
    model, outputs, info = raw_outputs
    boxes_t, scores_t = decode_outputs(outputs, model.strides, model.reg_max)
    box, cls = (t[0].numpy() for t in flatten_outputs(outputs))
    best_t = scores_t[0].max(-1).values
    # a threshold that keeps a few hundred anchors, halfway between two scores so that no
    # anchor sits on it (torch compares scores, numpy logits: rounding may differ there)
    ranked = best_t.flatten().sort().values
    k = int(0.7 * len(ranked))
    conf = float((ranked[k] + ranked[k + 1]) / 2)
    boxes, scores, class_ids = processing.decode(box, cls, info.new_shape, conf=conf)
    keep_t = (best_t > conf).nonzero().flatten()
    assert len(keep_t) > 100  # the comparison covers many anchors, not a handful
    assert len(boxes) == len(keep_t)
    np.testing.assert_allclose(boxes, boxes_t[0, keep_t].numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scores, best_t[keep_t].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(class_ids, scores_t[0, keep_t].argmax(-1).numpy())
    assert np.ptp(boxes[:, 2] - boxes[:, 0]) > 1.0  # box sizes really vary


def test_decode_refuses_outputs_of_another_input_size(raw_outputs):
    _, outputs, _ = raw_outputs
    box, cls = (t[0].numpy() for t in flatten_outputs(outputs))
    with pytest.raises(ValueError, match="do not fit a 320x320 input"):
        processing.decode(box, cls, (320, 320))


def test_anchor_pruning_keeps_exactly_the_anchors_above_conf():
    rng = np.random.default_rng(0)
    a, nc, conf = 2100, 5, 0.3
    cls = rng.normal(-2.0, 1.5, (nc, a)).astype(np.float32)
    threshold = math.log(conf / (1 - conf))
    cls[np.abs(cls - threshold) < 1e-4] += 1e-3  # no logit sits on the threshold itself
    box = rng.normal(0, 1, (64, a)).astype(np.float32)
    _, scores, class_ids = processing.decode(box, cls, (320, 320), conf=conf)
    best = 1 / (1 + np.exp(-cls.astype(np.float64).max(0)))
    expected = np.flatnonzero(best > conf)
    assert 0 < len(expected) < a
    np.testing.assert_allclose(np.sort(scores), np.sort(best[expected]), rtol=1e-6)
    np.testing.assert_array_equal(class_ids, cls[:, expected].argmax(0))
    assert scores.min() > conf


def test_dfl_expectation_of_a_peaked_distribution_is_its_bin():
    logits = np.full((64, 3), -20.0, np.float32)
    for k, bins in enumerate([(0, 5, 15, 3), (7, 7, 7, 7), (1, 2, 3, 4)]):
        for side, b in enumerate(bins):
            logits[side * 16 + b, k] = 20.0
    np.testing.assert_allclose(
        processing.dfl_decode(logits), [[0, 5, 15, 3], [7] * 4, [1, 2, 3, 4]], atol=1e-4
    )


# ---------------------------------------------------------------- NMS and postprocess


def test_nms_is_class_aware():
    boxes = np.array(
        [[10, 10, 110, 110], [12, 12, 112, 112], [14, 10, 112, 110], [300, 300, 350, 350]],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    same = processing.nms(boxes, scores, np.array([0, 0, 0, 0]), iou=0.45)
    assert same.tolist() == [0, 3]
    differ = processing.nms(boxes, scores, np.array([0, 1, 0, 2]), iou=0.45)
    assert differ.tolist() == [0, 1, 3]  # the class-1 box overlaps the class-0 one and survives
    assert processing.nms(boxes, scores, np.array([0, 1, 2, 3]), iou=0.45, max_det=2).tolist() == [
        0,
        1,
    ]
    assert processing.nms(boxes[:0], scores[:0], np.zeros(0, np.int64)).shape == (0,)


def _peaked_outputs(anchor: int, ltrb: tuple[int, int, int, int], a: int, nc: int, cls_id: int):
    box = np.full((64, a), -20.0, np.float32)
    cls = np.full((nc, a), -10.0, np.float32)
    for side, b in enumerate(ltrb):
        box[side * 16 + b, anchor] = 20.0
    cls[cls_id, anchor] = 3.0
    return box, cls


def test_postprocess_returns_boxes_in_original_image_pixels():
    image = np.zeros((417, 650, 3), np.uint8)
    _, info = processing.letterbox(image, 160)
    points, strides = processing.make_anchors((160, 160))
    # Level P3 (stride 8) cell (y=10, x=12): anchor point (100, 84), LTRB 2, 3, 4, 1 strides.
    anchor = 10 * 20 + 12
    assert tuple(points[anchor]) == (100.0, 84.0) and strides[anchor] == 8
    box, cls = _peaked_outputs(anchor, (2, 3, 4, 1), len(points), nc=4, cls_id=2)
    xyxy, scores, class_ids = processing.postprocess(box, cls, info, conf=0.25)
    net = np.array([100 - 16, 84 - 24, 100 + 32, 84 + 8], np.float32)
    expected = (net - np.array(info.pad * 2, np.float32)) / info.ratio
    np.testing.assert_allclose(xyxy, expected[None], atol=1e-2)
    assert scores.dtype == np.float32 and scores[0] == pytest.approx(1 / (1 + math.exp(-3.0)))
    assert class_ids.dtype == np.int64 and class_ids.tolist() == [2]


def test_postprocess_with_nothing_above_conf_is_empty():
    a = processing.make_anchors((64, 64))[0].shape[0]
    info = processing.letterbox(np.zeros((64, 64, 3), np.uint8), 64)[1]
    xyxy, scores, ids = processing.postprocess(
        np.zeros((64, a), np.float32), np.full((2, a), -9.0, np.float32), info
    )
    assert xyxy.shape == (0, 4) and scores.shape == (0,) and ids.shape == (0,)


# ---------------------------------------------------------------- images


def test_to_bgr_converts_gray_and_bgra():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for img in (gray, gray[..., None]):
        out = processing.to_bgr(img)
        assert out.shape == (3, 4, 3) and (out == gray[..., None]).all()
    bgra = np.dstack([np.full((2, 2), v, np.uint8) for v in (1, 2, 3, 4)])
    assert processing.to_bgr(bgra).tolist() == [[[1, 2, 3]] * 2] * 2


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 3), np.float32), "dtype float32"),
        (np.zeros((4, 4, 2), np.uint8), "got 2"),
        (np.zeros((2, 4, 4, 3), np.uint8), r"shape \(2, 4, 4, 3\)"),
        ([[0, 1], [2, 3]], "got list"),
        (None, "got NoneType"),
    ],
)
def test_to_bgr_refuses_what_is_not_an_image(image, message):
    with pytest.raises(ImageError, match=message):
        processing.to_bgr(image)


def test_read_image_names_the_file(tmp_path):
    with pytest.raises(ImageError, match="missing.jpg: no such image file"):
        processing.read_image(str(tmp_path / "missing.jpg"))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ImageError, match="notes.txt: not a readable image"):
        processing.read_image(str(text))
    png = tmp_path / "deep.png"
    cv2.imwrite(str(png), np.full((5, 6), 0x8000, np.uint16))
    assert processing.read_image(str(png)).shape == (5, 6, 3)


def test_preprocess_blob_layout_and_range(raccoon_images):
    image = processing.read_image(str(raccoon_images[0]))
    nchw, info = processing.preprocess(image, 96)
    nhwc, _ = processing.preprocess(image, 96, layout="NHWC")
    assert nchw.shape == (1, 3, 96, 96) and nchw.dtype == np.float32
    assert nchw.min() >= 0.0 and nchw.max() <= 1.0
    np.testing.assert_array_equal(nchw[0].transpose(1, 2, 0), nhwc[0])
    boxed, _ = processing.letterbox(image, 96)
    np.testing.assert_allclose(nchw[0, 0], boxed[..., 2] / 255.0, atol=1e-7)  # channel 0 is R
    bgr, _ = processing.preprocess(image, 96, color="BGR")
    np.testing.assert_array_equal(bgr[0, 0], nchw[0, 2])


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    swap=st.booleans(),
    scale=st.sampled_from([1 / 255, 1.0, 0.017]),
    mean=st.sampled_from([(0.0, 0.0, 0.0), (123.675, 116.28, 103.53), (0.0, 128.0, 0.0)]),
    seed=st.integers(0, 2**16),
)
def test_blob_is_what_opencv_computes_to_the_bit(batch, h, w, swap, scale, mean, seed):
    """to_blob replaced cv2.dnn.blobFromImages for speed; the values must not move."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)]
    got = processing.to_blob(images, color="RGB" if swap else "BGR", scale=scale, mean=mean)
    ref = cv2.dnn.blobFromImages(images, scalefactor=scale, mean=mean, swapRB=swap)
    assert got.dtype == np.float32 and got.shape == (batch, 3, h, w)
    np.testing.assert_array_equal(got, ref)
    nhwc = processing.to_blob(images, layout="NHWC", color="RGB" if swap else "BGR",
                              scale=scale, mean=mean)
    np.testing.assert_array_equal(nhwc, ref.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("hw", [(720, 1280), (1080, 1920), (750, 1000), (1081, 1921), (4000, 30)])
def test_strong_reductions_stay_area_averages(hw):
    """letterbox reaches INTER_AREA's result by exact halvings (faster); same size, same
    geometry, and within rounding of the one-step area resize."""
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), (0, 0), 3)
    boxed, info = processing.letterbox(image, 320)
    assert info.ratio < 1 / 3 and boxed.shape == (320, 320, 3)
    rw, rh = max(1, round(hw[1] * info.ratio)), max(1, round(hw[0] * info.ratio))
    direct = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA).astype(np.float32)
    left, top = int(info.pad[0]), int(info.pad[1])
    got = boxed[top:top + rh, left:left + rw].astype(np.float32)
    assert got.shape == direct.shape
    assert np.abs(got - direct).mean() < 1.0 and np.abs(got - direct).max() <= 8


def test_sigmoid_of_very_negative_logits_is_zero_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = processing.sigmoid(np.array([-1000.0, -90.0, 0.0, 90.0], np.float32))
    np.testing.assert_array_equal(out, np.array([0.0, 0.0, 0.5, 1.0], np.float32))


def test_quantize_dequantize_round_trip():
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    q = processing.quantize(x, 1 / 127, 0, np.int8)
    assert q.dtype == np.int8 and q.min() == -127 and q.max() == 127
    np.testing.assert_allclose(processing.dequantize(q, 1 / 127, 0), x, atol=0.5 / 127 + 1e-7)
    assert processing.quantize(np.array([9.0]), 0.01, 0, np.int8)[0] == 127  # saturates


def _reference_nms(boxes, scores, class_ids, iou, max_det):
    """Textbook greedy class-aware NMS, one box at a time (ties: lower index first)."""
    order = sorted(range(len(boxes)), key=lambda i: (-float(np.float32(scores[i])), i))
    kept: list[int] = []
    for i in order:
        ok = True
        for j in kept:
            if class_ids[j] != class_ids[i]:
                continue
            x1, y1 = max(boxes[i][0], boxes[j][0]), max(boxes[i][1], boxes[j][1])
            x2, y2 = min(boxes[i][2], boxes[j][2]), min(boxes[i][3], boxes[j][3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            area = ((boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])
                    + (boxes[j][2] - boxes[j][0]) * (boxes[j][3] - boxes[j][1]) - inter)
            if area > 0 and inter / area > iou:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept[:max_det]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(4, 40),
                       st.integers(4, 40), st.integers(1, 1000), st.integers(0, 3)),
             min_size=1, max_size=60),
    st.sampled_from([0.3, 0.45, 0.7]),
    st.integers(1, 80),
)
def test_nms_matches_textbook_greedy_class_aware_nms(rows, iou, max_det):
    arr = np.array(rows, dtype=np.float32)
    boxes = np.stack([arr[:, 0], arr[:, 1], arr[:, 0] + arr[:, 2], arr[:, 1] + arr[:, 3]], 1)
    scores = arr[:, 4] / 1000.0
    class_ids = arr[:, 5].astype(np.int64)
    got = processing.nms(boxes, scores, class_ids, iou=iou, max_det=max_det).tolist()
    assert got == _reference_nms(boxes, scores, class_ids, iou, max_det)

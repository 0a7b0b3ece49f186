"""Property-based fuzzing of the Detector: any input gives boxes inside the image or a
documented error, on every CPU backend (Hypothesis draws the inputs).

The default run draws a bounded number of inputs per backend; ``-m slow`` runs thousands
and prints the outcome counts.
"""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest
import runtime_models as rm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_yolo import Detector
from edge_yolo.runtime import ImageError

BACKENDS = [
    ("onnx", "fp32"),
    ("intel", "fp32"),
    pytest.param("rpi", "int8", marks=pytest.mark.slow),
    ("torch", "fp32"),
]
SLOW_EXAMPLES = int(os.environ.get("EDGE_YOLO_FUZZ_EXAMPLES", "2000"))
DTYPES = [np.uint8] * 6 + [np.float32, np.float64, np.int16, np.uint16, np.bool_, np.int64]


@st.composite
def image_inputs(draw):
    """Arrays of any shape, dtype and channel count (thin strips and empty ones included),
    NaN/inf, non-contiguous views; or things that are not images at all."""
    kind = draw(st.sampled_from(["array"] * 8 + ["path", "object"]))
    if kind == "path":
        return draw(st.sampled_from(["missing", "directory", "text", "empty", "truncated-jpeg"]))
    if kind == "object":
        return draw(st.sampled_from([None, 3, "", [[1, 2], [3, 4]], b"\xff\xd8"]))
    side = st.one_of(st.integers(0, 4), st.integers(5, 700), st.sampled_from([1, 2, 1280, 2000]))
    h, w = draw(side), draw(side)
    channels = draw(st.sampled_from([None, 1, 2, 3, 3, 3, 4, 5]))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (h, w) if channels is None else (h, w, channels)
    if np.issubdtype(dtype, np.floating):
        image = rng.normal(0.5, 1.0, shape).astype(dtype)
        if image.size and draw(st.booleans()):
            image.flat[rng.integers(image.size, size=3)] = draw(
                st.sampled_from([np.nan, np.inf, -np.inf])
            )
    elif dtype is np.bool_:
        image = rng.random(shape) > 0.5
    else:
        info = np.iinfo(dtype)
        image = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    view = draw(st.sampled_from(["plain", "strided", "transposed", "reversed"]))
    if view == "strided" and image.ndim >= 2:
        image = image[::2, ::3]
    elif view == "transposed" and image.ndim >= 2:
        image = np.swapaxes(image, 0, 1)
    elif view == "reversed" and image.ndim == 3:
        image = image[:, :, ::-1]
    return image


def _materialise(value, tmp_path):
    if not isinstance(value, str) or value == "":
        return value
    path = tmp_path / f"input-{value}"
    if value == "directory":
        path.mkdir(exist_ok=True)
    elif value == "text":
        path.write_text("not an image\n")
    elif value == "empty":
        path.write_bytes(b"")
    elif value == "truncated-jpeg":
        path.write_bytes(bytes.fromhex("ffd8ffe000104a46494600010100000100010000") * 40)
    return str(path)


def _check(detector: Detector, value, tmp_path, outcomes: collections.Counter) -> None:
    value = _materialise(value, tmp_path)
    try:
        dets = detector(value)
    except ImageError as e:
        assert str(e) and "\n" not in str(e)
        outcomes["refused"] += 1
        return
    h, w = dets.image_shape
    assert h > 0 and w > 0
    boxes = dets.xyxy
    assert np.isfinite(boxes).all() and np.isfinite(dets.scores).all()
    assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= w).all()
    assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= h).all()
    assert ((dets.scores >= 0) & (dets.scores <= 1)).all()
    outcomes["detected" if len(dets) else "empty"] += 1


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
    root = rm.cache_root(tmp_path_factory)
    cache: dict[tuple[str, str], Detector] = {}

    def get(target: str, precision: str) -> Detector:
        if (target, precision) not in cache:
            path = (rm.fitted_checkpoint(root) if target == "torch"
                    else rm.exported_bundle(root, target, precision))
            cache[target, precision] = Detector(path, threads=1, conf=0.05)
        return cache[target, precision]

    return get


def _run(detector, tmp_path, examples: int) -> collections.Counter:
    outcomes: collections.Counter = collections.Counter()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(image_inputs())
    def fuzz(value):
        _check(detector, value, tmp_path, outcomes)

    fuzz()
    return outcomes


@pytest.mark.parametrize(("target", "precision"), BACKENDS)
def test_fuzzed_inputs_give_boxes_in_the_image_or_a_clear_error(detectors, target, precision,
                                                                 tmp_path):
    outcomes = _run(detectors(target, precision), tmp_path, 40)
    assert sum(outcomes.values()) >= 40 and outcomes["refused"] and outcomes["empty"] + \
        outcomes["detected"]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "precision"), BACKENDS)
def test_thousands_of_fuzzed_inputs(detectors, target, precision, tmp_path, capsys):
    outcomes = _run(detectors(target, precision), tmp_path, SLOW_EXAMPLES)
    with capsys.disabled():
        print(f"\nfuzz {target}/{precision}: {sum(outcomes.values())} inputs, "
              f"{dict(outcomes)}, 0 crashes")
    assert sum(outcomes.values()) >= SLOW_EXAMPLES

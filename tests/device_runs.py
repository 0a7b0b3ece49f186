"""Runs of the Detector in another Python (an old runtime, an emulated board) and the rules
by which their results must agree with the host's ai-edge-litert."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import runtime_models as rm
from parity import assert_agree

from edge_yolo import Detector
from edge_yolo.runtime import BundleMeta, Detections

# Runs inside the other environment: detections on the photos plus the raw outputs on the bundle's
# reference inputs, written as JSON. Also proves the fallback path imported nothing heavy.
DEVICE_SCRIPT = """
import json, os, shutil, sys, tempfile
import numpy as np
from edge_yolo import Detector

out_path, photos, bundles = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
import platform
result = {"numpy": np.__version__, "machine": platform.machine(), "bundles": {}}
for bundle in bundles:
    det = Detector(bundle, threads=1, conf=0.25)
    refs = np.load(bundle + "/reference.npz")
    box, cls = det.backend.infer(refs["images"])
    # The lone model file, away from its edge_yolo.json: metadata read from inside the file.
    lone = os.path.join(tempfile.mkdtemp(), det.meta.model_file)
    shutil.copy(os.path.join(bundle, det.meta.model_file), lone)
    lone_box, _ = Detector(lone, threads=1).backend.infer(refs["images"])
    result["bundles"][bundle] = {
        "runtime": det.backend.runtime,
        "detections": [
            {"xyxy": d.xyxy.tolist(), "scores": d.scores.tolist(),
             "class_ids": d.class_ids.tolist()}
            for d in map(det, photos)
        ],
        "box_dist": box.tolist(),
        "lone_file_same": bool(np.array_equal(lone_box, box)),
        "cls_logits": cls.tolist(),
    }
result["loaded"] = sorted(
    m for m in ("torch", "ai_edge_litert", "tflite_runtime") if m in sys.modules
)
with open(out_path, "w") as f:
    json.dump(result, f)
"""




def run_device_script(python: list[str], env: dict | None, bundles: list[Path], work: Path,
                      timeout: int = 900) -> dict:
    """Run :data:`DEVICE_SCRIPT` with ``python`` (a command prefix) on the fixture photos and
    ``bundles``; returns its JSON result."""
    script, out = work / "run.py", work / "result.json"
    script.write_text(DEVICE_SCRIPT)
    photos = ",".join(str(p) for p in rm.raccoon_photos())
    proc = subprocess.run(
        [*python, str(script), str(out), photos, *(str(b) for b in bundles)],
        cwd=work,  # not the repo root: edge_yolo must come from the environment's install
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def assert_matches_host(run: dict, bundle: Path) -> None:
    """The device run of ``bundle`` agrees with ai-edge-litert on this host: raw outputs on the
    reference inputs (float to 1e-4, int8 to a few quantization steps), and detections on the
    photos by the parity rules (:mod:`parity`): the photos are letterboxed by that platform's
    OpenCV, whose resize rounds differently on ARM (score differences of 7e-4 in fp32, 0.1 on
    one int8 box)."""
    run = run["bundles"][str(bundle)]
    meta = BundleMeta.read(bundle)
    refs = np.load(bundle / "reference.npz")
    detector = Detector(bundle, threads=1, conf=0.25)
    assert detector.backend.runtime == "ai_edge_litert"
    box, cls = detector.backend.infer(refs["images"])
    old_box, old_cls = np.asarray(run["box_dist"]), np.asarray(run["cls_logits"])
    if meta.precision != "int8":
        np.testing.assert_allclose(old_box, box, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(old_cls, cls, rtol=1e-5, atol=1e-4)
    else:
        # Int8 kernels of two runtimes (or two CPUs) may requantize differently, and the
        # differences accumulate over ~180 layers (measured on this model between
        # tflite-runtime 2.14 and ai-edge-litert: mean < 1 step, max 9 steps), so they agree
        # to a few quantization steps.
        for got, want, name in ((old_box, box, "box_dist"), (old_cls, cls, "cls_logits")):
            steps = np.abs(got - want) / meta.output(name).scale
            assert steps.mean() < 1.5 and steps.max() <= 16, (name, steps.mean(), steps.max())
    photos = rm.raccoon_photos()
    assert len(run["detections"]) == len(photos)
    theirs = [
        Detections(np.asarray(d["xyxy"], np.float32).reshape(-1, 4),
                   np.asarray(d["scores"], np.float32), np.asarray(d["class_ids"], np.int64),
                   detector.names, (1, 1))
        for d in run["detections"]
    ]
    ours = [detector(str(photo)) for photo in photos]
    assert_agree(ours, theirs, meta.precision, f"{bundle.name} elsewhere vs this host")

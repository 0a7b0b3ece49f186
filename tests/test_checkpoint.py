"""Self-describing checkpoints: round trip, and refusal of anything else with a clear message."""

from __future__ import annotations

import pickle

import pytest
import torch

from edge_yolo.models import (
    CheckpointError,
    create_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from edge_yolo.models.checkpoint import tensors_sha256

torch.set_num_threads(1)


def test_round_trip_describes_itself(tmp_path):
    model = create_model("yolov9-t", num_classes=2)
    path = save_checkpoint(tmp_path / "m.pt", model, names=["cat", "dog"], imgsz=320)
    ckpt = load_checkpoint(path)
    assert ckpt["model"] == "yolov9-t" and ckpt["num_classes"] == 2
    assert ckpt["names"] == ["cat", "dog"] and ckpt["imgsz"] == 320

    loaded, _ = load_model(path)
    x = torch.rand(1, 3, 64, 64)
    model.eval(), loaded.eval()
    with torch.no_grad():
        for (b1, c1), (b2, c2) in zip(model(x), loaded(x)):
            assert torch.equal(b1, b2) and torch.equal(c1, c2)
    assert loaded.aux is not None


def test_fused_checkpoint_loads_fused(tmp_path):
    model = create_model("gelan-t", num_classes=1).fuse()
    path = save_checkpoint(tmp_path / "fused.pt", model)
    loaded, ckpt = load_model(path)
    assert ckpt["fused"] and not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())


def test_refuses_wrong_model_and_class_count(tmp_path):
    path = save_checkpoint(tmp_path / "t.pt", create_model("gelan-t", num_classes=2))
    with pytest.raises(CheckpointError, match=r"t\.pt.*'gelan-t', expected 'gelan-s'"):
        load_checkpoint(path, model="gelan-s")
    with pytest.raises(CheckpointError, match=r"t\.pt.*2 classes, expected 80"):
        load_checkpoint(path, num_classes=80)
    # The inference network of yolov9-t is gelan-t: either name accepts the other's file.
    assert load_checkpoint(path, model="yolov9-t")["model"] == "gelan-t"


def test_refuses_files_that_are_not_checkpoints(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError, match="missing.pt: no such checkpoint"):
        load_checkpoint(missing)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file at all")
    with pytest.raises(CheckpointError, match="garbage.pt: not a valid edge-yolo checkpoint"):
        load_checkpoint(garbage)

    plain = tmp_path / "plain.pt"
    torch.save(create_model("gelan-t", num_classes=1).state_dict(), plain)
    with pytest.raises(CheckpointError, match="plain.pt: not an edge-yolo checkpoint"):
        load_checkpoint(plain)

    truncated = tmp_path / "truncated.pt"
    good = save_checkpoint(tmp_path / "good.pt", create_model("gelan-t", num_classes=1))
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_never_executes_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save(
        {"format": "edge-yolo-checkpoint", "payload": _Payload()}, path, pickle_module=pickle
    )
    with pytest.raises(CheckpointError, match="evil.pt: not a valid edge-yolo checkpoint"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    ckpt_model = create_model("gelan-t", num_classes=3)
    path = save_checkpoint(tmp_path / "m.pt", ckpt_model)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["head.cls.0.2.weight"] = torch.zeros(5, 80, 1, 1)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="m.pt: the checkpoint's tensors do not match"):
        load_model(path)
    ckpt["tensors_sha256"] = tensors_sha256(ckpt["state_dict"])  # consistent, but wrong shapes
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="m.pt: weights do not fit gelan-t"):
        load_model(path)


def test_flipped_bytes_in_the_tensors_are_refused(tmp_path):
    """torch.load checks nothing in tensor data: a byte flipped inside the weights of the zip
    loads silently unless the checkpoint carries its own checksum."""
    import zipfile

    path = save_checkpoint(tmp_path / "m.pt", create_model("gelan-t", num_classes=1))
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(path.read_bytes())
    data[offset + info.file_size // 2] ^= 0x40  # stored uncompressed: a weight's byte
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="m.pt: the checkpoint's tensors do not match"):
        load_checkpoint(path)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", create_model("gelan-t", num_classes=1))
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, create_model("gelan-t", num_classes=1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind

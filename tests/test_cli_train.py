"""``edge-yolo train`` and ``edge-yolo val`` end to end on tiny synthetic data, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edge_yolo.cli import main

TINY = [
    "--data",
    "synthetic:8",
    "--imgsz",
    "64",
    "--batch",
    "4",
    "--workers",
    "0",
    "--threads",
    "1",
    "--no-progress",
    "--no-plots",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--model", "yolov9-t", "--epochs", "1", "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_checkpoints_and_reports_map(trained_run: Path) -> None:
    assert (trained_run / "last.pt").is_file() and (trained_run / "best.pt").is_file()
    ckpt = torch.load(trained_run / "best.pt", weights_only=True)
    assert ckpt["model"] == "yolov9-t" and ckpt["names"][0] == "circle"
    # best.pt is what ships: no optimizer state; last.pt keeps it for --resume
    assert "train" not in ckpt and ckpt["epoch"] == 1 and "train_config" in ckpt
    assert "optimizer" in torch.load(trained_run / "last.pt", weights_only=True)["train"]
    assert (trained_run / "best.pt").stat().st_size < 0.6 * (trained_run / "last.pt").stat().st_size
    final = json.loads((trained_run / "results.json").read_text())["final"]
    assert final["model"] == "gelan-t"  # scored without the PGI branch


def test_val_prints_map_and_per_class_ap(trained_run: Path, tmp_path: Path, capsys) -> None:
    report = tmp_path / "val.json"
    code = main(
        [
            "val",
            "--weights",
            str(trained_run / "best.pt"),
            "--data",
            "synthetic:8",
            "--batch",
            "2",
            "--no-progress",
            "--json",
            str(report),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "gelan-t (PGI branch dropped, fused), 64 px" in out  # imgsz from the checkpoint
    assert "mAP50-95" in out and "mAP50" in out
    assert "circle" in out and "AP50-95" in out  # per-class table
    metrics = json.loads(report.read_text())
    assert 0.0 <= metrics["map50_95"] <= metrics["map50"] <= 1.0
    assert metrics["trained_as"] == "yolov9-t"


def test_val_refuses_a_dataset_with_other_classes(trained_run: Path, capsys) -> None:
    raccoons = Path(__file__).parent / "fixtures" / "raccoon"  # VOC, one class
    code = main(
        ["val", "--weights", str(trained_run / "best.pt"), "--data", str(raccoons), "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "model predicts 5 classes" in err and "has 1 (raccoon)" in err


def test_train_refuses_to_overwrite_a_run(trained_run: Path, capsys) -> None:
    assert main(["train", "--epochs", "1", "--out", str(trained_run), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_keeps_the_run_config(trained_run: Path, capsys) -> None:
    assert main(["train", "--resume", str(trained_run), "--model", "gelan-s"]) == 2
    assert "--model cannot change on --resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(trained_run / "last.pt"), "--no-progress"]) == 2
    assert "already finished 1 of 1 epochs" in capsys.readouterr().err


def test_bad_recipe_is_a_clear_error(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochz: 3\n")
    assert main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "r.yaml" in err and "'epochz'" in err


def test_missing_dataset_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code = main(["train", "--data", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")])
    assert code == 2 and "nope.yaml" in capsys.readouterr().err


def test_a_failed_evaluation_still_saves_the_epoch(tmp_path, capsys, monkeypatch) -> None:
    import edge_yolo.eval as evaluation

    def broken(*args, **kwargs):
        raise RuntimeError("the evaluator broke")

    monkeypatch.setattr(evaluation, "evaluate_model", broken)
    out = tmp_path / "run"
    code = main(["train", "--model", "gelan-t", "--epochs", "1", "--out", str(out), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "evaluation after epoch 1 failed (the evaluator broke)" in err
    assert f"--resume {out}" in err
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["train"]["epoch"] == 1  # the epoch is kept: nothing to redo


def test_info_describes_a_checkpoint(trained_run: Path, capsys) -> None:
    assert main(["info", str(trained_run / "best.pt")]) == 0
    out = capsys.readouterr().out
    assert "edge-yolo checkpoint, model yolov9-t, 5 classes (circle, square" in out
    assert "weights: deployable, from epoch 1 (no optimizer state)" in out
    assert "val mAP50-95" in out and "trained on synthetic:8" in out
    assert main(["info", str(trained_run / "last.pt")]) == 0
    assert "after epoch 1 (resumable" in capsys.readouterr().out


def test_resume_from_best_pt_points_to_last_pt(trained_run: Path, capsys) -> None:
    assert main(["train", "--resume", str(trained_run / "best.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "resume from last.pt" in err
    assert f"--weights {trained_run / 'best.pt'}" in err  # the flag, as typed on the CLI

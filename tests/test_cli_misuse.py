"""Every user mistake on the command line is one line and a non-zero exit: no traceback, and
nothing silently accepted. A table of misuse cases across all commands."""

from __future__ import annotations

import pytest
import runtime_models as rm

from edge_yolo.cli import main

FIXTURE_VOC = str(rm.REPO / "tests" / "fixtures" / "raccoon")
PHOTO = "{photo}"
CASES = {
    # info
    "info-unknown-model": "info foo",
    "info-imgsz": "info gelan-t --imgsz 33",
    "info-classes": "info gelan-t --num-classes 0",
    "info-imgsz-text": "info gelan-t --imgsz abc",
    # data
    "data-missing": "data {tmp}/nope.yaml",
    "data-imgsz": "data synthetic:8 --imgsz 33",
    "data-preview-dir": "data synthetic:8 --preview {tmp}",
    "data-num": "data synthetic:8 --num 0",
    "data-split": "data synthetic:8 --split nope",
    "data-preview-under-file": "data synthetic:8 --preview {file}/grid.jpg",
    "data-seed": "data synthetic:8 --seed -1",
    # export
    "export-missing-weights": "export --weights {tmp}/none.pt --target onnx",
    "export-target": "export --weights {ckpt} --target coral",
    "export-precision": "export --weights {ckpt} --target onnx --precision int8",
    "export-imgsz": "export --weights {ckpt} --target onnx --imgsz 33",
    "export-imgsz-0": "export --weights {ckpt} --target onnx --imgsz 0",
    "export-out-file": "export --weights {ckpt} --target onnx --out {file}",
    "export-threads-neg": "export --weights {ckpt} --target onnx --threads -2",
    "export-threads-0": "export --weights {ckpt} --target onnx --threads 0",
    "export-opset-99": "export --weights {ckpt} --target onnx --opset 99",
    "export-opset-16": "export --weights {ckpt} --target onnx --opset 16",
    "export-rpi-dynamic": "export --weights {ckpt} --target rpi --dynamic",
    "export-intel-opset": "export --weights {ckpt} --target intel --opset 17",
    "export-onnx-preset": "export --weights {ckpt} --target onnx --nncf-preset mixed",
    "export-calib-size": "export --weights {ckpt} --target intel --calib-size 0",
    "export-overflow": "export --weights {ckpt} --target intel --overflow-fix sometimes",
    "export-workspace": "export --weights {ckpt} --target jetson --workspace-mib -1",
    "export-ranges": "export --weights {ckpt} --target rpi --calib-ranges foo",
    "export-not-a-checkpoint": "export --weights {file} --target onnx",
    "export-board-precision": "export --weights {ckpt} --target rpi5 --precision bf16",
    # train
    "train-model": "train --model foo --data synthetic:8",
    "train-out-file": "train --data synthetic:8 --out {file}",
    "train-epochs": "train --data synthetic:8 --epochs 0",
    "train-batch": "train --data synthetic:8 --batch 0",
    "train-imgsz": "train --data synthetic:8 --imgsz 33",
    "train-lr0": "train --data synthetic:8 --lr0 -1",
    "train-workers": "train --data synthetic:8 --workers -1",
    "train-threads": "train --data synthetic:8 --threads 0",
    "train-device": "train --data synthetic:8 --epochs 1 --imgsz 64 --device foo --out {tmp}/r1",
    "train-device-cuda": "train --data synthetic:8 --epochs 1 --imgsz 64 --device cuda "
                         "--out {tmp}/r2",
    "train-recipe": "train --recipe {tmp}/nope.yaml",
    "train-resume": "train --resume {tmp}/no-run",
    "train-data": "train --data {tmp}/nope.yaml --epochs 1 --imgsz 64 --out {tmp}/r3",
    "train-eval-interval": "train --data synthetic:8 --eval-interval -1",
    "train-close-mosaic": "train --data synthetic:8 --close-mosaic -2",
    # val
    "val-imgsz": "val --weights {ckpt} --data " + FIXTURE_VOC + " --imgsz 33",
    "val-batch": "val --weights {ckpt} --data " + FIXTURE_VOC + " --batch 0",
    "val-iou-neg": "val --weights {ckpt} --data " + FIXTURE_VOC + " --iou -1",
    "val-iou-0": "val --weights {ckpt} --data " + FIXTURE_VOC + " --iou 0",
    "val-conf-2": "val --weights {ckpt} --data " + FIXTURE_VOC + " --conf 2",
    "val-conf-1": "val --weights {ckpt} --data " + FIXTURE_VOC + " --conf 1",
    "val-max-images": "val --weights {ckpt} --data " + FIXTURE_VOC + " --max-images 0",
    "val-device": "val --weights {ckpt} --data " + FIXTURE_VOC + " --split all --device foo",
    "val-cuda": "val --weights {ckpt} --data " + FIXTURE_VOC + " --split all --device cuda",
    "val-missing": "val --weights {tmp}/none.pt --data " + FIXTURE_VOC,
    "val-json-dir": "val --weights {ckpt} --data " + FIXTURE_VOC + " --json {tmp}",
    "val-data": "val --weights {ckpt} --data {tmp}/nope.yaml",
    "val-threads": "val --weights {bundle} --data " + FIXTURE_VOC + " --threads 0",
    "val-bundle-cuda": "val --weights {bundle} --data " + FIXTURE_VOC + " --split all "
                       "--device cuda",
    "val-classes": "val --weights {ckpt} --data synthetic:8",
    # predict
    "predict-missing-image": "predict {bundle} {tmp}/nope.jpg",
    "predict-missing-bundle": "predict {tmp}/no-bundle " + PHOTO,
    "predict-threads": "predict {bundle} " + PHOTO + " --threads -1",
    "predict-conf": "predict {bundle} " + PHOTO + " --conf 2",
    "predict-iou": "predict {bundle} " + PHOTO + " --iou 0",
    "predict-max-det": "predict {bundle} " + PHOTO + " --max-det 0",
    "predict-cuda": "predict {bundle} " + PHOTO + " --device cuda",
    "predict-backend": "predict {bundle} " + PHOTO + " --backend caffe",
    "predict-out-file": "predict {bundle} " + PHOTO + " --out {file}",
    "predict-empty-dir": "predict {bundle} {empty}",
    "predict-not-a-bundle": "predict {empty} " + PHOTO,
    "predict-video": "predict {bundle} {tmp}/broken.mp4",
    # verify
    "verify-missing": "verify {tmp}/no-bundle",
    "verify-threads": "verify {bundle} --threads 0",
    "verify-cuda": "verify {bundle} --device cuda",
    "verify-not-a-bundle": "verify {empty}",
    # report
    "report-nothing": "report --weights {ckpt} --data " + FIXTURE_VOC,
    "report-target": "report --weights {ckpt} --data " + FIXTURE_VOC + " --targets coral",
    "report-max-drop": "report --weights {ckpt} --data " + FIXTURE_VOC + " --bundles {bundle} "
                       "--max-drop -1",
    "report-missing-bundle": "report --weights {ckpt} --data " + FIXTURE_VOC
                             + " --bundles {tmp}/nope",
    "report-resamples": "report --weights {ckpt} --data " + FIXTURE_VOC + " --bundles {bundle} "
                        "--resamples -1",
    "report-out-file": "report --weights {ckpt} --data " + FIXTURE_VOC + " --bundles {bundle} "
                       "--out {file}",
    # qat
    "qat-no-target": "qat --weights {ckpt}",
    "qat-float-target": "qat --weights {ckpt} --target onnx",
    "qat-variant": "qat --weights {ckpt} --target intel --variant best",
    "qat-updates": "qat --weights {ckpt} --target intel --updates 0",
    "qat-epochs": "qat --weights {ckpt} --target intel --epochs 3",
    "qat-data-not-images": "qat --weights {ckpt} --target intel --data {file}",
    "export-compare-ptq-float": "export --weights {ckpt} --target jetson --compare-ptq",
    "report-gate": "report --weights {ckpt} --data synthetic --targets intel --gate speed",
    "qat-lr": "qat --weights {ckpt} --target intel --lr -1",
    "qat-pgi-on-gelan": "qat --weights {ckpt} --target intel --data {tmp}/none.yaml",
    "qat-resume-missing": "qat --resume {tmp}/no-run",
    "qat-not-a-checkpoint": "qat --weights {file} --target jetson",
    # export --max-drop
    "export-max-drop-float": "export --weights {ckpt} --target intel --precision fp32 "
                             "--max-drop 1",
    "export-max-drop-zero": "export --weights {ckpt} --target intel --max-drop 0",
    # benchmark
    "benchmark-missing": "benchmark {tmp}/no-bundle",
    "benchmark-runs": "benchmark {bundle} --runs 0",
    "benchmark-image": "benchmark {bundle} --image {tmp}/nope.jpg",
    "benchmark-json-dir": "benchmark {bundle} --json {tmp}",
    "benchmark-not-a-bundle": "benchmark {empty}",
    # the command itself
    "no-such-command": "deploy {bundle}",
}


@pytest.fixture(scope="module")
def places(tmp_path_factory, raccoon_images):
    root = rm.cache_root(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("misuse")
    (tmp / "a-file.txt").write_text("not a checkpoint, not a directory\n")
    (tmp / "empty").mkdir()
    (tmp / "broken.mp4").write_bytes(b"\x00" * 100)
    return {
        "tmp": str(tmp),
        "file": str(tmp / "a-file.txt"),
        "empty": str(tmp / "empty"),
        "ckpt": str(rm.fitted_checkpoint(root)),
        "bundle": str(rm.exported_bundle(root, "onnx", "fp32")),
        "photo": str(raccoon_images[0]),
    }


def test_the_table_is_large_and_covers_every_command():
    from edge_yolo.cli import COMMANDS

    assert len(CASES) >= 60
    assert set(COMMANDS) <= {case.split()[0] for case in CASES.values()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_user_mistake_is_one_line_and_a_nonzero_exit(name, places, capsys):
    argv = CASES[name].format(**places).split()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse refused it while parsing
        code = e.code
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, f"exit {code}; stderr: {err!r}; stdout: {captured.out[-300:]!r}"
    assert "Traceback" not in captured.err + captured.out
    lines = err.splitlines()
    assert len(lines) == 1, err
    command = argv[0] if argv[0] in CASES_COMMANDS else ""
    assert lines[0].startswith(f"edge-yolo {command}".rstrip() + ":") or (
        not command and lines[0].startswith("edge-yolo")
    ), lines[0]


CASES_COMMANDS = {"info", "data", "export", "train", "val", "predict", "verify", "report",
                  "benchmark", "qat"}


def test_an_internal_error_is_short_with_a_hint_and_its_own_exit_code(places, capsys,
                                                                       monkeypatch):
    import edge_yolo.runtime.verify as verify

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(verify, "verify_bundle", broken)
    assert main(["verify", places["bundle"]]) == 3
    err = capsys.readouterr().err.strip()
    assert err == ("edge-yolo verify: internal error: ZeroDivisionError: a bug (rerun with "
                   "--debug for the traceback)")
    with pytest.raises(ZeroDivisionError):
        main(["verify", places["bundle"], "--debug"])


def test_every_command_shows_examples_that_its_parser_accepts(tmp_path, monkeypatch, capsys):
    """Each ``--help`` ends with examples; each example, with its paths made to exist,
    parses with the real parser (a renamed flag breaks this test, not a user's first try)."""
    import shlex

    from edge_yolo.cli import COMMANDS, build_parser

    monkeypatch.chdir(tmp_path)
    parser = build_parser()
    for name, (_, _, examples) in COMMANDS.items():
        assert examples, name
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        shown = capsys.readouterr().out
        assert "examples:" in shown and all(line in shown for line in examples), name
        for line in examples:
            argv = shlex.split(line)
            assert argv[:2] == ["edge-yolo", name], line
            for token in argv[2:]:
                if token.startswith(("-", "rtsp:")) or "/" not in token and "." not in token:
                    continue
                path = tmp_path / token
                if path.suffix and not token.endswith("/"):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                else:
                    path.mkdir(parents=True, exist_ok=True)
            args = parser.parse_args(argv[1:])  # SystemExit (exit 2) on a flag it lacks
            assert args.command == name


def test_an_option_is_named_as_the_reader_types_it():
    from edge_yolo.errors import command_line, option

    assert option("max_drop", 1.5) == "max_drop=1.5" and option("force") == "force"
    assert option("check_files", False, flag="--no-check-files") == "check_files=False"
    with command_line():
        assert option("max_drop", 1.5) == "--max-drop 1.5" and option("sync_bn") == "--sync-bn"
        assert option("check_files", False, flag="--no-check-files") == "--no-check-files"
    assert option("device", "cuda") == "device='cuda'"  # back to Python spelling after the CLI

"""Recipes: YAML into a checked dataclass; defaults are the reference; flags override files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge_yolo.data.augment import AugmentConfig
from edge_yolo.train.config import RecipeError, TrainConfig, load_recipe, read_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ALL = sorted(RECIPES.glob("*.yaml"))


def test_the_required_recipes_exist() -> None:
    names = {p.name for p in ALL}
    assert {
        "coco-yolov9-t.yaml",
        "coco-yolov9-s.yaml",
        "finetune-small.yaml",
        "demo-synthetic.yaml",
    } <= names


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_recipe_loads_into_the_dataclass(path: Path) -> None:
    if path.name.startswith("qat-"):  # a QAT recipe: training keys on the QAT defaults + qat:
        from edge_yolo.quant.qat_run import QATConfig, load_qat_recipe

        cfg, qcfg = load_qat_recipe(path, {"model": "yolov9-t"}, {})
        assert isinstance(cfg, TrainConfig) and isinstance(qcfg, QATConfig)
        assert cfg.close_mosaic >= cfg.epochs and cfg.warmup_epochs == 0
        return
    cfg = load_recipe(path)
    assert isinstance(cfg, TrainConfig)
    assert cfg.model in {"yolov9-t", "yolov9-s", "gelan-t", "gelan-s"}


@pytest.mark.parametrize("name", ["coco-yolov9-t.yaml", "coco-yolov9-s.yaml"])
def test_coco_recipes_spell_out_the_reference_defaults(name: str) -> None:
    # The defaults are the documented base; the COCO recipes state it in full, so they and
    # the dataclass must agree on every value (and on the augmentation defaults).
    values = read_recipe(RECIPES / name)
    defaults = TrainConfig()
    for key, value in values.items():
        if key in ("model", "data"):
            continue
        if key == "augment":
            aug = AugmentConfig()
            assert {k: getattr(aug, k) for k in value} == value
            continue
        assert getattr(defaults, key) == value, key
    spelled = set(values) - {"model", "data", "augment"}
    schedule = {
        "epochs",
        "imgsz",
        "batch",
        "nbs",
        "lr0",
        "lrf",
        "momentum",
        "weight_decay",
        "warmup_epochs",
        "warmup_momentum",
        "warmup_bias_lr",
        "clip_grad",
        "ema_decay",
        "ema_tau",
        "close_mosaic",
        "box",
        "cls",
        "dfl",
        "aux_weight",
    }
    assert schedule <= spelled
    cfg = load_recipe(RECIPES / name)
    assert (cfg.epochs, cfg.imgsz, cfg.batch, cfg.nbs, cfg.lr0) == (500, 640, 64, 64, 0.01)


def test_finetune_recipe_is_gentler_and_shorter_than_the_reference() -> None:
    base, ft = TrainConfig(), load_recipe(RECIPES / "finetune-small.yaml")
    assert ft.epochs < base.epochs and ft.lr0 < base.lr0
    assert ft.warmup_epochs < base.warmup_epochs and ft.warmup_min_iters < base.warmup_min_iters
    assert ft.close_mosaic <= base.close_mosaic
    # it only states what differs: no key repeats a default
    for key, value in read_recipe(RECIPES / "finetune-small.yaml").items():
        if key not in ("augment", "model"):  # the model is always named
            assert getattr(base, key) != value, f"finetune-small.yaml repeats the default {key}"


def test_unknown_key_is_refused_naming_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("model: yolov9-t\nlearning_rate: 0.1\n")
    with pytest.raises(RecipeError, match=r"typo\.yaml.*'learning_rate'"):
        load_recipe(path)
    path.write_text("augment:\n  mosiac: 0.5\n")
    with pytest.raises(RecipeError, match=r"typo\.yaml.*mosiac"):
        load_recipe(path)
    path.write_text("augment:\n  close_mosaic: 3\n")
    with pytest.raises(RecipeError, match="top level"):
        load_recipe(path)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("epochs: ten\n", "'epochs' must be int"),
        ("epochs: 0\n", "epochs must be >= 1"),
        ("imgsz: 100\n", "multiple of 32"),
        ("cos_lr: 1\n", "'cos_lr' must be bool"),
        ("optimizer: adam\n", "optimizer must be one of SGD, AdamW"),
        ("- a\n- b\n", "mapping"),
        ("lr0: [0.1\n", "not valid YAML"),
    ],
)
def test_bad_values_are_refused_naming_the_file(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=pattern) as info:
        load_recipe(path)
    assert "bad.yaml" in str(info.value)


def test_command_line_overrides_the_recipe_and_unset_flags_do_not() -> None:
    cfg = load_recipe(RECIPES / "finetune-small.yaml", {"epochs": 3, "lr0": None, "imgsz": 320})
    assert cfg.epochs == 3 and cfg.imgsz == 320
    assert cfg.lr0 == 0.002  # None means "flag not given": the recipe's value stays
    assert load_recipe(None, {"lr0": 1}).lr0 == 1.0  # ints are accepted for floats


def test_exponent_without_dot_is_a_number(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("lr0: 1e-3\n")  # YAML 1.1 would leave this a string
    assert load_recipe(path).lr0 == 0.001


def test_config_round_trips_through_a_plain_dict() -> None:
    cfg = load_recipe(RECIPES / "demo-synthetic.yaml")
    again = load_recipe(None, dataclasses.asdict(cfg))
    assert again == cfg

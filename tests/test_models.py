"""Model zoo: registry, shapes, PGI removal, fusion and the published sizes."""

from __future__ import annotations

import pytest
import torch

from edge_yolo.models import (
    GELANConfig,
    count_flops,
    count_params,
    create_model,
    fuse_model,
    is_fused,
    list_models,
)

torch.set_num_threads(1)


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics, so fusion is actually exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def test_registry_lists_the_four_variants():
    assert {"gelan-t", "gelan-s", "yolov9-t", "yolov9-s"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model 'gelan-x'.*gelan-t"):
        create_model("gelan-x")


@pytest.mark.parametrize("name", list_models())
def test_raw_outputs_per_level(name):
    model = create_model(name, num_classes=3).eval()
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        outputs = model(x)
    assert len(outputs) == 3
    for (box, cls), s in zip(outputs, (8, 16, 32)):
        assert box.shape == (2, 64, 96 // s, 128 // s)
        assert cls.shape == (2, 3, 96 // s, 128 // s)
    # Same structure in training mode: the head never decodes.
    model.train()
    outputs_train = model(x)
    assert [tuple(b.shape) for b, _ in outputs_train] == [tuple(b.shape) for b, _ in outputs]


@pytest.mark.parametrize("size", ["t", "s"])
def test_drop_auxiliary_gives_gelan(size):
    torch.manual_seed(0)
    yolo = randomize_bn(create_model(f"yolov9-{size}", num_classes=5)).eval()
    gelan = create_model(f"gelan-{size}", num_classes=5)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        main, aux = yolo.forward_train(x)
    assert aux is not None and len(aux) == 3
    assert any(k.startswith("aux.") for k in yolo.state_dict())

    yolo.drop_auxiliary()
    assert yolo.name == f"gelan-{size}" and yolo.aux is None
    assert list(yolo.state_dict()) == list(gelan.state_dict())
    gelan.load_state_dict(yolo.state_dict())
    gelan.eval()
    with torch.no_grad():
        for (b1, c1), (b2, c2), (b3, c3) in zip(main, yolo(x), gelan(x)):
            assert torch.equal(b1, b2) and torch.equal(c1, c2)
            assert torch.equal(b2, b3) and torch.equal(c2, c3)


@pytest.mark.parametrize("name", ["gelan-t", "gelan-s"])
def test_fuse_matches_unfused(name):
    torch.manual_seed(1)
    model = randomize_bn(create_model(name, num_classes=7)).eval()
    x = torch.rand(2, 3, 128, 96)
    with torch.no_grad():
        ref = model(x)
        fuse_model(model)
        out = model(x)
    assert is_fused(model)
    diff = max((a - b).abs().max().item() for r, o in zip(ref, out) for a, b in zip(r, o))
    assert diff < 1e-4, diff
    # Fusing twice is harmless.
    model.fuse()
    with torch.no_grad():
        again = model(x)
    assert all(torch.equal(a, b) for r, o in zip(out, again) for a, b in zip(r, o))


# Published YOLOv9 table (80 classes, 640x640, fused): params, GFLOPs.
PUBLISHED = {"gelan-t": (2.0e6, 7.7e9), "gelan-s": (7.1e6, 26.4e9)}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_sizes(name):
    model = create_model(name, num_classes=80).fuse()
    params, flops = count_params(model), count_flops(model, 640)
    want_p, want_f = PUBLISHED[name]
    # The table rounds to 0.1M / 0.1G; hold the counts to 1% of it.
    assert abs(params - want_p) / want_p < 0.01, params
    assert abs(flops - want_f) / want_f < 0.01, flops


def test_flop_counter_counts_real_convs():
    conv = torch.nn.Conv2d(8, 16, 3, padding=1, groups=2)
    # 16 output maps of 10x10, each output sums 4 input channels x 9 taps.
    assert count_flops(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), conv), 10) == 2 * (
        8 * 100 * 3 + 16 * 100 * 4 * 9
    )


def test_config_checks_itself():
    with pytest.raises(ValueError, match="num_classes"):
        GELANConfig("gelan-t", width=16, num_classes=0)
    with pytest.raises(ValueError, match="width"):
        GELANConfig("gelan-t", width=12)


def test_head_bias_init():
    model = create_model("gelan-t", num_classes=80)
    for cls, s in zip(model.head.cls, (8, 16, 32)):
        expected = torch.log(torch.tensor(5 / 80 / (640 / s) ** 2))
        assert torch.allclose(cls[-1].bias, expected.expand_as(cls[-1].bias))
    assert all(torch.all(box[-1].bias == 1.0) for box in model.head.box)

"""Detection loss: CIoU, DFL, the full loss on free head outputs and on real models, PGI."""

from __future__ import annotations

import math

import pytest
import torch

from edge_yolo.models import create_model, decode_outputs
from edge_yolo.train.assigner import box_ciou
from edge_yolo.train.loss import (
    DetectionLoss,
    DualDetectionLoss,
    LossGains,
    build_loss,
    distribution_focal_loss,
)


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny tensors here gain nothing from threads; restore the setting for other tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_ciou_of_identical_boxes_is_one():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0], [3.5, 1.0, 7.0, 90.0]])
    assert torch.allclose(box_ciou(boxes, boxes), torch.ones(2), atol=1e-6)


def test_ciou_against_hand_computation():
    # Same aspect ratio (v = 0): IoU 1/7, centre distance^2 2, enclosing diagonal^2 18.
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    b = torch.tensor([1.0, 1.0, 3.0, 3.0])
    assert float(box_ciou(a, b)) == pytest.approx(1 / 7 - 2 / 18, abs=1e-6)
    # Different aspect: IoU 0.5, centre distance^2 1, diagonal^2 20, v from atan(2) - atan(1).
    a = torch.tensor([0.0, 0.0, 4.0, 2.0])
    b = torch.tensor([0.0, 0.0, 2.0, 2.0])
    v = 4 / math.pi**2 * (math.atan(2.0) - math.atan(1.0)) ** 2
    alpha = v / (1 - 0.5 + v)
    assert float(box_ciou(a, b)) == pytest.approx(0.5 - 1 / 20 - alpha * v, abs=1e-6)
    assert float(box_ciou(b, a)) == pytest.approx(float(box_ciou(a, b)), abs=1e-7)
    # Disjoint boxes: IoU 0, so CIoU is negative (the distance term still pulls them together).
    assert float(box_ciou(torch.tensor([0.0, 0, 1, 1]), torch.tensor([5.0, 0, 6, 1]))) < 0


def test_dfl_minimum_is_the_two_bin_interpolation():
    target = torch.tensor(3.3)
    logits = torch.zeros(16, requires_grad=True)
    opt = torch.optim.LBFGS([logits], max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = distribution_focal_loss(logits, target)
        loss.backward()
        return loss

    opt.step(closure)
    prob = logits.detach().softmax(-1)
    assert float(prob[3]) == pytest.approx(0.7, abs=0.01)
    assert float(prob[4]) == pytest.approx(0.3, abs=0.01)
    assert float((prob * torch.arange(16)).sum()) == pytest.approx(3.3, abs=0.02)
    # The minimum value is the entropy of that two-bin distribution.
    exact = torch.full((16,), -1e4)
    exact[3], exact[4] = math.log(0.7), math.log(0.3)
    entropy = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    assert float(distribution_focal_loss(exact, target)) == pytest.approx(entropy, abs=1e-5)


def test_dfl_targets_beyond_the_last_bin_are_clamped():
    logits = torch.randn(5, 16)
    far = distribution_focal_loss(logits, torch.full((5,), 40.0))
    clamped = distribution_focal_loss(logits, torch.full((5,), 14.99))
    assert torch.allclose(far, clamped)


# Free head outputs for a 64x64 input: levels 8x8, 4x4, 2x2 at strides 8, 16, 32.
SHAPES = [(8, 8), (4, 4), (2, 2)]


def _free_outputs(batch: int, nc: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Head outputs as leaf tensors, initialised as DDetect initialises its biases."""
    g = torch.Generator().manual_seed(seed)
    outs = []
    for (h, w), s in zip(SHAPES, (8, 16, 32)):
        box = 1.0 + 0.01 * torch.randn(batch, 64, h, w, generator=g)
        cls = math.log(5 / nc / (640 / s) ** 2) + 0.01 * torch.randn(batch, nc, h, w, generator=g)
        outs.append((box.requires_grad_(), cls.requires_grad_()))
    return outs


TARGETS = torch.tensor(
    [
        [0, 1, 6.0, 10.0, 30.0, 40.0],
        [0, 0, 30.0, 20.0, 60.0, 50.0],
        [1, 1, 14.0, 14.0, 50.0, 58.0],
    ]
)


def test_free_outputs_fit_a_fixed_batch():
    outs = _free_outputs(2, 2)
    params = [t for pair in outs for t in pair]
    loss_fn = DetectionLoss(2)
    opt = torch.optim.Adam(params, lr=0.05)
    first = None
    for _ in range(150):
        opt.zero_grad()
        total, items = loss_fn(outs, TARGETS)
        first = first if first is not None else items.clone()
        total.backward()
        opt.step()
    _, items = loss_fn(outs, TARGETS)
    # The box parts fall to a few percent of where they started; cls falls several times.
    assert items[0] < 0.1 * first[0] and items[2] < 0.5 * first[2], (first, items)
    assert items[1] < 0.25 * first[1], (first, items)
    # The best-scoring anchor per GT class now decodes to that GT.
    boxes, scores = decode_outputs([(b.detach(), c.detach()) for b, c in outs], (8, 16, 32))
    for b, c, *xyxy in TARGETS.tolist():
        best = scores[int(b), :, int(c)].argmax()
        iou = box_ciou(boxes[int(b), best], torch.tensor(xyxy))
        assert iou > 0.85, (b, c, float(iou))


def test_total_is_weighted_parts_times_batch_and_items_are_detached():
    outs = _free_outputs(2, 2)
    total, items = DetectionLoss(2)(outs, TARGETS)
    assert not items.requires_grad and items.shape == (3,)
    assert total.item() == pytest.approx(items.sum().item() * 2, rel=1e-6)
    # Gains scale their own part only.
    _, items2 = DetectionLoss(2, gains=LossGains(box=1.0, cls=0.5, dfl=3.0))(outs, TARGETS)
    assert torch.allclose(items2, items * torch.tensor([1 / 7.5, 1.0, 2.0]), rtol=1e-5)


def test_label_smoothing_changes_only_the_class_part():
    outs = _free_outputs(2, 2)
    _, plain = DetectionLoss(2)(outs, TARGETS)
    _, smooth = DetectionLoss(2, label_smoothing=0.1)(outs, TARGETS)
    assert torch.allclose(plain[[0, 2]], smooth[[0, 2]])
    assert not torch.isclose(plain[1], smooth[1])
    with pytest.raises(ValueError, match="label_smoothing"):
        DetectionLoss(2, label_smoothing=1.0)


def test_image_without_targets_and_batch_without_targets():
    outs = _free_outputs(3, 2)
    total, items = DetectionLoss(2)(outs, TARGETS)  # image 2 has no target
    assert torch.isfinite(total) and torch.all(items > 0)
    total.backward()
    assert all(torch.isfinite(t.grad).all() for pair in outs for t in pair)

    outs = _free_outputs(3, 2)
    total, items = DetectionLoss(2)(outs, torch.zeros(0, 6))
    assert torch.isfinite(total) and items[0] == 0 and items[2] == 0 and items[1] > 0
    total.backward()
    assert outs[0][1].grad.abs().sum() > 0  # class logits are pushed down everywhere


def test_bad_targets_and_outputs_are_refused():
    outs = _free_outputs(2, 2)
    loss = DetectionLoss(2)
    with pytest.raises(ValueError, match=r"\(M, 6\)"):
        loss(outs, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="class out of range"):
        loss(outs, torch.tensor([[0, 2, 0.0, 0.0, 10.0, 10.0]]))
    with pytest.raises(ValueError, match="batch_index out of range"):
        loss(outs, torch.tensor([[2, 0, 0.0, 0.0, 10.0, 10.0]]))
    with pytest.raises(ValueError, match="class logits"):
        DetectionLoss(3)(outs, TARGETS)
    with pytest.raises(ValueError, match="auxiliary"):
        loss((outs, outs), TARGETS)


@pytest.fixture(scope="module")
def yolov9_t() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("yolov9-t", num_classes=2).train()


def test_build_loss_picks_the_dual_loss_for_pgi_models(yolov9_t):
    assert type(build_loss(yolov9_t)) is DualDetectionLoss
    gelan = create_model("gelan-t", num_classes=2)
    plain = build_loss(gelan, label_smoothing=0.1, aux_weight=0.25)
    assert type(plain) is DetectionLoss and plain.label_smoothing == 0.1
    # forward_train of a model without PGI returns (main, None): the plain loss takes it.
    x = torch.rand(2, 3, 64, 64)
    torch.manual_seed(1)
    total_train, _ = plain(gelan.forward_train(x), TARGETS)
    torch.manual_seed(1)
    total_plain, _ = plain(gelan(x), TARGETS)
    assert total_train.item() == pytest.approx(total_plain.item(), rel=1e-5)


def test_dual_loss_is_main_plus_quarter_aux_and_reaches_both_heads(yolov9_t):
    model = yolov9_t
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    main, aux = model.forward_train(x)
    dual = DualDetectionLoss(2)
    total, items = dual((main, aux), TARGETS)
    plain = DetectionLoss(2)
    main_total, main_items = plain(main, TARGETS)
    aux_total, aux_items = plain(aux, TARGETS)
    assert total.item() == pytest.approx((main_total + 0.25 * aux_total).item(), rel=1e-5)
    assert torch.allclose(items, main_items + 0.25 * aux_items, rtol=1e-5)
    assert not torch.allclose(main_items, aux_items)  # two heads, two assignments
    no_aux_total, _ = dual((main, None), TARGETS)
    assert no_aux_total.item() == pytest.approx(main_total.item(), rel=1e-6)

    model.zero_grad()
    total.backward()

    def grad_norm(module: torch.nn.Module) -> float:
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    assert grad_norm(model.head) > 0
    assert grad_norm(model.aux.head) > 0
    assert grad_norm(model.aux.neck) > 0
    assert grad_norm(model.backbone.stem) > 0


def test_a_tiny_model_fits_one_batch():
    torch.manual_seed(0)
    model = create_model("gelan-t", num_classes=2).train()
    loss_fn = build_loss(model)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(25):
        opt.zero_grad()
        total, _ = loss_fn(model(x), TARGETS)
        total.backward()
        opt.step()
        history.append(total.item())
    assert all(math.isfinite(v) for v in history)
    assert min(history[-5:]) < 0.25 * history[0], history


def test_loss_is_computed_in_float32_under_autocast():
    outs = _free_outputs(2, 2)
    half = [(b.detach().bfloat16().requires_grad_(), c.detach().bfloat16()) for b, c in outs]
    _, reference = DetectionLoss(2)(outs, TARGETS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, items = DetectionLoss(2)(half, TARGETS)
    assert total.dtype == torch.float32 and torch.isfinite(total)
    # Only the bf16 rounding of the inputs differs, not the arithmetic of the loss.
    assert torch.allclose(items, reference, rtol=0.02)
    total.backward()
    assert half[0][0].grad is not None and half[0][0].grad.dtype == torch.bfloat16


@pytest.mark.slow
def test_dual_loss_trains_a_detector_that_evaluation_scores():
    """yolov9-t from scratch on 64 synthetic 128 px images: after 200 steps the main head
    finds the training shapes (mAP50 ~0.8 measured) and generalises a little (~0.4)."""
    import numpy as np

    from edge_yolo.data import SyntheticDataset
    from edge_yolo.eval import evaluate_model

    size, n = 128, 64
    train = SyntheticDataset("train", n, imgsz=size)
    images, rows = [], []
    for i in range(n):
        s = train[i]
        images.append(torch.from_numpy(s.image[:, :, ::-1].copy()).permute(2, 0, 1) / 255.0)
        rows += [[i, c, *b] for b, c in zip(s.boxes.tolist(), s.classes.tolist())]
    images = torch.stack(images)
    targets = torch.tensor(rows, dtype=torch.float32)

    torch.manual_seed(0)
    model = create_model("yolov9-t", num_classes=len(train.names)).train()
    loss_fn = build_loss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    for _ in range(50):
        order = torch.randperm(n)
        for k in range(0, n, 16):
            idx = order[k : k + 16]
            rows_in = torch.isin(targets[:, 0].long(), idx)
            batch_targets = targets[rows_in].clone()
            new_index = torch.full((n,), -1, dtype=torch.long)
            new_index[idx] = torch.arange(len(idx))
            batch_targets[:, 0] = new_index[batch_targets[:, 0].long()].float()
            opt.zero_grad()
            total, _ = loss_fn(model.forward_train(images[idx]), batch_targets)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
    seen = evaluate_model(model, train, imgsz=size, progress=False)
    val = SyntheticDataset("val", 16, imgsz=size)
    unseen = evaluate_model(model, val, imgsz=size, progress=False)
    assert seen.map50 > 0.5, str(seen)
    assert unseen.map50 > 0.15, str(unseen)
    assert np.isfinite(seen.map50_95) and seen.map50_95 < seen.map50

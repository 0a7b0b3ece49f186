"""Task-aligned assigner: candidates inside the GT, top-k, conflicts, soft targets."""

from __future__ import annotations

import pytest
import torch

from edge_yolo.models.decode import make_anchors
from edge_yolo.train.assigner import TaskAlignedAssigner, box_ciou

# One 8x8 level at stride 8: anchor points at 4, 12, ..., 60 on a 64x64 input.
POINTS, _ = make_anchors([(8, 8)], (8,))
A = POINTS.shape[0]


def _inputs(gt_boxes, gt_labels, *, nc=3, scores=None, pred_boxes=None):
    """Batch of one image; predictions default to a box equal to the first GT at every anchor."""
    gt = torch.tensor(gt_boxes, dtype=torch.float32)[None]
    labels = torch.tensor(gt_labels)[None]
    mask = torch.ones_like(labels, dtype=torch.bool)
    if scores is None:
        scores = torch.full((1, A, nc), 0.5)
    if pred_boxes is None:
        pred_boxes = gt[:, :1].expand(1, A, 4).clone()
    return scores, pred_boxes, POINTS, labels, gt, mask


def _inside(points, box):
    x, y = points.unbind(-1)
    return (x > box[0]) & (x < box[2]) & (y > box[1]) & (y < box[3])


def test_positives_lie_inside_their_gt_only():
    torch.manual_seed(0)
    box = [10.0, 6.0, 38.0, 30.0]  # contains anchors x in {12,20,28,36}, y in {12,20,28}: 12
    scores = torch.rand(1, A, 3)
    preds = torch.tensor(box).expand(1, A, 4) + torch.randn(1, A, 4) * 3
    out = TaskAlignedAssigner(topk=100)(*_inputs([box], [2], scores=scores, pred_boxes=preds))
    inside = _inside(POINTS, box)
    assert int(inside.sum()) == 12
    assert torch.equal(out.fg_mask[0], inside)  # topk > candidates: every inside anchor
    assert torch.all(out.target_labels[0][inside] == 2)
    assert torch.allclose(out.target_boxes[0][inside], torch.tensor(box).expand(12, 4))
    assert torch.all(out.target_scores[0][~inside] == 0)
    assert torch.all(out.target_scores[0][:, :2] == 0)  # only the GT's class column


def test_topk_keeps_the_best_aligned_candidates():
    box = [0.0, 0.0, 64.0, 64.0]  # every anchor is a candidate
    # Predicted boxes equal to the GT (CIoU 1), so the metric ranks anchors by class score.
    scores = torch.rand(1, A, 3, generator=torch.Generator().manual_seed(1))
    out = TaskAlignedAssigner(topk=5)(*_inputs([box], [1], scores=scores))
    assert int(out.fg_mask.sum()) == 5
    best5 = scores[0, :, 1].topk(5).indices
    assert set(out.fg_mask[0].nonzero().flatten().tolist()) == set(best5.tolist())


def test_candidates_always_outrank_outside_anchors():
    # Predictions that miss the GT entirely: every metric is 0; the GT must still get
    # only in-box anchors, as many as fit under topk.
    box = [16.0, 16.0, 34.0, 34.0]  # anchors 20 and 28 in x and y: 4 candidates
    preds = torch.tensor([50.0, 50.0, 60.0, 60.0]).expand(1, A, 4)
    out = TaskAlignedAssigner(topk=10)(*_inputs([box], [0], pred_boxes=preds))
    assert torch.equal(out.fg_mask[0], _inside(POINTS, box))


def test_conflicting_anchor_goes_to_highest_iou_gt():
    gt_a = [2.0, 2.0, 30.0, 30.0]
    gt_b = [10.0, 10.0, 46.0, 46.0]
    shared = _inside(POINTS, gt_a) & _inside(POINTS, gt_b)
    assert int(shared.sum()) == 9  # anchors at x, y in {12, 20, 28}
    # Each anchor predicts gt_b exactly, except anchor (12, 12) which predicts gt_a.
    preds = torch.tensor(gt_b).expand(1, A, 4).clone()
    a_idx = int(((POINTS[:, 0] == 12) & (POINTS[:, 1] == 12)).nonzero())
    preds[0, a_idx] = torch.tensor(gt_a)
    out = TaskAlignedAssigner(topk=100)(*_inputs([gt_a, gt_b], [0, 1], pred_boxes=preds))
    for i in shared.nonzero().flatten().tolist():
        want = 0 if i == a_idx else 1
        assert out.target_gt_idx[0, i] == want, i
        assert out.target_labels[0, i] == want
        assert out.target_scores[0, i, 1 - want] == 0
    # Non-shared anchors keep their only GT.
    only_a = _inside(POINTS, gt_a) & ~shared
    assert torch.all(out.target_gt_idx[0][only_a] == 0)


def test_target_scores_normalised_to_best_iou_per_gt():
    torch.manual_seed(3)
    box = [8.0, 8.0, 56.0, 56.0]
    preds = torch.tensor(box).expand(1, A, 4) + torch.randn(1, A, 4) * 4
    scores = torch.rand(1, A, 2)
    s, p, pts, labels, gt, mask = _inputs([box], [0], nc=2, scores=scores, pred_boxes=preds)
    out = TaskAlignedAssigner(topk=7)(s, p, pts, labels, gt, mask)
    fg = out.fg_mask[0]
    assert int(fg.sum()) == 7
    ciou = box_ciou(gt[0, 0].expand(A, 4), preds[0]).clamp(min=0)
    metric = scores[0, :, 0].sqrt() * ciou.pow(6.0)
    t = out.target_scores[0, :, 0]
    assert t[fg].max() == pytest.approx(float(ciou[fg].max()), rel=1e-4)
    expected = metric[fg] / metric[fg].max() * ciou[fg].max()
    assert torch.allclose(t[fg], expected, rtol=1e-4, atol=1e-6)


def test_padding_slots_and_empty_images_get_nothing():
    box = [0.0, 0.0, 64.0, 64.0]
    s, p, pts, labels, gt, mask = _inputs([box, box], [0, 1])
    s, p = s.expand(2, A, 3), p.expand(2, A, 4)
    labels, gt = labels.expand(2, 2), gt.expand(2, 2, 4)
    mask = torch.tensor([[True, False], [False, False]])
    out = TaskAlignedAssigner(topk=4)(s, p, pts, labels, gt, mask)
    assert int(out.fg_mask[0].sum()) == 4
    assert torch.all(out.target_gt_idx[0][out.fg_mask[0]] == 0)
    assert not out.fg_mask[1].any()
    assert torch.all(out.target_scores[1] == 0)


def test_no_gt_at_all():
    s = torch.rand(2, A, 3)
    out = TaskAlignedAssigner()(
        s, torch.rand(2, A, 4), POINTS, torch.zeros(2, 0, dtype=torch.long),
        torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool),
    )
    assert not out.fg_mask.any()
    assert out.target_scores.shape == (2, A, 3) and torch.all(out.target_scores == 0)

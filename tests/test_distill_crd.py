"""Cross-response losses: minimum at student == teacher, weighting / normalisation, invalid
boxes ignored without NaN."""
import pytest
import torch
import torch.nn.functional as F

from tkd_d2.distill.crd import (align_to_teacher_statistics, crd_box_loss, crd_centerness_loss, crd_cls_loss,
                                teacher_box_weight, trusted_boxes, trusted_cls)


def random_boxes(shape, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(*shape, 2, generator=g) * 50
    wh = torch.rand(*shape, 2, generator=g) * 30 + 1
    return torch.cat([xy, xy + wh], dim=-1)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_cls_loss_is_zero_with_zero_gradient_at_teacher(beta):
    teacher = torch.randn(2, 30, 5)
    student = teacher.clone().requires_grad_()
    loss = crd_cls_loss(student, teacher, beta=beta, normalizer=4.0)
    assert loss.item() == 0.0
    loss.backward()
    assert student.grad.abs().max() < 1e-7
    other = torch.randn(2, 30, 5)
    assert crd_cls_loss(other, teacher) > 0


def test_cls_loss_formula_and_normalizer():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    q = t.sigmoid()
    expected = (F.binary_cross_entropy_with_logits(s, q, reduction="none") * (s.sigmoid() - q).abs() ** 2).sum() / 5
    torch.testing.assert_close(crd_cls_loss(s, t, beta=2.0, normalizer=5.0), expected)
    weight = torch.tensor([1.0, 0.0, 1.0])
    torch.testing.assert_close(crd_cls_loss(s, t, 2.0, 5.0, weight=weight),
                               crd_cls_loss(s[[0, 2]], t[[0, 2]], 2.0, 5.0))


def test_teacher_gets_no_gradient():
    s = torch.randn(2, 6, 3, requires_grad=True)
    t = torch.randn(2, 6, 3, requires_grad=True)
    crd_cls_loss(s, t).backward()
    assert t.grad is None and s.grad is not None


def test_box_loss_zero_for_identical_boxes():
    boxes = random_boxes((2, 10), 0)
    student = boxes.clone().requires_grad_()
    weight = torch.rand(2, 10)
    loss = crd_box_loss(student, boxes, weight)
    assert abs(loss.item()) < 1e-6
    loss.backward()
    assert torch.isfinite(student.grad).all()


def test_box_loss_weighting_and_default_normalizer():
    s, t = random_boxes((8,), 1), random_boxes((8,), 2)
    weight = torch.rand(8)
    from torchvision.ops import generalized_box_iou_loss

    per_box = generalized_box_iou_loss(s, t, reduction="none")
    torch.testing.assert_close(crd_box_loss(s, t, weight), (per_box * weight).sum() / weight.sum())
    torch.testing.assert_close(crd_box_loss(s, t, weight, normalizer=3.0), (per_box * weight).sum() / 3.0)


def test_box_loss_ignores_invalid_and_degenerate_locations():
    s, t = random_boxes((6,), 3), random_boxes((6,), 4)
    weight = torch.ones(6)
    valid = torch.tensor([True, True, True, False, True, True])
    s_bad = s.clone()
    s_bad[1] = torch.tensor([5.0, 5.0, 5.0, 9.0])  # zero width
    t_bad = t.clone()
    t_bad[2] = torch.tensor([float("nan")] * 4)
    s_bad.requires_grad_()
    loss = crd_box_loss(s_bad, t_bad, weight, valid_mask=valid)
    keep = [0, 4, 5]
    torch.testing.assert_close(loss, crd_box_loss(s[keep], t[keep], weight[keep]), check_dtype=True)
    loss.backward()
    assert torch.isfinite(s_bad.grad).all()
    assert (s_bad.grad[[1, 2, 3]] == 0).all()
    # nothing valid → 0, not NaN
    empty = crd_box_loss(s, t, weight, valid_mask=torch.zeros(6, dtype=torch.bool))
    assert empty.item() == 0.0


def test_ciou_box_loss_is_torchvisions_complete_iou_loss():
    from torchvision.ops import complete_box_iou_loss

    s, t = random_boxes((2, 6), 6), random_boxes((2, 6), 7)
    weight = torch.rand(2, 6)
    per_box = complete_box_iou_loss(s.reshape(-1, 4), t.reshape(-1, 4), reduction="none").reshape(2, 6)
    torch.testing.assert_close(crd_box_loss(s, t, weight, normalizer=3.0, mode="ciou"),
                               (per_box * weight).sum() / 3.0)
    # CIoU adds the aspect-ratio term to DIoU: it is not GIoU
    assert not torch.allclose(crd_box_loss(s, t, weight, mode="ciou"), crd_box_loss(s, t, weight, mode="giou"))
    with pytest.raises(ValueError, match="'diou'.*ciou"):
        crd_box_loss(s, t, weight, mode="diou")


@pytest.mark.parametrize("mode", ["giou", "ciou", "iou", "log_iou"])
def test_box_loss_modes_vanish_at_teacher(mode):
    boxes = random_boxes((5,), 5)
    assert abs(crd_box_loss(boxes, boxes, torch.ones(5), mode=mode).item()) < 1e-5


def test_teacher_box_weight_is_max_probability():
    logits = torch.tensor([[[-1.0, 2.0, 0.0]]])
    torch.testing.assert_close(teacher_box_weight(logits), torch.tensor([[2.0]]).sigmoid())


def test_centerness_minimum_at_teacher():
    t = torch.randn(2, 7)
    s = t.clone().requires_grad_()
    loss = crd_centerness_loss(s, t, weight=torch.rand(2, 7))
    loss.backward()
    assert s.grad.abs().max() < 1e-6
    assert crd_centerness_loss(t + 1.0, t) > crd_centerness_loss(t, t)


def test_align_to_teacher_statistics():
    s = torch.randn(2, 3, 4, 5) * 3 + 1
    t = torch.randn(2, 3, 4, 5) * 0.5 - 2
    aligned = align_to_teacher_statistics(s, t)
    torch.testing.assert_close(aligned.mean(dim=(0, 2, 3)), t.mean(dim=(0, 2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(aligned.std(dim=(0, 2, 3)), t.std(dim=(0, 2, 3)), atol=1e-4, rtol=1e-4)


def test_align_to_teacher_statistics_is_the_standardise_then_rescale_formula():
    g = torch.Generator().manual_seed(1)
    s = (torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_()
    t = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64) * 0.5 - 2
    dims = (0, 2, 3)
    s_mean, s_std = s.mean(dims, keepdim=True), s.var(dims, keepdim=True, correction=0).sqrt()
    t_mean, t_std = t.mean(dims, keepdim=True), t.var(dims, keepdim=True, correction=0).sqrt()
    expected = (s - s_mean) / (s_std + 1e-6) * t_std + t_mean
    aligned = align_to_teacher_statistics(s, t)
    torch.testing.assert_close(aligned, expected, atol=1e-6, rtol=1e-6)
    weights = torch.randn(s.shape, generator=g, dtype=torch.float64)
    grad, = torch.autograd.grad((aligned * weights).sum(), s)
    expected_grad, = torch.autograd.grad((expected * weights).sum(), s)
    torch.testing.assert_close(grad, expected_grad, atol=1e-6, rtol=1e-6)


def test_align_to_teacher_statistics_single_location_is_finite():
    # a 1x1 level (P7 of a small image) with one image per process
    s = torch.randn(1, 3, 1, 1, requires_grad=True)
    t = torch.randn(1, 3, 1, 1)
    aligned = align_to_teacher_statistics(s, t)
    assert torch.isfinite(aligned).all()
    torch.testing.assert_close(aligned, t)  # one location: the teacher's mean is the teacher
    aligned.sum().backward()
    assert torch.isfinite(s.grad).all()


def test_trusted_cls_keeps_the_logits_where_the_teacher_is_nearer_the_label():
    logit = lambda p: torch.logit(torch.tensor(p))  # noqa: E731
    # 3 locations x 2 classes: class 0, background (label 2), ignored (-1)
    student = torch.stack([logit([0.3, 0.4]), logit([0.5, 0.1]), logit([0.9, 0.9])])
    teacher = torch.stack([logit([0.6, 0.6]), logit([0.2, 0.1]), logit([0.1, 0.1])])
    labels = torch.tensor([0, 2, -1])
    trusted = trusted_cls(student, teacher, labels)
    # class 0's logit: 0.6 nearer 1 than 0.3; class 1's: 0.6 farther from 0 than 0.4
    # background: 0.2 nearer 0 than 0.5, a tie (0.1) counts as trusted; ignored: no label, trusted
    assert trusted.tolist() == [[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
    assert trusted_cls(teacher, teacher, labels).eq(1).all()


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_trusted_cls_loss_never_pulls_a_logit_away_from_its_label(beta):
    g = torch.Generator().manual_seed(0)
    student = (torch.randn(4, 50, 6, generator=g) * 2).requires_grad_()
    teacher = torch.randn(4, 50, 6, generator=g) * 2
    labels = torch.randint(-1, 7, (4, 50), generator=g)  # 6: background
    weight = trusted_cls(student, teacher, labels)
    assert 0 < weight.mean() < 1
    crd_cls_loss(student, teacher, beta=beta, weight=weight).backward()
    target = F.one_hot(labels.clamp(min=0), 7)[..., :6].float()
    label_grad = student.detach().sigmoid() - target  # the ground truth's BCE gradient
    labelled = (labels >= 0).unsqueeze(-1).expand_as(student)
    assert (student.grad * label_grad)[labelled].min() >= 0
    # the untrusted logits get no gradient at all
    assert student.grad[weight == 0].abs().max() == 0
    # without the trust weights some logits are pulled away from their labels
    student.grad = None
    crd_cls_loss(student, teacher, beta=beta).backward()
    assert (student.grad * label_grad)[labelled].min() < 0


def test_trusted_boxes_keep_the_positives_where_the_teacher_fits_the_ground_truth_better():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).expand(4, 4)
    student = torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 9.0, 9.0], [0.0, 0.0, 5.0, 5.0]])
    teacher = torch.tensor([[0.0, 0.0, 9.0, 10.0], [0.0, 0.0, 9.0, 9.0], [1.0, 1.0, 9.0, 9.0], [0.0, 0.0, 1.0, 1.0]])
    positive = torch.tensor([True, True, True, False])
    # better, worse, equal (trusted), and a location without a ground-truth box (trusted)
    assert trusted_boxes(student, teacher, gt, positive).tolist() == [1.0, 0.0, 1.0, 1.0]
    assert trusted_boxes(student[None], teacher[None], gt[None], positive[None]).shape == (1, 4)

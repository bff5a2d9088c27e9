import math

import pytest
import torch

from ppid.losses import alpha_loss, gradient_loss, region_masks


def _logit(p):
    return torch.log(p / (1 - p))


def test_alpha_loss_hand_computed():
    trimap = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])
    gt = torch.tensor([[[[1.0, 0.0], [0.5, 0.25]]]])
    logits = torch.zeros(1, 1, 2, 2)  # prediction 0.5 everywhere
    t = alpha_loss(logits, gt, trimap)
    assert t["l1_f"].item() == pytest.approx(0.5)
    assert t["l1_b"].item() == pytest.approx(0.5)
    assert t["l1_t"].item() == pytest.approx(2.0 * (0.0 + 0.25) / 2)
    ln2 = math.log(2.0)
    assert t["ce_f"].item() == pytest.approx(ln2, rel=1e-5)
    assert t["ce_b"].item() == pytest.approx(ln2, rel=1e-5)
    assert t["ce_t"].item() == pytest.approx(0.5 * ln2, rel=1e-5)
    parts = sum(v for k, v in t.items() if k != "alpha")
    assert t["alpha"].item() == pytest.approx(parts.item())


def test_region_weights_are_per_image_not_per_pixel():
    # A larger transition region must not weigh more: S = 1/N_t.
    gt = torch.zeros(1, 1, 4, 4)
    small = torch.zeros(1, 1, 4, 4)
    small[..., 0, 0] = 0.5
    large = torch.full((1, 1, 4, 4), 0.5)
    logits = torch.full((1, 1, 4, 4), 2.0)
    assert alpha_loss(logits, gt, small)["l1_t"].item() == pytest.approx(alpha_loss(logits, gt, large)["l1_t"].item())


def test_absent_regions_contribute_nothing():
    trimap = torch.full((2, 1, 3, 3), 0.5)
    gt = torch.rand(2, 1, 3, 3)
    t = alpha_loss(torch.randn(2, 1, 3, 3), gt, trimap)
    for k in ("l1_f", "l1_b", "ce_f", "ce_b"):
        assert t[k].item() == 0.0
    assert t["l1_t"].item() > 0


def test_regions_partition_the_trimap():
    trimap = torch.tensor([[[[0.0, 0.5, 1.0]]]])
    m = region_masks(trimap)
    assert torch.equal(m["b"] + m["t"] + m["f"], torch.ones_like(trimap))


def test_gradient_loss_hand_computed():
    gt = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    pred = torch.full_like(gt, 0.3)
    # Sobel/8 of a unit step with replicate borders gives gx = 0.5 at every pixel; the constant
    # prediction has magnitude sqrt(eps) = 1e-3.
    assert gradient_loss(pred, gt).item() == pytest.approx(0.5 - 1e-3, abs=1e-4)
    assert gradient_loss(gt, gt).item() == 0.0


def test_perfect_prediction_has_low_loss_and_gradients_flow():
    gt = torch.rand(2, 1, 8, 8).clamp(0.05, 0.95)
    trimap = torch.full_like(gt, 0.5)
    logits = _logit(gt).clone().requires_grad_(True)
    t = alpha_loss(logits, gt, trimap)
    assert t["l1_t"].item() < 1e-5 and t["grad"].item() < 1e-5
    t["alpha"].backward()
    assert torch.isfinite(logits.grad).all()


def test_alpha_loss_under_autocast_is_float32():
    gt = torch.rand(1, 1, 8, 8)
    trimap = torch.full_like(gt, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        t = alpha_loss(torch.randn(1, 1, 8, 8).bfloat16(), gt, trimap)
    assert t["alpha"].dtype == torch.float32

"""The regional alpha loss of the paper, eq. 11-17.

Regions come from the training trimap (values 0 / 0.5 / 1): f = known foreground, b = known
background, t = transition. S (eq. 11) is 1 / N_region per image, so every region present in an
image has total weight 1 and a region absent from an image contributes nothing.
"""

import torch
import torch.nn.functional as F

L1_WEIGHTS = {"f": 1.0, "b": 1.0, "t": 2.0}  # eq. 13
CE_WEIGHTS = {"f": 1.0, "b": 1.0, "t": 0.5}  # eq. 14


def region_masks(trimap):
    """f, b, t masks (float, N x 1 x H x W) from a trimap in {0, 0.5, 1}."""
    return {
        "f": (trimap > 0.75).float(),
        "b": (trimap < 0.25).float(),
        "t": ((trimap >= 0.25) & (trimap <= 0.75)).float(),
    }


def regional_mean(per_pixel, mask):
    """sum_ij S_ij * mask_ij * x_ij with S = 1/N_region (eq. 11), averaged over the batch.
    Images where the region is empty contribute 0."""
    n = mask.sum(dim=(1, 2, 3))
    total = (per_pixel * mask).sum(dim=(1, 2, 3))
    return (total / n.clamp(min=1.0)).mean()


def sobel_magnitude(x, eps=1e-6):
    """Gradient magnitude with Sobel filters (replicate borders); eps keeps sqrt differentiable at 0."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype) / 8.0
    kernel = torch.stack([kx, kx.t()]).unsqueeze(1)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)
    return torch.sqrt(g.pow(2).sum(dim=1, keepdim=True) + eps)


def gradient_loss(pred, gt):
    """eq. 17: mean over pixels of |grad magnitude(alpha) - grad magnitude(alpha*)|."""
    return (sobel_magnitude(pred) - sobel_magnitude(gt)).abs().mean()


def alpha_loss(pred_logits, gt, trimap):
    """L_alpha (eq. 12): regional L1 (eq. 15, weights eq. 13) + regional CE (eq. 16, weights eq. 14)
    + gradient loss (eq. 17). Computed in float32 (safe under autocast).

    Returns a dict of the weighted terms (`l1_f`, `l1_b`, `l1_t`, `ce_f`, `ce_b`, `ce_t`, `grad`)
    and their sum `alpha`.
    """
    logits = pred_logits.float()
    gt = gt.float()
    pred = torch.sigmoid(logits)
    l1 = (pred - gt).abs()
    ce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none")
    terms = {}
    for name, mask in region_masks(trimap.float()).items():
        terms[f"l1_{name}"] = L1_WEIGHTS[name] * regional_mean(l1, mask)
        terms[f"ce_{name}"] = CE_WEIGHTS[name] * regional_mean(ce, mask)
    terms["grad"] = gradient_loss(pred, gt)
    terms["alpha"] = sum(terms.values())
    return terms

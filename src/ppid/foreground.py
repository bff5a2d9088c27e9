"""Foreground colour estimation: given a photo I and its alpha, recover F in I = alpha*F + (1-alpha)*B
(paper eq. 1) so that a cut-out or a new composite carries no fringe of the old background.

Approximate blur-fusion (Forte & Pitie 2021, "Approximate fast foreground colour estimation"):
local alpha-weighted means of foreground and background colours are computed with box filters, and
the compositing residual is handed back to F in proportion to alpha:

    F_bar = blur(alpha * F) / blur(alpha),  B_bar = blur((1 - alpha) * B) / blur(1 - alpha)
    F     = F_bar + alpha * (I - alpha * F_bar - (1 - alpha) * B_bar)

run twice: once with a large radius starting from F = B = I, then with a small radius starting from
the first F and B_bar. Box filters use cumulative sums, so the cost does not depend on the radius;
everything is torch on the input's device (CPU or GPU), in float32 whatever autocast is active.
"""

import numpy as np
import torch
import torch.nn.functional as F

from . import PpidError

# Forte & Pitie's radii for photos of about 1-2 Mpx: a wide pass finds colours far from the edge,
# a narrow one restores local detail.
DEFAULT_RADII = (90, 6)
_EPS = 1e-5


def _box_mean_1d(x, radius, dim):
    """Mean over a window of 2*radius+1 along `dim` (-1 or -2), the window clipped at the borders."""
    n = x.shape[dim]
    pad = [radius + 1, radius] if dim == -1 else [0, 0, radius + 1, radius]
    # float64 prefix sums: in float32 the difference of two large prefix sums loses ~1e-6, which
    # the division by a small blurred alpha would blow up into visible colour noise
    csum = torch.cumsum(F.pad(x, pad), dim=dim, dtype=torch.float64)
    window = (csum.narrow(dim, 2 * radius + 1, n) - csum.narrow(dim, 0, n)).to(x.dtype)
    idx = torch.arange(n, device=x.device)
    count = ((idx + radius + 1).clamp(max=n) - (idx - radius).clamp(min=0)).to(x.dtype)
    return window / (count if dim == -1 else count[:, None])


def box_blur(x, radius):
    """Mean filter of size (2r+1)^2 over the last two dims, clipped at the borders."""
    return _box_mean_1d(_box_mean_1d(x, radius, -2), radius, -1)


def _blur_fusion_pass(image, fg, bg, alpha, radius):
    a_blur = box_blur(alpha, radius)
    fg_mean = box_blur(fg * alpha, radius) / (a_blur + _EPS)
    bg_mean = box_blur(bg * (1.0 - alpha), radius) / ((1.0 - a_blur) + _EPS)
    fg = fg_mean + alpha * (image - alpha * fg_mean - (1.0 - alpha) * bg_mean)
    return fg.clamp_(0.0, 1.0), bg_mean


def estimate_foreground_torch(image, alpha, radii=DEFAULT_RADII):
    """Blur-fusion foreground on tensors: image (..., 3, H, W), alpha (..., 1, H, W), both in [0, 1].

    Returns F (..., 3, H, W) float32 on the image's device.
    """
    if image.dim() < 3 or image.shape[-3] != 3:
        raise PpidError(f"foreground: image must be (..., 3, H, W), got {tuple(image.shape)}")
    if alpha.shape[-3] != 1 or alpha.shape[-2:] != image.shape[-2:]:
        raise PpidError(
            f"foreground: alpha must be (..., 1, H, W) matching the image, got {tuple(alpha.shape)} "
            f"for image {tuple(image.shape)}"
        )
    # cumulative sums over thousands of pixels need float32 even under fp16/bf16 autocast
    with torch.autocast(device_type=image.device.type, enabled=False):
        image = image.float()
        alpha = alpha.to(image.device).float().clamp(0.0, 1.0)
        fg, bg = image, image
        for radius in radii:
            fg, bg = _blur_fusion_pass(image, fg, bg, alpha, radius)
    return fg


def estimate_foreground(image, alpha, radii=DEFAULT_RADII):
    """pymatting-style entry point: `estimate_foreground(image, alpha) -> fg`.

    NumPy: image HxWx3 (float in [0, 1] or uint8), alpha HxW (float in [0, 1] or uint8)
    -> float32 HxWx3 in [0, 1]. Torch: see `estimate_foreground_torch`.
    """
    if isinstance(image, torch.Tensor):
        return estimate_foreground_torch(image, alpha, radii)
    image, alpha = np.asarray(image), np.asarray(alpha)
    if image.ndim != 3 or image.shape[2] != 3 or alpha.shape != image.shape[:2]:
        raise PpidError(
            f"foreground: expected image HxWx3 and alpha HxW, got {image.shape} and {alpha.shape}"
        )
    image_t = torch.from_numpy(_unit_float(image)).permute(2, 0, 1)
    alpha_t = torch.from_numpy(_unit_float(alpha))[None]
    return estimate_foreground_torch(image_t, alpha_t, radii).permute(1, 2, 0).contiguous().numpy()


def _unit_float(x):
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32, copy=False)


def transition_error(fg, fg_true, alpha):
    """Mean absolute colour error of F over the transition region (0 < alpha < 1), each pixel weighted
    by its alpha (the weight its colour gets in any composite). NumPy HxWx3 / HxW."""
    weight = np.where((alpha > 0) & (alpha < 1), alpha, 0.0)[..., None]
    if weight.sum() == 0:
        raise PpidError("foreground: alpha has no transition pixels to measure")
    return float((weight * np.abs(fg - fg_true)).sum() / (3.0 * weight.sum()))

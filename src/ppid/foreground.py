"""Foreground colour estimation: given a photo I and its alpha, recover F in I = alpha*F + (1-alpha)*B
(paper eq. 1) so that a cut-out or a new composite carries no fringe of the old background.

Multi-level foreground estimation (Germer et al. 2020, "Fast Multi-Level Foreground Estimation").
Every pixel solves a 2x2 least-squares problem for its own F and B (per channel):

    minimise  (alpha F + (1 - alpha) B - I)^2 + sum_j w_j ((F - F_j)^2 + (B - B_j)^2)

over its four neighbours j, with w_j = regularization + gradient_weight * |alpha - alpha_j|: where
alpha changes, one pixel cannot tell F from B, so there the colours lean on their neighbours. The
solve is repeated coarse to fine over an image pyramid (2 pixels up to full size), each level
starting from the upsampled result of the previous one, so colours travel across the image in a
few iterations. Where alpha = 0 the data term
vanishes and F is the weighted mean of its neighbours: the object's colour spreads outwards, and
resized or saved cut-outs show no dark fringe.

Two implementations of the same method:
- CPU (NumPy arrays and CPU tensors): pymatting's `estimate_foreground_ml` (Numba). Its compiled
  code is cached on disk; the first `import pymatting` on a machine compiles all of pymatting's
  kernels (30-110 s, see docs/predict.md).
- tensors on CUDA (or any accelerator): `estimate_foreground_torch`, written here as tensor ops
  (red-black Gauss-Seidel: the pixels of one checkerboard colour only depend on those of the
  other, so each half-sweep is one vectorised update), batched, float32 whatever autocast is active.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from . import PpidError

DEFAULT_REGULARIZATION = 1e-5
DEFAULT_GRADIENT_WEIGHT = 1.0
# Sweeps per level: many where the levels are tiny (they fix the global colours), few at the large
# ones (which only refine near edges); the same schedule as pymatting's defaults.
SMALL_LEVEL_SIZE = 32
SMALL_LEVEL_ITERATIONS = 10
LARGE_LEVEL_ITERATIONS = 2
# Starting F and B, before the coarsest level: the mean colours of the (nearly) opaque and (nearly)
# clear pixels.
_OPAQUE, _CLEAR = 0.9, 0.1


# -- torch implementation (tensors on an accelerator) ---------------------------------------------
def _level_sizes(height, width):
    """Pyramid sizes from coarse to fine: each level halves the next one (rounded up), down to
    1x1, which is left out: a lone pixel has no neighbours to be smooth with (a 1x1 image keeps
    the initial mean colour)."""
    sizes = [(height, width)]
    while max(sizes[-1]) > 1:
        h, w = sizes[-1]
        sizes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return sizes[-2::-1]


def _mean_colour(image, weight):
    """Per-image weighted mean colour (N, C, 1, 1); the plain mean where the weight is all zero."""
    total = weight.sum(dim=(-2, -1), keepdim=True)
    mean = (image * weight).sum(dim=(-2, -1), keepdim=True) / total.clamp(min=1.0)
    return torch.where(total > 0, mean, image.mean(dim=(-2, -1), keepdim=True))


def _neighbour_sum(x, wx, wy):
    """sum_j w_j x_j over the 4-neighbourhood; wx weighs (y, x)-(y, x+1), wy (y, x)-(y+1, x)."""
    return (
        F.pad(wx * x[..., :, 1:], (0, 1)) + F.pad(wx * x[..., :, :-1], (1, 0))
        + F.pad(wy * x[..., 1:, :], (0, 0, 0, 1)) + F.pad(wy * x[..., :-1, :], (0, 0, 1, 0))
    )


def _relax(image, alpha, fg, bg, iterations, regularization, gradient_weight):
    """`iterations` red-black Gauss-Seidel sweeps of the per-pixel 2x2 solve at one level."""
    channels = image.shape[1]
    wx = regularization + gradient_weight * (alpha[..., :, 1:] - alpha[..., :, :-1]).abs()
    wy = regularization + gradient_weight * (alpha[..., 1:, :] - alpha[..., :-1, :]).abs()
    weight_sum = _neighbour_sum(torch.ones_like(alpha), wx, wy)
    a_f, a_b = alpha, 1.0 - alpha
    # normal equations [[a_f^2 + W, a_f a_b], [a_f a_b, a_b^2 + W]] [F, B] = rhs, inverted once
    m_ff, m_fb, m_bb = a_f * a_f + weight_sum, a_f * a_b, a_b * a_b + weight_sum
    det = m_ff * m_bb - m_fb * m_fb
    inv_ff, inv_fb, inv_bb = m_bb / det, -m_fb / det, m_ff / det
    data = torch.cat([a_f * image, a_b * image], dim=1)
    h, w = alpha.shape[-2:]
    rows, cols = torch.arange(h, device=alpha.device), torch.arange(w, device=alpha.device)
    red = ((rows[:, None] + cols[None, :]) % 2 == 0)
    fb = torch.cat([fg, bg], dim=1)
    for _ in range(iterations):
        for cells in (red, ~red):
            rhs = data + _neighbour_sum(fb, wx, wy)
            rhs_f, rhs_b = rhs[:, :channels], rhs[:, channels:]
            solved = torch.cat([inv_ff * rhs_f + inv_fb * rhs_b, inv_fb * rhs_f + inv_bb * rhs_b], dim=1)
            fb = torch.where(cells, solved.clamp_(0.0, 1.0), fb)
    return fb[:, :channels], fb[:, channels:]


def estimate_foreground_torch(image, alpha, regularization=DEFAULT_REGULARIZATION,
                              gradient_weight=DEFAULT_GRADIENT_WEIGHT):
    """Multi-level foreground on tensors of any device: image (..., C, H, W), alpha (..., 1, H, W),
    both in [0, 1]. Returns F (..., C, H, W) float32 on the image's device."""
    _check_tensors(image, alpha)
    lead, (channels, height, width) = image.shape[:-3], image.shape[-3:]
    # float32 even under fp16/bf16 autocast: the 2x2 determinants are differences of small numbers
    with torch.autocast(device_type=image.device.type, enabled=False):
        image = image.reshape(-1, channels, height, width).float()
        alpha = alpha.to(image.device).reshape(-1, 1, height, width).float().clamp(0.0, 1.0)
        fg = _mean_colour(image, (alpha > _OPAQUE).float())
        bg = _mean_colour(image, (alpha < _CLEAR).float())
        for size in _level_sizes(height, width):
            # nearest sampling, not area: averaged alpha smears thin strands into wide faint
            # regions whose coarse colours two fine sweeps do not undo (measured: 1.6x the error)
            level_image, level_alpha, fg, bg = (
                F.interpolate(x, size, mode="nearest") for x in (image, alpha, fg, bg)
            )
            iterations = SMALL_LEVEL_ITERATIONS if max(size) <= SMALL_LEVEL_SIZE else LARGE_LEVEL_ITERATIONS
            fg, bg = _relax(level_image, level_alpha, fg, bg, iterations, regularization, gradient_weight)
    return fg.reshape(*lead, channels, height, width)


# -- pymatting (CPU) -----------------------------------------------------------------------------
def _pymatting_ml():
    """pymatting's estimator, imported on first use: the import compiles or loads Numba code."""
    try:
        from pymatting.foreground.estimate_foreground_ml import estimate_foreground_ml
    except RuntimeError as exc:  # Numba: read-only site-packages and no writable ~/.cache
        raise PpidError(
            f"foreground: pymatting could not cache its compiled code ({exc}); set NUMBA_CACHE_DIR "
            f"to a writable folder"
        ) from None
    return estimate_foreground_ml


def _estimate_numpy(image, alpha, regularization, gradient_weight):
    """float32 HxWxC, HxW -> float32 HxWxC with pymatting."""
    fg = _pymatting_ml()(
        image, alpha, regularization=regularization, gradient_weight=gradient_weight,
        n_small_iterations=SMALL_LEVEL_ITERATIONS, n_big_iterations=LARGE_LEVEL_ITERATIONS,
        small_size=SMALL_LEVEL_SIZE,
    )
    return np.clip(fg, 0.0, 1.0, out=fg)


def _estimate_cpu_tensors(image, alpha, regularization, gradient_weight):
    lead, (channels, height, width) = image.shape[:-3], image.shape[-3:]
    images = image.detach().reshape(-1, channels, height, width).float().permute(0, 2, 3, 1)
    images = images.contiguous().numpy()
    alphas = alpha.detach().reshape(-1, height, width).float().clamp(0.0, 1.0).numpy()
    fg = np.stack([_estimate_numpy(i, a, regularization, gradient_weight) for i, a in zip(images, alphas)])
    return torch.from_numpy(fg).permute(0, 3, 1, 2).reshape(*lead, channels, height, width)


# -- entry point -----------------------------------------------------------------------------------
def estimate_foreground(image, alpha, regularization=DEFAULT_REGULARIZATION,
                        gradient_weight=DEFAULT_GRADIENT_WEIGHT):
    """pymatting-style entry point: `estimate_foreground(image, alpha) -> fg` in [0, 1].

    NumPy: image HxWx3 or grey HxW (uint8, uint16 or float in [0, 1]), alpha HxW (same dtypes)
    -> float32 of the image's shape. Tensors: image (..., C, H, W), alpha (..., 1, H, W) in [0, 1]
    -> float32 (..., C, H, W) on the image's device (CPU: pymatting; CUDA and other
    accelerators: `estimate_foreground_torch`). Larger `regularization` / `gradient_weight` give
    smoother colours.
    """
    if isinstance(image, torch.Tensor):
        _check_tensors(image, alpha)
        if image.device.type == "cpu":
            return _estimate_cpu_tensors(image, alpha.cpu(), regularization, gradient_weight)
        return estimate_foreground_torch(image, alpha, regularization, gradient_weight)
    image, alpha = _check_arrays(np.asarray(image), np.asarray(alpha))
    grey = image.ndim == 2
    fg = _estimate_numpy(image[..., None] if grey else image, alpha, regularization, gradient_weight)
    return fg[..., 0] if grey else fg


def _check_tensors(image, alpha):
    if image.dim() < 3:
        raise PpidError(f"foreground: image must be (..., C, H, W), got {tuple(image.shape)}")
    if alpha.shape[-3] != 1 or alpha.shape[-2:] != image.shape[-2:] or alpha.shape[:-3] != image.shape[:-3]:
        raise PpidError(
            f"foreground: alpha must be (..., 1, H, W) matching the image, got {tuple(alpha.shape)} "
            f"for image {tuple(image.shape)}"
        )


def _check_arrays(image, alpha):
    """Validated float32 copies in [0, 1] of a NumPy image (HxWx3 or HxW) and alpha (HxW)."""
    if image.ndim == 3 and image.shape[2] == 4:
        raise PpidError(
            f"foreground: image is RGBA {image.shape}; pass its colour channels (image[..., :3]) "
            f"and the alpha separately"
        )
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)) or alpha.shape != image.shape[:2]:
        raise PpidError(
            f"foreground: expected image HxWx3 (or grey HxW) and alpha HxW, "
            f"got {image.shape} and {alpha.shape}"
        )
    return _unit_float(image, "image"), np.clip(_unit_float(alpha, "alpha"), 0.0, 1.0)


def _unit_float(x, what):
    if x.dtype in (np.uint8, np.uint16):
        return x.astype(np.float32) / np.iinfo(x.dtype).max
    if x.dtype.kind != "f":
        raise PpidError(f"foreground: {what} must be uint8, uint16 or float in [0, 1], got {x.dtype}")
    return x.astype(np.float32)


def foreground_error(fg, fg_true, alpha, low=0.05, high=0.95):
    """Mean over the soft pixels (low < alpha < high) of alpha * |F - F_true| (averaged over the
    colour channels): a colour error weighted by how much the pixel shows in any composite.
    NumPy HxWxC / HxW."""
    soft = (alpha > low) & (alpha < high)
    if not soft.any():
        raise PpidError(f"foreground: alpha has no pixels in ({low}, {high}) to measure")
    diff = np.abs(np.asarray(fg, np.float64) - fg_true).mean(axis=-1)
    return float((alpha * diff)[soft].mean())

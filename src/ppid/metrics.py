"""SAD, MSE, Grad and Conn as computed by the Deep Image Matting benchmark's MATLAB code.

The reference is the evaluation code released with Deep Image Matting (Xu et al., CVPR 2017):
`compute_sad_loss.m`, `compute_mse_loss.m`, `compute_gradient_loss.m` (+ `gaussgradient.m`) and
`compute_connectivity_error.m`, called with step 0.1, Grad and Conn divided by 1000 by the caller.
Composition-1K numbers in the literature (and Tables 1-4 of the PPID-IM paper) use it.

Inputs are 8-bit mattes, as the benchmark reads PNGs: uint8 arrays, or float arrays in [0, 1]
quantised like an 8-bit PNG write (`ppid.io.to_uint8`). Errors are measured on alpha/255.

Reported units (what papers print):
- SAD  = sum |p - g| over the region / 1000
- MSE  = sum (p - g)^2 / number of region pixels (raw, not x1e3)
- Grad = sum (|grad G_s p| - |grad G_s g|)^2 over the region / 1000
- Conn = sum |phi(p) - phi(g)| over the region / 1000

Region: "transition" = pixels where trimap == 128 (the Composition-1K protocol), "whole" = every
pixel (the trimap-free protocol). Predictions are never clamped with the trimap here.

Parity with MATLAB: decisions (thresholds, components) use MATLAB's single-precision values
exactly; sums are accumulated in float64 (MATLAB sums in single), so values agree to about 1e-6
relative. Points where the MATLAB behaviour cannot be checked without MATLAB are noted in
`grad` and `conn`.
"""

import math

import numpy as np
from scipy import ndimage

from . import PpidError
from .io import to_uint8

METRICS = ("sad", "mse", "grad", "conn")
REGIONS = ("whole", "transition")
UNITS = {
    "sad": "sum |p-g| / 1000",
    "mse": "mean (p-g)^2",
    "grad": "sum of squared gradient-magnitude differences / 1000",
    "conn": "sum |phi(p)-phi(g)| / 1000",
}
GRAD_SIGMA = 1.4
CONN_STEP = 0.1
CONN_THETA = 0.15  # differences d below this count as fully connected (phi = 1)

# Float mattes may overshoot [0, 1] by numerical noise (clipped like a PNG write); more than this
# is a caller bug (e.g. a 0..255 float matte), reported instead of silently clipped.
FLOAT_RANGE_TOLERANCE = 1e-3

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def as_matte(x, name="matte"):
    """Any HxW matte (uint8, float in [0, 1], NumPy or torch, 1xHxW / HxWx1) -> uint8 HxW."""
    if hasattr(x, "detach"):  # torch tensor, any device or dtype (bf16/fp16 included)
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 3 and 1 in (x.shape[0], x.shape[-1]):
        x = x[0] if x.shape[0] == 1 else x[..., 0]
    if x.ndim != 2:
        raise PpidError(f"{name}: expected an HxW matte, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise PpidError(f"{name}: expected uint8 or float in [0, 1], got {x.dtype}")
    if x.size and not np.isfinite(x).all():
        raise PpidError(f"{name}: matte holds NaN or inf")
    if x.size and (x.min() < -FLOAT_RANGE_TOLERANCE or x.max() > 1 + FLOAT_RANGE_TOLERANCE):
        raise PpidError(f"{name}: float matte outside [0, 1] (min {x.min():.4g}, max {x.max():.4g})")
    return to_uint8(x)


def region_mask(trimap, region, shape):
    """Boolean HxW mask of the evaluated pixels, or None for the whole image."""
    if region not in REGIONS:
        raise PpidError(f"unknown region {region!r}; expected one of {', '.join(REGIONS)}")
    if region == "whole":
        return None
    if trimap is None:
        raise PpidError("region 'transition' needs a trimap")
    trimap = as_matte(trimap, "trimap")  # float {0, 0.5, 1} rounds to 0/128/255
    if trimap.shape != tuple(shape):
        raise PpidError(f"trimap is {_hw(trimap.shape)} but the mattes are {_hw(shape)}")
    if not ((trimap == 0) | (trimap == 128) | (trimap == 255)).all():
        raise PpidError("trimap: values other than 0/128/255")
    return trimap == 128


def gauss_gradient_kernels(sigma=GRAD_SIGMA, epsilon=1e-2):
    """1-D factors of MATLAB `gaussgradient`'s 2-D kernel: hx[i, j] = g[i] * dg[j].

    halfsize = ceil(sigma * sqrt(-2 log(sqrt(2 pi) sigma epsilon))) (4 for sigma 1.4), g the
    Gaussian, dg its first derivative; `dg` here already carries the normalisation
    1 / sqrt(sum(hx^2)) = 1 / sqrt(sum(g^2) sum(dg^2)).
    """
    half = math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2.0 * math.pi) * sigma * epsilon)))
    u = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(u**2) / (2.0 * sigma**2)) / (sigma * math.sqrt(2.0 * math.pi))
    dg = -u * g / sigma**2
    return g, dg / math.sqrt(np.sum(g**2) * np.sum(dg**2))


def mat2gray(a):
    """MATLAB `mat2gray` of a uint8 matte: min-max stretch to [0, 1] in float64.

    For a constant matte MATLAB returns double(A) clipped to [0, 1] (our reading of its source);
    the Grad metric cannot tell, since a constant image has zero gradient either way.
    """
    lo, hi = int(a.min()), int(a.max())
    if lo == hi:
        return np.clip(a.astype(np.float64), 0.0, 1.0)
    return (a.astype(np.float64) - lo) / (hi - lo)


def gradient_magnitude(a, sigma=GRAD_SIGMA):
    """|grad| of `mat2gray(a)` with MATLAB `gaussgradient` (replicate borders), as float32.

    `gaussgradient.m` calls imfilter(..., 'replicate', 'conv'); convolution and correlation differ
    only in the sign of the antisymmetric derivative kernel, so the magnitude is the same. The
    separable passes equal the 2-D filter, replicate borders included.
    """
    g, dg = gauss_gradient_kernels(sigma)
    img = mat2gray(a)
    smooth_y = ndimage.convolve1d(img, g, axis=0, mode="nearest")
    gx = ndimage.convolve1d(smooth_y, dg, axis=1, mode="nearest")
    del smooth_y
    smooth_x = ndimage.convolve1d(img, g, axis=1, mode="nearest")
    gy = ndimage.convolve1d(smooth_x, dg, axis=0, mode="nearest")
    # MATLAB casts the magnitudes to single before the difference.
    return np.sqrt(gx**2 + gy**2).astype(np.float32)


def connectivity_levels(p8, g8, step=CONN_STEP):
    """l_map of compute_connectivity_error.m: per pixel, the last threshold before it left the
    largest 4-connected component of (p >= t) & (g >= t), t = step, 2 step, ..., 1 (1 if never).

    Uncertain points: (1) ties for the largest component: MATLAB's `max` takes the first
    component in bwconncomp order, which we take to be column-major order of each component's
    first pixel (labelling the transposed mask reproduces it); (2) an empty intersection (e.g. a
    prediction without any pixel at 255 at t = 1): MATLAB indexes an empty PixelIdxList; we read
    it, as the public Python ports do, as an empty component, so every unset pixel gets t - step.
    """
    p = p8.astype(np.float32) / np.float32(255)
    g = g8.astype(np.float32) / np.float32(255)
    thresholds = np.arange(0, round(1 / step) + 1) * step
    l_map = np.full(p8.shape, -1.0, dtype=np.float32)
    for prev, t in zip(thresholds[:-1], thresholds[1:]):
        both = (p >= t) & (g >= t)
        labels, n = ndimage.label(both.T, structure=_FOUR_CONNECTED)
        if n:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            omega = (labels == np.argmax(sizes)).T
        else:
            omega = np.zeros_like(both)
        l_map[(l_map == -1) & ~omega] = prev
    l_map[l_map == -1] = 1.0
    return l_map


def connectivity_phi(a8, l_map, theta=CONN_THETA):
    """phi = 1 - d * (d >= theta), d = alpha - l_map, in single precision as in MATLAB."""
    d = a8.astype(np.float32) / np.float32(255) - l_map
    return 1.0 - d * (d >= theta)


def _region_sum(values, mask):
    if mask is None:
        return float(values.sum(dtype=np.float64))
    return float(values.sum(where=mask, dtype=np.float64))


def _hw(shape):
    return "x".join(str(s) for s in shape)


def _prepare(pred, gt):
    p8, g8 = as_matte(pred, "pred"), as_matte(gt, "gt")
    if p8.shape != g8.shape:
        raise PpidError(f"pred is {_hw(p8.shape)} but gt is {_hw(g8.shape)}")
    return p8, g8


def _error_maps(p8, g8, names):
    """Per-pixel terms of the requested metrics, computed once and reduced per region."""
    maps = {}
    if "sad" in names or "mse" in names:
        # |p - g| of 8-bit values fits uint8; integer sums are exact.
        diff = np.abs(p8.astype(np.int16) - g8.astype(np.int16)).astype(np.uint8)
        maps["sad"] = diff
        maps["mse"] = diff.astype(np.int32) ** 2
    if "grad" in names:
        maps["grad"] = (gradient_magnitude(p8) - gradient_magnitude(g8)) ** 2
    if "conn" in names:
        l_map = connectivity_levels(p8, g8)
        maps["conn"] = np.abs(connectivity_phi(p8, l_map) - connectivity_phi(g8, l_map))
    return maps


def _reduce(maps, mask, n_pixels):
    """Region sums -> reported values. MSE of an empty region is NaN (MATLAB's 0/0)."""
    out = {}
    if "sad" in maps:
        out["sad"] = _region_sum(maps["sad"], mask) / 255.0 / 1000.0
    if "mse" in maps:
        n = n_pixels if mask is None else int(np.count_nonzero(mask))
        out["mse"] = _region_sum(maps["mse"], mask) / 255.0**2 / n if n else float("nan")
    if "grad" in maps:
        out["grad"] = _region_sum(maps["grad"], mask) / 1000.0
    if "conn" in maps:
        out["conn"] = _region_sum(maps["conn"], mask) / 1000.0
    return {name: out[name] for name in METRICS if name in out}


def metrics_by_region(pred, gt, trimap=None, regions=("whole",), names=METRICS):
    """{region: {metric: value}} for several regions, sharing the per-pixel work between them."""
    p8, g8 = _prepare(pred, gt)
    masks = {region: region_mask(trimap, region, p8.shape) for region in regions}
    maps = _error_maps(p8, g8, names)
    return {region: _reduce(maps, mask, p8.size) for region, mask in masks.items()}


def compute_metrics(pred, gt, trimap=None, region="whole"):
    """All four metrics {sad, mse, grad, conn} of one matte, in the units of the module docstring."""
    return metrics_by_region(pred, gt, trimap, (region,))[region]


def sad(pred, gt, trimap=None, region="whole"):
    """Sum of absolute differences / 1000 (compute_sad_loss.m)."""
    return metrics_by_region(pred, gt, trimap, (region,), ("sad",))[region]["sad"]


def mse(pred, gt, trimap=None, region="whole"):
    """Mean squared error over the region, alpha in [0, 1] (compute_mse_loss.m)."""
    return metrics_by_region(pred, gt, trimap, (region,), ("mse",))[region]["mse"]


def grad(pred, gt, trimap=None, region="whole"):
    """Gradient error / 1000 (compute_gradient_loss.m): both mattes mat2gray-normalised, Gaussian
    derivative filters with sigma 1.4, squared difference of the gradient magnitudes."""
    return metrics_by_region(pred, gt, trimap, (region,), ("grad",))[region]["grad"]


def conn(pred, gt, trimap=None, region="whole"):
    """Connectivity error / 1000 (compute_connectivity_error.m, step 0.1, theta 0.15)."""
    return metrics_by_region(pred, gt, trimap, (region,), ("conn",))[region]["conn"]

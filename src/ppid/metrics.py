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

import functools
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


class NonFiniteMatte(PpidError):
    """A prediction holds NaN or inf (a diverged model, typically)."""


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
        raise NonFiniteMatte(f"{name}: matte holds NaN or inf")
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


def gradient_magnitude(a, sigma=GRAD_SIGMA, window=None):
    """|grad| of MATLAB `mat2gray(a)` with MATLAB `gaussgradient` (replicate borders), as float32.

    `window` (a pair of slices, default the whole matte) limits the output to a box: the box is
    filtered with a margin of the kernel's half-width, so its values equal the whole-matte ones.

    mat2gray stretches the whole matte's [min, max] to [0, 1]; it is linear, so the filters run
    on a - min (exact small integers) and the magnitude is divided by max - min. (For a constant
    matte MATLAB returns double(A) clipped to [0, 1], our reading of its source: the gradient is
    zero either way.) `gaussgradient.m` calls imfilter(..., 'replicate', 'conv'); convolution and
    correlation differ only in the sign of the antisymmetric derivative kernel, so the magnitude
    is the same. The separable passes equal the 2-D filter, replicate borders included.
    """
    g, dg = (k.astype(np.float32) for k in gauss_gradient_kernels(sigma))
    half = len(g) // 2
    window = window or _whole(a.shape)
    if any(span.start == span.stop for span in window):
        return np.zeros(tuple(span.stop - span.start for span in window), np.float32)
    grown = tuple(_grow(span, size, half) for span, size in zip(window, a.shape))
    lo, hi = int(a.min()), int(a.max())
    padded = np.pad(a[grown] - np.uint8(lo), half, mode="edge").astype(np.float32)
    # Derivative first: differences of exact integers lose no digits and the smoothing after it
    # has positive weights, so single precision stays within about 2e-6 relative of float64.
    gx = _correlate_valid(_correlate_valid(padded, dg, axis=1), g, axis=0)
    gy = _correlate_valid(_correlate_valid(padded, dg, axis=0), g, axis=1)
    magnitude = np.sqrt(np.add(np.square(gx, out=gx), np.square(gy, out=gy), out=gx), out=gx)
    if hi > lo:
        magnitude *= np.float32(1.0 / (hi - lo))
    return magnitude[tuple(slice(span.start - box.start, span.stop - box.start) for span, box in zip(window, grown))]


def _whole(shape):
    return slice(0, shape[0]), slice(0, shape[1])


def _grow(span, size, margin):
    return slice(max(span.start - margin, 0), min(span.stop + margin, size))


def _correlate_valid(x, kernel, axis):
    """Correlation with a symmetric or antisymmetric odd-length kernel along `axis`, only where the
    kernel fits ('valid': the axis shrinks by len(kernel) - 1). Pairs of taps share one multiply;
    whole shifted slices keep every operation contiguous (scipy's column passes are strided)."""
    half = len(kernel) // 2
    n = x.shape[axis] - 2 * half

    def shifted(k):
        return x[k:k + n] if axis == 0 else x[:, k:k + n]

    antisymmetric = kernel[0] == -kernel[-1]
    combine = np.subtract if antisymmetric else np.add
    out = np.zeros_like(shifted(0)) if antisymmetric else shifted(half) * kernel[half]
    pair = np.empty_like(out)
    for k in range(half):
        combine(shifted(k), shifted(2 * half - k), out=pair)
        pair *= kernel[k]
        out += pair
    return out


def connectivity_levels(p8, g8, step=CONN_STEP, window=None):
    """l_map of compute_connectivity_error.m: per pixel, the last threshold before it left the
    largest 4-connected component of (p >= t) & (g >= t), t = step, 2 step, ..., 1 (1 if never);
    only inside `window` (a pair of slices) if given.

    Uncertain points: (1) ties for the largest component: MATLAB's `max` takes the first
    component in bwconncomp order, which we take to be column-major order of each component's
    first pixel (labelling the transposed mask reproduces it); (2) an empty intersection (e.g. a
    prediction without any pixel at 255 at t = 1): MATLAB indexes an empty PixelIdxList; we read
    it, as the public Python ports do, as an empty component, so every unset pixel gets t - step.
    """
    levels, cuts = _connectivity_cuts(step)
    stays = _thresholds_in_largest_component(np.minimum(p8, g8), cuts)
    return levels[stays if window is None else stays[window]]


def _connectivity_cuts(step):
    """Per threshold t, the smallest 8-bit value a with single(a)/255 >= t, so that the MATLAB
    test (p >= t) & (g >= t) is min(p8, g8) >= cut; and the level of a pixel that stayed in the
    largest component for the first k thresholds: t_k (the threshold before it left), 1 for all."""
    thresholds = np.arange(0, round(1 / step) + 1) * step
    alphas = np.arange(256, dtype=np.uint8).astype(np.float32) / np.float32(255)
    cuts = [int(np.argmax(alphas >= t)) if alphas[-1] >= t else 256 for t in thresholds[1:]]
    levels = np.append(thresholds[:-1], 1.0).astype(np.float32)
    return levels, cuts


def _thresholds_in_largest_component(both, cuts):
    """Per pixel, for how many thresholds in a row (from the first) it was in the largest
    component of both >= cut.

    The pixels still in the chain at threshold i were in every largest component so far. The
    largest component at i lies inside one component at i - 1: the previous largest (the chain
    goes on inside it) or another one (the chain ends). So only the previous largest component
    needs labelling, unless a component outside it could be as large: `rival` bounds every
    component outside the chain (no component grows as the threshold rises).
    """
    stays = np.zeros(both.shape, np.min_scalar_type(len(cuts)))
    box, chain, rival = _whole(both.shape), None, 0
    for cut in cuts:
        if chain is None:
            omega, size, rival = _largest_component(both >= cut)
        else:
            omega, size, second = _largest_component((both[box] >= cut) & chain)
            if size > rival:
                rival = max(rival, second)
            elif size:  # a component outside the chain may be as large: label the whole image
                omega, size, rival = _largest_component(both >= cut)
                row, col = np.unravel_index(np.argmax(omega), omega.shape)  # omega's first pixel
                if not _box_mask_holds(box, chain, row, col):
                    break
                box = _whole(both.shape)
        if size == 0:
            break
        local = _bounding_box(omega)
        box = tuple(slice(outer.start + inner.start, outer.start + inner.stop) for outer, inner in zip(box, local))
        chain = omega[local]
        stays[box] += chain
    return stays


def _bounding_box(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _box_mask_holds(box, mask, row, col):
    """Whether pixel (row, col) is set in `mask`, which covers `box` of the image."""
    rows, cols = box
    return rows.start <= row < rows.stop and cols.start <= col < cols.stop and mask[row - rows.start, col - cols.start]


def _largest_component(mask):
    """(mask of the largest 4-connected component, its size, the size of the next largest);
    ties go to the first component in column-major order, as in MATLAB's bwconncomp."""
    labels, n = ndimage.label(mask, structure=_FOUR_CONNECTED)
    if n == 0:
        return np.zeros_like(mask), 0, 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    best = int(np.argmax(sizes))
    if np.count_nonzero(sizes == sizes[best]) > 1:  # labelling the transpose numbers column-major
        labels = ndimage.label(mask.T, structure=_FOUR_CONNECTED)[0].T
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        best = int(np.argmax(sizes))
    size = int(sizes[best])
    sizes[best] = 0
    return labels == best, size, int(sizes.max())


def connectivity_phi(a8, l_map, theta=CONN_THETA):
    """phi = 1 - d * (d >= theta), d = alpha - l_map, in single precision as in MATLAB."""
    d = a8.astype(np.float32) / np.float32(255) - l_map
    return 1.0 - d * (d >= theta)


def _region_sum(values, mask):
    """Sum over the region (None: everything); the selected pixels are summed in row-major order
    whatever box `values` covers, so a region's value does not depend on the other regions."""
    dtype = np.int64 if np.issubdtype(values.dtype, np.integer) else np.float64  # exact integer sums
    return float((values if mask is None else values[mask]).sum(dtype=dtype))


def _hw(shape):
    return "x".join(str(s) for s in shape)


def _prepare(pred, gt):
    p8, g8 = as_matte(pred, "pred"), as_matte(gt, "gt")
    if p8.shape != g8.shape:
        raise PpidError(f"pred is {_hw(p8.shape)} but gt is {_hw(g8.shape)}")
    return p8, g8


def _evaluated_window(masks, shape):
    """Slices of the smallest box holding every evaluated pixel: the whole image if a region is
    'whole', an empty box if no region has pixels."""
    if any(mask is None for mask in masks):
        return _whole(shape)
    union = functools.reduce(np.logical_or, masks)
    if not union.any():
        return slice(0, 0), slice(0, 0)
    return _bounding_box(union)


def _error_maps(p8, g8, names, window):
    """Per-pixel terms of the requested metrics inside `window`, computed once, reduced per region."""
    maps = {}
    p_in, g_in = p8[window], g8[window]
    diff = np.maximum(p_in, g_in) - np.minimum(p_in, g_in)  # |p - g| of 8-bit values, exact in uint8
    if "sad" in names:
        maps["sad"] = diff
    if "mse" in names:
        maps["mse"] = np.square(diff, dtype=np.uint16)  # at most 255^2
    if "grad" in names:
        maps["grad"] = (gradient_magnitude(p8, window=window) - gradient_magnitude(g8, window=window)) ** 2
    if "conn" in names:
        l_map = connectivity_levels(p8, g8, window=window)
        maps["conn"] = np.abs(connectivity_phi(p_in, l_map) - connectivity_phi(g_in, l_map))
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
    # Grad and Conn of a pixel depend on pixels outside the region, but only the region's pixels
    # are summed: the per-pixel terms are computed inside the regions' bounding box only.
    window = _evaluated_window(masks.values(), p8.shape)
    maps = _error_maps(p8, g8, names, window)
    return {region: _reduce(maps, None if mask is None else mask[window], p8.size) for region, mask in masks.items()}


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

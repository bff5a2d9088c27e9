"""Compositing and trimaps.

Every function takes NumPy arrays (file conventions: alpha HxW float32, trimap uint8 0/128/255) or
torch tensors (batch conventions: alpha (N,1,H,W), trimap float in {0, 0.5, 1}). The NumPy and
torch trimaps agree exactly for the same kernel.
"""

import numpy as np
from scipy import ndimage

# A pixel is known foreground / background when its 8-bit value is 255 / 0, so the round-off of a
# resize (1.0 -> 0.99999994) does not turn solid pixels into transition pixels.
KNOWN_TOLERANCE = 0.5 / 255.0

# DIM's training rule: erosion kernels of 1..30 px at 512 px, scaled with the training size.
TRAIN_KERNEL_MAX_AT_512 = 30
# The test rule: a square kernel of side 2r+1 with r = 7 px at a 512 px short side, scaled.
TEST_RADIUS_AT_512 = 7


def composite(fg, bg, alpha):
    """I = alpha * F + (1 - alpha) * B (eq. 1) in linear float.

    NumPy: fg, bg HxWx3, alpha HxW. Torch: fg, bg (..., 3, H, W), alpha (..., 1, H, W).
    """
    if alpha.ndim == fg.ndim - 1:  # NumPy HxW alpha against HxWx3 colours
        alpha = alpha[..., None]
    return alpha * fg + (1.0 - alpha) * bg


def known_masks(alpha):
    """(fg, bg) boolean masks: alpha == 1 and alpha == 0 up to `KNOWN_TOLERANCE`."""
    return alpha >= 1.0 - KNOWN_TOLERANCE, alpha <= KNOWN_TOLERANCE


def train_kernel_max(size, at_512=TRAIN_KERNEL_MAX_AT_512):
    """Largest random erosion kernel at training size `size` (`at_512` at 512, at least 1)."""
    return max(1, round(at_512 * size / 512))


def test_kernel(shape):
    """Kernel of `test_trimap` for an image of shape (..., H, W): odd side 2r + 1 with
    r = max(1, round(7 * min(H, W) / 512)), i.e. 15 px at 512, 29 px at 1024, 3 px at 64."""
    radius = max(1, round(TEST_RADIUS_AT_512 * min(shape[-2:]) / 512))
    return 2 * radius + 1


def trimap_from_alpha(alpha, kernel):
    """Trimap from a matte: known foreground = (alpha == 1) eroded, known background =
    (alpha == 0) eroded, everything else unknown.

    The erosion uses a square kernel x kernel window; an even side is anchored like
    `scipy.ndimage` (offsets -(k//2) .. (k-1)//2). Pixels outside the image do not erode.
    NumPy alpha HxW -> uint8 HxW in {0, 128, 255}, `kernel` an int.
    Torch alpha (N,1,H,W) -> float (N,1,H,W) in {0, 0.5, 1}, `kernel` an int or an (N,) integer
    tensor (one kernel per sample).
    """
    if isinstance(alpha, np.ndarray):
        fg, bg = known_masks(alpha)
        # A minimum filter with edge replication is erosion with the outside counted as inside.
        fg = ndimage.minimum_filter(fg.astype(np.uint8), size=kernel, mode="nearest").astype(bool)
        bg = ndimage.minimum_filter(bg.astype(np.uint8), size=kernel, mode="nearest").astype(bool)
        trimap = np.full(alpha.shape, 128, dtype=np.uint8)
        trimap[fg] = 255
        trimap[bg] = 0
        return trimap
    return _trimap_torch(alpha, kernel)


def test_trimap(alpha):
    """The fixed test-time trimap: `trimap_from_alpha(alpha, test_kernel(alpha.shape))`."""
    return trimap_from_alpha(alpha, test_kernel(alpha.shape))


# Their names start with "test": keep pytest from collecting them when a test module imports them.
test_kernel.__test__ = test_trimap.__test__ = False


def _trimap_torch(alpha, kernel):
    import torch  # imported here so the NumPy-only commands (synth, test-set builder) stay light
    import torch.nn.functional as F

    n = alpha.shape[0]
    kernel = torch.as_tensor(kernel, device=alpha.device).expand(n).view(n, 1, 1, 1)
    fg, bg = known_masks(alpha)
    # Erode by dilating the complement; zero padding of the complement = outside counts as inside.
    outside = torch.cat([~fg, ~bg], dim=1).to(alpha.dtype)
    eroded = outside
    # Window k+1 = window k grown by one pixel: up-left when k is odd, down-right when k is even,
    # which keeps scipy's anchor. One cheap 2x2 pooling per step serves every kernel in the batch.
    for k in range(1, int(kernel.max()) + 1):
        if k > 1:
            pad = (1, 0, 1, 0) if k % 2 == 0 else (0, 1, 0, 1)
            outside = F.max_pool2d(F.pad(outside, pad), 2, stride=1)
        eroded = torch.where(kernel == k, outside, eroded)
    fg_known, bg_known = eroded[:, :1] == 0, eroded[:, 1:] == 0
    return fg_known.to(alpha.dtype) + 0.5 * (~fg_known & ~bg_known).to(alpha.dtype)

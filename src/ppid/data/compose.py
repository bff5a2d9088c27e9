"""Compositing and trimaps."""


def composite(fg, bg, alpha):
    """I = alpha * F + (1 - alpha) * B (eq. 1) in linear float.

    NumPy: fg, bg HxWx3, alpha HxW. Torch: fg, bg (..., 3, H, W), alpha (..., 1, H, W).
    """
    if alpha.ndim == fg.ndim - 1:  # NumPy HxW alpha against HxWx3 colours
        alpha = alpha[..., None]
    return alpha * fg + (1.0 - alpha) * bg

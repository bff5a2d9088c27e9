"""Writes metrics_reference.npz: seeded small cases and the values ppid.metrics gave for them.

Run once, at commit d01da85 (before the metrics were sped up), as
    PYTHONPATH=src python tests/data/make_metrics_reference.py
test_metrics.py checks that today's code still gives these values (relative 1e-4). The inputs are
stored, not regenerated, so a different NumPy/SciPy cannot change them.
"""

from pathlib import Path

import numpy as np
from scipy import ndimage

from ppid.metrics import METRICS, REGIONS, metrics_by_region


def soft_object(shape, rng, center=(0.5, 0.5), radius=0.3):
    """A blob with a soft, noisy boundary (gt), a blurred estimate with errors (pred), its trimap."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    yy, xx = yy / h - center[0], xx / w - center[1]
    angle = np.arctan2(yy, xx)
    wobble = sum(rng.uniform(0.02, 0.1) * np.cos(k * angle + rng.uniform(0, 6.3)) for k in range(2, 6))
    inside = np.hypot(yy, xx) < radius * (1 + wobble)
    dist = ndimage.distance_transform_edt(inside) - ndimage.distance_transform_edt(~inside)
    ramp = np.exp(-np.abs(dist) / 2)
    gt = np.clip(0.5 + dist / 4 + 0.3 * rng.normal(0, 1, shape) * ramp, 0, 1)
    blotch = ndimage.gaussian_filter(rng.normal(0, 1, shape), 3)
    pred = np.clip(ndimage.gaussian_filter(gt, 1) + 3 * blotch * np.exp(-np.abs(dist) / 8), 0, 1)
    g8, p8 = to8(gt), to8(pred)
    band = ndimage.binary_dilation((g8 > 0) & (g8 < 255), iterations=3)
    trimap = np.where(g8 >= 128, 255, 0).astype(np.uint8)
    trimap[band] = 128
    return p8, g8, trimap


def to8(x):
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def noise_matte(shape, rng, sigma):
    a = ndimage.gaussian_filter(rng.random(shape), sigma)
    return to8((a - a.min()) / (a.max() - a.min()) * 1.6 - 0.3)


def cases():
    rng = np.random.default_rng(20240611)
    for shape in [(96, 128), (128, 96), (120, 150)]:
        yield soft_object(shape, rng)
    # The object cut by the top-left corner: the band touches the image border.
    yield soft_object((100, 110), rng, center=(0.1, 0.05), radius=0.4)
    # Many small components (ties and switching largest components are likely).
    p8, g8 = noise_matte((64, 80), rng, 1.5), noise_matte((64, 80), rng, 1.5)
    yield p8, g8, np.where(rng.random(p8.shape) < 0.3, 128, 255).astype(np.uint8)
    # A prediction that never reaches 255 (empty intersection at t = 1), band in the interior.
    p8, g8, trimap = soft_object((90, 90), rng)
    yield np.minimum(p8, 240), g8, trimap
    # A large low plateau beside a smaller high block: the largest component moves at t = 0.4.
    g8 = np.zeros((60, 70), np.uint8)
    g8[5:55, 5:30] = 90
    g8[10:30, 40:60] = 255
    p8 = to8(ndimage.gaussian_filter(g8 / 255.0, 1.2) + rng.normal(0, 0.02, g8.shape))
    trimap = np.full(g8.shape, 0, np.uint8)
    trimap[3:58, 3:62] = 128
    yield p8, g8, trimap
    # A constant prediction; a one-pixel transition region; a tiny image with a corner region.
    p8, g8, trimap = soft_object((70, 80), rng)
    yield np.zeros_like(p8), g8, trimap
    trimap = np.zeros_like(g8)
    trimap[35, 40] = 128
    yield p8, g8, trimap
    small = soft_object((7, 9), rng, radius=0.5)
    trimap = np.full((7, 9), 255, np.uint8)
    trimap[4:, 6:] = 128
    yield small[0], small[1], trimap


def main():
    inputs, values = {}, []
    for i, (p8, g8, trimap) in enumerate(cases()):
        inputs[f"pred_{i}"], inputs[f"gt_{i}"], inputs[f"trimap_{i}"] = p8, g8, trimap
        result = metrics_by_region(p8, g8, trimap, REGIONS)
        values.append([[result[region][m] for m in METRICS] for region in REGIONS])
    out = Path(__file__).with_name("metrics_reference.npz")
    np.savez_compressed(out, values=np.array(values), **inputs)
    print(f"wrote {out}: {len(values)} cases")
    print(np.array(values))


if __name__ == "__main__":
    main()

"""Metrics against hand-computed values of the DIM benchmark definitions."""

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from ppid import PpidError
from ppid.metrics import (
    METRICS,
    REGIONS,
    compute_metrics,
    conn,
    connectivity_levels,
    gauss_gradient_kernels,
    grad,
    gradient_magnitude,
    metrics_by_region,
    mse,
    sad,
)


def random_matte(shape=(40, 50), seed=0):
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random(shape), 3)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return np.round(np.clip(smooth * 1.6 - 0.3, 0, 1) * 255).astype(np.uint8)


def test_identical_mattes_give_zero():
    gt = random_matte()
    assert compute_metrics(gt, gt) == {"sad": 0.0, "mse": 0.0, "grad": 0.0, "conn": 0.0}


def test_all_zero_vs_all_one_in_documented_units():
    # 25 x 40 = 1000 pixels, each wrong by 1: SAD 1000/1000, MSE 1, Conn 1000/1000.
    zeros, ones = np.zeros((25, 40), np.uint8), np.full((25, 40), 255, np.uint8)
    m = compute_metrics(zeros, ones)
    assert m["sad"] == pytest.approx(1.0)
    assert m["mse"] == pytest.approx(1.0)
    assert m["grad"] == pytest.approx(0.0, abs=1e-12)  # constant mattes have no gradient
    assert m["conn"] == pytest.approx(1.0)


def test_constant_offset():
    gt = random_matte()
    gt = np.minimum(gt, 245)
    pred = gt + 10
    n = gt.size
    assert sad(pred, gt) == pytest.approx(10 / 255 * n / 1000)
    assert mse(pred, gt) == pytest.approx((10 / 255) ** 2)
    # mat2gray stretches both to the same [0, 1] image, so a pure offset has no gradient error.
    assert gt.min() == 0 and gt.max() == 245
    assert grad(pred, gt) == 0.0


def test_single_wrong_pixel_and_region_masking():
    gt = np.zeros((20, 30), np.uint8)
    pred = gt.copy()
    pred[5, 7] = 255
    assert sad(pred, gt) == pytest.approx(1 / 1000)
    assert mse(pred, gt) == pytest.approx(1 / gt.size)

    trimap = np.zeros_like(gt)
    trimap[4:8, 6:10] = 128  # 16 unknown pixels around the wrong one
    assert sad(pred, gt, trimap, "transition") == pytest.approx(1 / 1000)
    assert mse(pred, gt, trimap, "transition") == pytest.approx(1 / 16)
    # The whole-image region ignores the trimap.
    assert sad(pred, gt, trimap, "whole") == sad(pred, gt)

    trimap[:] = 255
    trimap[15:, 20:] = 128  # the region no longer holds the wrong pixel
    region = metrics_by_region(pred, gt, trimap, ("transition",))["transition"]
    assert region["sad"] == 0.0 and region["mse"] == 0.0 and region["conn"] == 0.0
    assert region["grad"] == pytest.approx(0.0, abs=1e-12)  # far beyond the 4-pixel kernel


def test_transition_region_sums_only_unknown_pixels():
    gt, pred = random_matte(seed=1), random_matte(seed=2)
    trimap = np.full(gt.shape, 255, np.uint8)
    trimap[:, :20] = 0
    trimap[10:30, 15:40] = 128
    whole = metrics_by_region(pred, gt, trimap, ("whole", "transition"))
    inside = trimap == 128
    diff = np.abs(pred.astype(float) - gt.astype(float)) / 255
    assert whole["transition"]["sad"] == pytest.approx(diff[inside].sum() / 1000)
    assert whole["transition"]["mse"] == pytest.approx((diff[inside] ** 2).mean())
    assert whole["whole"]["sad"] == pytest.approx(diff.sum() / 1000)
    for name in ("grad", "conn"):
        assert 0 < whole["transition"][name] < whole["whole"][name]
    # Sharing work across regions changes nothing.
    assert whole["transition"] == compute_metrics(pred, gt, trimap, "transition")


def test_all_metrics_are_symmetric():
    a, b = random_matte(seed=3), random_matte(seed=4)
    assert compute_metrics(a, b) == pytest.approx(compute_metrics(b, a))


def test_gauss_gradient_kernel_matches_matlab_construction():
    sigma, eps = 1.4, 1e-2
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * eps)))
    assert half == 4
    gauss = lambda x: math.exp(-x * x / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))  # noqa: E731
    dgauss = lambda x: -x * gauss(x) / sigma**2  # noqa: E731
    # gaussgradient.m: hx(i, j) = gauss(i) * dgauss(j), divided by sqrt(sum(hx.^2)); hy = hx'.
    hx = np.array([[gauss(i) * dgauss(j) for j in range(-half, half + 1)] for i in range(-half, half + 1)])
    hx /= np.sqrt((hx**2).sum())
    g, dg = gauss_gradient_kernels(sigma, eps)
    np.testing.assert_allclose(np.outer(g, dg), hx, rtol=1e-12)

    a = random_matte(seed=5)
    img = (a - a.min()) / float(a.max() - a.min())  # mat2gray
    gx = ndimage.convolve(img, hx, mode="nearest")  # imfilter(..., 'replicate', 'conv')
    gy = ndimage.convolve(img, hx.T, mode="nearest")
    np.testing.assert_allclose(gradient_magnitude(a), np.sqrt(gx**2 + gy**2), rtol=1e-6, atol=1e-7)


def test_grad_of_a_step_edge():
    # gt constant (zero gradient); pred a vertical 0 -> 255 step. Away from the top/bottom the
    # y-smoothing multiplies by sum(g) (replicate borders keep columns constant), the x-derivative
    # of the step at column offset c is the partial sum of dg, so Grad = H * sum(g)^2 * sum(S^2).
    h, w = 12, 30
    pred = np.zeros((h, w), np.uint8)
    pred[:, 15:] = 255
    gt = np.zeros_like(pred)
    g, dg = gauss_gradient_kernels()
    partial = np.cumsum(dg)[:-1]  # response at the 8 columns that see the step
    expected = h * g.sum() ** 2 * (partial**2).sum() / 1000
    assert grad(pred, gt) == pytest.approx(expected, rel=1e-5)
    # mat2gray: a 0 -> 100 step is stretched to the same 0 -> 1 step.
    assert grad(np.where(pred > 0, 100, 0).astype(np.uint8), gt) == pytest.approx(expected, rel=1e-5)


def test_conn_intermediate_level_from_a_component_layout():
    # gt all foreground. pred: block A at 255 touching block B at 128 (0.502), rest 0.
    # t = 0.1..0.5: A+B is the component; at t = 0.6 B leaves it -> l = 0.5; background -> l = 0.
    # B: phi_p = 1 (d = 0.002 < 0.15), phi_g = 1 - 0.5 -> |diff| = 0.5. Background: |1 - 0| = 1.
    # A stays to t = 1 -> l = 1 -> both phi = 1.
    gt = np.full((20, 20), 255, np.uint8)
    pred = np.zeros_like(gt)
    pred[2:8, 2:8] = 255  # A: 36 px
    pred[8:12, 2:8] = 128  # B: 24 px, 4-connected to A
    n_bg = gt.size - 36 - 24
    assert conn(pred, gt) == pytest.approx((n_bg + 0.5 * 24) / 1000, rel=1e-6)


def test_conn_keeps_only_the_largest_component():
    # A big and a small foreground block, apart; only the big one sets levels above 0.
    # Small block: l = 0, pred 0.8 and gt 1 -> |(1 - 0.8) - (1 - 1)| = 0.2 per pixel.
    gt = np.zeros((20, 20), np.uint8)
    gt[1:9, 1:9] = 255
    gt[14:17, 14:17] = 255
    pred = gt.copy()
    pred[14:17, 14:17] = 204
    assert conn(pred, gt) == pytest.approx(9 * (1 - 204 / 255) / 1000, rel=1e-6)
    # The same error in the big block keeps it the largest component up to t = 0.8 (l = 0.8):
    # d_p = 0 and d_g = 0.2 -> |1 - 0.8| per pixel. The small block is exact (p = g -> no error).
    pred = gt.copy()
    pred[1:9, 1:9] = 204
    assert conn(pred, gt) == pytest.approx(64 * 0.2 / 1000, rel=1e-5)


def test_conn_tie_takes_first_component_in_column_major_order():
    # Two 2x2 components of equal size; the prediction never reaches 1, so at t = 1 the kept
    # component gets l = 0.9 (no error) and the other l = 0 (error 1 - p per pixel).
    # bwconncomp numbers components by their first pixel in column-major order: the bottom-left
    # block (column 0) wins over the top-right one (column 6).
    gt = np.zeros((8, 8), np.uint8)
    gt[0:2, 6:8] = 255
    gt[6:8, 0:2] = 255
    pred = np.zeros_like(gt)
    pred[0:2, 6:8] = 230  # top-right: loses the tie -> 4 * (1 - 230/255)
    pred[6:8, 0:2] = 240
    assert conn(pred, gt) == pytest.approx(4 * (1 - 230 / 255) / 1000, rel=1e-5)


def direct_connectivity_levels(p8, g8):
    """compute_connectivity_error.m's loop transcribed: one labelling per threshold, of the
    transposed mask so that labels (and ties) follow bwconncomp's column-major order."""
    p, g = p8.astype(np.float32) / np.float32(255), g8.astype(np.float32) / np.float32(255)
    thresholds = np.arange(0, 11) * 0.1
    l_map = np.full(p.shape, -1.0, np.float32)
    for prev, t in zip(thresholds[:-1], thresholds[1:]):
        labels, n = ndimage.label(((p >= t) & (g >= t)).T)  # 4-connected
        omega = (labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1).T if n else np.zeros(p.shape, bool)
        l_map[(l_map == -1) & ~omega] = prev
    l_map[l_map == -1] = 1
    return l_map


def test_connectivity_levels_equal_the_direct_transcription():
    # Few grey levels make ties, largest components that move to another component, and chains
    # that end early frequent; blobs make nested components over many thresholds.
    rng = np.random.default_rng(0)
    palette = np.array([0, 20, 26, 90, 128, 200, 254, 255], np.uint8)
    for i in range(150):
        shape = tuple(rng.integers(1, 24, 2))
        if i % 3 == 0:
            p8, g8 = palette[rng.integers(0, 8, shape)], palette[rng.integers(0, 8, shape)]
        elif i % 3 == 1:
            p8, g8 = (rng.integers(0, 256, shape).astype(np.uint8) for _ in range(2))
        else:
            p8, g8 = random_matte(shape, seed=i), random_matte(shape, seed=i + 1000)
        np.testing.assert_array_equal(connectivity_levels(p8, g8), direct_connectivity_levels(p8, g8), err_msg=f"case {i}")


def test_gradient_inside_a_window_equals_the_whole_image_filter():
    a = random_matte((30, 40), seed=11)
    whole = gradient_magnitude(a)
    for rows, cols in [(slice(10, 20), slice(12, 30)), (slice(0, 5), slice(35, 40)), (slice(29, 30), slice(0, 40)),
                       (slice(7, 8), slice(9, 10)), (slice(3, 3), slice(0, 40))]:
        np.testing.assert_array_equal(gradient_magnitude(a, window=(rows, cols)), whole[rows, cols])


def test_float_and_uint8_give_the_same_numbers():
    gt8, pred8 = random_matte(seed=6), random_matte(seed=7)
    gt_f, pred_f = gt8 / 255.0, pred8.astype(np.float32) / 255
    assert compute_metrics(pred_f, gt_f) == compute_metrics(pred8, gt8)
    # Floats are quantised like an 8-bit PNG write: 0.5 -> 127.5 -> 128, 0.501 -> 127.8 -> 128.
    half = np.full((4, 4), 0.5)
    assert sad(half, np.full((4, 4), 128, np.uint8)) == 0.0
    assert sad(half + 0.001, np.full((4, 4), 128, np.uint8)) == 0.0
    assert sad(half + 0.005, np.full((4, 4), 128, np.uint8)) == pytest.approx(16 / 255 / 1000)  # 128.8 -> 129


def test_torch_tensors_and_channel_dims_are_accepted():
    torch = pytest.importorskip("torch")
    gt, pred = random_matte(seed=8), random_matte(seed=9)
    expected = compute_metrics(pred, gt)
    pred_t = torch.from_numpy(pred / 255.0).to(torch.float16)[None]  # (1, H, W), half precision
    got = compute_metrics(pred_t, gt[:, :, None])
    # float16 keeps every k/255 within half an 8-bit step, so the quantised mattes are equal.
    assert got == expected


def test_empty_transition_region_gives_nan_mse():
    gt = random_matte()
    trimap = np.full(gt.shape, 255, np.uint8)
    m = compute_metrics(gt, gt, trimap, "transition")
    assert math.isnan(m["mse"]) and m["sad"] == 0.0


@pytest.mark.parametrize(
    "pred, gt, trimap, region, message",
    [
        (np.zeros((4, 5)), np.zeros((4, 4)), None, "whole", "pred is 4x5 but gt is 4x4"),
        (np.full((4, 4), np.nan), np.zeros((4, 4)), None, "whole", "NaN"),
        (np.full((4, 4), 200.0), np.zeros((4, 4)), None, "whole", "outside [0, 1]"),
        (np.zeros((4, 4), np.int32), np.zeros((4, 4)), None, "whole", "expected uint8 or float"),
        (np.zeros((2, 4, 4)), np.zeros((4, 4)), None, "whole", "expected an HxW matte"),
        (np.zeros((4, 4)), np.zeros((4, 4)), None, "transition", "needs a trimap"),
        (np.zeros((4, 4)), np.zeros((4, 4)), np.full((4, 4), 60, np.uint8), "transition", "0/128/255"),
        (np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((3, 4), np.uint8), "transition", "trimap is 3x4"),
        (np.zeros((4, 4)), np.zeros((4, 4)), None, "unknown", "unknown region"),
    ],
)
def test_bad_input_is_a_clear_error(pred, gt, trimap, region, message):
    with pytest.raises(PpidError, match=message.replace("[", r"\[").replace("]", r"\]")):
        compute_metrics(pred, gt, trimap, region)


def test_values_match_the_reference_values_of_the_first_implementation():
    # Seeded cases (soft objects, a band on the border, many small components, a prediction that
    # never reaches 255, a largest component that moves, a constant prediction, one-pixel and
    # corner regions) with the values the plain implementation gave (tests/data/make_metrics_reference.py).
    reference = np.load(Path(__file__).with_name("data") / "metrics_reference.npz")
    for i, expected in enumerate(reference["values"]):
        pred, gt, trimap = (reference[f"{kind}_{i}"] for kind in ("pred", "gt", "trimap"))
        got = metrics_by_region(pred, gt, trimap, REGIONS)
        for region, row in zip(REGIONS, expected):
            values = [got[region][m] for m in METRICS]
            np.testing.assert_allclose(values, row, rtol=1e-4, atol=1e-12, err_msg=f"case {i}, {region}")

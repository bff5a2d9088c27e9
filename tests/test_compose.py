import numpy as np
import pytest
import torch

from ppid.data.compose import composite, test_kernel, test_trimap, train_kernel_max, trimap_from_alpha


def as_codes(trimap):
    """Torch trimap {0, 0.5, 1} -> the file codes {0, 128, 255}."""
    return np.select([trimap == 1.0, trimap == 0.5], [255, 128], 0).astype(np.uint8)


def soft_disc(h, w, radius, ramp):
    yy, xx = np.mgrid[:h, :w]
    return np.clip((radius - np.hypot(yy - h / 2, xx - w / 3)) / ramp, 0, 1).astype(np.float32)


def test_composite_numpy_is_eq1():
    fg = np.array([[[1.0, 0.5, 0.0], [0.2, 0.4, 0.6]]], dtype=np.float32)
    bg = np.array([[[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]], dtype=np.float32)
    alpha = np.array([[0.25, 1.0]], dtype=np.float32)
    out = composite(fg, bg, alpha)
    np.testing.assert_allclose(out[0, 0], [0.25, 0.125, 0.75])
    np.testing.assert_allclose(out[0, 1], fg[0, 1])
    assert out.shape == (1, 2, 3) and out.dtype == np.float32


def test_composite_torch_matches_numpy():
    rng = np.random.default_rng(0)
    fg, bg = rng.random((2, 5, 6, 3), dtype=np.float32)
    alpha = rng.random((5, 6), dtype=np.float32)
    expected = composite(fg, bg, alpha)
    t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]  # noqa: E731
    out = composite(t(fg), t(bg), torch.from_numpy(alpha)[None, None])
    assert out.shape == (1, 3, 5, 6)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_trimap_by_hand():
    # Columns: three solid, one half-transparent, three empty.
    alpha = np.tile(np.array([1, 1, 1, 0.5, 0, 0, 0], dtype=np.float32), (5, 1))
    rows = {k: trimap_from_alpha(alpha, k) for k in (1, 2, 3)}
    assert rows[1].dtype == np.uint8
    np.testing.assert_array_equal(rows[1], np.tile([255, 255, 255, 128, 0, 0, 0], (5, 1)))
    # Even kernels look one pixel up/left (offsets -1..0): only the background edge erodes.
    np.testing.assert_array_equal(rows[2], np.tile([255, 255, 255, 128, 128, 0, 0], (5, 1)))
    # The image border does not erode (top/bottom rows stay known).
    np.testing.assert_array_equal(rows[3], np.tile([255, 255, 128, 128, 128, 0, 0], (5, 1)))


def test_resize_roundoff_counts_as_known():
    alpha = np.array([[0.99999994, 1e-7, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(trimap_from_alpha(alpha, 1), [[255, 0, 128]])


@pytest.mark.parametrize("kernel", range(1, 14))
def test_numpy_and_torch_trimaps_agree(kernel):
    alpha = soft_disc(37, 45, 12, 3)
    alpha[3:6, 30:34] = 1.0  # a small solid island that larger kernels erase
    expected = trimap_from_alpha(alpha, kernel)
    out = trimap_from_alpha(torch.from_numpy(alpha)[None, None], kernel)
    assert out.dtype == torch.float32 and out.shape == (1, 1, 37, 45)
    np.testing.assert_array_equal(as_codes(out[0, 0].numpy()), expected)


def test_torch_trimap_per_sample_kernels():
    alphas = np.stack([soft_disc(40, 40, 10 + i, 2 + i) for i in range(4)])
    kernels = torch.tensor([1, 4, 9, 30])
    out = trimap_from_alpha(torch.from_numpy(alphas)[:, None], kernels)
    for a, k, t in zip(alphas, kernels.tolist(), out):
        np.testing.assert_array_equal(as_codes(t[0].numpy()), trimap_from_alpha(a, k))


def test_larger_kernels_grow_the_unknown_region():
    alpha = soft_disc(64, 64, 20, 2)
    unknown = [(trimap_from_alpha(alpha, k) == 128).sum() for k in (1, 5, 15)]
    assert unknown[0] < unknown[1] < unknown[2]


def test_test_trimap_rule():
    assert [test_kernel((h, h)) for h in (64, 512, 1024)] == [3, 15, 29]
    assert test_kernel((3, 800, 512)) == 15  # the short side decides
    alpha = soft_disc(96, 128, 30, 4)
    trimap = test_trimap(alpha)
    np.testing.assert_array_equal(trimap, trimap_from_alpha(alpha, 3))
    assert set(np.unique(trimap)) == {0, 128, 255}
    transition = (alpha > 0) & (alpha < 1)
    assert (trimap[transition] == 128).all()
    assert (trimap[trimap == 255] == 255).all() and (alpha[trimap == 255] == 1).all()
    assert (alpha[trimap == 0] == 0).all()


def test_train_kernel_range_scales_with_size():
    assert train_kernel_max(512) == 30
    assert train_kernel_max(256) == 15
    assert train_kernel_max(8) == 1

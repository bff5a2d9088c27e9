import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from ppid import PpidError
from ppid.foreground import box_blur, estimate_foreground, transition_error

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "foreground_speed.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("foreground_speed", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scene():
    return load_benchmark().make_scene(180, 320, seed=3)


def test_box_blur_matches_clipped_window_mean():
    x = torch.rand(2, 3, 17, 23, dtype=torch.float64)
    r = 4
    got = box_blur(x, r)
    for i, j in [(0, 0), (8, 11), (16, 22), (3, 20)]:
        window = x[..., max(i - r, 0): i + r + 1, max(j - r, 0): j + r + 1]
        torch.testing.assert_close(got[..., i, j], window.mean(dim=(-2, -1)))


def test_blur_fusion_removes_background_fringe(scene):
    image, fg_true, _, alpha, regions = scene
    fg = estimate_foreground(image, alpha)
    assert fg.shape == image.shape and fg.dtype == np.float32
    assert 0.0 <= fg.min() and fg.max() <= 1.0
    naive = transition_error(image, fg_true, alpha * regions["hair"])
    ours = transition_error(fg, fg_true, alpha * regions["hair"])
    assert ours < 0.4 * naive, (naive, ours)  # hair strands: the old background is mostly gone
    overall_naive = transition_error(image, fg_true, alpha)
    assert transition_error(fg, fg_true, alpha) < 0.8 * overall_naive
    # fully opaque pixels are the image itself
    opaque = alpha == 1
    np.testing.assert_allclose(fg[opaque], image[opaque], atol=1e-4)


def test_soft_edge_between_flat_colours_recovers_foreground():
    h, w = 64, 96
    alpha = np.tile(np.clip((np.arange(w, dtype=np.float32) - 40) / 12, 0, 1), (h, 1))
    fg_true = np.broadcast_to(np.float32([0.9, 0.2, 0.1]), (h, w, 3))
    bg = np.broadcast_to(np.float32([0.1, 0.7, 0.3]), (h, w, 3))
    image = alpha[..., None] * fg_true + (1 - alpha[..., None]) * bg
    fg = estimate_foreground(image, alpha)
    naive = transition_error(image, fg_true, alpha)  # 0.18
    assert transition_error(fg, fg_true, alpha) < 0.1 * naive


def test_numpy_uint8_and_torch_batches_agree(scene):
    image, _, _, alpha, _ = scene
    fg_np = estimate_foreground((image * 255).round().astype(np.uint8), (alpha * 255).round().astype(np.uint8))
    img_t = torch.from_numpy(np.round(image * 255) / 255).permute(2, 0, 1)
    a_t = torch.from_numpy(np.round(alpha * 255) / 255)[None]
    batch = estimate_foreground(torch.stack([img_t, img_t.flip(-1)]), torch.stack([a_t, a_t.flip(-1)]))
    assert batch.shape == (2, 3) + image.shape[:2] and batch.dtype == torch.float32
    np.testing.assert_allclose(batch[0].permute(1, 2, 0).numpy(), fg_np, atol=1e-4)
    torch.testing.assert_close(batch[1], batch[0].flip(-1), atol=1e-4, rtol=0)


def test_half_precision_input_is_computed_in_float32(scene):
    image, _, _, alpha, _ = scene
    img_t = torch.from_numpy(image).permute(2, 0, 1)[None]
    a_t = torch.from_numpy(alpha)[None, None]
    ref = estimate_foreground(img_t, a_t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = estimate_foreground(img_t.bfloat16(), a_t.bfloat16())
    assert low.dtype == torch.float32
    assert (low - ref).abs().mean() < 5e-3


def test_bad_shapes_raise_one_line_error():
    with pytest.raises(PpidError, match="alpha HxW"):
        estimate_foreground(np.zeros((8, 8, 3)), np.zeros((8, 9)))
    with pytest.raises(PpidError, match="matching the image"):
        estimate_foreground(torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 4, 8))

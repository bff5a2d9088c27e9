import numpy as np
import pytest
import torch

from ppid import PpidError
from ppid.data.synth import KINDS, make_background, make_foreground
from ppid.foreground import estimate_foreground, estimate_foreground_torch, foreground_error

SIZE = (96, 128)


def torch_estimate(image, alpha):
    """estimate_foreground_torch on NumPy HxWx3 / HxW (the GPU code path, run on the CPU)."""
    fg = estimate_foreground_torch(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(alpha)[None])
    return fg.permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def scenes():
    """One synth foreground of every kind over its procedural background, with known F:
    [(group, image, fg, alpha)]."""
    out = []
    for index in range(len(KINDS)):
        fg, alpha, meta = make_foreground(5, index, SIZE)
        bg, _ = make_background(5, index, SIZE, n_fg=len(KINDS))
        image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
        out.append((meta["group"], image.astype(np.float32), fg, alpha))
    return out


@pytest.fixture(scope="module")
def disc():
    """A red disc with a soft 4 px edge over a flat blue background: (image, alpha, red, blue)."""
    y, x = np.mgrid[0:64, 0:64]
    alpha = np.clip((20 - np.hypot(y - 32, x - 32)) / 4, 0, 1).astype(np.float32)
    red, blue = np.float32([0.9, 0.15, 0.1]), np.float32([0.1, 0.2, 0.8])
    image = alpha[..., None] * red + (1 - alpha[..., None]) * blue
    return image.astype(np.float32), alpha, red, blue


@pytest.mark.parametrize("estimate", [estimate_foreground, torch_estimate], ids=["pymatting", "torch"])
def test_recovers_foreground_better_than_the_photo_colours(scenes, estimate):
    # transparent kinds are left out: over a wide translucent body no local method can tell F from B
    for group, image, fg_true, alpha in scenes:
        fg = estimate(image, alpha)
        assert fg.shape == image.shape and fg.dtype == np.float32
        assert 0.0 <= fg.min() and fg.max() <= 1.0
        if group == "non-transparent":
            naive = foreground_error(image, fg_true, alpha)
            assert foreground_error(fg, fg_true, alpha) < 0.6 * naive


def test_torch_estimator_is_as_accurate_as_pymatting(scenes):
    errors = {"pymatting": [], "torch": []}
    for group, image, fg_true, alpha in scenes:
        errors["pymatting"].append((group, foreground_error(estimate_foreground(image, alpha), fg_true, alpha)))
        errors["torch"].append((group, foreground_error(torch_estimate(image, alpha), fg_true, alpha)))
    for group in ("non-transparent", "all"):
        reference, ours = (np.mean([e for g, e in errors[m] if group in (g, "all")]) for m in ("pymatting", "torch"))
        assert ours < 1.1 * reference, (group, reference, ours)


@pytest.mark.parametrize("estimate", [estimate_foreground, torch_estimate], ids=["pymatting", "torch"])
def test_clear_pixels_take_the_colour_of_the_object_next_to_them(disc, estimate):
    image, alpha, red, blue = disc
    fg = estimate(image, alpha)
    distance = np.hypot(*(np.mgrid[0:64, 0:64] - 32))
    ring = (alpha == 0) & (distance < 26)  # up to 6 px outside the object
    assert ring.sum() > 100
    assert np.abs(fg[ring] - red).max() < 0.1  # not black, not the old blue background
    np.testing.assert_allclose(fg[alpha == 1], image[alpha == 1], atol=0.02)


def test_numpy_input_types(disc):
    image, alpha, _, _ = disc
    reference = estimate_foreground(image, alpha)
    as_uint8 = estimate_foreground(np.round(image * 255).astype(np.uint8), np.round(alpha * 255).astype(np.uint8))
    assert as_uint8.dtype == np.float32 and np.abs(as_uint8 - reference).max() < 0.02
    as_uint16 = estimate_foreground((image * 65535).astype(np.uint16), alpha.astype(np.float64))
    assert as_uint16.dtype == np.float32 and np.abs(as_uint16 - reference).max() < 0.01
    grey = estimate_foreground(image[..., 0], alpha)
    assert grey.shape == alpha.shape and grey.dtype == np.float32
    np.testing.assert_allclose(grey, reference[..., 0], atol=1e-5)


def test_cpu_tensor_batches_match_numpy(disc):
    image, alpha, _, _ = disc
    image_t, alpha_t = torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(alpha)[None]
    batch = estimate_foreground(torch.stack([image_t, image_t.flip(-1)]), torch.stack([alpha_t, alpha_t.flip(-1)]))
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.float32 and batch.device.type == "cpu"
    np.testing.assert_allclose(batch[0].permute(1, 2, 0).numpy(), estimate_foreground(image, alpha), atol=1e-6)
    np.testing.assert_allclose(batch[1].flip(-1), batch[0], atol=1e-3)


def test_torch_estimator_batches_and_half_precision(disc):
    image, alpha, _, _ = disc
    image_t, alpha_t = torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(alpha)[None]
    single = estimate_foreground_torch(image_t, alpha_t)
    batch = estimate_foreground_torch(torch.stack([image_t, image_t.flip(-1)]), torch.stack([alpha_t, alpha_t.flip(-1)]))
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.float32
    torch.testing.assert_close(batch[0], single)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = estimate_foreground_torch(image_t.bfloat16(), alpha_t.bfloat16())
    assert low.dtype == torch.float32 and (low - single).abs().mean() < 5e-3


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(PpidError, match=r"RGBA .*image\[\.\.\., :3\]"):
        estimate_foreground(np.zeros((8, 8, 4)), np.zeros((8, 8)))
    with pytest.raises(PpidError, match="alpha HxW, got"):
        estimate_foreground(np.zeros((8, 8, 3)), np.zeros((8, 9)))
    with pytest.raises(PpidError, match="uint8, uint16 or float"):
        estimate_foreground(np.zeros((8, 8, 3), np.int64), np.zeros((8, 8)))
    with pytest.raises(PpidError, match="matching the image"):
        estimate_foreground(torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 4, 8))
    with pytest.raises(PpidError, match="matching the image"):
        estimate_foreground_torch(torch.zeros(2, 3, 8, 8), torch.zeros(1, 1, 8, 8))


def test_foreground_error_weighs_soft_pixels_by_alpha():
    alpha = np.float32([[0.0, 0.5, 1.0, 0.25]])
    fg_true = np.zeros((1, 4, 3), np.float32)
    fg = np.full((1, 4, 3), 0.4, np.float32)
    # only 0.5 and 0.25 are soft: (0.5 * 0.4 + 0.25 * 0.4) / 2
    assert foreground_error(fg, fg_true, alpha) == pytest.approx(0.15)
    with pytest.raises(PpidError, match="no pixels"):
        foreground_error(fg, fg_true, np.float32([[0.0, 1.0, 1.0, 0.0]]))

import numpy as np
import pytest
import torch
from PIL import Image

from ppid import PpidError
from ppid.data.augment import (
    BatchAugmenter,
    TrainDataset,
    _crop_resize,
    _hsv_to_rgb,
    _rgb_to_hsv,
    load_bank,
)
from ppid.data.compose import composite
from ppid.data.datasets import MattingSource

SIZE = 64
KEYS = {"image": 3, "trimap": 1, "alpha": 1, "fg": 3, "bg": 3}
FG_SHAPES = [(96, 128), (150, 110), (200, 200)]  # some smaller than the largest scaled crop (120)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors on a shared 2-core machine: thread hand-offs would cost more than the maths.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_source(root, fg_shapes=FG_SHAPES, bg_shapes=((80, 120), (130, 90))):
    rng = np.random.default_rng(0)
    for sub in ("fg", "alpha", "bg"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for i, (h, w) in enumerate(fg_shapes):
        yy, xx = np.mgrid[:h, :w]
        # A soft-edged disc off-centre: a 4 px ramp of transition pixels.
        alpha = np.clip((min(h, w) / 3 - np.hypot(yy - h / 2, xx - w / 3)) / 4, 0, 1)
        fg = np.concatenate([np.full((h, w, 1), 0.9), rng.random((h, w, 2)) * 0.5], axis=2)
        Image.fromarray(np.round(alpha * 255).astype(np.uint8)).save(root / f"alpha/f{i}.png")
        Image.fromarray(np.round(fg * 255).astype(np.uint8)).save(root / f"fg/f{i}.png")
        names.append(f"f{i}")
    for i, (h, w) in enumerate(bg_shapes):
        bg = np.concatenate([rng.random((h, w, 2)) * 0.4, np.full((h, w, 1), 0.8)], axis=2)
        Image.fromarray(np.round(bg * 255).astype(np.uint8)).save(root / f"bg/b{i}.png")
    return MattingSource(
        root=root,
        names=names,
        fg=[root / f"fg/{n}.png" for n in names],
        alpha=[root / f"alpha/{n}.png" for n in names],
        bg=sorted((root / "bg").glob("*.png")),
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_source(tmp_path_factory.mktemp("data"))


def check_batch(batch, n):
    assert set(batch) == set(KEYS)
    for key, channels in KEYS.items():
        value = batch[key]
        assert value.dtype == torch.float32, key
        assert value.shape == (n, channels, SIZE, SIZE), key
        assert value.min() >= 0 and value.max() <= 1, key
    assert set(torch.unique(batch["trimap"]).tolist()) <= {0.0, 0.5, 1.0}
    torch.testing.assert_close(batch["image"], composite(batch["fg"], batch["bg"], batch["alpha"]))
    alpha, trimap = batch["alpha"], batch["trimap"]
    transition = (alpha > 0.002) & (alpha < 0.998)
    assert (trimap[transition] == 0.5).all()  # the unknown region covers every soft pixel
    assert (alpha[trimap == 1] > 0.99).all() and (alpha[trimap == 0] < 0.01).all()
    # Every crop is centred on a transition pixel of a matte that has them.
    assert transition.flatten(1).any(dim=1).all()


def stack(samples):
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


def statistics(batch):
    alpha, trimap = batch["alpha"], batch["trimap"]
    return {
        "mean alpha": alpha.mean().item(),
        "unknown fraction": (trimap == 0.5).float().mean().item(),
        "crops with transition": ((alpha > 0.002) & (alpha < 0.998)).flatten(1).any(1).float().mean().item(),
        "mean image": batch["image"].mean().item(),
        "mean fg red": batch["fg"][:, 0].mean().item(),
    }


def test_train_dataset_samples(source):
    dataset = TrainDataset(source, SIZE, length=12)
    assert len(dataset) == 12
    check_batch(stack([dataset[i] for i in range(12)]), 12)
    with pytest.raises(IndexError):
        dataset[12]


def test_batch_augmenter_samples(source):
    augmenter = BatchAugmenter(load_bank(source, "cpu"), SIZE)
    check_batch(augmenter.sample(16, torch.Generator().manual_seed(0)), 16)


def test_jitter_keeps_contract(source):
    dataset = TrainDataset(source, SIZE, jitter=True, length=6)
    check_batch(stack([dataset[i] for i in range(6)]), 6)
    augmenter = BatchAugmenter(load_bank(source, "cpu"), SIZE, jitter=True)
    check_batch(augmenter.sample(6, torch.Generator().manual_seed(0)), 6)


def test_deterministic_with_seed(source):
    a, b = TrainDataset(source, SIZE, seed=3, length=4), TrainDataset(source, SIZE, seed=3, length=4)
    for key, value in a[2].items():
        torch.testing.assert_close(value, b[2][key], rtol=0, atol=0)
    other = TrainDataset(source, SIZE, seed=4, length=4)[2]
    assert not torch.equal(other["image"], a[2]["image"])

    augmenter = BatchAugmenter(load_bank(source, "cpu"), SIZE, jitter=True)
    first = augmenter.sample(5, torch.Generator().manual_seed(7))
    again = augmenter.sample(5, torch.Generator().manual_seed(7))
    for key in first:
        assert torch.equal(first[key], again[key]), key


def test_cpu_and_batch_paths_share_statistics(source):
    n = 240
    dataset = TrainDataset(source, SIZE, seed=1, length=n)
    cpu = statistics(stack([dataset[i] for i in range(n)]))
    bank = BatchAugmenter(load_bank(source, "cpu"), SIZE).sample(n, torch.Generator().manual_seed(1))
    # A bank downsized below the file sizes scales its crops: the same content, fewer pixels.
    small = BatchAugmenter(load_bank(source, "cpu", max_side=100), SIZE).sample(n, torch.Generator().manual_seed(2))
    for batch in (bank, small):
        stats = statistics(batch)
        assert stats["crops with transition"] == cpu["crops with transition"] == 1.0
        for key in ("mean alpha", "mean image", "mean fg red"):
            assert abs(stats[key] - cpu[key]) < 0.04, (key, stats[key], cpu[key])
        assert abs(stats["unknown fraction"] - cpu["unknown fraction"]) < 0.04, (stats, cpu)


def test_crop_sizes_control_the_field_of_view(source):
    def mean_alpha(crop):
        dataset = TrainDataset(source, SIZE, crop_sizes=(crop,), length=60)
        return torch.stack([dataset[i]["alpha"] for i in range(60)]).mean().item()

    # Tight crops around the edge are half object; wide crops see the whole disc and more background.
    assert mean_alpha(128) > mean_alpha(1024) + 0.1


def test_crop_resize_geometry():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    zero, side = torch.zeros(2), torch.full((2,), 8.0)
    flip = torch.tensor([False, True])
    out = _crop_resize(x, zero, zero, side, 8, flip)
    torch.testing.assert_close(out[0], x[0])
    torch.testing.assert_close(out[1], x[1].flip(-1))
    # A 4x4 crop at (2, 4) read back at its own size.
    out = _crop_resize(x, torch.full((2,), 2.0), torch.full((2,), 4.0), torch.full((2,), 4.0), 4, torch.zeros(2, dtype=torch.bool))
    torch.testing.assert_close(out, x[:, :, 2:6, 4:8])


def test_hsv_round_trip():
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    rgb[0, :, 0, 0] = 0.5  # grey: no hue
    torch.testing.assert_close(_hsv_to_rgb(*_rgb_to_hsv(rgb)), rgb, atol=1e-5, rtol=0)


def test_bank_stacks_items_of_different_sizes(source):
    bank = load_bank(source, "cpu", max_side=100)
    assert bank.fga.shape == (3, 4, 100, 100) and bank.centres.shape == (3, 100 * 100)
    assert bank.fg_hw.tolist() == [[75.0, 100.0], [100.0, 73.0], [100.0, 100.0]]
    torch.testing.assert_close(bank.fg_scale, torch.tensor([100 / 128, 100 / 150, 0.5]))
    assert bank.bg.shape == (2, 3, 100, 100)


def test_mismatched_alpha_is_a_clear_error(tmp_path):
    source = write_source(tmp_path)
    Image.new("L", (10, 10)).save(source.alpha[1])
    with pytest.raises(PpidError, match="f1.png: alpha is 10x10 but its foreground .* is 110x150"):
        TrainDataset(source, SIZE)[1]
    with pytest.raises(PpidError, match="f1.png"):
        load_bank(source, "cpu")


def test_empty_sources_are_clear_errors(tmp_path):
    source = write_source(tmp_path)
    source.bg = []
    with pytest.raises(PpidError, match="no backgrounds"):
        TrainDataset(source, SIZE)
    with pytest.raises(PpidError, match="no backgrounds"):
        load_bank(source, "cpu")


def test_matte_without_transition_pixels(tmp_path):
    source = write_source(tmp_path, fg_shapes=[(70, 90)])
    Image.new("L", (90, 70), 255).save(source.alpha[0])  # fully opaque: crops go anywhere
    batch = BatchAugmenter(load_bank(source, "cpu"), SIZE).sample(4, torch.Generator().manual_seed(0))
    assert (batch["alpha"] == 1).all() and (batch["trimap"] == 1).all()
    torch.testing.assert_close(batch["image"], batch["fg"])


def test_trimap_kernel_max_widens_the_unknown_band(source):
    """data.trimap_kernel_max: the same crops (the kernel is drawn last), each trimap's unknown band
    containing the narrowest one's, and wider on average (a teacher for refine mode's wide bands)."""
    narrow = TrainDataset(source, SIZE, seed=5, length=8, kernel_max=1)
    wide = TrainDataset(source, SIZE, seed=5, length=8, kernel_max=240)
    unknown = {}
    for name, dataset in (("narrow", narrow), ("wide", wide)):
        batch = stack([dataset[i] for i in range(8)])
        unknown[name] = batch["trimap"] == 0.5
        unknown[name + " alpha"] = batch["alpha"]
    assert torch.equal(unknown["narrow alpha"], unknown["wide alpha"])
    assert not (unknown["narrow"] & ~unknown["wide"]).any()
    assert unknown["wide"].float().mean() > 2 * unknown["narrow"].float().mean()

    bank = load_bank(source, "cpu")
    batches = [BatchAugmenter(bank, SIZE, kernel_max=k).sample(8, torch.Generator().manual_seed(3)) for k in (1, 240)]
    assert (batches[1]["trimap"] == 0.5).float().mean() > 2 * (batches[0]["trimap"] == 0.5).float().mean()

    for bad in (0, 2.5, True):
        with pytest.raises(PpidError, match="trimap_kernel_max"):
            TrainDataset(source, SIZE, kernel_max=bad)


def test_crop_centre_anywhere_sees_far_background(tmp_path):
    """data.crop_centre: "transition" (the paper's rule) puts the object's edge in every crop; "anywhere"
    draws centres over the whole image, so tight crops of a small object often hold background only."""
    source = write_source(tmp_path, fg_shapes=[(200, 200)])
    yy, xx = np.mgrid[:200, :200]
    alpha = np.clip((12 - np.hypot(yy - 20, xx - 20)) / 4, 0, 1)  # a small disc in one corner
    Image.fromarray(np.round(alpha * 255).astype(np.uint8)).save(source.alpha[0])

    def crops_with_edge(**kwargs):
        dataset = TrainDataset(source, SIZE, crop_sizes=(128,), seed=3, length=40, **kwargs)
        alpha = torch.stack([dataset[i]["alpha"] for i in range(40)])
        return ((alpha > 0.002) & (alpha < 0.998)).flatten(1).any(1).float().mean().item()

    assert crops_with_edge() == 1.0
    assert crops_with_edge(crop_centre="anywhere") < 0.6
    bank = load_bank(source, "cpu", crop_centre="anywhere")
    assert bank.centres.all()  # every pixel of the image may centre a crop
    with pytest.raises(PpidError, match="data.crop_centre must be one of transition, anywhere, got 'edge'"):
        TrainDataset(source, SIZE, crop_centre="edge")

"""Training samples as in the paper (supplementary A, following DIM): a random square crop of
512 / 640 / 960 px centred on a transition pixel (or, with `crop_centre="anywhere"`, on any pixel:
the random crops of trimap-free methods, which then also see background far from the object),
resized to the training size, a random horizontal
flip, a trimap from the resized alpha with a random erosion kernel, optional colour jitter of the
foreground, composited on a random crop of a random background. Alpha values within half an 8-bit
step of 0 or 1 are snapped to exactly 0 or 1 (`compose.KNOWN_TOLERANCE`).

Two front ends share one batched implementation (`_augment`), so they draw from the same
distribution:
- `TrainDataset`: a torch Dataset reading the files of a `MattingSource` per sample (CPU DataLoader);
- `BatchAugmenter`: whole batches from a `load_bank` of tensors on the device (GPU-fast).

Crops and resizes are affine `grid_sample`s (bilinear, edge replication outside the image);
erosions are max-poolings; there is no loop over pixels or over the batch.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .. import PpidError
from ..io import read_alpha, read_image
from .compose import TRAIN_KERNEL_MAX_AT_512, composite, known_masks, train_kernel_max, trimap_from_alpha

PAPER_CROP_SIZES = (512, 640, 960)  # at a 512 px training size; scaled by size / 512
CROP_CENTRES = ("transition", "anywhere")  # where a crop's centre is drawn: the paper's (DIM's) rule first
BG_CROP_FRACTION = (0.5, 1.0)  # background crop side, as a fraction of the background's short side
HUE_SHIFT = 0.05  # colour jitter: hue +-0.05 turn, saturation and brightness x (1 +- 0.3)
SATURATION_RANGE = 0.3
BRIGHTNESS_RANGE = 0.3


@dataclass
class Bank:
    """Foregrounds, alphas and backgrounds stacked on one device (see `load_bank`).

    `fga` (N, 4, H, W): foreground RGB and alpha in one tensor, so a batch is one gather;
    `fg_hw` / `bg_hw` (N, 2) float: height and width of each item's image inside the padded stack;
    `fg_scale` (N,): bank pixels per source pixel, so crops cover the same content as from the files;
    `centres` (N, H*W) bool: where crops may be centred (see `_centre_candidates`).
    """

    fga: torch.Tensor
    fg_hw: torch.Tensor
    fg_scale: torch.Tensor
    centres: torch.Tensor
    bg: torch.Tensor  # (M, 3, Hb, Wb)
    bg_hw: torch.Tensor

    @property
    def device(self):
        return self.fga.device


def load_bank(source, device, max_side=1024, dtype=torch.float32, crop_centre="transition"):
    """Read every foreground, alpha and background of `source` onto `device`.

    So that they stack, each image whose long side exceeds `max_side` is resized (bilinear,
    antialiased, aspect kept) to that long side, then all are padded by edge replication to the
    largest height and width of their kind. The sampler only centres crops inside each item's own
    extent and scales crop sizes by the item's resize factor, so a bank gives the same crops (in
    content) as the files, at most `max_side` sharp. `dtype=torch.float16` halves the memory.
    `crop_centre` (`CROP_CENTRES`) is fixed here: the bank keeps the candidate centres.
    """
    _check_source(source)
    check_crop_centre(crop_centre)
    fgs, scales = [], []
    for fg_path, alpha_path in zip(source.fg, source.alpha):
        fg, alpha = _read_pair(fg_path, alpha_path)
        item, scale = _fit(torch.cat([fg, alpha]), max_side)
        fgs.append(item.to(dtype))
        scales.append(scale)
    bgs = [_fit(_read_bg(path), max_side)[0].to(dtype) for path in source.bg]
    fga, fg_hw = _stack(fgs, device)
    bg, bg_hw = _stack(bgs, device)
    scale = torch.tensor(scales, dtype=torch.float32, device=device)
    return Bank(fga, fg_hw, scale, _centre_candidates(fga[:, 3:].float(), fg_hw, crop_centre), bg, bg_hw)


class TrainDataset(Dataset):
    """Composited training samples read from the files of a `MattingSource`.

    Sample `index` uses foreground `index % n_fg` and a random background; every random draw comes
    from a generator seeded by (seed, index), so DataLoader workers and resumed runs see the same
    samples. `length` defaults to one sample per foreground. Items are dicts of float32 tensors:
    image, fg, bg (3,S,S); alpha (1,S,S); trimap (1,S,S) in {0, 0.5, 1}.
    """

    def __init__(self, source, size, crop_sizes=PAPER_CROP_SIZES, jitter=False, seed=0, length=None,
                 kernel_max=TRAIN_KERNEL_MAX_AT_512, crop_centre="transition"):
        _check_source(source)
        _check_settings(size, crop_sizes, kernel_max)
        check_crop_centre(crop_centre)
        self.source, self.size, self.crop_sizes = source, size, tuple(crop_sizes)
        self.jitter, self.seed, self.kernel_max, self.crop_centre = jitter, seed, kernel_max, crop_centre
        self.length = len(source.names) if length is None else length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        if not 0 <= index < self.length:
            raise IndexError(index)
        state = np.random.SeedSequence([self.seed, index]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        n_fg = len(self.source.names)
        bg_index = int(torch.randint(len(self.source.bg), (1,), generator=generator))
        fg, alpha = _read_pair(self.source.fg[index % n_fg], self.source.alpha[index % n_fg])
        bg = _read_bg(self.source.bg[bg_index])
        fga, fg_hw = torch.cat([fg, alpha])[None], _hw(fg)
        batch = _augment(
            fga, fg_hw, torch.ones(1), _centre_candidates(alpha[None], fg_hw, self.crop_centre), bg[None], _hw(bg),
            self.size, self.crop_sizes, self.jitter, self.kernel_max, generator,
        )
        return {key: value[0] for key, value in batch.items()}


class BatchAugmenter:
    """Whole training batches from a `Bank`, in torch ops on the bank's device.

    `sample(batch_size, generator)` pairs random foregrounds with random backgrounds and returns the
    same dict as `TrainDataset`, batched (leading N). `generator` lives on the bank's device.
    """

    def __init__(self, bank, size, crop_sizes=PAPER_CROP_SIZES, jitter=False, kernel_max=TRAIN_KERNEL_MAX_AT_512):
        _check_settings(size, crop_sizes, kernel_max)
        self.bank, self.size, self.crop_sizes, self.jitter = bank, size, tuple(crop_sizes), jitter
        self.kernel_max = kernel_max

    def sample(self, batch_size, generator):
        bank = self.bank
        if generator.device.type != bank.device.type:
            raise PpidError(f"BatchAugmenter: generator is on {generator.device}, the bank on {bank.device}")
        fg_index = torch.randint(len(bank.fga), (batch_size,), generator=generator, device=bank.device)
        bg_index = torch.randint(len(bank.bg), (batch_size,), generator=generator, device=bank.device)
        return _augment(
            bank.fga[fg_index].float(), bank.fg_hw[fg_index], bank.fg_scale[fg_index], bank.centres[fg_index],
            bank.bg[bg_index].float(), bank.bg_hw[bg_index], self.size, self.crop_sizes, self.jitter, self.kernel_max,
            generator,
        )


def _augment(fga, fg_hw, fg_scale, centres, bg, bg_hw, size, crop_sizes, jitter, kernel_max, generator):
    """The sampler behind both front ends, for a batch of paired fg + alpha (B,4,H,W) and
    bg (B,3,Hb,Wb) whose images fill the top-left `fg_hw` / `bg_hw` of their tensors; `centres`
    (B,H*W) from `_centre_candidates`."""
    b, device = fga.shape[0], fga.device

    def uniform():
        return torch.rand(b, generator=generator, device=device)

    # Foreground and alpha: one crop, centred on a candidate pixel, clamped inside the image.
    sides = torch.tensor(crop_sizes, dtype=torch.float32, device=device) * (size / 512)
    pick = torch.randint(len(crop_sizes), (b,), generator=generator, device=device)
    side = sides[pick] * fg_scale.to(device)
    cy, cx = _pick_centres(centres, fga.shape[-1], uniform())
    y0 = _clamp_start(cy + 0.5 - side / 2, side, fg_hw[:, 0])
    x0 = _clamp_start(cx + 0.5 - side / 2, side, fg_hw[:, 1])
    flip = uniform() < 0.5
    fga = _crop_resize(fga, y0, x0, side, size, flip)
    fg, alpha = fga[:, :3].clamp(0, 1), fga[:, 3:]
    # Snap resize round-off (0.99999994) so "alpha == 1" means known foreground downstream too.
    solid, empty = known_masks(alpha)
    alpha = torch.where(solid, 1.0, torch.where(empty, 0.0, alpha))

    # Background: a random square crop of a random background.
    short = bg_hw.min(dim=1).values
    lo, hi = BG_CROP_FRACTION
    bg_side = short * (lo + (hi - lo) * uniform())
    by0 = (bg_hw[:, 0] - bg_side) * uniform()
    bx0 = (bg_hw[:, 1] - bg_side) * uniform()
    bg = _crop_resize(bg, by0, bx0, bg_side, size, torch.zeros_like(flip)).clamp(0, 1)

    if jitter:
        fg = _jitter(fg, generator)
    kernel = torch.randint(1, train_kernel_max(size, kernel_max) + 1, (b,), generator=generator, device=device)
    return {
        "image": composite(fg, bg, alpha),
        "trimap": trimap_from_alpha(alpha, kernel),
        "alpha": alpha,
        "fg": fg,
        "bg": bg,
    }


def _centre_candidates(alpha, hw, crop_centre="transition"):
    """(B, H*W) bool: the transition pixels (0 < alpha < 1) inside each item's extent, or the
    whole extent when there are none or when `crop_centre` is "anywhere"."""
    b, _, height, width = alpha.shape
    rows = torch.arange(height, device=alpha.device).view(1, height, 1) < hw[:, 0].view(b, 1, 1)
    cols = torch.arange(width, device=alpha.device).view(1, 1, width) < hw[:, 1].view(b, 1, 1)
    inside = (rows & cols).flatten(1)
    if crop_centre == "anywhere":
        return inside
    fg, bg = known_masks(alpha[:, 0])
    candidates = (~fg & ~bg).flatten(1) & inside
    return torch.where(candidates.any(dim=1, keepdim=True), candidates, inside)


def _pick_centres(candidates, width, u):
    """A uniformly random candidate pixel per row of `candidates` (B, H*W); `u` (B,) uniform in
    [0, 1). Returns (row, col) float."""
    counts = candidates.cumsum(dim=1, dtype=torch.int32)
    total = counts[:, -1:]
    # The k-th candidate (k uniform in 0..total-1) is the first position where the count reaches k+1.
    k = torch.minimum((u[:, None] * total).to(torch.int32), total - 1)
    flat = torch.searchsorted(counts, k + 1)[:, 0]
    return (flat // width).float(), (flat % width).float()


def _clamp_start(start, side, extent):
    """Keep a crop [start, start + side) inside [0, extent); a crop larger than the image covers
    all of it (the rest is padding)."""
    low = torch.minimum(extent - side, torch.zeros_like(side))
    high = torch.maximum(extent - side, torch.zeros_like(side))
    return torch.maximum(torch.minimum(start, high), low)


def _crop_resize(x, y0, x0, side, size, flip):
    """Square crops [y0, y0+side) x [x0, x0+side) (pixel edges, per item) of x (B,C,H,W) resized to
    size x size by one bilinear grid_sample; `flip` (B,) bool mirrors horizontally."""
    b, _, height, width = x.shape
    theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=x.device)
    # align_corners=False: pixel edge e maps to 2e/extent - 1.
    theta[:, 0, 0] = torch.where(flip, -side, side) / width
    theta[:, 0, 2] = (2 * x0 + side) / width - 1
    theta[:, 1, 1] = side / height
    theta[:, 1, 2] = (2 * y0 + side) / height - 1
    grid = F.affine_grid(theta, (b, x.shape[1], size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _jitter(rgb, generator):
    """Random hue shift and saturation / brightness scaling per image, in HSV."""
    b = rgb.shape[0]

    def symmetric(extent):
        return extent * (2 * torch.rand(b, 1, 1, generator=generator, device=rgb.device) - 1)

    hue, sat, val = _rgb_to_hsv(rgb)
    hue = (hue + symmetric(HUE_SHIFT)) % 1.0
    sat = (sat * (1 + symmetric(SATURATION_RANGE))).clamp(0, 1)
    val = (val * (1 + symmetric(BRIGHTNESS_RANGE))).clamp(0, 1)
    return _hsv_to_rgb(hue, sat, val)


def _rgb_to_hsv(rgb):
    """(B,3,H,W) RGB in [0,1] -> hue in [0,1) (turns), saturation, value, each (B,H,W)."""
    val, argmax = rgb.max(dim=1)
    delta = val - rgb.min(dim=1).values
    r, g, b = rgb.unbind(dim=1)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(argmax == 0, (g - b) / safe, torch.where(argmax == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(delta > 0, (hue / 6) % 1.0, torch.zeros_like(hue))
    sat = delta / torch.where(val > 0, val, torch.ones_like(val))
    return hue, sat, val


def _hsv_to_rgb(hue, sat, val):
    """Inverse of `_rgb_to_hsv`: channel n in (5, 3, 1) is v - v*s*clamp(min(k, 4-k), 0, 1),
    k = (n + 6h) mod 6."""
    n = torch.tensor([5.0, 3.0, 1.0], device=hue.device, dtype=hue.dtype).view(1, 3, 1, 1)
    k = (n + 6 * hue[:, None]) % 6
    return val[:, None] * (1 - sat[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1))


def _read_pair(fg_path, alpha_path):
    """A foreground (3,H,W) and its alpha (1,H,W) as float32 tensors, checked to match."""
    fg = read_image(fg_path)
    alpha = read_alpha(alpha_path)
    if fg.shape[:2] != alpha.shape:
        raise PpidError(
            f"{alpha_path}: alpha is {alpha.shape[1]}x{alpha.shape[0]} but its foreground "
            f"{fg_path} is {fg.shape[1]}x{fg.shape[0]}"
        )
    return torch.from_numpy(fg).permute(2, 0, 1).contiguous(), torch.from_numpy(alpha)[None]


def _read_bg(path):
    return torch.from_numpy(read_image(path, warn_alpha=False)).permute(2, 0, 1).contiguous()


def _hw(image):
    return torch.tensor([image.shape[-2:]], dtype=torch.float32)


def _fit(image, max_side):
    """Resize (C,H,W) so its long side is at most max_side; returns (image, scale)."""
    height, width = image.shape[-2:]
    if max(height, width) <= max_side:
        return image, 1.0
    scale = max_side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    resized = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].clamp(0, 1), scale


def _stack(images, device):
    """Edge-replicate (C,h,w) images to a common size and stack them on `device`."""
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    out = torch.empty((len(images), images[0].shape[0], height, width), dtype=images[0].dtype, device=device)
    for i, image in enumerate(images):  # one copy per file, at load time only
        pad = (0, width - image.shape[2], 0, height - image.shape[1])
        # Padding in float32: replication padding of float16 is missing on some CPU builds.
        out[i] = F.pad(image[None].to(device, torch.float32), pad, mode="replicate")[0]
    hw = torch.tensor([image.shape[1:] for image in images], dtype=torch.float32, device=device)
    return out, hw


def _check_source(source):
    if not source.names:
        raise PpidError(f"{source.root}: no foregrounds to train on")
    if not source.bg:
        raise PpidError(f"{source.root}: no backgrounds to composite on")


def check_crop_centre(crop_centre):
    """A clear error for a `data.crop_centre` outside `CROP_CENTRES` (the config check and the augmenters')."""
    if crop_centre not in CROP_CENTRES:
        raise PpidError(f"data.crop_centre must be one of {', '.join(CROP_CENTRES)}, got {crop_centre!r}")


def _check_settings(size, crop_sizes, kernel_max):
    if size < 8 or not crop_sizes or min(crop_sizes) <= 0:
        raise PpidError(f"training size {size} / crop sizes {tuple(crop_sizes)}: need size >= 8 and positive crops")
    if isinstance(kernel_max, bool) or not isinstance(kernel_max, int) or kernel_max < 1:
        raise PpidError(f"data.trimap_kernel_max must be a positive whole number of pixels at 512 px, got {kernel_max!r}")

"""`ppid data preview`: a contact sheet to eyeball a matting dataset before training on it.

Each cell shows a composite, its alpha and a `name group` label. It reads a dataset folder
(fg/, alpha/, bg/: each foreground over a background, cycling through them) or a built test set
(merged/, alpha/), with groups from split.txt when present.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .. import PpidError
from ..io import list_images, read_alpha, read_image, write_image
from .compose import composite
from .datasets import read_split

THUMB = 160  # longest side of each thumbnail, px
LABEL_HEIGHT = 14
PAD = 4
COLUMNS = 4  # samples per row (each sample is two thumbnails)


def _resize(img, size):
    """uint8 or float HxW[x3] -> uint8 PIL image of `size` (w, h)."""
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(arr).resize(size, Image.BILINEAR)


def _samples(root):
    """[(name, composite_fn)] where composite_fn() -> (image HxWx3, alpha HxW)."""
    alphas = list_images(root / "alpha") if (root / "alpha").is_dir() else {}
    if (root / "merged").is_dir():
        merged = list_images(root / "merged")
        return [(name, lambda p=path, n=name: (read_image(p), _alpha_of(root, alphas, n))) for name, path in merged.items()]
    if (root / "fg").is_dir() and (root / "bg").is_dir():
        fgs = list_images(root / "fg")
        bgs = list(list_images(root / "bg").values())
        if not bgs:
            raise PpidError(f"{root / 'bg'}: no background images")

        def compose(fg_path, bg_path, name):
            fg, alpha = read_image(fg_path), _alpha_of(root, alphas, name)
            if fg.shape[:2] != alpha.shape:
                raise PpidError(f"{fg_path}: size {fg.shape[1]}x{fg.shape[0]} differs from its alpha {alpha.shape[1]}x{alpha.shape[0]}")
            bg = np.asarray(_resize(read_image(bg_path), (fg.shape[1], fg.shape[0])), np.float32) / 255
            return composite(fg, bg, alpha), alpha

        return [(name, lambda f=path, b=bgs[i % len(bgs)], n=name: compose(f, b, n)) for i, (name, path) in enumerate(fgs.items())]
    raise PpidError(f"{root}: expected a dataset (fg/, alpha/, bg/) or a built test set (merged/, alpha/)")


def _alpha_of(root, alphas, name):
    if name not in alphas:
        raise PpidError(f"{root / 'alpha'}: no alpha for {name!r}")
    return read_alpha(alphas[name])


def preview_grid(root, out, max_items=24):
    """Write a PNG grid of up to `max_items` samples (composite | alpha, label below), spread
    evenly over the sorted names so every part of a large set shows up."""
    root = Path(root)
    if not root.is_dir():
        raise PpidError(f"{root}: folder not found")
    if max_items < 1:
        raise PpidError(f"--max-items must be >= 1, got {max_items}")
    samples = _samples(root)
    if not samples:
        raise PpidError(f"{root}: no samples found")
    groups = read_split(root / "split.txt") if (root / "split.txt").is_file() else {}
    picks = np.unique(np.linspace(0, len(samples) - 1, min(max_items, len(samples))).round().astype(int))
    cell_w, cell_h = 2 * THUMB + PAD, THUMB + LABEL_HEIGHT
    rows = -(-len(picks) // COLUMNS)
    cols = min(COLUMNS, len(picks))
    sheet = Image.new("RGB", (cols * (cell_w + PAD) + PAD, rows * (cell_h + PAD) + PAD), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for slot, pick in enumerate(picks):
        name, load = samples[pick]
        image, alpha = load()
        h, w = alpha.shape
        scale = THUMB / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        x = PAD + (slot % COLUMNS) * (cell_w + PAD)
        y = PAD + (slot // COLUMNS) * (cell_h + PAD)
        sheet.paste(_resize(image, size), (x, y))
        sheet.paste(_resize(alpha, size).convert("RGB"), (x + THUMB + PAD, y))
        draw.text((x, y + THUMB + 2), f"{name} {groups.get(name, 'no group')}", fill=(230, 230, 230))
    write_image(Path(out), np.asarray(sheet))

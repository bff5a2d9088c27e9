"""`ppid data build-testset`: the Composition-1K protocol on any fg/alpha/bg folders.

Each foreground (sorted by name, or in the order of `fg_list`) is composited over `per_fg`
backgrounds taken in a fixed order: the order of `bg_list` (Adobe's `test_bg_names.txt`) when given,
else the background folder sorted by name; composite k of foreground i uses background
(i * per_fg + k) mod n_bg, so the backgrounds cycle when there are fewer than needed. As in Adobe's
composition script, a background smaller than the foreground is scaled up with bicubic
interpolation by the larger of the two ratios so it covers the foreground, then every background is
cropped top-left to the foreground size. The composite is computed in float (eq. 1) and written as
an 8-bit PNG, rounded (Adobe's script truncates; the two differ by at most 1/255).

Output::

    merged/<fg>_<k>.png    composites, k = 0 .. per_fg - 1
    alpha/<fg>_<k>.png     the foreground's alpha (8-bit), one copy per composite
    trimaps/<fg>_<k>.png   `compose.test_trimap` of that alpha
    split.txt              "<fg>_<k> group" when the foregrounds have groups
    checksums.txt          sha256 of every file above, sorted (`sha256sum -c checksums.txt` works)
"""

import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from .. import PpidError
from ..io import atomic_path, list_images, read_alpha, read_image, sha256_file, to_uint8, write_image
from ..progress import progress
from .compose import composite, test_trimap
from .datasets import read_split, resolve_list


def cover_background(bg, height, width):
    """Scale `bg` (float HxWx3) up only if it is smaller than height x width, by the larger of the
    two ratios with PIL bicubic on 8 bits (as Adobe's script), then crop top-left to the size."""
    bh, bw = bg.shape[:2]
    ratio = max(width / bw, height / bh)
    if ratio > 1:
        size = (math.ceil(bw * ratio), math.ceil(bh * ratio))
        bg = np.asarray(Image.fromarray(to_uint8(bg)).resize(size, Image.BICUBIC), dtype=np.float32) / 255.0
    return bg[:height, :width]


def _ordered(folder, list_path, what):
    if list_path is not None:
        return resolve_list(list_path, folder, what)
    return list(list_images(folder).values())


def _copy(src, dst):
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def build_testset(fg_dir, alpha_dir, bg_dir, per_fg, out, split=None, bg_list=None, fg_list=None):
    """Build a Composition-1K style test set (protocol and output in the module docstring).

    `split` is a `NAME group` file for the foregrounds (default `<fg_dir>/../split.txt` when it
    exists); `fg_list` / `bg_list` fix the orders (file names or stems, one a line). Everything is
    validated before the first file is written; `out` must be new or empty. Returns a summary dict.
    """
    fg_dir, alpha_dir, bg_dir, out = Path(fg_dir), Path(alpha_dir), Path(bg_dir), Path(out)
    if per_fg < 1:
        raise PpidError(f"--per-fg must be at least 1, got {per_fg}")
    foregrounds = _ordered(fg_dir, fg_list, "foreground")
    if not foregrounds:
        raise PpidError(f"{fg_dir}: no foreground images")
    alphas = list_images(alpha_dir)
    missing = [p.name for p in foregrounds if p.stem not in alphas]
    if missing:
        raise PpidError(f"{alpha_dir}: no alpha for {len(missing)} foregrounds ({', '.join(missing[:5])})")
    backgrounds = _ordered(bg_dir, bg_list, "background")
    if not backgrounds:
        raise PpidError(f"{bg_dir}: no background images")
    if split is None and (fg_dir.parent / "split.txt").is_file():
        split = fg_dir.parent / "split.txt"
    groups = read_split(split) if split is not None else {}
    ungrouped = [p.stem for p in foregrounds if p.stem not in groups]
    if groups and ungrouped:
        raise PpidError(f"{split}: no group for {len(ungrouped)} foregrounds ({', '.join(ungrouped[:5])})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PpidError(f"{out}: exists and is not an empty folder; choose a new --out")

    split_lines = []
    for i, fg_path in enumerate(progress(foregrounds, desc="build-testset", unit="fg")):
        name = fg_path.stem
        fg = read_image(fg_path, warn_alpha=False)
        alpha = read_alpha(alphas[name])
        if fg.shape[:2] != alpha.shape:
            raise PpidError(f"{alphas[name]}: alpha is {alpha.shape[1]}x{alpha.shape[0]} but its foreground "
                            f"{fg_path.name} is {fg.shape[1]}x{fg.shape[0]}")
        alpha8 = to_uint8(alpha)
        alpha = alpha8.astype(np.float32) / 255.0  # composite with the alpha we ship, not a finer one
        trimap = test_trimap(alpha)
        for k in range(per_fg):
            comp = f"{name}_{k}.png"
            bg = cover_background(read_image(backgrounds[(i * per_fg + k) % len(backgrounds)], warn_alpha=False),
                                  *alpha.shape)
            write_image(out / "merged" / comp, composite(fg, bg, alpha))
            if k == 0:
                write_image(out / "alpha" / comp, alpha8)
                write_image(out / "trimaps" / comp, trimap)
            else:  # identical bytes: copy instead of encoding again
                _copy(out / "alpha" / f"{name}_0.png", out / "alpha" / comp)
                _copy(out / "trimaps" / f"{name}_0.png", out / "trimaps" / comp)
            if groups:
                split_lines.append(f"{name}_{k} {groups[name]}\n")
    if split_lines:
        with atomic_path(out / "split.txt") as tmp:
            tmp.write_text("".join(split_lines))

    written = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "checksums.txt")
    with atomic_path(out / "checksums.txt") as tmp:
        tmp.write_text("".join(f"{sha256_file(p)}  {p.relative_to(out).as_posix()}\n" for p in written))
    n = len(foregrounds) * per_fg
    print(f"wrote {n} composites ({len(foregrounds)} foregrounds x {per_fg} of {len(backgrounds)} backgrounds)"
          f"{' with groups' if split_lines else ''} to {out}")
    return {"composites": n, "foregrounds": len(foregrounds), "backgrounds": len(backgrounds),
            "grouped": bool(split_lines)}

"""Using a trained model on photos: the Python `Predictor` and `ppid predict`.

    ppid predict --model student.safetensors photos/ extra.jpg "shots/*.png" --out cutouts
    ppid predict --model teacher.safetensors img.png --trimap trimaps/ --out out --save alpha,rgba

Output layout (one folder per kind, file names follow the input stems, always PNG):
    OUT/alpha/NAME.png       8-bit grey alpha matte
    OUT/rgba/NAME.png        cut-out: estimated foreground colours + alpha
    OUT/fg/NAME.png          estimated foreground colours (opaque)
    OUT/composite/NAME.png   foreground over --background

The model sees the photo at full resolution (it pads to a multiple of 32 itself). A photo with a
side over --tile (default 1280) px runs in overlapping tiles of at most that side, so memory does not
grow with the photo; smaller photos run whole. `--max-side N` runs the model on a copy whose longer
side is N and upsamples the alpha. Foreground colours (`ppid.foreground`, multi-level estimation)
are estimated at full resolution: on a GPU with torch, on a CPU with pymatting.
"""

import glob
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import PpidError
from .data.compose import composite as compose
from .foreground import estimate_foreground
from .io import IMAGE_EXTENSIONS, exif_upright, list_images, pil_to_rgb, read_image, read_trimap, snap_trimap, write_image
from .models.common import STRIDE, clamp_to_trimap
from .refine import AUTO_SCALE, HIGH, LOW, NOTHING_FOUND, WIDTH, check_refiner, found_nothing, parse_rule
from .refine import refine as refine_alpha

OUTPUT_KINDS = ("alpha", "rgba", "fg", "composite")
# Tiles bound the network's memory: about 1.2 GiB per megapixel for the IndexNet student on the CPU,
# so 1280 px tiles keep `ppid predict` on a 12-megapixel photo under 4 GB (docs/predict.md).
DEFAULT_TILE = 1280
DEFAULT_OVERLAP = 256
NAMED_COLOURS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0)}


def resolve_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise PpidError(f"unknown device {name!r}; choose auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PpidError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def to_rgb_array(image, name="image"):
    """PIL image, NumPy array (HxW / HxWx3 / HxWx4; uint8, uint16 or float in [0, 1]) or tensor
    ((3, H, W) / (1, 3, H, W), float in [0, 1] or uint8) -> float32 HxWx3 RGB in [0, 1]."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 3 or t.shape[0] != 3:
            raise PpidError(f"{name}: tensor must be (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
        image = t.permute(1, 2, 0).numpy()
    elif not isinstance(image, np.ndarray):  # PIL
        return pil_to_rgb(exif_upright(image), name)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise PpidError(f"{name}: expected HxW, HxWx3 or HxWx4, got shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
        raise PpidError(f"{name}: float images must hold values in [0, 1] (got {arr.min():.3g}..{arr.max():.3g})")
    return arr


def parse_background(spec):
    """'white' | 'black' | 'green' | '#RRGGBB' -> RGB floats; anything else is an image path."""
    if isinstance(spec, str):
        if spec.lower() in NAMED_COLOURS:
            return NAMED_COLOURS[spec.lower()]
        if spec.startswith("#"):
            hexa = spec[1:]
            if len(hexa) != 6 or any(c not in "0123456789abcdefABCDEF" for c in hexa):
                raise PpidError(f"background {spec!r}: expected #RRGGBB")
            return tuple(int(hexa[i: i + 2], 16) / 255.0 for i in (0, 2, 4))
        path = Path(spec)
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise PpidError(f"background {spec!r}: not white, black, green, #RRGGBB or an image file")
        return read_image(path)
    if isinstance(spec, tuple) and len(spec) == 3:
        return tuple(float(c) for c in spec)
    return to_rgb_array(spec, "background")


def background_tensor(background, height, width, device):
    """(1, 3, H, W) background: a colour filled in, or an image stretched to the photo's size."""
    if isinstance(background, tuple):
        return torch.tensor(background, device=device, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, height, width)
    bg = torch.from_numpy(np.ascontiguousarray(background)).permute(2, 0, 1)[None].to(device)
    if bg.shape[-2:] != (height, width):
        bg = F.interpolate(bg, (height, width), mode="bilinear", align_corners=False, antialias=True)
    return bg.clamp(0.0, 1.0)


def tile_windows(length, tile, overlap):
    """Windows along one axis: (start, stop, keep_start, keep_stop). Windows are `tile` px long
    (the last up to STRIDE - 1 longer), start on multiples of STRIDE so their pooling grids are the
    whole image's, and overlap their neighbours by at least `overlap`; each overlap is split in the
    middle, so every kept pixel lies at least overlap / 2 inside its window or on the image edge."""
    if length <= tile:
        return [(0, length, 0, length)]
    starts = list(range(0, length - tile + 1, tile - overlap))
    last = (length - tile) // STRIDE * STRIDE
    if last > starts[-1]:
        starts.append(last)
    stops = [start + tile for start in starts[:-1]] + [length]
    cuts = [0] + [(stop + start) // 2 for stop, start in zip(stops[:-1], starts[1:])] + [length]
    return list(zip(starts, stops, cuts[:-1], cuts[1:]))


def tiled_alpha(model, x, t, tile, overlap):
    """A network's alpha (N, 1, H, W) float32 for x (and trimap t), window by window
    (`tile_windows`) when x is larger than `tile` (None: always whole)."""
    h, w = x.shape[-2:]
    if tile is None or max(h, w) <= tile:
        return model(x, t).alpha.float()  # the feature taps are dropped right here
    alpha = torch.empty((x.shape[0], 1, h, w), device=x.device)
    for y0, y1, ky0, ky1 in tile_windows(h, tile, overlap):
        for x0, x1, kx0, kx1 in tile_windows(w, tile, overlap):
            part = model(x[..., y0:y1, x0:x1], None if t is None else t[..., y0:y1, x0:x1]).alpha
            alpha[..., ky0:ky1, kx0:kx1] = part[..., ky0 - y0:ky1 - y0, kx0 - x0:kx1 - x0]
    return alpha


def check_tiling(tile, overlap):
    if tile is None:
        return
    if tile < 2 * STRIDE or tile % STRIDE:
        raise PpidError(f"tile must be a multiple of {STRIDE} and at least {2 * STRIDE} px, got {tile}")
    if overlap < 0 or overlap % STRIDE or overlap >= tile:
        raise PpidError(f"overlap must be a multiple of {STRIDE} in [0, tile), got {overlap} for tile {tile}")


class Predictor:
    """A trained model ready for photos.

        p = ppid.Predictor("student.safetensors", device="auto")
        alpha = p.predict(photo)                    # float32 HxW in [0, 1]
        rgba = p.cutout(photo)                      # float32 HxWx4: foreground colours + alpha
        out = p.composite(photo, "#3366ff")         # float32 HxWx3 in [0, 1]

    `photo` is a PIL image, a NumPy array (HxWx3 / HxW / HxWx4 uint8, uint16 or float in [0, 1]),
    a tensor (3, H, W) in [0, 1] or a file path. Teachers also need `trimap=` (uint8 HxW with
    0/128/255, or a path); their alpha is clamped to the trimap's known regions, as in the originals.
    `precision` is "fp32", "fp16" (CUDA) or "bf16" (autocast); `max_side` caps the longer side the
    model sees (the alpha is upsampled back). An image (after `max_side`) with a side over `tile` px
    runs in windows of `tile` px that overlap by `overlap` (multiples of 32; see `tile_windows`);
    `tile=None` always runs the whole image at once. `refine=TEACHER` (refine mode, ppid.refine): the
    student's alpha becomes a trimap by the rule `refine_rule` (low, high, width; width may be
    "auto" or "auto:K") and that trimap-based teacher refines it; the user gives no trimap.
    """

    def __init__(self, weights, device="auto", precision="fp32", max_side=None, tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP,
                 refine=None, refine_rule=None):
        from .models import load_model

        self.device = resolve_device(device)
        if precision not in ("fp32", "fp16", "bf16"):
            raise PpidError(f"unknown precision {precision!r}; choose fp32, fp16 or bf16")
        if precision == "fp16" and self.device.type != "cuda":
            raise PpidError("fp16 needs a CUDA device; use bf16 on CPU")
        if max_side is not None and max_side < 32:
            raise PpidError(f"max_side must be at least 32, got {max_side}")
        check_tiling(tile, overlap)
        self.precision = precision
        self.max_side = max_side
        self.tile, self.overlap = tile, overlap
        self.model = load_model(weights, self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.needs_trimap = self.model.role == "teacher"
        self.refiner, self.rule = None, parse_rule(refine_rule)
        if refine is not None:
            if self.needs_trimap:
                raise PpidError(f"{weights}: refine mode starts from a trimap-free student; this is a teacher")
            self.refiner = load_model(refine, self.device)
            check_refiner(self.refiner, refine)

    # -- tensors on the device ------------------------------------------------------------------
    def _trimap_tensor(self, trimap, height, width):
        if not self.needs_trimap:
            if trimap is not None:
                raise PpidError("this is a trimap-free student; it takes no trimap")
            return None
        if trimap is None:
            raise PpidError("this is a teacher (trimap-based) model; give it a trimap")
        if isinstance(trimap, (str, Path)):
            tri = read_trimap(trimap)
        else:
            tri = np.asarray(trimap)
            tri = snap_trimap(np.round(tri * 255) if tri.dtype.kind == "f" else tri, "trimap")
        if tri.shape != (height, width):
            raise PpidError(f"trimap is {tri.shape[1]}x{tri.shape[0]}, the image {width}x{height}")
        return torch.from_numpy(tri).to(self.device).float().div_(255.0)[None, None]

    def alpha_tensor(self, image, trimap=None):
        """Alpha (1, 1, H, W) float32 on the device for image (1, 3, H, W) and trimap (1, 1, H, W)."""
        h, w = image.shape[-2:]
        x, t = image, trimap
        if self.max_side and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            x = F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=True)
            t = None if t is None else F.interpolate(t, size, mode="nearest")
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            if self.refiner is not None:
                alpha, derived, _ = refine_alpha(self.model, self.refiner, x, **self.rule, run=self._tiled_alpha)
                if found_nothing(derived).all():
                    warnings.warn("refine: " + NOTHING_FOUND.format(low=self.rule["low"]))
            else:
                alpha = self._tiled_alpha(self.model, x, t)
        if alpha.shape[-2:] != (h, w):
            alpha = F.interpolate(alpha, (h, w), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
        return alpha if trimap is None else clamp_to_trimap(alpha, trimap)

    def _tiled_alpha(self, model, x, t):
        return tiled_alpha(model, x, t, self.tile, self.overlap)

    def _alpha(self, image, trimap):
        rgb = to_rgb_array(image)
        image_t = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(self.device)
        return image_t, self.alpha_tensor(image_t, self._trimap_tensor(trimap, *rgb.shape[:2]))

    def run(self, image, trimap=None):
        """One model pass: (image, alpha, fg) tensors on the device, (1,3,H,W), (1,1,H,W), (1,3,H,W)."""
        image_t, alpha_t = self._alpha(image, trimap)
        return image_t, alpha_t, estimate_foreground(image_t, alpha_t)

    # -- NumPy API ------------------------------------------------------------------------------
    def predict(self, image, trimap=None):
        """Alpha matte, float32 HxW in [0, 1]."""
        return _numpy(self._alpha(image, trimap)[1])

    def cutout(self, image, trimap=None):
        """RGBA cut-out, float32 HxWx4 in [0, 1]: estimated foreground colours and the alpha."""
        _, alpha, fg = self.run(image, trimap)
        return _numpy(torch.cat([fg, alpha], dim=1))

    def composite(self, image, background="white", trimap=None):
        """Estimated foreground over `background` (a colour name, '#RRGGBB', an RGB tuple in [0, 1],
        an image path or array, stretched to the photo), float32 HxWx3 in [0, 1]."""
        _, alpha, fg = self.run(image, trimap)
        bg = background_tensor(parse_background(background), *alpha.shape[-2:], self.device)
        return _numpy(compose(fg, bg, alpha))


def _numpy(t):
    """(1, C, H, W) tensor -> float32 HxW (C = 1) or HxWxC NumPy."""
    arr = t[0].permute(1, 2, 0).float().cpu().numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


# -- CLI ------------------------------------------------------------------------------------------
# Image types a folder of photos may hold that ppid does not read (PIL cannot, or not fully): named
# when a folder is searched, not passed over in silence.
UNREAD_IMAGE_EXTENSIONS = (".heic", ".heif", ".avif", ".jxl", ".gif", ".psd", ".svg", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf")


def collect_inputs(specs):
    """Files, folders (their images, not recursive) and glob patterns -> sorted unique paths.

    Two inputs with the same stem would write the same output file: that is an error up front."""
    paths = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise PpidError(f"{p}: no images in this folder ({_describe_search(p)})")
            paths.extend(found.values())
            unread = sorted(f.name for f in p.iterdir() if f.suffix.lower() in UNREAD_IMAGE_EXTENSIONS and f.is_file())
            if unread:  # a phone's HEIC photos beside its JPEGs would otherwise vanish without a word
                print(f"ppid predict: warning: {p}: skipping {len(unread)} image(s) of a type ppid does not read "
                      f"(e.g. {unread[0]}); convert them to PNG or JPEG", file=sys.stderr)
        elif p.exists():
            paths.append(p)
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec) if Path(m).suffix.lower() in IMAGE_EXTENSIONS)
            if not matches:
                raise PpidError(f"{spec}: no images match (looked for {', '.join(IMAGE_EXTENSIONS)})")
            paths.extend(matches)
        else:
            raise PpidError(f"{spec}: no such file or folder")
    unique = list(dict.fromkeys(paths))
    by_stem = {}
    for p in unique:
        if p.stem in by_stem:
            raise PpidError(f"{by_stem[p.stem]} and {p} would both write {p.stem}.png; rename one")
        by_stem[p.stem] = p
    if not unique:
        raise PpidError("no inputs given: name image files, folders or glob patterns")
    return unique


def _describe_search(folder):
    """What an empty-handed look into `folder` searched for, and what it passed over."""
    entries = [p for p in Path(folder).iterdir() if not p.name.startswith(".")]
    others = sorted(p.name for p in entries if p.is_file())
    subfolders = sum(p.is_dir() for p in entries)
    text = f"looked for {', '.join(IMAGE_EXTENSIONS)}"
    if others:
        text += f"; found {len(others)} other file(s), e.g. {others[0]}"
    if subfolders:
        text += f"; {subfolders} subfolder(s) are not searched"
    return text


def add_arguments(parser):
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("--model", required=True, metavar="WEIGHTS", help="model file saved by ppid (.safetensors)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--trimap", metavar="FILE|DIR", help="teachers only: a trimap file (one input) or a folder of trimaps named like the inputs")
    parser.add_argument("--save", default="alpha,rgba", help=f"comma-separated outputs among {','.join(OUTPUT_KINDS)} (default alpha,rgba)")
    parser.add_argument("--background", metavar="COLOUR|IMAGE", help="white, black, green, #RRGGBB or an image file; implies composite (default white)")
    parser.add_argument("--refine", metavar="TEACHER", help="refine mode: a trimap from the student's alpha, then this trimap-based teacher refines the unknown band")
    parser.add_argument("--refine-rule", nargs=3, metavar=("LOW", "HIGH", "WIDTH"),
                        help=f"unknown where LOW < alpha < HIGH, grown by WIDTH x the shorter side, or 'auto' ('auto:K'): "
                             f"{AUTO_SCALE} (K) x the share of the image the student leaves soft (default {LOW} {HIGH} {WIDTH})")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--max-side", type=int, metavar="N", help="run the model on a copy whose longer side is at most N pixels and upsample the alpha")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, metavar="N", help=f"run photos with a side over N px in overlapping N px tiles to bound memory (default {DEFAULT_TILE}; 0: always whole)")
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, metavar="N", help=f"overlap of neighbouring tiles in px (default {DEFAULT_OVERLAP})")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_const", dest="precision", const="fp16", help="float16 autocast (CUDA)")
    precision.add_argument("--bf16", action="store_const", dest="precision", const="bf16", help="bfloat16 autocast (CUDA or CPU)")


def _parse_save(text, background):
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in OUTPUT_KINDS]
    if unknown or not kinds:
        raise PpidError(f"--save {text!r}: choose from {', '.join(OUTPUT_KINDS)}")
    if background is not None and "composite" not in kinds:
        kinds.append("composite")
    return kinds


def _trimap_lookup(spec, inputs):
    """--trimap -> {input path: trimap path or None (missing)}."""
    if spec is None:
        return {p: None for p in inputs}
    path = Path(spec)
    if path.is_dir():
        found = list_images(path)
        return {p: found.get(p.stem) for p in inputs}
    if len(inputs) != 1:
        raise PpidError(f"--trimap {spec}: a single trimap file fits a single input; give a folder for {len(inputs)} inputs")
    if not path.is_file():
        raise PpidError(f"--trimap {spec}: no such file or folder")
    return {inputs[0]: path}


def run(args):
    from .progress import progress

    kinds = _parse_save(args.save, args.background)
    background = parse_background(args.background or "white") if "composite" in kinds else None
    inputs = collect_inputs(args.inputs)
    predictor = Predictor(args.model, device=args.device, precision=args.precision or "fp32", max_side=args.max_side,
                          tile=args.tile or None, overlap=args.overlap, refine=args.refine, refine_rule=args.refine_rule)
    if predictor.needs_trimap and args.trimap is None:
        raise PpidError(f"{args.model}: is a teacher (trimap-based) model; pass --trimap FILE|DIR")
    if not predictor.needs_trimap and args.trimap is not None:
        raise PpidError(f"{args.model}: is a trimap-free student; drop --trimap")
    trimaps = _trimap_lookup(args.trimap, inputs)

    failed = 0
    start = time.perf_counter()
    bar = progress(inputs, unit="img", desc="predict")
    for path in bar:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                image = read_image(path)
            for w in caught:
                bar.write(f"ppid predict: warning: {w.message}", file=sys.stderr)
            if predictor.needs_trimap and trimaps[path] is None:
                raise PpidError(f"{path}: no trimap named {path.stem}.* in {args.trimap}")
            with warnings.catch_warnings(record=True) as caught:  # the model's warnings, named by the file
                warnings.simplefilter("always")
                _write_outputs(predictor, path, image, trimaps[path], kinds, background, args.out)
            for w in caught:
                bar.write(f"ppid predict: warning: {path}: {w.message}", file=sys.stderr)
        except PpidError as err:
            failed += 1
            bar.write(f"ppid predict: error: {err}", file=sys.stderr)
        except torch.cuda.OutOfMemoryError:
            failed += 1
            bar.write(f"ppid predict: error: {path}: out of memory; try --tile 512 or --bf16", file=sys.stderr)
    seconds = time.perf_counter() - start
    done = len(inputs) - failed
    print(f"ppid predict: {done} of {len(inputs)} images in {seconds:.1f} s ({done / max(seconds, 1e-9):.2f} img/s) -> {args.out}", file=sys.stderr)
    if failed:
        print(f"ppid predict: {failed} image(s) failed", file=sys.stderr)
        return 1
    return 0


def _write_outputs(predictor, path, image, trimap, kinds, background, out):
    image_t, alpha, fg = predictor.run(image, trimap)
    arrays = {}
    if "alpha" in kinds:
        arrays["alpha"] = alpha
    if "rgba" in kinds:
        arrays["rgba"] = torch.cat([fg, alpha], dim=1)
    if "fg" in kinds:
        arrays["fg"] = fg
    if "composite" in kinds:
        arrays["composite"] = compose(fg, background_tensor(background, *alpha.shape[-2:], image_t.device), alpha)
    for kind, tensor in arrays.items():
        write_image(Path(out) / kind / f"{path.stem}.png", _numpy(tensor))

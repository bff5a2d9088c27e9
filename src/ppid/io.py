"""Image and file IO shared by every command: one place that knows about EXIF, RGBA, palettes,
grayscale and 16-bit files, and that writes files atomically.

Arrays are NumPy: images are float32 HxWx3 in [0, 1], alpha mattes float32 HxW in [0, 1],
trimaps uint8 HxW with values exactly 0, 128, 255. Every failure is an `ImageReadError` whose
message names the file and the problem on one line.
"""

import contextlib
import os
import shlex
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import PpidError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")

# Trimap values within this distance of 0/128/255 are snapped (JPEG noise, 127-vs-128 writers);
# anything further is an error.
TRIMAP_TOLERANCE = 16


class ImageReadError(PpidError):
    pass


def _open(path):
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, expected an image file")
    try:
        with Image.open(path) as img:
            img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"{path}: cannot read image ({err.__class__.__name__}: {err})") from None
    return exif_upright(img)


def exif_upright(img):
    """The PIL image turned as its EXIF orientation says (phone photos are stored on their side)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose the pixels
        return img


def _to_float(img, path):
    """Single-band PIL image -> float32 HxW in [0, 1], honouring 8/16/32-bit and float modes."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.float32) / 65535.0
    if img.mode == "I":
        arr = np.asarray(img, dtype=np.float32)
        # 16-bit PNGs open as mode I on some Pillow versions; a wider range is not an image.
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageReadError(f"{path}: 32-bit integer values outside 0..65535")
        return arr / (65535.0 if arr.max() > 255 else 255.0)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ImageReadError(f"{path}: float image holds NaN or inf")
        return np.clip(arr / (255.0 if arr.max() > 1.0 else 1.0), 0.0, 1.0)
    if img.mode == "1":
        img = img.convert("L")
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def read_image(path, warn_alpha=True):
    """Read a photo as float32 HxWx3 RGB in [0, 1] (EXIF rotation applied).

    RGBA/LA inputs lose their alpha (with a warning), grayscale and palette images become RGB,
    16-bit images keep their precision.
    """
    return pil_to_rgb(_open(path), path, warn_alpha)


def pil_to_rgb(img, name="image", warn_alpha=True):
    """A PIL image (already upright) as float32 HxWx3 RGB in [0, 1]; 16-bit and float greys keep
    their scale (PIL's own convert("RGB") saturates them to white or rounds them to black)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        if warn_alpha:
            warnings.warn(f"{name}: has an alpha channel; it is ignored", stacklevel=3)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        grey = _to_float(img, name)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def read_alpha(path):
    """Read an alpha matte as float32 HxW in [0, 1].

    RGBA/LA/transparent-palette files give their alpha channel, unless it is fully opaque over a
    grey picture: that is a grey matte saved with a constant alpha channel, so its grey is the matte.
    RGB files give their luminance (grey mattes saved as RGB); 8- and 16-bit single-channel files
    their value.
    """
    img = _open(path)
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("L")
    if img.mode in ("RGBA", "LA", "PA"):
        channel = np.asarray(img.getchannel("A"))
        if channel.min() == 255 and _is_grey(img):
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        return channel.astype(np.float32) / 255.0
    return _to_float(img, path)


def _is_grey(img):
    if img.mode not in ("RGBA", "PA"):
        return True  # LA: the colour band is grey by construction
    rgb = np.asarray(img.convert("RGB"))
    return bool((rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all())


def read_trimap(path, tolerance=TRIMAP_TOLERANCE):
    """Read a trimap as uint8 HxW with values exactly 0 (bg), 128 (unknown), 255 (fg).

    Values within `tolerance` of 0/128/255 (on the 8-bit scale) are snapped; any other value is an
    error naming the file, since a soft trimap would silently change the evaluation region.
    """
    raw = np.round(read_alpha(path) * 255.0).astype(np.int16)
    return snap_trimap(raw, path, tolerance)


def snap_trimap(raw, name="trimap", tolerance=TRIMAP_TOLERANCE):
    raw = np.asarray(raw).astype(np.int16)
    out = np.full(raw.shape, 128, dtype=np.uint8)
    out[raw <= tolerance] = 0
    out[raw >= 255 - tolerance] = 255
    unknown_ok = np.abs(raw - 128) <= tolerance
    bad = (raw > tolerance) & (raw < 255 - tolerance) & ~unknown_ok
    if bad.any():
        values = np.unique(raw[bad])
        shown = ", ".join(str(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")
        raise ImageReadError(
            f"{name}: trimap has {int(bad.sum())} pixels with values other than 0/128/255 "
            f"(tolerance {tolerance}): {shown}"
        )
    return out


def to_uint8(x):
    """Float in [0, 1] -> uint8 the way an 8-bit PNG write does it (clip, scale, round)."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    return np.round(np.clip(x.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    A crash, a full disk or Ctrl-C leaves any previous file at `path` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix last: writers that pick the format from it (or append one, as np.save
    # does) must see the final name's suffix.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates the file private (0600), and some writers (safetensors) replace it with
        # another private file: give the result the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def exclusive(path, what, log=print):
    """Hold an exclusive lock on the lock file `path` while the block runs: a second process that
    asks for the same lock waits (saying so) until the first is done. Two processes that both
    write `what` (a dataset, a run folder) would otherwise corrupt it. Where the system has no
    `fcntl` (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process that is writing {what}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_failure(path, what, reason, existed):
    """The one-line error of a failed atomic write: which file, why, and what is left of it."""
    kept = f"the previous {what} is intact" if existed else f"no {what} was written"
    return PpidError(f"{path}: cannot write {what} ({reason}); {kept}")


def write_image(path, array):
    """Write HxW (grey) or HxWx3/4 (RGB/RGBA) arrays, float in [0, 1] or uint8, atomically.

    The format follows the suffix (png/jpg/tif); write errors name the file.
    """
    path = Path(path)
    arr = to_uint8(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    mode = {2: "L"}.get(arr.ndim) or (arr.ndim == 3 and {3: "RGB", 4: "RGBA"}.get(arr.shape[2]))
    if not mode:
        raise PpidError(f"{path}: cannot write an array of shape {arr.shape} (expected HxW, HxWx3 or HxWx4)")
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(path.suffix.lower(), "PNG")
    try:
        with atomic_path(path) as tmp:
            Image.fromarray(arr, mode=mode).save(tmp, format=fmt)
    except OSError as err:
        raise PpidError(f"{path}: cannot write ({err.strerror or err})") from None


def list_images(folder):
    """Map file stem -> path for the images directly inside `folder` (sorted by stem).

    Hidden files are skipped: macOS `._name.png` resource forks and our own unfinished atomic writes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PpidError(f"{folder}: folder not found")
    found = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file():
            if p.stem in found:
                raise PpidError(f"{folder}: two images share the name {p.stem!r} ({found[p.stem].name}, {p.name})")
            found[p.stem] = p
    return found


def sha256_file(path):
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def command_line(argv=None):
    """The command that produced a result, to rerun it: "python benchmarks/x.py ARGS", the script
    path as given. `argv`: the arguments when main() was called with its own rather than sys.argv's."""
    args = sys.argv[1:] if argv is None else list(argv)
    return "python " + shlex.join([Path(sys.argv[0]).as_posix(), *args])

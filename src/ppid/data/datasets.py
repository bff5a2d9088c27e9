"""Folder datasets (Adobe Image Matting, Distinctions-646, custom / synthetic layout), the
validator behind `ppid data check`, and the reader of built test sets.

Layouts read by `find_source(root, layout, bg_dir=None, split="train")`; foregrounds and alphas
match by file stem (`a.jpg` goes with `a.png`):

Adobe Image Matting (`adobe`); ROOT may also be the folder holding `Combined_Dataset/`::

    Combined_Dataset/
      Training_set/                        split="train"
        training_fg_names.txt              optional: foregrounds to use, in order
        training_bg_names.txt              optional: COCO file names inside bg_dir, in order
        Adobe-licensed images/{fg,alpha}/
        Other/{fg,alpha}/
        split.txt                          optional: "NAME group" lines
      Test_set/                            split="test"
        test_fg_names.txt, test_bg_names.txt (VOC file names inside bg_dir), split.txt
        Adobe-licensed images/{fg,alpha}/  (an Other/ folder is read too when present)

Distinctions-646 (`d646`); alpha is `Alpha/` (or `GT/` as some copies name it)::

    Train/{FG,Alpha}/    split="train"
    Test/{FG,Alpha}/     split="test"     (each may hold split.txt)

Custom (`custom`), which is also what `ppid data synth` writes; `split` is ignored::

    fg/NAME.png
    alpha/NAME.png
    bg/*.jpg             optional when bg_dir is given
    bg_names.txt         optional: file names inside the bg folder, in order
    split.txt            optional: "NAME group" lines (the synthetic benchmark's groups)

Backgrounds come from `bg_dir` (for custom, `ROOT/bg` when `bg_dir` is not given): the names in
the layout's bg list when there is one, else every image in the folder in sorted order. Without a
bg folder the source has no backgrounds (enough for checking and for building test sets).

`check_dataset` severities: unreadable files, fg/alpha size mismatches, a foreground without
alpha, empty or missing folders, bad list entries and non-8-bit foregrounds are errors (`ppid data
check` exits 1). Warnings: 16-bit or float alpha (read at full precision, but test sets and the
benchmark metrics are 8-bit), binary alpha (a mask, not a matte: matting needs fractional values),
alpha without a foreground (ignored), split entries naming no foreground.
"""

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .. import PpidError
from ..io import IMAGE_EXTENSIONS, list_images, read_alpha, read_image, read_trimap
from ..progress import progress

LAYOUTS = ("adobe", "d646", "custom")
SPLITS = ("train", "test")
_ADOBE_SETS = {"train": ("Training_set", "training"), "test": ("Test_set", "test")}
_D646_SETS = {"train": "Train", "test": "Test"}
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


@dataclass
class MattingSource:
    """Foregrounds with their alpha (matched by name) and a pool of backgrounds."""

    root: Path
    names: list  # foreground names (stems)
    fg: list  # Path per name
    alpha: list  # Path per name
    bg: list  # background Paths
    groups: dict = field(default_factory=dict)  # name -> group ("transparent", ...)


@dataclass
class _Listing:
    """What a layout's folders hold, before fg and alpha are paired."""

    folder: Path  # the split's folder, for messages
    fg: dict  # stem -> Path, in use order
    alpha: dict  # stem -> Path
    bg: list
    groups: dict
    bg_source: str  # where the backgrounds came from, for the report


def read_name_list(path):
    """Non-blank lines of a names file (Adobe `*_names.txt` style) as (line number, name)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise PpidError(f"{path}: cannot read name list ({err})") from None
    return [(i, line.strip()) for i, line in enumerate(lines, 1) if line.strip()]


def read_split(path):
    """A `NAME group` file -> {stem: group}: one pair a line, blank lines and `#` comments skipped;
    a name listed in two groups is an error."""
    groups = {}
    for lineno, line in read_name_list(path):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2:
            raise PpidError(f"{path}:{lineno}: expected 'NAME group', got {line!r}")
        name, group = _stem(fields[0]), fields[1]
        if groups.get(name, group) != group:
            raise PpidError(f"{path}:{lineno}: {name!r} is listed in groups {groups[name]!r} and {group!r}")
        groups[name] = group
    return groups


def _stem(name):
    return Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name


def resolve_list(list_path, folder, what):
    """Files of `folder` named by the list at `list_path`, in list order.

    An entry is a file name (`2007_000129.jpg`) or a stem; one that is not in the folder is an
    error naming the list, the line and the folder.
    """
    images = list_images(folder)
    by_name = {p.name: p for p in images.values()}
    found = []
    for lineno, entry in read_name_list(list_path):
        path = by_name.get(entry) or images.get(entry)
        if path is None:
            raise PpidError(f"{list_path}:{lineno}: {what} {entry!r} not found in {folder}")
        found.append(path)
    if not found:
        raise PpidError(f"{list_path}: lists no {what}")
    return found


def _backgrounds(bg_dir, list_path):
    if bg_dir is None:
        return [], "none (no bg folder given)"
    bg_dir = Path(bg_dir)
    if list_path is not None and list_path.is_file():
        return resolve_list(list_path, bg_dir, "background"), f"{bg_dir} in the order of {list_path.name}"
    return list(list_images(bg_dir).values()), str(bg_dir)


def _optional_split(*candidates):
    for path in candidates:
        if path.is_file():
            return read_split(path)
    return {}


def _merge_folders(folders):
    """Images of several folders as one stem -> Path map; a stem in two folders is an error."""
    merged = {}
    for folder in folders:
        for stem, path in list_images(folder).items():
            if stem in merged:
                raise PpidError(f"{path}: name {stem!r} also in {merged[stem].parent}")
            merged[stem] = path
    return merged


def _adobe_base(root):
    return root / "Combined_Dataset" if (root / "Combined_Dataset").is_dir() else root


def _list_adobe(root, split, bg_dir):
    set_name, prefix = _ADOBE_SETS[split]
    folder = _adobe_base(root) / set_name
    parts = [folder / sub for sub in ("Adobe-licensed images", "Other") if (folder / sub).is_dir()]
    if not parts:
        raise PpidError(f"{folder}: no 'Adobe-licensed images' or 'Other' folder (Adobe layout)")
    fg = _merge_folders(p / "fg" for p in parts)
    alpha = _merge_folders(p / "alpha" for p in parts)
    names_file = folder / f"{prefix}_fg_names.txt"
    if names_file.is_file():
        fg = _select(names_file, fg)
    bg, bg_source = _backgrounds(bg_dir, folder / f"{prefix}_bg_names.txt")
    return _Listing(folder, fg, alpha, bg, _optional_split(folder / "split.txt"), bg_source)


def _select(names_file, fg):
    """Foregrounds named by `names_file` (found in any fg folder), in its order."""
    chosen = {}
    for lineno, entry in read_name_list(names_file):
        stem = _stem(entry)
        if stem not in fg:
            raise PpidError(f"{names_file}:{lineno}: foreground {entry!r} not found in the fg folders")
        chosen[stem] = fg[stem]
    return chosen


def _list_d646(root, split, bg_dir):
    folder = root / _D646_SETS[split]
    alpha_dir = next((folder / n for n in ("Alpha", "GT") if (folder / n).is_dir()), folder / "Alpha")
    bg, bg_source = _backgrounds(bg_dir, None)
    return _Listing(folder, list_images(folder / "FG"), list_images(alpha_dir), bg,
                    _optional_split(folder / "split.txt"), bg_source)


def _list_custom(root, bg_dir):
    if bg_dir is None and (root / "bg").is_dir():
        bg_dir = root / "bg"
    bg, bg_source = _backgrounds(bg_dir, root / "bg_names.txt")
    return _Listing(root, list_images(root / "fg"), list_images(root / "alpha"), bg,
                    _optional_split(root / "split.txt"), bg_source)


def detect_layout(root):
    """'adobe', 'd646' or 'custom' from the folder names under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise PpidError(f"{root}: folder not found")
    base = _adobe_base(root)
    if (base / "Training_set").is_dir() or (base / "Test_set").is_dir():
        return "adobe"
    if (root / "Train" / "FG").is_dir() or (root / "Test" / "FG").is_dir():
        return "d646"
    if (root / "fg").is_dir() and (root / "alpha").is_dir():
        return "custom"
    raise PpidError(
        f"{root}: cannot tell the dataset layout (expected Combined_Dataset/ or Training_set/ for Adobe, "
        "Train/FG or Test/FG for Distinctions-646, or fg/ + alpha/ for the custom layout)"
    )


def _listing(root, layout, split, bg_dir):
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise PpidError(f"unknown dataset layout {layout!r} (choose from auto, {', '.join(LAYOUTS)})")
    if split not in SPLITS:
        raise PpidError(f"unknown split {split!r} (choose train or test)")
    if layout == "adobe":
        return _list_adobe(root, split, bg_dir)
    if layout == "d646":
        return _list_d646(root, split, bg_dir)
    return _list_custom(root, bg_dir)


def find_source(root, layout="auto", bg_dir=None, split="train"):
    """Read a dataset folder (layouts in the module docstring) into a `MattingSource`.

    Every foreground must have an alpha; alphas without a foreground are ignored.
    """
    root = Path(root)
    found = _listing(root, layout, split, bg_dir)
    if not found.fg:
        raise PpidError(f"{found.folder}: no foreground images")
    missing = [name for name in found.fg if name not in found.alpha]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise PpidError(
            f"{found.folder}: {len(missing)} foregrounds have no alpha ({shown}); run `ppid data check {root}`"
        )
    names = list(found.fg)
    return MattingSource(root, names, [found.fg[n] for n in names], [found.alpha[n] for n in names],
                         found.bg, found.groups)


class _Report:
    def __init__(self):
        self.lines, self.errors, self.warnings = [], 0, 0

    def error(self, where, message):
        self.errors += 1
        self.lines.append(f"ERROR    {where}: {message}")

    def warn(self, where, message):
        self.warnings += 1
        self.lines.append(f"WARNING  {where}: {message}")


def _mode(path):
    with Image.open(path) as img:
        return img.mode


def _size(shape):
    return f"{shape[1]}x{shape[0]}"


def _check_pair(fg_path, alpha_path, report):
    try:
        fg = read_image(fg_path, warn_alpha=False)
        mode = _mode(fg_path)
        if mode in _HIGH_DEPTH_MODES:
            report.error(fg_path, f"foreground is not 8-bit (mode {mode}); an alpha in the fg folder?")
    except PpidError as err:
        report.error(fg_path, str(err).removeprefix(f"{fg_path}: "))
        fg = None
    try:
        alpha = read_alpha(alpha_path)
        mode = _mode(alpha_path)
        if mode in _HIGH_DEPTH_MODES:
            report.warn(alpha_path, f"alpha is not 8-bit (mode {mode}): read at full precision, "
                                    "test sets and metrics quantise to 8-bit")
    except PpidError as err:
        report.error(alpha_path, str(err).removeprefix(f"{alpha_path}: "))
        return
    if fg is not None and fg.shape[:2] != alpha.shape:
        report.error(fg_path, f"foreground is {_size(fg.shape)} but alpha {alpha_path.name} "
                           f"is {_size(alpha.shape)}")
    if not ((alpha > 0) & (alpha < 1)).any():
        report.warn(alpha_path, "alpha is binary (only 0 and 1): a mask, matting needs fractional alpha")


def _check_listing(label, found, report):
    if not found.fg:
        report.error(found.folder, f"{label}: no foreground images")
    if not found.alpha:
        report.error(found.folder, f"{label}: no alpha images")
    report.lines.append(f"{label}: {len(found.fg)} foregrounds, {len(found.alpha)} alphas, "
                        f"{len(found.bg)} backgrounds from {found.bg_source}, {len(found.groups)} with a group")
    if found.fg and found.alpha:
        for name in found.fg:
            if name not in found.alpha:
                report.error(found.fg[name], "foreground has no alpha")
        for name in found.alpha:
            if name not in found.fg:
                report.warn(found.alpha[name], "alpha has no foreground (ignored)")
    for name in found.groups:
        if name not in found.fg:
            report.warn(found.folder / "split.txt", f"{name!r} names no foreground")
    pairs = [(found.fg[n], found.alpha[n]) for n in found.fg if n in found.alpha]
    for fg_path, alpha_path in progress(pairs, desc=f"check {label}", unit="fg", leave=False):
        _check_pair(fg_path, alpha_path, report)
    for path in progress(found.bg, desc=f"check {label} bg", unit="bg", leave=False):
        try:
            read_image(path, warn_alpha=False)
        except PpidError as err:
            report.error(path, str(err).removeprefix(f"{path}: "))


def check_dataset(root, layout="auto", bg_dir=None):
    """Validate a dataset folder; returns (report text, number of errors).

    Every split the layout has is checked (Adobe Training_set/Test_set, D646 Train/Test); the
    severities are listed in the module docstring.
    """
    root = Path(root)
    report = _Report()
    try:
        layout = detect_layout(root) if layout == "auto" else layout
        splits = {"adobe": [s for s in SPLITS if (_adobe_base(root) / _ADOBE_SETS[s][0]).is_dir()],
                  "d646": [s for s in SPLITS if (root / _D646_SETS[s]).is_dir()],
                  "custom": ["train"]}.get(layout, ["train"])
        if not splits:
            report.error(root, f"no split folder for the {layout} layout")
        for split in splits:
            label = "dataset" if layout == "custom" else split
            try:
                _check_listing(label, _listing(root, layout, split, bg_dir), report)
            except PpidError as err:
                report.error(label, str(err))
    except PpidError as err:
        report.error(root, str(err))
    summary = f"{report.errors} error{'s' * (report.errors != 1)}, {report.warnings} warning{'s' * (report.warnings != 1)}"
    header = f"ppid data check: {root} (layout {layout})"
    return "\n".join([header, *report.lines, summary]), report.errors


class CompositeTestSet:
    """A built test set (`ppid data build-testset` output, or any folder laid out the same)::

        merged/NAME.png    composites
        alpha/NAME.png     ground-truth alpha, one per composite
        trimaps/NAME.png   optional
        split.txt          optional "NAME group" lines

    Indexing and iteration give dicts `{name, image, alpha, trimap, group}`: image float32 HxWx3,
    alpha float32 HxW in [0, 1], trimap uint8 HxW in {0, 128, 255} or None without `trimaps/`,
    group a string or None.
    """

    def __init__(self, root):
        self.root = Path(root)
        self._merged = list_images(self.root / "merged")
        if not self._merged:
            raise PpidError(f"{self.root / 'merged'}: no images")
        self._alpha = self._matching("alpha")
        self._trimaps = self._matching("trimaps") if (self.root / "trimaps").is_dir() else None
        split = self.root / "split.txt"
        self.groups = read_split(split) if split.is_file() else {}
        self.names = list(self._merged)

    def _matching(self, sub):
        files = list_images(self.root / sub)
        missing = [n for n in self._merged if n not in files]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise PpidError(f"{self.root / sub}: no file for {len(missing)} composites ({shown})")
        return files

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        name = self.names[index]
        image = read_image(self._merged[name])
        alpha = read_alpha(self._alpha[name])
        trimap = read_trimap(self._trimaps[name]) if self._trimaps is not None else None
        for other, path in ((alpha, self._alpha[name]), (trimap, self._trimaps and self._trimaps[name])):
            if other is not None and other.shape != image.shape[:2]:
                raise PpidError(f"{path}: is {_size(other.shape)} but {self._merged[name].name} is {_size(image.shape)}")
        return {"name": name, "image": image, "alpha": alpha, "trimap": trimap, "group": self.groups.get(name)}

    def __iter__(self):
        return (self[i] for i in range(len(self)))

"""`ppid data synth` and `ppid data preview` (small sizes so each test takes a few seconds).

The properties every benchmark version must have run once per version (the `version` fixture)."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, load_script
from ppid import PpidError
from ppid.cli import main
from ppid.data.preview import preview_grid
from ppid.data.synth import KINDS, SYNTH_VERSION, VERSIONS, make_foreground, synthesize

SIZE = (64, 96)  # non-square on purpose
N = len(KINDS)  # one foreground of every kind


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _alpha(root, name):
    return np.asarray(Image.open(root / "alpha" / f"{name}.png"))


@pytest.fixture(scope="module", params=VERSIONS, ids=[f"v{v}" for v in VERSIONS])
def version(request):
    return request.param


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory, version):
    out = tmp_path_factory.mktemp(f"synth_v{version}")
    synthesize(out, N, seed=0, size=SIZE, workers=2, version=version)
    return out


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(synth_dir, tmp_path, version):
    synthesize(tmp_path, N, seed=0, size=SIZE, workers=1, version=version)
    assert _files(tmp_path) == _files(synth_dir)
    assert len(_files(tmp_path)) == 2 * N + N + 2  # fg + alpha, bg, split.txt, manifest.json


def _pixel_digest(root):
    """sha256 over the decoded pixels of every PNG (not the PNG bytes, which depend on zlib)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        pixels = np.asarray(Image.open(path))
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(str(pixels.shape).encode())
        digest.update(pixels.tobytes())
    return digest.hexdigest()


def test_version_1_is_what_it_always_was(tmp_path):
    # Computed with the generator before version 2 existed (commit d01da85). Version 1 must never
    # change: results measured on it stay reproducible.
    synthesize(tmp_path, 8, seed=5, size=(48, 40), workers=1, version=1)
    assert _pixel_digest(tmp_path) == "729b063afbb2636f42bedd68cbd6995c67bd725a31f92837b3ae95dfedbf65e7"


def test_versions_share_alpha_and_differ_in_colour():
    for index in range(len(KINDS)):
        fg1, alpha1, meta1 = make_foreground(0, index, SIZE, version=1)
        fg2, alpha2, meta2 = make_foreground(0, index, SIZE, version=2)
        assert np.array_equal(alpha1, alpha2) and meta1 == meta2, meta1
        assert fg2.shape == fg1.shape and fg2.dtype == np.float32 and 0 <= fg2.min() and fg2.max() <= 1
        assert np.abs(fg2 - fg1).mean() > 0.01, meta1


def test_different_seeds_differ(synth_dir, tmp_path, version):
    synthesize(tmp_path, N, seed=1, size=SIZE, version=version)
    for name in ("synth_00000", "synth_00001"):
        assert not np.array_equal(_alpha(tmp_path, name), _alpha(synth_dir, name))
    assert (tmp_path / "bg" / "bg_00000.png").read_bytes() != (synth_dir / "bg" / "bg_00000.png").read_bytes()


def test_layout_split_and_manifest(synth_dir, version):
    split = dict(line.split() for line in (synth_dir / "split.txt").read_text().splitlines())
    assert set(split.values()) == {"transparent", "non-transparent"}
    assert sorted(p.stem for p in (synth_dir / "fg").glob("*.png")) == sorted(split)
    assert sorted(p.stem for p in (synth_dir / "alpha").glob("*.png")) == sorted(split)
    assert len(list((synth_dir / "bg").glob("*.png"))) == N

    manifest = json.loads((synth_dir / "manifest.json").read_text())
    assert manifest["version"] == version and manifest["seed"] == 0
    assert manifest["parameters"]["size"] == list(SIZE) and manifest["parameters"]["n_fg"] == N
    assert {s["kind"] for s in manifest["samples"]} == set(KINDS)
    for sample in manifest["samples"]:
        assert split[sample["name"]] == sample["group"]
        assert (sample["group"] == "transparent") == (sample["kind"] in ("glass", "smoke", "veil"))

    for name in split:
        fg, alpha = Image.open(synth_dir / "fg" / f"{name}.png"), Image.open(synth_dir / "alpha" / f"{name}.png")
        assert fg.mode == "RGB" and alpha.mode == "L"
        assert fg.size == alpha.size == (SIZE[1], SIZE[0])


def test_every_alpha_is_fractional_and_transparent_ones_are_mostly_low(synth_dir):
    manifest = json.loads((synth_dir / "manifest.json").read_text())
    for sample in manifest["samples"]:
        a = _alpha(synth_dir, sample["name"])
        visible = a > 0
        partial = (a > 0) & (a < 255)
        assert partial.sum() >= 20, sample  # real coverage, not a binary mask
        low = (a > 0) & (a < 128)
        if sample["group"] == "transparent":
            assert low.sum() >= 0.5 * visible.sum() and low.mean() > 0.05, sample
        if sample["kind"] in ("solid", "holes", "hair"):
            assert (a == 255).mean() > 0.02 and low.sum() < 0.5 * visible.sum(), sample


def test_foreground_colour_is_defined_where_alpha_is_zero(synth_dir):
    manifest = json.loads((synth_dir / "manifest.json").read_text())
    for sample in manifest["samples"]:
        if sample["kind"] not in ("solid", "holes"):
            continue
        fg = np.asarray(Image.open(synth_dir / "fg" / f"{sample['name']}.png"), np.float32) / 255
        a = _alpha(synth_dir, sample["name"])
        outside, inside = fg[a == 0].mean(0), fg[a == 255].mean(0)
        assert np.abs(outside - inside).max() < 0.15, sample


@pytest.mark.parametrize("version", VERSIONS)
def test_bg_dir_photos_are_cropped_to_size(tmp_path, version):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (50, 200), (200, 30, 10)).save(photos / "red.jpg", quality=100)
    Image.new("RGB", (300, 40), (10, 40, 220)).save(photos / "blue.png")
    out = tmp_path / "out"
    manifest = synthesize(out, 2, seed=3, size=SIZE, bg_dir=photos, n_bg=3, version=version)
    assert manifest["version"] == version
    assert [b["source"] for b in manifest["backgrounds"]] == ["blue.png", "red.jpg", "blue.png"]
    for name, colour in (("bg_00000", (10, 40, 220)), ("bg_00001", (200, 30, 10))):
        bg = np.asarray(Image.open(out / "bg" / f"{name}.png"), np.int16)
        assert bg.shape == (*SIZE, 3)
        assert np.abs(bg - colour).max() <= 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_fg=0), "--n-fg"),
        (dict(n_fg=2, size=(0, 64)), "--size"),
        (dict(n_fg=2, size=(64,)), "--size"),
        (dict(n_fg=2, n_bg=0), "--n-bg"),
        (dict(n_fg=2, version=3), "--version"),
    ],
)
def test_bad_arguments_are_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(PpidError, match=message):
        synthesize(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_cli_errors_are_one_line_and_keep_existing_files(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "synth", "--out", str(tmp_path / "o"), "--n-fg", "2", "--bg-dir", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(empty) in err and "no images" in err

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["data", "synth", "--out", str(foreign), "--n-fg", "2", "--size", "64", "64"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1


def test_cli_version_flag(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "v1"), "--n-fg", "1", "--size", "32", "32", "--version", "1"]) == 0
    assert json.loads((tmp_path / "v1" / "manifest.json").read_text())["version"] == 1
    assert main(["data", "synth", "--out", str(tmp_path / "new"), "--n-fg", "1", "--size", "32", "32"]) == 0
    assert json.loads((tmp_path / "new" / "manifest.json").read_text())["version"] == SYNTH_VERSION == max(VERSIONS)
    with pytest.raises(SystemExit):
        main(["data", "synth", "--out", str(tmp_path / "v3"), "--n-fg", "1", "--version", "3"])
    assert "invalid choice" in capsys.readouterr().err


def _synth_stats(monkeypatch):
    # its folder on sys.path, as when it runs as a script: it imports benchmarks/common.py
    folder = ROOT / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))
    return load_script(folder / "synth_stats.py")


def test_version_2_has_no_sharpness_shortcut(tmp_path, monkeypatch):
    """Version 1 foregrounds are flat and its backgrounds have no sharp edges, so sharpness alone
    finds the foreground; version 2 must not allow that. Medians over 8 samples at 128 px, seeds
    0-2, version 2 (version 1): fg colour std 0.080-0.134 (0.018-0.032), background sharp edges
    0.18-0.23 (0-0.0014), sharp edges outside / in the band 0.38-0.75 (0.027-0.11), Laplacian
    bg / fg 0.89-1.9 (4.9-11)."""
    stats = _synth_stats(monkeypatch)
    measured = {}
    for version in VERSIONS:
        synthesize(tmp_path / f"v{version}", 8, seed=0, size=(128, 128), version=version)
        manifest = json.loads((tmp_path / f"v{version}" / "manifest.json").read_text())
        measured[version] = stats.dataset_stats(tmp_path / f"v{version}", manifest)["median"]
    v1, v2 = measured[1], measured[2]
    # The foreground colour varies across its transition band...
    assert v2["fg_colour_std"] > 0.05 and v2["fg_colour_std"] > 2.5 * v1["fg_colour_std"]
    # ...the background has sharp edges, and outside the foreground the composite has a
    # comparable share of them to the transition band...
    assert v2["bg_sharp_edges"] > 0.05 > v1["bg_sharp_edges"]
    assert v2["sharp_edges_outside_over_band"] > 0.3 > v1["sharp_edges_outside_over_band"]
    # ...and background and foreground have high-frequency energy of the same order.
    assert 1 / 3 < v2["laplacian_bg_over_fg"] < 3 < v1["laplacian_bg_over_fg"]


def test_rerun_with_fewer_samples_replaces_the_previous_set(tmp_path):
    synthesize(tmp_path, 4, seed=0, size=(32, 32))
    synthesize(tmp_path, 2, seed=0, size=(32, 32))
    assert sorted(p.name for p in (tmp_path / "fg").iterdir()) == ["synth_00000.png", "synth_00001.png"]
    assert len(list((tmp_path / "bg").iterdir())) == 2
    assert len((tmp_path / "split.txt").read_text().splitlines()) == 2


def test_preview_of_a_synth_folder(synth_dir, tmp_path):
    out = tmp_path / "grid.png"
    assert main(["data", "preview", str(synth_dir), "--out", str(out), "--max-items", "5"]) == 0
    grid = np.asarray(Image.open(out).convert("RGB"))
    assert grid.shape[1] > 4 * 160 and grid.shape[0] > 2 * 160  # 4 columns, 2 rows
    assert grid.std() > 10


def test_preview_of_a_built_test_set_and_bad_folders(tmp_path):
    for folder in ("merged", "alpha"):
        (tmp_path / folder).mkdir()
    rng = np.random.default_rng(0)
    for name in ("a_0", "a_1", "b_0"):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(tmp_path / "merged" / f"{name}.png")
        Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)).save(tmp_path / "alpha" / f"{name}.png")
    (tmp_path / "split.txt").write_text("a_0 transparent\na_1 transparent\nb_0 non-transparent\n")
    out = tmp_path / "grid.png"
    preview_grid(tmp_path, out)
    assert Image.open(out).size[0] > 3 * 160

    (tmp_path / "alpha" / "b_0.png").unlink()
    with pytest.raises(PpidError, match="b_0"):
        preview_grid(tmp_path, out)
    with pytest.raises(PpidError, match="expected a dataset"):
        preview_grid(tmp_path / "alpha", out)

import hashlib

import numpy as np
import pytest
from PIL import Image

from ppid import PpidError
from ppid.cli import main
from ppid.data.compose import test_trimap as reference_trimap
from ppid.data.datasets import CompositeTestSet
from ppid.data.testset import build_testset, cover_background
from ppid.io import read_alpha, read_image

BG_COLOURS = {"bg0": (255, 0, 0), "bg1": (0, 255, 0), "bg2": (0, 0, 255)}


def put(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def dataset(root, names=("glass", "hair"), size=(24, 32)):
    """fg/ (noise), alpha/ (solid left, soft middle, transparent right), bg/ (solid colours), split.txt."""
    h, w = size
    rng = np.random.default_rng(0)
    alpha = np.zeros(size, np.uint8)
    alpha[:, : w // 3] = 255
    alpha[:, w // 3 : 2 * w // 3] = np.linspace(250, 5, 2 * w // 3 - w // 3).astype(np.uint8)
    for name in names:
        put(root / "fg" / f"{name}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        put(root / "alpha" / f"{name}.png", alpha)
    for name, colour in BG_COLOURS.items():
        put(root / "bg" / f"{name}.jpg", np.full((h + 8, w + 8, 3), colour, np.uint8))
    (root / "split.txt").write_text("glass transparent\nhair non-transparent\n")
    return root


def bg_colour(path):
    """The background a composite used: its fully transparent right edge."""
    return tuple(np.round(read_image(path)[:, -1].mean(axis=0) * 255).astype(int))


def test_cli_build_per_fg_5(tmp_path, capsys):
    src = dataset(tmp_path / "synth")
    out = tmp_path / "comp"
    rc = main(["data", "build-testset", "--fg", str(src / "fg"), "--alpha", str(src / "alpha"),
               "--bg", str(src / "bg"), "--per-fg", "5", "--out", str(out)])
    assert rc == 0
    assert "wrote 10 composites (2 foregrounds x 5 of 3 backgrounds) with groups" in capsys.readouterr().out
    names = [f"{fg}_{k}" for fg in ("glass", "hair") for k in range(5)]
    for sub in ("merged", "alpha", "trimaps"):
        assert sorted(p.stem for p in (out / sub).iterdir()) == names
    assert (out / "split.txt").read_text().splitlines()[:2] == ["glass_0 transparent", "glass_1 transparent"]
    assert (out / "split.txt").read_text().splitlines()[-1] == "hair_4 non-transparent"

    # Fixed order: composite k of foreground i over background (i * 5 + k) mod 3, sorted by name.
    used = [bg_colour(out / "merged" / f"{n}.png") for n in names]
    expected = [BG_COLOURS[f"bg{(i * 5 + k) % 3}"] for i in range(2) for k in range(5)]
    assert all(np.abs(np.subtract(u, e)).max() <= 2 for u, e in zip(used, expected))  # JPEG backgrounds

    # Float composite of the 8-bit alpha over the top-left crop, rounded to 8 bits.
    fg = read_image(src / "fg" / "hair.png")
    alpha = read_alpha(src / "alpha" / "hair.png")[:, :, None]
    bg = read_image(src / "bg" / f"bg{(1 * 5 + 3) % 3}.jpg")[:24, :32]  # hair_3
    want = np.round((alpha * fg + (1 - alpha) * bg) * 255)
    np.testing.assert_array_equal(np.round(read_image(out / "merged" / "hair_3.png") * 255), want)

    ts = CompositeTestSet(out)
    assert len(ts) == 10 and ts.names == names
    item = ts[7]
    assert item["name"] == "hair_2" and item["group"] == "non-transparent"
    np.testing.assert_array_equal(item["alpha"], read_alpha(src / "alpha" / "hair.png"))
    np.testing.assert_array_equal(item["trimap"], reference_trimap(item["alpha"]))
    assert set(np.unique(item["trimap"])) == {0, 128, 255}


def test_bg_list_order_and_cycling(tmp_path):
    src = dataset(tmp_path / "s", names=("a",))
    (src / "split.txt").unlink()
    (tmp_path / "order.txt").write_text("bg2.jpg\nbg0\n")
    out = tmp_path / "o"
    build_testset(src / "fg", src / "alpha", src / "bg", 3, out, bg_list=tmp_path / "order.txt")
    used = [bg_colour(out / "merged" / f"a_{k}.png") for k in range(3)]
    expected = [BG_COLOURS[n] for n in ("bg2", "bg0", "bg2")]
    assert all(np.abs(np.subtract(u, e)).max() <= 2 for u, e in zip(used, expected))
    assert not (out / "split.txt").exists()  # no groups known: no split file


def test_checksums_are_stable_and_verifiable(tmp_path):
    src = dataset(tmp_path / "s")
    build_testset(src / "fg", src / "alpha", src / "bg", 2, tmp_path / "one")
    build_testset(src / "fg", src / "alpha", src / "bg", 2, tmp_path / "two")
    one = (tmp_path / "one" / "checksums.txt").read_text()
    assert one == (tmp_path / "two" / "checksums.txt").read_text()
    lines = one.splitlines()
    assert len(lines) == 3 * 4 + 1  # merged, alpha, trimaps for 4 composites, and split.txt
    assert [line.split("  ")[1] for line in lines] == sorted(line.split("  ")[1] for line in lines)
    for line in lines:
        digest, rel = line.split("  ")
        assert hashlib.sha256((tmp_path / "one" / rel).read_bytes()).hexdigest() == digest


def test_small_background_is_scaled_by_the_larger_ratio_then_cropped():
    rows = np.repeat(np.linspace(0, 1, 8, dtype=np.float32)[:, None], 4, axis=1)  # 8 tall, 4 wide
    bg = np.repeat(rows[:, :, None], 3, axis=2)
    out = cover_background(bg, 16, 16)
    assert out.shape == (16, 16, 3)
    # Width needs x4 and height x2: x4 wins, so the 16 rows kept show only the top half of the
    # original gradient (a stretch to 16x16 would reach the bottom value 1.0).
    assert 0.4 < out[-1, 0, 0] < 0.6
    big = np.random.default_rng(0).random((30, 40, 3)).astype(np.float32)
    np.testing.assert_array_equal(cover_background(big, 16, 16), big[:16, :16])  # no scaling up or down


def test_bad_inputs_write_nothing(tmp_path, capsys):
    src = dataset(tmp_path / "s")
    out = tmp_path / "o"
    (tmp_path / "order.txt").write_text("bg0.jpg\n\nvoc_missing.jpg\n")
    with pytest.raises(PpidError, match=r"order.txt:3: background 'voc_missing.jpg' not found in .*bg"):
        build_testset(src / "fg", src / "alpha", src / "bg", 2, out, bg_list=tmp_path / "order.txt")
    with pytest.raises(PpidError, match="--per-fg must be at least 1"):
        build_testset(src / "fg", src / "alpha", src / "bg", 0, out)
    (tmp_path / "partial.txt").write_text("glass transparent\n")
    with pytest.raises(PpidError, match=r"partial.txt: no group for 1 foregrounds \(hair\)"):
        build_testset(src / "fg", src / "alpha", src / "bg", 2, out, split=tmp_path / "partial.txt")
    (src / "alpha" / "hair.png").unlink()
    with pytest.raises(PpidError, match=r"no alpha for 1 foregrounds \(hair.png\)"):
        build_testset(src / "fg", src / "alpha", src / "bg", 2, out)
    assert not out.exists()

    put(src / "alpha" / "hair.png", np.full((24, 32), 128, np.uint8))
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    rc = main(["data", "build-testset", "--fg", str(src / "fg"), "--alpha", str(src / "alpha"),
               "--bg", str(src / "bg"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("ppid data: error: ") and "is not an empty folder" in err
    assert err.count("\n") == 1 and (out / "mine.txt").read_text() == "keep me"


def test_size_mismatch_is_named(tmp_path):
    src = dataset(tmp_path / "s", names=("a",))
    (src / "split.txt").unlink()
    put(src / "alpha" / "a.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(PpidError, match=r"a.png: alpha is 10x10 but its foreground a.png is 32x24"):
        build_testset(src / "fg", src / "alpha", src / "bg", 1, tmp_path / "o")


def test_fg_list_fixes_the_foreground_order_and_so_the_pairing(tmp_path):
    src = dataset(tmp_path / "s")
    (tmp_path / "fg_names.txt").write_text("hair.png\nglass\n")
    out = tmp_path / "o"
    build_testset(src / "fg", src / "alpha", src / "bg", 1, out, fg_list=tmp_path / "fg_names.txt")
    # hair comes first, so it takes bg0 and glass bg1 (sorted order would give the reverse).
    assert np.abs(np.subtract(bg_colour(out / "merged" / "hair_0.png"), BG_COLOURS["bg0"])).max() <= 2
    assert np.abs(np.subtract(bg_colour(out / "merged" / "glass_0.png"), BG_COLOURS["bg1"])).max() <= 2

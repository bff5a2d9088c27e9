import numpy as np
import pytest
from PIL import Image

from ppid import PpidError
from ppid.cli import main
from ppid.data.datasets import CompositeTestSet, check_dataset, detect_layout, find_source


def soft_alpha(h=16, w=16):
    """uint8 alpha with a soft ramp: solid left, transparent right."""
    ramp = np.clip((np.arange(w) - w / 4) / (w / 2), 0, 1)
    return np.round((1 - np.tile(ramp, (h, 1))) * 255).astype(np.uint8)


def put(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def pair(folder_fg, folder_alpha, name, size=(16, 16), ext=".png"):
    rng = np.random.default_rng(len(name))
    put(folder_fg / f"{name}{ext}", rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    put(folder_alpha / f"{name}.png", soft_alpha(*size))


def custom_tree(root, names=("a", "b", "c"), n_bg=2):
    for name in names:
        pair(root / "fg", root / "alpha", name)
    for i in range(n_bg):
        put(root / "bg" / f"bg{i}.jpg", np.full((20, 24, 3), 40 * i, np.uint8))
    return root


def test_custom_layout_with_split_is_the_synthetic_layout(tmp_path):
    root = custom_tree(tmp_path / "synth")
    (root / "split.txt").write_text("a transparent\nb non-transparent\n# comment\n\nc non-transparent\n")
    assert detect_layout(root) == "custom"
    src = find_source(root)
    assert src.names == ["a", "b", "c"]
    assert [p.name for p in src.fg] == ["a.png", "b.png", "c.png"] and src.alpha[1] == root / "alpha" / "b.png"
    assert [p.name for p in src.bg] == ["bg0.jpg", "bg1.jpg"]
    assert src.groups == {"a": "transparent", "b": "non-transparent", "c": "non-transparent"}


def test_custom_bg_list_orders_backgrounds_and_bg_dir_overrides(tmp_path):
    root = custom_tree(tmp_path / "c")
    (root / "bg_names.txt").write_text("bg1.jpg\nbg0\n")
    assert [p.name for p in find_source(root).bg] == ["bg1.jpg", "bg0.jpg"]
    other = tmp_path / "coco"
    put(other / "x.jpg", np.zeros((8, 8, 3), np.uint8))
    (root / "bg_names.txt").unlink()
    assert find_source(root, bg_dir=other).bg == [other / "x.jpg"]


def test_bad_bg_list_entry_names_list_line_and_folder(tmp_path):
    root = custom_tree(tmp_path / "c")
    (root / "bg_names.txt").write_text("bg0.jpg\nmissing.jpg\n")
    with pytest.raises(PpidError, match=r"bg_names.txt:2: background 'missing.jpg' not found in .*bg"):
        find_source(root)


def adobe_tree(root):
    base = root / "Combined_Dataset"
    train = base / "Training_set"
    pair(train / "Adobe-licensed images" / "fg", train / "Adobe-licensed images" / "alpha", "hair", ext=".jpg")
    pair(train / "Other" / "fg", train / "Other" / "alpha", "glass")
    pair(train / "Other" / "fg", train / "Other" / "alpha", "unlisted")
    (train / "training_fg_names.txt").write_text("glass.png\nhair.jpg\n")
    (train / "training_bg_names.txt").write_text("c2.jpg\nc1.jpg\nc2.jpg\n")
    test = base / "Test_set"
    pair(test / "Adobe-licensed images" / "fg", test / "Adobe-licensed images" / "alpha", "net")
    (test / "test_fg_names.txt").write_text("net.png\n")
    (test / "test_bg_names.txt").write_text("v1.jpg\n")
    (test / "split.txt").write_text("net transparent\n")
    for name in ("c1", "c2"):
        put(root / "coco" / f"{name}.jpg", np.zeros((20, 20, 3), np.uint8))
    put(root / "voc" / "v1.jpg", np.zeros((20, 20, 3), np.uint8))
    return root


def test_adobe_layout_train_and_test(tmp_path):
    root = adobe_tree(tmp_path)
    assert detect_layout(root) == "adobe" and detect_layout(root / "Combined_Dataset") == "adobe"
    train = find_source(root, bg_dir=root / "coco")
    assert train.names == ["glass", "hair"]  # the names file's order; "unlisted" is not used
    assert train.fg[1].name == "hair.jpg" and train.alpha[1].name == "hair.png"
    assert [p.name for p in train.bg] == ["c2.jpg", "c1.jpg", "c2.jpg"]
    test = find_source(root / "Combined_Dataset", "adobe", bg_dir=root / "voc", split="test")
    assert test.names == ["net"] and test.groups == {"net": "transparent"}
    assert [p.name for p in test.bg] == ["v1.jpg"]
    assert find_source(root, split="test").bg == []  # no bg folder given: none


def test_adobe_names_file_with_unknown_foreground(tmp_path):
    root = adobe_tree(tmp_path)
    (root / "Combined_Dataset/Training_set/training_fg_names.txt").write_text("glass.png\nghost.jpg\n")
    with pytest.raises(PpidError, match=r"training_fg_names.txt:2: foreground 'ghost.jpg' not found"):
        find_source(root)


def test_d646_layout_with_alpha_or_gt_folder(tmp_path):
    for name in ("x", "y"):
        pair(tmp_path / "Train" / "FG", tmp_path / "Train" / "Alpha", name)
    pair(tmp_path / "Test" / "FG", tmp_path / "Test" / "GT", "z")
    assert detect_layout(tmp_path) == "d646"
    assert find_source(tmp_path).names == ["x", "y"]
    assert find_source(tmp_path, "d646", split="test").alpha == [tmp_path / "Test" / "GT" / "z.png"]


def test_unknown_layout_and_missing_alpha_are_clear_errors(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(PpidError, match="cannot tell the dataset layout"):
        find_source(tmp_path)
    root = custom_tree(tmp_path / "c")
    (root / "alpha" / "b.png").unlink()
    with pytest.raises(PpidError, match=r"1 foregrounds have no alpha \(b\)"):
        find_source(root)


def test_check_clean_dataset_passes(tmp_path):
    root = custom_tree(tmp_path / "c")
    report, n_errors = check_dataset(root)
    assert n_errors == 0, report
    assert "dataset: 3 foregrounds, 3 alphas, 2 backgrounds" in report
    assert report.splitlines()[-1] == "0 errors, 0 warnings"


def test_check_reports_every_problem(tmp_path):
    root = custom_tree(tmp_path / "c", names=("ok", "nomatte", "big", "broken", "mask", "deep"))
    (root / "alpha" / "nomatte.png").unlink()
    put(root / "alpha" / "orphan.png", soft_alpha())
    put(root / "alpha" / "big.png", soft_alpha(16, 20))
    (root / "fg" / "broken.png").write_bytes(b"\x89PNG garbage")
    put(root / "alpha" / "mask.png", (soft_alpha() > 128).astype(np.uint8) * 255)
    put(root / "alpha" / "deep.png", soft_alpha().astype(np.uint16) * 257)
    (root / "bg" / "bad.jpg").write_bytes(b"nope")
    report, n_errors = check_dataset(root)
    lines = report.splitlines()

    def has(level, *words):
        return any(line.startswith(level) and all(w in line for w in words) for line in lines)

    assert has("ERROR", "nomatte.png", "foreground has no alpha")
    assert has("WARNING", "orphan.png", "alpha has no foreground")
    assert has("ERROR", "big", "16x16", "20x16")
    assert has("ERROR", "broken.png", "cannot read image")
    assert has("WARNING", "mask.png", "binary")
    assert has("WARNING", "deep.png", "not 8-bit", "I;16")
    assert has("ERROR", "bad.jpg", "cannot read image")
    assert not any("ok.png" in line for line in lines)
    assert n_errors == 4 and lines[-1] == "4 errors, 3 warnings"


def test_check_empty_and_missing_folders(tmp_path):
    (tmp_path / "fg").mkdir()
    (tmp_path / "alpha").mkdir()
    report, n_errors = check_dataset(tmp_path)
    assert n_errors == 2 and "no foreground images" in report and "no alpha images" in report
    (tmp_path / "alpha").rmdir()
    report, n_errors = check_dataset(tmp_path, layout="custom")
    assert n_errors == 1 and "alpha: folder not found" in report


def test_check_adobe_checks_both_splits(tmp_path):
    root = adobe_tree(tmp_path)
    report, n_errors = check_dataset(root, bg_dir=root / "coco")
    assert "train: 2 foregrounds, 3 alphas, 3 backgrounds" in report
    # Test_set's list names v1.jpg, which is not among the COCO images: a bad list entry.
    assert n_errors == 1 and "test_bg_names.txt:1: background 'v1.jpg' not found" in report
    report, n_errors = check_dataset(root)
    assert n_errors == 0 and "test: 1 foregrounds, 1 alphas, 0 backgrounds from none" in report


def test_cli_check_exit_codes(tmp_path, capsys):
    root = custom_tree(tmp_path / "c")
    assert main(["data", "check", str(root)]) == 0
    assert "0 errors" in capsys.readouterr().out
    (root / "alpha" / "a.png").write_bytes(b"broken")
    assert main(["data", "check", str(root), "--layout", "custom"]) == 1
    assert "1 error," in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 1


def test_composite_testset_reader(tmp_path):
    root = tmp_path / "ts"
    put(root / "merged" / "a_0.png", np.full((6, 8, 3), 200, np.uint8))
    put(root / "merged" / "a_1.png", np.full((6, 8, 3), 100, np.uint8))
    for name in ("a_0", "a_1"):
        put(root / "alpha" / f"{name}.png", soft_alpha(6, 8))
    ts = CompositeTestSet(root)
    assert len(ts) == 2 and ts.names == ["a_0", "a_1"]
    item = ts[1]
    assert item["name"] == "a_1" and item["trimap"] is None and item["group"] is None
    assert item["image"].dtype == np.float32 and item["image"].shape == (6, 8, 3)
    np.testing.assert_allclose(item["image"], 100 / 255, atol=1e-7)
    np.testing.assert_array_equal(np.round(item["alpha"] * 255), soft_alpha(6, 8))

    trimap = np.full((6, 8), 128, np.uint8)
    trimap[:, :2] = 255
    for name in ("a_0", "a_1"):
        put(root / "trimaps" / f"{name}.png", trimap)
    (root / "split.txt").write_text("a_0 transparent\na_1 transparent\n")
    items = list(CompositeTestSet(root))
    assert [i["group"] for i in items] == ["transparent", "transparent"]
    np.testing.assert_array_equal(items[0]["trimap"], trimap)


def test_composite_testset_errors(tmp_path):
    root = tmp_path / "ts"
    put(root / "merged" / "a_0.png", np.zeros((6, 8, 3), np.uint8))
    (root / "alpha").mkdir()
    with pytest.raises(PpidError, match=r"alpha: no file for 1 composites \(a_0\)"):
        CompositeTestSet(root)
    put(root / "alpha" / "a_0.png", soft_alpha(6, 6))
    with pytest.raises(PpidError, match=r"a_0.png: is 6x6 but a_0.png is 8x6"):
        CompositeTestSet(root)[0]
    with pytest.raises(PpidError, match="merged: folder not found"):
        CompositeTestSet(tmp_path / "nothing")

import numpy as np
import pytest
import torch
from PIL import Image

import ppid
from ppid import PpidError
from ppid.cli import main
from ppid.io import read_alpha, read_image
from ppid.models import build, save_model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A freshly built IndexNet student and teacher (random weights) saved the way training saves."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    paths = {}
    for role in ("student", "teacher"):
        paths[role] = root / f"{role}.safetensors"
        save_model(build("indexnet", role), paths[role])
    return paths


def _photo(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


@pytest.fixture
def mixed_folder(tmp_path):
    """PNG, EXIF-rotated JPEG, RGBA, grayscale, 16-bit grey and one corrupt file."""
    d = tmp_path / "photos"
    d.mkdir()
    Image.fromarray(_photo(40, 56)).save(d / "plain.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(_photo(36, 52, 1)).save(d / "rotated.jpg", exif=exif)
    Image.fromarray(np.dstack([_photo(40, 40, 2), np.full((40, 40), 128, np.uint8)]), "RGBA").save(d / "rgba.png")
    Image.fromarray(_photo(33, 45, 3)[:, :, 0], "L").save(d / "grey.png")
    Image.fromarray((np.random.default_rng(4).random((30, 50)) * 65535).astype(np.uint16)).save(d / "deep16.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    return d


def test_predict_cli_mixed_folder(weights, mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["predict", "--model", str(weights["student"]), str(mixed_folder), "--out", str(out),
               "--save", "alpha,rgba,fg,composite", "--background", "#204080"])
    err = capsys.readouterr().err
    assert rc == 1  # one corrupt file: the rest is written, the exit status says something failed
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and "broken.png" in error_lines[0]
    assert "rgba.png: has an alpha channel" in err
    assert "5 of 6 images" in err
    # stderr is not a terminal here: plain progress lines, no carriage-return bar updates
    assert "\r" not in err and "predict: 6/6 (100%)" in err

    expected_sizes = {"plain": (40, 56), "rotated": (52, 36), "rgba": (40, 40), "grey": (33, 45), "deep16": (30, 50)}
    for kind in ("alpha", "rgba", "fg", "composite"):
        assert sorted(p.stem for p in (out / kind).iterdir()) == sorted(expected_sizes)
    for name, size in expected_sizes.items():
        alpha = read_alpha(out / "alpha" / f"{name}.png")
        assert alpha.shape == size
        rgba = np.asarray(Image.open(out / "rgba" / f"{name}.png"))
        assert rgba.shape == size + (4,)
        np.testing.assert_array_equal(rgba[:, :, 3], np.round(alpha * 255).astype(np.uint8))
        # composite = F * alpha + B * (1 - alpha) with the requested colour, up to 8-bit rounding
        fg = rgba[:, :, :3] / 255.0
        bg = np.array([0x20, 0x40, 0x80]) / 255.0
        expected = fg * alpha[..., None] + bg * (1 - alpha[..., None])
        got = read_image(out / "composite" / f"{name}.png")
        assert np.abs(got - expected).max() <= 2.5 / 255


def test_predict_output_matches_python_api(weights, mixed_folder, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", "--model", str(weights["student"]), str(mixed_folder / "plain.png"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["alpha", "rgba"]
    api = ppid.Predictor(weights["student"], device="cpu").predict(mixed_folder / "plain.png")
    np.testing.assert_allclose(read_alpha(out / "alpha" / "plain.png"), api, atol=0.5 / 255 + 1e-6)


def test_globs_and_duplicate_stems(weights, mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--model", str(weights["student"]), str(mixed_folder / "[pg]*.png"), "--out", str(out)]) == 0
    assert sorted(p.stem for p in (out / "alpha").iterdir()) == ["grey", "plain"]
    (tmp_path / "other").mkdir()
    Image.fromarray(_photo(8, 8)).save(tmp_path / "other" / "plain.jpg")
    rc = main(["predict", "--model", str(weights["student"]), str(mixed_folder), str(tmp_path / "other"), "--out", str(tmp_path / "o2")])
    assert rc == 2 and "would both write plain.png" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_empty_folder_names_the_folder_and_what_was_looked_for(weights, tmp_path, capsys):
    empty = tmp_path / "EMPTY_FOLDER"
    empty.mkdir()
    rc = main(["predict", "--model", str(weights["student"]), str(empty), "--out", str(tmp_path / "o")])
    looked_for = "looked for .png, .jpg, .jpeg, .tif, .tiff, .bmp, .webp"
    assert rc == 2
    assert capsys.readouterr().err == f"ppid predict: error: {empty}: no images in this folder ({looked_for})\n"
    (empty / "notes.txt").write_text("not a photo")
    (empty / "IMG_0001.heic").write_bytes(b"")
    (empty / "2024").mkdir()
    assert main(["predict", "--model", str(weights["student"]), str(empty), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (
        f"ppid predict: error: {empty}: no images in this folder ({looked_for}; found 2 other file(s), "
        "e.g. IMG_0001.heic; 1 subfolder(s) are not searched)\n"
    )
    assert not (tmp_path / "o").exists()


def test_folder_names_the_photos_of_types_it_skips(tmp_path, capsys):
    """A phone folder: JPEGs beside HEIC photos and sidecar files. The JPEGs run; the HEIC photos
    are named as skipped, the sidecars (not images) are passed over quietly."""
    from ppid.predict import collect_inputs

    Image.fromarray(_photo(8, 8)).save(tmp_path / "IMG_0001.jpg")
    (tmp_path / "IMG_0002.HEIC").write_bytes(b"")
    (tmp_path / "IMG_0003.heic").write_bytes(b"")
    (tmp_path / "IMG_0001.aae").write_text("<plist/>")
    assert collect_inputs([str(tmp_path)]) == [tmp_path / "IMG_0001.jpg"]
    assert capsys.readouterr().err == (f"ppid predict: warning: {tmp_path}: skipping 2 image(s) of a type ppid "
                                       "does not read (e.g. IMG_0002.HEIC); convert them to PNG or JPEG\n")
    (tmp_path / "IMG_0002.HEIC").unlink(), (tmp_path / "IMG_0003.heic").unlink()
    collect_inputs([str(tmp_path)])
    assert capsys.readouterr().err == ""


def test_teacher_needs_trimap_and_is_clamped(weights, tmp_path, capsys):
    photos, trimaps = tmp_path / "photos", tmp_path / "trimaps"
    photos.mkdir(), trimaps.mkdir()
    Image.fromarray(_photo(48, 64)).save(photos / "a.png")
    Image.fromarray(_photo(40, 40, 1)).save(photos / "b.png")  # no trimap for b
    tri = np.full((48, 64), 128, np.uint8)
    tri[:, :16], tri[:, -16:] = 0, 255
    Image.fromarray(tri).save(trimaps / "a.png")

    rc = main(["predict", "--model", str(weights["teacher"]), str(photos), "--out", str(tmp_path / "o")])
    assert rc == 2 and "--trimap" in capsys.readouterr().err

    rc = main(["predict", "--model", str(weights["teacher"]), str(photos), "--out", str(tmp_path / "o"), "--trimap", str(trimaps)])
    err = capsys.readouterr().err
    assert rc == 1 and "b.png: no trimap" in err
    alpha = read_alpha(tmp_path / "o" / "alpha" / "a.png")
    assert (alpha[:, :16] == 0).all() and (alpha[:, -16:] == 1).all()

    rc = main(["predict", "--model", str(weights["student"]), str(photos), "--out", str(tmp_path / "o"), "--trimap", str(trimaps)])
    assert rc == 2 and "drop --trimap" in capsys.readouterr().err


def test_predictor_accepts_pil_numpy_and_tensors(weights):
    p = ppid.Predictor(weights["student"], device="cpu")
    photo = _photo(37, 51)
    ref = p.predict(photo)
    assert ref.shape == (37, 51) and ref.dtype == np.float32 and 0 <= ref.min() and ref.max() <= 1
    np.testing.assert_allclose(p.predict(Image.fromarray(photo)), ref, atol=1e-6)
    np.testing.assert_allclose(p.predict(photo / 255.0), ref, atol=1e-5)
    np.testing.assert_allclose(p.predict(torch.from_numpy(photo).permute(2, 0, 1) / 255.0), ref, atol=1e-5)
    # 16-bit and float grey PIL images keep their scale (PIL's convert("RGB") would saturate them)
    grey16 = np.linspace(0, 65535, 37 * 51).reshape(37, 51).astype(np.uint16)
    np.testing.assert_allclose(p.predict(Image.fromarray(grey16)), p.predict(grey16), atol=1e-6)
    grey = grey16.astype(np.float32) / 65535
    np.testing.assert_allclose(p.predict(Image.fromarray(grey)), p.predict(grey), atol=1e-6)

    rgba = p.cutout(photo)
    assert rgba.shape == (37, 51, 4) and rgba.dtype == np.float32
    np.testing.assert_allclose(rgba[:, :, 3], ref, atol=1e-6)
    comp = p.composite(photo, (0.0, 0.0, 1.0))
    expected = rgba[:, :, :3] * ref[..., None] + np.array([0, 0, 1.0]) * (1 - ref[..., None])
    np.testing.assert_allclose(comp, expected, atol=1e-5)
    # an image background is stretched to the photo
    comp_img = p.composite(photo, np.zeros((10, 10, 3), np.float32))
    np.testing.assert_allclose(comp_img, rgba[:, :, :3] * ref[..., None], atol=1e-5)

    with pytest.raises(PpidError, match=r"\[0, 1\]"):
        p.predict(photo.astype(np.float32))  # 0..255 floats
    with pytest.raises(PpidError, match="takes no trimap"):
        p.predict(photo, trimap=np.zeros((37, 51), np.uint8))
    with pytest.raises(PpidError, match="fp16 needs a CUDA"):
        ppid.Predictor(weights["student"], device="cpu", precision="fp16")


def test_max_side_and_bf16(weights):
    photo = _photo(60, 90)
    full = ppid.Predictor(weights["student"], device="cpu")
    small = ppid.Predictor(weights["student"], device="cpu", max_side=40)
    alpha = small.predict(photo)
    assert alpha.shape == (60, 90)
    assert not np.allclose(alpha, full.predict(photo), atol=1e-4)  # it really ran at a lower size
    bf16 = ppid.Predictor(weights["student"], device="cpu", precision="bf16").predict(photo)
    assert bf16.dtype == np.float32 and np.abs(bf16 - full.predict(photo)).mean() < 0.05


def test_bad_arguments_fail_before_writing(weights, mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["predict", "--model", str(weights["student"]), str(mixed_folder / "plain.png"), "--out", str(out)]
    assert main(base + ["--save", "alpha,mask"]) == 2
    assert main(base + ["--background", "#12345"]) == 2
    assert main(base + ["--background", str(tmp_path / "missing.png")]) == 2
    assert main(["predict", "--model", str(tmp_path / "nope.safetensors"), str(mixed_folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "mask" in err and "#12345" in err and "missing.png" in err and "nope.safetensors" in err
    assert not out.exists()


def test_viz_report_with_teacher_and_attention_maps(weights, tmp_path, capsys):
    from ppid.io import write_image

    data = tmp_path / "testset"
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 48), (36, 50)]):
        alpha = np.zeros((h, w), np.float32)
        alpha[8:-8, 10:-10] = 1
        alpha[6:8, 10:-10] = 0.5
        write_image(data / "merged" / f"im{i}.png", rng.random((h, w, 3)))
        write_image(data / "alpha" / f"im{i}.png", alpha)
    (data / "split.txt").write_text("im0 transparent\nim1 non-transparent\n")  # no trimaps/: the test rule

    out = tmp_path / "report"
    rc = main(["viz", "--model", str(weights["student"]), "--teacher", str(weights["teacher"]),
               "--data", str(data), "--out", str(out), "--max-items", "5", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    page = (out / "index.html").read_text()
    for name in ("im0", "im1"):
        strip = np.asarray(Image.open(out / f"{name}.png"))
        h, w = (40, 48) if name == "im0" else (36, 50)
        # two rows: six panels (image, trimap, GT, teacher, student, error); four attention maps
        assert strip.shape[0] == 2 * (h + 14) + 4
        assert strip.shape[1] == 6 * w + 5 * 4
        assert f'href="{name}.png"' in page
    assert "transparent" in page and "teacher SAD" in page

    rc = main(["viz", "--model", str(weights["student"]), "--teacher", str(weights["student"]),
               "--data", str(data), "--out", str(tmp_path / "r2")])
    assert rc == 2 and "not a teacher" in capsys.readouterr().err


@pytest.mark.parametrize("length, tile, overlap", [(50, 64, 32), (64, 64, 0), (65, 64, 32), (200, 64, 32), (1000, 256, 64), (4000, 1280, 256)])
def test_tile_windows_partition_the_axis(length, tile, overlap):
    from ppid.predict import tile_windows

    windows = tile_windows(length, tile, overlap)
    keeps = [(k0, k1) for _, _, k0, k1 in windows]
    assert keeps[0][0] == 0 and keeps[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(keeps, keeps[1:]))  # kept parts tile the axis, no gap or overlap
    for start, stop, k0, k1 in windows:
        assert start % 32 == 0 and start <= k0 < k1 <= stop <= length
        assert stop - start <= tile + 31
        # a kept pixel is overlap / 2 away from every window edge that is not the image's
        assert start == 0 or k0 - start >= overlap // 2
        assert stop == length or stop - k1 >= overlap // 2
    assert (len(windows) == 1) == (length <= tile + 31)


def test_tiles_stitch_window_alphas_and_small_photos_run_whole(weights):
    from ppid.models import load_model
    from ppid.predict import tile_windows

    model = load_model(weights["student"])
    photo = _photo(70, 130)
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        whole = model(x).alpha[0, 0].numpy()
    # the default tile is larger than the photo: the network sees it whole, bit for bit
    np.testing.assert_array_equal(ppid.Predictor(weights["student"], device="cpu").predict(photo), whole)
    np.testing.assert_array_equal(ppid.Predictor(weights["student"], device="cpu", tile=None).predict(photo), whole)

    tiled = ppid.Predictor(weights["student"], device="cpu", tile=64, overlap=32).predict(photo)
    assert tiled.shape == photo.shape[:2]
    # every window's kept part is that window's own alpha
    for y0, y1, ky0, ky1 in tile_windows(70, 64, 32):
        for x0, x1, kx0, kx1 in tile_windows(130, 64, 32):
            with torch.inference_mode():
                part = model(x[..., y0:y1, x0:x1]).alpha[0, 0].numpy()
            np.testing.assert_array_equal(tiled[ky0:ky1, kx0:kx1], part[ky0 - y0:ky1 - y0, kx0 - x0:kx1 - x0])
    # it approximates the whole-image alpha better than running the network at the tile's size
    downscaled = ppid.Predictor(weights["student"], device="cpu", tile=None, max_side=64).predict(photo)
    assert np.abs(tiled - whole).mean() < np.abs(downscaled - whole).mean()


def test_teacher_tiles_take_their_trimap_windows(weights):
    photo = _photo(72, 100)
    tri = np.full((72, 100), 128, np.uint8)
    tri[:, :20], tri[:, -20:] = 0, 255
    alpha = ppid.Predictor(weights["teacher"], device="cpu", tile=64, overlap=32).predict(photo, trimap=tri)
    assert (alpha[:, :20] == 0).all() and (alpha[:, -20:] == 1).all()
    whole = ppid.Predictor(weights["teacher"], device="cpu", tile=None).predict(photo, trimap=tri)
    assert np.abs(alpha - whole).mean() < 0.1


def test_bad_tiling_is_an_argument_error(weights, mixed_folder, tmp_path, capsys):
    base = ["predict", "--model", str(weights["student"]), str(mixed_folder / "plain.png"), "--out", str(tmp_path / "o")]
    assert main(base + ["--tile", "100"]) == 2
    assert main(base + ["--tile", "64", "--overlap", "64"]) == 2
    err = capsys.readouterr().err
    assert "tile must be a multiple of 32" in err and "overlap must be" in err
    assert not (tmp_path / "o").exists()
    assert main(base + ["--tile", "0"]) == 0  # 0: always whole

import os
import stat

import numpy as np
import pytest
from PIL import Image

from ppid import PpidError
from ppid.io import (
    ImageReadError,
    atomic_path,
    list_images,
    read_alpha,
    read_image,
    read_trimap,
    to_uint8,
    write_image,
)


def gradient(h=12, w=20):
    """uint8 HxWx3 with distinct values per pixel, so a rotation or a channel swap shows."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 12, y * 20, (x + y) * 7], axis=2).astype(np.uint8)


def test_rgb_roundtrip_is_float_in_unit_range(tmp_path):
    rgb = gradient()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.dtype == np.float32 and img.shape == (12, 20, 3)
    np.testing.assert_array_equal(to_uint8(img), rgb)


def test_exif_orientation_is_applied(tmp_path):
    rgb = gradient()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(tmp_path / "rot.png", exif=exif)
    img = read_image(tmp_path / "rot.png")
    assert img.shape == (20, 12, 3)
    np.testing.assert_array_equal(to_uint8(img), np.rot90(rgb, k=-1))
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "rot_alpha.png", exif=exif)
    assert read_alpha(tmp_path / "rot_alpha.png").shape == (20, 12)


def test_rgba_image_drops_alpha_with_warning_and_alpha_reads_the_channel(tmp_path):
    rgba = np.dstack([gradient(), np.full((12, 20), 77, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "cut.png")
    with pytest.warns(UserWarning, match="cut.png: has an alpha channel"):
        img = read_image(tmp_path / "cut.png")
    np.testing.assert_array_equal(to_uint8(img), rgba[:, :, :3])
    np.testing.assert_allclose(read_alpha(tmp_path / "cut.png"), 77 / 255, atol=1e-7)


def test_grey_matte_saved_as_opaque_rgba_reads_its_grey(tmp_path):
    grey = gradient()[:, :, 0]
    Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)])).save(tmp_path / "m.png")
    np.testing.assert_array_equal(to_uint8(read_alpha(tmp_path / "m.png")), grey)


def test_opaque_colour_cutout_keeps_its_alpha_of_one(tmp_path):
    Image.fromarray(np.dstack([gradient(), np.full((12, 20), 255, np.uint8)])).save(tmp_path / "c.png")
    assert (read_alpha(tmp_path / "c.png") == 1).all()


def test_grayscale_image_becomes_rgb(tmp_path):
    grey = gradient()[:, :, 1]
    Image.fromarray(grey).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.shape == (12, 20, 3)
    np.testing.assert_array_equal(to_uint8(img), np.repeat(grey[:, :, None], 3, axis=2))


def test_palette_with_transparency(tmp_path):
    pal = Image.new("P", (4, 2))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.putdata([0, 1, 2, 1, 0, 0, 2, 2])
    pal.save(tmp_path / "p.png", transparency=0)  # index 0 is fully transparent
    with pytest.warns(UserWarning, match="alpha channel"):
        img = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(to_uint8(img)[0, 1], [255, 0, 0])
    np.testing.assert_array_equal(read_alpha(tmp_path / "p.png"), [[0, 1, 1, 1], [0, 0, 1, 1]])


def test_palette_grey_matte_without_transparency_reads_its_value(tmp_path):
    pal = Image.new("P", (3, 1))
    pal.putpalette([v for g in range(256) for v in (g, g, g)])
    pal.putdata([0, 128, 255])
    pal.save(tmp_path / "pm.png")
    np.testing.assert_allclose(read_alpha(tmp_path / "pm.png"), [[0, 128 / 255, 1]], atol=1e-7)


def test_16bit_alpha_keeps_its_precision(tmp_path):
    values = np.array([[0, 1, 32768, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a16.png")
    alpha = read_alpha(tmp_path / "a16.png")
    assert alpha.dtype == np.float32
    np.testing.assert_allclose(alpha, values / 65535.0, rtol=0, atol=1e-7)
    assert 0 < alpha[0, 1] < 1 / 255  # a value 8 bits would lose
    assert read_image(tmp_path / "a16.png").shape == (1, 5, 3)


def test_truncated_file_is_one_line_error_naming_it(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.png: cannot read image") as err:
        read_image(tmp_path / "t.png")
    assert "\n" not in str(err.value)


def test_corrupt_and_missing_files_and_folders(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match="junk.png: cannot read image"):
        read_alpha(tmp_path / "junk.png")
    with pytest.raises(ImageReadError, match="nothere.png: file not found"):
        read_image(tmp_path / "nothere.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageReadError, match="dir.png: is a folder"):
        read_image(tmp_path / "dir.png")
    assert issubclass(ImageReadError, PpidError)


def test_trimap_snaps_values_within_tolerance(tmp_path):
    raw = np.array([[0, 10, 120, 128, 135, 250, 255]], dtype=np.uint8)
    Image.fromarray(raw).save(tmp_path / "tri.png")
    trimap = read_trimap(tmp_path / "tri.png")
    assert trimap.dtype == np.uint8
    np.testing.assert_array_equal(trimap, [[0, 0, 128, 128, 128, 255, 255]])


def test_trimap_with_soft_values_is_rejected(tmp_path):
    raw = np.array([[0, 60, 128, 200, 255]], dtype=np.uint8)
    Image.fromarray(raw).save(tmp_path / "soft.png")
    with pytest.raises(ImageReadError, match=r"soft.png: trimap has 2 pixels .*: 60, 200"):
        read_trimap(tmp_path / "soft.png")
    assert read_trimap(tmp_path / "soft.png", tolerance=80)[0, 1] in (0, 128)


def test_write_image_roundtrip_and_file_mode(tmp_path):
    write_image(tmp_path / "sub" / "grey.png", np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4))
    write_image(tmp_path / "rgb.png", gradient())
    np.testing.assert_array_equal(to_uint8(read_image(tmp_path / "rgb.png")), gradient())
    np.testing.assert_array_equal(to_uint8(read_alpha(tmp_path / "sub" / "grey.png")),
                                  to_uint8(np.linspace(0, 1, 12).reshape(3, 4)))
    umask = os.umask(0)
    os.umask(umask)
    # Not the 0600 of a temporary file: other users (a web server, a teammate) can read results.
    assert stat.S_IMODE(os.stat(tmp_path / "rgb.png").st_mode) == 0o666 & ~umask
    with pytest.raises(PpidError, match="bad.png: cannot write an array of shape"):
        write_image(tmp_path / "bad.png", np.zeros((3, 4, 2)))


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "keep.png"
    write_image(target, gradient())
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".png" and tmp.parent == tmp_path
            tmp.write_bytes(b"half a file")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]  # no temp file left
    with pytest.raises(PpidError, match="keep.jpg: cannot write"):
        write_image(tmp_path / "keep.jpg", np.zeros((4, 4, 4), np.uint8))  # JPEG has no alpha
    assert not (tmp_path / "keep.jpg").exists()


def test_np_save_through_atomic_path_lands_on_the_name(tmp_path):
    with atomic_path(tmp_path / "arr.npy") as tmp:
        np.save(tmp, np.arange(3))
    np.testing.assert_array_equal(np.load(tmp_path / "arr.npy"), np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arr.npy"]


def test_atomic_path_gives_the_usual_mode_to_files_their_writer_replaced(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    with atomic_path(tmp_path / "model.bin") as tmp:
        tmp.unlink()  # as safetensors does: a fresh file, created private
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
    assert stat.S_IMODE(os.stat(tmp_path / "model.bin").st_mode) == 0o666 & ~umask


def test_list_images_by_stem_skips_hidden_and_rejects_duplicates(tmp_path):
    for name in ("b.png", "a.jpg", "._a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert list(list_images(tmp_path)) == ["a", "b"]
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(PpidError, match="two images share the name 'a'"):
        list_images(tmp_path)
    with pytest.raises(PpidError, match="missing: folder not found"):
        list_images(tmp_path / "missing")


def test_exclusive_makes_a_second_writer_wait_and_say_so(tmp_path):
    import threading

    from ppid.io import exclusive

    lock, order, said = tmp_path / "locks" / "data.lock", [], []
    with exclusive(lock, "the data"):
        def second():
            with exclusive(lock, "the data", log=said.append):
                order.append("second")

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.3)
        assert thread.is_alive()  # still waiting while the first holds the lock
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]
    assert said == ["waiting for another process that is writing the data"]

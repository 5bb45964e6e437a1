"""fastconv.data.load_image: every format and mode, EXIF orientation, resize, bad files."""
import os

import numpy as np
import pytest
from PIL import Image, features

from fastconv.data import ImageReadError, load_image
from fastconv.data.reading import is_image_file


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(tmp_path, name, img, **kw):
    path = os.path.join(tmp_path, name)
    img.save(path, **kw)
    return path


def test_rgb_png_is_exact_float32(tmp_path):
    src = _rgb(5, 7)
    path = _save(tmp_path, "a.png", Image.fromarray(src))
    x = load_image(path, image_size=(5, 7))
    assert x.dtype == np.float32 and x.shape == (5, 7, 3) and x.flags.c_contiguous
    np.testing.assert_array_equal(x, src.astype(np.float32))


@pytest.mark.parametrize("ext,kw", [("bmp", {}), ("tif", {}), ("gif", {}),
                                    ("jpg", {"quality": 95, "subsampling": 0}), ("webp", {"lossless": True})])
def test_formats_decode_like_pillow(tmp_path, ext, kw):
    if ext == "webp" and not features.check("webp"):
        pytest.skip("this Pillow has no WebP")
    src = np.kron(_rgb(3, 4, seed=1), np.ones((4, 4, 1), np.uint8))   # 12x16 flat blocks
    path = _save(tmp_path, f"a.{ext}", Image.fromarray(src), **kw)
    x = load_image(path, image_size=(12, 16))
    if ext in ("bmp", "tif", "webp"):
        np.testing.assert_array_equal(x, src)
    elif ext == "gif":         # palette of the quantised image: exactly what GIF stored
        expect = np.asarray(Image.open(path).convert("RGB"), np.float32)
        np.testing.assert_array_equal(x, expect)
    else:                      # JPEG 4:4:4 at quality 95: what Pillow decodes, close to the source
        np.testing.assert_array_equal(x, np.asarray(Image.open(path), np.float32))
        assert np.abs(x - src).mean() < 6.0


def test_gif_gives_first_frame(tmp_path):
    red = Image.new("RGB", (6, 5), (255, 0, 0))
    blue = Image.new("RGB", (6, 5), (0, 0, 255))
    path = os.path.join(tmp_path, "anim.gif")
    red.save(path, save_all=True, append_images=[blue], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    x = load_image(path, image_size=(5, 6))
    np.testing.assert_array_equal(x[..., 0], 255)
    np.testing.assert_array_equal(x[..., 2], 0)


def test_grey_and_bilevel(tmp_path):
    g = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
    x = load_image(_save(tmp_path, "g.png", Image.fromarray(g, "L")), (4, 5))
    for c in range(3):
        np.testing.assert_array_equal(x[..., c], g)
    bits = Image.fromarray((g > 100).astype(np.uint8) * 255, "L").convert("1")
    x = load_image(_save(tmp_path, "b.png", bits), (4, 5))
    np.testing.assert_array_equal(x[..., 1], np.where(g > 100, 255, 0))


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (4, 2))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putdata([0, 1, 0, 1, 1, 1, 0, 0])
    x = load_image(_save(tmp_path, "p.png", pal), (2, 4))
    np.testing.assert_array_equal(x[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(x[0, 1], [200, 100, 50])
    # index 0 transparent: those pixels come out white, not (10, 20, 30)
    x = load_image(_save(tmp_path, "pt.png", pal, transparency=0), (2, 4))
    np.testing.assert_array_equal(x[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(x[0, 1], [200, 100, 50])
    x = load_image(_save(tmp_path, "pt.gif", pal, transparency=0), (2, 4))
    np.testing.assert_array_equal(x[1, 3], [255, 255, 255])


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, :, :3] = [40, 80, 120]
    rgba[0, :, 3] = [0, 255, 128]
    x = load_image(_save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA")), (1, 3))
    np.testing.assert_array_equal(x[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(x[0, 1], [40, 80, 120])
    blend = (np.array([40, 80, 120]) * 128 + 255 * 127) / 255
    np.testing.assert_allclose(x[0, 2], blend, atol=1.0)
    la = np.array([[[60, 0], [60, 255]]], np.uint8)
    x = load_image(_save(tmp_path, "la.png", Image.fromarray(la, "LA")), (1, 2))
    np.testing.assert_array_equal(x[0], [[255, 255, 255], [60, 60, 60]])


def test_cmyk(tmp_path):
    cmyk = Image.new("CMYK", (2, 2), (255, 0, 0, 0))            # pure cyan ink
    for name in ("c.jpg", "c.tif"):
        x = load_image(_save(tmp_path, name, cmyk), (2, 2))
        np.testing.assert_allclose(x[0, 0], [0, 255, 255], atol=3)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 257, 32896, 65535]], np.uint16)
    img = Image.fromarray(a)
    assert img.mode.startswith("I;16")
    x = load_image(_save(tmp_path, "w.png", img), (1, 4))
    np.testing.assert_array_equal(x[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])


@pytest.mark.parametrize("orientation,expect", [
    (1, lambda a: a), (3, lambda a: a[::-1, ::-1]), (2, lambda a: a[:, ::-1]),
    (6, lambda a: np.rot90(a, k=-1)), (8, lambda a: np.rot90(a, k=1))])
def test_exif_orientation_is_applied(tmp_path, orientation, expect):
    src = _rgb(2, 3, seed=4)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(tmp_path, "o.png", Image.fromarray(src), exif=exif)
    want = expect(src)
    x = load_image(path, image_size=want.shape[:2])
    np.testing.assert_array_equal(x, want)


def test_resize_is_nearest(tmp_path):
    src = _rgb(8, 6, seed=2)
    path = _save(tmp_path, "r.png", Image.fromarray(src))
    # halving with nearest takes the pixel under each output centre: 2i + 1
    np.testing.assert_array_equal(load_image(path, (4, 3)), src[1::2, 1::2])
    up = np.repeat(np.repeat(src, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(load_image(path, (16, 12)), up)
    assert load_image(path, 5).shape == (5, 5, 3)
    assert load_image(path).shape == (150, 150, 3)


def _bad_files(tmp_path):
    good = _save(tmp_path, "good.jpg", Image.fromarray(_rgb(64, 64)), quality=90)
    data = open(good, "rb").read()
    truncated = os.path.join(tmp_path, "truncated.jpg")
    open(truncated, "wb").write(data[: len(data) // 2])
    empty = os.path.join(tmp_path, "empty.png")
    open(empty, "wb").close()
    text = os.path.join(tmp_path, "notes.jpg")
    open(text, "w").write("this is not a JPEG\n")
    return {"truncated": truncated, "empty": empty, "text": text,
            "missing": os.path.join(tmp_path, "missing.png")}


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "missing"])
def test_undecodable_files_raise_image_read_error(tmp_path, kind):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(ImageReadError) as info:
        load_image(path, (8, 8))
    err = info.value
    assert isinstance(err, ValueError)
    assert err.path == path and path in str(err) and err.reason in str(err)
    word = {"truncated": "truncated", "empty": "empty", "text": "identify",
            "missing": "no such file"}[kind]
    assert word in err.reason


def test_bad_image_size():
    with pytest.raises(ValueError, match="image_size must be >= 1"):
        load_image("x.png", (0, 3))
    with pytest.raises(TypeError, match="image_size must be an int or a pair"):
        load_image("x.png", (1.5, 3))


def test_image_extensions():
    assert is_image_file("a/b/Cat.JPG") and is_image_file("x.webp") and is_image_file("y.png")
    assert not is_image_file("README.txt") and not is_image_file(".DS_Store")
    assert not is_image_file("._cat.jpg")          # macOS resource fork, not an image


def test_32_bit_integer_and_float_grey(tmp_path):
    a = np.array([[0, 257, 65535, 70000]], np.int32)      # mode I: read as 16-bit range
    img = Image.fromarray(a)
    assert img.mode == "I"
    x = load_image(_save(tmp_path, "i.tif", img), (1, 4))
    np.testing.assert_array_equal(x[0, :, 1], [0, 1, 255, 255])
    f = np.array([[0.0, 0.5, 1.0]], np.float32)             # mode F in 0..1: times 255
    img = Image.fromarray(f)
    assert img.mode == "F"
    x = load_image(_save(tmp_path, "f.tif", img), (1, 3))
    np.testing.assert_array_equal(x[0, :, 0], [0, 128, 255])
    f = np.array([[0.0, 100.0, 300.0]], np.float32)         # F beyond 1: 0..255, clipped
    x = load_image(_save(tmp_path, "g.tif", Image.fromarray(f)), (1, 3))
    np.testing.assert_array_equal(x[0, :, 2], [0, 100, 255])


def test_colour_key_transparency_is_white(tmp_path):
    src = np.zeros((1, 3, 3), np.uint8)
    src[0] = [[10, 20, 30], [200, 100, 50], [10, 20, 30]]
    path = _save(tmp_path, "k.png", Image.fromarray(src), transparency=(10, 20, 30))
    x = load_image(path, (1, 3))
    np.testing.assert_array_equal(x[0], [[255, 255, 255], [200, 100, 50], [255, 255, 255]])
    g = np.array([[7, 90]], np.uint8)
    x = load_image(_save(tmp_path, "kl.png", Image.fromarray(g, "L"), transparency=7), (1, 2))
    np.testing.assert_array_equal(x[0], [[255, 255, 255], [90, 90, 90]])

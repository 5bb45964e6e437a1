"""color_mode="grayscale" (Keras's name) in load_image and image_dataset_from_directory:
one channel, 8-bit grey exact, colour through Pillow's "L" luma, alpha on white first,
16-bit grey scaled; batches of (N, H, W, 1), augmented and rescaled like RGB ones."""
import os

import numpy as np
import pytest
from PIL import Image

from fastconv.data import Augmentation, image_dataset_from_directory, load_image
from fastconv.data.reading import decode_image


def _save(tmp_path, name, img):
    path = os.path.join(tmp_path, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path)
    return path


def test_grey_png_is_exact_and_rgb_still_the_default(tmp_path):
    src = np.random.default_rng(0).integers(0, 256, (5, 7), dtype=np.uint8)
    path = _save(tmp_path, "g.png", Image.fromarray(src, "L"))
    x = load_image(path, image_size=(5, 7), color_mode="grayscale")
    assert x.dtype == np.float32 and x.shape == (5, 7, 1) and x.flags.c_contiguous
    np.testing.assert_array_equal(x[..., 0], src)
    rgb = load_image(path, image_size=(5, 7))
    assert rgb.shape == (5, 7, 3)
    np.testing.assert_array_equal(rgb, np.repeat(x, 3, axis=2))


def test_colour_goes_through_pillows_luma(tmp_path):
    """L = R * 299/1000 + G * 587/1000 + B * 114/1000 (Pillow's rounding): pure red,
    green, blue and white pixels, and Pillow's own convert('L') of a random image."""
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0] = (255, 0, 0)
    img[0, 1] = (0, 255, 0)
    img[1, 0] = (0, 0, 255)
    img[1, 1] = (255, 255, 255)
    path = _save(tmp_path, "c.png", Image.fromarray(img))
    x = decode_image(path, (2, 2), "grayscale")[..., 0]
    np.testing.assert_array_equal(x, [[76, 150], [29, 255]])
    rnd = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    path = _save(tmp_path, "r.png", Image.fromarray(rnd))
    want = np.asarray(Image.fromarray(rnd).convert("L"))
    np.testing.assert_array_equal(decode_image(path, (6, 5), "grayscale")[..., 0], want)


def test_alpha_is_white_and_sixteen_bit_is_scaled(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)              # fully transparent black
    path = _save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA"))
    np.testing.assert_array_equal(decode_image(path, (2, 2), "grayscale"), 255)
    wide = np.array([[0, 65535], [257 * 100, 257 * 7]], np.uint16)
    path = _save(tmp_path, "w.png", Image.fromarray(wide))
    np.testing.assert_array_equal(decode_image(path, (2, 2), "grayscale")[..., 0],
                                  [[0, 255], [100, 7]])


def test_bad_color_mode_is_named():
    with pytest.raises(ValueError, match=r"load_image: color_mode must be one of \('rgb', "
                                         r"'grayscale'\), received color_mode='rgba'"):
        load_image("whatever.png", color_mode="rgba")
    with pytest.raises(ValueError, match=r"image_dataset_from_directory: color_mode must be "
                                         r"one of"):
        image_dataset_from_directory("nowhere", color_mode="grey")


def test_dataset_batches_have_one_channel_and_are_augmented_and_rescaled(tmp_path):
    rng = np.random.default_rng(2)
    for c in ("a", "b"):
        for i in range(3):
            img = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            _save(tmp_path, f"{c}/{i}.png", Image.fromarray(img))
    ds = image_dataset_from_directory(tmp_path, image_size=6, batch_size=4, shuffle=False,
                                      seed=1, color_mode="grayscale", rescale=1 / 255)
    assert "color_mode='grayscale'" in repr(ds)
    xs = [x for x, _ in ds]
    assert [x.shape for x in xs] == [(4, 6, 6, 1), (2, 6, 6, 1)]
    x = np.concatenate(xs)
    want = np.stack([load_image(p, (6, 6), "grayscale") for p in ds.file_paths])
    np.testing.assert_allclose(x, want * np.float32(1 / 255), rtol=1e-6)
    aug = Augmentation(horizontal_flip=True, rotation_range=20)
    ds = image_dataset_from_directory(tmp_path, image_size=6, batch_size=6, shuffle=False,
                                      seed=1, color_mode="grayscale", augmentation=aug)
    (xa, _), = list(ds)
    assert xa.shape == (6, 6, 6, 1) and not np.array_equal(xa, want)

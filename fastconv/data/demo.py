"""The built-in demo data set: discs vs squares, generated in code.

Each image is a flat background of a random colour with Gaussian pixel noise
(std 0.1 of the range) and one shape of another random colour: a disc or an
axis-aligned square of random size and place. The square's side is sqrt(pi)
times the disc's radius, so both classes cover the same area on average, and
the shape is lighter or darker than the background at random: no pixel or sum
of pixels predicts the class, and a linear model on raw pixels stays near
chance (tests/test_data_demo.py), while a convnet sees round edges against
corners. Every image is drawn from its own seeded stream, so a file's content
depends only on (seed, split, class, index), never on how many were asked for.
"""
from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image

#: Class names, in label order (sorted, as image_dataset_from_directory reads them).
DEMO_CLASSES = ("discs", "squares")

NOISE = 0.1                     # pixel noise std, fraction of the 0..255 range
MIN_CONTRAST = 90.0             # minimum RGB distance shape <-> background (0..441)
RADIUS = (0.10, 0.24)           # disc radius, fraction of the image size
_SPLITS = {"train": 0, "validation": 1}


def _colours(rng):
    while True:
        bg, fg = rng.uniform(0, 255, (2, 3))
        if np.linalg.norm(fg - bg) >= MIN_CONTRAST:
            return bg, fg


def demo_image(label, image_size, rng):
    """One (image_size, image_size, 3) uint8 image of class DEMO_CLASSES[label]."""
    n = image_size
    bg, fg = _colours(rng)
    r = rng.uniform(*RADIUS) * n
    half = r * math.sqrt(math.pi) / 2          # square of the disc's area
    extent = r if label == 0 else half
    cy, cx = rng.uniform(extent, n - 1 - extent, 2)
    yy, xx = np.mgrid[:n, :n]
    if label == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    else:
        mask = (np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= half)
    img = np.where(mask[..., None], fg, bg)
    img = img + rng.normal(0.0, NOISE * 255.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def demo_images(per_class, image_size=150, seed=0, split="train"):
    """(x uint8 (2 * per_class, S, S, 3), y int32) of one split, classes interleaved
    (0, 1, 0, 1...). split: "train" or "validation" (independent streams)."""
    if split not in _SPLITS:
        raise ValueError(f"demo_images: split must be 'train' or 'validation', "
                         f"received split={split!r}")
    x = np.empty((2 * per_class, image_size, image_size, 3), np.uint8)
    y = np.empty(2 * per_class, np.int32)
    for i in range(per_class):
        for label in range(2):
            rng = np.random.default_rng([seed, _SPLITS[split], label, i])
            x[2 * i + label] = demo_image(label, image_size, rng)
            y[2 * i + label] = label
    return x, y


def _check_count(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"write_demo_data: {name} must be an int >= {low}, "
                         f"received {name}={value!r}")
    return int(value)


def write_demo_data(root, train_per_class=400, validation_per_class=100, image_size=150,
                    seed=0):
    """Write the demo set as PNG files and return root.

    Layout: root/train/<class>/<class>_NNNN.png and root/validation/<class>/...,
    classes DEMO_CLASSES. The defaults (800 training and 200 validation images of
    150x150) suit the seed convnet. Files of the same (seed, split, class, index) are
    identical across calls; existing files of those names are overwritten, nothing
    else in root is touched.
    """
    train_per_class = _check_count("train_per_class", train_per_class, 1)
    validation_per_class = _check_count("validation_per_class", validation_per_class, 0)
    image_size = _check_count("image_size", image_size, 8)
    seed = _check_count("seed", seed, 0)
    root = os.fspath(root)
    for split, count in (("train", train_per_class), ("validation", validation_per_class)):
        for label, name in enumerate(DEMO_CLASSES):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([seed, _SPLITS[split], label, i])
                Image.fromarray(demo_image(label, image_size, rng), "RGB").save(
                    os.path.join(folder, f"{name}_{i:04d}.png"))
    return root

"""The built-in demo data set: horizontal vs vertical stripes, generated in code.

Each image is a flat background of a random colour with Gaussian pixel noise
(std 0.1 of the range) and one disc of random size and place filled with
stripes of two other random colours, random period and random phase: bands
along the rows (class "horizontal") or along the columns (class "vertical").
A convnet's first 3x3 filters see the orientation anywhere in the image; a
linear model on raw pixels cannot, because the random phase, colours and place
give each pixel the same distribution in both classes (tests/test_data_demo.py
checks it stays at chance). Every image is drawn from its own seeded stream,
so a file's content depends only on (seed, split, class, index), never on how
many were asked for.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

#: Class names, in label order (sorted, as image_dataset_from_directory reads them).
DEMO_CLASSES = ("horizontal", "vertical")

NOISE = 0.1                     # pixel noise std, fraction of the 0..255 range
STRIPE_CONTRAST = 120.0         # minimum RGB distance between the two stripe colours
BACKGROUND_CONTRAST = 40.0      # minimum RGB distance background <-> mean stripe colour
RADIUS = (0.25, 0.40)           # disc radius, fraction of the image size
PERIOD = (0.06, 0.12)           # stripe period, fraction of the image size (9-18 px at 150)
_SPLITS = {"train": 0, "validation": 1}


def _colours(rng):
    while True:
        bg, c1, c2 = rng.uniform(0, 255, (3, 3))
        if (np.linalg.norm(c1 - c2) >= STRIPE_CONTRAST
                and np.linalg.norm(bg - (c1 + c2) / 2) >= BACKGROUND_CONTRAST):
            return bg, c1, c2


def demo_image(label, image_size, rng):
    """One (image_size, image_size, 3) uint8 image of class DEMO_CLASSES[label]."""
    n = image_size
    bg, c1, c2 = _colours(rng)
    r = rng.uniform(*RADIUS) * n
    cy, cx = rng.uniform(r, n - 1 - r, 2)
    period = rng.uniform(*PERIOD) * n
    phase = rng.uniform(0, period)
    yy, xx = np.mgrid[:n, :n]
    across = yy if label == 0 else xx          # horizontal bands change down the rows
    band = ((across + phase) % period) < period / 2
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img = np.where(disc[..., None], np.where(band[..., None], c1, c2), bg)
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

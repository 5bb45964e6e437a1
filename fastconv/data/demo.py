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

DEMO holds the demo set's sizes and the train settings tuned on it (what `fastconv
train` without DATA uses); demo_root() generates that set once into the user's cache
folder and demo_flags() spells those settings as train flags.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile

import numpy as np
from PIL import Image

from .._args import is_int

#: Class names, in label order (sorted, as image_dataset_from_directory reads them).
DEMO_CLASSES = ("horizontal", "vertical")

NOISE = 0.1                     # pixel noise std, fraction of the 0..255 range
STRIPE_CONTRAST = 120.0         # minimum RGB distance between the two stripe colours
BACKGROUND_CONTRAST = 40.0      # minimum RGB distance background <-> mean stripe colour
RADIUS = (0.25, 0.40)           # disc radius, fraction of the image size
PERIOD = (0.06, 0.12)           # stripe period, fraction of the image size (9-18 px at 150)
_SPLITS = {"train": 0, "validation": 1}

# `fastconv train` with no DATA: the built-in demo set at the seed model's own input
# size (150x150x3, 438,369 parameters) with the seed's augmentation, sized so that it
# passes 95% validation accuracy in a few minutes on 2 cores with the cpu engine.
# Measured on the stripes demo (docs/cli.md): Adam 5e-4 passes 95% at epoch 2 or 3 and
# holds 1.0 from epoch 3 for model seeds 0, 1 and 2; the seed recipe's RMSprop 1e-4,
# batch 16 learns too but slower and less steadily (0.93 at epoch 3, 0.99 at epoch 6).
DEMO = {"train_per_class": 500, "validation_per_class": 100, "image_size": 150,
        "epochs": 6, "batch_size": 32, "lr": 5e-4, "optimizer": "adam", "augment": True,
        "validation_split": 0.2, "seed": 0}


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
    if not is_int(value) or value < low:
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


# ------------------------------------------------------------------ the cached demo set

def demo_flags():
    """The `fastconv train` flags that reproduce the demo defaults on a demo-data folder."""
    flags = [f"--{k.replace('_', '-')} {DEMO[k]:g}" for k in ("image_size", "epochs",
                                                              "batch_size", "lr")]
    flags.append(f"--optimizer {DEMO['optimizer']}")
    flags.append("--augment" if DEMO["augment"] else "--no-augment")
    return " ".join(flags)


def demo_root():
    """The demo data set of `fastconv train` without DATA (DEMO's sizes and seed),
    generated once into the user's cache folder (a temporary folder when that is not
    writable) and reused by later runs."""
    spec = {k: DEMO[k] for k in ("train_per_class", "validation_per_class", "image_size",
                                  "seed")}
    try:        # a changed generator must not reuse images cached by an older one
        import inspect
        spec["generator"] = hashlib.sha256(inspect.getsource(
            sys.modules[__name__]).encode()).hexdigest()[:12]
    except (OSError, TypeError):
        from .._version import __version__
        spec["generator"] = __version__
    key = json.dumps(spec, sort_keys=True)
    tag = hashlib.sha256(key.encode()).hexdigest()[:10]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = os.path.join(base, "fastconv", f"demo-{tag}")
    if os.path.isfile(os.path.join(root, "COMPLETE")):
        return root
    try:
        os.makedirs(os.path.dirname(root), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".demo-", dir=os.path.dirname(root))
    except OSError:
        tmp = tempfile.mkdtemp(prefix="fastconv-demo-")
        root = tmp
    print(f"generating the demo data set ({len(DEMO_CLASSES)} classes: "
          f"{', '.join(DEMO_CLASSES)}) in {root} ...", flush=True)
    write_demo_data(tmp, train_per_class=DEMO["train_per_class"],
                    validation_per_class=DEMO["validation_per_class"],
                    image_size=DEMO["image_size"], seed=DEMO["seed"])
    with open(os.path.join(tmp, "COMPLETE"), "w") as fh:
        fh.write(key + "\n")
    if tmp != root:
        try:
            os.rename(tmp, root)            # atomic: a half-written set is never reused
        except OSError:                     # another run finished first: use its copy
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return root

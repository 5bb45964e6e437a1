"""The demo data set: layout, determinism, and that a linear model cannot solve it."""
import os

import numpy as np
import pytest
from PIL import Image

from fastconv.data import DEMO_CLASSES, demo_images, image_dataset_from_directory, \
    write_demo_data


def test_write_demo_data_layout_and_determinism(tmp_path):
    root = write_demo_data(tmp_path / "demo", train_per_class=3, validation_per_class=2,
                           image_size=24, seed=1)
    assert root == str(tmp_path / "demo")
    for split, n in (("train", 3), ("validation", 2)):
        assert sorted(os.listdir(os.path.join(root, split))) == list(DEMO_CLASSES)
        for name in DEMO_CLASSES:
            files = sorted(os.listdir(os.path.join(root, split, name)))
            assert len(files) == n and all(f.endswith(".png") for f in files)
    img = Image.open(os.path.join(root, "train", DEMO_CLASSES[0], f"{DEMO_CLASSES[0]}_0000.png"))
    assert img.mode == "RGB" and img.size == (24, 24)
    again = write_demo_data(tmp_path / "again", train_per_class=4, validation_per_class=0,
                            image_size=24, seed=1)
    for name in DEMO_CLASSES:            # the same file whatever the count asked for
        for i in range(3):
            rel = os.path.join("train", name, f"{name}_{i:04d}.png")
            assert (tmp_path / "demo" / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes()
    other = write_demo_data(tmp_path / "other", 1, 0, 24, seed=2)
    rel = os.path.join("train", DEMO_CLASSES[1], f"{DEMO_CLASSES[1]}_0000.png")
    assert (tmp_path / "demo" / rel).read_bytes() != open(os.path.join(other, rel), "rb").read()
    ds = image_dataset_from_directory(os.path.join(root, "train"), image_size=24, seed=0)
    assert ds.class_names == list(DEMO_CLASSES) and ds.num_images == 6
    x, y = demo_images(3, 24, seed=1, split="train")
    for i, p in enumerate(ds.file_paths):
        k = int(os.path.basename(p)[-8:-4])
        np.testing.assert_array_equal(np.asarray(Image.open(p)), x[2 * k + ds.labels[i]])
    with pytest.raises(ValueError, match="train_per_class must be an int >= 1"):
        write_demo_data(tmp_path / "bad", train_per_class=0)
    with pytest.raises(ValueError, match="split must be"):
        demo_images(1, split="test")


def test_demo_images_vary_and_show_their_class():
    x, y = demo_images(40, 48, seed=0)
    assert x.dtype == np.uint8 and x.shape == (80, 48, 48, 3)
    assert y.tolist() == [0, 1] * 40
    corners = x[:, 0, 0].astype(float)                  # background colour (plus noise)
    assert corners.std(axis=0).min() > 40
    # the class is not in the mean brightness or colour of the image...
    means = x.reshape(80, -1).mean(1)
    assert abs(means[y == 0].mean() - means[y == 1].mean()) < 10
    # ...but in the orientation: horizontal bands vary down the columns, vertical
    # ones along the rows (mean absolute difference of neighbouring pixels)
    f = x.astype(float).sum(-1)
    down = np.abs(np.diff(f, axis=1)).mean((1, 2))
    across = np.abs(np.diff(f, axis=2)).mean((1, 2))
    assert np.mean((down > across) == (y == 0)) >= 0.9


def _logistic_regression(x, y, xv, steps=300, lr=2.0, l2=1e-4):
    """L2-regularised logistic regression on standardised raw pixels, full-batch
    gradient descent. Returns (training accuracy, validation predictions).

    Rows are scaled to norm ~1, so the loss's curvature is <= 1/4 and lr=2 is stable.
    Gradient descent from w = 0 keeps w = X^T a (every gradient is a combination of
    training rows), so it runs on the n x n Gram matrix: the same iterates as on the
    pixels, but one matrix product instead of two per step (BLAS matrix-vector
    products crawl on a loaded 2-core machine)."""
    x = x.reshape(len(x), -1).astype(np.float64)
    xv = xv.reshape(len(xv), -1).astype(np.float64)
    mu, sd = x.mean(0), (x.std(0) + 1e-6) * np.sqrt(x.shape[1])
    x, xv = (x - mu) / sd, (xv - mu) / sd
    gram, gram_v = x @ x.T, xv @ x.T
    a, b = np.zeros(len(x)), 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(gram @ a + b)))
        g = p - y
        a -= lr * (g / len(y) + l2 * a)          # w -= lr * (X^T g / n + l2 * w)
        b -= lr * g.mean()
    return (((gram @ a + b) > 0) == y).mean(), (gram_v @ a + b) > 0


def test_a_linear_model_stays_near_chance():
    x, y = demo_images(200, 32, seed=0, split="train")
    xv, yv = demo_images(100, 32, seed=0, split="validation")
    train_acc, pred = _logistic_regression(x, y, xv)
    val_acc = (pred == yv).mean()
    assert train_acc > 0.7             # it fits the training set (partly memorised)...
    assert val_acc < 0.65, val_acc     # ...and learns nothing that generalises
    # Control: the same regression learns a cue that is linear in the pixels (class 1
    # has a lighter band in rows 0-3 than its own rows 4-7), so the result above is
    # the data set, not a broken regression.
    def mark(a, lab):
        a = a.astype(np.int16)
        a[lab == 1, :4] = np.clip(a[lab == 1, 4:8] + 60, 0, 255)
        return a.astype(np.uint8)
    _, pred = _logistic_regression(mark(x, y), y, mark(xv, yv))
    assert (pred == yv).mean() > 0.9

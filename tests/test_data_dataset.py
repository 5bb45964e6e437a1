"""image_dataset_from_directory: layout, labels, batches, shuffling, splits, bad files."""
import math
import os
import warnings

import numpy as np
import pytest
from PIL import Image

import fastconv
from fastconv.data import Augmentation, ImageDataset, image_dataset_from_directory, load_image

S = 8          # image side in these tests


def _png(path, value):
    """A flat S x S image whose red channel is `value`: identifies the file in a batch."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = np.zeros((S, S, 3), np.uint8)
    img[..., 0] = value
    img[..., 1] = np.arange(S)[None, :] * 30          # structure, so warps change pixels
    Image.fromarray(img).save(path)
    return path


def _tree(root, counts):
    """root/<class>/img_NN.png with red = a unique id; returns {id: class index}."""
    ids, k = {}, 1
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            _png(os.path.join(root, name, f"img_{i:02d}.png"), k)
            ids[k] = c
            k += 1
    return ids


def _ids(x):
    return [int(v) for v in x[:, 0, 0, 0]]


def _epoch(ds):
    xs, ys = zip(*list(ds))
    return np.concatenate(xs), np.concatenate(ys)


def test_layout_labels_and_ignored_files(tmp_path):
    root = str(tmp_path)
    _png(f"{root}/dogs/d1.png", 1)
    _png(f"{root}/cats/b.png", 2)
    _png(f"{root}/cats/a.png", 3)
    _png(f"{root}/cats/nested/deeper/c.png", 4)
    Image.new("RGB", (S, S)).save(f"{root}/cats/e.JPG")
    open(f"{root}/cats/README.txt", "w").write("not an image")
    open(f"{root}/cats/.DS_Store", "wb").write(b"\0\0\0\1Bud1")
    open(f"{root}/dogs/._d1.png", "wb").write(b"\0\5\26\7")
    os.makedirs(f"{root}/.hidden_class")
    ds = image_dataset_from_directory(root, image_size=(S, S), batch_size=2, shuffle=False)
    assert isinstance(ds, ImageDataset)
    assert ds.class_names == ["cats", "dogs"]
    rel = [os.path.relpath(p, root) for p in ds.file_paths]
    assert rel == ["cats/a.png", "cats/b.png", "cats/e.JPG", "cats/nested/deeper/c.png",
                   "dogs/d1.png"]
    assert ds.labels.tolist() == [0, 0, 0, 0, 1] and ds.num_images == 5
    assert ds.image_size == (S, S) and ds.batch_size == 2 and len(ds) == 3
    batches = list(ds)
    assert [b[0].shape for b in batches] == [(2, S, S, 3), (2, S, S, 3), (1, S, S, 3)]
    x, y = _epoch(ds)
    assert x.dtype == np.float32 and y.dtype == np.float32 and y.shape == (5,)
    assert y.tolist() == [0, 0, 0, 0, 1]
    for i, p in enumerate(ds.file_paths):
        np.testing.assert_array_equal(x[i], load_image(p, (S, S)))
    assert ds.skipped == []


def test_label_modes_and_class_names_order(tmp_path):
    _tree(tmp_path, {"a": 2, "b": 3, "c": 1})
    ds = image_dataset_from_directory(tmp_path, image_size=S, label_mode="int", shuffle=False)
    x, y = _epoch(ds)
    assert y.dtype == np.int32 and y.tolist() == [0, 0, 1, 1, 1, 2]
    ds = image_dataset_from_directory(tmp_path, image_size=S, label_mode="categorical",
                                      shuffle=False, class_names=["c", "a", "b"])
    assert ds.class_names == ["c", "a", "b"]
    x, y = _epoch(ds)
    assert y.dtype == np.float32 and y.shape == (6, 3)
    np.testing.assert_array_equal(y.argmax(1), [0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(y.sum(1), 1)
    assert [os.path.basename(os.path.dirname(p)) for p in ds.file_paths] == \
        ["c", "a", "a", "b", "b", "b"]
    with pytest.raises(ValueError, match="must name exactly the sub-folders"):
        image_dataset_from_directory(tmp_path, class_names=["a", "b"], label_mode="int")


def test_clear_errors(tmp_path):
    missing = os.path.join(tmp_path, "nope")
    with pytest.raises(ValueError, match="no such directory.*nope"):
        image_dataset_from_directory(missing)
    f = _png(os.path.join(tmp_path, "file", "x.png"), 1)
    with pytest.raises(ValueError, match="not a directory"):
        image_dataset_from_directory(f)
    os.makedirs(os.path.join(tmp_path, "none"))
    with pytest.raises(ValueError, match="no class sub-folders"):
        image_dataset_from_directory(os.path.join(tmp_path, "none"))
    root = os.path.join(tmp_path, "one")
    _tree(root, {"cats": 2})
    with pytest.raises(ValueError, match="exactly 2 class folders.*found 1"):
        image_dataset_from_directory(root)
    os.makedirs(os.path.join(root, "dogs"))
    open(os.path.join(root, "dogs", "notes.txt"), "w").write("x")
    with pytest.raises(ValueError, match=r"class folder .*dogs' holds no image files"):
        image_dataset_from_directory(root)
    root3 = os.path.join(tmp_path, "three")
    _tree(root3, {"a": 1, "b": 1, "c": 1})
    with pytest.raises(ValueError, match="exactly 2 class folders.*found 3"):
        image_dataset_from_directory(root3)
    for kw, msg in [({"label_mode": "sparse"}, "label_mode must be one of"),
                    ({"batch_size": 0}, "batch_size must be an int >= 1"),
                    ({"subset": "training"}, "needs validation_split"),
                    ({"validation_split": 0.5}, "needs subset"),
                    ({"validation_split": 1.0, "subset": "both"}, r"float in \(0, 1\)"),
                    ({"validation_split": 0.5, "subset": "training"}, "needs a seed"),
                    ({"validation_split": 0.5, "subset": "test", "seed": 1}, "subset must be"),
                    ({"rescale": "1/255"}, "rescale must be"),
                    ({"workers": -1}, "workers must be"),
                    ({"prefetch": -1}, "prefetch must be"),
                    ({"seed": -3}, "seed must be")]:
        with pytest.raises(ValueError, match=msg):
            image_dataset_from_directory(root3, label_mode=kw.pop("label_mode", "int"), **kw)
    with pytest.raises(TypeError, match="augmentation must be"):
        image_dataset_from_directory(root3, label_mode="int", augmentation={"shear": 1})


def test_every_epoch_covers_each_image_once_and_reshuffles(tmp_path):
    ids = _tree(tmp_path, {"cats": 7, "dogs": 6})
    ds = image_dataset_from_directory(tmp_path, image_size=S, batch_size=4, seed=5)
    orders = []
    for _ in range(3):
        x, y = _epoch(ds)
        got = _ids(x)
        assert sorted(got) == sorted(ids)
        assert [ids[i] for i in got] == y.astype(int).tolist()
        orders.append(got)
    assert orders[0] != orders[1] != orders[2]
    assert ds.epoch == 3
    ds.epoch = 1                         # resume: epoch 1 again
    assert _ids(_epoch(ds)[0]) == orders[1]
    again = image_dataset_from_directory(tmp_path, image_size=S, batch_size=4, seed=5)
    assert _ids(_epoch(again)[0]) == orders[0]
    other = image_dataset_from_directory(tmp_path, image_size=S, batch_size=4, seed=6)
    assert _ids(_epoch(other)[0]) != orders[0]


def test_seed_none_follows_fastconv_set_seed(tmp_path):
    _tree(tmp_path, {"cats": 6, "dogs": 6})
    fastconv.set_seed(3)
    a = _ids(_epoch(image_dataset_from_directory(tmp_path, image_size=S))[0])
    fastconv.set_seed(3)
    b = _ids(_epoch(image_dataset_from_directory(tmp_path, image_size=S))[0])
    assert a == b


SEED_AUG = dict(horizontal_flip=True, shear_range=10.0, zoom_range=0.2)


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_augmentation_reproducible_whatever_the_threads(tmp_path, workers):
    _tree(tmp_path, {"cats": 5, "dogs": 5})

    def run(seed, w):
        ds = image_dataset_from_directory(tmp_path, image_size=S, batch_size=3, seed=seed,
                                          rescale=1 / 255, workers=w,
                                          augmentation=Augmentation(**SEED_AUG))
        return [_epoch(ds) for _ in range(2)]

    a, b = run(1, workers), run(1, 0)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], a[1][0])            # each epoch augments anew
    c = run(2, workers)
    assert not np.array_equal(a[0][0], c[0][0])
    assert a[0][0].min() >= 0 and a[0][0].max() <= 1.0 + 1e-6


def test_augmented_batch_is_the_augmentation_of_each_image(tmp_path):
    """The dataset draws image k of epoch e from its own documented stream."""
    _tree(tmp_path, {"cats": 3, "dogs": 3})
    aug = Augmentation(**SEED_AUG)
    ds = image_dataset_from_directory(tmp_path, image_size=S, batch_size=4, seed=9,
                                      shuffle=False, augmentation=aug)
    x, _ = _epoch(ds)
    plain = image_dataset_from_directory(tmp_path, image_size=S, batch_size=4, seed=9,
                                         shuffle=False)
    x0, _ = _epoch(plain)
    for k in range(6):
        rng = np.random.default_rng([9, 2, 0, k])
        want = aug.apply(x0[k].astype(np.uint8), rng)
        np.testing.assert_array_equal(x[k], want)
    assert not np.array_equal(x, x0)


def test_validation_split_is_disjoint_balanced_and_unaugmented(tmp_path):
    ids = _tree(tmp_path, {"cats": 10, "dogs": 10})
    kw = dict(image_size=S, validation_split=0.3, seed=4, batch_size=5,
              augmentation=Augmentation(horizontal_flip=True))
    train = image_dataset_from_directory(tmp_path, subset="training", **kw)
    val = image_dataset_from_directory(tmp_path, subset="validation", **kw)
    assert train.augmentation is not None and val.augmentation is None
    assert set(train.file_paths).isdisjoint(val.file_paths)
    assert len(train.file_paths) + len(val.file_paths) == len(ids)
    assert np.bincount(val.labels).tolist() == [3, 3]
    assert np.bincount(train.labels).tolist() == [7, 7]
    both = image_dataset_from_directory(tmp_path, subset="both", **kw)
    assert both[0].file_paths == train.file_paths and both[1].file_paths == val.file_paths
    # no augmentation on validation: every batch is the images as decoded
    for x, _ in val:
        for img in x:
            src = [p for p in val.file_paths if int(load_image(p, S)[0, 0, 0]) == int(img[0, 0, 0])]
            np.testing.assert_array_equal(img, load_image(src[0], S))
    other = image_dataset_from_directory(tmp_path, subset="validation",
                                         **dict(kw, seed=5))
    assert other.file_paths != val.file_paths
    with pytest.raises(ValueError, match="leaves no validation images"):
        image_dataset_from_directory(tmp_path, subset="both", validation_split=0.01, seed=1)


def test_unreadable_files_are_skipped_with_one_warning(tmp_path):
    _tree(tmp_path, {"cats": 4, "dogs": 4})
    bad = {
        "cats/zero.png": b"",
        "cats/text.jpg": b"hello, I am text\n",
        "dogs/cut.jpg": None,
    }
    Image.fromarray(np.full((64, 64, 3), 99, np.uint8)).save(tmp_path / "full.jpg")
    jpeg = (tmp_path / "full.jpg").read_bytes()
    os.remove(tmp_path / "full.jpg")
    for rel, data in bad.items():
        (tmp_path / rel).write_bytes(jpeg[: len(jpeg) // 2] if data is None else data)
    ds = image_dataset_from_directory(tmp_path, image_size=S, batch_size=4, seed=0, workers=2)
    assert ds.num_images == 11 and len(ds) == 3
    with pytest.warns(UserWarning) as record:
        x, y = _epoch(ds)
    assert x.shape[0] == 8 and len(set(_ids(x))) == 8
    msgs = [str(r.message) for r in record if "unreadable" in str(r.message)]
    assert len(msgs) == 3
    for rel in bad:
        assert sum(str(tmp_path / rel) in m for m in msgs) == 1
    assert sorted(os.path.relpath(p, tmp_path) for p, _ in ds.skipped) == sorted(bad)
    assert all(reason for _, reason in ds.skipped)
    assert len(ds) == 2                      # the 8 good images
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # not warned again
        x2, _ = _epoch(ds)
    assert x2.shape[0] == 8 and all(b[0].shape[0] == 4 for b in ds)
    # the readable files keep their relative order in an epoch whether or not the
    # bad ones are known (a resumed run sees the same order)
    fresh = image_dataset_from_directory(tmp_path, image_size=S, batch_size=4, seed=0)
    fresh.epoch = ds.epoch
    with pytest.warns(UserWarning):
        xf, _ = _epoch(fresh)
    np.testing.assert_array_equal(_ids(xf), _ids(_epoch(ds)[0]))


def test_cache_keeps_decoded_images(tmp_path):
    _tree(tmp_path, {"cats": 3, "dogs": 3})
    cached = image_dataset_from_directory(tmp_path, image_size=S, seed=0, cache=True)
    plain = image_dataset_from_directory(tmp_path, image_size=S, seed=0)
    x1, _ = _epoch(cached)
    _epoch(plain)
    for p in cached.file_paths:
        os.remove(p)
    x2, _ = _epoch(cached)                   # served from memory
    assert sorted(_ids(x2)) == sorted(_ids(x1)) and cached.skipped == []
    with pytest.warns(UserWarning, match="unreadable"):
        assert list(plain) == []             # everything gone, nothing yielded, no crash
    assert len(plain.skipped) == 6


def test_breaking_out_of_an_epoch_is_clean(tmp_path):
    _tree(tmp_path, {"cats": 10, "dogs": 10})
    ds = image_dataset_from_directory(tmp_path, image_size=S, batch_size=2, seed=0,
                                      workers=2, prefetch=3)
    for i, _ in enumerate(ds):
        if i == 1:
            break
    x, _ = _epoch(ds)
    assert x.shape[0] == 20


def test_feeds_model_fit(tmp_path):
    from fastconv import Sequential, layers as L
    _tree(os.path.join(tmp_path, "train"), {"cats": 6, "dogs": 6})
    _tree(os.path.join(tmp_path, "val"), {"cats": 2, "dogs": 2})
    train = image_dataset_from_directory(os.path.join(tmp_path, "train"), image_size=S,
                                         batch_size=4, seed=0, rescale=1 / 255,
                                         augmentation=Augmentation(horizontal_flip=True))
    val = image_dataset_from_directory(os.path.join(tmp_path, "val"), image_size=S,
                                       batch_size=4, seed=0, rescale=1 / 255)
    model = Sequential([L.Conv2D(2, 3, activation="relu", input_shape=(S, S, 3)),
                        L.Flatten(), L.Dense(1, activation="sigmoid")],
                       device="reference", seed=0)
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(train, epochs=2, validation_data=val, verbose=0)
    assert len(history.history["val_loss"]) == 2 and train.epoch == 2
    assert all(math.isfinite(v) for v in history.history["loss"])


def test_rescale_is_exact_float32(tmp_path):
    _tree(tmp_path, {"cats": 2, "dogs": 2})
    ds = image_dataset_from_directory(tmp_path, image_size=S, shuffle=False, rescale=1 / 255)
    x, _ = _epoch(ds)
    for i, p in enumerate(ds.file_paths):
        np.testing.assert_array_equal(x[i], load_image(p, S) * np.float32(1 / 255))
    # a flip-only augmentation goes through the warp: the same values, mirrored or not
    aug = image_dataset_from_directory(tmp_path, image_size=S, shuffle=False, rescale=1 / 255,
                                       augmentation=Augmentation(horizontal_flip=True), seed=0)
    xa, _ = _epoch(aug)
    for i in range(len(x)):
        assert np.array_equal(xa[i], x[i]) or np.array_equal(xa[i], x[i][:, ::-1])


def test_linked_folders_are_followed_once(tmp_path):
    _tree(tmp_path / "data", {"cats": 2, "dogs": 2})
    _png(str(tmp_path / "extra" / "more.png"), 50)
    os.symlink(tmp_path / "extra", tmp_path / "data" / "cats" / "linked")
    os.symlink(tmp_path / "data" / "cats", tmp_path / "data" / "cats" / "loop")   # a cycle
    ds = image_dataset_from_directory(tmp_path / "data", image_size=S, shuffle=False)
    rel = [os.path.relpath(p, tmp_path / "data") for p in ds.file_paths]
    assert rel == ["cats/img_00.png", "cats/img_01.png", "cats/linked/more.png",
                   "dogs/img_00.png", "dogs/img_01.png"]

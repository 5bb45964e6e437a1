"""Hostile image folders: links that would mislabel, FIFOs, unlistable folders, huge images.

Each test here failed before the fix it covers (issue 12 items 2, 8, 9, 10)."""
import os
import stat
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from fastconv import data
from fastconv.data import ImageReadError, image_dataset_from_directory, load_image

S = 8


def _png(path, value):
    """A flat S x S image whose red channel is `value` (identifies it in a batch)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((S, S, 3), value, np.uint8)).save(path)
    return str(path)


def _tree(root, counts):
    """root/<class>/img_NN.png, red = a unique id; returns {id: class name}."""
    ids, k = {}, 1
    for name, n in counts.items():
        for i in range(n):
            _png(os.path.join(root, name, f"img_{i:02d}.png"), k)
            ids[k] = name
            k += 1
    return ids


def _labelled(ds):
    """{red id: class name} of one epoch."""
    out = {}
    for x, y in ds:
        for img, label in zip(x, np.asarray(y).reshape(len(x))):
            out[int(img[0, 0, 0])] = ds.class_names[int(label)]
    return out


def _rel(ds, root):
    return {os.path.relpath(p, root): why for p, why in ds.skipped}


def _huge_png_header(path, width, height):
    """A valid PNG signature and header declaring width x height (8-bit grey) followed by
    a few bytes of image data: tiny on disk, width*height bytes once decoded."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    return str(path)


def _finishes(fn, fifo, timeout=10.0):
    """Run fn() on a thread; (finished, result or exception). A reader blocked on `fifo`
    (the old behaviour) is released by opening it for writing, so the test fails
    instead of hanging the run."""
    box = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as exc:        # noqa: BLE001 - handed to the test
            box["error"] = exc
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    finished = not t.is_alive()
    if not finished:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        t.join(5)
    return finished, box


# ---------------------------------------------------------------- item 2: links
def test_a_link_up_the_tree_does_not_mislabel_the_other_class(tmp_path):
    ids = _tree(tmp_path, {"digit_3": 2, "digit_5": 3})
    os.symlink("..", tmp_path / "digit_3" / "up")                  # the reported case
    os.symlink("../digit_5", tmp_path / "digit_3" / "five")        # into another class
    os.symlink("../digit_5/img_00.png", tmp_path / "digit_3" / "x.png")   # a file in it
    ds = image_dataset_from_directory(tmp_path, image_size=S, seed=0, label_mode="int",
                                      shuffle=False)
    assert ds.num_images == 5
    assert _labelled(ds) == ids                      # every image once, with its own label
    skipped = _rel(ds, tmp_path)
    assert set(skipped) == {"digit_3/up", "digit_3/five", "digit_3/x.png"}
    assert "loop" in skipped["digit_3/up"]
    assert "into class folder 'digit_5'" in skipped["digit_3/five"]
    assert "into class folder 'digit_5'" in skipped["digit_3/x.png"]


def test_links_inside_a_class_are_kept_and_each_real_file_is_read_once(tmp_path):
    root = tmp_path / "data"
    ids = _tree(root, {"cats": 2, "dogs": 2})
    _png(root / "cats" / "sub" / "deep.png", 50)
    ids[50] = "cats"
    os.symlink("img_00.png", root / "cats" / "again.png")          # same file twice
    os.symlink("sub", root / "cats" / "zz_sub")                    # same folder twice
    os.symlink(".", root / "cats" / "sub" / "self")                # a loop inside the class
    _png(tmp_path / "shared" / "both.png", 60)                     # outside the data set...
    os.symlink(tmp_path / "shared" / "both.png", root / "cats" / "both.png")
    os.symlink(tmp_path / "shared" / "both.png", root / "dogs" / "both.png")
    _png(tmp_path / "extra" / "more.png", 70)                      # ...and only in one class
    os.symlink(tmp_path / "extra", root / "dogs" / "extra")
    ids[70] = "dogs"
    with pytest.warns(UserWarning, match="image_dataset_from_directory: skipping"):
        ds = image_dataset_from_directory(root, image_size=S, seed=0, shuffle=False)
    assert ds.num_images == 6 and _labelled(ds) == ids
    skipped = _rel(ds, root)
    assert set(skipped) == {"cats/img_00.png", "cats/zz_sub", "cats/sub/self",
                            "cats/both.png", "dogs/both.png"}
    # 'again.png' sorts first, so the file is read under that name, once
    assert "cats/again.png" in {os.path.relpath(p, root) for p in ds.file_paths}
    assert "read once" in skipped["cats/img_00.png"]
    assert "already read" in skipped["cats/zz_sub"] and "already read" in skipped["cats/sub/self"]
    assert "ambiguous" in skipped["cats/both.png"] and "ambiguous" in skipped["dogs/both.png"]


def test_class_folders_that_are_one_folder_are_refused(tmp_path):
    _tree(tmp_path, {"cats": 2})
    os.symlink("cats", tmp_path / "dogs")
    with pytest.raises(ValueError, match="'dogs' and 'cats' .* overlap"):
        image_dataset_from_directory(tmp_path, image_size=S, seed=0)


def test_scan_skips_are_counted_once_across_a_split(tmp_path):
    _tree(tmp_path, {"a": 4, "b": 4})
    os.symlink("..", tmp_path / "a" / "up")
    kw = dict(image_size=S, seed=0, validation_split=0.25)
    with pytest.warns(UserWarning, match="loop"):
        train, val = image_dataset_from_directory(tmp_path, subset="both", **kw)
    assert [os.path.basename(p) for p, _ in train.skipped] == ["up"] and val.skipped == []
    assert train.num_images + val.num_images == 8


# ---------------------------------------------------------------- item 9: FIFOs
def test_load_image_refuses_a_fifo_without_blocking(tmp_path):
    fifo = str(tmp_path / "x.png")
    os.mkfifo(fifo)
    finished, box = _finishes(lambda: load_image(fifo, S), fifo)
    assert finished, "load_image blocked on a FIFO"
    err = box.get("error")
    assert isinstance(err, ImageReadError) and "not a regular file" in err.reason
    assert "FIFO" in err.reason


def test_a_fifo_in_a_class_folder_is_skipped_and_counted(tmp_path):
    ids = _tree(tmp_path, {"cats": 2, "dogs": 2})
    fifo = str(tmp_path / "cats" / "x.png")
    os.mkfifo(fifo)
    ds = image_dataset_from_directory(tmp_path, image_size=S, seed=0, workers=0)

    def epoch():
        import warnings
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            labelled = _labelled(ds)
        return labelled, [str(r.message) for r in record]
    finished, box = _finishes(epoch, fifo)
    assert finished, "an epoch blocked on a FIFO"
    labelled, msgs = box["result"]
    assert labelled == ids
    assert [(os.path.relpath(p, tmp_path), "not a regular file" in why)
            for p, why in ds.skipped] == [("cats/x.png", True)]
    assert any("x.png" in m and "not a regular file" in m for m in msgs)


def test_the_regular_file_check_is_made_on_the_open_descriptor(tmp_path, monkeypatch):
    """The path may change between the stat and the open: the fd is checked too."""
    from fastconv.data import reading
    fifo = str(tmp_path / "x.png")
    os.mkfifo(fifo)
    real_stat = os.stat
    regular = real_stat(__file__)
    monkeypatch.setattr(reading.os, "stat", lambda p, *a, **k: regular if p == fifo
                        else real_stat(p, *a, **k))
    finished, box = _finishes(lambda: load_image(fifo, S), fifo)
    assert finished and "not a regular file" in box["error"].reason


# ---------------------------------------------------------------- item 10: unlistable folders
def _deny_listing(monkeypatch, folder):
    real = os.scandir

    def scandir(path="."):
        if os.path.abspath(os.fspath(path)) == os.path.abspath(folder):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)


def _unlistable_tree(tmp_path):
    ids = _tree(tmp_path, {"cats": 2, "dogs": 2})
    _png(tmp_path / "cats" / "locked" / "hidden_cat.png", 40)
    return ids, str(tmp_path / "cats" / "locked")


def _check_unlistable_is_skipped(tmp_path, ids):
    with pytest.warns(UserWarning, match="cannot list this folder"):
        ds = image_dataset_from_directory(tmp_path, image_size=S, seed=0)
    assert _labelled(ds) == ids
    [(path, why)] = ds.skipped
    assert os.path.relpath(path, tmp_path) == "cats/locked" and "PermissionError" in why


def test_an_unlistable_folder_is_warned_about_and_counted(tmp_path, monkeypatch):
    ids, locked = _unlistable_tree(tmp_path)
    _deny_listing(monkeypatch, locked)
    _check_unlistable_is_skipped(tmp_path, ids)


def test_an_unlistable_folder_chmod_000(tmp_path):
    ids, locked = _unlistable_tree(tmp_path)
    os.chmod(locked, 0)
    try:
        try:
            os.listdir(locked)
            pytest.skip("running as root: chmod 000 does not stop listing (the "
                        "monkeypatched variant covers this)")
        except PermissionError:
            pass
        _check_unlistable_is_skipped(tmp_path, ids)
    finally:
        os.chmod(locked, stat.S_IRWXU)


def test_an_unlistable_class_folder_is_a_clear_error(tmp_path, monkeypatch):
    _tree(tmp_path, {"cats": 2, "dogs": 2})
    _deny_listing(monkeypatch, tmp_path / "dogs")
    with pytest.raises(ValueError, match="cannot list class folder .*dogs.*PermissionError"):
        image_dataset_from_directory(tmp_path, image_size=S, seed=0)


# ---------------------------------------------------------------- item 8: pixel cap
@pytest.fixture
def no_decoding(monkeypatch):
    """Make any pixel decode fail loudly: a refused image must be refused from its header."""
    def load(self, *args, **kwargs):
        raise AssertionError("decoded the pixels of an image over the cap")
    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def test_an_image_over_the_default_cap_is_refused_before_decoding(tmp_path, no_decoding):
    # 9000 x 9000 = 81 MP: over our 50 MP default, under Pillow's own 89 MP warning
    path = _huge_png_header(tmp_path / "big.png", 9000, 9000)
    assert os.path.getsize(path) < 200
    with pytest.raises(ImageReadError) as info:
        load_image(path, S)
    assert "9000x9000 is 81,000,000 pixels, more than the limit of 50,000,000" \
        in info.value.reason


def test_the_cap_is_configurable(tmp_path, monkeypatch):
    path = _png(tmp_path / "a.png", 7)                          # 8 x 8 = 64 pixels
    assert data.get_max_image_pixels() == data.MAX_IMAGE_PIXELS
    previous = data.set_max_image_pixels(63)
    try:
        assert previous == data.MAX_IMAGE_PIXELS and data.get_max_image_pixels() == 63
        with pytest.raises(ImageReadError, match="64 pixels, more than the limit of 63"):
            load_image(path, S)
        data.set_max_image_pixels(64)
        assert load_image(path, S)[0, 0, 0] == 7
    finally:
        data.set_max_image_pixels(None)
    monkeypatch.setenv("FASTCONV_MAX_IMAGE_PIXELS", "63")
    assert data.get_max_image_pixels() == 63
    with pytest.raises(ImageReadError, match="limit of 63"):
        load_image(path, S)
    monkeypatch.setenv("FASTCONV_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="FASTCONV_MAX_IMAGE_PIXELS must be an int >= 1"):
        load_image(path, S)
    with pytest.raises(ValueError, match="set_max_image_pixels"):
        data.set_max_image_pixels(0)


def test_a_huge_image_in_training_is_skipped_and_counted(tmp_path):
    ids = _tree(tmp_path, {"cats": 2, "dogs": 2})
    bomb = _huge_png_header(tmp_path / "dogs" / "bomb.png", 9000, 9000)
    ds = image_dataset_from_directory(tmp_path, image_size=S, seed=0)
    with pytest.warns(UserWarning, match="bomb.png.*more than the limit"):
        assert _labelled(ds) == ids
    [(path, why)] = ds.skipped
    assert path == bomb and "more than the limit of 50,000,000" in why

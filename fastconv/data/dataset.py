"""image_dataset_from_directory: a folder of class sub-folders as batches for model.fit."""
from __future__ import annotations

import math
import os
import warnings

import numpy as np

from .. import _random
from .._args import is_int, is_number
from .augment import Augmentation
from .prefetch import OrderedPrefetch, check_workers
from .reading import (CHANNELS, IMAGE_EXTENSIONS, ImageReadError, check_color_mode,
                      check_image_size, decode_image, is_image_file)

LABEL_MODES = ("binary", "int", "categorical")
SUBSETS = ("training", "validation", "both")
_OP = "image_dataset_from_directory"
_SPLIT_STREAM, _SHUFFLE_STREAM, _AUGMENT_STREAM = 0, 1, 2


def _fail(msg):
    raise ValueError(f"{_OP}: {msg}")


def _inside(path, folder):
    """True when real path `path` is `folder` or lies under it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _os_reason(exc):
    return f"{type(exc).__name__}: {exc.strerror or exc}"


class _Scan:
    """The walk of one data set's class folders, resolving every path to its real one.

    Rules (each real file belongs to at most one class):
    - a linked folder or file inside a class folder is followed when its target lies in
      that class folder or entirely outside the data set (a folder of extra images kept
      elsewhere); a link into another class folder, elsewhere into the data set, or to a
      folder that holds a class folder (e.g. `ln -s .. up`) is skipped;
    - each real folder is walked once per class (a link to a folder already walked is a
      loop or a duplicate, and skipped); each real file is read once per class;
    - a real file reached from two class folders is skipped in both (its label would be
      ambiguous);
    - a folder that cannot be listed is skipped.
    Skips are (path, reason) in `.skipped`, in the order found.
    """

    def __init__(self, path, class_names):
        self.path = path
        self.names = class_names
        self.top = os.path.realpath(path)
        self.roots = [os.path.realpath(os.path.join(path, n)) for n in class_names]
        self.skipped = []
        for i, a in enumerate(self.roots):
            for j, b in enumerate(self.roots):
                if i != j and _inside(b, a):
                    how = "the same folder as" if a == b else "inside"
                    _fail(f"class folders {class_names[j]!r} and {class_names[i]!r} in "
                          f"{path!r} overlap: {class_names[j]!r} is {how} {a!r}, so their "
                          f"images would have two labels")

    def _link_problem(self, real, label, is_dir):
        """Why a link to `real` from class `label` is skipped, or None to follow it."""
        if _inside(real, self.roots[label]):
            return None
        for j, root in enumerate(self.roots):
            if j != label and _inside(real, root):
                return f"a link into class folder {self.names[j]!r} ({real!r})"
        if is_dir and any(_inside(r, real) for r in self.roots + [self.top]):
            return f"a link to {real!r}, a folder holding the class folders (a loop)"
        if _inside(real, self.top):
            return f"a link out of its class folder, to {real!r}"
        return None                     # outside the data set: extra images kept elsewhere

    def walk_class(self, label):
        """[(path, real path)] of the image files of class `label`, in os.walk's top-down
        order (each folder's sorted files, then its sorted sub-folders, depth first)."""
        folder = os.path.join(self.path, self.names[label])
        seen_dirs = {self.roots[label]}
        out = []
        stack = [(folder, self.roots[label])]
        while stack:
            here, here_real = stack.pop()
            try:
                with os.scandir(here) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                if here == folder:
                    _fail(f"cannot list class folder {folder!r} ({_os_reason(exc)})")
                self.skip(here, f"cannot list this folder ({_os_reason(exc)})")
                continue
            subdirs = []
            for e in entries:
                if e.name.startswith("."):
                    continue
                try:
                    is_dir = e.is_dir()           # follows links; False when broken
                except OSError:                   # e.g. a link in a folder we cannot search
                    is_dir = False
                if not is_dir and not is_image_file(e.name):
                    continue
                linked = e.is_symlink()
                real = os.path.realpath(e.path) if linked else os.path.join(here_real, e.name)
                if linked:
                    problem = self._link_problem(real, label, is_dir)
                    if problem:
                        self.skip(e.path, problem)
                        continue
                if not is_dir:
                    out.append((e.path, real))
                elif real in seen_dirs:
                    self.skip(e.path, f"a link to a folder already read ({real!r}): a "
                                      f"loop or a duplicate")
                else:
                    seen_dirs.add(real)
                    subdirs.append((e.path, real))
            stack.extend(reversed(subdirs))
        return out

    def skip(self, path, reason):
        self.skipped.append((path, reason))

    def files(self):
        """[(path, label)] of every class, each real file once and in one class only."""
        per_class = [self.walk_class(label) for label in range(len(self.names))]
        owners = {}
        for label, found in enumerate(per_class):
            for _, real in found:
                owners.setdefault(real, set()).add(label)
        files = []
        for label, found in enumerate(per_class):
            first = {}
            mine = []
            for p, real in found:
                if len(owners[real]) > 1:
                    others = sorted(self.names[j] for j in owners[real] if j != label)
                    self.skip(p, f"the same file ({real!r}) is also in class folder(s) "
                                 f"{others}: its label is ambiguous")
                elif real in first:
                    self.skip(p, f"the same file as {first[real]!r} (read once)")
                else:
                    first[real] = p
                    mine.append(p)
            if not mine:
                folder = os.path.join(self.path, self.names[label])
                why = [r for p, r in self.skipped if _inside(p, folder)]
                extra = f"; {len(why)} skipped, e.g. {why[0]}" if why else ""
                _fail(f"class folder {folder!r} holds no image files "
                      f"({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}){extra}")
            files.extend((p, label) for p in mine)
        return files


def _scan(path, class_names):
    """(class_names, [(file, class index)...], [(path, reason) skipped]) for the class
    folders under path; see _Scan for how links, loops and unlistable folders are met."""
    if not os.path.exists(path):
        _fail(f"no such directory: {path!r}")
    if not os.path.isdir(path):
        _fail(f"not a directory: {path!r} (expected a folder of class sub-folders)")
    try:
        with os.scandir(path) as it:
            found = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        _fail(f"cannot list {path!r} ({_os_reason(exc)})")
    if class_names is None:
        class_names = found
    else:
        class_names = [str(c) for c in class_names]
        if sorted(class_names) != found:
            _fail(f"class_names {class_names} must name exactly the sub-folders of "
                  f"{path!r}, which are {found}")
        if len(set(class_names)) != len(class_names):
            _fail(f"class_names has duplicates: {class_names}")
    if not class_names:
        _fail(f"no class sub-folders in {path!r} (expected e.g. {path}/cats/*.jpg, "
              f"{path}/dogs/*.jpg)")
    scan = _Scan(path, class_names)
    files = scan.files()
    return class_names, files, scan.skipped


def class_folders(path):
    """The class names image_dataset_from_directory(path) finds: its class folders,
    sorted (the same scan and rules, so the two never disagree)."""
    return list(_scan(path, None)[0])


def _split(labels, fraction, seed):
    """(training, validation) index arrays: the last `fraction` of each class after a
    seeded permutation, so both subsets keep the class balance."""
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(fraction * idx.size))
        train.append(idx[:idx.size - n_val])
        val.append(idx[idx.size - n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


class ImageDataset:
    """Batches (x, y) of images from files; iterate it once per epoch.

    x: float32 (n, H, W, 3) NHWC, RGB 0..255 times `rescale` (when given); (n, H, W, 1)
    grey with color_mode "grayscale". y: float32 (n,)
    for label_mode "binary", int32 (n,) for "int", float32 one-hot (n, K) for
    "categorical". Every epoch is reshuffled (shuffle=True) and augmented from the
    seed and the epoch number, so two datasets with one seed yield identical epochs
    whatever the number of worker threads. Build it with image_dataset_from_directory.

    Files that fail to decode (or are not regular files, or exceed the pixel cap) are
    left out of their batch (which is then smaller), warned about once (warnings.warn
    naming the file), listed in `.skipped` and not read again; they never raise during
    iteration. `scan_skipped` [(path, reason)] are what the folder scan left out (links
    out of a class, loops, unlistable folders, duplicates); `.skipped` lists them first.
    """

    def __init__(self, file_paths, labels, class_names, image_size, batch_size, shuffle,
                 seed, label_mode, rescale, augmentation, cache, workers, prefetch,
                 scan_skipped=(), color_mode="rgb"):
        self.file_paths = list(file_paths)
        self.labels = np.asarray(labels, dtype=np.int32)
        self.class_names = list(class_names)
        self.image_size = image_size
        self.color_mode = color_mode
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.label_mode = label_mode
        self.rescale = rescale
        self.augmentation = augmentation
        self.cache = cache
        self.workers = workers
        self.prefetch = prefetch
        self.epoch = 0                 # the epoch the next iteration yields; settable (resume)
        self.last_epoch_wait_seconds = 0.0
        self._cached = [None] * len(self.file_paths) if cache else None
        self._bad = {}                 # index -> reason, in the order found
        self._scan_skipped = [(os.fspath(p), str(r)) for p, r in scan_skipped]

    # ------------------------------------------------------------------ info
    @property
    def num_images(self):
        """Image files found (including any that later failed to decode)."""
        return len(self.file_paths)

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def skipped(self):
        """[(path, reason)]: what the folder scan skipped (scan_skipped), then the files
        that failed to decode so far."""
        return self._scan_skipped + [(self.file_paths[i], why) for i, why in self._bad.items()]

    def _good(self):
        if not self._bad:
            return np.arange(self.num_images)
        return np.array([i for i in range(self.num_images) if i not in self._bad], np.int64)

    def __len__(self):
        """Batches per epoch (files already known to be unreadable not counted)."""
        return math.ceil(len(self._good()) / self.batch_size)

    def __repr__(self):
        aug = f", augmentation={self.augmentation!r}" if self.augmentation else ""
        return (f"<ImageDataset {self.num_images} images, classes {self.class_names}, "
                f"image_size={self.image_size}, batch_size={self.batch_size}, "
                f"label_mode={self.label_mode!r}, color_mode={self.color_mode!r}{aug}>")

    # ------------------------------------------------------------------ batches
    def order(self, epoch):
        """Indices into file_paths in the order epoch `epoch` yields them."""
        if not self.shuffle:
            return self._good()
        # Permute every file, then drop the unreadable ones: the readable files keep
        # their relative order whichever bad files are known yet (e.g. after a resume).
        perm = np.random.default_rng([self.seed, _SHUFFLE_STREAM, epoch]).permutation(
            self.num_images)
        if self._bad:
            perm = perm[[i not in self._bad for i in perm]]
        return perm

    def _decoded(self, i):
        if self._cached is not None and self._cached[i] is not None:
            return self._cached[i]
        img = decode_image(self.file_paths[i], self.image_size, self.color_mode)
        if self._cached is not None:
            self._cached[i] = img
        return img

    def _targets(self, idx):
        labels = self.labels[idx]
        if self.label_mode == "binary":
            return labels.astype(np.float32)
        if self.label_mode == "int":
            return labels.copy()
        onehot = np.zeros((labels.size, self.num_classes), np.float32)
        onehot[np.arange(labels.size), labels] = 1.0
        return onehot

    def _make_batch(self, job):
        """(x, y, failures) of one batch; runs on a loader thread."""
        epoch, start, idx = job
        h, w = self.image_size
        c = CHANNELS[self.color_mode]
        x = np.empty((len(idx), h, w, c), np.float32)      # (N, H, W, C)
        scale = 1.0 if self.rescale is None else self.rescale
        kept, failures = [], []
        for k, i in enumerate(idx):
            try:
                img = self._decoded(i)
            except ImageReadError as exc:
                failures.append((int(i), exc.reason))
                continue
            dst = x[len(kept)]
            if self.augmentation is not None:
                # One stream per (epoch, position): reproducible whichever thread runs it.
                rng = np.random.default_rng([self.seed, _AUGMENT_STREAM, epoch, start + k])
                self.augmentation.apply(img, rng, out=dst, scale=scale)
            elif self.rescale is None:
                np.copyto(dst, img)
            else:
                # dtype pins the float32 loop (NumPy 1.x would pick float16 for uint8 * scalar)
                np.multiply(img, np.float32(scale), out=dst, dtype=np.float32)
            kept.append(i)
        kept = np.asarray(kept, np.int64)
        return x[:kept.size], self._targets(kept), failures

    def __iter__(self):
        for x, y, _, _ in self.shard_batches(0, 1):
            if x.shape[0]:
                yield x, y

    def shard_batches(self, rank, size):
        """One epoch as iteration yields it, rank `rank` of `size` decoding only its rows
        of each batch (fastconv.distributed.shard: rows B*r//N to B*(r+1)//N of a batch
        of B files, before unreadable files are left out) with the augmentation drawn
        for their places in the whole batch, so the ranks' slices together are the
        batch one process would decode. Yields (x, y, files, first) per batch: files the
        batch's file count (unreadable ones included), first the slice's first row;
        x may hold fewer rows than the slice (unreadable files), even none. Every rank
        must iterate; unreadable files found by other ranks are for add_unreadable."""
        from ..distributed._comm import shard
        epoch = self.epoch
        self.epoch += 1
        order = self.order(epoch)
        jobs, places = [], []
        for s in range(0, order.size, self.batch_size):
            idx = order[s:s + self.batch_size]
            lo, hi = shard(idx.size, rank, size)
            jobs.append((epoch, s + lo, idx[lo:hi]))
            places.append((idx.size, lo))
        runner = OrderedPrefetch(self._make_batch, jobs, self.workers, self.prefetch)
        try:
            for (x, y, failures), (files, first) in zip(runner, places):
                for i, reason in failures:
                    if i not in self._bad:
                        self._bad[i] = reason
                        warnings.warn(f"skipping unreadable image {self.file_paths[i]!r}: "
                                      f"{reason}", UserWarning, stacklevel=2)
                yield x, y, files, first
        finally:
            self.last_epoch_wait_seconds = runner.wait_seconds

    def unreadable(self):
        """[(index, reason)] of the files found unreadable so far (add_unreadable's
        argument on the other ranks)."""
        return list(self._bad.items())

    def add_unreadable(self, found):
        """Record files other ranks found unreadable ([(index, reason)]), so that every
        rank leaves out the same files from the next epoch's order."""
        for i, reason in found:
            self._bad.setdefault(int(i), str(reason))


def _check_choice(name, value, choices):
    if value not in choices:
        _fail(f"{name} must be one of {choices}, received {name}={value!r}")


def image_dataset_from_directory(path, image_size=(150, 150), batch_size=32, shuffle=True,
                                 seed=None, validation_split=None, subset=None,
                                 label_mode="binary", class_names=None, rescale=None,
                                 augmentation=None, cache=False, workers=None, prefetch=2,
                                 color_mode="rgb"):
    """Batches of images from `path/<class>/...` for model.fit, in Keras's spirit.

    Classes are the sorted sub-folder names of `path` (or `class_names`, which must
    name exactly those folders, in the label order you want); label k is class_names[k].
    Images in nested folders inside a class folder belong to that class; links are
    resolved so that each real file is read once and for one class only (see _Scan), and
    what is left out is warned about and listed in `.skipped`. Files are
    picked by extension (see reading.IMAGE_EXTENSIONS; hidden files are ignored), so
    README.txt or .DS_Store never reach the decoder.

    image_size: (height, width) every image is resized to (nearest, see load_image).
    batch_size: images per batch (the last batch may be smaller).
    shuffle: reshuffle the files every epoch, deterministically from seed and epoch.
    seed: int; None draws one from fastconv's generator (fastconv.set_seed fixes it).
    validation_split, subset: hold out this fraction of each class (after a seeded
      permutation); subset "training" or "validation" returns that part, "both" returns
      (training, validation). Both calls must use the same seed, which is required here
      unless subset="both". Augmentation is never applied to a validation subset.
    label_mode: "binary" (float32 0/1, exactly two classes), "int" (int32) or
      "categorical" (float32 one-hot).
    rescale: multiply pixels (0..255) by this, e.g. 1/255 as the seed recipe.
    augmentation: an Augmentation applied per image (training data only).
    cache: keep decoded, resized uint8 images in memory after the first epoch.
    workers: loader threads (None: one per core up to 4; 0: the calling thread).
    prefetch: batches prepared ahead of the one being consumed (at least one per worker).
    color_mode: "rgb" (3 channels) or "grayscale" (1 channel; see reading.load_image).

    Raises ValueError naming the path for a missing path, no class folders, an empty
    class folder, or not exactly two classes with label_mode="binary".
    """
    path = os.fspath(path)
    image_size = check_image_size(_OP, image_size)
    color_mode = check_color_mode(_OP, color_mode)
    if not is_int(batch_size) or batch_size < 1:
        _fail(f"batch_size must be an int >= 1, received batch_size={batch_size!r}")
    _check_choice("label_mode", label_mode, LABEL_MODES)
    seed = _random.check_seed(_OP, seed)
    if validation_split is not None:
        if not is_number(validation_split) or not 0 < validation_split < 1:
            _fail(f"validation_split must be a float in (0, 1), received "
                  f"validation_split={validation_split!r}")
        if subset is None:
            _fail("validation_split needs subset='training', 'validation' or 'both'")
        _check_choice("subset", subset, SUBSETS)
        if seed is None and subset != "both":
            _fail("validation_split with subset='training' or 'validation' needs a seed, so "
                  "that the two subsets are disjoint (or use subset='both')")
    elif subset is not None:
        _fail(f"subset={subset!r} needs validation_split")
    if rescale is not None:
        if not is_number(rescale) or not math.isfinite(rescale):
            _fail(f"rescale must be None or a finite number, received rescale={rescale!r}")
        rescale = float(rescale)
    if augmentation is not None and not isinstance(augmentation, Augmentation):
        raise TypeError(f"{_OP}: augmentation must be a fastconv.data.Augmentation or None, "
                        f"received {type(augmentation).__name__}")
    if augmentation is not None and augmentation.is_identity:
        augmentation = None
    workers, prefetch = check_workers(workers, prefetch)
    if seed is None:
        seed = _random.draw_seed()

    class_names, files, scan_skipped = _scan(path, class_names)
    for p, reason in scan_skipped:
        warnings.warn(f"{_OP}: skipping {p!r}: {reason}", UserWarning, stacklevel=2)
    if label_mode == "binary" and len(class_names) != 2:
        _fail(f"label_mode='binary' needs exactly 2 class folders in {path!r}, found "
              f"{len(class_names)}: {class_names} (use label_mode='int' or 'categorical')")
    paths = [f for f, _ in files]
    labels = np.array([c for _, c in files], np.int32)

    def make(idx, aug, skips=()):
        return ImageDataset([paths[i] for i in idx], labels[idx], class_names, image_size,
                            int(batch_size), bool(shuffle), seed, label_mode, rescale, aug,
                            bool(cache), workers, prefetch, skips, color_mode)

    # What the scan skipped holds no image of either subset: it is listed once, on the
    # training subset (so a training and a validation call do not count it twice).
    if validation_split is None:
        return make(np.arange(len(paths)), augmentation, scan_skipped)
    train, val = _split(labels, validation_split, seed)
    if train.size == 0 or val.size == 0:
        _fail(f"validation_split={validation_split} of {len(paths)} images in {path!r} "
              f"leaves no {'training' if train.size == 0 else 'validation'} images")
    if subset == "training":
        return make(train, augmentation, scan_skipped)
    if subset == "validation":
        return make(val, None)
    return make(train, augmentation, scan_skipped), make(val, None)

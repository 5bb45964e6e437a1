"""What the `fastconv` subcommands share: the error type, device checks, opening a
model file (fastconv or Keras .h5), class names and the list of images to read."""
from __future__ import annotations

import errno
import json
import os
import signal
from contextlib import contextmanager

from .. import kernels
from .._files import NotRegularFileError, atomic_replace, save_target

SEED_ARCHITECTURE = "the seed small convnet architecture (150x150x3 input, 438,369 params)"
# The seed's folders were data/train/cats and data/train/dogs; Keras numbers classes in
# sorted folder order, so the sigmoid output is P(dogs).
KERAS_DEFAULT_CLASSES = ("cats", "dogs")
RESCALE = 1.0 / 255.0        # the seed's ImageDataGenerator(rescale=1. / 255)
# The --device choices: every backend, in the order the commands have always listed them
# (the default, cpu, first and the reference last).
DEVICES = tuple(sorted(kernels.BACKENDS, key=lambda name: name == "reference"))


class CLIError(Exception):
    """An error the user can fix; main() prints it as one line and exits 1."""


def require_device(device):
    """Load the kernels of `device` now, so a missing GPU fails before any work."""
    try:
        kernels.get(device)
    except kernels.BackendUnavailable as exc:
        raise CLIError(f"--device {device}: {exc}") from None


def parse_class_names(text):
    """'cats,dogs' -> ['cats', 'dogs'] (None stays None)."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if len(names) < 2 or not all(names) or len(set(names)) != len(names):
        raise CLIError(f"--class-names must list two or more distinct names separated by "
                       f"commas, received {text!r}")
    return names


def check_class_names(names, model, source):
    """Class names must fit the model's output: 2 for one sigmoid unit, K for K units."""
    units = model.output_shape[-1]
    want = 2 if units == 1 else units
    if len(names) != want:
        raise CLIError(f"{source} gives {len(names)} class names ({', '.join(names)}) but the "
                       f"model has {units} output unit{'s' * (units != 1)}, i.e. {want} classes")
    return list(names)


class OpenedModel:
    """A model read from a file, with its class names and what was assumed about it."""

    def __init__(self, model, path, class_names, keras, note=None):
        self.model, self.path, self.class_names = model, path, class_names
        self.keras = keras          # True for a Keras .h5 weights file
        self.note = note

    @property
    def image_size(self):
        return tuple(self.model.input_shape[1:3])

    def color_mode(self, requested=None):
        """The colour mode images are read in for this model: `requested` (--color-mode)
        when given, else the model's input channels' (1: grayscale, 3: rgb). Raises
        CLIError when they disagree, or for a model that takes neither."""
        from ..data.reading import CHANNELS
        channels = self.model.input_shape[-1]
        fits = [mode for mode, c in CHANNELS.items() if c == channels]
        if requested is None:
            if not fits:
                raise CLIError(f"{self.path} takes {channels}-channel images; fastconv reads "
                               f"images as rgb (3 channels) or grayscale (1)")
            return fits[0]
        if CHANNELS[requested] != channels:
            raise CLIError(f"--color-mode {requested} reads {CHANNELS[requested]}-channel "
                           f"images but {self.path} takes {channels} channel"
                           f"{'s' * (channels != 1)}"
                           + (f" (use --color-mode {fits[0]})" if fits else ""))
        return requested


def open_model(path, device, class_names=None):
    """A fastconv model file (.fcm/.npz), a Keras 3 .keras file or a Keras HDF5 weights
    file of the seed architecture, on `device`. class_names (a list) overrides the stored or
    default names. Raises CLIError, ModelFileError or KerasWeightsError."""
    from ..models import keras_weights, saving
    from ..models import small_convnet
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CLIError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise CLIError(f"{path} is a folder, not a model file")
    if path.lower().endswith((".h5", ".hdf5")) and not keras_weights.is_hdf5(path):
        raise CLIError(f"{path} is not an HDF5 file (no HDF5 signature), so not a Keras .h5 "
                       f"weights file")
    from ..models.keras_file import is_keras2_model_file
    if keras_weights.is_hdf5(path) and not is_keras2_model_file(path):
        model = small_convnet(device=device, weights=path)
        names = check_class_names(class_names or list(KERAS_DEFAULT_CLASSES), model,
                                  "--class-names" if class_names else "the default")
        note = (f"{path} is a Keras weights file: assumed {SEED_ARCHITECTURE}; classes "
                f"0 = {names[0]}, 1 = {names[1]}"
                + ("" if class_names else " (the seed's sorted folders; change with "
                                          "--class-names)"))
        return OpenedModel(model, path, names, keras=True, note=note)
    try:
        model = saving.load_model(path, device=device)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    stored = getattr(model, "class_names", None)
    if class_names:
        names = check_class_names(class_names, model, "--class-names")
    elif stored:
        names = check_class_names(stored, model, f"{path}")
    else:
        units = model.output_shape[-1]
        names = [f"class {k}" for k in range(2 if units == 1 else units)]
    return OpenedModel(model, path, names, keras=False)


def check_outputs(paths, flag, overwrite, hint="pass --overwrite to replace them"):
    """Check, before any work, the files a command will write: each must be a regular
    file or not exist yet, in a folder that exists (fastconv._files.save_target), and unless
    `overwrite` none may exist. Raises CLIError naming `flag`, the file(s) and why."""
    existing = []
    for path in paths:
        try:
            save_target(path)
        except NotRegularFileError as exc:
            raise CLIError(f"{flag}: {exc}") from None
        except FileNotFoundError:
            folder = os.path.dirname(os.path.abspath(path))
            raise CLIError(f"{flag} {path}: folder {folder} does not exist") from None
        folder = os.path.dirname(os.path.abspath(path))
        if not os.access(folder, os.W_OK):   # no permission, or a read-only file system
            raise CLIError(f"{flag} {path}: cannot write in folder {folder} (no permission, "
                           f"or a read-only file system)")
        if os.path.lexists(path):
            existing.append(path)
    if existing and not overwrite:
        many = len(existing) > 1
        raise CLIError(f"{flag}: {', '.join(existing)} already exist{'s' * (not many)} "
                       f"(from an earlier run?) and would be replaced; {hint}")


# Failures of the machine rather than of the input: the catch-all of main() would print
# them as a bug ("run with --debug"), and ENOSPC or EIO do not even name their file.
_DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "a read-only file system", errno.EACCES: "no permission",
                errno.EPERM: "not permitted", errno.EIO: "an input/output error"}


@contextmanager
def plain_failures(doing, memory_hint=""):
    """Out of memory, no permission, a full or read-only disk, inside the block: a
    CLIError that says `doing` (e.g. "while training"), the file and the cause."""
    try:
        yield
    except MemoryError as exc:
        detail = f" ({exc})" if str(exc) else ""
        raise CLIError(f"out of memory {doing}{detail}{memory_hint}") from exc
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        text = exc.strerror or str(exc)
        if exc.filename is not None and os.fspath(exc.filename) not in text:
            text = f"cannot access {os.fspath(exc.filename)}: {text}"
        cause = _DISK_ERRNOS[exc.errno]
        if cause not in text:
            text += f" ({cause})"
        raise CLIError(f"{text}, {doing}") from exc


def write_json_atomic(path, obj):
    """json.dump to `path` atomically (fastconv._files.atomic_replace: never half a file)."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_replace(path, lambda f: f.write(text.encode()))


@contextmanager
def deferred_sigint():
    """Hold back Ctrl-C for the duration (a checkpoint and its state file are written
    together); the KeyboardInterrupt is raised when the block ends. Inside another
    such block, a Ctrl-C is handed on to it, so it is raised when the outermost ends."""
    caught = []

    def hold(signum, frame):
        caught.append(signum)
    hold.holds_sigint = True
    try:
        previous = signal.signal(signal.SIGINT, hold)
    except ValueError:          # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if getattr(previous, "holds_sigint", False):
            previous(signal.SIGINT, None)       # the enclosing block raises it at its end
        else:
            raise KeyboardInterrupt

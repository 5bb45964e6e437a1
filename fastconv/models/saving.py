"""Model files: one .npz (a zip of .npy arrays) holding the architecture as JSON,
the weights and, optionally, the optimizer state.

Entries:
  fastconv_meta   uint8 array of UTF-8 JSON: format, version, kind ('model' or
                  'weights'), class_name, config, compile settings, and for every
                  weight its entry, layer, name, shape and SHA-256
  w0000, w0001..  weights in Keras order (layer by layer, kernel then bias), float32
  o0000, o0001..  optimizer state arrays (parameter-major), float32

Writing is atomic: the file is written to a temporary file in the same folder,
flushed to disk and renamed over the target with os.replace, so an interrupted
save leaves the previous file intact. Reading uses allow_pickle=False; a
truncated, foreign or tampered file raises ModelFileError naming the file.
Weights are stored on the host, so a model saved on cuda loads on cpu and back.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import secrets
import stat
import zipfile
import zlib

import numpy as np

from .. import optimizers as optimizers_mod
from .._version import __version__

META = "fastconv_meta"
FORMAT = "fastconv"
FORMAT_VERSION = 1
# Limits on what a file may make the reader allocate (a legit file stores its arrays
# uncompressed, so its size bounds them): entries inflate to at most MAX_INFLATION x
# the file's size plus SIZE_SLACK, the JSON metadata to MAX_META_BYTES.
MAX_INFLATION = 10
SIZE_SLACK = 1 << 20
MAX_META_BYTES = 4 << 20
_MAX_NPY_HEADER = 10000
_MEMBER = re.compile(r"^(fastconv_meta|[wo]\d{4,})\.npy$")
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError,
                RuntimeError)


class ModelFileError(ValueError):
    """A model file that cannot be loaded: unreadable, foreign, damaged or tampered."""


def _digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# --------------------------------------------------------------------------- writing

def _write_arrays(fileobj, arrays):
    """Write `arrays` (name -> ndarray) as an uncompressed .npz into the open file."""
    np.savez(fileobj, **arrays)


class NotRegularFileError(OSError):
    """A save target that exists and is not a regular file (a folder, a device, a FIFO,
    a socket): atomic saving never replaces one."""


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"))


def save_target(path):
    """The file a save of `path` replaces: `path` itself, or, when `path` is a symlink,
    the file it finally points to (a save writes through a link: the link stays and its
    target gets the new contents). Raises NotRegularFileError when that exists and is
    not a regular file, and FileNotFoundError when its folder does not exist. Nothing
    is written; callers check every output with it before starting work."""
    path = os.fspath(path)
    if not os.path.basename(path):
        raise NotRegularFileError(f"{path}: names a folder, not a file to save to")
    target = os.path.realpath(path) if os.path.islink(path) else os.path.abspath(path)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        kind = next((k for test, k in _KINDS if test(mode)), "not a regular file")
        via = f" (the target of the link {path})" if target != os.path.abspath(path) else ""
        raise NotRegularFileError(f"refusing to save to {target}{via}: it is {kind}, and "
                                  f"saving only ever replaces a regular file")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path}: folder {folder} does not exist")
    return target


_TEMP = ".{name}.{pid}-{token}.tmp"


def _temp_pattern(name):
    return re.compile(r"\." + re.escape(name) + r"\.(\d+)-[0-9a-f]+\.tmp\Z")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # it runs, as another user
        return True
    except (OverflowError, ValueError):
        return False
    return True


def remove_stale_temps(target):
    """Remove the temporary files that killed saves of `target` left in its folder.
    Only names of this target's own pattern, `.<name>.<pid>-<hex>.tmp`, that are
    regular files and whose <pid> is not a running process are removed: a concurrent
    writer's live temp (its pid runs, this process's included) is left alone. Temps of
    other targets, and the `.<name>.<random>.tmp` names older fastconv versions wrote
    (no pid in them), are never touched. Returns the paths removed."""
    folder, name = os.path.split(target)
    pattern, removed = _temp_pattern(name), []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry)
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        full = os.path.join(folder, entry)
        try:
            if stat.S_ISREG(os.lstat(full).st_mode):
                os.unlink(full)
                removed.append(full)
        except OSError:     # gone already (another save cleaned it), or not ours to remove
            pass
    return removed


def _open_temp(target):
    """(fd, path) of a new temporary file next to `target`, created with O_EXCL and mode
    0o666 so that the kernel applies the umask (as for any new file): no os.umask()
    juggling, which would race with other threads creating files."""
    folder, name = os.path.split(target)
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(folder, _TEMP.format(name=name, pid=os.getpid(),
                                                token=secrets.token_hex(4)))
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write(path, arrays):
    """Write the .npz to a temporary file next to `path`, fsync it, then os.replace."""
    atomic_replace(path, lambda f: _write_arrays(f, arrays))


def atomic_replace(path, write):
    """Call write(binary file) on a temporary file next to `path`, fsync it, then
    os.replace it over `path`: readers see the old file or the new one, never half.

    Only a regular file (or nothing) is ever replaced: a folder, device, FIFO or socket
    at `path` raises NotRegularFileError before anything is written; a symlink is
    written through (see save_target). Temps left by killed saves of the same target
    are removed first (see remove_stale_temps). An OSError while writing (a full or
    read-only disk, no permission) is raised again with the target's name in it."""
    path = os.fspath(path)
    target = save_target(path)
    remove_stale_temps(target)
    try:
        fd, tmp = _open_temp(target)
    except OSError as exc:
        raise _naming(exc, path, "cannot create a temporary file next to") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, NotRegularFileError):
            raise _naming(exc, path, "cannot write") from exc
        raise
    try:  # make the rename itself durable
        dfd = os.open(os.path.dirname(target), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _naming(exc, path, doing):
    """`exc` again (same type and errno) with a message naming `path`: ENOSPC and EIO
    name no file on their own."""
    if exc.errno is None or path in str(exc):
        return exc
    why = exc.strerror or str(exc)
    hint = {errno.ENOSPC: " (the disk is full)", errno.EROFS: " (a read-only file system)",
            errno.EACCES: " (no permission to write there)",
            errno.EDQUOT: " (disk quota exceeded)"}.get(exc.errno, "")
    return type(exc)(exc.errno, f"{doing} {path}: {why}{hint}")


def _weight_entries(model):
    arrays, entries = {}, []
    k = 0
    for layer in model.layers:
        for wname, w in zip(layer.weight_names, layer.get_weights()):
            key = f"w{k:04d}"
            w = np.ascontiguousarray(w, np.float32)
            arrays[key] = w
            entries.append({"key": key, "layer": layer.name, "name": wname,
                            "shape": list(w.shape), "sha256": _digest(w)})
            k += 1
    return arrays, entries


def _meta_array(meta):
    return np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), np.uint8)


def save_model(model, filepath, include_optimizer=True, train_state=None):
    """Save architecture, weights and (include_optimizer) optimizer state to `filepath`.
    `train_state` (a JSON-able dict, e.g. the CLI's epochs done and history) is stored in
    the metadata under 'train_state', so that a checkpoint and the state it belongs to
    are one file, replaced by one rename: no kill can leave them out of step."""
    model._require_built("save")
    arrays, entries = _weight_entries(model)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "model",
            "fastconv_version": __version__, "class_name": type(model).__name__,
            "config": model.get_config(), "weights": entries, "compile": None,
            "optimizer_state": None}
    meta["random"] = {"seed": model.seed, "streams": model._rng_states()}
    meta["class_names"] = getattr(model, "class_names", None)   # label order, set by the CLI
    if train_state is not None:
        meta["train_state"] = train_state
    if model.compiled:
        meta["compile"] = {"loss": model.loss, "metrics": list(model.metrics),
                           "optimizer": optimizers_mod.serialize(model.optimizer)}
        state = _optimizer_state(model) if include_optimizer else None
        if state is not None:
            iterations, arrays_o = state
            o_entries = []
            for k, s in enumerate(arrays_o):
                key = f"o{k:04d}"
                s = np.ascontiguousarray(s, np.float32)
                arrays[key] = s
                o_entries.append({"key": key, "shape": list(s.shape), "sha256": _digest(s)})
            meta["optimizer_state"] = {"iterations": iterations, "arrays": o_entries}
    arrays[META] = _meta_array(meta)
    atomic_write(filepath, arrays)


def _optimizer_state(model):
    pending = getattr(model, "_pending_optimizer_state", None)
    if model.optimizer is not None and model.optimizer.built:
        return model.optimizer.iterations, model.optimizer.get_state()
    if pending is not None:
        return pending[1], pending[0]
    return None


def save_weights(model, filepath):
    """Save only the weights (with the architecture for checking) to `filepath`."""
    model._require_built("save weights")
    arrays, entries = _weight_entries(model)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "weights",
            "fastconv_version": __version__, "class_name": type(model).__name__,
            "config": model.get_config(), "weights": entries}
    arrays[META] = _meta_array(meta)
    atomic_write(filepath, arrays)


# --------------------------------------------------------------------------- reading

def _fail(path, why):
    raise ModelFileError(f"{path}: {why}")


def _read(path):
    """(path, meta dict, members) from a fastconv file, or ModelFileError.

    members maps each entry name to its zipfile.ZipInfo; nothing but the metadata
    is inflated here. Sizes are checked first: the file must declare only known
    entries, inflate to at most MAX_INFLATION times its size (plus SIZE_SLACK) and
    hold at most MAX_META_BYTES of metadata."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model file")
    if os.path.isdir(path):
        _fail(path, "is a folder, not a fastconv model file")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        _fail(path, "is empty (a truncated save?), not a fastconv model file")
    if head.startswith(b"\x80"):
        _fail(path, "holds pickled data; fastconv model files never contain pickles and "
                    "are read with allow_pickle=False")
    if head.startswith(b"\x93NUMPY"):
        _fail(path, "holds a single .npy array, not a fastconv model file")
    if not head.startswith(b"PK\x03\x04"):
        _fail(path, f"not a fastconv model file (it starts with {head!r}, not a .npz zip)")
    try:
        zf = zipfile.ZipFile(path)
    except _READ_ERRORS as exc:
        _fail(path, f"not a fastconv model file, or truncated/damaged ({type(exc).__name__}: "
                    f"{exc})")
    try:
        members = _members(path, zf)
        try:
            meta = _read_meta(path, zf, members.pop(META))
        except ModelFileError:
            raise
        except _READ_ERRORS as exc:
            _fail(path, f"truncated or damaged: entry '{META}' cannot be read "
                        f"({type(exc).__name__}: {exc})")
        _check_meta(path, meta)
    except BaseException:
        zf.close()
        raise
    return path, meta, (zf, members)


def _check_meta(path, meta):
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        _fail(path, "not a fastconv model file (its metadata names another format)")
    if meta.get("format_version") != FORMAT_VERSION:
        _fail(path, f"format version {meta.get('format_version')!r} is not supported by "
                    f"fastconv {__version__} (it reads version {FORMAT_VERSION})")
    if meta.get("class_name") != "Sequential":
        _fail(path, f"holds a model of type {meta.get('class_name')!r}; fastconv loads "
                    f"Sequential models")
    if not isinstance(meta.get("weights"), list) or not isinstance(meta.get("config"), dict):
        _fail(path, "its metadata lacks the weight list or the model config")


def _members(path, zf):
    """Entry name -> ZipInfo, after the checks on names and declared sizes."""
    infos = zf.infolist()
    names = [i.filename[:-4] if i.filename.endswith(".npy") else i.filename for i in infos]
    if META not in names:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        hint = " (it looks like a Keras .keras archive)" if "config.json" in names else ""
        _fail(path, f"not a fastconv model file{hint}: it has no '{META}' entry "
                    f"(entries: {shown or 'none'})")
    members = {}
    for name, info in zip(names, infos):
        if not _MEMBER.match(info.filename):
            _fail(path, f"holds an unknown entry {info.filename!r}; fastconv files hold only "
                        f"'{META}', w0000.., o0000.. (.npy)")
        if name in members:
            _fail(path, f"holds entry {name!r} twice")
        members[name] = info
    size = os.path.getsize(path)
    declared = sum(i.file_size for i in infos)
    if declared > MAX_INFLATION * size + SIZE_SLACK:
        _fail(path, f"its entries would inflate to {declared:,} bytes, more than "
                    f"{MAX_INFLATION}x the file's {size:,} bytes: refusing to read it "
                    f"(a zip bomb, or a damaged file)")
    meta = members[META]
    if meta.file_size > MAX_META_BYTES:
        _fail(path, f"its '{META}' entry declares {meta.file_size:,} bytes, more than the "
                    f"{MAX_META_BYTES:,} bytes a model's metadata may take")
    return members


def _header(path, zf, info, name):
    """(dtype, shape, header bytes) of a .npy entry, reading only its header."""
    with zf.open(info) as fp:
        try:
            version = np.lib.format.read_magic(fp)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(fp, max_header_size=_MAX_NPY_HEADER)
        except ValueError as exc:
            _fail(path, f"entry '{name}' is damaged (its .npy header: {exc})")
        return dtype, tuple(shape), fp.tell()


def _read_entry(path, zf, info, name, dtype, shape):
    """The array of entry `name` once its header says `dtype` and `shape` and its declared
    size is exactly what they need (so inflating it allocates nothing unexpected)."""
    got_dtype, got_shape, offset = _header(path, zf, info, name)
    if got_dtype.hasobject:
        _fail(path, f"entry '{name}' holds pickled data (an object array); "
                    f"fastconv never loads pickles")
    if got_dtype != dtype:
        _fail(path, f"entry '{name}' has dtype {got_dtype}, expected {dtype}")
    if got_shape != shape:
        _fail(path, f"entry '{name}' has shape {got_shape} but the metadata says {shape}")
    need = offset + math.prod(shape) * dtype.itemsize
    if info.file_size != need:
        _fail(path, f"entry '{name}' declares {info.file_size:,} bytes but its shape {shape} "
                    f"needs {need:,}: the file was modified or damaged")
    with zf.open(info) as fp:
        return np.lib.format.read_array(fp, allow_pickle=False,
                                        max_header_size=_MAX_NPY_HEADER)


def _read_meta(path, zf, info):
    dtype, shape, _ = _header(path, zf, info, META)
    if dtype != np.uint8 or len(shape) != 1:
        _fail(path, f"'{META}' must be a uint8 vector of JSON, found {dtype} {shape}")
    raw = _read_entry(path, zf, info, META, np.dtype(np.uint8), shape)
    try:
        return json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(path, f"'{META}' is not valid JSON ({exc}); the file was modified or damaged")


def _checked_array(path, entries, entry, what):
    """The float32 array of one metadata entry: header, size, SHA-256 and values checked
    (entries: the open (ZipFile, name -> ZipInfo) of the file)."""
    zf, members = entries
    try:
        key, shape, digest = entry["key"], tuple(entry["shape"]), entry["sha256"]
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise TypeError
    except (KeyError, TypeError):
        _fail(path, f"metadata entry of {what} is malformed: {entry!r:.100}")
    if key not in members:
        _fail(path, f"{what} entry '{key}' is missing: the file is truncated or was modified")
    try:
        a = _read_entry(path, zf, members[key], key, np.dtype(np.float32), shape)
    except ModelFileError as exc:
        if "expected float32" in str(exc):
            _fail(path, f"{what} {str(exc)[len(path) + 2:]}")
        raise
    except _READ_ERRORS as exc:
        _fail(path, f"truncated or damaged: entry '{key}' cannot be read "
                    f"({type(exc).__name__}: {exc})")
    if _digest(a) != digest:
        _fail(path, f"{what} entry '{key}' does not match its SHA-256: the file was modified "
                    f"or damaged")
    bad = a.size - int(np.count_nonzero(np.isfinite(a)))
    if bad:
        _fail(path, f"{what} (entry '{key}', shape {shape}) holds {bad} non-finite value(s) "
                    f"(NaN or inf); a model with them predicts NaN, so it is not loaded")
    return a


def _what(entry):
    return (f"weight {entry.get('layer', '?')}/{entry.get('name', '?')}"
            if isinstance(entry, dict) else "weight")


def _weights_from(path, meta, entries):
    return [_checked_array(path, entries, entry, _what(entry)) for entry in meta["weights"]]


def _entry_shape(entry):
    try:
        return tuple(entry["shape"])
    except (KeyError, TypeError):
        return None


def _check_shapes(path, expected, meta, model_name):
    """Compare the metadata's weight shapes with `expected` [(layer, weight, shape)], before
    any weight is read or allocated."""
    entries = meta["weights"]
    if len(expected) != len(entries):
        _fail(path, f"holds {len(entries)} weight arrays but model '{model_name}' has "
                    f"{len(expected)}: it was saved from another architecture")
    for (lname, wname, shape), entry in zip(expected, entries):
        if _entry_shape(entry) != shape:
            what = _what(entry)
            _fail(path, f"{what} has shape {_entry_shape(entry)} but layer '{lname}' {wname} "
                        f"expects {shape}: it was saved from another architecture")


def _planned(path, config):
    """[(layer name, weight name, shape)] that Sequential.from_config(config) would allocate,
    computed without allocating anything (a config can declare Dense(3e9))."""
    from .. import layers as L
    try:
        layers = [L.deserialize(spec) for spec in config["layers"]]
        shape = config.get("input_shape")
        shape = None if shape is None else (None,) + tuple(shape)
        out = []
        for k, layer in enumerate(layers):
            if isinstance(layer, L.InputLayer):
                shape = (None,) + layer.shape
                continue
            if shape is None and layer.input_shape_arg is not None:
                shape = (None,) + layer.input_shape_arg
            if shape is None:
                return None         # an unbuilt model: from_config allocates nothing
            name = layer.name or f"{layer.prefix} (layer {k})"
            out += [(name, wname, s) for wname, s in
                    zip(layer.weight_names, layer.weight_shapes_for(shape))]
            shape = layer.compute_output_shape(shape)
    except (ValueError, TypeError, KeyError, L.LayerError) as exc:
        _fail(path, f"its architecture cannot be rebuilt: {exc}")
    return out


def _check_planned(path, meta):
    planned = _planned(path, meta["config"])
    if planned is None:
        return
    need = 4 * sum(math.prod(s) for _, _, s in planned)
    size = os.path.getsize(path)
    if need > MAX_INFLATION * size + SIZE_SLACK:    # the file must hold its weights
        _fail(path, f"its config declares {need // 4:,} parameters ({need:,} bytes of "
                    f"float32) but the file is only {size:,} bytes: it was modified or damaged")
    _check_shapes(path, planned, meta, meta["config"].get("name") or "sequential")


def _assign(path, model, weights, meta):
    expected = [(layer.name, wname, tuple(w.shape)) for layer in model.layers
                for wname, w in zip(layer.weight_names, layer._weights)]
    _check_shapes(path, expected, meta, model.name)
    model.set_weights(weights)


def load_model(filepath, device="cpu", compile=True):
    """The Sequential saved in `filepath`, on `device`, compiled as it was saved
    (with its optimizer state when saved). Never unpickles anything.

    Everything the file declares (entry sizes, the config's weight shapes) is
    checked before the model is built or a weight is read; NaN or inf weights or
    optimizer state are refused, naming the weight."""
    path, meta, entries = _read(filepath)
    try:
        return _load_model(path, meta, entries, device, compile)
    finally:
        entries[0].close()


def _load_model(path, meta, entries, device, compile):
    from .. import layers as L
    from .sequential import Sequential
    if meta.get("kind") != "model":
        _fail(path, f"holds only weights (kind {meta.get('kind')!r}); build the model and call "
                    f"model.load_weights() instead")
    _check_planned(path, meta)
    weights = _weights_from(path, meta, entries)
    try:
        model = Sequential.from_config(meta["config"], device=device)
    except (ValueError, TypeError, KeyError, L.LayerError) as exc:
        _fail(path, f"its architecture cannot be rebuilt: {exc}")
    _assign(path, model, weights, meta)
    names = meta.get("class_names")
    model.class_names = [str(n) for n in names] if isinstance(names, list) else None
    rnd = meta.get("random")
    if isinstance(rnd, dict):
        try:
            model._set_rng_states(rnd["seed"], rnd["streams"])
        except (KeyError, TypeError, ValueError) as exc:
            _fail(path, f"its random-generator state is invalid: {exc}")
    comp = meta.get("compile")
    if compile and comp:
        try:
            model.compile(optimizer=optimizers_mod.get(comp["optimizer"]), loss=comp["loss"],
                          metrics=comp.get("metrics") or None)
        except (ValueError, TypeError, KeyError) as exc:
            _fail(path, f"its compile settings are invalid: {exc}")
        state = meta.get("optimizer_state")
        if state:
            listed = state.get("arrays", []) if isinstance(state, dict) else None
            want = len(model._params()) * len(model.optimizer.state_names)
            if not isinstance(listed, list) or len(listed) != want:
                _fail(path, f"holds {len(listed) if isinstance(listed, list) else 'no'} "
                            f"optimizer state arrays, the optimizer needs {want}")
            arrays_o = [_checked_array(path, entries, e, f"optimizer state {k}")
                        for k, e in enumerate(listed)]
            model._pending_optimizer_state = ([np.array(a) for a in arrays_o],
                                              int(state.get("iterations", 0)))
    return model


def load_weights(model, filepath):
    """Load weights into `model` (same architecture) from a file written by
    save_weights() or save(), or from a Keras HDF5 weights file (Keras 2
    `save_weights` or Keras 3 `.weights.h5`; needs h5py, fastconv[keras]).
    Shapes are compared before any weight is read; NaN or inf weights are refused."""
    from . import keras_weights
    if os.path.isfile(filepath) and keras_weights.is_hdf5(filepath):
        return keras_weights.load_into(model, filepath)
    path, meta, entries = _read(filepath)
    try:
        model._require_built("load weights")
        _assign_shapes = [(layer.name, wname, tuple(w.shape)) for layer in model.layers
                          for wname, w in zip(layer.weight_names, layer._weights)]
        _check_shapes(path, _assign_shapes, meta, model.name)
        weights = _weights_from(path, meta, entries)
        _assign(path, model, weights, meta)
    finally:
        entries[0].close()


__all__ = ["save_model", "load_model", "save_weights", "load_weights", "ModelFileError",
           "atomic_write", "atomic_replace", "save_target", "NotRegularFileError"]

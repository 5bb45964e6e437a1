"""The model file format: one .npz (a zip of .npy arrays), and reading it with every check.

Entries:
  fastconv_meta   uint8 array of UTF-8 JSON: format, version, kind ('model' or
                  'weights'), class_name, config, compile settings, and for every
                  weight its entry, layer, name, shape and SHA-256
  w0000, w0001..  weights in Keras order (layer by layer, kernel then bias), float32
  o0000, o0001..  optimizer state arrays (parameter-major), float32

Reading uses allow_pickle=False and checks before it allocates: known entries only,
declared sizes bounded by the file's size, every array's header, size, SHA-256 and
values; a truncated, foreign or tampered file raises ModelFileError naming the file.
Writing and loading models is fastconv.models.saving.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import zipfile
import zlib

import numpy as np

from .._version import __version__
from .model import loadable_names, model_class

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


def array_digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def fail(path, why):
    raise ModelFileError(f"{path}: {why}")


def read_file(path):
    """(path, meta dict, members) from a fastconv file, or ModelFileError.

    members maps each entry name to its zipfile.ZipInfo; nothing but the metadata
    is inflated here. Sizes are checked first: the file must declare only known
    entries, inflate to at most MAX_INFLATION times its size (plus SIZE_SLACK) and
    hold at most MAX_META_BYTES of metadata."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model file")
    if os.path.isdir(path):
        fail(path, "is a folder, not a fastconv model file")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        fail(path, "is empty (a truncated save?), not a fastconv model file")
    if head.startswith(b"\x80"):
        fail(path, "holds pickled data; fastconv model files never contain pickles and "
                   "are read with allow_pickle=False")
    if head.startswith(b"\x93NUMPY"):
        fail(path, "holds a single .npy array, not a fastconv model file")
    if not head.startswith(b"PK\x03\x04"):
        fail(path, f"not a fastconv model file (it starts with {head!r}, not a .npz zip)")
    try:
        zf = zipfile.ZipFile(path)
    except _READ_ERRORS as exc:
        fail(path, f"not a fastconv model file, or truncated/damaged ({type(exc).__name__}: "
                   f"{exc})")
    try:
        members = _members(path, zf)
        try:
            meta = _read_meta(path, zf, members.pop(META))
        except ModelFileError:
            raise
        except _READ_ERRORS as exc:
            fail(path, f"truncated or damaged: entry '{META}' cannot be read "
                       f"({type(exc).__name__}: {exc})")
        _check_meta(path, meta)
    except BaseException:
        zf.close()
        raise
    return path, meta, (zf, members)


def _check_meta(path, meta):
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fail(path, "not a fastconv model file (its metadata names another format)")
    if meta.get("format_version") != FORMAT_VERSION:
        fail(path, f"format version {meta.get('format_version')!r} is not supported by "
                   f"fastconv {__version__} (it reads version {FORMAT_VERSION})")
    if model_class(meta.get("class_name")) is None:
        fail(path, f"holds a model of type {meta.get('class_name')!r}; fastconv loads "
                   f"{' and '.join(loadable_names())} models")
    if not isinstance(meta.get("weights"), list) or not isinstance(meta.get("config"), dict):
        fail(path, "its metadata lacks the weight list or the model config")


def _members(path, zf):
    """Entry name -> ZipInfo, after the checks on names and declared sizes."""
    infos = zf.infolist()
    names = [i.filename[:-4] if i.filename.endswith(".npy") else i.filename for i in infos]
    if META not in names:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        hint = " (it looks like a Keras .keras archive)" if "config.json" in names else ""
        fail(path, f"not a fastconv model file{hint}: it has no '{META}' entry "
                   f"(entries: {shown or 'none'})")
    members = {}
    for name, info in zip(names, infos):
        if not _MEMBER.match(info.filename):
            fail(path, f"holds an unknown entry {info.filename!r}; fastconv files hold only "
                       f"'{META}', w0000.., o0000.. (.npy)")
        if name in members:
            fail(path, f"holds entry {name!r} twice")
        members[name] = info
    size = os.path.getsize(path)
    declared = sum(i.file_size for i in infos)
    if declared > MAX_INFLATION * size + SIZE_SLACK:
        fail(path, f"its entries would inflate to {declared:,} bytes, more than "
                   f"{MAX_INFLATION}x the file's {size:,} bytes: refusing to read it "
                   f"(a zip bomb, or a damaged file)")
    meta = members[META]
    if meta.file_size > MAX_META_BYTES:
        fail(path, f"its '{META}' entry declares {meta.file_size:,} bytes, more than the "
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
            fail(path, f"entry '{name}' is damaged (its .npy header: {exc})")
        return dtype, tuple(shape), fp.tell()


def _read_entry(path, zf, info, name, dtype, shape):
    """The array of entry `name` once its header says `dtype` and `shape` and its declared
    size is exactly what they need (so inflating it allocates nothing unexpected)."""
    got_dtype, got_shape, offset = _header(path, zf, info, name)
    if got_dtype.hasobject:
        fail(path, f"entry '{name}' holds pickled data (an object array); "
                   f"fastconv never loads pickles")
    if got_dtype != dtype:
        fail(path, f"entry '{name}' has dtype {got_dtype}, expected {dtype}")
    if got_shape != shape:
        fail(path, f"entry '{name}' has shape {got_shape} but the metadata says {shape}")
    need = offset + math.prod(shape) * dtype.itemsize
    if info.file_size != need:
        fail(path, f"entry '{name}' declares {info.file_size:,} bytes but its shape {shape} "
                   f"needs {need:,}: the file was modified or damaged")
    with zf.open(info) as fp:
        return np.lib.format.read_array(fp, allow_pickle=False,
                                        max_header_size=_MAX_NPY_HEADER)


def meta_array(meta):
    return np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), np.uint8)


def _read_meta(path, zf, info):
    dtype, shape, _ = _header(path, zf, info, META)
    if dtype != np.uint8 or len(shape) != 1:
        fail(path, f"'{META}' must be a uint8 vector of JSON, found {dtype} {shape}")
    raw = _read_entry(path, zf, info, META, np.dtype(np.uint8), shape)
    try:
        return json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        fail(path, f"'{META}' is not valid JSON ({exc}); the file was modified or damaged")


def checked_array(path, entries, entry, what):
    """The float32 array of one metadata entry: header, size, SHA-256 and values checked
    (entries: the open (ZipFile, name -> ZipInfo) of the file)."""
    zf, members = entries
    try:
        key, shape, digest = entry["key"], tuple(entry["shape"]), entry["sha256"]
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise TypeError
    except (KeyError, TypeError):
        fail(path, f"metadata entry of {what} is malformed: {entry!r:.100}")
    if key not in members:
        fail(path, f"{what} entry '{key}' is missing: the file is truncated or was modified")
    try:
        a = _read_entry(path, zf, members[key], key, np.dtype(np.float32), shape)
    except ModelFileError as exc:
        if "expected float32" in str(exc):
            fail(path, f"{what} {str(exc)[len(path) + 2:]}")
        raise
    except _READ_ERRORS as exc:
        fail(path, f"truncated or damaged: entry '{key}' cannot be read "
                   f"({type(exc).__name__}: {exc})")
    if array_digest(a) != digest:
        fail(path, f"{what} entry '{key}' does not match its SHA-256: the file was modified "
                   f"or damaged")
    bad = a.size - int(np.count_nonzero(np.isfinite(a)))
    if bad:
        fail(path, f"{what} (entry '{key}', shape {shape}) holds {bad} non-finite value(s) "
                   f"(NaN or inf); a model with them predicts NaN, so it is not loaded")
    return a


def _what(entry):
    return (f"weight {entry.get('layer', '?')}/{entry.get('name', '?')}"
            if isinstance(entry, dict) else "weight")


def weight_arrays(path, meta, entries):
    return [checked_array(path, entries, entry, _what(entry)) for entry in meta["weights"]]


def _entry_shape(entry):
    try:
        return tuple(entry["shape"])
    except (KeyError, TypeError):
        return None


def check_shapes(path, expected, meta, model_name):
    """Compare the metadata's weight shapes with `expected` [(layer, weight, shape)], before
    any weight is read or allocated."""
    entries = meta["weights"]
    if len(expected) != len(entries):
        fail(path, f"holds {len(entries)} weight arrays but model '{model_name}' has "
                   f"{len(expected)}: it was saved from another architecture")
    for (lname, wname, shape), entry in zip(expected, entries):
        if _entry_shape(entry) != shape:
            what = _what(entry)
            fail(path, f"{what} has shape {_entry_shape(entry)} but layer '{lname}' {wname} "
                       f"expects {shape}: it was saved from another architecture")


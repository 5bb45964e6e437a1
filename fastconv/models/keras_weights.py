"""Reading Keras HDF5 weight files (Keras 2 `save_weights` and Keras 3 `.weights.h5`).

Our layouts are Keras's (conv kernels (KH, KW, C_in, C_out), dense kernels
(in, out), channels-last flatten order), so the arrays load without
transposes. What differs between the two file formats is how the layers are
listed:

- Keras 2 (`model.save_weights("w.h5")`): the root attribute `layer_names`
  lists every layer in model order; each layer group has a `weight_names`
  attribute (kernel first, then bias) naming datasets such as
  `conv2d_1/conv2d_1/kernel:0`.
- Keras 3 (`model.save_weights("w.weights.h5")`): `layers/<name>/vars/0, 1, ...`
  (kernel, bias). HDF5 lists groups alphabetically, not in model order, so
  layers are listed in creation order when the file tracks it, else by kind (a
  rank-4 first kernel is a convolution: Conv2D, DepthwiseConv2D or SeparableConv2D,
  told apart by their shapes; rank 2 a dense layer; vectors only a
  BatchNormalization) and, within a kind, by Keras's name suffix (`conv2d`,
  `conv2d_1`, `conv2d_2`, ...). Since custom layer names carry no order, `load_into`
  pairs each model layer with the first unused file layer of the same kind and the
  same weight shapes.

Hostile files: every dataset's dtype and declared size are checked before it
is read (strings are named as such; the weights together may declare at most
MAX_INFLATION times the file's size, see fastconv.models.file_format), and NaN or inf
weights are refused, naming the layer.
"""
from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np

from .file_format import MAX_INFLATION, SIZE_SLACK


class KerasLayer(NamedTuple):
    name: str
    weights: list      # numpy arrays, kernel first, then bias

    @property
    def kind(self):
        return _kind(self.weights)


class KerasWeightsError(ValueError):
    """A file that is not a readable Keras weights file, or does not fit the model."""


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading Keras .h5 weight files needs h5py: "
                          "pip install 'fastconv[keras]' (or pip install h5py)") from None
    return h5py


def is_hdf5(path):
    """True when `path` starts with the HDF5 signature (at offset 0, the common case)."""
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89HDF\r\n\x1a\n"


def _decode(names):
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in names]


def _attr_list(group, name):
    """A list attribute, reassembling Keras 2's chunked `name0`, `name1`, ... form."""
    if name in group.attrs:
        return _decode(group.attrs[name])
    out, k = [], 0
    while f"{name}{k}" in group.attrs:
        out.extend(_decode(group.attrs[f"{name}{k}"]))
        k += 1
    return out


def _describe_dtype(dtype):
    kinds = {"S": "strings", "U": "strings", "O": "objects (e.g. variable-length strings)",
             "i": "integers", "u": "integers", "b": "booleans", "c": "complex numbers",
             "V": "compound records"}
    return kinds.get(dtype.kind, f"dtype {dtype}")


def _check_dataset(path, lname, k, ds, expected=None):
    """Refuse a weight dataset that does not hold floats, before reading it."""
    dtype = ds.dtype
    if dtype.kind != "f":
        want = f"float32 of shape {expected}" if expected is not None else "float32 weights"
        raise KerasWeightsError(
            f"{path}: layer {lname!r} weight {k} holds {_describe_dtype(dtype)} (dtype "
            f"{dtype.str}, shape {tuple(ds.shape)}), expected {want}")


def _check_sizes(path, layers):
    """Refuse a file whose weight datasets declare more bytes than it can hold, before
    reading any (a small file can declare a huge, unallocated dataset)."""
    declared = sum(int(np.prod(ds.shape, dtype=object)) * 4 for _, dss in layers for ds in dss)
    size = os.path.getsize(path)
    if declared > MAX_INFLATION * size + SIZE_SLACK:
        raise KerasWeightsError(
            f"{path}: its weight datasets declare {declared:,} bytes of float32 but the file "
            f"is only {size:,} bytes: refusing to read them (damaged or hostile file)")


def _read_dataset(path, lname, k, ds):
    """A dataset as float32, refusing NaN and inf (they would predict NaN silently)."""
    a = np.asarray(ds, np.float32)
    bad = a.size - int(np.count_nonzero(np.isfinite(a)))
    if bad:
        raise KerasWeightsError(
            f"{path}: layer {lname!r} weight {k} (shape {a.shape}) holds {bad} non-finite "
            f"value(s) (NaN or inf); refusing to load it")
    return a


def _suffix(name):
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else 0


def read_keras_weights(path):
    """The weight-bearing layers of a Keras HDF5 weights file, as KerasLayer tuples.

    Raises FileNotFoundError, ImportError (no h5py) or KerasWeightsError (not
    HDF5, truncated, or not a Keras layout), each naming the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Keras weights file not found: {path}")
    if not is_hdf5(path):
        raise KerasWeightsError(f"{path} is not an HDF5 file (no HDF5 signature), so not a "
                                f"Keras .h5 weights file")
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            if "model_weights" in f:      # a whole-model Keras 2 file: weights live below
                f = f["model_weights"]
            listed = _list_layers(f, path)
            if listed is not None:
                return [KerasLayer(name, [_read_dataset(path, name, k, ds)
                                          for k, ds in enumerate(dss)])
                        for name, dss in _checked(path, listed[1])]
    except OSError as exc:
        raise KerasWeightsError(f"cannot read {path}: the HDF5 file is truncated or "
                                f"damaged ({exc})") from None
    raise KerasWeightsError(f"{path} is an HDF5 file but not a Keras weights file: it has "
                            f"neither a 'layer_names' attribute (Keras 2) nor a 'layers' "
                            f"group (Keras 3)")


def _list_layers(f, path):
    """(ordered, [(name, [h5py datasets])]) without reading any data, or None when
    `f` is no Keras layout. ordered: whether the file records its layer order."""
    if "layer_names" in f.attrs or "layer_names0" in f.attrs:
        return True, _read_keras2(f, path)
    if "layers" in f:
        group = f["layers"]
        tracked = bool(group.id.get_create_plist().get_link_creation_order())
        return tracked, _read_keras3(group, path, tracked)
    return None


def _checked(path, layers, expected=None):
    """`layers` after the dtype and size checks (expected: the model's shapes, in order)."""
    for i, (name, dss) in enumerate(layers):
        for k, ds in enumerate(dss):
            want = None
            if expected is not None and i < len(expected) and k < len(expected[i]):
                want = expected[i][k]
            _check_dataset(path, name, k, ds, want)
    _check_sizes(path, layers)
    return layers


def _read_keras2(f, path):
    layers = []
    for name in _attr_list(f, "layer_names"):
        if name not in f:
            raise KerasWeightsError(f"{path}: layer {name!r} is listed but has no group")
        group = f[name]
        weight_names = _attr_list(group, "weight_names")
        if weight_names:
            try:
                layers.append((name, [group[w] for w in weight_names]))
            except KeyError as exc:
                raise KerasWeightsError(f"{path}: layer {name!r} lacks a weight it lists "
                                        f"({exc})") from None
    return layers


def _kind(datasets):
    """The family of a layer's weights (datasets or arrays): 'conv2d' when the first is a
    rank-4 kernel (Conv2D, DepthwiseConv2D, SeparableConv2D: their shapes tell them
    apart), 'dense' for a rank-2 one, 'batch_normalization' when all are vectors."""
    ranks = [d.ndim for d in datasets]
    if ranks and all(r == 1 for r in ranks) and 2 <= len(ranks) <= 4:
        return "batch_normalization"
    rank = ranks[0] if ranks else 0
    return {4: "conv2d", 2: "dense"}.get(rank, f"rank-{rank}")


def _read_keras3(group, path, tracked=False):
    layers = []
    for name in group:      # creation order when tracked, else alphabetical
        vars_ = group[name].get("vars")
        if vars_ is None or len(vars_) == 0:
            continue
        try:
            keys = sorted(vars_, key=int)
        except ValueError:
            raise KerasWeightsError(f"{path}: layer {name!r} has variables named "
                                    f"{sorted(vars_)!r:.100}, not 0, 1, ...") from None
        layers.append((name, [vars_[k] for k in keys]))
    if not tracked:
        order = {"conv2d": 0, "dense": 1}
        layers.sort(key=lambda layer: (order.get(_kind(layer[1]), 2), _suffix(layer[0]),
                                       layer[0]))
    return layers


_KINDS = {"Conv2D": "conv2d", "DepthwiseConv2D": "conv2d", "SeparableConv2D": "conv2d",
          "Dense": "dense", "BatchNormalization": "batch_normalization"}


def load_into(model, path):
    """Load a Keras HDF5 weights file into a built fastconv model (Sequential or
    Functional: its weight-bearing layers in model order).

    Keras's rule for Sequential models: the weight-bearing layers of the file
    are matched with the model's in order. A Keras 3 file that does not record
    its layer order is matched by kind and shape instead: each model layer takes
    the first unused file layer of its kind whose weight shapes equal its own
    (ties, i.e. layers of identical shapes, keep Keras's name-counter order).
    Every dtype, shape and declared size is checked before any data is read and
    every value is checked to be finite before anything is assigned; the first
    layer that differs is named in a KerasWeightsError.
    """
    model.require_built("load Keras weights")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Keras weights file not found: {path}")
    mine = [layer for layer in model.layers if layer.weight_shapes()]
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            if "model_weights" in f:
                f = f["model_weights"]
            listed = _list_layers(f, path)
            if listed is None:
                read_keras_weights(path)      # raises the not-a-Keras-file error
            ordered, layers = listed
            _checked(path, layers, [layer.weight_shapes() for layer in mine])
            if ordered:
                _check_fit(path, mine, layers)
            if len(layers) != len(mine):
                _count_error(path, mine, layers)
            if not ordered:
                layers = _match_by_shape(path, mine, layers)
            weights = [[_read_dataset(path, name, k, ds) for k, ds in enumerate(dss)]
                       for name, dss in layers]
    except OSError as exc:
        raise KerasWeightsError(f"cannot read {path}: the HDF5 file is truncated or "
                                f"damaged ({exc})") from None
    for layer, ws in zip(mine, weights):
        layer.set_weights(ws)


def _count_error(path, mine, layers):
    k = min(len(mine), len(layers))
    if k < len(mine):
        raise KerasWeightsError(
            f"{path} has {len(layers)} weight-bearing layers but the model has "
            f"{len(mine)}: nothing in the file for layer '{mine[k].name}' "
            f"({type(mine[k]).__name__})")
    raise KerasWeightsError(
        f"{path} has {len(layers)} weight-bearing layers but the model has "
        f"{len(mine)}: file layer '{layers[k][0]}' has no model layer")


def _want(layer):
    return _KINDS.get(type(layer).__name__, type(layer).__name__), layer.weight_shapes()


def _match_by_shape(path, mine, layers):
    """The file layers reordered to pair with `mine`: per model layer, the first unused
    file layer of the same kind and weight shapes. A model layer without one is named."""
    left = list(layers)
    out = []
    for layer in mine:
        kind, want = _want(layer)
        hit = next((fl for fl in left if _kind(fl[1]) == kind
                    and [tuple(ds.shape) for ds in fl[1]] == want), None)
        if hit is None:
            same = [f"'{n}' {[tuple(ds.shape) for ds in dss]}" for n, dss in left
                    if _kind(dss) == kind]
            raise KerasWeightsError(
                f"{path}: no file layer fits model layer '{layer.name}' "
                f"({type(layer).__name__}, weights {want}); its unused {kind} layers are "
                f"{', '.join(same) or 'none'}: the file was saved from another architecture")
        left.remove(hit)
        out.append(hit)
    return out


def _check_fit(path, mine, layers):
    for layer, (name, dss) in zip(mine, layers):
        kind, want = _want(layer)
        got = [tuple(ds.shape) for ds in dss]
        if kind != _kind(dss) or want != got:
            raise KerasWeightsError(
                f"{path}: file layer '{name}' ({_kind(dss)}, weights {got}) does not "
                f"fit model layer '{layer.name}' ({type(layer).__name__}, weights {want}); "
                f"the file was saved from another architecture")

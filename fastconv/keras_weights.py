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
  layers are ordered by kind (a rank-4 kernel is a convolution, rank 2 a dense
  layer) and, within a kind, by Keras's name suffix (`conv2d`, `conv2d_1`,
  `conv2d_2`, ...). `match_layers` then pairs them with the model's
  weight-bearing layers of the same kind in order.
"""
from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np


class KerasLayer(NamedTuple):
    name: str
    weights: list      # numpy arrays, kernel first, then bias

    @property
    def kind(self):
        rank = self.weights[0].ndim if self.weights else 0
        return {4: "conv2d", 2: "dense"}.get(rank, f"rank-{rank}")


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
            if "layer_names" in f.attrs or "layer_names0" in f.attrs:
                return _read_keras2(f, path)
            if "layers" in f:
                return _read_keras3(f["layers"], path)
    except OSError as exc:
        raise KerasWeightsError(f"cannot read {path}: the HDF5 file is truncated or "
                                f"damaged ({exc})") from None
    raise KerasWeightsError(f"{path} is an HDF5 file but not a Keras weights file: it has "
                            f"neither a 'layer_names' attribute (Keras 2) nor a 'layers' "
                            f"group (Keras 3)")


def _read_keras2(f, path):
    layers = []
    for name in _attr_list(f, "layer_names"):
        if name not in f:
            raise KerasWeightsError(f"{path}: layer {name!r} is listed but has no group")
        group = f[name]
        weight_names = _attr_list(group, "weight_names")
        if weight_names:
            try:
                layers.append(KerasLayer(name, [np.asarray(group[w], np.float32)
                                                for w in weight_names]))
            except KeyError as exc:
                raise KerasWeightsError(f"{path}: layer {name!r} lacks a weight it lists "
                                        f"({exc})") from None
    return layers


def _read_keras3(group, path):
    layers = []
    for name in group:
        vars_ = group[name].get("vars")
        if vars_ is None or len(vars_) == 0:
            continue
        keys = sorted(vars_, key=int)
        layers.append(KerasLayer(name, [np.asarray(vars_[k], np.float32) for k in keys]))
    order = {"conv2d": 0, "dense": 1}
    layers.sort(key=lambda layer: (order.get(layer.kind, 2), _suffix(layer.name), layer.name))
    return layers


_KINDS = {"Conv2D": "conv2d", "Dense": "dense"}


def load_into(model, path):
    """Load a Keras HDF5 weights file into a built fastconv Sequential.

    Keras's rule for Sequential models: the weight-bearing layers of the file
    are matched with the model's in order. Every layer's kind, weight count and
    shapes are checked before anything is assigned; the first layer that
    differs is named in a KerasWeightsError.
    """
    model._require_built("load Keras weights")
    file_layers = read_keras_weights(path)
    mine = [layer for layer in model.layers if layer._weights]
    path = os.fspath(path)
    for k in range(max(len(mine), len(file_layers))):
        if k >= len(file_layers):
            raise KerasWeightsError(
                f"{path} has {len(file_layers)} weight-bearing layers but the model has "
                f"{len(mine)}: nothing in the file for layer '{mine[k].name}' "
                f"({type(mine[k]).__name__})")
        if k >= len(mine):
            raise KerasWeightsError(
                f"{path} has {len(file_layers)} weight-bearing layers but the model has "
                f"{len(mine)}: file layer '{file_layers[k].name}' has no model layer")
        layer, theirs = mine[k], file_layers[k]
        want_kind = _KINDS.get(type(layer).__name__, type(layer).__name__)
        want = [tuple(w.shape) for w in layer._weights]
        got = [tuple(w.shape) for w in theirs.weights]
        if want_kind != theirs.kind or want != got:
            raise KerasWeightsError(
                f"{path}: file layer '{theirs.name}' ({theirs.kind}, weights {got}) does not "
                f"fit model layer '{layer.name}' ({type(layer).__name__}, weights {want}); "
                f"the file was saved from another architecture")
    for layer, theirs in zip(mine, file_layers):
        layer.set_weights(theirs.weights)

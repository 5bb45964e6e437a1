"""Saving and loading models: model.save / fastconv.load_model, save_weights / load_weights.

A model file holds the architecture as JSON, the weights and, optionally, the
optimizer and generator state (the format and its checks: models.file_format).
Writing is atomic (fastconv._files.atomic_replace): the file is written to a
temporary file in the same folder, flushed to disk and renamed over the target, so
an interrupted save leaves the previous file intact. Loading checks everything the
file declares before the model is built or a weight is read. Weights are stored on
the host, so a model saved on cuda loads on cpu and back.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .. import layers as L
from .. import losses as losses_mod
from .. import optimizers as optimizers_mod
from .._files import atomic_replace
from .._version import __version__
from . import keras_weights
from .file_format import (FORMAT, FORMAT_VERSION, MAX_INFLATION, META, SIZE_SLACK,
                          array_digest, check_shapes, checked_array, fail, meta_array,
                          read_file, weight_arrays)
from .model import locked, model_class


class FileMethods:
    """model.save / save_weights / load_weights, for the Model subclasses (mixed in
    before Model: class Sequential(Trainer, FileMethods, Model))."""

    @locked
    def save(self, filepath, include_optimizer=True):
        """Write the architecture, weights and (optionally) optimizer state to one
        .npz file, atomically. Load with fastconv.load_model. A path ending in .keras
        writes a Keras 3 .keras file instead, one ending in .h5 a Keras 2 full-model
        HDF5 file (models.keras_file; the .h5 keeps no optimizer state)."""
        if os.fspath(filepath).endswith(".keras"):
            from .keras_file import save_keras
            save_keras(self, filepath)
            return
        if os.fspath(filepath).endswith(".h5"):
            from .keras_file import save_keras2_h5
            save_keras2_h5(self, filepath)
            return
        save_model(self, filepath, include_optimizer=include_optimizer)

    @locked
    def save_weights(self, filepath):
        save_weights(self, filepath)

    @locked
    def load_weights(self, filepath):
        load_weights(self, filepath)

    @locked
    def export_onnx(self, filepath, opset=17, batch=None, nchw=False):
        """Write the model in inference mode as an ONNX graph (models.onnx_export):
        NHWC input as fastconv takes it (NCHW with nchw=True), a dynamic batch
        dimension unless `batch` is given. Atomic, like save."""
        from .onnx_export import export_onnx
        return export_onnx(self, filepath, opset=opset, batch=batch, nchw=nchw)

# --------------------------------------------------------------------------- writing

def _write_arrays(fileobj, arrays):
    """Write `arrays` (name -> ndarray) as an uncompressed .npz into the open file."""
    np.savez(fileobj, **arrays)


def atomic_write(path, arrays):
    """Write the .npz to a temporary file next to `path`, fsync it, then os.replace."""
    atomic_replace(path, lambda f: _write_arrays(f, arrays))


def _weight_entries(model):
    arrays, entries = {}, []
    k = 0
    for layer in model.layers:
        for wname, w in zip(layer.weight_names, layer.get_weights()):
            key = f"w{k:04d}"
            w = np.ascontiguousarray(w, np.float32)
            arrays[key] = w
            entries.append({"key": key, "layer": layer.name, "name": wname,
                            "shape": list(w.shape), "sha256": array_digest(w)})
            k += 1
    return arrays, entries


def save_model(model, filepath, include_optimizer=True, train_state=None):
    """Save architecture, weights and (include_optimizer) optimizer state to `filepath`.
    `train_state` (a JSON-able dict, e.g. the CLI's epochs done and history) is stored in
    the metadata under 'train_state', so that a checkpoint and the state it belongs to
    are one file, replaced by one rename: no kill can leave them out of step."""
    model.require_built("save")
    arrays, entries = _weight_entries(model)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "model",
            "fastconv_version": __version__, "class_name": type(model).__name__,
            "config": model.get_config(), "weights": entries, "compile": None,
            "optimizer_state": None}
    meta["random"] = {"seed": model.seed, "streams": model.rng_states()}
    meta["class_names"] = getattr(model, "class_names", None)   # label order, set by the CLI
    if train_state is not None:
        meta["train_state"] = train_state
    if model.compiled:
        meta["compile"] = {"loss": losses_mod.serialize(model._loss), "metrics": list(model.metrics),
                           "optimizer": optimizers_mod.serialize(model.optimizer)}
        state = model.optimizer_state() if include_optimizer else None
        if state is not None:
            iterations, arrays_o = state
            o_entries = []
            for k, s in enumerate(arrays_o):
                key = f"o{k:04d}"
                s = np.ascontiguousarray(s, np.float32)
                arrays[key] = s
                o_entries.append({"key": key, "shape": list(s.shape), "sha256": array_digest(s)})
            meta["optimizer_state"] = {"iterations": iterations, "arrays": o_entries}
    arrays[META] = meta_array(meta)
    atomic_write(filepath, arrays)


def save_weights(model, filepath):
    """Save only the weights (with the architecture for checking) to `filepath`."""
    model.require_built("save weights")
    arrays, entries = _weight_entries(model)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "weights",
            "fastconv_version": __version__, "class_name": type(model).__name__,
            "config": model.get_config(), "weights": entries}
    arrays[META] = meta_array(meta)
    atomic_write(filepath, arrays)


# --------------------------------------------------------------------------- reading

def _planned(path, cls, config):
    """cls.planned_weights(config): what from_config would allocate, or ModelFileError."""
    try:
        return cls.planned_weights(config)
    except (ValueError, TypeError, KeyError, L.LayerError) as exc:
        fail(path, f"its architecture cannot be rebuilt: {exc}")


def _check_planned(path, cls, meta):
    planned = _planned(path, cls, meta["config"])
    if planned is None:
        return
    need = 4 * sum(math.prod(s) for _, _, s in planned)
    size = os.path.getsize(path)
    if need > MAX_INFLATION * size + SIZE_SLACK:    # the file must hold its weights
        fail(path, f"its config declares {need // 4:,} parameters ({need:,} bytes of "
                   f"float32) but the file is only {size:,} bytes: it was modified or damaged")
    check_shapes(path, planned, meta, meta["config"].get("name") or cls.default_name)


def _assign(path, model, weights, meta):
    check_shapes(path, model.weight_specs(), meta, model.name)
    model.set_weights(weights)


def load_model(filepath, device="cpu", compile=True):
    """The model (a Sequential) saved in `filepath`, on `device`, compiled as it was saved
    (with its optimizer state when saved). Never unpickles anything.

    Everything the file declares (entry sizes, the config's weight shapes) is
    checked before the model is built or a weight is read; NaN or inf weights or
    optimizer state are refused, naming the weight. A Keras 3 .keras file (a zip of
    config.json and model.weights.h5) and a Keras 2 full-model .h5 (model_config and
    model_weights) load through models.keras_file."""
    from .keras_file import is_keras2_model_file, is_keras_file, load_keras, load_keras2_h5
    if os.path.isfile(filepath) and is_keras_file(filepath):
        return load_keras(filepath, device=device, compile=compile)
    if is_keras2_model_file(filepath):
        return load_keras2_h5(filepath, device=device, compile=compile)
    path, meta, entries = read_file(filepath)
    try:
        return _load_model(path, meta, entries, device, compile)
    finally:
        entries[0].close()


def _load_model(path, meta, entries, device, compile):
    cls = model_class(meta["class_name"])       # read_file checked that it is loadable
    if meta.get("kind") != "model":
        fail(path, f"holds only weights (kind {meta.get('kind')!r}); build the model and call "
                   f"model.load_weights() instead")
    _check_planned(path, cls, meta)
    weights = weight_arrays(path, meta, entries)
    try:
        model = cls.from_config(meta["config"], device=device)
    except (ValueError, TypeError, KeyError, L.LayerError) as exc:
        fail(path, f"its architecture cannot be rebuilt: {exc}")
    _assign(path, model, weights, meta)
    names = meta.get("class_names")
    model.class_names = [str(n) for n in names] if isinstance(names, list) else None
    rnd = meta.get("random")
    if isinstance(rnd, dict):
        try:
            model.set_rng_states(rnd["seed"], rnd["streams"])
        except (KeyError, TypeError, ValueError) as exc:
            fail(path, f"its random-generator state is invalid: {exc}")
    comp = meta.get("compile")
    if compile and comp:
        try:
            model.compile(optimizer=optimizers_mod.get(comp["optimizer"]), loss=comp["loss"],
                          metrics=comp.get("metrics") or None)
        except (ValueError, TypeError, KeyError) as exc:
            fail(path, f"its compile settings are invalid: {exc}")
        state = meta.get("optimizer_state")
        if state:
            listed = state.get("arrays", []) if isinstance(state, dict) else None
            want = len(model.trainable_weight_specs()) * len(model.optimizer.state_names)
            if not isinstance(listed, list) or len(listed) != want:
                fail(path, f"holds {len(listed) if isinstance(listed, list) else 'no'} "
                           f"optimizer state arrays, the optimizer needs {want}")
            arrays_o = [checked_array(path, entries, e, f"optimizer state {k}")
                        for k, e in enumerate(listed)]
            model.restore_optimizer_state([np.array(a) for a in arrays_o],
                                          int(state.get("iterations", 0)))
    return model


def load_weights(model, filepath):
    """Load weights into `model` (same architecture) from a file written by
    save_weights() or save(), or from a Keras HDF5 weights file (Keras 2
    `save_weights` or Keras 3 `.weights.h5`; needs h5py, fastconv[keras]).
    Shapes are compared before any weight is read; NaN or inf weights are refused."""
    if os.path.isfile(filepath) and keras_weights.is_hdf5(filepath):
        return keras_weights.load_into(model, filepath)
    path, meta, entries = read_file(filepath)
    try:
        model.require_built("load weights")
        check_shapes(path, model.weight_specs(), meta, model.name)
        weights = weight_arrays(path, meta, entries)
        _assign(path, model, weights, meta)
    finally:
        entries[0].close()


__all__ = ["save_model", "load_model", "save_weights", "load_weights", "atomic_write"]

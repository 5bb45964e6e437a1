"""Keras 3 `.keras` files, both ways: fastconv.load_model("m.keras") and
model.save("m.keras"), without Keras installed (h5py is needed: fastconv[keras]).

A .keras file is a zip of three members (stored, not compressed, by Keras):
    metadata.json      {"keras_version", "date_saved"}
    config.json        the model's config (keras_config.from_keras / to_keras) and its
                       compile_config (optimizer, loss, metrics)
    model.weights.h5   layers/<key>/vars/0, 1, ... per layer, variables in the layer's
                       own order (trainable first: kernel, bias; gamma, beta,
                       moving_mean, moving_variance); <key> is the layer's class name in
                       snake case with a counter per class, in model order (a Sequential
                       leaves its InputLayer out, a Functional model counts it)
Reading checks before it inflates or allocates: only those members (no others), each
member's declared size against a limit (the JSON members 64 MiB, the weights the bytes
the config's weights need plus slack), the architecture against fastconv's layers
(keras_config), then every weight's dtype and shape against the model's before any is
read, and that every value is finite. Writing is atomic (fastconv._files), like .fcm.
The optimizer's state is not written or read (Keras rebuilds an optimizer without it).
"""
from __future__ import annotations

import datetime
import inspect
import io
import json
import math
import os
import re
import warnings
import zipfile

import numpy as np

from .. import layers as L
from .. import losses as losses_mod
from .. import optimizers as optimizers_mod
from .._files import atomic_replace
from .._version import __version__
from . import keras_config
from .file_format import META, SIZE_SLACK
from .keras_weights import KerasWeightsError, _check_dataset, _h5py, _read_dataset
from .model import model_class

MEMBERS = ("metadata.json", "config.json", "model.weights.h5")
JSON_LIMIT = 64 << 20
FORMAT_KERAS_VERSION = "3.0.0"      # the file layout written: Keras 3's saving_lib


class KerasFileError(KerasWeightsError):
    """A .keras file that is not readable, or holds what fastconv cannot load."""


def is_keras_file(path):
    """True for a zip holding config.json and no fastconv metadata (a .keras file, maybe
    an incomplete one: load_keras says what it lacks)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return "config.json" in names and not any(n.startswith(META) for n in names)


def snake_case(name):
    """Keras's naming.to_snake_case: 'MaxPooling2D' -> 'max_pooling2d'."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def weight_keys(layers):
    """The model.weights.h5 group under layers/ of each layer, as Keras names them."""
    used, keys = {}, []
    for layer in layers:
        key = snake_case(layer if isinstance(layer, str) else type(layer).__name__)
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        keys.append(key)
    return keys


# --------------------------------------------------------------------------- reading

def _fail(path, text):
    raise KerasFileError(f"{path}: {text}")


def _members(path, zf):
    infos = {}
    for info in zf.infolist():
        if info.is_dir() and info.filename.rstrip("/") == "assets" and info.file_size == 0:
            continue
        if info.filename not in MEMBERS:
            _fail(path, f"holds an unknown member {info.filename!r:.80}: a Keras .keras file "
                        f"holds only {', '.join(MEMBERS)} (fastconv loads no assets or code)")
        if info.filename in infos:
            _fail(path, f"holds member {info.filename!r} twice")
        infos[info.filename] = info
    missing = [m for m in MEMBERS[1:] if m not in infos]
    if missing:
        _fail(path, f"lacks {' and '.join(missing)}: not a complete .keras file")
    return infos


def _read_member(path, zf, info, limit):
    """The member's bytes, refusing one that declares (or inflates to) more than limit."""
    if info.file_size > limit:
        _fail(path, f"member {info.filename} declares {info.file_size:,} bytes, more than "
                    f"the {limit:,} it can legitimately need: refusing to inflate it")
    with zf.open(info) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        _fail(path, f"member {info.filename} inflates past {limit:,} bytes")
    return data


def _json(path, data, member):
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(path, f"{member} is not valid JSON ({exc})")


def _weights_from_h5(path, data, cls_name, layers, planned):
    """Host arrays in model order, every dtype, shape and value checked."""
    h5py = _h5py()
    counted = layers if cls_name == "Functional" else [s for s in layers
                                                  if s["class_name"] != "InputLayer"]
    keys = weight_keys([s["class_name"] for s in counted])
    names = [s["config"]["name"] for s in counted]
    by_layer = {}
    for lname, wname, shape in planned:
        by_layer.setdefault(lname, []).append((wname, tuple(shape)))
    try:
        f = h5py.File(io.BytesIO(data), "r")
    except OSError as exc:
        _fail(path, f"model.weights.h5 is not a readable HDF5 file ({exc})")
    with f:
        group = f.get("layers")
        if group is None:
            _fail(path, "model.weights.h5 has no 'layers' group")
        extra = sorted(set(group) - set(keys))
        if extra:
            _fail(path, f"model.weights.h5 holds weights for layers the config does not "
                        f"have: {', '.join(extra)[:200]}")
        datasets = []
        for key, lname in zip(keys, names):
            want = by_layer.get(lname, [])
            vars_ = group[key].get("vars") if key in group else None
            have = _numbered(vars_) if vars_ else []
            if have != [str(k) for k in range(len(want))]:
                _fail(path, f"layer {lname!r} (weights group layers/{key}) holds variables "
                            f"{have[:8]}, the config makes it {len(want)} "
                            f"({', '.join(w for w, _ in want) or 'none'})")
            for k, (wname, shape) in enumerate(want):
                ds = vars_[str(k)]
                _check_dataset(path, lname, k, ds, shape)
                if tuple(ds.shape) != shape:
                    _fail(path, f"layer {lname!r} {wname} has shape {tuple(ds.shape)}, the "
                                f"config makes it {shape}")
                datasets.append((lname, k, ds))
        weights = [_read_dataset(path, lname, k, ds) for lname, k, ds in datasets]
        opt_vars = f.get("optimizer/vars")
        opt_arrays = [opt_vars[k] for k in _numbered(opt_vars)] if opt_vars is not None else []
        # read now (the file closes); each at most the largest weight's size
        largest = max([math.prod(s) for _, _, s in planned] + [1])
        if not all(ds.dtype.kind in "fiu" and math.prod(ds.shape) <= largest
                   for ds in opt_arrays):
            return weights, []
        return weights, [(tuple(ds.shape), ds.dtype.kind, np.asarray(ds)) for ds in opt_arrays]


def _numbered(group):
    """The member names 0, 1, ... of an h5 group in numeric order (others first)."""
    return sorted(group, key=lambda k: int(k) if k.isdigit() else -1)


def _optimizer(cc_opt, notes):
    """A fastconv optimizer for Keras's serialized one, or None (with a note)."""
    if not isinstance(cc_opt, dict):
        if isinstance(cc_opt, str):
            return optimizers_mod.get(cc_opt)
        notes.append(f"optimizer {cc_opt!r:.80} not understood")
        return None
    name = str(cc_opt.get("class_name")).split(">")[-1]     # Keras 2: 'Custom>RMSprop'
    cls = {c.__name__: c for c in (optimizers_mod.SGD, optimizers_mod.RMSprop,
                                   optimizers_mod.Adam, optimizers_mod.AdamW)}.get(name)
    if cls is None:
        notes.append(f"optimizer {name!r} is not one of fastconv's (SGD, RMSprop, Adam, AdamW)")
        return None
    params = set(inspect.signature(cls.__init__).parameters) - {"self", "lr"}
    defaults = {"name": None, "use_ema": False, "ema_momentum": None,
                "ema_overwrite_frequency": None, "loss_scale_factor": None,
                "gradient_accumulation_steps": None, "momentum": 0.0, "centered": False,
                "amsgrad": False, "decay": 0.0, "jit_compile": None,
                "is_legacy_optimizer": False}
    kwargs = {}
    config = cc_opt.get("config") or {}
    for arg, value in config.items():
        if arg in params:
            kwargs[arg] = value
        elif arg in ("name", "jit_compile") or (arg.startswith("ema_") and
                                                 not config.get("use_ema")):
            continue
        elif arg in defaults and value == defaults[arg]:
            continue
        else:
            notes.append(f"optimizer {name} argument {arg}={value!r:.60} is not supported")
            return None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        notes.append(f"optimizer {name}: {exc}")
        return None


_LOSSES = {"BinaryCrossentropy": "binary_crossentropy",
           "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
           "CategoricalCrossentropy": "categorical_crossentropy"}
_METRICS = ("accuracy", "acc", "binary_accuracy", "sparse_categorical_accuracy",
            "categorical_accuracy")


def _compile(model, cc, notes):
    """Compile `model` as the file's compile_config says, where it maps onto fastconv."""
    if not cc:
        return
    skipped = []
    opt = _optimizer(cc.get("optimizer"), skipped)
    loss = cc.get("loss")
    if isinstance(loss, dict):
        cfg = loss.get("config") or {}
        if cfg.get("from_logits"):
            skipped.append(f"loss {loss.get('class_name')} with from_logits")
            loss = None
        elif cfg.get("label_smoothing") and loss.get("class_name") in (
                "BinaryCrossentropy", "CategoricalCrossentropy"):
            loss = losses_mod.get({"class_name": loss["class_name"],
                                   "config": {"label_smoothing": cfg["label_smoothing"]}})
        elif cfg.get("label_smoothing"):
            skipped.append(f"loss {loss.get('class_name')} with label_smoothing")
            loss = None
        else:
            loss = _LOSSES.get(loss.get("class_name"))
    if not isinstance(loss, (str, losses_mod.LossSpec)):
        skipped.append(f"loss {cc.get('loss')!r:.80}")
    metrics = []
    listed = cc.get("metrics") or []
    if listed and all(isinstance(m, list) for m in listed):       # Keras 2: one list per output
        listed = [m for ms in listed for m in ms]
    for m in listed:
        if isinstance(m, dict):     # Keras 2: MeanMetricWrapper named 'accuracy'
            m = m.get("config", {}).get("name") if m.get("class_name") == "MeanMetricWrapper" \
                else m.get("class_name", "")
        if snake_case(str(m)) in _METRICS:
            metrics.append("accuracy")
        else:
            notes.append(f"metric {m!r:.60} is not one of fastconv's; left out")
    for key in ("loss_weights", "weighted_metrics"):
        if cc.get(key):
            notes.append(f"compile argument {key} is not supported; left out")
    if skipped or opt is None:
        notes.append("the model is not compiled: " + "; ".join(skipped or ["no optimizer"]))
        return
    try:
        model.compile(optimizer=opt, loss=loss, metrics=sorted(set(metrics)) or None)
    except ValueError as exc:
        notes.append(f"the model is not compiled: {exc}")


def _restore_optimizer(model, opt_state, notes):
    """The optimizer state of the file (see _write_optimizer), when it fits the model;
    a file of an optimizer never stepped (iterations and learning rate only) has none."""
    opt = model.optimizer
    specs = model.trainable_weight_specs()
    lead = 1 if isinstance(opt.get_config().get("learning_rate"), dict) else 2
    slots = opt_state[lead:]
    if len(opt_state) < lead or not slots:
        return
    want = [tuple(shape) for *_, shape in specs for _ in opt.state_names]
    if [s for s, _, _ in slots] != want or opt_state[0][0] != ():
        notes.append(f"its optimizer state ({len(opt_state)} variables) does not fit "
                     f"{type(opt).__name__} on this model; the optimizer starts fresh")
        return
    arrays = [np.asarray(a, np.float32) for _, _, a in slots]
    if not all(np.isfinite(a).all() for a in arrays):
        notes.append("its optimizer state holds NaN or inf; the optimizer starts fresh")
        return
    model.restore_optimizer_state(arrays, int(opt_state[0][2]))


def load_keras(filepath, device="cpu", compile=True):
    """The model of a Keras 3 .keras file on `device`; notes on what did not map (an
    initializer, a compile setting) are issued as warnings."""
    path = os.fspath(filepath)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        _fail(path, f"is not a readable zip file, so not a .keras file ({exc})")
    with zf:
        infos = _members(path, zf)
        config = _json(path, _read_member(path, zf, infos["config.json"], JSON_LIMIT),
                       "config.json")
        meta = {}
        if "metadata.json" in infos:
            meta = _json(path, _read_member(path, zf, infos["metadata.json"], JSON_LIMIT),
                         "metadata.json")
        cls_name, cls, fc_config, notes, planned = _architecture(path, config)
        need = 4 * sum(math.prod(s) for _, _, s in planned)
        data = _read_member(path, zf, infos["model.weights.h5"], 2 * need + SIZE_SLACK)
    weights, opt_state = _weights_from_h5(path, data, cls_name, fc_config["layers"], planned)
    model = _build(path, cls, fc_config, weights, device,
                   meta.get("fastconv_class_names") if isinstance(meta, dict) else None)
    if compile and isinstance(config, dict):
        _compile(model, config.get("compile_config"), notes)
        if model.compiled and opt_state:
            _restore_optimizer(model, opt_state, notes)
    _warn(path, notes)
    return model


def _architecture(path, config):
    """(fastconv class name, class, fastconv config, notes, planned weights) of a Keras
    model config, or KerasFileError naming what cannot be read."""
    try:
        cls_name, fc_config, notes = keras_config.from_keras(config)
        cls = model_class(cls_name)
        return cls_name, cls, fc_config, notes, cls.planned_weights(fc_config)
    except (ValueError, TypeError, KeyError, L.LayerError) as exc:
        _fail(path, f"its architecture cannot be read: {exc}")


def _build(path, cls, fc_config, weights, device, class_names):
    try:
        model = cls.from_config(fc_config, device=device)
    except (ValueError, TypeError, KeyError, L.LayerError) as exc:
        _fail(path, f"its architecture cannot be rebuilt: {exc}")
    model.set_weights(weights)
    model.class_names = [str(n) for n in class_names] if isinstance(class_names, list) \
        else None
    return model


def _warn(path, notes):
    for note in notes:
        warnings.warn(f"{path}: {note}", stacklevel=3)


# --------------------------------------------------------------------------- Keras 2

def is_keras2_model_file(path):
    """True for an HDF5 file with a `model_config` attribute (Keras 2 `model.save`)."""
    from .keras_weights import is_hdf5
    if not (os.path.isfile(path) and is_hdf5(path)):
        return False
    try:
        with _h5py().File(path, "r") as f:
            return "model_config" in f.attrs
    except OSError:
        return False


def _attr_json(path, f, name):
    value = f.attrs.get(name)
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str) or len(value) > JSON_LIMIT:
        _fail(path, f"its {name} attribute is not a JSON text")
    return _json(path, value.encode("utf-8"), f"the {name} attribute")


def load_keras2_h5(filepath, device="cpu", compile=True):
    """The model of a Keras 2 full-model .h5 file (`model.save("m.h5")`): the architecture
    from its model_config, the weights from model_weights (matched to the layers by
    name, every dtype and shape checked before reading), compiled from its
    training_config where that maps. Optimizer state is not read."""
    from .keras_weights import _checked, _read_keras2
    path = os.fspath(filepath)
    with _h5py().File(path, "r") as f:
        config = _attr_json(path, f, "model_config")
        training = _attr_json(path, f, "training_config")
        class_names = _attr_json(path, f, "fastconv_class_names")   # written by fastconv
        cls_name, cls, fc_config, notes, planned = _architecture(path, config)
        if "model_weights" not in f:
            _fail(path, "has a model_config but no model_weights group")
        listed = dict(_checked(path, _read_keras2(f["model_weights"], path)))
        by_layer = {}
        for lname, wname, shape in planned:
            by_layer.setdefault(lname, []).append((wname, tuple(shape)))
        extra = sorted(set(listed) - set(by_layer))
        if extra:
            _fail(path, f"holds weights for layers the config does not have (or that have "
                        f"none): {', '.join(extra)[:200]}")
        weights = []
        for lname, want in by_layer.items():
            have = listed.get(lname, [])
            shapes = [tuple(ds.shape) for ds in have]
            if shapes != [s for _, s in want]:
                _fail(path, f"layer {lname!r} holds weights of shapes {shapes}, the config "
                            f"makes them {[s for _, s in want]}")
            weights += [_read_dataset(path, lname, k, ds) for k, ds in enumerate(have)]
    model = _build(path, cls, fc_config, weights, device, class_names)
    if compile and training:
        cc = {"optimizer": training.get("optimizer_config"), "loss": training.get("loss"),
              "metrics": training.get("metrics"), "loss_weights": training.get("loss_weights"),
              "weighted_metrics": training.get("weighted_metrics")}
        _compile(model, cc, notes)
    _warn(path, notes)
    return model


# --------------------------------------------------------------------------- writing

def _loss_config(spec):
    """The compile_config's loss: its name, or with label smoothing Keras's loss object."""
    if not spec.label_smoothing:
        return spec.name
    cfg = losses_mod.serialize(spec)
    return {"module": "keras.losses", "class_name": cfg["class_name"],
            "config": dict(cfg["config"], name=spec.name, reduction="sum_over_batch_size",
                           axis=-1), "registered_name": None}


def _compile_config(model):
    if not model.compiled:
        return None
    opt = model.optimizer
    cfg = dict(opt.get_config(), name=opt.name)
    lr = cfg.get("learning_rate")
    if isinstance(lr, dict):
        cfg["learning_rate"] = dict(lr, module="keras.optimizers.schedules",
                                    registered_name=None)
    return {"optimizer": {"module": "keras.optimizers", "class_name": type(opt).__name__,
                          "config": cfg, "registered_name": None},
            "loss": _loss_config(model._loss), "loss_weights": None, "metrics": list(model.metrics) or None,
            "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1,
            "jit_compile": False}


def _weights_h5(model):
    h5py = _h5py()
    buf = io.BytesIO()
    counted = [layer for layer in model.layers
               if type(model).__name__ != "Sequential" or not isinstance(layer, L.InputLayer)]
    with h5py.File(buf, "w") as f:
        group = f.create_group("layers")
        for key, layer in zip(weight_keys(counted), counted):
            vars_ = group.create_group(key).create_group("vars")
            vars_.attrs["name"] = layer.name
            for k, w in enumerate(layer.get_weights()):
                vars_.create_dataset(str(k), data=np.ascontiguousarray(w, np.float32))
        f.create_group("vars").attrs["name"] = model.name
        if model.compiled:
            _write_optimizer(f, model)
    return buf.getvalue()


def _write_optimizer(f, model):
    """optimizer/vars as Keras numbers them: iterations, the learning rate (unless it is
    a schedule), then each trainable weight's slots in turn (fastconv keeps its state in
    the same parameter-major order and with Keras's meaning: RMSprop's velocity, Adam's
    momentum and velocity, SGD's momentum)."""
    opt = model.optimizer
    vars_ = f.create_group("optimizer").create_group("vars")
    vars_.attrs["name"] = opt.name
    state = model.optimizer_state()
    iterations, arrays = state if state is not None else (0, [])
    values = [np.int64(iterations)]
    if not isinstance(opt.get_config().get("learning_rate"), dict):
        values.append(np.float32(opt.learning_rate))
    values += [np.ascontiguousarray(a, np.float32) for a in arrays]
    for k, v in enumerate(values):
        vars_.create_dataset(str(k), data=v)


def _keras2_entry(entry):
    """A Keras 3 layer entry (keras_config.to_keras) in Keras 2's form: no module keys,
    initializers as {"class_name", "config"}, an InputLayer's batch_input_shape, inbound
    nodes as [[name, 0, 0, {}], ...]."""
    cfg = dict(entry["config"])
    if entry["class_name"] == "InputLayer":
        cfg = {"batch_input_shape": cfg["batch_shape"], "dtype": "float32", "sparse": False,
               "ragged": False, "name": cfg["name"]}
    for arg, value in list(cfg.items()):
        if isinstance(value, dict) and "class_name" in value:
            cfg[arg] = {"class_name": value["class_name"], "config": value.get("config", {})}
    out = {"class_name": entry["class_name"], "config": cfg}
    if "inbound_nodes" in entry:
        out["name"] = entry["name"]
        nodes = entry["inbound_nodes"]
        if nodes:
            arg = nodes[0]["args"][0]
            tensors = arg if isinstance(arg, list) else [arg]
            nodes = [[[t["config"]["keras_history"][0], 0, 0, {}] for t in tensors]]
        out["inbound_nodes"] = nodes
    return out


def save_keras2_h5(model, filepath):
    """Write `model` as a Keras 2 full-model .h5 (what `model.save("m.h5")` writes in
    Keras 2 / tf_keras, and what Keras 3's load_model reads as a legacy file): the
    model_config and training_config attributes, and model_weights with each layer's
    weight_names ("<layer>/<weight>:0"). No optimizer state. Atomic, like every save."""
    model.require_built("save")
    h5py = _h5py()
    k3 = keras_config.to_keras(model)
    body = dict(k3["config"])
    body["layers"] = [_keras2_entry(e) for e in body["layers"]]
    if k3["class_name"] != "Sequential":
        body["input_layers"] = [body["input_layers"]]
        body["output_layers"] = [body["output_layers"]]
    config = {"class_name": k3["class_name"], "config": body}
    cc = _compile_config(model)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["model_config"] = json.dumps(config)
        if cc is not None:
            opt = cc["optimizer"]
            f.attrs["training_config"] = json.dumps({
                "loss": cc["loss"], "metrics": cc["metrics"], "weighted_metrics": None,
                "loss_weights": None,
                "optimizer_config": {"class_name": opt["class_name"], "config": opt["config"]}})
        group = f.create_group("model_weights")
        layers = [layer for layer in model.layers
                  if type(model).__name__ != "Sequential" or not isinstance(layer, L.InputLayer)]
        group.attrs["layer_names"] = np.array([layer.name.encode() for layer in layers])
        group.attrs["backend"] = "tensorflow"
        group.attrs["keras_version"] = "2.15.0"
        for layer in layers:
            g = group.create_group(layer.name)
            names = [f"{layer.name}/{w}:0" for w in layer.weight_names]
            g.attrs["weight_names"] = np.array([n.encode() for n in names])
            for name, w in zip(names, layer.get_weights()):
                g.create_dataset(name, data=np.ascontiguousarray(w, np.float32))
        if getattr(model, "class_names", None):
            f.attrs["fastconv_class_names"] = json.dumps(list(model.class_names))
    data = buf.getvalue()
    atomic_replace(filepath, lambda fh: fh.write(data))


def save_keras(model, filepath):
    """Write `model` as a Keras 3 .keras file, atomically."""
    model.require_built("save")
    config = keras_config.to_keras(model)
    cc = _compile_config(model)
    if cc is not None:
        config["compile_config"] = cc
    meta = {"keras_version": FORMAT_KERAS_VERSION,
            "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
            "written_by": f"fastconv {__version__}"}
    if getattr(model, "class_names", None):     # label order, set by the CLI (Keras ignores it)
        meta["fastconv_class_names"] = list(model.class_names)
    members = (("metadata.json", json.dumps(meta).encode()),
               ("config.json", json.dumps(config).encode()),
               ("model.weights.h5", _weights_h5(model)))

    def write(fh):
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
            for name, data in members:
                zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    atomic_replace(filepath, write)

"""Keras model configs (config.json of a Keras 3 .keras file, the model_config of a
Keras 2 full-model .h5, which differs only in small ways: `batch_input_shape`, inbound
nodes as name lists, a BatchNormalization axis as [3]) <-> fastconv model configs.

from_keras(config) -> (fastconv class name, fastconv config, notes): the model's
architecture as fastconv's own config (what Sequential/Functional.from_config take),
every Keras argument either translated, at a value fastconv's behaviour equals
(dilation_rate 1, use_bias True, no activity regularizer, ...), or refused with KerasConfigError
naming the layer, its class and the argument. Nothing is ever imported or executed:
a layer class is looked up in fastconv's table, so Lambda layers and custom objects
(a `registered_name` of their own) are refused, as Keras's safe_mode refuses them.
Initializers matter only for a fresh build (a file's weights replace them): one
fastconv lacks falls back to fastconv's default, with a note.

to_keras(model) -> the Keras config dict of a fastconv model, with Keras's module and
class names, `inbound_nodes` for graphs and an InputLayer leading a Sequential; Keras's
keras.saving.load_model rebuilds it (tests/test_keras_file.py).
"""
from __future__ import annotations

import inspect

from .. import layers as L


class KerasConfigError(ValueError):
    """A Keras config fastconv cannot represent (the message names layer and argument)."""


# Keras arguments fastconv has no counterpart for, with the values at which fastconv
# computes the same thing (a list: any of them; None: only None). A layer's own
# arguments (its constructor's parameters, under Keras's names) pass through to it;
# anything else is refused.
_SAME_AS = {"data_format": ["channels_last", None], "dilation_rate": [[1, 1], 1],
            "groups": [1], "use_bias": [True], "activity_regularizer": None,
            "lora_rank": None, "quantization_config": None, "noise_shape": None,
            "synchronized": [False], "renorm": [False], "keepdims": [False],
            "sparse": [False], "ragged": [False], "optional": [False]}
_SAME_AS.update({f"{w}_{kind}": None for w in ("kernel", "bias", "depthwise", "pointwise",
                                               "beta", "gamma")
                 for kind in ("regularizer", "constraint")})
# Keras arguments that do not change what a layer computes: ignored.
_INERT = {"trainable", "dtype", "build_config", "renorm_clipping", "renorm_momentum",
          "lora_alpha",
          "batch_input_shape"}    # Keras 2 on a Sequential's first layer: read by from_keras
_INITIALIZERS = {"GlorotUniform": "glorot_uniform", "HeUniform": "he_uniform",
                 "Zeros": "zeros", "Ones": "ones"}
_KERAS_NAMES = {v: k for k, v in _INITIALIZERS.items()}


def _fail(where, text):
    raise KerasConfigError(f"{where}: {text}")


def _same(value, allowed):
    allowed = [None] if allowed is None else allowed
    return any(value == a for a in allowed)


def _initializer(where, arg, value, notes):
    """fastconv's name for a Keras initializer, or None (fastconv's default) with a note."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("module", "keras.initializers") == \
            "keras.initializers" and value.get("class_name") in _INITIALIZERS:
        return _INITIALIZERS[value["class_name"]]
    notes.append(f"{where}: {arg} {value.get('class_name') if isinstance(value, dict) else value!r}"
                 f" is not one of fastconv's initializers; fastconv's default is used for a "
                 f"fresh build (the file's weights are loaded over it)")
    return None


def _dtype_ok(value):
    if value in (None, "float32"):
        return True
    return isinstance(value, dict) and value.get("config", {}).get("name") == "float32"


def layer_from_keras(spec, notes):
    """{"class_name", "config"} of fastconv's layer for one Keras layer entry."""
    if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
        raise KerasConfigError(f"a layer entry must be a dict with a 'config' dict, "
                               f"received {spec!r:.120}")
    cls, cfg = spec.get("class_name"), spec["config"]
    name = cfg.get("name", spec.get("name"))
    where = f"layer {name!r} ({cls})"
    if cls == "Lambda":
        _fail(where, "Lambda layers hold code; fastconv never runs code from a file (as "
                     "Keras's safe_mode refuses them)")
    module = spec.get("module", "keras.layers")
    if cls not in L.LAYERS or spec.get("registered_name") not in (None, cls) or \
            not str(module).startswith("keras"):
        _fail(where, f"not a layer fastconv supports (module {module!r}, registered as "
                     f"{spec.get('registered_name')!r}); fastconv reads "
                     f"{', '.join(sorted(L.LAYERS))}")
    if not _dtype_ok(cfg.get("dtype")):
        _fail(where, f"dtype {cfg.get('dtype')!r} is not supported (fastconv computes in "
                     f"float32)")
    if cfg.get("trainable", True) is not True:
        _fail(where, "trainable=False (a frozen layer) is not supported")
    out = {"name": name}
    if cls == "InputLayer":
        shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        if not isinstance(shape, list) or len(shape) < 2 or any(
                not isinstance(d, int) for d in shape[1:]):
            _fail(where, f"batch_shape must be [None, dims...] of ints, received {shape!r}")
        out["shape"] = list(shape[1:])
    wanted = set(inspect.signature(L.LAYERS[cls].__init__).parameters) - {
        "self", "name", "input_shape", "shape"}
    same = _SAME_AS
    if cls == "BatchNormalization" and isinstance(cfg.get("axis"), list) and \
            len(cfg["axis"]) == 1:
        cfg = dict(cfg, axis=cfg["axis"][0])       # Keras 2 writes the axis as [3]
    for arg, value in cfg.items():
        if arg in ("name",) or arg in _INERT or (cls == "InputLayer" and arg in (
                "batch_shape", "batch_input_shape", "shape")):
            continue
        if arg in ("kernel_regularizer", "bias_regularizer") and cls in ("Conv2D", "Dense") \
                and value is not None:
            if not (isinstance(value, dict) and value.get("class_name") in ("L1", "L2", "L1L2")
                    and value.get("module", "keras.regularizers") == "keras.regularizers"):
                _fail(where, f"{arg} {value!r:.80} is not one of Keras's L1, L2, L1L2")
            out[arg] = {"class_name": value["class_name"], "config": value.get("config") or {}}
        elif arg in wanted:
            if arg.endswith("_initializer"):
                value = _initializer(where, arg, value, notes)
                if value is None:
                    continue
            if arg == "activation" and not isinstance(value, str):
                _fail(where, f"activation {value!r:.80} is not a built-in activation name")
            out[arg] = value
        elif arg in same:
            if not _same(value, same[arg]):
                _fail(where, f"argument {arg}={value!r:.80} is not supported (fastconv "
                             f"computes the layer as {arg}={(same[arg] or [None])[0]!r})")
        else:
            _fail(where, f"argument {arg}={value!r:.80} is not supported by fastconv")
    return {"class_name": cls, "config": out}


def _history(where, tensor):
    """The layer name a __keras_tensor__ in an inbound node comes from."""
    if not (isinstance(tensor, dict) and tensor.get("class_name") == "__keras_tensor__"):
        _fail(where, f"reads {tensor!r:.120}, not a tensor of another layer")
    hist = tensor.get("config", {}).get("keras_history")
    if not (isinstance(hist, list) and len(hist) == 3 and isinstance(hist[0], str)):
        _fail(where, f"has a malformed keras_history {hist!r:.80}")
    if hist[1:] != [0, 0]:
        _fail(where, f"reads output {hist[1:]} of layer {hist[0]!r}: fastconv models use "
                     f"each layer once (shared layers are not supported)")
    return hist[0]


def _inbound(where, nodes):
    """The names of the layers an entry's single inbound node reads."""
    if nodes in (None, []):
        return []
    if not isinstance(nodes, list) or len(nodes) != 1:
        _fail(where, f"is called {len(nodes) if isinstance(nodes, list) else '?'} times; "
                     f"fastconv models use each layer once (shared layers are not supported)")
    node = nodes[0]
    if isinstance(node, list):      # Keras 2: [[name, node index, tensor index, kwargs], ...]
        names = []
        for t in node:
            if not (isinstance(t, list) and len(t) >= 3 and isinstance(t[0], str)):
                _fail(where, f"has a malformed inbound node {node!r:.120}")
            if list(t[1:3]) != [0, 0]:
                _fail(where, f"reads output {list(t[1:3])} of layer {t[0]!r}: fastconv models "
                             f"use each layer once (shared layers are not supported)")
            if len(t) > 3 and t[3]:
                _fail(where, f"is called with arguments {sorted(t[3])} that fastconv does "
                             f"not take")
            names.append(t[0])
        return names
    args = node.get("args") if isinstance(node, dict) else None
    if not isinstance(args, list) or len(args) != 1:
        _fail(where, f"has an inbound node fastconv cannot read: {node!r:.120}")
    arg = args[0]
    kwargs = {k: v for k, v in (node.get("kwargs") or {}).items() if v is not None}
    if kwargs.pop("training", None) is not None or kwargs:
        _fail(where, f"is called with arguments {sorted(kwargs)} that fastconv does not take")
    return [_history(where, t) for t in arg] if isinstance(arg, list) else [_history(where, arg)]


def _endpoint(where, value):
    """'name' of input_layers/output_layers: [name, 0, 0] or [[name, 0, 0]]."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value = value[0]
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)):
        _fail("model", f"{where} must name one layer (fastconv models have one input and one "
                       f"output), received {value!r:.120}")
    return value[0]


def from_keras(config):
    """(fastconv class name, fastconv config, notes) of a Keras 3 model config."""
    notes = []
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise KerasConfigError(f"config.json must hold a model dict with a 'config', received "
                               f"{config!r:.120}")
    cls, body = config.get("class_name"), config["config"]
    layers = body.get("layers")
    if not isinstance(layers, list) or not layers:
        raise KerasConfigError(f"the {cls} config has no 'layers' list")
    if cls == "Sequential":
        specs = [layer_from_keras(s, notes) for s in layers]
        out = {"name": body.get("name"), "layers": specs}
        if specs[0]["class_name"] == "InputLayer":
            out["layers"] = specs[1:]
            out["input_shape"] = specs[0]["config"]["shape"]
        elif isinstance(layers[0].get("config", {}).get("batch_input_shape"), list):
            out["input_shape"] = list(layers[0]["config"]["batch_input_shape"][1:])
        elif body.get("build_input_shape"):
            out["input_shape"] = list(body["build_input_shape"][1:])
        return "Sequential", out, notes
    if cls in ("Functional", "Model"):
        specs = []
        for s in layers:
            spec = layer_from_keras(s, notes)
            where = f"layer {spec['config']['name']!r} ({spec['class_name']})"
            spec["inbound_layers"] = _inbound(where, s.get("inbound_nodes"))
            specs.append(spec)
        out = {"name": body.get("name"), "layers": specs,
               "input_layers": [_endpoint("input_layers", body.get("input_layers"))],
               "output_layers": [_endpoint("output_layers", body.get("output_layers"))]}
        return "Functional", out, notes
    raise KerasConfigError(f"model class {cls!r} is not supported: fastconv reads Sequential "
                           f"and Functional models")


# --------------------------------------------------------------------------- writing

def _keras_layer(layer):
    cfg = layer.get_config()
    cfg.pop("input_shape", None)
    cls = type(layer).__name__
    if cls == "InputLayer":
        cfg = {"batch_shape": [None, *layer.shape], "dtype": "float32", "name": layer.name}
    else:       # Keras's defaults for what fastconv lacks are fastconv's behaviour
        cfg.update(trainable=True, dtype="float32")
        for arg in list(cfg):
            if arg.endswith("_initializer") and cfg[arg] in _KERAS_NAMES:
                cfg[arg] = {"module": "keras.initializers",
                            "class_name": _KERAS_NAMES[cfg[arg]], "config": {},
                            "registered_name": None}
    return {"module": "keras.layers", "class_name": cls, "config": cfg,
            "registered_name": None}


def _tensor(layer):
    return {"class_name": "__keras_tensor__",
            "config": {"shape": list(layer.output_shape), "dtype": "float32",
                       "keras_history": [layer.name, 0, 0]}}


def to_keras(model):
    """The Keras 3 config dict (config.json's model entry, without compile_config)."""
    if type(model).__name__ == "Sequential":
        entries = [_keras_layer(L.InputLayer(model.input_shape[1:], name="input_layer"))]
        entries += [_keras_layer(layer) for layer in model.layers
                    if not isinstance(layer, L.InputLayer)]
        return {"module": "keras", "class_name": "Sequential",
                "config": {"name": model.name, "trainable": True, "dtype": "float32",
                           "layers": entries},
                "registered_name": None,
                "build_config": {"input_shape": list(model.input_shape)}}
    entries = []
    for layer in model.layers:
        entry = _keras_layer(layer)
        entry["name"] = layer.name
        reads = model.inbound_layers(layer)
        if not reads:
            entry["inbound_nodes"] = []
        else:
            arg = [_tensor(r) for r in reads] if getattr(layer, "takes_list", False) \
                else _tensor(reads[0])
            entry["inbound_nodes"] = [{"args": [arg], "kwargs": {}}]
        entries.append(entry)
    return {"module": "keras.src.models.functional", "class_name": "Functional",
            "config": {"name": model.name, "trainable": True, "layers": entries,
                       "input_layers": [model.layers[0].name, 0, 0],
                       "output_layers": [model.layers[-1].name, 0, 0]},
            "registered_name": "Functional", "build_config": {"input_shape": None}}

"""Functional: a model whose layers form a graph (Keras's Functional API).

    inputs = fastconv.Input((32, 32, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    y = layers.Conv2D(16, 3, padding="same")(x)
    y = layers.Add()([y, x])
    outputs = layers.Dense(1, activation="sigmoid")(layers.GlobalAveragePooling2D()(y))
    model = fastconv.Model(inputs, outputs, seed=0)

fastconv.Model(inputs, outputs, name=None, device="cpu", seed=None) walks the layer calls
recorded on the KerasTensors (layers.graph) back from the output, orders the layers
(depth first, inputs in call order, so a chain stays consecutive and can fuse), names
and builds them from the model's seeded generator and plans the graph like a Sequential
(models._plan: one plan per (mode, batch size), merges, summed gradients, fusion where a
conv's only consumer allows). One input and one output for now. compile/fit/evaluate/
predict are training.Trainer's; save/load, get_config/from_config as Sequential.
"""
from __future__ import annotations

from .. import layers as L
from ._plan import logical_ops
from .model import Model, loadable
from .saving import FileMethods
from .training import Trainer


def _one(what, value):
    """The single KerasTensor of `value` (a tensor or a list of one)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"Model: fastconv supports one {what} tensor for now, received "
                             f"{len(value)}")
        value = value[0]
    if not isinstance(value, L.KerasTensor):
        raise TypeError(f"Model: `{what}s` must be a KerasTensor (from fastconv.Input or a "
                        f"layer call), received {type(value).__name__} {value!r:.80}")
    return value


def _topological(inp, out):
    """The layers from inp's InputLayer to out's layer, each after the layers it reads
    (depth-first post-order, inputs in call order). Raises ValueError for a graph that
    needs another input or has a cycle (which layer calls cannot make: a layer is called
    once, on tensors that exist)."""
    order, state = [], {}                       # id(layer) -> 1 visiting, 2 done
    stack = [(out.layer, False)]
    while stack:
        layer, expanded = stack.pop()
        key = id(layer)
        if expanded:
            state[key] = 2
            order.append(layer)
            continue
        if state.get(key) == 2:
            continue
        if state.get(key) == 1:
            raise ValueError(f"Model: the graph has a cycle through layer "
                             f"'{layer.name or layer.prefix}'")
        if isinstance(layer, L.InputLayer):
            if layer is not inp.layer:
                raise ValueError(
                    f"Model: the output depends on input '{layer.name or layer.prefix}' of "
                    f"shape {(None,) + layer.shape}, which is not in `inputs` (the graph is "
                    f"disconnected from the given input {inp.shape})")
            state[key] = 2
            order.append(layer)
            continue
        if layer._inbound is None:
            raise ValueError(f"Model: layer '{layer.name or layer.prefix}' was never called "
                             f"on a KerasTensor")
        state[key] = 1
        stack.append((layer, True))
        for t in reversed(layer._inbound):
            if state.get(id(t.layer)) == 1:
                raise ValueError(f"Model: the graph has a cycle through layer "
                                 f"'{t.layer.name or t.layer.prefix}'")
            stack.append((t.layer, False))
    return order        # every path back ends at an InputLayer: inp, checked above


@loadable
class Functional(Trainer, FileMethods, Model):
    """A graph of layers from one Input to one output (Keras's Functional model; exported
    as fastconv.Model). self.layers lists the InputLayer first, then every layer after
    the layers it reads: get_weights/set_weights and model files use that order."""

    _kind = "Model"
    default_name = "model"

    def __init__(self, inputs, outputs, name=None, device="cpu", seed=None):
        inp, out = _one("input", inputs), _one("output", outputs)
        if not isinstance(inp.layer, L.InputLayer):
            raise ValueError(f"Model: `inputs` must come from fastconv.Input(shape), "
                             f"received {inp!r}")
        order = _topological(inp, out)           # checked before the model is made
        for layer in order:
            if layer.built and not isinstance(layer, L.InputLayer):
                raise ValueError(f"Model: layer '{layer.name}' is already built (it belongs "
                                 f"to another model); a layer joins one model only")
        super().__init__(name=name, device=device, seed=seed)
        for layer in order:
            self._name_layer(layer)
            if isinstance(layer, L.InputLayer):
                layer.build((None,) + layer.shape)
            elif getattr(layer, "takes_list", False):
                layer.build([t.shape for t in layer._inbound], rng=self._init_rng)
            else:
                layer.build(layer._inbound[0].shape, rng=self._init_rng)
            self.layers.append(layer)
        self.input_shape = inp.shape
        self.inputs, self.outputs = [inp], [out]

    # ------------------------------------------------------------------ structure
    @property
    def output_shape(self):
        return self.outputs[0].shape

    def build(self, input_shape):
        """A Functional model is built when made; this only checks the shape."""
        shape = tuple(input_shape)
        if shape and shape[0] is not None:
            shape = (None,) + shape
        if shape != tuple(self.input_shape):
            raise ValueError(f"{self.name}: was built for input shape {self.input_shape}, "
                             f"cannot build for {shape}")

    def inbound_layers(self, layer):
        """The layers whose outputs `layer` reads, in call order ([] for the input)."""
        return [] if layer._inbound is None else [t.layer for t in layer._inbound]

    def _logical_ops(self):
        return logical_ops(self.layers, self.inbound_layers)

    # ------------------------------------------------------------------ config / files
    def get_config(self):
        return {"name": self.name,
                "layers": [dict(L.serialize(layer), inbound_layers=[
                    l.name for l in self.inbound_layers(layer)]) for layer in self.layers],
                "input_layers": [self.layers[0].name], "output_layers": [self.layers[-1].name]}

    @staticmethod
    def _graph(config):
        """(layers, by name, input layer, output layer) of a config; the inbound names of
        each layer checked to name an earlier layer."""
        if (not isinstance(config, dict) or not isinstance(config.get("layers"), list)
                or not config["layers"]):
            raise ValueError(f"a Functional config must be a dict with a non-empty 'layers' "
                             f"list, received {config!r:.120}")
        layers, by_name, inbound = [], {}, []
        for spec in config["layers"]:
            layer = L.deserialize(spec)
            names = spec.get("inbound_layers", [])
            if not isinstance(names, list) or any(n not in by_name for n in names):
                raise ValueError(f"Functional config: layer {layer.name!r} reads "
                                 f"{names!r:.120}, which are not all earlier layers")
            if isinstance(layer, L.InputLayer) != (not names):
                raise ValueError(f"Functional config: layer {layer.name!r} must read at least "
                                 f"one layer unless it is the InputLayer (it reads {names!r})")
            if layer.name in by_name or not isinstance(layer.name, str):
                raise ValueError(f"Functional config: layer name {layer.name!r} is missing "
                                 f"or repeated")
            by_name[layer.name] = layer
            layers.append(layer)
            inbound.append([by_name[n] for n in names])
        ins, outs = config.get("input_layers"), config.get("output_layers")
        if (not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != 1
                or len(outs) != 1 or ins[0] not in by_name or outs[0] not in by_name
                or not isinstance(by_name[ins[0]], L.InputLayer)):
            raise ValueError(f"Functional config: 'input_layers' {ins!r:.60} and "
                             f"'output_layers' {outs!r:.60} must each name one layer")
        return layers, inbound, by_name[ins[0]], by_name[outs[0]]

    @classmethod
    def from_config(cls, config, device="cpu", seed=None):
        layers, inbound, inp, out = cls._graph(config)
        tensors = {}
        for layer, reads in zip(layers, inbound):
            if isinstance(layer, L.InputLayer):
                tensors[id(layer)] = L.KerasTensor((None,) + layer.shape, layer)
                continue
            ts = [tensors[id(l)] for l in reads]
            tensors[id(layer)] = layer(ts if getattr(layer, "takes_list", False) else ts[0])
        return cls(tensors[id(inp)], tensors[id(out)], name=config.get("name"),
                   device=device, seed=seed)

    @classmethod
    def planned_weights(cls, config):
        """[(layer name, weight name, shape)] from_config(config) would allocate, computed
        without allocating (see Sequential.planned_weights)."""
        layers, inbound, _, _ = cls._graph(config)
        shapes, out = {}, []
        for layer, reads in zip(layers, inbound):
            if isinstance(layer, L.InputLayer):
                shapes[id(layer)] = (None,) + layer.shape
                continue
            ins = [shapes[id(l)] for l in reads]
            if getattr(layer, "takes_list", False):
                shapes[id(layer)] = layer.compute_output_shape_multi(ins)
                continue
            if len(ins) != 1:
                raise ValueError(f"Functional config: layer {layer.name!r} reads {len(ins)} "
                                 f"layers; only Add and Concatenate read several")
            out += [(layer.name, wname, s) for wname, s in
                    zip(layer.weight_names, layer.weight_shapes_for(ins[0]))]
            shapes[id(layer)] = layer.compute_output_shape(ins[0])
        return out

    def __repr__(self):
        return (f"<Functional name={self.name!r} device={self.device!r} "
                f"layers={len(self.layers)}>")

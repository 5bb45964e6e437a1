"""Sequential: a Keras-style linear stack of layers that trains on cpu, cuda or reference.

    model = Sequential([Conv2D(32, 3, input_shape=(150, 150, 3)), Activation("relu"), ...],
                       device="cpu", seed=0)
    model.compile(optimizer=RMSprop(learning_rate=1e-4), loss="binary_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=50, validation_split=0.2)

The stack itself (add, pop, build, get_config/from_config, save) lives here; what any
model is (layers, device, weights, plans) is models.model.Model, and compile/fit/
evaluate/predict are models.training.Trainer.
"""
from __future__ import annotations

from .. import layers as L
from .model import Model, loadable
from .saving import FileMethods
from .training import Trainer


@loadable
class Sequential(Trainer, FileMethods, Model):
    """A linear stack of layers (Keras's Sequential).

    Sequential(layers=None, name=None, device="cpu", seed=None). `seed` (or a
    prior fastconv.set_seed) makes initialisation, shuffling and dropout
    reproducible; layers are auto-named per model as in a fresh Keras 2 session
    (conv2d_1, activation_1, ...).

    Threads: one model may be used from several Python threads; its public entry
    points take turns on one re-entrant lock, each giving bitwise the serial result,
    while different models run truly in parallel (see models.model.Model).
    """

    _kind = "Sequential"
    default_name = "sequential"

    def __init__(self, layers=None, name=None, device="cpu", seed=None):
        super().__init__(name=name, device=device, seed=seed)
        if layers is not None:
            if isinstance(layers, L.Layer):
                layers = [layers]
            for layer in layers:
                self.add(layer)

    # ------------------------------------------------------------------ structure
    @property
    def output_shape(self):
        if not self.built:
            return None
        return self.layers[-1].output_shape if self.layers else self.input_shape

    def add(self, layer):
        """Append a layer; it is built now when the input shape is known."""
        if isinstance(layer, L.KerasTensor) and isinstance(layer.layer, L.InputLayer):
            layer = layer.layer                       # fastconv.Input(shape) first
        if not isinstance(layer, L.Layer):
            raise TypeError(f"{self.name}: add() takes a fastconv layer, received "
                            f"{type(layer).__name__} {layer!r:.80}")
        if isinstance(layer, L.InputLayer):
            if self.layers or self.input_shape is not None:
                raise ValueError(f"{self.name}: Input() can only be the first layer")
            self._name_layer(layer)
            self.input_shape = (None,) + layer.shape
            return
        if layer._inbound is not None:
            raise ValueError(f"{self.name}: layer '{layer.name or layer.prefix}' was called on "
                             f"a KerasTensor (it belongs to a Functional graph); a Sequential "
                             f"needs a fresh layer")
        if any(existing is layer for existing in self.layers):
            raise ValueError(f"{self.name}: layer '{layer.name}' was already added")
        if layer.input_shape_arg is not None:
            shape = (None,) + layer.input_shape_arg
            if not self.layers and self.input_shape is None:
                self.input_shape = shape
            elif self.output_shape != shape and self.built:
                raise ValueError(
                    f"{self.name}: layer '{layer.name or layer.prefix}' declares "
                    f"input_shape {layer.input_shape_arg} but the previous layer outputs "
                    f"{self.output_shape}")
        self._name_layer(layer)
        if self.built:
            if not layer.built:
                layer.build(self.output_shape, rng=self._init_rng)
            elif tuple(layer.input_shape) != tuple(self.output_shape):
                raise L.LayerError(
                    f"{layer.__class__.__name__} layer '{layer.name}' was built for input "
                    f"shape {layer.input_shape} but the model's output here is "
                    f"{self.output_shape}")
        self.layers.append(layer)
        if self.input_shape is not None and not self.built:
            self.build(self.input_shape)
        if self._K is not None and layer._weights:
            self._move_layer(layer, self._K)
        self._invalidate()

    def pop(self):
        if not self.layers:
            raise TypeError(f"{self.name}: there are no layers to pop")
        layer = self.layers.pop()
        self._grads.pop(layer.name, None)
        self._invalidate()
        return layer

    def build(self, input_shape):
        """Build every layer for `input_shape` (None for the batch, e.g. (None, 150, 150, 3))."""
        input_shape = tuple(input_shape)
        if not input_shape or input_shape[0] is not None:
            input_shape = (None,) + tuple(input_shape)
        if self.input_shape is not None and tuple(self.input_shape) != input_shape:
            raise ValueError(f"{self.name}: was built for input shape {self.input_shape}, "
                             f"cannot build for {input_shape}")
        self.input_shape = input_shape
        shape = input_shape
        for layer in self.layers:
            if not layer.built:
                layer.build(shape, rng=self._init_rng)
                if self._K is not None and layer._weights:
                    self._move_layer(layer, self._K)
            elif tuple(layer.input_shape) != tuple(shape):
                raise L.LayerError(
                    f"{layer.__class__.__name__} layer '{layer.name}' was built for input "
                    f"shape {layer.input_shape} but receives {shape}")
            shape = layer.output_shape
        self._invalidate()

    # ------------------------------------------------------------------ config / files
    def get_config(self):
        config = {"name": self.name, "layers": [L.serialize(layer) for layer in self.layers]}
        if self.input_shape is not None:
            config["input_shape"] = list(self.input_shape[1:])
        return config

    @classmethod
    def from_config(cls, config, device="cpu", seed=None):
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(f"a Sequential config must be a dict with a 'layers' list, "
                             f"received {config!r:.120}")
        model = cls(name=config.get("name"), device=device, seed=seed)
        if config.get("input_shape") is not None:
            model.add(L.Input(tuple(config["input_shape"])))
        for spec in config["layers"]:
            model.add(L.deserialize(spec))
        return model

    @classmethod
    def planned_weights(cls, config):
        """[(layer name, weight name, shape)] that from_config(config) would allocate, or
        None for an unbuilt model (it allocates nothing), computed without allocating
        anything (a config can declare Dense(3e9)). Raises ValueError, TypeError,
        KeyError or LayerError for a config that cannot be rebuilt."""
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
        return out

    def __repr__(self):
        return (f"<Sequential name={self.name!r} device={self.device!r} "
                f"layers={len(self.layers)}>")

"""Keras-style layers: Conv2D, MaxPooling2D, Activation, Flatten, Dense, Dropout, Input.

A layer describes one step of a Sequential model: it validates its arguments in
`__init__` (messages show the received value), creates its weights in
`build(input_shape)` (Keras's glorot_uniform kernels and zero biases, from a
seeded generator), knows its output shape and parameter count, and
round-trips through `get_config()` / `from_config()`. The computation itself
is planned by the model (fastconv.models), which calls the kernels of its
device with buffers it owns, fusing Conv2D + ReLU (+ MaxPooling2D) where the
backend can.

Shapes are Keras's, channels-last, with None for the batch:
Conv2D (None, H, W, C) -> (None, OH, OW, filters); Dense (None, IN) -> (None, units).
Weights use Keras's layouts: conv kernel (KH, KW, C_in, C_out), dense kernel
(IN, OUT), bias (OUT,), so Keras weights load without transposes.
"""
from __future__ import annotations

import math

import numpy as np

from . import _random
from ._args import is_int, is_number
from .kernels._validate import window_geometry

ACTIVATIONS = ("relu", "sigmoid", "softmax", "linear")
KERNEL_INITIALIZERS = ("glorot_uniform", "he_uniform", "zeros")
BIAS_INITIALIZERS = ("zeros",)


class LayerError(ValueError):
    """A layer met an input it cannot take (shape, rank); the message names the layer."""


# --------------------------------------------------------------------------- argument checks

def _positive_int(cls, arg, value):
    if not is_int(value) or value < 1:
        raise ValueError(f"{cls}: `{arg}` must be a positive integer, received {arg}={value!r}")
    return int(value)


def _int_pair(cls, arg, value):
    if is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{cls}: `{arg}` must be an int or a tuple of 2 ints, "
                         f"received {arg}={value!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"{cls}: `{arg}` must be >= 1, received {arg}={value!r}")
    return pair


def _padding(cls, value):
    if not isinstance(value, str) or value.lower() not in ("valid", "same"):
        raise ValueError(f"{cls}: `padding` must be 'valid' or 'same', received padding={value!r}")
    return value.lower()


def _activation(cls, value):
    if value is None:
        return "linear"
    if not isinstance(value, str) or value.lower() not in ACTIVATIONS:
        raise ValueError(f"{cls}: unknown activation {value!r}; choose one of "
                         f"{', '.join(ACTIVATIONS)} (received activation={value!r})")
    return value.lower()


def _choice(cls, arg, value, choices):
    if value not in choices:
        raise ValueError(f"{cls}: `{arg}` must be one of {', '.join(choices)}, "
                         f"received {arg}={value!r}")
    return value


def _shape(cls, arg, value, rank=None):
    """A tuple of positive ints (without the batch axis)."""
    if is_int(value):
        value = (value,)
    if (not isinstance(value, (tuple, list)) or not value
            or not all(is_int(v) and v >= 1 for v in value)):
        raise ValueError(f"{cls}: `{arg}` must be a tuple of positive ints (without the batch "
                         f"axis), received {arg}={value!r}")
    if rank is not None and len(value) != rank:
        raise ValueError(f"{cls}: `{arg}` must have {rank} entries, received {arg}={value!r}")
    return tuple(int(v) for v in value)


def _window_out(layer, what, in_hw, k, s, padding, input_shape):
    """(OH, OW) of the layer's sliding window: the kernels' own formula
    (kernels/_validate.window_geometry), its error reworded as the layer's."""
    try:
        oh, ow, _, _ = window_geometry(f"{layer.__class__.__name__} layer '{layer.name}'",
                                       in_hw, k, s, padding, what)
    except ValueError as exc:
        raise LayerError(f"{exc} (input shape {input_shape})") from None
    return oh, ow


# --------------------------------------------------------------------------- initializers

def glorot_uniform(shape, rng, fan_in, fan_out):
    """Keras glorot_uniform: U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out))."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def he_uniform(shape, rng, fan_in, fan_out):
    """Keras he_uniform: U(-limit, limit), limit = sqrt(6 / fan_in)."""
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def _init_kernel(name, shape, rng, fan_in, fan_out):
    if name == "zeros":
        return np.zeros(shape, np.float32)
    return {"glorot_uniform": glorot_uniform, "he_uniform": he_uniform}[name](
        shape, rng, fan_in, fan_out)


# --------------------------------------------------------------------------- layers

class Layer:
    """Base class. Subclasses set `prefix` (the Keras auto-name stem)."""

    prefix = "layer"
    has_weights = False

    def __init__(self, name=None, input_shape=None):
        cls = self.__class__.__name__
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ValueError(f"{cls}: `name` must be a non-empty string without '/', "
                             f"received name={name!r}")
        self.name = name
        self.input_shape_arg = None if input_shape is None else _shape(
            cls, "input_shape", input_shape, self._input_rank())
        self.built = False
        self.input_shape = None     # (None, ...) once built
        self.output_shape = None
        self.weight_names = ()
        self._weights = []          # arrays on the owning model's backend (NumPy standalone)
        self._K = None              # that backend module; None means host NumPy

    def _input_rank(self):
        return None

    # -- shapes and weights
    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def build(self, input_shape, rng=None):
        """Check `input_shape` (with None for the batch), set the output shape and create
        the weights from `rng` (default: fastconv's global generator, see set_seed)."""
        input_shape = tuple(input_shape)
        self.output_shape = self.compute_output_shape(input_shape)
        self.input_shape = input_shape
        if self.has_weights:
            self._weights = self._make_weights(input_shape, rng or _random.generator())
        self.built = True
        return self.output_shape

    def _make_weights(self, input_shape, rng):
        return []

    def weight_shapes(self):
        return [tuple(w.shape) for w in self._weights]

    def weight_shapes_for(self, input_shape):
        """The shapes build(input_shape) gives the weights, computed without allocating
        them (a model file's config is checked with this before the model is built)."""
        return []

    def count_params(self):
        return int(sum(int(np.prod(s)) for s in self.weight_shapes()))

    def get_weights(self):
        """Host NumPy copies of the weights, in Keras order (kernel, bias)."""
        if self._K is None:
            return [np.array(w, copy=True) for w in self._weights]
        return [np.array(self._K.to_host(w), copy=True) for w in self._weights]

    def set_weights(self, weights):
        """Copy host arrays into the weights (shapes must match, values become float32)."""
        from ._memory import upload
        weights = list(weights)
        if len(weights) != len(self._weights):
            raise ValueError(f"layer '{self.name}' ({self.__class__.__name__}) has "
                             f"{len(self._weights)} weight arrays, received {len(weights)}")
        checked = []
        for wname, mine, new in zip(self.weight_names, self._weights, weights):
            new = np.asarray(new)
            if tuple(new.shape) != tuple(mine.shape):
                raise ValueError(f"layer '{self.name}' ({self.__class__.__name__}): {wname} "
                                 f"must have shape {tuple(mine.shape)}, received {new.shape}")
            if new.dtype.kind not in "fiu":
                raise TypeError(f"layer '{self.name}': {wname} must be numeric, received "
                                f"dtype {new.dtype}")
            checked.append(new)
        for mine, new in zip(self._weights, checked):
            upload(new, mine)

    # -- config
    def get_config(self):
        config = {"name": self.name}
        if self.input_shape_arg is not None:
            config["input_shape"] = list(self.input_shape_arg)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "input_shape" in config and config["input_shape"] is not None:
            config["input_shape"] = tuple(config["input_shape"])
        return cls(**config)

    def __repr__(self):
        return f"<{self.__class__.__name__} name={self.name!r} output_shape={self.output_shape}>"

    def _expect_rank(self, input_shape, rank, what):
        if len(input_shape) != rank:
            raise LayerError(
                f"{self.__class__.__name__} layer '{self.name}' expects a {rank}-D input "
                f"{what}, received input shape {tuple(input_shape)}")


class InputLayer(Layer):
    """The model's input: shape without the batch axis. Shown in no summary (as Keras's
    Sequential), holds no weights and computes nothing."""

    prefix = "input"

    def __init__(self, shape, name=None):
        super().__init__(name=name)
        self.shape = _shape("Input", "shape", shape)
        self.input_shape_arg = self.shape

    def get_config(self):
        return {"name": self.name, "shape": list(self.shape)}

    @classmethod
    def from_config(cls, config):
        return cls(shape=tuple(config["shape"]), name=config.get("name"))


def Input(shape, name=None):
    """Keras's `Input(shape)`: put first in a Sequential to declare the input shape."""
    return InputLayer(shape, name=name)


class Conv2D(Layer):
    """2-D convolution (cross-correlation), channels-last, with a bias.

    Conv2D(filters, kernel_size, strides=1, padding="valid", activation=None,
    input_shape=None). activation='relu' is fused into the kernel when the backend
    has conv2d_relu_forward.
    """

    prefix = "conv2d"
    has_weights = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None,
                 input_shape=None, name=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", data_format="channels_last"):
        cls = "Conv2D"
        self.filters = _positive_int(cls, "filters", filters)
        self.kernel_size = _int_pair(cls, "kernel_size", kernel_size)
        self.strides = _int_pair(cls, "strides", strides)
        self.padding = _padding(cls, padding)
        self.activation = _activation(cls, activation)
        self.kernel_initializer = _choice(cls, "kernel_initializer", kernel_initializer,
                                          KERNEL_INITIALIZERS)
        self.bias_initializer = _choice(cls, "bias_initializer", bias_initializer,
                                        BIAS_INITIALIZERS)
        _choice(cls, "data_format", data_format, ("channels_last",))
        super().__init__(name=name, input_shape=input_shape)
        self.weight_names = ("kernel", "bias")

    def _input_rank(self):
        return 3

    def compute_output_shape(self, input_shape):
        self._expect_rank(input_shape, 4, "(batch, height, width, channels)")
        oh, ow = _window_out(self, "kernel", input_shape[1:3], self.kernel_size, self.strides,
                             self.padding, tuple(input_shape))
        return (None, oh, ow, self.filters)

    def weight_shapes_for(self, input_shape):
        kh, kw = self.kernel_size
        return [(kh, kw, int(input_shape[3]), self.filters), (self.filters,)]

    def _make_weights(self, input_shape, rng):
        kh, kw = self.kernel_size
        c = input_shape[3]
        kernel = _init_kernel(self.kernel_initializer, (kh, kw, c, self.filters), rng,
                              kh * kw * c, kh * kw * self.filters)
        return [kernel, np.zeros(self.filters, np.float32)]

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=list(self.kernel_size),
                      strides=list(self.strides), padding=self.padding,
                      activation=self.activation, kernel_initializer=self.kernel_initializer,
                      bias_initializer=self.bias_initializer)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for k in ("kernel_size", "strides"):
            if isinstance(config.get(k), list):
                config[k] = tuple(config[k])
        return super().from_config(config)


class MaxPooling2D(Layer):
    """MaxPooling2D(pool_size=2, strides=None, padding="valid"); strides default to pool_size."""

    prefix = "max_pooling2d"

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None, input_shape=None,
                 data_format="channels_last"):
        cls = "MaxPooling2D"
        self.pool_size = _int_pair(cls, "pool_size", pool_size)
        self.strides = self.pool_size if strides is None else _int_pair(cls, "strides", strides)
        self.padding = _padding(cls, padding)
        _choice(cls, "data_format", data_format, ("channels_last",))
        super().__init__(name=name, input_shape=input_shape)

    def _input_rank(self):
        return 3

    def compute_output_shape(self, input_shape):
        self._expect_rank(input_shape, 4, "(batch, height, width, channels)")
        oh, ow = _window_out(self, "pool", input_shape[1:3], self.pool_size, self.strides,
                             self.padding, tuple(input_shape))
        return (None, oh, ow, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=list(self.pool_size), strides=list(self.strides),
                      padding=self.padding)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for k in ("pool_size", "strides"):
            if isinstance(config.get(k), list):
                config[k] = tuple(config[k])
        return super().from_config(config)


class Activation(Layer):
    """Activation("relu" | "sigmoid" | "softmax" | "linear"). softmax acts on (None, K)."""

    prefix = "activation"

    def __init__(self, activation, name=None, input_shape=None):
        if activation is None:
            raise ValueError("Activation: `activation` must be one of "
                             f"{', '.join(ACTIVATIONS)}, received activation=None")
        self.activation = _activation("Activation", activation)
        super().__init__(name=name, input_shape=input_shape)

    def compute_output_shape(self, input_shape):
        if self.activation == "softmax":
            self._expect_rank(input_shape, 2, "(batch, classes) for softmax")
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["activation"] = self.activation
        return config


class Flatten(Layer):
    """(None, d1, d2, ...) -> (None, d1 * d2 * ...), a view: costs nothing."""

    prefix = "flatten"

    def __init__(self, name=None, input_shape=None, data_format="channels_last"):
        _choice("Flatten", "data_format", data_format, ("channels_last",))
        super().__init__(name=name, input_shape=input_shape)

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 2:
            raise LayerError(f"Flatten layer '{self.name}' needs an input with a batch axis and "
                             f"at least one more, received input shape {tuple(input_shape)}")
        return (None, int(np.prod(input_shape[1:])))


class Dense(Layer):
    """Dense(units, activation=None, input_shape=None): y = x @ kernel + bias on (None, IN)."""

    prefix = "dense"
    has_weights = True

    def __init__(self, units, activation=None, input_shape=None, name=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros"):
        cls = "Dense"
        self.units = _positive_int(cls, "units", units)
        self.activation = _activation(cls, activation)
        self.kernel_initializer = _choice(cls, "kernel_initializer", kernel_initializer,
                                          KERNEL_INITIALIZERS)
        self.bias_initializer = _choice(cls, "bias_initializer", bias_initializer,
                                        BIAS_INITIALIZERS)
        super().__init__(name=name, input_shape=input_shape)
        self.weight_names = ("kernel", "bias")

    def _input_rank(self):
        return 1

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise LayerError(
                f"Dense layer '{self.name}' expects a 2-D input (batch, features), received "
                f"input shape {tuple(input_shape)}; add a Flatten() layer before it")
        return (None, self.units)

    def weight_shapes_for(self, input_shape):
        return [(int(input_shape[1]), self.units), (self.units,)]

    def _make_weights(self, input_shape, rng):
        n_in = input_shape[1]
        kernel = _init_kernel(self.kernel_initializer, (n_in, self.units), rng, n_in, self.units)
        return [kernel, np.zeros(self.units, np.float32)]

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=self.activation,
                      kernel_initializer=self.kernel_initializer,
                      bias_initializer=self.bias_initializer)
        return config


class Dropout(Layer):
    """Dropout(rate): inverted dropout in training (masks from the model's seeded
    generator, drawn on the host so every backend sees the same mask); identity otherwise."""

    prefix = "dropout"

    def __init__(self, rate, name=None, input_shape=None, seed=None):
        if not is_number(rate) or not 0 <= float(rate) < 1:
            raise ValueError(f"Dropout: `rate` must be a float in [0, 1), received rate={rate!r}")
        self.rate = float(rate)
        self.seed = _random.check_seed("Dropout", seed)
        super().__init__(name=name, input_shape=input_shape)

    def get_config(self):
        config = super().get_config()
        config["rate"] = self.rate
        if self.seed is not None:
            config["seed"] = self.seed
        return config


LAYERS = {cls.__name__: cls for cls in
          (InputLayer, Conv2D, MaxPooling2D, Activation, Flatten, Dense, Dropout)}


def serialize(layer):
    return {"class_name": layer.__class__.__name__, "config": layer.get_config()}


def deserialize(spec):
    """A layer from {"class_name": ..., "config": {...}} (what serialize() writes)."""
    if not isinstance(spec, dict) or "class_name" not in spec or "config" not in spec:
        raise ValueError(f"a layer spec must be a dict with 'class_name' and 'config', "
                         f"received {spec!r:.120}")
    cls = LAYERS.get(spec["class_name"])
    if cls is None:
        raise ValueError(f"unknown layer class {spec['class_name']!r}; fastconv knows "
                         f"{', '.join(LAYERS)}")
    if not isinstance(spec["config"], dict):
        raise ValueError(f"layer config must be a dict, received {spec['config']!r:.120}")
    return cls.from_config(spec["config"])


__all__ = ["Layer", "LayerError", "Input", "InputLayer", "Conv2D", "MaxPooling2D",
           "Activation", "Flatten", "Dense", "Dropout", "serialize", "deserialize",
           "ACTIVATIONS"]

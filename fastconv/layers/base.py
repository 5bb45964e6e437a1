"""What every layer shares: the Layer base class, argument checks that name the layer
and show the received value, and the weight initializers (Keras's glorot_uniform,
he_uniform, zeros).
"""
from __future__ import annotations

import math

import numpy as np

from .. import _random
from .._args import is_int
from ..kernels._validate import window_geometry
from .graph import call_layer

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


def _flag(cls, arg, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{cls}: `{arg}` must be True or False, received {arg}={value!r}")
    return bool(value)


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


# --------------------------------------------------------------------------- the base class

class Layer:
    """Base class. Subclasses set `prefix` (the Keras auto-name stem)."""

    prefix = "layer"
    has_weights = False
    is_input = False            # InputLayer: not callable (layers.graph)
    pair_args = ()              # the (int, int) arguments get_config writes as lists

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
        self._inbound = None        # Functional API: the KerasTensors it was called on

    def _input_rank(self):
        return None

    def __call__(self, inputs):
        """Functional API: this layer applied to KerasTensor(s) (a list for Add and
        Concatenate); returns the output KerasTensor. See layers.graph."""
        return call_layer(self, inputs)

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

    def trainable_weight_count(self):
        """How many of the weights, from the first, the optimizer trains; the rest (a
        BatchNormalization's moving statistics) are updated by the layer itself."""
        return len(self.weight_names)

    def count_trainable_params(self):
        return int(sum(int(np.prod(s))
                       for s in self.weight_shapes()[:self.trainable_weight_count()]))

    def get_weights(self):
        """Host NumPy copies of the weights, in Keras order (kernel, bias)."""
        if self._K is None:
            return [np.array(w, copy=True) for w in self._weights]
        return [np.array(self._K.to_host(w), copy=True) for w in self._weights]

    def set_weights(self, weights):
        """Copy host arrays into the weights (shapes must match, values become float32)."""
        from .._memory import upload
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
        for k in cls.pair_args:             # JSON lists back to the tuples get_config listed
            if isinstance(config.get(k), list):
                config[k] = tuple(config[k])
        return cls(**config)

    def __repr__(self):
        return f"<{self.__class__.__name__} name={self.name!r} output_shape={self.output_shape}>"

    def _expect_rank(self, input_shape, rank, what):
        if len(input_shape) != rank:
            raise LayerError(
                f"{self.__class__.__name__} layer '{self.name}' expects a {rank}-D input "
                f"{what}, received input shape {tuple(input_shape)}")

"""Symbolic tensors of the Functional API (Keras's KerasTensor).

    inputs = fastconv.Input((32, 32, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    y = layers.Add()([x, inputs])

`Input(shape)` returns a KerasTensor made by an InputLayer; calling a layer on
KerasTensors (`layer(x)`, a list for Add/Concatenate) checks the shapes and returns the
layer's output KerasTensor, recording the call (the layer and the tensors it read). No
weights exist yet: fastconv.Model(inputs, outputs) walks these records, orders the layers
and builds them from the model's seeded generator, so a model's seed fixes its
initialisation as for Sequential. A layer is called at most once (fastconv does not share
one layer's weights between two calls yet; make a second layer).
"""
from __future__ import annotations


class KerasTensor:
    """A symbolic tensor: shape (None for the batch, e.g. (None, 32, 32, 3)), the layer
    that produced it (an InputLayer for a model input) and the tensors that layer read
    (empty for an input). Holds no data."""

    __slots__ = ("shape", "layer", "inputs")

    def __init__(self, shape, layer, inputs=()):
        self.shape = tuple(shape)
        self.layer = layer
        self.inputs = tuple(inputs)

    @property
    def name(self):
        return self.layer.name

    @property
    def dtype(self):
        return "float32"

    def __repr__(self):
        who = self.layer.name or self.layer.prefix
        return f"<KerasTensor shape={self.shape}, created by layer '{who}'>"

    def __array__(self, *args, **kwargs):
        raise TypeError(
            f"{self!r} is symbolic (a Functional API tensor): it holds no values; build a "
            f"fastconv.Model(inputs, outputs) and call predict()")


def call_layer(layer, inputs):
    """layer(inputs) on KerasTensors: the output KerasTensor (see the module docstring)."""
    cls = layer.__class__.__name__
    who = f"{cls} layer '{layer.name or layer.prefix}'"
    if getattr(layer, "is_input", False):
        raise TypeError(f"{who} cannot be called; use fastconv.Input(shape) for a model input")
    if getattr(layer, "_inbound", None) is not None:
        raise ValueError(
            f"{who} was already called (on {_shapes(layer._inbound)}); fastconv does not "
            f"share one layer's weights between two calls yet: make a second layer")
    if layer.built:
        raise ValueError(
            f"{who} is already built (it belongs to a model); the Functional API needs "
            f"fresh layers, which fastconv.Model builds")
    many = getattr(layer, "takes_list", False)
    if many:
        if (not isinstance(inputs, (list, tuple))
                or not all(isinstance(t, KerasTensor) for t in inputs)):
            raise TypeError(f"{who} must be called on a list of KerasTensors (e.g. from "
                            f"fastconv.Input or another layer), received {_describe(inputs)}")
        tensors = tuple(inputs)
        shape = layer.compute_output_shape_multi([t.shape for t in tensors])
    else:
        if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
            inputs = inputs[0]
        if not isinstance(inputs, KerasTensor):
            raise TypeError(f"{who} must be called on a KerasTensor (from fastconv.Input or "
                            f"another layer), received {_describe(inputs)}")
        if layer.input_shape_arg is not None and (None,) + layer.input_shape_arg != inputs.shape:
            raise ValueError(f"{who} declares input_shape {layer.input_shape_arg} but is "
                             f"called on a tensor of shape {inputs.shape}")
        tensors = (inputs,)
        shape = layer.compute_output_shape(inputs.shape)
    layer._inbound = tensors
    return KerasTensor(shape, layer, tensors)


def _shapes(tensors):
    return ", ".join(str(t.shape) for t in tensors)


def _describe(value):
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of " + ", ".join(
            type(v).__name__ for v in value[:4]) + (" ..." if len(value) > 4 else "")
    return f"{type(value).__name__} {value!r:.80}"

"""Keras-style layers: Conv2D, DepthwiseConv2D, SeparableConv2D, MaxPooling2D,
AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, Activation, Flatten, Dense,
Dropout, Rescaling, BatchNormalization, Input, the merge layers Add and Concatenate of
the Functional API (layers.graph: KerasTensor), and the augmentation layers RandomFlip,
RandomRotation, RandomZoom and RandomTranslation (active only in training;
layers.augmentation).

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
from .augmentation import RandomFlip, RandomRotation, RandomTranslation, RandomZoom
from .base import ACTIVATIONS, Layer, LayerError
from .convolutional import Conv2D, DepthwiseConv2D, SeparableConv2D
from .core import Activation, Dense, Dropout, Flatten, Input, InputLayer
from .graph import KerasTensor
from .merge import Add, Concatenate
from .normalization import BatchNormalization
from .pooling import (AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D,
                      MaxPooling2D)
from .preprocessing import Rescaling

LAYERS = {cls.__name__: cls for cls in
          (InputLayer, Conv2D, DepthwiseConv2D, SeparableConv2D, MaxPooling2D,
           AveragePooling2D, Activation, Flatten, Dense, Dropout, GlobalAveragePooling2D,
           GlobalMaxPooling2D, Rescaling, BatchNormalization, Add, Concatenate, RandomFlip,
           RandomRotation, RandomZoom, RandomTranslation)}


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


__all__ = ["Layer", "LayerError", "Input", "InputLayer", "Conv2D", "DepthwiseConv2D",
           "SeparableConv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
           "GlobalMaxPooling2D", "Activation", "Flatten", "Dense",
           "Dropout", "Rescaling", "BatchNormalization", "Add", "Concatenate", "KerasTensor",
           "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
           "serialize", "deserialize",
           "ACTIVATIONS"]

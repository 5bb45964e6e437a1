"""Merge layers of the Functional API: Add and Concatenate (Keras names and checks).

Called on a list of KerasTensors: `Add()([a, b])`, `Concatenate(axis=-1)([a, b])`.
The plan runs them with the merge ops (kernels add_forward, concat_forward,
concat_backward); Add's backward is the identity for every input.
"""
from __future__ import annotations

from .._args import is_int
from .base import Layer, LayerError


class _Merge(Layer):
    takes_list = True

    def _check_count(self, shapes):
        cls = self.__class__.__name__
        if len(shapes) < 2:
            raise ValueError(f"{cls} layer '{self.name or self.prefix}' must be called on a "
                             f"list of at least 2 inputs, received {len(shapes)} input(s)")

    def build(self, input_shape, rng=None):
        """input_shape: the list of the inputs' shapes (None for the batch)."""
        if not isinstance(input_shape, list):
            self.compute_output_shape(input_shape)            # raises: a Sequential's
        shapes = [tuple(s) for s in input_shape]
        self.output_shape = self.compute_output_shape_multi(shapes)
        self.input_shape = shapes
        self.built = True
        return self.output_shape

    def compute_output_shape(self, input_shape):
        raise LayerError(f"{self.__class__.__name__} layer '{self.name or self.prefix}' "
                         f"merges several inputs; call it on a list (Functional API), it "
                         f"cannot be a layer of a Sequential model")


class Add(_Merge):
    """Add(): y = x_0 + x_1 + ... (Keras Add) for inputs of one shape."""

    prefix = "add"

    def compute_output_shape_multi(self, shapes):
        self._check_count(shapes)
        shapes = [tuple(s) for s in shapes]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"Add layer '{self.name or self.prefix}' needs inputs of one "
                             f"shape, received shapes {', '.join(map(str, shapes))}")
        return shapes[0]


class Concatenate(_Merge):
    """Concatenate(axis=-1): the inputs joined over the channel (last) axis, Keras's
    default; the other axes must match. Only the last axis is supported."""

    prefix = "concatenate"

    def __init__(self, axis=-1, name=None):
        if not is_int(axis):
            raise ValueError(f"Concatenate: `axis` must be an int, received axis={axis!r}")
        self.axis = int(axis)
        super().__init__(name=name)

    def compute_output_shape_multi(self, shapes):
        self._check_count(shapes)
        shapes = [tuple(s) for s in shapes]
        who = f"Concatenate layer '{self.name or self.prefix}'"
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes):
            raise ValueError(f"{who} needs inputs of one rank, received shapes "
                             f"{', '.join(map(str, shapes))}")
        if self.axis not in (-1, rank - 1):
            raise ValueError(f"{who}: only the last axis (axis=-1 or {rank - 1}) is supported "
                             f"(channels-last), received axis={self.axis}")
        if any(s[:-1] != shapes[0][:-1] for s in shapes):
            raise ValueError(f"{who} needs inputs that match except on the concatenation "
                             f"axis, received shapes {', '.join(map(str, shapes))}")
        return shapes[0][:-1] + (sum(s[-1] for s in shapes),)

    def get_config(self):
        config = super().get_config()
        config["axis"] = self.axis
        return config

"""Conv2D: 2-D convolution over NHWC images, Keras's kernel layout (KH, KW, C_in, C_out)."""
from __future__ import annotations

import numpy as np

from . import regularizers
from .base import (BIAS_INITIALIZERS, KERNEL_INITIALIZERS, Layer, _activation, _choice,
                   _init_kernel, _int_pair, _padding, _positive_int, _window_out)


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
                 bias_initializer="zeros", data_format="channels_last", kernel_regularizer=None,
                 bias_regularizer=None):
        cls = "Conv2D"
        self.kernel_regularizer = regularizers.get(kernel_regularizer,
                                                   f"{cls}: kernel_regularizer")
        self.bias_regularizer = regularizers.get(bias_regularizer, f"{cls}: bias_regularizer")
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
        config.update(regularizers.configs(self))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for k in ("kernel_size", "strides"):
            if isinstance(config.get(k), list):
                config[k] = tuple(config[k])
        return super().from_config(config)

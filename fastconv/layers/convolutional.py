"""Conv2D: 2-D convolution over NHWC images, Keras's kernel layout (KH, KW, C_in, C_out);
DepthwiseConv2D (kernel (KH, KW, C, M)) and SeparableConv2D (that, then a 1x1 Conv2D:
pointwise kernel (1, 1, C*M, filters))."""
from __future__ import annotations

import numpy as np

from . import regularizers
from .base import (BIAS_INITIALIZERS, KERNEL_INITIALIZERS, Layer, _activation, _choice, _flag,
                   _init_kernel, _int_pair, _padding, _positive_int, _window_out)


class Conv2D(Layer):
    """2-D convolution (cross-correlation), channels-last, with a bias.

    Conv2D(filters, kernel_size, strides=1, padding="valid", activation=None,
    input_shape=None). activation='relu' is fused into the kernel when the backend
    has conv2d_relu_forward.
    """

    prefix = "conv2d"
    has_weights = True
    pair_args = ("kernel_size", "strides")

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


def _no_dilation(cls, dilation_rate):
    if _int_pair(cls, "dilation_rate", dilation_rate) != (1, 1):
        raise ValueError(f"{cls}: only dilation_rate=1 is supported, received "
                         f"dilation_rate={dilation_rate!r}")


class DepthwiseConv2D(Layer):
    """Depthwise 2-D convolution, channels-last: each input channel c convolved with its own
    depth_multiplier (M) kernels; output channel c*M + m (Keras 3's order).

    DepthwiseConv2D(kernel_size, strides=1, padding="valid", depth_multiplier=1,
    activation=None, use_bias=True, input_shape=None). Weights, Keras's order:
    depthwise_kernel (KH, KW, C, M) (glorot_uniform, Keras's fans: KH*KW*C in,
    KH*KW*M out), bias (C*M,) (zeros) when use_bias.
    """

    prefix = "depthwise_conv2d"
    has_weights = True
    pair_args = ("kernel_size", "strides")

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1,
                 activation=None, use_bias=True, input_shape=None, name=None,
                 depthwise_initializer="glorot_uniform", bias_initializer="zeros",
                 data_format="channels_last", dilation_rate=1):
        cls = type(self).__name__
        self.kernel_size = _int_pair(cls, "kernel_size", kernel_size)
        self.strides = _int_pair(cls, "strides", strides)
        self.padding = _padding(cls, padding)
        self.depth_multiplier = _positive_int(cls, "depth_multiplier", depth_multiplier)
        self.activation = _activation(cls, activation)
        self.use_bias = _flag(cls, "use_bias", use_bias)
        self.depthwise_initializer = _choice(cls, "depthwise_initializer",
                                             depthwise_initializer, KERNEL_INITIALIZERS)
        self.bias_initializer = _choice(cls, "bias_initializer", bias_initializer,
                                        BIAS_INITIALIZERS)
        _choice(cls, "data_format", data_format, ("channels_last",))
        _no_dilation(cls, dilation_rate)
        super().__init__(name=name, input_shape=input_shape)
        self.weight_names = ("depthwise_kernel",) + (("bias",) if self.use_bias else ())

    def _input_rank(self):
        return 3

    def _out_channels(self, input_shape):
        return int(input_shape[3]) * self.depth_multiplier

    def compute_output_shape(self, input_shape):
        self._expect_rank(input_shape, 4, "(batch, height, width, channels)")
        oh, ow = _window_out(self, "kernel", input_shape[1:3], self.kernel_size, self.strides,
                             self.padding, tuple(input_shape))
        return (None, oh, ow, self._out_channels(input_shape))

    def weight_shapes_for(self, input_shape):
        kh, kw = self.kernel_size
        shapes = [(kh, kw, int(input_shape[3]), self.depth_multiplier)]
        return shapes + [(self._out_channels(input_shape),)] * self.use_bias

    def _depthwise_kernel(self, input_shape, rng):
        kh, kw = self.kernel_size
        c, m = int(input_shape[3]), self.depth_multiplier
        return _init_kernel(self.depthwise_initializer, (kh, kw, c, m), rng, kh * kw * c,
                            kh * kw * m)

    def _make_weights(self, input_shape, rng):
        bias = [np.zeros(self._out_channels(input_shape), np.float32)] * self.use_bias
        return [self._depthwise_kernel(input_shape, rng)] + bias

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=list(self.kernel_size), strides=list(self.strides),
                      padding=self.padding, depth_multiplier=self.depth_multiplier,
                      activation=self.activation, use_bias=self.use_bias,
                      depthwise_initializer=self.depthwise_initializer,
                      bias_initializer=self.bias_initializer)
        return config


class SeparableConv2D(DepthwiseConv2D):
    """Depthwise separable 2-D convolution: a DepthwiseConv2D (strides and padding here,
    no bias) then a 1x1 stride-1 Conv2D to `filters` channels with the bias, then the
    activation, as Keras 3.

    SeparableConv2D(filters, kernel_size, strides=1, padding="valid", depth_multiplier=1,
    activation=None, use_bias=True, input_shape=None). Weights, Keras's order:
    depthwise_kernel (KH, KW, C, M), pointwise_kernel (1, 1, C*M, filters) (both
    glorot_uniform with Keras's fans), bias (filters,) (zeros) when use_bias.
    """

    prefix = "separable_conv2d"

    def __init__(self, filters, kernel_size, strides=1, padding="valid", depth_multiplier=1,
                 activation=None, use_bias=True, input_shape=None, name=None,
                 depthwise_initializer="glorot_uniform", pointwise_initializer="glorot_uniform",
                 bias_initializer="zeros", data_format="channels_last", dilation_rate=1):
        cls = type(self).__name__
        self.filters = _positive_int(cls, "filters", filters)
        self.pointwise_initializer = _choice(cls, "pointwise_initializer",
                                             pointwise_initializer, KERNEL_INITIALIZERS)
        super().__init__(kernel_size, strides=strides, padding=padding,
                         depth_multiplier=depth_multiplier, activation=activation,
                         use_bias=use_bias, input_shape=input_shape, name=name,
                         depthwise_initializer=depthwise_initializer,
                         bias_initializer=bias_initializer, data_format=data_format,
                         dilation_rate=dilation_rate)
        self.weight_names = ("depthwise_kernel", "pointwise_kernel") + (
            ("bias",) if self.use_bias else ())

    def _out_channels(self, input_shape):
        return self.filters

    def weight_shapes_for(self, input_shape):
        kh, kw = self.kernel_size
        cm = int(input_shape[3]) * self.depth_multiplier
        return [(kh, kw, int(input_shape[3]), self.depth_multiplier),
                (1, 1, cm, self.filters)] + [(self.filters,)] * self.use_bias

    def _make_weights(self, input_shape, rng):
        cm = int(input_shape[3]) * self.depth_multiplier
        depthwise = self._depthwise_kernel(input_shape, rng)
        pointwise = _init_kernel(self.pointwise_initializer, (1, 1, cm, self.filters), rng,
                                 cm, self.filters)
        return [depthwise, pointwise] + [np.zeros(self.filters, np.float32)] * self.use_bias

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, pointwise_initializer=self.pointwise_initializer)
        return config

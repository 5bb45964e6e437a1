"""MaxPooling2D and AveragePooling2D: max or mean over windows of NHWC images (any pool
size, stride and padding; AveragePooling2D's 'same' divides by the real pixels of each
window, as Keras), and the global poolings."""
from __future__ import annotations

from .base import Layer, _choice, _int_pair, _padding, _window_out


class _Pooling2D(Layer):
    """pool_size, strides (default pool_size) and padding of a windowed pooling layer."""

    pair_args = ("pool_size", "strides")

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None, input_shape=None,
                 data_format="channels_last"):
        cls = self.__class__.__name__
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


class MaxPooling2D(_Pooling2D):
    """MaxPooling2D(pool_size=2, strides=None, padding="valid"); strides default to pool_size."""

    prefix = "max_pooling2d"


class AveragePooling2D(_Pooling2D):
    """AveragePooling2D(pool_size=2, strides=None, padding="valid"); strides default to
    pool_size. The mean over each window's real pixels: with padding='same' a window that
    overhangs the edge divides by the pixels inside it (Keras's rule)."""

    prefix = "average_pooling2d"


class _GlobalPooling2D(Layer):
    """(None, H, W, C) -> (None, C): Keras's keepdims=False, channels_last only."""

    def __init__(self, name=None, input_shape=None, data_format="channels_last",
                 keepdims=False):
        cls = self.__class__.__name__
        _choice(cls, "data_format", data_format, ("channels_last",))
        if keepdims is not False:
            raise ValueError(f"{cls}: only keepdims=False is supported (output (batch, "
                             f"channels)), received keepdims={keepdims!r}")
        super().__init__(name=name, input_shape=input_shape)

    def _input_rank(self):
        return 3

    def compute_output_shape(self, input_shape):
        self._expect_rank(input_shape, 4, "(batch, height, width, channels)")
        return (None, input_shape[3])


class GlobalAveragePooling2D(_GlobalPooling2D):
    """GlobalAveragePooling2D(): y[n, c] = mean of x[n, :, :, c]."""

    prefix = "global_average_pooling2d"


class GlobalMaxPooling2D(_GlobalPooling2D):
    """GlobalMaxPooling2D(): y[n, c] = max of x[n, :, :, c] (the gradient goes to the
    first maximum in row-major order)."""

    prefix = "global_max_pooling2d"

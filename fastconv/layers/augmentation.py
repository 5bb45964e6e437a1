"""Keras 3's image augmentation layers: RandomFlip, RandomRotation, RandomZoom,
RandomTranslation. Active only in training (fit, train_on_batch); evaluate and predict
pass the images through unchanged, as Keras does with training=False.

Each layer draws, per image, one affine map (output pixel (row, col) -> the input point
it samples, about the image centre ((H - 1) / 2, (W - 1) / 2)) from its generator: the
layer's own `seed=` or, without one, the model's dropout stream (fastconv._random), so the
same seed gives the same images. Consecutive augmentation layers with the same fill
compose their maps, and each image is warped once, bilinearly, by the data pipeline's
kernel (fastconv.data.warp.affine_warp; fill modes reflect | wrap | constant | nearest,
Keras's default "reflect" = d c b a | a b c d | d c b a). A flip alone is exact.

Gradients: none flow through an augmentation layer. It belongs at the input (after the
Input, a Rescaling or another augmentation layer, or anywhere no layer before it has
weights); a model that would need a gradient through one is refused when its training
plan is made, with a message naming the layer (models/_plan.AugmentStep).
"""
from __future__ import annotations

import math

from .. import _random
from .._args import is_number
from .base import Layer, _choice

FILL_MODES = ("reflect", "wrap", "constant", "nearest")
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def compose(m1, m2):
    """The affine map m1 after m2 (both (a, b, c, d, e, f): in_row = a*r + b*c + c0,
    in_col = d*r + e*c + f0): the input point of m1 at m2's input point of (r, c). A layer
    applied after another samples through the earlier one: compose(earlier, later)."""
    a1, b1, c1, d1, e1, f1 = m1
    a2, b2, c2, d2, e2, f2 = m2
    return (a1 * a2 + b1 * d2, a1 * b2 + b1 * e2, a1 * c2 + b1 * f2 + c1,
            d1 * a2 + e1 * d2, d1 * b2 + e1 * e2, d1 * c2 + e1 * f2 + f1)


def _factor(cls, arg, value, bound=None, lower_limit=None):
    """Keras's factor: a number f means (-f, f), a pair (lo, hi) with lo <= hi."""
    if is_number(value):
        lo, hi = -abs(float(value)), abs(float(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(is_number(v) for v in value)):
        lo, hi = float(value[0]), float(value[1])
    else:
        raise ValueError(f"{cls}: `{arg}` must be a number or a pair (lower, upper), "
                         f"received {arg}={value!r}")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{cls}: `{arg}` must be finite, received {arg}={value!r}")
    if hi < lo:
        raise ValueError(f"{cls}: `{arg}` cannot have an upper bound lesser than the lower "
                         f"bound, received {arg}={value!r}")
    if bound is not None and (abs(lo) > bound or abs(hi) > bound):
        raise ValueError(f"{cls}: `{arg}` must have values between [-{bound:g}, {bound:g}], "
                         f"received {arg}={value!r}")
    if lower_limit is not None and lo < lower_limit:
        raise ValueError(f"{cls}: `{arg}` must have values larger than {lower_limit:g}, "
                         f"received {arg}={value!r}")
    return lo, hi


class _Augmentation(Layer):
    """An augmentation layer: (None, H, W, C) -> the same shape, no weights."""

    fill_mode = None            # None: exact (a flip); compatible with any fill
    fill_value = 0.0

    def __init__(self, seed=None, name=None, input_shape=None, data_format=None):
        cls = self.__class__.__name__
        self.seed = _random.check_seed(cls, seed)
        if data_format is not None:
            _choice(cls, "data_format", data_format, ("channels_last",))
        super().__init__(name=name, input_shape=input_shape)

    def _input_rank(self):
        return 3

    def compute_output_shape(self, input_shape):
        self._expect_rank(input_shape, 4, "(batch, height, width, channels)")
        return tuple(input_shape)

    def draw(self, rng, h, w):
        """One image's map (a, b, c, d, e, f) from Generator rng, for an H x W image."""
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        if self.seed is not None:
            config["seed"] = self.seed
        return config


class _FilledAugmentation(_Augmentation):
    """fill_mode, interpolation (bilinear only) and fill_value, Keras 3's defaults."""

    def __init__(self, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, name=None, input_shape=None, data_format=None):
        cls = self.__class__.__name__
        self.fill_mode = _choice(cls, "fill_mode", fill_mode, FILL_MODES)
        self.interpolation = _choice(cls, "interpolation", interpolation, ("bilinear",))
        if not is_number(fill_value) or not math.isfinite(float(fill_value)):
            raise ValueError(f"{cls}: `fill_value` must be a finite number, received "
                             f"fill_value={fill_value!r}")
        self.fill_value = float(fill_value)
        super().__init__(seed=seed, name=name, input_shape=input_shape,
                         data_format=data_format)

    def get_config(self):
        config = super().get_config()
        config.update(fill_mode=self.fill_mode, interpolation=self.interpolation,
                      fill_value=self.fill_value)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key, value in config.items():
            if isinstance(value, list) and key.endswith("factor"):
                config[key] = tuple(value)
        return super().from_config(config)


class RandomFlip(_Augmentation):
    """RandomFlip(mode="horizontal_and_vertical", seed=None): each image mirrored left-right
    ("horizontal") and/or top-bottom ("vertical") with probability 1/2 each."""

    prefix = "random_flip"
    MODES = ("horizontal", "vertical", "horizontal_and_vertical")

    def __init__(self, mode="horizontal_and_vertical", seed=None, name=None,
                 input_shape=None, data_format=None):
        self.mode = _choice("RandomFlip", "mode", mode, self.MODES)
        super().__init__(seed=seed, name=name, input_shape=input_shape,
                         data_format=data_format)

    def draw(self, rng, h, w):
        a, c, e, f = 1.0, 0.0, 1.0, 0.0
        if self.mode != "vertical" and rng.random() < 0.5:
            e, f = -1.0, w - 1.0                       # in_col = (W - 1) - col
        if self.mode != "horizontal" and rng.random() < 0.5:
            a, c = -1.0, h - 1.0                       # in_row = (H - 1) - row
        return (a, 0.0, c, 0.0, e, f)

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config


class RandomRotation(_FilledAugmentation):
    """RandomRotation(factor, fill_mode="reflect", interpolation="bilinear", seed=None,
    fill_value=0.0): rotate by an angle drawn from factor * 2 pi (a number f: [-f, f],
    or a pair); positive angles turn the image counter-clockwise, as Keras."""

    prefix = "random_rotation"

    def __init__(self, factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, name=None, input_shape=None, data_format=None):
        self.factor = _factor("RandomRotation", "factor", factor)
        super().__init__(fill_mode, interpolation, seed, fill_value, name, input_shape,
                         data_format)

    def draw(self, rng, h, w):
        lo, hi = self.factor
        t = rng.uniform(lo, hi) * 2.0 * math.pi
        cos, sin = math.cos(t), math.sin(t)
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        # in = R(-t) (out - centre) + centre, (row, col) with rows pointing down
        return (cos, sin, cy - cos * cy - sin * cx, -sin, cos, cx + sin * cy - cos * cx)

    def get_config(self):
        config = super().get_config()
        config["factor"] = list(self.factor)
        return config


class RandomZoom(_FilledAugmentation):
    """RandomZoom(height_factor, width_factor=None, fill_mode="reflect",
    interpolation="bilinear", seed=None, fill_value=0.0): zoom by 1 + a draw from the
    factor (a number f: [-f, f], or a pair; values > -1); positive zooms out, negative
    in. width_factor None keeps the aspect ratio (the height's draw)."""

    prefix = "random_zoom"

    def __init__(self, height_factor, width_factor=None, fill_mode="reflect",
                 interpolation="bilinear", seed=None, fill_value=0.0, name=None,
                 input_shape=None, data_format=None):
        self.height_factor = _factor("RandomZoom", "height_factor", height_factor,
                                     lower_limit=-1.0)
        self.width_factor = None if width_factor is None else _factor(
            "RandomZoom", "width_factor", width_factor, lower_limit=-1.0)
        super().__init__(fill_mode, interpolation, seed, fill_value, name, input_shape,
                         data_format)

    def draw(self, rng, h, w):
        zh = 1.0 + rng.uniform(*self.height_factor)
        zw = zh if self.width_factor is None else 1.0 + rng.uniform(*self.width_factor)
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        return (zh, 0.0, cy * (1.0 - zh), 0.0, zw, cx * (1.0 - zw))

    def get_config(self):
        config = super().get_config()
        config.update(height_factor=list(self.height_factor),
                      width_factor=None if self.width_factor is None
                      else list(self.width_factor))
        return config


class RandomTranslation(_FilledAugmentation):
    """RandomTranslation(height_factor, width_factor, fill_mode="reflect",
    interpolation="bilinear", seed=None, fill_value=0.0): shift by a draw from each
    factor (a number f: [-f, f], or a pair, in [-1, 1]) times the height / width;
    positive moves the image down / right."""

    prefix = "random_translation"

    def __init__(self, height_factor, width_factor, fill_mode="reflect",
                 interpolation="bilinear", seed=None, fill_value=0.0, name=None,
                 input_shape=None, data_format=None):
        self.height_factor = _factor("RandomTranslation", "height_factor", height_factor,
                                     bound=1.0)
        self.width_factor = _factor("RandomTranslation", "width_factor", width_factor,
                                    bound=1.0)
        super().__init__(fill_mode, interpolation, seed, fill_value, name, input_shape,
                         data_format)

    def draw(self, rng, h, w):
        dh = rng.uniform(*self.height_factor) * h
        dw = rng.uniform(*self.width_factor) * w
        return (1.0, 0.0, -dh, 0.0, 1.0, -dw)

    def get_config(self):
        config = super().get_config()
        config.update(height_factor=list(self.height_factor),
                      width_factor=list(self.width_factor))
        return config


AUGMENTATION_LAYERS = (RandomFlip, RandomRotation, RandomZoom, RandomTranslation)


def fill_of(layers):
    """(fill_mode, fill_value) of a run of augmentation layers (one warp), or None when
    two of them fill differently (they then warp separately). A flip has no fill."""
    fills = {(l.fill_mode, l.fill_value) for l in layers if l.fill_mode is not None}
    if len(fills) > 1:
        return None
    return fills.pop() if fills else ("reflect", 0.0)


def augment_batch(layers, rngs, x, out, matrix, first=0, total=None):
    """out[i] = x[i] (N, H, W, C float32 host arrays) warped by the composition of each
    layer's draw (layers in order; rngs[k] is layer k's generator), one bilinear warp per
    image. matrix: a (2, 3) float64 scratch array the caller owns. Returns out.
    first, total: x is images first..first+N of a global batch of `total` (distributed
    training): the draws of all `total` images are made, in order, and x's used."""
    from ..data.warp import affine_warp

    fill = fill_of(layers)
    if fill is None:
        raise ValueError("augment_batch: the layers fill differently: "
                         + ", ".join(f"{l.name} {l.fill_mode}" for l in layers))
    n, h, w = x.shape[0], x.shape[1], x.shape[2]
    total = n if total is None else total
    for j in range(total):
        m = IDENTITY
        for layer, rng in zip(layers, rngs):
            m = compose(m, layer.draw(rng, h, w))
        i = j - first
        if not 0 <= i < n:
            continue
        matrix[0, 0], matrix[0, 1], matrix[0, 2] = m[0], m[1], m[2]
        matrix[1, 0], matrix[1, 1], matrix[1, 2] = m[3], m[4], m[5]
        affine_warp(x[i], matrix, out=out[i], fill_mode=fill[0], cval=fill[1])
    return out

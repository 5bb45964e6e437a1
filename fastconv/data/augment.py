"""Random geometric augmentation with Keras ImageDataGenerator's semantics.

Each image gets its own parameters, drawn from a numpy Generator in Keras's
order (rotation, height shift, width shift, shear, zoom, flips), composed into
ONE affine matrix (flips folded in) and applied by one bilinear warp
(`warp.affine_warp`, Numba, no GIL).

Units follow keras-preprocessing (Keras >= 2.2): rotation_range and shear_range
are angles in DEGREES; zoom_range z draws zx, zy independently from
[1 - z, 1 + z] (or [lo, hi] when a pair); shift ranges < 1 are fractions of the
image size, >= 1 pixels. Keras 1.x/2.0-2.1 read shear_range in RADIANS, so the
original 2016 recipe's shear_range=0.2 meant ~11.5 degrees; pass
shear_range=11.46 to reproduce it (0.2 degrees, as in Keras 2.2+, is nearly a no-op).
Keras 2.2.x pivoted at h/2 + 0.5, one pixel off the centre; later versions and
this module use the true centre ((h - 1)/2, (w - 1)/2).
"""
from __future__ import annotations

import math

import numpy as np

from .._args import is_number
from .warp import FILL_MODES, affine_warp


def _range(name, value, nonneg=True):
    if not is_number(value):
        raise TypeError(f"Augmentation: {name} must be a number, received {name}={value!r}")
    v = float(value)
    if not math.isfinite(v) or (nonneg and v < 0):
        raise ValueError(f"Augmentation: {name} must be a finite number >= 0, "
                         f"received {name}={value!r}")
    return v


class Augmentation:
    """Random flips, rotation, shifts, shear and zoom, one affine warp per image.

    Arguments (Keras ImageDataGenerator's names and meaning):
      horizontal_flip, vertical_flip: mirror with probability 1/2.
      rotation_range: degrees, theta ~ U(-r, r).
      width_shift_range, height_shift_range: fraction of the size if < 1, else
        pixels; shift ~ U(-r, r).
      shear_range: degrees, shear ~ U(-r, r).
      zoom_range: z -> zx, zy ~ U(1 - z, 1 + z) independently, or a pair (lo, hi).
        zx > 1 samples a larger area (zooms out), as in Keras.
      fill_mode: nearest | constant | reflect | wrap; cval: the constant fill (0..255).

    `apply(image, rng, out=None, scale=1.0)` warps one (H, W, C) image.
    """

    def __init__(self, horizontal_flip=False, shear_range=0.0, zoom_range=0.0,
                 rotation_range=0.0, width_shift_range=0.0, height_shift_range=0.0,
                 fill_mode="nearest", cval=0.0, vertical_flip=False):
        self.horizontal_flip = bool(horizontal_flip)
        self.vertical_flip = bool(vertical_flip)
        self.shear_range = _range("shear_range", shear_range)
        self.rotation_range = _range("rotation_range", rotation_range)
        self.width_shift_range = _range("width_shift_range", width_shift_range)
        self.height_shift_range = _range("height_shift_range", height_shift_range)
        if isinstance(zoom_range, (tuple, list)):
            if len(zoom_range) != 2:
                raise ValueError(f"Augmentation: zoom_range must be a number or a pair "
                                 f"(lo, hi), received zoom_range={zoom_range!r}")
            lo, hi = (_range("zoom_range", z) for z in zoom_range)
        else:
            z = _range("zoom_range", zoom_range)
            lo, hi = 1.0 - z, 1.0 + z
        if not 0 < lo <= hi:
            raise ValueError(f"Augmentation: zoom_range must give 0 < lo <= hi, received "
                             f"zoom_range={zoom_range!r} (lo={lo}, hi={hi})")
        self.zoom_range = (lo, hi)
        if fill_mode not in FILL_MODES:
            raise ValueError(f"Augmentation: fill_mode must be one of {FILL_MODES}, "
                             f"received fill_mode={fill_mode!r}")
        self.fill_mode = fill_mode
        self.cval = _range("cval", cval, nonneg=False)

    def get_config(self):
        return {"horizontal_flip": self.horizontal_flip, "vertical_flip": self.vertical_flip,
                "shear_range": self.shear_range, "zoom_range": list(self.zoom_range),
                "rotation_range": self.rotation_range,
                "width_shift_range": self.width_shift_range,
                "height_shift_range": self.height_shift_range,
                "fill_mode": self.fill_mode, "cval": self.cval}

    def __repr__(self):
        active = {k: v for k, v in self.get_config().items()
                  if v not in (False, 0.0, [1.0, 1.0], "nearest")}
        return "Augmentation(" + ", ".join(f"{k}={v!r}" for k, v in active.items()) + ")"

    @property
    def is_identity(self):
        """True when no transform is configured (apply is then a copy)."""
        return not (self.horizontal_flip or self.vertical_flip or self.shear_range
                    or self.rotation_range or self.width_shift_range
                    or self.height_shift_range or self.zoom_range != (1.0, 1.0))

    def random_params(self, rng, image_shape):
        """One image's parameters, drawn from Generator `rng` in Keras's order.

        Returns a dict: theta (deg), tx (rows, px), ty (cols, px), shear (deg), zx, zy,
        flip_horizontal, flip_vertical. Keras's names: tx comes from
        height_shift_range, ty from width_shift_range."""
        h, w = image_shape[0], image_shape[1]
        theta = rng.uniform(-self.rotation_range, self.rotation_range) \
            if self.rotation_range else 0.0
        tx = ty = 0.0
        if self.height_shift_range:
            tx = rng.uniform(-self.height_shift_range, self.height_shift_range)
            if self.height_shift_range < 1:
                tx *= h
        if self.width_shift_range:
            ty = rng.uniform(-self.width_shift_range, self.width_shift_range)
            if self.width_shift_range < 1:
                ty *= w
        shear = rng.uniform(-self.shear_range, self.shear_range) if self.shear_range else 0.0
        if self.zoom_range == (1.0, 1.0):
            zx = zy = 1.0
        else:
            zx, zy = rng.uniform(self.zoom_range[0], self.zoom_range[1], 2)
        flip_h = bool(self.horizontal_flip and rng.random() < 0.5)
        flip_v = bool(self.vertical_flip and rng.random() < 0.5)
        return {"theta": float(theta), "tx": float(tx), "ty": float(ty),
                "shear": float(shear), "zx": float(zx), "zy": float(zy),
                "flip_horizontal": flip_h, "flip_vertical": flip_v}

    @staticmethod
    def matrix(params, image_shape):
        """The 3x3 output->input matrix (row, col, 1) of `params` on an image of
        image_shape (H, W, ...): Keras's rotation @ shift @ shear @ zoom about the
        image centre, then the flips (which Keras applies to the warped image)."""
        h, w = image_shape[0], image_shape[1]
        t = math.radians(params["theta"])
        s = math.radians(params["shear"])
        rot = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0],
                        [0, 0, 1]])
        shift = np.array([[1, 0, params["tx"]], [0, 1, params["ty"]], [0, 0, 1]])
        shear = np.array([[1, -math.sin(s), 0], [0, math.cos(s), 0], [0, 0, 1]])
        zoom = np.array([[params["zx"], 0, 0], [0, params["zy"], 0], [0, 0, 1]])
        oy, ox = (h - 1) / 2.0, (w - 1) / 2.0
        to_centre = np.array([[1, 0, oy], [0, 1, ox], [0, 0, 1]])
        from_centre = np.array([[1, 0, -oy], [0, 1, -ox], [0, 0, 1]])
        m = to_centre @ rot @ shift @ shear @ zoom @ from_centre
        flip = np.eye(3)
        if params["flip_vertical"]:
            flip = np.array([[-1, 0, h - 1], [0, 1, 0], [0, 0, 1]]) @ flip
        if params["flip_horizontal"]:
            flip = np.array([[1, 0, 0], [0, -1, w - 1], [0, 0, 1]]) @ flip
        return m @ flip

    def apply(self, image, rng, out=None, scale=1.0):
        """Augment one image: draw parameters from `rng`, warp, multiply by `scale`.

        image: (H, W, C) uint8 or float32. out: float32 (H, W, C), overwritten (new
        when None). Returns out."""
        params = self.random_params(rng, image.shape)
        return affine_warp(image, self.matrix(params, image.shape), out=out,
                           fill_mode=self.fill_mode, cval=self.cval, scale=scale)

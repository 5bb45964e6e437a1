"""One affine warp per image: bilinear sampling with Keras's fill modes.

Both functions take a 2x3 matrix in (row, column) pixel-centre coordinates that
maps an OUTPUT pixel to the INPUT point it samples, as scipy.ndimage.affine_transform
(and so Keras's ImageDataGenerator) does:

    in_row = m[0, 0] * r + m[0, 1] * c + m[0, 2]
    in_col = m[1, 0] * r + m[1, 1] * c + m[1, 2]

The sample is the bilinear blend of the four neighbouring input pixels; a
neighbour outside the image is replaced per `fill_mode`:

    nearest   the closest edge pixel (aaaa|abcd|dddd), Keras's default
    constant  the value cval (before `scale`)
    reflect   mirrored about the edge (dcba|abcd|dcba)
    wrap      periodic (abcd|abcd|abcd)

The result is multiplied by `scale` (the dataset's rescale, fused here so the
float32 batch is written once) and stored as float32.

`affine_warp` is the Numba kernel the pipeline uses; it runs without the GIL so
several loader threads warp at once. `affine_warp_reference` is the same warp in
vectorised NumPy, the truth the kernel is tested against.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._interrupt import surfaces_interrupts

FILL_MODES = ("nearest", "constant", "reflect", "wrap")
_NEAREST, _CONSTANT, _REFLECT, _WRAP = range(4)


def _check(op, src, matrix, out, fill_mode, cval, scale):
    if not isinstance(src, np.ndarray) or src.ndim != 3:
        raise ValueError(f"{op}: src must be an (H, W, C) numpy array, got "
                         f"{getattr(src, 'shape', type(src).__name__)}")
    if src.dtype not in (np.uint8, np.float32):
        raise TypeError(f"{op}: src must be uint8 or float32, got {src.dtype}")
    if src.shape[0] < 1 or src.shape[1] < 1:
        raise ValueError(f"{op}: src must not be empty, got shape {src.shape}")
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape == (3, 3):
        m = m[:2]
    if m.shape != (2, 3):
        raise ValueError(f"{op}: matrix must be 2x3 (or 3x3 affine), got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{op}: matrix must be finite, got {m.tolist()}")
    if fill_mode not in FILL_MODES:
        raise ValueError(f"{op}: fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
    for name, v in (("cval", cval), ("scale", scale)):
        if not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
            raise ValueError(f"{op}: {name} must be a finite number, got {v!r}")
    if out is not None:
        if not isinstance(out, np.ndarray) or out.dtype != np.float32:
            raise TypeError(f"{op}: out must be a float32 numpy array, got "
                            f"{getattr(out, 'dtype', type(out).__name__)}")
        if out.ndim != 3 or out.shape[2] != src.shape[2]:
            raise ValueError(f"{op}: out must be (H, W, {src.shape[2]}), got {out.shape}")
        if not out.flags.c_contiguous:
            raise ValueError(f"{op}: out must be C-contiguous")
    return np.ascontiguousarray(m)


@njit(nogil=True, cache=True)
def _fix_index(i, n, mode):
    """Index of the input pixel that stands in for index i of an axis of length n
    (-1 when the neighbour is the constant fill)."""
    if 0 <= i < n:
        return i
    if mode == _NEAREST:
        return 0 if i < 0 else n - 1
    if mode == _CONSTANT:
        return -1
    if mode == _REFLECT:
        period = 2 * n
        i = i % period                     # Python semantics: non-negative
        return i if i < n else period - 1 - i
    return i % n                           # wrap


@njit(nogil=True, cache=True)
def _warp_kernel(src, m, mode, cval, scale, out):
    H, W, C = src.shape
    OH, OW = out.shape[0], out.shape[1]
    m00, m01, m02 = m[0, 0], m[0, 1], m[0, 2]
    m10, m11, m12 = m[1, 0], m[1, 1], m[1, 2]
    # Coordinates of a huge shear/zoom can leave the int range; beyond `big` every
    # mode gives what it gives at a nearer point: nearest/constant clamp, and
    # reflect/wrap are periodic in 2H (2W), which the modulus 2*H*W preserves.
    big = 4.0 * (H + W)
    for r in range(OH):
        for c in range(OW):
            y = m00 * r + m01 * c + m02
            x = m10 * r + m11 * c + m12
            fy0 = math.floor(y)
            fx0 = math.floor(x)
            wy = y - fy0
            wx = x - fx0
            # the four bilinear weights, with the rescale folded in
            w00 = (1.0 - wy) * (1.0 - wx) * scale
            w01 = (1.0 - wy) * wx * scale
            w10 = wy * (1.0 - wx) * scale
            w11 = wy * wx * scale
            if 0.0 <= fy0 and fy0 < H - 1 and 0.0 <= fx0 and fx0 < W - 1:
                y0 = int(fy0)
                x0 = int(fx0)
                for ch in range(C):
                    out[r, c, ch] = (src[y0, x0, ch] * w00 + src[y0, x0 + 1, ch] * w01
                                     + src[y0 + 1, x0, ch] * w10
                                     + src[y0 + 1, x0 + 1, ch] * w11)
                continue
            if fy0 < -big or fy0 > big:
                fy0 = fy0 % (2.0 * H * W) if mode >= _REFLECT else (-big if fy0 < 0 else big)
            if fx0 < -big or fx0 > big:
                fx0 = fx0 % (2.0 * H * W) if mode >= _REFLECT else (-big if fx0 < 0 else big)
            y0 = int(fy0)
            x0 = int(fx0)
            ya = _fix_index(y0, H, mode)
            yb = _fix_index(y0 + 1, H, mode)
            xa = _fix_index(x0, W, mode)
            xb = _fix_index(x0 + 1, W, mode)
            for ch in range(C):
                v00 = cval if (ya < 0 or xa < 0) else float(src[ya, xa, ch])
                v01 = cval if (ya < 0 or xb < 0) else float(src[ya, xb, ch])
                v10 = cval if (yb < 0 or xa < 0) else float(src[yb, xa, ch])
                v11 = cval if (yb < 0 or xb < 0) else float(src[yb, xb, ch])
                out[r, c, ch] = v00 * w00 + v01 * w01 + v10 * w10 + v11 * w11


def _scale32(scale):
    # Keras multiplies a float32 image by rescale in float32; with the scale rounded
    # to float32, an unwarped pixel (v exact) gets exactly float32(v) * float32(scale).
    return float(np.float32(scale))


@surfaces_interrupts              # a nogil kernel: Ctrl-C must stay a KeyboardInterrupt
def affine_warp(src, matrix, out=None, fill_mode="nearest", cval=0.0, scale=1.0):
    """Warp one image with bilinear sampling (Numba, releases the GIL).

    src: (H, W, C) uint8 or float32, C-contiguous. matrix: 2x3 (or 3x3) float, output
    (row, col) -> input (row, col), see the module docstring. out: float32 (OH, OW, C),
    C-contiguous, overwritten (a fresh (H, W, C) array when None); OH, OW may differ
    from H, W. fill_mode: nearest | constant | reflect | wrap; cval: the constant fill
    in src's units; scale: every output value is multiplied by it (rounded to float32
    first, as Keras's float32 rescale). Arithmetic is float64 until the final float32
    store. Returns out.
    """
    m = _check("affine_warp", src, matrix, out, fill_mode, cval, scale)
    src = np.ascontiguousarray(src)
    if out is None:
        out = np.empty(src.shape, np.float32)
    _warp_kernel(src, m, FILL_MODES.index(fill_mode), float(cval), _scale32(scale), out)
    return out


def _fix_index_np(i, n, mode):
    if mode == "nearest":
        return np.clip(i, 0, n - 1), None
    if mode == "constant":
        return np.clip(i, 0, n - 1), (i < 0) | (i >= n)
    if mode == "reflect":
        i = np.mod(i, 2 * n)
        return np.where(i < n, i, 2 * n - 1 - i), None
    return np.mod(i, n), None


def affine_warp_reference(src, matrix, out_shape=None, fill_mode="nearest", cval=0.0,
                          scale=1.0):
    """The warp of `affine_warp` in plain NumPy (float64 throughout): the truth.

    Returns a new float32 array of shape out_shape (OH, OW) + (C,), default src's."""
    m = _check("affine_warp_reference", src, matrix, None, fill_mode, cval, scale)
    H, W, C = src.shape
    OH, OW = (H, W) if out_shape is None else out_shape
    r, c = np.meshgrid(np.arange(OH, dtype=np.float64), np.arange(OW, dtype=np.float64),
                       indexing="ij")
    y = m[0, 0] * r + m[0, 1] * c + m[0, 2]
    x = m[1, 0] * r + m[1, 1] * c + m[1, 2]
    y0, x0 = np.floor(y), np.floor(x)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]
    y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
    img = src.astype(np.float64)

    def tap(yi, xi):
        ya, ymask = _fix_index_np(yi, H, fill_mode)
        xa, xmask = _fix_index_np(xi, W, fill_mode)
        v = img[ya, xa]
        if ymask is not None:
            v = np.where((ymask | xmask)[..., None], float(cval), v)
        return v

    top = tap(y0, x0) * (1 - wx) + tap(y0, x0 + 1) * wx
    bot = tap(y0 + 1, x0) * (1 - wx) + tap(y0 + 1, x0 + 1) * wx
    return ((top * (1 - wy) + bot * wy) * _scale32(scale)).astype(np.float32)

"""Depthwise 2-D convolution (Keras DepthwiseConv2D) on the GPU, NHWC, float32.

Same names, arguments, errors and out= convention as
fastconv/kernels/reference/depthwise.py and cpu/depthwise.py:

    y[n, oh, ow, c*M + m] = b[c*M + m]
                            + sum_{i, j} xpad[n, oh*sh + i, ow*sw + j, c] * w[i, j, c, m]

x (N, H, W, C), w (KH, KW, C, M) (in memory already (KH, KW, C*M): tap (i, j)'s weights
in y's channel order), b (C*M,), y (N, OH, OW, C*M).

Every kernel is a grid-stride loop over one tensor with its channel index fastest, so
consecutive threads touch consecutive floats (coalesced); padding is a bounds test
in the padded frame's coordinates (never negative), no padded copy.
- dwc_fwd: one thread per element of y, its taps in (i, j) order.
- dwc_dx: one thread per element of x, a gather over the (i, j, oh, ow) that read it
  (the adjoint of the forward), each dx written exactly once: no atomics.
- dwc_dw_part, dwc_dw_sum: dw and db in two stages, no atomics. The N*OH*OW output
  pixels are split into CHUNKS fixed ranges (a count fixed by the shape, not by the
  launch or the device); stage 1 has one thread per (chunk, dw or db element) summing
  its range in pixel order into a workspace; stage 2 adds the chunks in chunk order.
  Bitwise the same run to run and whatever the launch size.
All index math is uint32 (tensors below 2**31 elements: check_int32_indexable).
"""
import numpy as np
from numba import cuda, float32, uint32

from .. import _validate
from . import _launch
from ._mem import (blocks_for, check_int32_indexable, device_in, finish, flat, out_buffers,
                   workspace)
from ._spec import KernelSpec
from .conv2d import check_bias, check_conv, check_dy

# Pixel ranges of the dw/db partial sums: a constant (or the pixel count if smaller), so
# the order of the sum depends on the shape only.
CHUNKS = 64

_F1 = float32[::1]


@cuda.jit
def dwc_fwd(x, w, b, y, geo):
    """y (N*OH*OW*CM,) = depthwise(x, w) + b; geo (uint32[13]): H, W, C, M, KH, KW, OH,
    OW, sh, sw, pt, pl, N."""
    uH, uW, uC, uM = geo[0], geo[1], geo[2], geo[3]
    KH, KW, OH, OW = geo[4], geo[5], geo[6], geo[7]
    sh, sw, pt, pl = geo[8], geo[9], geo[10], geo[11]
    cm = uint32(uC * uM)
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    size = uint32(y.size)
    while i < size:
        k = uint32(i % cm)
        q = uint32(i // cm)
        ow = uint32(q % OW)
        q = uint32(q // OW)
        oh = uint32(q % OH)
        n = uint32(q // OH)
        c = uint32(k // uM)
        s = b[k]
        for a in range(KH):
            hp = uint32(oh * sh + a)                     # the row in the padded frame
            if hp >= pt and hp < uint32(uH + pt):
                row = uint32((n * uH + hp - pt) * uW)
                for j in range(KW):
                    wp = uint32(ow * sw + j)
                    if wp >= pl and wp < uint32(uW + pl):
                        s += x[uint32((row + wp - pl) * uC + c)] * w[uint32((a * KW + j) * cm + k)]
        y[i] = s
        i = uint32(i + step)


@cuda.jit
def dwc_dx(dy, w, dx, geo):
    """dx (N*H*W*C,): sum over the taps (i, j) and output pixels that read x[n, h, w, c]
    of sum_m w[i, j, c, m] * dy[n, oh, ow, c*M + m], in (i, j, m) order. geo as dwc_fwd."""
    uH, uW, uC, uM = geo[0], geo[1], geo[2], geo[3]
    KH, KW, OH, OW = geo[4], geo[5], geo[6], geo[7]
    sh, sw, pt, pl = geo[8], geo[9], geo[10], geo[11]
    cm = uint32(uC * uM)
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    size = uint32(dx.size)
    while i < size:
        c = uint32(i % uC)
        q = uint32(i // uC)
        wc = uint32(q % uW)
        q = uint32(q // uW)
        h = uint32(q % uH)
        n = uint32(q // uH)
        s = float32(0.0)
        hp = uint32(h + pt)                              # this pixel in the padded frame
        wp = uint32(wc + pl)
        for a in range(KH):
            if a > hp:
                break
            t = uint32(hp - a)                           # oh * sh, if a tap reads row h
            oh = uint32(t // sh)
            if oh * sh == t and oh < OH:
                for j in range(KW):
                    if j > wp:
                        break
                    u = uint32(wp - j)
                    ow = uint32(u // sw)
                    if ow * sw == u and ow < OW:
                        d0 = uint32(((n * OH + oh) * OW + ow) * cm + c * uM)
                        w0 = uint32((a * KW + j) * cm + c * uM)
                        for m in range(uM):
                            s += dy[uint32(d0 + m)] * w[uint32(w0 + m)]
        dx[i] = s
        i = uint32(i + step)


@cuda.jit
def dwc_dw_part(x, dy, part, geo, chunks):
    """part (chunks * T,), T = KH*KW*CM + CM: entry (ch, t) sums output pixels
    [ch*P // chunks, (ch+1)*P // chunks), P = N*OH*OW, in order; t < KH*KW*CM is
    dw's flat (i, j, c*M + m) term x * dy, the rest db's dy. geo as dwc_fwd."""
    uH, uW, uC, uM = geo[0], geo[1], geo[2], geo[3]
    KH, KW, OH, OW = geo[4], geo[5], geo[6], geo[7]
    sh, sw, pt, pl = geo[8], geo[9], geo[10], geo[11]
    N = geo[12]
    cm = uint32(uC * uM)
    taps = uint32(KH * KW * cm)
    T = uint32(taps + cm)
    P = uint32(N * OH * OW)
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    size = uint32(chunks * T)
    while i < size:
        ch = uint32(i // T)
        t = uint32(i - ch * T)
        k = uint32(t % cm)
        tap = uint32(t // cm)                            # == KH*KW for db
        a = uint32(tap // KW)
        j = uint32(tap - a * KW)
        c = uint32(k // uM)
        s = float32(0.0)
        p = uint32(uint32(ch * P) // chunks)
        end = uint32(uint32((ch + 1) * P) // chunks)
        while p < end:
            g = dy[uint32(p * cm + k)]
            if tap == uint32(KH * KW):
                s += g
            else:
                ow = uint32(p % OW)
                q = uint32(p // OW)
                oh = uint32(q % OH)
                n = uint32(q // OH)
                hp = uint32(oh * sh + a)                 # the tap in the padded frame
                wp = uint32(ow * sw + j)
                if hp >= pt and hp < uint32(uH + pt) and wp >= pl and wp < uint32(uW + pl):
                    s += x[uint32(((n * uH + hp - pt) * uW + wp - pl) * uC + c)] * g
            p = uint32(p + 1)
        part[i] = s
        i = uint32(i + step)


@cuda.jit
def dwc_dw_sum(part, dw, db, chunks):
    """dw (KH*KW*CM,), db (CM,) = the sums over chunks of part (chunks * T,), in chunk
    order (T = dw.size + db.size)."""
    taps = uint32(dw.size)
    T = uint32(taps + db.size)
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    step = uint32(cuda.gridDim.x * cuda.blockDim.x)
    while i < T:
        s = part[i]
        for ch in range(1, chunks):
            s += part[uint32(ch * T + i)]
        if i < taps:
            dw[i] = s
        else:
            db[uint32(i - taps)] = s
        i = uint32(i + step)


_GEO = uint32[::1]
KERNELS = [
    KernelSpec("dwc_fwd", dwc_fwd, (_F1, _F1, _F1, _F1, _GEO), _launch.ELEMENTWISE),
    KernelSpec("dwc_dx", dwc_dx, (_F1, _F1, _F1, _GEO), _launch.ELEMENTWISE),
    KernelSpec("dwc_dw_part", dwc_dw_part, (_F1, _F1, _F1, _GEO, uint32), _launch.ELEMENTWISE),
    KernelSpec("dwc_dw_sum", dwc_dw_sum, (_F1, _F1, _F1, uint32), _launch.ELEMENTWISE),
]


def _check(op, x, w, stride, padding):
    stride, oh, ow, pt, pl = check_conv(op, x, w, stride, padding,
                                        layout=_validate.DEPTHWISE_LAYOUT)
    n, h, wd, c = (int(s) for s in x.shape)
    kh, kw, _, m = (int(s) for s in w.shape)
    check_int32_indexable(op, (n, oh, ow, c * m))
    geo = np.array([h, wd, c, m, kh, kw, oh, ow, stride[0], stride[1], pt, pl, n], np.uint32)
    return geo, (n, oh, ow, c * m)


def _launch_over(kernel, size, *args):
    threads = _launch.ELEMENTWISE
    kernel[blocks_for(size, threads, _launch.MAX_BLOCKS), threads](*args)


def _geo(geo):
    """geo on the device, cached per thread and context by its values (no upload per call
    at a steady shape)."""
    from ._mem import cached
    return cached(("depthwise_geo", geo.tobytes()), cuda.to_device, geo)


def depthwise_conv2d_forward(x, w, b, stride=1, padding="valid", out=None):
    """y[n, oh, ow, c*M + m] = b[c*M + m] + sum_{i, j} xpad[n, oh*sh + i, ow*sw + j, c]
    * w[i, j, c, m] (Keras DepthwiseConv2D, depth_multiplier M).

    x (N, H, W, C), w (KH, KW, C, M), b (C*M,): float32 C-contiguous device arrays (host
    arrays are copied in); stride int or pair; padding 'valid' or 'same'. Returns y
    (N, OH, OW, C*M): a new device array, or `out` (overwritten)."""
    op = "depthwise_conv2d_forward"
    geo, y_shape = _check(op, x, w, stride, padding)
    check_bias(op, b, y_shape[3])
    [(y, y_host)] = out_buffers(op, ("out", out, y_shape, np.float32))
    x, w, b = device_in(op, "x", x), device_in(op, "w", w), device_in(op, "b", b)
    _launch_over(dwc_fwd, y.size, flat(x), flat(w), b, flat(y), _geo(geo))
    return finish(y, y_host)


def depthwise_conv2d_backward(x, w, dy, stride=1, padding="valid", need_dx=True, out=None):
    """Gradients of depthwise_conv2d_forward given dy (N, OH, OW, C*M): (dx or None, dw, db).

    dx (N, H, W, C), dw (KH, KW, C, M), db (C*M,): new device arrays or the out= tuple's
    buffers (overwritten; an entry may be None). need_dx=False skips dx. dw and db are
    summed in fixed pixel chunks, then in chunk order (no atomics): deterministic."""
    op = "depthwise_conv2d_backward"
    geo, y_shape = _check(op, x, w, stride, padding)
    check_dy(op, dy, y_shape)
    o = _validate.out_tuple(op, out, 3)
    cm = y_shape[3]
    specs = [("out[1]", o[1], tuple(w.shape), np.float32), ("out[2]", o[2], (cm,), np.float32)]
    if need_dx:
        specs.append(("out[0]", o[0], tuple(x.shape), np.float32))
    bufs = out_buffers(op, *specs)
    x, w, dy = device_in(op, "x", x), device_in(op, "w", w), device_in(op, "dy", dy)
    g = _geo(geo)
    (dw, dw_host), (db, db_host) = bufs[:2]
    pixels = y_shape[0] * y_shape[1] * y_shape[2]
    chunks = max(1, min(CHUNKS, pixels))
    terms = dw.size + cm
    check_int32_indexable(op, (chunks, terms))
    part = workspace("depthwise_dw_part", (chunks * terms,))
    _launch_over(dwc_dw_part, chunks * terms, flat(x), flat(dy), part, g, np.uint32(chunks))
    _launch_over(dwc_dw_sum, terms, part, flat(dw), db, np.uint32(chunks))
    dx = None
    if need_dx:
        dx, dx_host = bufs[2]
        _launch_over(dwc_dx, dx.size, flat(dy), flat(w), flat(dx), g)
        dx = finish(dx, dx_host)
    return dx, finish(dw, dw_host), finish(db, db_host)

"""Depthwise 2-D convolution (Keras DepthwiseConv2D), NHWC, Numba CPU-parallel.

Same names, arguments, results, errors and out= convention as
fastconv/kernels/reference/depthwise.py:

    y[n, oh, ow, c*M + m] = b[c*M + m]
                            + sum_{i, j} xpad[n, oh*sh + i, ow*sw + j, c] * w[i, j, c, m]

x (N, H, W, C), w (KH, KW, C, M), b (C*M,), y (N, OH, OW, C*M); float32, C-contiguous.

How the loops run:
- w (KH, KW, C, M) is already (KH, KW, C*M) in memory: tap (i, j)'s weights are one
  contiguous vector in y's channel order, so the innermost loop runs over the C*M
  output channels of one pixel, contiguous in x, w and y: a plain a[k] += x[k] * w[k]
  that LLVM turns into packed FMAs. With M > 1 the kernels read xe, x with each
  channel repeated M times (one copy into a workspace per call), so the same loop
  serves every M (against a loop over M inside one over C: forward 15.5 -> 9.4 ms of
  CPU time at x (8, 47, 47, 32), M = 2, one thread; backward alike), and dx
  sums the gradients of a channel's M copies afterwards, in m order.
- Forward: one task per output row (n, oh); each output pixel's C*M accumulators
  (a row of y, in L1) start at b and take the taps in (i, j) order.
- dw, db: the rows are split into a fixed number of chunks (cpu/conv2d.DW_CHUNKS,
  independent of the thread count); each chunk sums into its own partial, and the
  partials are added in chunk order (cpu/conv2d._reduce_partials): bitwise the same
  for any number of threads and from run to run.
- dx: a gather per padded input row (the adjoint of the forward), one task each, so
  no two threads write the same element and nothing needs reducing.
- 'same' padding: x is copied once into a zero-bordered workspace (conv2d's
  Geometry.padded), so the inner loops carry no bounds tests.
- fastmath={'contract'} only (one FMA instead of a*b + c): nothing is reassociated.
Workspaces are conv2d's per-thread cache (no shared scratch between threads).
"""
import numpy as np
from numba import njit, prange

from .. import _validate
from ._common import F32, FMA_OPTS, Target, contiguous
from .conv2d import DW_CHUNKS, Geometry, _reduce_partials, workspace


@njit(parallel=True, **FMA_OPTS)
def _forward(xe, w, b, sh, sw, y):
    """y (N, OH, OW, K) = b + sum_{i, j} xe[n, oh*sh + i, ow*sw + j, k] * w[i, j, k].
    Overwrites y.

    xe (N, Hp, Wp, K) is x padded, each channel repeated M times (K = C*M: xe[..., c*M + m]
    = xpad[..., c]); w (KH, KW, K) the kernel in y's channel order; b (K,).
    """
    N = xe.shape[0]
    KH, KW, K = w.shape
    OH, OW = y.shape[1], y.shape[2]
    for r in prange(N * OH):
        n = r // OH
        oh = r - n * OH
        yr = y[n, oh]
        for ow in range(OW):
            acc = yr[ow]
            for k in range(K):
                acc[k] = b[k]
            for i in range(KH):
                xr = xe[n, oh * sh + i]
                for j in range(KW):
                    xs = xr[ow * sw + j]
                    ws = w[i, j]
                    for k in range(K):
                        acc[k] += xs[k] * ws[k]
    return y


@njit(parallel=True, **FMA_OPTS)
def _grad_w_partial(xe, dy, sh, sw, dwp, dbp):
    """Per-chunk partial sums of dw and db. Overwrites dwp and dbp.

    xe (N, Hp, Wp, K) as _forward's, dy (N, OH, OW, K); dwp (CH, KH, KW, K),
    dbp (CH, K): chunk ch sums the output rows r = n*OH + oh in
    [ch*R // CH, (ch+1)*R // CH), R = N*OH, each element in (row, ow) order.
    """
    N = xe.shape[0]
    OH, OW, K = dy.shape[1], dy.shape[2], dy.shape[3]
    CH, KH, KW, _ = dwp.shape
    R = N * OH
    for ch in prange(CH):
        dwc = dwp[ch]
        dbc = dbp[ch]
        for i in range(KH):
            for j in range(KW):
                for k in range(K):
                    dwc[i, j, k] = F32(0)
        for k in range(K):
            dbc[k] = F32(0)
        for r in range(ch * R // CH, (ch + 1) * R // CH):
            n = r // OH
            oh = r - n * OH
            dyr = dy[n, oh]
            # pixel outermost, taps inside (measured: taps outermost within the row took
            # 20-28% more CPU time at x (32, 45, 45, 128), one thread)
            for ow in range(OW):
                d = dyr[ow]
                for k in range(K):
                    dbc[k] += d[k]
                for i in range(KH):
                    xr = xe[n, oh * sh + i]
                    for j in range(KW):
                        xs = xr[ow * sw + j]
                        dv = dwc[i, j]
                        for k in range(K):
                            dv[k] += xs[k] * d[k]
    return dwp


@njit(parallel=True, **FMA_OPTS)
def _grad_x(dy, w, sh, sw, dxe):
    """dxe (N, Hp, Wp, K) = the gradient of _forward's xe. Overwrites dxe.

    Padded input row hp gathers from every output row oh with hp = oh*sh + i: output
    pixel ow adds w[i, j, k] * dy[n, oh, ow, k] to input pixel ow*sw + j, in (i, j, ow)
    order. One task per input row: no races. (dx sums the M copies of each channel.)
    """
    N, OH, OW, K = dy.shape
    Hp, Wp = dxe.shape[1], dxe.shape[2]
    KH, KW, _ = w.shape
    for r in prange(N * Hp):
        n = r // Hp
        hp = r - n * Hp
        dxr = dxe[n, hp]
        for p in range(Wp):
            for k in range(K):
                dxr[p, k] = F32(0)
        for i in range(KH):
            t = hp - i
            if t < 0:
                break
            oh = t // sh
            if oh * sh != t or oh >= OH:
                continue
            dyr = dy[n, oh]
            for j in range(KW):              # tap (i, j)'s weights stay put over the row
                ws = w[i, j]
                for ow in range(OW):
                    g = dyr[ow]
                    d = dxr[ow * sw + j]
                    for k in range(K):
                        d[k] += g[k] * ws[k]
    return dxe


def _geometry(op, x, w, stride, padding):
    return Geometry(op, x, w, stride, padding, layout=_validate.DEPTHWISE_LAYOUT)


def _expanded(g, x):
    """The kernels' xe: x padded (g.padded), each channel repeated M = g.f times
    (N, Hp, Wp, C*M), xe[..., c*M + m] = xpad[..., c]; x's padded frame itself when M = 1.
    In a workspace: only M > 1 pays the copy, and the inner loops stay one contiguous
    run over C*M whatever M is."""
    xp = g.padded(x)
    if g.f == 1:
        return xp
    xe = workspace("xexpand", g.padded_shape[:3] + (g.c * g.f,))
    np.copyto(xe.reshape(g.padded_shape + (g.f,)), xp[..., None])
    return xe


def _kernel_rows(g, w):
    """w (KH, KW, C, M) as (KH, KW, C*M): the same memory, in y's channel order."""
    return contiguous(w).reshape(g.kh, g.kw, g.c * g.f)


def depthwise_conv2d_forward(x, w, b, stride=1, padding="valid", out=None):
    """y[n, oh, ow, c*M + m] = b[c*M + m] + sum_{i, j} xpad[n, oh*sh + i, ow*sw + j, c]
    * w[i, j, c, m] (Keras DepthwiseConv2D, depth_multiplier M).

    x (N, H, W, C), w (KH, KW, C, M), b (C*M,) float32; stride int or pair;
    padding 'valid' or 'same' (Keras geometry). Writes y (N, OH, OW, C*M) into out
    when given (overwritten, no allocation), else returns a new array.
    """
    op = "depthwise_conv2d_forward"
    g = _geometry(op, x, w, stride, padding)
    cm = g.c * g.f
    _validate.check_bias(op, b, cm, x.dtype)
    t = Target(op, "out", out, (g.n, g.oh, g.ow, cm))
    _forward(_expanded(g, x), _kernel_rows(g, w), contiguous(b), g.sh, g.sw, t.buf)
    return t.result()


def depthwise_conv2d_backward(x, w, dy, stride=1, padding="valid", need_dx=True, out=None):
    """Gradients of depthwise_conv2d_forward given dy = dL/dy (N, OH, OW, C*M).

    Returns (dx or None, dw, db): dx (N, H, W, C), dw (KH, KW, C, M), db (C*M,),
    all overwritten (never accumulated into). need_dx=False skips dx. out is None
    or a tuple (dx or None, dw or None, db or None) of buffers to write. dw and db
    are bitwise identical for any thread count.
    """
    op = "depthwise_conv2d_backward"
    g = _geometry(op, x, w, stride, padding)
    cm = g.c * g.f
    _validate.check_dy(op, dy, (g.n, g.oh, g.ow, cm), x.dtype)
    o = _validate.out_tuple(op, out, 3)
    tdx = Target(op, "out[0]", o[0], x.shape) if need_dx else None
    tdw = Target(op, "out[1]", o[1], w.shape)
    tdb = Target(op, "out[2]", o[2], (cm,))
    dz = contiguous(dy)
    chunks = min(DW_CHUNKS, g.n * g.oh)
    dwp = workspace("dw_depthwise_partial", (chunks, g.kh, g.kw, cm))
    dbp = workspace("db_depthwise_partial", (chunks, cm))
    _grad_w_partial(_expanded(g, x), dz, g.sh, g.sw, dwp, dbp)
    _reduce_partials(dwp, dbp, tdw.buf, tdb.buf)
    if need_dx:
        if g.direct and g.f == 1:
            _grad_x(dz, _kernel_rows(g, w), g.sh, g.sw, tdx.buf)
        else:
            dxe = workspace("dxexpand", g.padded_shape[:3] + (cm,))
            _grad_x(dz, _kernel_rows(g, w), g.sh, g.sw, dxe)
            if g.f > 1:  # dx of channel c: the sum of its M copies' gradients, in m order
                dxp = workspace("dxpad", g.padded_shape)
                np.add.reduce(dxe.reshape(g.padded_shape + (g.f,)), axis=-1, out=dxp)
            else:
                dxp = dxe
            tdx.buf[...] = dxp[:, g.pt:g.pt + g.h, g.pl:g.pl + g.w, :]
    return (tdx.result() if need_dx else None), tdw.result(), tdb.result()

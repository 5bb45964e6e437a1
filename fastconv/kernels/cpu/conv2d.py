"""2-D convolution (Keras Conv2D, cross-correlation), NHWC, Numba CPU-parallel.

Same names, arguments, results, errors and out= convention as
fastconv/kernels/reference/conv2d.py. Sizes: x (N, H, W, C), w (KH, KW, C, F),
b (F,), y (N, OH, OW, F); all float32, C-contiguous.

How the loops run (see docs/cpu_conv.md for the measurements):
- One input row of NHWC data, x[n, h, :, :], is a flat vector of W*C floats,
  and the KW*C inputs that kernel row i sees for output pixel ow start at
  ow*sw*C and are contiguous. So every kernel (any stride, any kernel size)
  walks K = KW*C contiguous inputs against a (K, F) slab of w, with the output
  channel F innermost and contiguous: LLVM emits packed FMAs over F.
- Each task is one output row (n, oh); 4 output pixels share every weight load
  and 2 taps share every accumulator load/store (register blocking).
- 'same' padding copies x once into a zero-bordered workspace so the inner
  loops carry no bounds tests; 'valid' reads x in place.
- dw: the rows are split into a fixed number of chunks (independent of the
  thread count); each chunk sums into its own partial dw, and the partials are
  added in chunk order. Results are bitwise identical for any number of
  threads and from run to run.
- dx: a gather per input row (the adjoint of the forward), written by one task
  each, so no two threads touch the same element and nothing needs reducing.
- fastmath={'contract'} only: a*b + c may compile to one FMA (one rounding
  instead of two); nothing is reassociated, so results stay deterministic.

Workspaces (padded x, transposed w, partial sums) are cached per Python thread
by shape (threading.local, at most _MAX_WORKSPACES per thread, freed with the
thread), so a steady-state call with out= buffers allocates nothing and calls
from several threads at once never share scratch: each gives bitwise the
serial result. Concurrent parallel launches need Numba's threading layer to be
'omp' or 'tbb' (the default wherever one loads); 'workqueue' is not thread-safe
(Numba aborts on concurrent use), so with it call the kernels from one thread.
"""
import numba
import numpy as np
from numba import njit, prange

from .. import _validate
from . import pointwise
from ._common import F32, FMA_OPTS, Target, check_float32, contiguous
# (FC, PX, _stack_f32 and workspace are also imported from here by fused.py, depthwise.py)
from ._tiles import FC, PX, PX_FC, _bias_tile, _stack_f32, workspace  # noqa: F401

# Partial sums of dw: a fixed count, so the reduction order never depends on
# how many threads run.
DW_CHUNKS = 32


# --------------------------------------------------------------------------
# njit kernels
# --------------------------------------------------------------------------

@njit(inline="always", **FMA_OPTS)
def _taps6(acc, xr, wi, p0, step, K):
    """acc[p, :] += sum_k xr[p0 + p*step + k] * wi[k, :] for the 6 x FC tile of one
    kernel row. Slices are taken once and indexed by bare loop counters: no
    negative-index fix-ups in the hot loop."""
    x0 = xr[p0:p0 + K]
    x1 = xr[p0 + step:p0 + step + K]
    x2 = xr[p0 + 2 * step:p0 + 2 * step + K]
    x3 = xr[p0 + 3 * step:p0 + 3 * step + K]
    x4 = xr[p0 + 4 * step:p0 + 4 * step + K]
    x5 = xr[p0 + 5 * step:p0 + 5 * step + K]
    for k in range(K):
        a0 = x0[k]
        a1 = x1[k]
        a2 = x2[k]
        a3 = x3[k]
        a4 = x4[k]
        a5 = x5[k]
        wv = wi[k]
        for f in range(FC):
            u = wv[f]
            acc[0, f] += a0 * u
            acc[1, f] += a1 * u
            acc[2, f] += a2 * u
            acc[3, f] += a3 * u
            acc[4, f] += a4 * u
            acc[5, f] += a5 * u


@njit(inline="always", **FMA_OPTS)
def _taps3(acc, xr, wi, p0, step, K):
    """_taps6 for a 3 x FC tile (the tile of 256-bit vectors, and of rows narrower
    than 6 pixels)."""
    x0 = xr[p0:p0 + K]
    x1 = xr[p0 + step:p0 + step + K]
    x2 = xr[p0 + 2 * step:p0 + 2 * step + K]
    for k in range(K):
        a0 = x0[k]
        a1 = x1[k]
        a2 = x2[k]
        wv = wi[k]
        for f in range(FC):
            u = wv[f]
            acc[0, f] += a0 * u
            acc[1, f] += a1 * u
            acc[2, f] += a2 * u


@njit(inline="always", **FMA_OPTS)
def _conv_row(xn, wf, wpk, b, h0, step, relu, yr):
    """yr (OW, F) = b + sum_i sum_k xn[h0 + i, ow*step + k] * wf[i, k, :], clamped
    at 0 if relu.

    xn (Hp, Wp*C) one image's rows, flattened; wf (KH, K=KW*C, F); step = sw*C;
    wpk (F // FC, KH, K, FC) the same weights packed per block of FC channels
    (contiguous rows: no slicing in the tap loop). Overwrites yr. Blocks of PX
    pixels x FC channels accumulate on the stack; the last partial channel
    block (F % FC) runs the same loops with a run-time width.
    """
    KH, K, F = wf.shape
    OW = yr.shape[0]
    acc = numba.carray(_stack_f32(PX_FC), (PX, FC))
    for f0 in range(0, F, FC):
        fw = min(FC, F - f0)
        bb = b[f0:f0 + fw]
        ow = 0
        while ow < OW:
            if ow + PX > OW and OW >= PX:
                # The ragged end: slide the last tile back to end at OW. It recomputes
                # a few pixels (the same arithmetic, so the same values) instead of
                # running the run-time-width loop, whose accumulators live in memory
                # (measured 8-12x slower per pixel: with PX = 6 a 34-pixel row spent
                # as long on its 4 last pixels as on the other 30).
                ow = OW - PX
            npx = min(PX, OW - ow)
            if 3 <= npx < PX:
                npx = 3        # rows narrower than PX: the 3-wide register tile
            if fw == FC:                         # constant trip counts: registers
                for p in range(PX):
                    for f in range(FC):
                        acc[p, f] = bb[f]
                if PX == 6 and npx == 6 and KH == 3:
                    # 3x3 kernels: the three kernel rows as three inlined calls, so
                    # the accumulators can stay in registers from row to row (the
                    # loop below stores and reloads them each row): RGB 3x3 first
                    # layer 11.3-11.9 -> 10.5-10.8 ms at batch 32
                    wb = wpk[f0 // FC]
                    p0 = ow * step
                    _taps6(acc, xn[h0], wb[0], p0, step, K)
                    _taps6(acc, xn[h0 + 1], wb[1], p0, step, K)
                    _taps6(acc, xn[h0 + 2], wb[2], p0, step, K)
                else:
                    for i in range(KH):
                        xr = xn[h0 + i]
                        wi = wpk[f0 // FC, i]
                        p0 = ow * step
                        if PX == 6 and npx == 6:
                            _taps6(acc, xr, wi, p0, step, K)
                        elif npx == 3:
                            _taps3(acc, xr, wi, p0, step, K)
                        else:
                            for p in range(npx):
                                xs = xr[p0 + p * step:p0 + p * step + K]
                                for k in range(K):
                                    ap = xs[k]
                                    wv = wi[k]
                                    for f in range(FC):
                                        acc[p, f] += ap * wv[f]
            else:
                for p in range(PX):
                    for f in range(fw):
                        acc[p, f] = bb[f]
                for i in range(KH):
                    xr = xn[h0 + i]
                    wi = wf[i]
                    p0 = ow * step
                    for k in range(K):
                        wv = wi[k, f0:f0 + fw]
                        for p in range(npx):
                            ap = xr[p0 + p * step + k]
                            for f in range(fw):
                                acc[p, f] += ap * wv[f]
            for p in range(npx):
                yv = yr[ow + p, f0:f0 + fw]
                for f in range(fw):
                    v = acc[p, f]
                    if relu and v < 0:           # NaN stays NaN, as in np.maximum
                        v = F32(0)
                    yv[f] = v
            ow += npx


@njit(inline="always", **FMA_OPTS)
def _store_tile(acc, yr, ow, f0, relu):
    """yr[ow:ow + PX, f0:f0 + FC] = acc (PX, FC), clamped at 0 if relu. The store loop is
    written twice so the run-time flag is tested once per tile, not per element (tested
    per element, the seed convs ran ~25% slower)."""
    if relu:
        for p in range(PX):
            yv = yr[ow + p, f0:f0 + FC]
            for f in range(FC):
                v = acc[p, f]
                yv[f] = F32(0) if v < 0 else v
    else:
        for p in range(PX):
            yv = yr[ow + p, f0:f0 + FC]
            for f in range(FC):
                yv[f] = acc[p, f]


@njit(**FMA_OPTS)
def _conv_row_3x3(xn, wpk, b, h0, step, relu, yr):
    """_conv_row for the convs most models are made of, and all of the seed's: a 3x3
    kernel, F a multiple of FC and rows of at least PX pixels (Geometry.tiled says
    when). Same arguments (less wf), same arithmetic in the same order, so the same
    bits as _conv_row; overwrites yr (OW, F).

    A call, not inlined: compiled alone, outside the parallel kernels' parfor
    passes, and without _conv_row's other paths, it keeps a fresh install's first
    step short (docs/cpu.md, Compile time). One call per output row costs nothing
    measurable next to the row's OW * F * 9 * C multiply-adds. relu is a run-time
    flag here (inlined, it was a constant): see _store_tile.
    """
    K = wpk.shape[2]
    F = b.shape[0]
    OW = yr.shape[0]
    acc = numba.carray(_stack_f32(PX_FC), (PX, FC))
    for f0 in range(0, F, FC):
        bb = b[f0:f0 + FC]
        wb = wpk[f0 // FC]
        ow = 0
        while ow < OW:
            if ow + PX > OW:
                ow = OW - PX          # the ragged end: see _conv_row
            _bias_tile(acc, bb)
            p0 = ow * step
            if PX == 6:
                _taps6(acc, xn[h0], wb[0], p0, step, K)
                _taps6(acc, xn[h0 + 1], wb[1], p0, step, K)
                _taps6(acc, xn[h0 + 2], wb[2], p0, step, K)
            else:
                _taps3(acc, xn[h0], wb[0], p0, step, K)
                _taps3(acc, xn[h0 + 1], wb[1], p0, step, K)
                _taps3(acc, xn[h0 + 2], wb[2], p0, step, K)
            _store_tile(acc, yr, ow, f0, relu)
            ow += PX


# Kernel rows of at most SHORT_K inputs (KW*C: an RGB first layer's is 9) run
# _conv_row_3x3_short: measured 1.1x on C = 3 and 5, no gain at C = 8 (docs/cpu_conv.md).
SHORT_K = 16
# The empty table: no elements, so nothing is shared (and writable, like the tables
# it stands in for: a read-only array would compile the kernels a second time).
_NO_TAPS = np.empty(0, np.int64)


@njit(**FMA_OPTS)
def _conv_row_3x3_short(xs, off, wt, b, base, step, relu, yr):
    """_conv_row_3x3 for short kernel rows (KW*C <= SHORT_K) and 6-pixel tiles: one
    loop over the T = 3*KW*C taps of all three kernel rows instead of three loops of
    KW*C, so a tile's accumulators stay in registers through all of them and the loop
    is entered once per tile, not three times. The same products are added in the
    same order (kernel row i, then j*C + c), so the bits are _conv_row_3x3's.

    xs one image, flat (Hp*Wp*C); base = oh*sh*Wp*C, the output row's first input;
    off (T,) int64, off[i*KW*C + k] = i*Wp*C + k; wt (F // FC, T, FC), wpk with its
    kernel rows merged; step = sw*C. Overwrites yr (OW, F). Indices are uint64: no
    negative-index fix-ups in the tap loop. (Written with x reshaped and the table
    built inside this function, the same loop kept the accumulators in memory, 2.3x
    slower: both come as arguments.)
    """
    T = wt.shape[1]
    F = b.shape[0]
    OW = yr.shape[0]
    acc = numba.carray(_stack_f32(PX_FC), (PX, FC))
    s = np.uint64(step)
    for f0 in range(0, F, FC):
        bb = b[f0:f0 + FC]
        wb = wt[f0 // FC]
        ow = 0
        while ow < OW:
            if ow + PX > OW:
                ow = OW - PX          # the ragged end: see _conv_row
            _bias_tile(acc, bb)
            q0 = np.uint64(base + ow * step)
            q1 = q0 + s
            q2 = q1 + s
            q3 = q2 + s
            q4 = q3 + s
            q5 = q4 + s
            for t in range(T):
                o = np.uint64(off[t])
                a0 = xs[q0 + o]
                a1 = xs[q1 + o]
                a2 = xs[q2 + o]
                a3 = xs[q3 + o]
                a4 = xs[q4 + o]
                a5 = xs[q5 + o]
                wv = wb[t]
                for f in range(FC):
                    u = wv[f]
                    acc[0, f] += a0 * u
                    acc[1, f] += a1 * u
                    acc[2, f] += a2 * u
                    acc[3, f] += a3 * u
                    acc[4, f] += a4 * u
                    acc[5, f] += a5 * u
            _store_tile(acc, yr, ow, f0, relu)
            ow += PX


@njit(parallel=True, **FMA_OPTS)
def _forward_3x3(xp, wpk, off, b, sh, sw, relu, y):
    """_forward for Geometry.tiled convs, by rows of _conv_row_3x3 (no w: wpk only), or
    of _conv_row_3x3_short where off (Geometry.tap_offsets) is not empty."""
    N, Hp, Wp, C = xp.shape
    OH = y.shape[1]
    xf = xp.reshape(N, Hp, Wp * C)
    xs = xp.reshape(N, Hp * Wp * C)
    wt = wpk.reshape(wpk.shape[0], wpk.shape[1] * wpk.shape[2], FC)
    for r in prange(N * OH):
        n = r // OH
        oh = r - n * OH
        if off.shape[0] > 0:
            _conv_row_3x3_short(xs[n], off, wt, b, oh * sh * Wp * C, sw * C, relu, y[n, oh])
        else:
            _conv_row_3x3(xf[n], wpk, b, oh * sh, sw * C, relu, y[n, oh])
    return y


@njit(parallel=True, **FMA_OPTS)
def _forward(xp, w, wpk, b, sh, sw, relu, y):
    """y (N, OH, OW, F) = conv(xp, w) + b, then max(., 0) if relu. Overwrites y.

    xp (N, Hp, Wp, C) is x already padded: output pixel (oh, ow) reads
    xp[n, oh*sh + i, ow*sw + j, c]. wpk: see _conv_row.
    """
    N, Hp, Wp, C = xp.shape
    KH, KW, _, F = w.shape
    OH = y.shape[1]
    xf = xp.reshape(N, Hp, Wp * C)
    wf = w.reshape(KH, KW * C, F)
    for r in prange(N * OH):
        n = r // OH
        oh = r - n * OH
        _conv_row(xf[n], wf, wpk, b, oh * sh, sw * C, relu, y[n, oh])
    return y


@njit(parallel=True, **FMA_OPTS)
def _grad_w_partial(xp, dy, sh, sw, dwp, dbp):
    """Per-chunk partial sums of dw and db. Overwrites dwp and dbp.

    xp (N, Hp, Wp, C) padded input, dy (N, OH, OW, F);
    dwp (CH, KH, KW*C, F), dbp (CH, F): chunk c sums the output rows
    r = n*OH + oh in [c*R // CH, (c+1)*R // CH), R = N*OH.
    """
    N, Hp, Wp, C = xp.shape
    OH, OW, F = dy.shape[1], dy.shape[2], dy.shape[3]
    CH, KH, K, _ = dwp.shape
    xf = xp.reshape(N, Hp, Wp * C)
    step = sw * C
    R = N * OH
    for ch in prange(CH):
        dwc = dwp[ch]
        dbc = dbp[ch]
        dwc[...] = 0
        dbc[...] = 0
        for r in range(ch * R // CH, (ch + 1) * R // CH):
            n = r // OH
            oh = r - n * OH
            dyr = dy[n, oh]
            for ow in range(OW):
                for f in range(F):
                    dbc[f] += dyr[ow, f]
            for i in range(KH):
                xr = xf[n, oh * sh + i]
                dwi = dwc[i]
                ow = 0
                while ow + 4 <= OW:              # 4 pixels per dw load/store
                    p0 = ow * step
                    p1 = p0 + step
                    p2 = p1 + step
                    p3 = p2 + step
                    d0 = dyr[ow]
                    d1 = dyr[ow + 1]
                    d2 = dyr[ow + 2]
                    d3 = dyr[ow + 3]
                    for k in range(K):
                        a0 = xr[p0 + k]
                        a1 = xr[p1 + k]
                        a2 = xr[p2 + k]
                        a3 = xr[p3 + k]
                        dk = dwi[k]
                        for f in range(F):
                            dk[f] = dk[f] + a0 * d0[f] + a1 * d1[f] + a2 * d2[f] + a3 * d3[f]
                    ow += 4
                while ow < OW:
                    p0 = ow * step
                    d0 = dyr[ow]
                    for k in range(K):
                        a0 = xr[p0 + k]
                        dk = dwi[k]
                        for f in range(F):
                            dk[f] += a0 * d0[f]
                    ow += 1
    return dwp


@njit(parallel=True, **FMA_OPTS)
def _reduce_partials(dwp, dbp, dw, db):
    """dw (KH, KW, C, F) = sum over chunks of dwp (CH, KH, KW*C, F), in chunk order;
    db likewise from dbp (CH, F). Overwrites dw and db."""
    CH, KH, K, F = dwp.shape
    dwf = dw.reshape(KH * K, F)
    pf = dwp.reshape(CH, KH * K, F)
    for t in prange(KH * K):
        for f in range(F):
            dwf[t, f] = pf[0, t, f]
        for ch in range(1, CH):
            for f in range(F):
                dwf[t, f] += pf[ch, t, f]
    for f in range(F):
        db[f] = dbp[0, f]
    for ch in range(1, CH):
        for f in range(F):
            db[f] += dbp[ch, f]
    return dw


@njit(parallel=True, **FMA_OPTS)
def _grad_x(dy, wt, sh, sw, dxp):
    """dxp (N, Hp, Wp, C) = the gradient of the padded input. Overwrites dxp.

    wt (KH, F, KW*C) is w transposed: wt[i, f, j*C + c] = w[i, j, c, f].
    Input row hp gathers from every output row oh with hp = oh*sh + i; within
    the row, output pixel ow adds dy[n, oh, ow, :] @ wt[i] to the KW*C
    contiguous inputs starting at ow*sw*C. One task per input row: no races.
    """
    N, OH, OW, F = dy.shape
    _, Hp, Wp, C = dxp.shape
    KH, _, K = wt.shape
    dxf = dxp.reshape(N, Hp, Wp * C)
    step = sw * C
    for r in prange(N * Hp):
        n = r // Hp
        hp = r - n * Hp
        dxr = dxf[n, hp]
        dxr[:] = 0
        for i in range(KH):
            t = hp - i
            if t < 0:
                break
            oh = t // sh
            if oh * sh != t or oh >= OH:
                continue
            dyr = dy[n, oh]
            wi = wt[i]
            for ow in range(OW):
                # A slice, so the inner index is the bare loop counter: Numba then
                # emits no negative-index fix-up and LLVM vectorizes the loop.
                d = dxr[ow * step:ow * step + K]
                g = dyr[ow]
                f = 0
                while f + 4 <= F:                # 4 channels per dx load/store
                    g0 = g[f]
                    g1 = g[f + 1]
                    g2 = g[f + 2]
                    g3 = g[f + 3]
                    w0 = wi[f]
                    w1 = wi[f + 1]
                    w2 = wi[f + 2]
                    w3 = wi[f + 3]
                    for k in range(K):
                        d[k] = d[k] + g0 * w0[k] + g1 * w1[k] + g2 * w2[k] + g3 * w3[k]
                    f += 4
                while f < F:
                    g0 = g[f]
                    w0 = wi[f]
                    for k in range(K):
                        d[k] += g0 * w0[k]
                    f += 1
    return dxp


# --------------------------------------------------------------------------
# workspaces and argument plumbing
# --------------------------------------------------------------------------

class Geometry:
    """Validated conv operands and the padded frame every kernel works in.

    Hp x Wp covers every window of the output grid and the whole input placed
    at (pt, pl); `direct` means that frame is x itself (no padding needed).
    `layout` names w's axes in the errors (the depthwise ops pass theirs: there
    f is the depth multiplier M).
    """

    # Slots: one of these lives through every call, and a per-instance dict
    # would be most of a training step's transient Python memory.
    __slots__ = ("sh", "sw", "oh", "ow", "pt", "pl", "n", "h", "w", "c", "kh", "kw", "f",
                 "hp", "wp", "direct")

    def __init__(self, op, x, w, stride, padding, layout=_validate.CONV2D_LAYOUT):
        (self.sh, self.sw), self.oh, self.ow, self.pt, self.pl = _validate.conv2d_geometry(
            op, x, w, stride, padding, layout)
        check_float32(op, "x", x)
        self.n, self.h, self.w, self.c = x.shape
        self.kh, self.kw, _, self.f = w.shape
        self.hp = max((self.oh - 1) * self.sh + self.kh, self.pt + self.h)
        self.wp = max((self.ow - 1) * self.sw + self.kw, self.pl + self.w)
        self.direct = (self.pt == 0 and self.pl == 0 and self.hp == self.h
                       and self.wp == self.w)

    @property
    def tiled(self):
        """Whether the forward runs _conv_row_3x3 (3x3 kernel, F % FC == 0, OW >= PX)
        rather than the general _conv_row: only the variant a model uses compiles."""
        return self.kh == 3 and self.kw == 3 and self.f % FC == 0 and self.ow >= PX

    @property
    def pointwise(self):
        """Whether this is a 1x1 kernel (never padded): pointwise.py's GEMMs over pixel
        rows where the shapes fill a register tile (rows_ok, grad_w_ok)."""
        return self.kh == 1 and self.kw == 1

    @property
    def y_shape(self):
        return (self.n, self.oh, self.ow, self.f)

    @property
    def padded_shape(self):
        return (self.n, self.hp, self.wp, self.c)

    def padded(self, x):
        """x itself, or x copied into a cached zero-bordered workspace."""
        if self.direct:
            return contiguous(x)
        xp = workspace(("xpad", self.pt, self.pl, self.h, self.w), self.padded_shape,
                       zero=True)  # only the interior is ever written: borders stay 0
        xp[:, self.pt:self.pt + self.h, self.pl:self.pl + self.w, :] = x
        return xp

    def packed_w(self, w):
        """wpk (F // FC, KH, KW*C, FC): w's full blocks of FC output channels, each
        contiguous, in a workspace (the forward kernels' weight layout)."""
        k, blocks = self.kw * self.c, self.f // FC
        wpk = workspace("wpk", (blocks, self.kh, k, FC))
        np.copyto(wpk, w.reshape(self.kh, k, self.f)[:, :, :blocks * FC]
                  .reshape(self.kh, k, blocks, FC).transpose(2, 0, 1, 3))
        return wpk

    def tap_offsets(self):
        """off (3*KW*C,) int64 of _conv_row_3x3_short, off[i*KW*C + k] = i*Wp*C + k, in a
        workspace; empty (0,) where that row kernel does not apply (kernel rows longer
        than SHORT_K, or the 3-pixel tile of 256-bit vectors)."""
        k = self.kw * self.c
        if not (self.tiled and k <= SHORT_K and PX == 6):
            return _NO_TAPS
        off = workspace("taps", (self.kh, k), np.int64)   # rewritten by every call
        np.add.outer(np.arange(0, self.kh * self.wp * self.c, self.wp * self.c),
                     np.arange(k), out=off)
        return off.reshape(-1)

    def transposed_w(self, w):
        """wt (KH, F, KW*C) with wt[i, f, j*C + c] = w[i, j, c, f], in a workspace."""
        wt = workspace("wt", (self.kh, self.f, self.kw * self.c))
        np.copyto(wt, w.reshape(self.kh, self.kw * self.c, self.f).transpose(0, 2, 1))
        return wt


def forward(g, x, w, b, relu, y):
    """Run the forward kernel of geometry g into y (C-contiguous)."""
    if g.pointwise and pointwise.forward_pays(g.n * g.oh * g.ow, g.c, g.f):
        return pointwise.forward(g, contiguous(x), contiguous(w), contiguous(b), relu, y)
    if g.tiled:
        return _forward_3x3(g.padded(x), g.packed_w(w), g.tap_offsets(), contiguous(b), g.sh,
                            g.sw, relu, y)
    return _forward(g.padded(x), contiguous(w), g.packed_w(w), contiguous(b), g.sh, g.sw,
                    relu, y)


def grad_w(g, xp, dz, dw, db):
    """dw, db (C-contiguous) from the padded input xp and the output gradient dz."""
    if g.pointwise and pointwise.grad_w_pays(g.n * g.oh * g.ow, g.c, g.f):
        return pointwise.grad_w(g, xp, dz, dw, db)
    chunks = min(DW_CHUNKS, g.n * g.oh)
    dwp = workspace("dw_partial", (chunks, g.kh, g.kw * g.c, g.f))
    dbp = workspace("db_partial", (chunks, g.f))
    _grad_w_partial(xp, dz, g.sh, g.sw, dwp, dbp)
    _reduce_partials(dwp, dbp, dw, db)


def grad_x(g, w, dz, dx):
    """dx (C-contiguous, x's shape) from the output gradient dz."""
    if g.pointwise and pointwise.grad_x_pays(g.n * g.oh * g.ow, g.c, g.f):
        return pointwise.grad_x(g, contiguous(w), dz, dx)
    wt = g.transposed_w(contiguous(w))
    if g.direct:
        _grad_x(dz, wt, g.sh, g.sw, dx)
    else:
        dxp = workspace("dxpad", g.padded_shape)
        _grad_x(dz, wt, g.sh, g.sw, dxp)
        dx[...] = dxp[:, g.pt:g.pt + g.h, g.pl:g.pl + g.w, :]


def backward(op, g, x, w, dz, need_dx, out):
    """(dx or None, dw, db) of conv2d_backward for the output gradient dz."""
    o = _validate.out_tuple(op, out, 3)
    tdx = Target(op, "out[0]", o[0], x.shape) if need_dx else None
    tdw = Target(op, "out[1]", o[1], w.shape)
    tdb = Target(op, "out[2]", o[2], (g.f,))
    grad_w(g, g.padded(x), contiguous(dz), tdw.buf, tdb.buf)
    if need_dx:
        grad_x(g, w, contiguous(dz), tdx.buf)
    return (tdx.result() if need_dx else None), tdw.result(), tdb.result()


# --------------------------------------------------------------------------
# public ops
# --------------------------------------------------------------------------

def conv2d_forward(x, w, b, stride=1, padding="valid", out=None):
    """y[n, oh, ow, f] = b[f] + sum_{i, j, c} xpad[n, oh*sh + i, ow*sw + j, c] * w[i, j, c, f].

    x (N, H, W, C), w (KH, KW, C, F), b (F,) float32; stride int or pair;
    padding 'valid' or 'same' (Keras geometry). Writes y (N, OH, OW, F) into
    out when given (overwritten, no allocation), else returns a new array.
    """
    op = "conv2d_forward"
    g = Geometry(op, x, w, stride, padding)
    _validate.check_bias(op, b, g.f, x.dtype)
    t = Target(op, "out", out, g.y_shape)
    forward(g, x, w, b, False, t.buf)
    return t.result()


def conv2d_backward(x, w, dy, stride=1, padding="valid", need_dx=True, out=None):
    """Gradients of conv2d_forward given dy = dL/dy (N, OH, OW, F).

    Returns (dx or None, dw, db): dx (N, H, W, C), dw (KH, KW, C, F), db (F,),
    all overwritten (never accumulated into). need_dx=False skips dx. out is
    None or a tuple (dx or None, dw or None, db or None) of buffers to write.
    dw and db are bitwise identical for any thread count.
    """
    op = "conv2d_backward"
    g = Geometry(op, x, w, stride, padding)
    _validate.check_dy(op, dy, g.y_shape, x.dtype)
    return backward(op, g, x, w, dy, need_dx, out)

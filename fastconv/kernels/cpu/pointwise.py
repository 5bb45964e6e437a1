"""1x1 convolutions (Conv2D kernel_size 1, any stride; SeparableConv2D's pointwise half)
as register-tiled GEMMs over pixel rows, NHWC, Numba CPU-parallel.

In NHWC a 1x1 convolution is a plain matrix product over the P = N*OH*OW pixel rows:
y (P, F) = x (P, C) @ w (C, F) + b, dx (P, C) = dy (P, F) @ w^T, dw (C, F) = x^T @ dy.
A 1x1 kernel never pads ('same' at stride s has OH = ceil(H/s), so (OH-1)*s + 1 <= H),
and stride s reads the pixels x[:, ::s, ::s]: gathered once into a workspace of rows
for dw, and dx is the stride-1 product scattered back into a zeroed dx.

How the loops run (the style of conv2d._conv_row_3x3):
- Forward and dx (`_gemm_rows`): tiles of PX rows x FC output columns of accumulators
  on the stack (conv2d._stack_f32), kept in zmm registers through the whole K loop
  (checked with inspect_asm: 12 FMAs, no stack store in the loop). Each task packs its
  TILES_PER_TASK tiles of rows k-major first (PX contiguous floats broadcast per k)
  and loads a packed (K, FC) block of the weights per k. Each element is one task's,
  so nothing is reduced.
- dw and db (`_grad_w_cols`): tiles of PX input channels x FC output channels; per
  pixel row the PX inputs are broadcast against FC columns of dy. Rows run in blocks
  of GW_ROWS, each packed first (contiguous tile loops), inside super-blocks of about
  GW_SUPER_BYTES of x (shared in L2 by the tasks, one per FC columns of dw). A block's
  tile sum starts at 0 and is added to dw, block after block in row order: each
  element is the same sequence of operations whatever the thread count, so dw and db
  are bitwise identical at 1 and 2 threads and from run to run.
- Ragged edges (rows % PX, C % PX, F % FC) slide the last tile back to end at the
  edge: the forward recomputes the same values (same bits); dw adds only the rows and
  columns that the previous tile did not.
- conv2d.forward, grad_w and grad_x call these where they pay (forward_pays,
  grad_w_pays, grad_x_pays: measured); the kernels themselves need one full tile
  (rows_ok, grad_w_ok).
- fastmath={'contract'} only: a*b + c may be one FMA; nothing is reassociated.
"""
import numba
import numpy as np
from numba import njit, prange

from ._common import F32, FMA_OPTS
from ._tiles import FC, PX, PX_FC, _bias_tile, _stack_f32, workspace

TILES_PER_TASK = 8         # the forward's task: 8 tiles of PX rows, one weights block at a time
GW_ROWS = 256              # dw's row block: its dy rows (GW_ROWS x FC floats) stay in L1
GW_SUPER_BYTES = 1 << 20   # dw's super-block of rows: about this much of x (half an L2)


def rows_ok(p, f):
    """Whether `_gemm_rows` applies: at least one full tile (PX rows, FC columns)."""
    return p >= PX and f >= FC


def grad_w_ok(p, c, f):
    """Whether `_grad_w_cols` applies: at least PX input and FC output channels."""
    return p >= 1 and c >= PX and f >= FC


# Where these kernels beat conv2d's general ones (measured, docs/cpu_conv.md, 1x1 convs
# of the keras.io xception): dw and dx wherever they apply; the forward only where
# F % FC leaves a partial block (the general kernel's partial block keeps its
# accumulators in memory; on full blocks it was as fast or faster: 17.8 vs 20.4 CPU ms
# at 8x90x90, C 64, F 128, one thread).
def forward_pays(p, c, f):
    return rows_ok(p, f) and f % FC != 0


def grad_w_pays(p, c, f):
    return grad_w_ok(p, c, f)


def grad_x_pays(p, c, f):
    return rows_ok(p, c)


def packed_columns(name, w2):
    """w2 (K, F), F >= FC (a view is fine), as the kernels' weight panels (NB, K, FC),
    NB = ceil(F / FC): panel j = w2[:, s:s + FC] for s = min(j*FC, F - FC) (the last
    slid back to end at F), each contiguous, in a workspace (rewritten every call)."""
    k, f = w2.shape
    nb = (f + FC - 1) // FC
    wpk = workspace(name, (nb, k, FC))
    for j in range(nb):
        s = min(j * FC, f - FC)
        np.copyto(wpk[j], w2[:, s:s + FC])
    return wpk


@njit(inline="always", **FMA_OPTS)
def _store_cols(acc, yf, q, F, lo, relu):
    """yf[q + i*F + f] = acc[i, f] (clamped at 0 if relu) for i < PX, lo <= f < FC: the
    tile's rows in the flat output from its first element q (uint64; flat indices, not
    slices: a slice per tile costs reference counting that the tile loop cannot spare).
    Flags tested once per tile."""
    F = np.uint64(F)
    if relu:
        for i in range(PX):
            r = q + np.uint64(i) * F
            for f in range(lo, FC):
                v = acc[i, f]
                yf[r + np.uint64(f)] = F32(0) if v < 0 else v   # NaN stays NaN
    else:
        for i in range(PX):
            r = q + np.uint64(i) * F
            for f in range(lo, FC):
                yf[r + np.uint64(f)] = acc[i, f]


@njit(**FMA_OPTS)
def _gemm_tiles(a, wpk, b, relu, y, ap, t0, t1):
    """y's rows of tiles t0..t1-1 = a @ w + b (clamped at 0 if relu); tile t covers the
    PX rows from min(t*PX, P - PX) (the last slid back: recomputed, same values).

    a (P, K) rows, wpk (NB, K, FC) the packed weights (packed_columns), b (F,), y (P, F);
    ap (TILES_PER_TASK, K, PX) the calling thread's scratch: tile t's rows packed k-major
    into ap[t - t0], so each k broadcasts PX
    contiguous floats (the loop then keeps its accumulators in registers; read from PX
    rows of a, LLVM stored them back every k: 2x slower). Every element: acc = b[f],
    then += a[p, k] * w[k, f] in k order (conv2d's _conv_row for a 1x1 kernel: the same
    bits)."""
    P, K = a.shape
    F = y.shape[1]
    yf = y.reshape(-1)
    acc = numba.carray(_stack_f32(PX_FC), (PX, FC))
    for t in range(t0, t1):
        r = min(t * PX, P - PX)
        at = ap[t - t0]
        for i in range(PX):
            ar = a[r + i]
            for k in range(K):
                at[k, i] = ar[k]
    for j in range(wpk.shape[0]):
        f0 = min(j * FC, F - FC)
        lo = j * FC - f0                     # columns the previous block already wrote
        bb = b[f0:f0 + FC]
        wb = wpk[j]
        for t in range(t0, t1):
            r = min(t * PX, P - PX)
            at = ap[t - t0]
            _bias_tile(acc, bb)
            if PX == 6:
                for k in range(K):
                    xs = at[k, 0:6]
                    a0 = xs[0]
                    a1 = xs[1]
                    a2 = xs[2]
                    a3 = xs[3]
                    a4 = xs[4]
                    a5 = xs[5]
                    wv = wb[k, 0:FC]
                    for f in range(FC):
                        u = wv[f]
                        acc[0, f] += a0 * u
                        acc[1, f] += a1 * u
                        acc[2, f] += a2 * u
                        acc[3, f] += a3 * u
                        acc[4, f] += a4 * u
                        acc[5, f] += a5 * u
            else:
                for k in range(K):
                    xs = at[k, 0:3]
                    a0 = xs[0]
                    a1 = xs[1]
                    a2 = xs[2]
                    wv = wb[k, 0:FC]
                    for f in range(FC):
                        u = wv[f]
                        acc[0, f] += a0 * u
                        acc[1, f] += a1 * u
                        acc[2, f] += a2 * u
            _store_cols(acc, yf, np.uint64(r * F + f0), F, lo, relu)


@njit(parallel=True, **FMA_OPTS)
def _gemm_rows(a, wpk, b, relu, y, ap):
    """y (P, F) = a (P, K) @ w + b, clamped at 0 if relu; P >= PX, F >= FC (rows_ok).
    One task per TILES_PER_TASK tiles of PX rows; ap (threads, TILES_PER_TASK, K, PX):
    each thread's packing scratch (numba.get_thread_id: packing is a copy, so which
    thread packs changes no bits)."""
    tiles = (a.shape[0] + PX - 1) // PX
    tasks = (tiles + TILES_PER_TASK - 1) // TILES_PER_TASK
    for t in prange(tasks):
        _gemm_tiles(a, wpk, b, relu, y, ap[numba.get_thread_id()], t * TILES_PER_TASK,
                    min(tiles, (t + 1) * TILES_PER_TASK))
    return y


def gemm(a, wpk, b, relu, y):
    """y (P, F) = a (P, K) @ w + b (relu): _gemm_rows with its packing scratch."""
    ap = workspace("pointwise_pack",
                   (numba.config.NUMBA_NUM_THREADS, TILES_PER_TASK, a.shape[1], PX))
    return _gemm_rows(a, wpk, b, relu, y, ap)


@njit(**FMA_OPTS)
def _grad_w_block(C, dy, f0, lo, dw, db, xpk, dpk, s0, s1):
    """Adds x[s0:s1]^T @ dy[s0:s1] to dw[:, f0 + lo:f0 + FC] and the column sums of
    dy[s0:s1] to db[f0 + lo:f0 + FC], for the FC columns from f0 (lo: the first column
    this block owns). x (P, C) with C >= PX, dy (P, F), dw (C, F), db (F,).

    xpk (ceil(C / PX), s1 - s0 or more, PX): x[s0:s1] packed by _pack_channels (tile ct's
    PX channels of every row, contiguous). Rows in blocks of GW_ROWS from s0, the
    block's dy columns packed first into dpk (GW_ROWS, FC), so the tile loops read
    contiguous memory. A tile (PX input
    channels x FC, the last slid back to end at C) sums the block's rows in order from
    0, then is added to dw (only the rows the previous tile did not cover); the next
    block likewise. (Slices with constant bounds in the tile loop: indexed as xt[q] and
    dpk[q], LLVM stored the accumulators back to the stack every row.)"""
    nct = xpk.shape[0]
    acc = numba.carray(_stack_f32(PX_FC), (PX, FC))
    sb = numba.carray(_stack_f32(FC), (FC,))
    for p0 in range(s0, s1, GW_ROWS):
        n = min(GW_ROWS, s1 - p0)
        for f in range(FC):
            sb[f] = F32(0)
        for q in range(n):
            dv = dy[p0 + q, f0:f0 + FC]
            dp = dpk[q]
            for f in range(FC):
                u = dv[f]
                dp[f] = u
                sb[f] += u
        for f in range(lo, FC):
            db[f0 + f] += sb[f]
        done = 0
        for ct in range(nct):
            c0 = min(ct * PX, C - PX)
            xt = xpk[ct, p0 - s0:p0 - s0 + n]
            for i in range(PX):
                for f in range(FC):
                    acc[i, f] = F32(0)
            if PX == 6:
                for q in range(n):
                    xs = xt[q, 0:6]
                    a0 = xs[0]
                    a1 = xs[1]
                    a2 = xs[2]
                    a3 = xs[3]
                    a4 = xs[4]
                    a5 = xs[5]
                    dv = dpk[q, 0:FC]
                    for f in range(FC):
                        u = dv[f]
                        acc[0, f] += a0 * u
                        acc[1, f] += a1 * u
                        acc[2, f] += a2 * u
                        acc[3, f] += a3 * u
                        acc[4, f] += a4 * u
                        acc[5, f] += a5 * u
            else:
                for q in range(n):
                    xs = xt[q, 0:3]
                    a0 = xs[0]
                    a1 = xs[1]
                    a2 = xs[2]
                    dv = dpk[q, 0:FC]
                    for f in range(FC):
                        u = dv[f]
                        acc[0, f] += a0 * u
                        acc[1, f] += a1 * u
                        acc[2, f] += a2 * u
            for i in range(done - c0, PX):
                dwr = dw[c0 + i, f0:f0 + FC]
                for f in range(lo, FC):
                    dwr[f] += acc[i, f]
            done = c0 + PX


@njit(parallel=True, **FMA_OPTS)
def _grad_w_cols(x, dy, dw, db, xpk, dpk):
    """dw (C, F) += x (P, C)^T @ dy (P, F) and db (F,) += dy's column sums (callers zero
    them). C >= PX, F >= FC (grad_w_ok). The rows in super-blocks of xpk.shape[1] (a
    multiple of GW_ROWS, about GW_SUPER_BYTES of x: it stays in L2 while the tasks read
    it): each is packed once into xpk (ceil(C / PX), rows, PX), tile ct's PX channels
    of every row contiguous (the last tile slid back to end at C), then one task per FC
    columns of dw (the last slid back) runs _grad_w_block over it. dpk (threads,
    GW_ROWS, FC): each thread's dy packing scratch (numba.get_thread_id: packing is a
    copy, so which thread packs changes no bits)."""
    P, C = x.shape
    F = dy.shape[1]
    nct, rows, _ = xpk.shape
    nb = (F + FC - 1) // FC
    for s0 in range(0, P, rows):
        s1 = min(P, s0 + rows)
        for q in prange(s1 - s0):
            xr = x[s0 + q]
            for ct in range(nct):
                c0 = min(ct * PX, C - PX)
                xp = xpk[ct, q]
                for i in range(PX):
                    xp[i] = xr[c0 + i]
        for j in prange(nb):
            f0 = min(j * FC, F - FC)
            tid = numba.get_thread_id()
            _grad_w_block(C, dy, f0, j * FC - f0, dw, db, xpk, dpk[tid], s0, s1)
    return dw


# --------------------------------------------------------------------------
# the 1x1 conv ops on conv2d's Geometry
# --------------------------------------------------------------------------

def pixel_rows(g, x):
    """The (P, C) rows a 1x1 kernel of geometry g reads: x itself (stride 1) or
    x[:, ::sh, ::sw] gathered into a workspace."""
    if g.sh == 1 and g.sw == 1:
        return x.reshape(-1, g.c)
    rows = workspace("pointwise_rows", (g.n, g.oh, g.ow, g.c))
    np.copyto(rows, x[:, :g.oh * g.sh:g.sh, :g.ow * g.sw:g.sw, :])
    return rows.reshape(-1, g.c)


def forward(g, x, w, b, relu, y):
    """y (N, OH, OW, F) of a 1x1 conv (rows_ok(P, F))."""
    a = pixel_rows(g, x)
    wpk = packed_columns("pointwise_w", w.reshape(g.c, g.f))
    gemm(a, wpk, b, relu, y.reshape(-1, g.f))
    return y


def grad_x(g, w, dz, dx):
    """dx (N, H, W, C) of a 1x1 conv (rows_ok(P, C)): dz (P, F) @ w^T, scattered to the
    strided pixels (stride > 1: the others are 0)."""
    wpk = packed_columns("pointwise_wt", w.reshape(g.c, g.f).T)
    zero = workspace("pointwise_zero_b", (g.c,), zero=True)     # never written
    if g.sh == 1 and g.sw == 1:
        gemm(dz.reshape(-1, g.f), wpk, zero, False, dx.reshape(-1, g.c))
        return dx
    rows = workspace("pointwise_dx_rows", (g.n, g.oh, g.ow, g.c))
    gemm(dz.reshape(-1, g.f), wpk, zero, False, rows.reshape(-1, g.c))
    dx[...] = 0
    dx[:, :g.oh * g.sh:g.sh, :g.ow * g.sw:g.sw, :] = rows
    return dx


def grad_w(g, x, dz, dw, db):
    """dw (1, 1, C, F) and db (F,) of a 1x1 conv (grad_w_ok(P, C, F))."""
    rows = max(1, GW_SUPER_BYTES // (4 * g.c * GW_ROWS)) * GW_ROWS
    xpk = workspace("pointwise_dw_x", ((g.c + PX - 1) // PX, rows, PX))
    dpk = workspace("pointwise_dw_dy", (numba.config.NUMBA_NUM_THREADS, GW_ROWS, FC))
    dw[...] = 0
    db[...] = 0
    _grad_w_cols(pixel_rows(g, x), dz.reshape(-1, g.f), dw.reshape(g.c, g.f), db, xpk, dpk)

"""Fused conv2d + bias + ReLU (+ max-pool) layers, Numba CPU-parallel.

Same names, arguments, results, errors and out= convention as
fastconv/kernels/reference/fused.py, which defines each op as the composition
of the unfused reference ops. Sizes: x (N, H, W, C), w (KH, KW, C, F),
conv output grid (N, OH, OW, F), pooled y (N, PH, PW, F).

- conv2d_relu_forward: the conv kernel clamps each output row while it is
  still in cache (no second pass over y).
- conv2d_relu_maxpool_forward: each task computes the conv rows one pooled
  row needs into a per-thread scratch buffer and writes only the pooled y and
  argmax: the conv output grid is never stored. The pool runs on the
  pre-activation z and y = max(max z, 0); where y > 0 its argmax is the
  reference's (first maximum in row-major window order), elsewhere it is some
  index inside the window (the reference leaves it undefined there).
- conv2d_relu_maxpool_backward: the pre-activation gradient is non-zero only
  at argmax positions with y > 0 (at most 1 in pool_h*pool_w), so dw, db and
  dx are accumulated from those positions directly, one task per image, and
  the conv-grid gradient is never built. Per-image partial sums of dw and db
  are added in image order: bitwise identical for any thread count.

The forward kernels inline conv2d._conv_row or call conv2d._conv_row_3x3[_short] (and
read their PX/FC globals) at compile time, but Numba's on-disk cache of this module is
invalidated only when THIS file changes: after editing either, clear the cache
(the __pycache__ folders, or NUMBA_CACHE_DIR) or these kernels keep the old
tile code (a fresh install or clone has no cache, so users are not affected).
"""
import numba
import numpy as np
from numba import njit, prange

from .. import _validate
from . import conv2d
from ._common import F32, FMA_OPTS, Target, check_float32, contiguous
from ._tiles import _data_f32
from .conv2d import FC, _conv_row, _conv_row_3x3, _conv_row_3x3_short, _stack_f32


@njit(inline="always", **FMA_OPTS)
def _window2x2(z0, z1, c, i0, ow_n, best, where):
    """best, where (F,) = relu of the max of one 2 x 2 window whose cells are all inside
    the conv grid: columns c, c + 1 of the conv rows z0, z1 (OW, F), i0 the flat index
    of its first cell. Cells in row-major order, strictly greater: the first maximum
    wins, as in _pool_rows. The cells are named before the loop, so the loop over F
    holds the window in registers (compare and blend) and stores once."""
    a0 = z0[c]
    a1 = z0[c + 1]
    a2 = z1[c]
    a3 = z1[c + 1]
    k1 = np.int32(i0 + 1)      # int32 throughout (int32 + int32 is int64 in Numba)
    k2 = np.int32(i0 + ow_n)
    k3 = np.int32(k2 + 1)
    for f in range(best.shape[0]):
        m = a0[f]
        k = i0
        v = a1[f]
        if v > m:
            m = v
            k = k1
        v = a2[f]
        if v > m:
            m = v
            k = k2
        v = a3[f]
        if v > m:
            m = v
            k = k3
        best[f] = F32(0) if m < 0 else m
        where[f] = k


@njit(inline="always", **FMA_OPTS)
def _window3x3(z0, z1, z2, c, i0, ow_n, best, where):
    """_window2x2 for a 3 x 3 window (columns c .. c + 2 of the conv rows z0, z1, z2)."""
    a0 = z0[c]
    a1 = z0[c + 1]
    a2 = z0[c + 2]
    a3 = z1[c]
    a4 = z1[c + 1]
    a5 = z1[c + 2]
    a6 = z2[c]
    a7 = z2[c + 1]
    a8 = z2[c + 2]
    k1 = np.int32(i0 + 1)      # int32 throughout (int32 + int32 is int64 in Numba)
    k2 = np.int32(i0 + 2)
    k3 = np.int32(i0 + ow_n)
    k4 = np.int32(k3 + 1)
    k5 = np.int32(k3 + 2)
    k6 = np.int32(k3 + ow_n)
    k7 = np.int32(k6 + 1)
    k8 = np.int32(k6 + 2)
    for f in range(best.shape[0]):
        m = a0[f]
        k = i0
        v = a1[f]
        if v > m:
            m = v
            k = k1
        v = a2[f]
        if v > m:
            m = v
            k = k2
        v = a3[f]
        if v > m:
            m = v
            k = k3
        v = a4[f]
        if v > m:
            m = v
            k = k4
        v = a5[f]
        if v > m:
            m = v
            k = k5
        v = a6[f]
        if v > m:
            m = v
            k = k6
        v = a7[f]
        if v > m:
            m = v
            k = k7
        v = a8[f]
        if v > m:
            m = v
            k = k8
        best[f] = F32(0) if m < 0 else m
        where[f] = k


@njit(**FMA_OPTS)
def _pool_rows(z, lo, hi, ow_n, pw_k, psw, ppl, yr, ar):
    """yr, ar (PW, F) = max over the pool windows of one pooled row of the conv rows
    z[0:hi-lo] (conv rows lo..hi-1, pre-activation), y clamped at 0; window pw covers
    columns pw*psw - ppl + [0, pw_k) clipped to [0, ow_n). Overwrites yr and ar.
    A call (not inlined in the two parallel kernels that use it): it compiles once.

    Square 2 x 2 and 3 x 3 windows with all their cells inside the grid (every window
    of a valid pooling, the inner ones of a same pooling) go through _window2x2 /
    _window3x3: one pass over F per window with the window in registers. RGB first
    layer at batch 32, pool 3, one thread: 13.6-15.5 -> 11.7-13.7 CPU ms for the
    layer, conv2's 9.4-10.2 -> 8.8-9.4, same bits (docs/cpu_conv.md). The rest, and the windows a same pooling clips, are swept
    by window offset: for each conv row and column offset j, every window's column
    pw*psw - ppl + j in turn, so each window sees its cells in row-major order
    (strictly greater: the first maximum wins) and the loop over F vectorizes with
    masked stores.
    """
    PW, F = yr.shape
    rows = hi - lo
    fast = (rows == pw_k) and (pw_k == 2 or pw_k == 3)
    p0 = PW          # windows p0 .. p1 - 1 take the fast path
    p1 = PW
    if fast:
        p0 = 0
        while p0 < PW and p0 * psw - ppl < 0:
            p0 += 1
        p1 = p0
        while p1 < PW and p1 * psw - ppl + pw_k <= ow_n:
            p1 += 1
        for pw in range(p0, p1):
            c = pw * psw - ppl
            i0 = np.int32(lo * ow_n + c)
            if pw_k == 3:
                _window3x3(z[0], z[1], z[2], c, i0, ow_n, yr[pw], ar[pw])
            else:
                _window2x2(z[0], z[1], c, i0, ow_n, yr[pw], ar[pw])
    for pw in range(PW):
        if pw >= p0 and pw < p1:
            continue
        clo = max(pw * psw - ppl, 0)
        zv = z[0, clo]
        best = yr[pw]
        where = ar[pw]
        idx = np.int32(lo * ow_n + clo)
        for f in range(F):
            best[f] = zv[f]
            where[f] = idx
    for oh in range(lo, hi):
        zr = z[oh - lo]
        for j in range(pw_k):
            for pw in range(PW):
                if pw >= p0 and pw < p1:
                    continue
                ow = pw * psw - ppl + j
                if ow < 0 or ow >= ow_n:
                    continue
                zv = zr[ow]
                best = yr[pw]
                where = ar[pw]
                idx = np.int32(oh * ow_n + ow)
                for f in range(F):
                    v = zv[f]
                    if v > best[f]:
                        best[f] = v
                        where[f] = idx
    for pw in range(PW):
        if pw >= p0 and pw < p1:
            continue
        best = yr[pw]
        for f in range(F):
            v = best[f]
            best[f] = F32(0) if v < 0 else v


@njit(parallel=True, **FMA_OPTS)
def _forward_pooled(xp, w, wpk, b, sh, sw, oh_n, ow_n, ph_k, pw_k, psh, psw, ppt, ppl, zbuf,
                    y, arg):
    """y, arg (N, PH, PW, F) = max-pool of conv(xp, w) + b over the conv grid (OH, OW),
    y clamped at 0. Overwrites y and arg.

    Pool window (ph, pw) covers conv rows ph*psh - ppt + [0, ph_k) and columns
    pw*psw - ppl + [0, pw_k), clipped to the grid (padding never wins).
    zbuf (threads, ph_k, OW, F) is scratch, one slab per worker thread.
    """
    N, Hp, Wp, C = xp.shape
    KH, KW, _, F = w.shape
    PH = y.shape[1]
    xf = xp.reshape(N, Hp, Wp * C)
    wf = w.reshape(KH, KW * C, F)
    step = sw * C
    for r in prange(N * PH):
        n = r // PH
        ph = r - n * PH
        z = zbuf[numba.get_thread_id()]
        top = ph * psh - ppt
        lo = max(top, 0)
        hi = min(top + ph_k, oh_n)
        for oh in range(lo, hi):
            _conv_row(xf[n], wf, wpk, b, oh * sh, step, False, z[oh - lo])
        _pool_rows(z, lo, hi, ow_n, pw_k, psw, ppl, y[n, ph], arg[n, ph])
    return y


@njit(parallel=True, **FMA_OPTS)
def _forward_pooled_3x3(xp, wpk, off, b, sh, sw, oh_n, ow_n, ph_k, pw_k, psh, psw, ppt, ppl,
                        zbuf, y, arg):
    """_forward_pooled for Geometry.tiled convs, by rows of conv2d._conv_row_3x3 (only
    the variant a model uses compiles: see conv2d._conv_row_3x3), or of
    conv2d._conv_row_3x3_short where off (Geometry.tap_offsets) is not empty."""
    N, Hp, Wp, C = xp.shape
    PH = y.shape[1]
    xf = xp.reshape(N, Hp, Wp * C)
    xs = xp.reshape(N, Hp * Wp * C)
    wt = wpk.reshape(wpk.shape[0], wpk.shape[1] * wpk.shape[2], FC)
    step = sw * C
    for r in prange(N * PH):
        n = r // PH
        ph = r - n * PH
        z = zbuf[numba.get_thread_id()]
        top = ph * psh - ppt
        lo = max(top, 0)
        hi = min(top + ph_k, oh_n)
        for oh in range(lo, hi):
            if off.shape[0] > 0:
                _conv_row_3x3_short(xs[n], off, wt, b, oh * sh * Wp * C, step, False,
                                    z[oh - lo])
            else:
                _conv_row_3x3(xf[n], wpk, b, oh * sh, step, False, z[oh - lo])
        _pool_rows(z, lo, hi, ow_n, pw_k, psw, ppl, y[n, ph], arg[n, ph])
    return y


# Width of the register-held chunk of a KW*C input run in the sparse dw (12 AVX2
# registers; the seed's KW*C is 96). A chunk of 32 measured 3x slower: LLVM
# unrolls a 32-trip loop fully and then fails to re-vectorize it.
KC = 96
# Short runs (KW*C <= KS) read KS inputs per kernel row, IB kernel rows at a time.
KS = 16
IB = 3
IB_KS = IB * KS
# Accumulator sets of the short-run dw (SETS x IB x KS floats, held in registers).
SETS = 4
SETS_IB_KS = SETS * IB * KS


@njit(inline="always", **FMA_OPTS)
def _add_winner(a, xptr, img, o, row, gv, lim, K, tptr):
    """a (IB, KS)[r, t] += gv * x[img + o + r*row + t]: one winner's three kernel rows of
    a short-run dw (see _backward_pooled). xptr is x's data (_data_f32), img the
    image's offset in it, o the winner's in the image. Where o > lim the KS reads of a
    row would pass the end of the image, so the K that count are first copied into the
    stack tile tptr (IB * KS floats), zeros after them, and read from there. One
    multiply-add loop serves both ways, so every winner's products and sums round
    alike (two loops need not be contracted into FMAs alike), and the test is on the
    image, not on x, so nothing depends on the batch. a is indexed by constants only:
    LLVM holds it in registers across the winner loop (an exact loop over K adding
    into a kept it on the stack, a load and a store around every FMA)."""
    p = xptr
    q0 = np.uint64(img + o)
    rs = np.uint64(row)
    if o > lim:
        # reads clamped to the K that count, then zeroed: no call to memcpy (a call
        # makes every zmm register caller-saved, and the sums went back to the stack)
        for r in range(IB):
            q = np.uint64(img + o + r * row)
            for t in range(KS):
                v = xptr[q + np.uint64(min(t, K - 1))]
                tptr[r * KS + t] = v if t < K else F32(0)
        p = tptr
        q0 = np.uint64(0)
        rs = np.uint64(KS)
    q1 = q0 + rs
    q2 = q1 + rs
    for t in range(KS):
        u = np.uint64(t)
        a[0, t] += gv * p[q0 + u]
        a[1, t] += gv * p[q1 + u]
        a[2, t] += gv * p[q2 + u]


@njit(parallel=True, **FMA_OPTS)
def _backward_pooled(xp, wt, dy, y, arg, sh, sw, ow_n, need_dx, loff, lg, lcnt, dwp, dbp,
                     dxp):
    """Per-image partial dw, db and the padded dx of conv2d_relu_maxpool_backward.

    dy, y, arg (N, PH, PW, F); wt (KH, F, KW*C) as conv2d's transposed w.
    Overwrites dwp (N, F, KH, KW*C), dbp (N, F) and, if need_dx, dxp
    (N, Hp, Wp, C). One task per image owns dwp[n], dbp[n], dxp[n].

    Each pooled gradient with y > 0 lands on one conv output (oh, ow) =
    divmod(arg, OW), which saw the KW*C contiguous inputs at offset
    oh*sh*Wp*C + ow*sw*C (+ i*Wp*C for kernel row i) of the image.
    - dx: each live channel adds g * wt[i, f, :] to its winner's inputs.
    - dw: the winners are listed per channel (loff, lg; lcnt entries), then
      dw[f, i, chunk] sums g * x[winner + i*Wp*C + chunk] over the list with
      the chunk accumulating on the stack (no aliasing, so no stores to dw in
      the loop). Runs of at most KS inputs (an RGB first layer) read KS and
      keep the first KW*C sums, IB kernel rows at a time, the winners spread over
      SETS register-held sums (_add_winner).
    Scratch, one slab per worker thread: loff (T, F, PH*PW) int64, lg
    (T, F, PH*PW), lcnt (T, F) int64.
    """
    N, Hp, Wp, C = xp.shape
    PH, PW, F = dy.shape[1], dy.shape[2], dy.shape[3]
    KH, _, K = wt.shape
    row = Wp * C
    step = sw * C
    xf = xp.reshape(N, Hp * row)
    xall = xp.reshape(-1)
    dxf = dxp.reshape(dxp.shape[0], Hp * row)
    inv = 1.0 / ow_n
    lim = (Hp - IB + 1) * row - KS       # _add_winner's fast reads end inside the image
    xptr = _data_f32(xall)
    for n in prange(N):
        tid = numba.get_thread_id()
        offs = loff[tid]
        gs = lg[tid]
        cnt = lcnt[tid]
        acc = numba.carray(_stack_f32(KC), (KC,))
        acc4 = numba.carray(_stack_f32(SETS_IB_KS), (SETS, IB, KS))
        tptr = _stack_f32(IB_KS)
        xn = xf[n]
        dxn = dxf[n]
        cnt[:] = 0
        dbp[n] = 0
        if need_dx:
            dxn[:] = 0
        for ph in range(PH):
            for pw in range(PW):
                ga = dy[n, ph, pw]
                ya = y[n, ph, pw]
                aa = arg[n, ph, pw]
                for f in range(F):
                    if ya[f] > 0:
                        g = ga[f]
                        # oh = arg // OW without an integer division: (arg + 0.5) / OW
                        # lies at least 0.5 / OW from an integer, and float64 errs by
                        # under OH * 2**-52, smaller whenever OH * OW < 2**51.
                        r = int((aa[f] + 0.5) * inv)
                        o = r * sh * row + (aa[f] - r * ow_n) * step
                        dbp[n, f] += g
                        offs[f, cnt[f]] = o
                        gs[f, cnt[f]] = g
                        cnt[f] += 1
                        if need_dx:
                            # Slices, so inner indices are bare loop counters: no
                            # negative-index fix-up, and LLVM vectorizes.
                            for i in range(KH):
                                d = dxn[o + i * row:o + i * row + K]
                                wi = wt[i, f]
                                for k in range(K):
                                    d[k] += g * wi[k]
        img = n * Hp * row                     # image n's offset in the flat xall
        for f in range(F):
            of = offs[f]
            gf = gs[f]
            i0 = 0
            if K <= KS:
                # Short runs (conv1: KW*C = 9): read KS inputs per kernel row, IB rows
                # at a time, and keep only the first K sums. The extra lanes read
                # the next pixels' inputs (finite, discarded); an entry whose reads
                # would pass the end of x is copied into tmp first (_add_winner).
                # The winners go round SETS accumulator sets, added at the end as
                # (s0 + s1) + (s2 + s3): with one set, every FMA waited for the one
                # before it (the same 3 x 16 sums, winner after winner).
                c = cnt[f]
                while i0 + IB <= KH:
                    for q in range(SETS):
                        for r in range(IB):
                            for t in range(KS):
                                acc4[q, r, t] = 0
                    base = i0 * row
                    j = 0
                    while j + SETS <= c:
                        _add_winner(acc4[0], xptr, img, base + of[j], row, gf[j], lim, K,
                                    tptr)
                        _add_winner(acc4[1], xptr, img, base + of[j + 1], row, gf[j + 1],
                                    lim, K, tptr)
                        _add_winner(acc4[2], xptr, img, base + of[j + 2], row, gf[j + 2],
                                    lim, K, tptr)
                        _add_winner(acc4[3], xptr, img, base + of[j + 3], row, gf[j + 3],
                                    lim, K, tptr)
                        j += SETS
                    while j < c:
                        _add_winner(acc4[0], xptr, img, base + of[j], row, gf[j], lim, K,
                                    tptr)
                        j += 1
                    for r in range(IB):
                        d = dwp[n, f, i0 + r]
                        for t in range(K):
                            d[t] = (acc4[0, r, t] + acc4[1, r, t]) + \
                                (acc4[2, r, t] + acc4[3, r, t])
                    i0 += IB
            for i in range(i0, KH):
                c0 = 0
                while c0 < K:
                    cw = min(KC, K - c0)
                    d = dwp[n, f, i, c0:c0 + cw]
                    base = i * row + c0
                    if cw == KC:
                        for t in range(KC):
                            acc[t] = 0
                        for j in range(cnt[f]):
                            o = of[j] + base
                            xs = xn[o:o + KC]
                            gv = gf[j]
                            for t in range(KC):
                                acc[t] += gv * xs[t]
                        for t in range(KC):
                            d[t] = acc[t]
                    else:
                        d[:] = 0
                        for j in range(cnt[f]):
                            o = of[j] + base
                            xs = xn[o:o + cw]
                            gv = gf[j]
                            for t in range(cw):
                                d[t] += gv * xs[t]
                    c0 += KC
    return dwp


@njit(**FMA_OPTS)
def _reduce_images(dwp, dbp, dw, db):
    """dw (KH, KW, C, F)[i, k, f] = sum over n in order of dwp (N, F, KH, KW*C)[n, f, i, k];
    db (F,) likewise from dbp (N, F). Overwrites dw and db, and uses dwp[0] and dbp[0]
    as the running sums (the partials are scratch, rewritten by every backward).

    Serial on purpose: image by image the adds stream through contiguous memory
    (vectorized, no reassociation: each sum still runs n = 0, 1, ... in order):
    3-4x faster than the parallel strided loop it replaced on the seed's shapes,
    and a parallel kernel costs 2-3 s more to compile on a fresh cache (docs/cpu.md).
    """
    N, F, KH, K = dwp.shape
    m = F * KH * K
    acc = dwp.reshape(N, m)
    for n in range(1, N):
        for t in range(m):
            acc[0, t] += acc[n, t]
    for n in range(1, N):
        for f in range(F):
            dbp[0, f] += dbp[n, f]
    # Loops, not slice assignments: `db[:] = dbp[0]` after the loops above took
    # LLVM ~4.5 s more to compile (measured; its overlap-checked copy).
    for f in range(F):
        db[f] = dbp[0, f]
    dwf = dw.reshape(KH, K, F)
    for f in range(F):
        for i in range(KH):
            for k in range(K):
                dwf[i, k, f] = dwp[0, f, i, k]
    return dw


@njit(parallel=True, **FMA_OPTS)
def _relu_mask(dy, y, dz):
    """dz = dy where y > 0, else 0 (flat arrays of one size). Overwrites dz."""
    for t in prange(dy.size):
        dz[t] = dy[t] if y[t] > 0 else F32(0)
    return dz


@njit(**FMA_OPTS)
def _indices_within(a, n):
    """True if every a[t] is in [0, n). One pass, no temporaries (NumPy's min and max
    would allocate on every training step)."""
    for t in range(a.size):
        if a[t] < 0 or a[t] >= n:
            return False
    return True


def _check_argmax(dy, argmax, grid_shape):
    """maxpool2d_backward's checks (the shared fused ones), then argmax's range in one
    Numba pass instead of check_argmax_range's two NumPy reductions (same message)."""
    n, h, w, c = _validate.fused_pool_grad(dy, argmax, grid_shape)
    if argmax.size and not _indices_within(argmax.reshape(-1), h * w):
        raise ValueError(f"maxpool2d_backward: argmax holds indices outside [0, {h * w})")


def conv2d_relu_forward(x, w, b, stride=1, padding="valid", out=None):
    """y = relu(conv2d_forward(x, w, b)): (N, OH, OW, F), written into out when given
    (overwritten, no allocation), else a new array."""
    op = "conv2d_forward"
    g = conv2d.Geometry(op, x, w, stride, padding)
    _validate.check_bias(op, b, g.f, x.dtype)
    t = Target("conv2d_relu_forward", "out", out, g.y_shape)
    conv2d.forward(g, x, w, b, True, t.buf)
    return t.result()


def conv2d_relu_backward(x, w, dy, y, stride=1, padding="valid", need_dx=True, out=None):
    """conv2d_backward with dz = dy where y > 0 (y the fused forward's output).

    dy, y (N, OH, OW, F). Returns (dx or None, dw, db), overwritten into out's
    buffers when given; dw and db bitwise identical for any thread count.
    """
    _validate.fused_relu_grad(dy, y)
    op = "conv2d_backward"
    g = conv2d.Geometry(op, x, w, stride, padding)
    _validate.check_dy(op, dy, g.y_shape, x.dtype)
    check_float32(op, "y", y)
    dz = conv2d.workspace("relu_dz", g.y_shape)
    _relu_mask(contiguous(dy).reshape(-1), contiguous(y).reshape(-1), dz.reshape(-1))
    return conv2d.backward("conv2d_relu_backward", g, x, w, dz, need_dx, out)


def conv2d_relu_maxpool_forward(x, w, b, stride=1, padding="valid", pool=2, pool_stride=None,
                                pool_padding="valid", out=None):
    """(y, argmax) = maxpool2d_forward(relu(conv2d_forward(x, w, b)), pool, pool_stride).

    y (N, PH, PW, F) float32; argmax (N, PH, PW, F) int32 flat indices
    oh * OW + ow into the conv output grid, defined where y > 0 (elsewhere an
    index inside the window). Written into out=(y, argmax) buffers when given
    (overwritten, no allocation), else new arrays.
    """
    op = "conv2d_relu_maxpool_forward"
    g = conv2d.Geometry("conv2d_forward", x, w, stride, padding)
    _validate.check_bias("conv2d_forward", b, g.f, x.dtype)
    (pk_h, pk_w), (ps_h, ps_w), ph, pw, ppt, ppl = _validate.fused_pool_geometry(
        g.oh, g.ow, pool, pool_stride, pool_padding)
    o = _validate.out_tuple(op, out, 2)
    ty = Target(op, "out[0]", o[0], (g.n, ph, pw, g.f))
    ta = Target(op, "out[1]", o[1], (g.n, ph, pw, g.f), np.int32)
    zbuf = conv2d.workspace("pool_rows", (numba.config.NUMBA_NUM_THREADS, pk_h, g.ow, g.f))
    pool_args = (g.oh, g.ow, pk_h, pk_w, ps_h, ps_w, ppt, ppl, zbuf, ty.buf, ta.buf)
    if g.tiled:
        _forward_pooled_3x3(g.padded(x), g.packed_w(contiguous(w)), g.tap_offsets(),
                            contiguous(b), g.sh, g.sw, *pool_args)
    else:
        _forward_pooled(g.padded(x), contiguous(w), g.packed_w(contiguous(w)),
                        contiguous(b), g.sh, g.sw, *pool_args)
    return ty.result(), ta.result()


def conv2d_relu_maxpool_backward(x, w, dy, y, argmax, stride=1, padding="valid",
                                 need_dx=True, out=None):
    """Gradients of conv2d_relu_maxpool_forward given dy (N, PH, PW, F).

    dz (conv output grid) = maxpool2d_backward(dy where y > 0, argmax), then
    conv2d_backward(x, w, dz), without building dz. Returns (dx or None, dw,
    db), overwritten into out's buffers when given; dw and db are bitwise
    identical for any thread count.
    """
    op = "conv2d_relu_maxpool_backward"
    g = conv2d.Geometry(op, x, w, stride, padding)
    _validate.fused_relu_grad(dy, y)
    _check_argmax(dy, contiguous(argmax) if isinstance(argmax, np.ndarray) else argmax,
                  g.y_shape)
    check_float32(op, "dy", dy)
    check_float32(op, "y", y)
    o = _validate.out_tuple(op, out, 3)
    tdx = Target(op, "out[0]", o[0], x.shape) if need_dx else None
    tdw = Target(op, "out[1]", o[1], w.shape)
    tdb = Target(op, "out[2]", o[2], (g.f,))
    k = g.kw * g.c
    if need_dx:
        dxp = tdx.buf if g.direct else conv2d.workspace("dxpad", g.padded_shape)
    else:
        dxp = conv2d.workspace("no_dx", (1, g.hp, g.wp, g.c))  # typed stand-in, never written
    dwp = conv2d.workspace("pool_dw_partial", (g.n, g.f, g.kh, k))
    dbp = conv2d.workspace("pool_db_partial", (g.n, g.f))
    threads = numba.config.NUMBA_NUM_THREADS
    pooled = dy.shape[1] * dy.shape[2]
    _backward_pooled(g.padded(x), g.transposed_w(contiguous(w)), contiguous(dy),
                     contiguous(y), contiguous(argmax), g.sh, g.sw, g.ow, need_dx,
                     conv2d.workspace("sparse_offsets", (threads, g.f, pooled), np.int64),
                     conv2d.workspace("sparse_gradients", (threads, g.f, pooled)),
                     conv2d.workspace("sparse_counts", (threads, g.f), np.int64),
                     dwp, dbp, dxp)
    _reduce_images(dwp, dbp, tdw.buf, tdb.buf)
    if need_dx and not g.direct:
        tdx.buf[...] = dxp[:, g.pt:g.pt + g.h, g.pl:g.pl + g.w, :]
    return (tdx.result() if need_dx else None), tdw.result(), tdb.result()

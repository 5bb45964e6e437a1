"""2-D convolution on CUDA (NHWC, any kernel size, stride, 'valid'/'same'), as implicit GEMMs.

Sizes: x (N, H, W, C), w (KH, KW, C, F), b (F,), y (N, OH, OW, F); K = KH*KW*C.
Every kernel views w as the matrix w2 (K, F) (its C-contiguous memory as is) and
gathers the other operand straight from the NHWC tensor, so no im2col buffer is
ever written (docs/cuda_conv.md has the tiles and thread maps):

- forward   y (M=N*OH*OW, F) = patches (M, K) @ w2 (K, F) + b   conv2d_fwd_tile
            (the same kernel fuses ReLU and max-pooling: fastconv/kernels/cuda/fused.py)
- dx        dx (N*H*W, C) = gathered dy (N*H*W, KH*KW*F) @ w2^T  conv2d_dx_tile
            (a gather: no atomics, every dx element written exactly once)
- dw, db    dw2 (K, F) = patches^T @ dy, split over pixel ranges: per-block partials
            (conv2d_dw_tile), then a fixed-order sum (conv2d_dw_sum). Deterministic,
            no atomics.

Tile constants below are compile-time constants on a GPU; the simulator reads them
live, so tests may shrink them to get many blocks from tiny inputs.
"""
import numpy as np
from numba import cuda, float32, int32

from .. import _validate as v
from . import _devargs as d
from ._spec import KernelSpec

# Forward / dx GEMM tile: BM rows (pixels) x BN columns (channels) per block, staged
# BK reduction steps at a time. threadIdx.x walks the BN channels, so a warp's loads of
# weights and stores of outputs are 128 contiguous bytes (NHWC: channels innermost);
# each thread keeps TM pixel rows in registers.
BM = 64
BN = 32
BK = 16
TM = 8
BM_PAD = BM + 1     # shared tiles stored column-wise get one pad word: conflict-free stores
BN_PAD = BN + 1

# Weight-gradient tile: DW_BK rows of dw2 x DW_BN output channels per block, reduced over
# DW_BM pixels per step; each thread keeps DW_TK rows. DW_TARGET_BLOCKS sets how finely the
# pixel range is split (enough blocks to fill 132 SMs several times).
DW_BM = 16
DW_BK = 32
DW_BN = 32
DW_TK = 4
DW_BK_PAD = DW_BK + 1
DW_TARGET_BLOCKS = 1024
SUM_THREADS = 256


def set_tiles(bm=64, bn=32, bk=16, tm=8, dw_bm=16, dw_bk=32, dw_bn=32, dw_tk=4,
              dw_target_blocks=1024):
    """Change the tile constants (simulator tests only: on a GPU each kernel freezes them
    when it first compiles, so changing them afterwards would desynchronise the launchers)."""
    g = globals()
    g.update(BM=bm, BN=bn, BK=bk, TM=tm, BM_PAD=bm + 1, BN_PAD=bn + 1, DW_BM=dw_bm,
             DW_BK=dw_bk, DW_BN=dw_bn, DW_TK=dw_tk, DW_BK_PAD=dw_bk + 1,
             DW_TARGET_BLOCKS=dw_target_blocks)


def fwd_threads():
    return (BN, BM // TM)


def dw_threads():
    return (DW_BN, DW_BK // DW_TK)


@cuda.jit
def conv2d_fwd_tile(x, w2, b, y, arg, KH, KW, OH, OW, sh, sw, pt, pl,
                    pool_h, pool_w, psh, psw, ppt, ppl, relu, pooled):
    """y[n, ph, pw, f] = max over the pool window of act(conv(x, w) + b) at conv pixel (oh, ow).

    x (N, H, W, C), w2 (K=KH*KW*C, F), b (F,), y (N, PH, PW, F) float32; arg int32 like y
    (written only when pooled != 0: flat index oh * OW + ow of the winner, first maximum in
    row-major window order; a (1, 1, 1, 1) dummy otherwise). act is ReLU when relu != 0.
    The unfused conv is pool 1x1, stride 1, no padding. Overwrites y (and arg).
    Grid (ceil(N*PH*PW / BM), ceil(F / BN)), block (BN, BM // TM).
    """
    a_s = cuda.shared.array((BK, BM_PAD), float32)   # patches tile [k][pixel]; +1: store banks
    b_s = cuda.shared.array((BK, BN), float32)       # weight tile [k][channel]
    acc = cuda.local.array(TM, float32)
    best = cuda.local.array(TM, float32)
    won = cuda.local.array(TM, int32)
    n_img = x.shape[0]
    in_h = x.shape[1]
    in_w = x.shape[2]
    in_c = x.shape[3]
    n_ph = y.shape[1]
    n_pw = y.shape[2]
    n_f = y.shape[3]
    n_k = w2.shape[0]
    n_m = n_img * n_ph * n_pw
    kwc = KW * in_c
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * BN + tx
    n_threads = BN * (BM // TM)
    m0 = cuda.blockIdx.x * BM
    f0 = cuda.blockIdx.y * BN
    f = f0 + tx
    for r in range(TM):
        best[r] = float32(0.0)
        won[r] = -1
    for q in range(pool_h * pool_w):
        qi = q // pool_w
        qj = q - qi * pool_w
        for r in range(TM):
            acc[r] = float32(0.0)
        for k0 in range(0, n_k, BK):
            for e in range(tid, BK * BM, n_threads):
                # consecutive threads take consecutive k = consecutive input channels
                kk = e % BK
                mm = e // BK
                m = m0 + mm
                k = k0 + kk
                val = float32(0.0)
                if m < n_m and k < n_k:
                    n = m // (n_ph * n_pw)
                    rem = m - n * (n_ph * n_pw)
                    p_h = rem // n_pw
                    p_w = rem - p_h * n_pw
                    oh = p_h * psh - ppt + qi
                    ow = p_w * psw - ppl + qj
                    if oh >= 0 and oh < OH and ow >= 0 and ow < OW:
                        i = k // kwc
                        rem2 = k - i * kwc
                        j = rem2 // in_c
                        c = rem2 - j * in_c
                        row = oh * sh - pt + i
                        col = ow * sw - pl + j
                        if row >= 0 and row < in_h and col >= 0 and col < in_w:
                            val = x[n, row, col, c]
                a_s[kk, mm] = val
            for e in range(tid, BK * BN, n_threads):
                nn = e % BN
                kk = e // BN
                k = k0 + kk
                val = float32(0.0)
                if k < n_k and f0 + nn < n_f:
                    val = w2[k, f0 + nn]
                b_s[kk, nn] = val
            cuda.syncthreads()
            for kk in range(BK):
                wv = b_s[kk, tx]
                for r in range(TM):
                    acc[r] += a_s[kk, ty * TM + r] * wv
            cuda.syncthreads()
        bias = float32(0.0)
        if f < n_f:
            bias = b[f]
        for r in range(TM):
            m = m0 + ty * TM + r
            if m < n_m:
                n = m // (n_ph * n_pw)
                rem = m - n * (n_ph * n_pw)
                p_h = rem // n_pw
                p_w = rem - p_h * n_pw
                oh = p_h * psh - ppt + qi
                ow = p_w * psw - ppl + qj
                if oh >= 0 and oh < OH and ow >= 0 and ow < OW:
                    val = acc[r] + bias
                    if relu != 0 and val < float32(0.0):
                        val = float32(0.0)
                    if won[r] < 0 or val > best[r]:
                        best[r] = val
                        won[r] = oh * OW + ow
    if f < n_f:
        for r in range(TM):
            m = m0 + ty * TM + r
            if m < n_m:
                n = m // (n_ph * n_pw)
                rem = m - n * (n_ph * n_pw)
                p_h = rem // n_pw
                p_w = rem - p_h * n_pw
                y[n, p_h, p_w, f] = best[r]
                if pooled != 0:
                    arg[n, p_h, p_w, f] = won[r]


@cuda.jit
def conv2d_dx_tile(dz, w2, dx, KH, KW, sh, sw, pt, pl):
    """dx[n, h, w, c] = sum over taps (i, j) and f of dz[n, oh, ow, f] * w[i, j, c, f]
    where h + pt - i = oh * sh and w + pl - j = ow * sw (a gather, so no atomics).

    dz (N, OH, OW, F), w2 (KH*KW*C, F), dx (N, H, W, C) float32. Overwrites every dx element.
    Grid (ceil(N*H*W / BM), ceil(C / BN)), block (BN, BM // TM).
    """
    a_s = cuda.shared.array((BK, BM_PAD), float32)   # gathered dz [k=(i, j, f)][pixel]
    b_s = cuda.shared.array((BK, BN_PAD), float32)   # w [k=(i, j, f)][c]; +1: store banks
    acc = cuda.local.array(TM, float32)
    n_img = dx.shape[0]
    in_h = dx.shape[1]
    in_w = dx.shape[2]
    in_c = dx.shape[3]
    OH = dz.shape[1]
    OW = dz.shape[2]
    n_f = dz.shape[3]
    n_m = n_img * in_h * in_w
    n_k = KH * KW * n_f
    kwf = KW * n_f
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * BN + tx
    n_threads = BN * (BM // TM)
    m0 = cuda.blockIdx.x * BM
    c0 = cuda.blockIdx.y * BN
    for r in range(TM):
        acc[r] = float32(0.0)
    for k0 in range(0, n_k, BK):
        for e in range(tid, BK * BM, n_threads):
            kk = e % BK                      # consecutive threads: consecutive f of dz
            mm = e // BK
            m = m0 + mm
            k = k0 + kk
            val = float32(0.0)
            if m < n_m and k < n_k:
                n = m // (in_h * in_w)
                rem = m - n * (in_h * in_w)
                h = rem // in_w
                wq = rem - h * in_w
                i = k // kwf
                rem2 = k - i * kwf
                j = rem2 // n_f
                fo = rem2 - j * n_f
                oh_s = h + pt - i
                ow_s = wq + pl - j
                if oh_s >= 0 and ow_s >= 0:
                    oh = oh_s // sh
                    ow = ow_s // sw
                    if oh * sh == oh_s and ow * sw == ow_s and oh < OH and ow < OW:
                        val = dz[n, oh, ow, fo]
            a_s[kk, mm] = val
        for e in range(tid, BK * BN, n_threads):
            kk = e % BK                      # consecutive threads: consecutive f of w2
            nn = e // BK
            k = k0 + kk
            val = float32(0.0)
            if k < n_k and c0 + nn < in_c:
                i = k // kwf
                rem2 = k - i * kwf
                j = rem2 // n_f
                fo = rem2 - j * n_f
                val = w2[(i * KW + j) * in_c + c0 + nn, fo]
            b_s[kk, nn] = val
        cuda.syncthreads()
        for kk in range(BK):
            wv = b_s[kk, tx]
            for r in range(TM):
                acc[r] += a_s[kk, ty * TM + r] * wv
        cuda.syncthreads()
    c = c0 + tx
    if c < in_c:
        for r in range(TM):
            m = m0 + ty * TM + r
            if m < n_m:
                n = m // (in_h * in_w)
                rem = m - n * (in_h * in_w)
                h = rem // in_w
                wq = rem - h * in_w
                dx[n, h, wq, c] = acc[r]


@cuda.jit
def conv2d_dw_tile(x, dz, part, KH, KW, sh, sw, pt, pl, m_chunk):
    """Stage 1 of dw/db: part[z, k, f] = sum over pixels m in chunk z of patch[m, k] * dz[m, f],
    and part[z, K, f] = sum over the chunk of dz[m, f] (the bias gradient).

    x (N, H, W, C), dz (N, OH, OW, F), part (S, K + 1, F) float32, chunk z = pixels
    [z * m_chunk, (z + 1) * m_chunk). Overwrites part[z] for its (k, f) tile; db row written
    by the blocks with blockIdx.x == 0. Grid (ceil(K / DW_BK), ceil(F / DW_BN), S),
    block (DW_BN, DW_BK // DW_TK).
    """
    x_s = cuda.shared.array((DW_BM, DW_BK_PAD), float32)   # patches [pixel][k]
    d_s = cuda.shared.array((DW_BM, DW_BN), float32)       # dz [pixel][f]
    acc = cuda.local.array(DW_TK, float32)
    in_h = x.shape[1]
    in_w = x.shape[2]
    in_c = x.shape[3]
    OH = dz.shape[1]
    OW = dz.shape[2]
    n_f = dz.shape[3]
    n_m = dz.shape[0] * OH * OW
    n_k = part.shape[1] - 1
    kwc = KW * in_c
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * DW_BN + tx
    n_threads = DW_BN * (DW_BK // DW_TK)
    k0 = cuda.blockIdx.x * DW_BK
    f0 = cuda.blockIdx.y * DW_BN
    z = cuda.blockIdx.z
    m_lo = z * m_chunk
    m_hi = min(n_m, m_lo + m_chunk)
    with_db = cuda.blockIdx.x == 0 and ty == 0
    db_acc = float32(0.0)
    for r in range(DW_TK):
        acc[r] = float32(0.0)
    for ms in range(m_lo, m_hi, DW_BM):
        for e in range(tid, DW_BM * DW_BK, n_threads):
            kk = e % DW_BK
            mm = e // DW_BK
            m = ms + mm
            k = k0 + kk
            val = float32(0.0)
            if m < m_hi and k < n_k:
                n = m // (OH * OW)
                rem = m - n * (OH * OW)
                oh = rem // OW
                ow = rem - oh * OW
                i = k // kwc
                rem2 = k - i * kwc
                j = rem2 // in_c
                c = rem2 - j * in_c
                row = oh * sh - pt + i
                col = ow * sw - pl + j
                if row >= 0 and row < in_h and col >= 0 and col < in_w:
                    val = x[n, row, col, c]
            x_s[mm, kk] = val
        for e in range(tid, DW_BM * DW_BN, n_threads):
            nn = e % DW_BN
            mm = e // DW_BN
            m = ms + mm
            val = float32(0.0)
            if m < m_hi and f0 + nn < n_f:
                n = m // (OH * OW)
                rem = m - n * (OH * OW)
                oh = rem // OW
                ow = rem - oh * OW
                val = dz[n, oh, ow, f0 + nn]
            d_s[mm, nn] = val
        cuda.syncthreads()
        for mm in range(DW_BM):
            dv = d_s[mm, tx]
            for r in range(DW_TK):
                acc[r] += x_s[mm, ty * DW_TK + r] * dv
            if with_db:
                db_acc += dv
        cuda.syncthreads()
    f = f0 + tx
    if f < n_f:
        for r in range(DW_TK):
            k = k0 + ty * DW_TK + r
            if k < n_k:
                part[z, k, f] = acc[r]
        if with_db:
            part[z, n_k, f] = db_acc


@cuda.jit
def conv2d_dw_sum(part, dw2, db):
    """Stage 2 of dw/db: dw2[k, f] = sum_z part[z, k, f] and db[f] = sum_z part[z, K, f],
    summed in the fixed order z = 0, 1, ... (deterministic). part (S, K + 1, F), dw2 (K, F),
    db (F,) float32, overwritten. One thread per (k, f): grid ceil((K + 1) * F / SUM_THREADS)."""
    e = cuda.grid(1)
    n_s = part.shape[0]
    n_k1 = part.shape[1]
    n_f = part.shape[2]
    if e < n_k1 * n_f:      # no syncthreads in this kernel: the early exit is safe
        k = e // n_f
        f = e - k * n_f
        s = float32(0.0)
        for z in range(n_s):
            s += part[z, k, f]
        if k < n_k1 - 1:
            dw2[k, f] = s
        else:
            db[f] = s


F4 = float32[:, :, :, ::1]
F2 = float32[:, ::1]
I4 = int32[:, :, :, ::1]
FWD_SIG = (F4, F2, float32[::1], F4, I4) + (int32,) * 16
DX_SIG = (F4, F2, F4) + (int32,) * 6
DW_SIG = (F4, F4, float32[:, :, ::1]) + (int32,) * 7
SUM_SIG = (float32[:, :, ::1], F2, float32[::1])

KERNELS = [
    KernelSpec("conv2d_fwd_tile", conv2d_fwd_tile, FWD_SIG, BN * (BM // TM)),
    KernelSpec("conv2d_dx_tile", conv2d_dx_tile, DX_SIG, BN * (BM // TM)),
    KernelSpec("conv2d_dw_tile", conv2d_dw_tile, DW_SIG, DW_BN * (DW_BK // DW_TK)),
    KernelSpec("conv2d_dw_sum", conv2d_dw_sum, SUM_SIG, SUM_THREADS),
]


# --- launchers (shared by conv2d, fused and dense wrappers; arguments already checked) ---

def _i32(*values):
    return tuple(np.int32(v) for v in values)


def _dummy_argmax():
    return d.workspace("conv2d_dummy_argmax", (1, 1, 1, 1), np.int32)


def launch_forward(x, w2, b, y, kh, kw, oh, ow, stride, pt, pl, relu=False,
                   pool=(1, 1), pool_stride=(1, 1), ppt=0, ppl=0, arg=None):
    """y (N, PH, PW, F) [, arg] from x and w2 = w viewed as (K, F); see conv2d_fwd_tile."""
    n, ph, pw, f = y.shape
    grid = (d.blocks(n * ph * pw, BM), d.blocks(f, BN))
    pooled = arg is not None
    conv2d_fwd_tile[grid, fwd_threads()](
        x, w2, b, y, arg if pooled else _dummy_argmax(),
        *_i32(kh, kw, oh, ow, stride[0], stride[1], pt, pl, pool[0], pool[1],
              pool_stride[0], pool_stride[1], ppt, ppl, relu, pooled))


def launch_dx(dz, w2, dx, kh, kw, stride, pt, pl):
    n, h, wd, c = dx.shape
    grid = (d.blocks(n * h * wd, BM), d.blocks(c, BN))
    conv2d_dx_tile[grid, fwd_threads()](dz, w2, dx, *_i32(kh, kw, stride[0], stride[1], pt, pl))


def dw_split(m, k, f):
    """(S, m_chunk): pixel chunks for the two-stage weight gradient. Enough chunks that
    the grid has about DW_TARGET_BLOCKS blocks, each chunk a multiple of DW_BM pixels."""
    tiles = d.blocks(k, DW_BK) * d.blocks(f, DW_BN)
    s = max(1, min(d.blocks(DW_TARGET_BLOCKS, tiles), d.blocks(m, DW_BM)))
    chunk = d.blocks(d.blocks(m, s), DW_BM) * DW_BM
    return d.blocks(m, chunk), chunk


def launch_dw(x, dz, dw2, db, kh, kw, stride, pt, pl):
    """dw2 (K, F) and db (F,) from x and dz, via a cached partials workspace."""
    n, oh, ow, f = dz.shape
    k = dw2.shape[0]
    s, chunk = dw_split(n * oh * ow, k, f)
    part = d.workspace("conv2d_dw_partials", (s, k + 1, f))
    grid = (d.blocks(k, DW_BK), d.blocks(f, DW_BN), s)
    conv2d_dw_tile[grid, dw_threads()](
        x, dz, part, *_i32(kh, kw, stride[0], stride[1], pt, pl, chunk))
    conv2d_dw_sum[d.blocks((k + 1) * f, SUM_THREADS), SUM_THREADS](part, dw2, db)


def launch_backward(op, x, w, dz, stride, pt, pl, need_dx, out):
    """(dx or None, dw, db) of the conv from dz (N, OH, OW, F), into out= buffers or new ones."""
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    out_dx, out_dw, out_db = d.split_out(op, out, 3)
    dw = d.out_buffer(op, "out[1]", out_dw, w.shape)
    db = d.out_buffer(op, "out[2]", out_db, (f,))
    dx = d.out_buffer(op, "out[0]", out_dx, x.shape) if need_dx else None
    w2 = w.reshape(kh * kw * c, f)
    launch_dw(x, dz, dw.reshape(kh * kw * c, f), db, kh, kw, stride, pt, pl)
    if need_dx:
        launch_dx(dz, w2, dx, kh, kw, stride, pt, pl)
    return dx, dw, db


# --- public ops ---

def conv2d_forward(x, w, b, stride=1, padding="valid", out=None):
    """y[n, oh, ow, f] = b[f] + sum_{i, j, c} xpad[n, oh*sh + i, ow*sw + j, c] * w[i, j, c, f].

    x (N, H, W, C), w (KH, KW, C, F), b (F,): float32 C-contiguous device arrays; stride int
    or pair; padding 'valid' or 'same' (Keras geometry). Returns y (N, OH, OW, F), a new device
    array or `out` (overwritten). Never copies to the host.
    """
    op = "conv2d_forward"
    xm, wm = d.meta(op, "x", x), d.meta(op, "w", w)
    stride, oh, ow, pt, pl = v.conv2d_geometry(op, xm, wm, stride, padding)
    v.check_bias(op, d.meta(op, "b", b), w.shape[3], np.float32)
    kh, kw, c, f = w.shape
    y = d.out_buffer(op, "out", out, (x.shape[0], oh, ow, f))
    launch_forward(x, w.reshape(kh * kw * c, f), b, y, kh, kw, oh, ow, stride, pt, pl)
    return y


def conv2d_backward(x, w, dy, stride=1, padding="valid", need_dx=True, out=None):
    """Gradients of conv2d_forward given dy (N, OH, OW, F): (dx or None, dw, db).

    dx (N, H, W, C), dw (KH, KW, C, F), db (F,), new device arrays or the out= tuple's buffers
    (overwritten; an out entry may be None). need_dx=False skips dx. dw and db are reduced in
    two deterministic stages (no atomics) through a cached workspace.
    """
    op = "conv2d_backward"
    xm, wm = d.meta(op, "x", x), d.meta(op, "w", w)
    stride, oh, ow, pt, pl = v.conv2d_geometry(op, xm, wm, stride, padding)
    v.check_dy(op, d.meta(op, "dy", dy), (x.shape[0], oh, ow, w.shape[3]), np.float32)
    return launch_backward(op, x, w, dy, stride, pt, pl, need_dx, out)

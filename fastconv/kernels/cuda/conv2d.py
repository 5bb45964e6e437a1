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
from numba import config, cuda, float32, int32, uint32

from .. import _validate
from . import _mem
from ._spec import KernelSpec

# dx GEMM tile (conv2d_dx_tile; the forward's tiles are FW_TILES, below, the same design):
# BM input pixels x BN input channels per block of (BM // TM) * (BN // TN) = 64 threads,
# each keeping TM x TN outputs in registers, reduced BK (tap, output channel) columns per
# step. Checked and derived by _gemm_tile_constants (DX_* globals).
#
# Weight-gradient tile: DW_BK rows of dw2 x DW_BN output channels per block, reduced over
# DW_BM pixels per step; each thread keeps DW_TK rows. Block (DW_BN, DW_BK // DW_TK) = 256.
# DW_TARGET_BLOCKS sets how finely the pixel range is split (132 SMs, several blocks each).
#
# Chosen with ptxas -v for sm_90 (python -m fastconv.kernels.cuda.report): the dw
# kernel stays at <= 64 registers per thread with no spills, i.e. >= 50% theoretical
# occupancy (32 of 64 warps per SM). DW_BM = 32 costs 70-95 registers.
TILES = dict(bm=64, bn=32, bk=8, tm=8, tn=4, dw_bm=16, dw_bk=32, dw_bn=32, dw_tk=4,
             dw_target_blocks=1024)
SUM_THREADS = 256
NOWHERE = -(1 << 28)   # a row/column offset that puts every tap outside the image


# Forward GEMM tile (conv2d_fwd_tile), separate from the dx/dw tiles above: FW_BM rows
# (pooled output pixels) x FW_BN output channels per block of FW_THREADS =
# (FW_BM // FW_TM) * (FW_BN // FW_TN) threads, reduced FW_BK (tap, input channel) columns
# per step. Each thread keeps an FW_TM x FW_TN tile of outputs in registers: per reduction
# column it reads its FW_TM pixels and FW_TN weights from shared memory (128-bit loads: tile
# rows are 16-byte aligned, a thread's pixels and channels are contiguous and 4-aligned)
# for FW_TM * FW_TN FMAs. 64 x 32 blocks of 8 x 4 thread tiles: 64 threads, 256 FMAs per
# thread per step. 32 channels per block: two of the seed's three conv layers have 32.
FW_TILES = dict(fw_bm=64, fw_bn=32, fw_bk=8, fw_tm=8, fw_tn=4)
FW_KU = 2       # reduction columns per trip of the FMA loop (fw_bk must be a multiple)
# cudasim has no aligned shared arrays (it raises on alignment=); on a GPU the tiles are
# 16-byte aligned so that 4 consecutive floats load as one ld.shared.v4.f32.
SHARED_ALIGN = None if config.ENABLE_CUDASIM else 16


def _fwd_pitch(row, bk):
    """Row length (floats) of a [k][pixel] shared tile whose rows hold `row` floats: a
    multiple of 4 (16-byte aligned rows, row % 4 == 0 assumed) that is 32 // bk modulo 32
    (rounded down to a multiple of 4), so the loader's warp-wide stores (bk consecutive k
    x 32 // bk consecutive pixels) fall in distinct banks."""
    step = (max(4, 32 // bk) // 4 * 4) % 32
    return row + (step - row) % 32


def _gemm_tile_constants(t, bm, bn, bk, tm, tn):
    """Derived constants of a register-blocked GEMM tile (the forward's and dx's): threads,
    the shared tiles' pitches and sizes, loads per thread per step, outputs per thread.
    ValueError (naming the tiles t) unless every tile divides evenly among the threads (the
    loaders and the thread map rely on it), tm <= 32 (the forward's epilogue keeps one bit
    per pixel row) and bk is a multiple of FW_KU."""
    ok = min(bm, bn, bk, tm, tn) > 0 and bm % tm == 0 and bn % tn == 0 and bm % 4 == 0
    nt = (bm // tm) * (bn // tn) if ok else 0
    if not ok or nt % bk or (bk * bm) % nt or (bk * bn) % nt or tm > 32 or bk % FW_KU:
        raise ValueError(f"tiles {t} do not divide evenly among the threads")
    return dict(THREADS=nt, AP=_fwd_pitch(bm, bk), BP=_fwd_pitch(bn + (-bn) % 4, bk),
                AL=bk * bm // nt, BL=bk * bn // nt, A_SIZE=bk * _fwd_pitch(bm, bk),
                B_SIZE=bk * _fwd_pitch(bn + (-bn) % 4, bk), OUT=tm * tn)


FW_BM = FW_BN = FW_BK = FW_TM = FW_TN = FW_THREADS = FW_AP = FW_BP = FW_AL = FW_BL = 0
FW_A_SIZE = FW_B_SIZE = FW_OUT = 0


def set_tiles(**tiles):
    """Set the tile constants (TILES's and FW_TILES's keys; missing ones take their values).

    Only for the simulator, which reads module globals live: tests shrink the tiles so
    that tiny inputs span several blocks. On a GPU each kernel freezes the constants when
    it first compiles, so changing them afterwards would desynchronise the launchers
    (blocks and shared tiles of other sizes than the kernels assume: out-of-bounds
    accesses): RuntimeError once any kernel of this module has compiled. The loaders need
    every tile to divide evenly among the threads (checked here).
    """
    compiled = _compiled_kernels()
    if compiled:
        raise RuntimeError(
            f"set_tiles: {', '.join(compiled)} already compiled with the tiles "
            f"{_current_tiles()}; kernels freeze the tiles when they compile, so set them "
            f"before the first cuda conv2d/dense call (in a fresh process)")
    t = dict(TILES, **{k: v for k, v in tiles.items() if k not in FW_TILES})
    f = dict(FW_TILES, **{k: v for k, v in tiles.items() if k in FW_TILES})
    fw = {f"FW_{k}": v for k, v in _gemm_tile_constants(
        f, f["fw_bm"], f["fw_bn"], f["fw_bk"], f["fw_tm"], f["fw_tn"]).items()}
    bm, bn, bk, tm, tn = t["bm"], t["bn"], t["bk"], t["tm"], t["tn"]
    dx = {f"DX_{k}": v for k, v in _gemm_tile_constants(t, bm, bn, bk, tm, tn).items()}
    dbm, dbk, dbn, dtk = t["dw_bm"], t["dw_bk"], t["dw_bn"], t["dw_tk"]
    dnt = dbn * (dbk // dtk)
    if dbk % dtk or dnt % dbk or (dbm * dbk) % dnt or (dbm * dbn) % dnt or dbm > dnt:
        raise ValueError(f"tiles {t} do not divide evenly among the threads")
    globals().update(BM=bm, BN=bn, BK=bk, TM=tm, TN=tn,
                     DW_BM=dbm, DW_BK=dbk, DW_BN=dbn, DW_TK=dtk, DW_BK_PAD=dbk + 1,
                     DW_TARGET_BLOCKS=t["dw_target_blocks"], FW_BM=f["fw_bm"],
                     FW_BN=f["fw_bn"], FW_BK=f["fw_bk"], FW_TM=f["fw_tm"], FW_TN=f["fw_tn"],
                     **fw, **dx)


def _current_tiles():
    return dict(fw_bm=FW_BM, fw_bn=FW_BN, fw_bk=FW_BK, fw_tm=FW_TM, fw_tn=FW_TN,
                bm=BM, bn=BN, bk=BK, tm=TM, tn=TN, dw_bm=DW_BM, dw_bk=DW_BK, dw_bn=DW_BN, dw_tk=DW_TK,
                dw_target_blocks=DW_TARGET_BLOCKS)


def _compiled_kernels():
    """Names of this module's kernels that hold compiled code (in any CUDA context). The
    simulator never compiles (its `overloads` is always empty): it may change tiles any time."""
    return [spec.name for spec in globals().get("KERNELS", ())
            if len(getattr(spec.kernel, "overloads", ()))]


BM = BN = BK = TM = TN = DX_THREADS = DX_AP = DX_BP = DX_AL = DX_BL = DX_A_SIZE = 0
DX_B_SIZE = DX_OUT = 0
DW_BM = DW_BK = DW_BN = DW_TK = DW_BK_PAD = 0
DW_TARGET_BLOCKS = 0
set_tiles()


def fwd_threads():
    return FW_THREADS


def dx_threads():
    return DX_THREADS


def dw_threads():
    return (DW_BN, DW_BK // DW_TK)




@cuda.jit(device=True, inline="always")
def _fwd_stage(x, w, n_k, n_f, k0, kk_l, H, W, C, KW, tid, f0, pa_off, pa_row, pa_col, ra,
               rb):
    """Global loads of reduction step k0 of conv2d_fwd_tile into registers (ra: this
    thread's FW_AL patch values, column k0 + kk_l; rb: its FW_BL weights), 0 outside the
    image, past K or past F. Every load is unconditional (index 0 when masked) and the
    value selected: no branch in the reduction loop. w is w2 (n_k, n_f) flat; every integer
    argument is uint32 (32-bit index math: numba would widen int32 to int64)."""
    k = uint32(k0 + kk_l)
    tap = uint32(k // C)                  # (i, j, c) of column k: k = (i * KW + j) * C + c
    c = uint32(k - tap * C)
    i = uint32(tap // KW)
    j = uint32(tap - i * KW)
    tap_off = int32((i * W + j) * C + c)  # offset of x[n, row + i, col + j, c] from x[n, row, col, 0]
    kvalid = k < n_k
    for sl in range(FW_AL):
        ok = kvalid and uint32(pa_row[sl] + i) < H and uint32(pa_col[sl] + j) < W
        v = x[uint32(pa_off[sl] + tap_off) if ok else uint32(0)]
        ra[sl] = v if ok else float32(0.0)
    for sl in range(FW_BL):
        e = uint32(tid + sl * FW_THREADS)
        kb = uint32(k0 + e // FW_BN)
        fb = uint32(f0 + e % FW_BN)
        ok = kb < n_k and fb < n_f
        v = w[uint32(kb * n_f + fb) if ok else uint32(0)]
        rb[sl] = v if ok else float32(0.0)


@cuda.jit
def conv2d_fwd_tile(x, w, b, y2, arg2, H, W, C, KW, n_ph, n_pw, OH, OW, sh, sw, pt, pl,
                    pool_h, pool_w, psh, psw, ppt, ppl, relu, pooled):
    """y[n, ph, pw, f] = max over the pool window of act(conv(x, w) + b) at conv pixel (oh, ow).

    x: the (N, H, W, C) input, flat; w: w2 (K=KH*KW*C, F) flat; b (F,); y2 (M=N*PH*PW, F), the
    (N, PH, PW, F) output viewed as rows; arg2 int32 like y2, written only when pooled != 0:
    the flat index oh * OW + ow of the winner, first maximum in row-major window order
    (a (1, 1) dummy otherwise). act is ReLU when relu != 0. The unfused conv is pool 1x1,
    stride 1, no padding. All float32. Overwrites y2 (and arg2).
    Grid (ceil(M / FW_BM), ceil(F / FW_BN)), block FW_THREADS (1-D).

    A register-blocked implicit GEMM (docs/cuda_conv.md): thread (tm, tn) accumulates rows
    tm*FW_TM.. x channels tn*FW_TN.. of the block's tile; the patches are gathered from x
    with 32-bit unsigned index math (unsigned: no wrap-around select on indexing) into a
    k-major shared tile, the next step's global loads are issued before the current step's
    FMAs (register prefetch). Runs the whole GEMM once per pool-window offset q and keeps
    the running max and its argmax in shared memory (registers go to the accumulators;
    each thread only touches its own slots, [output][thread]: no bank conflicts).
    """
    a_s = cuda.shared.array(FW_A_SIZE, float32, alignment=SHARED_ALIGN)  # patches [k][pixel]
    b_s = cuda.shared.array(FW_B_SIZE, float32, alignment=SHARED_ALIGN)  # weights [k][f]
    best_s = cuda.shared.array((FW_OUT, FW_THREADS), float32)  # running max [output][thread]
    won_s = cuda.shared.array((FW_OUT, FW_THREADS), int32)     # its argmax
    s_nb = cuda.shared.array(FW_BM, int32)       # flat offset of x[n, 0, 0, 0]; -1: no row
    s_oh = cuda.shared.array(FW_BM, int32)       # conv row of window offset 0: ph*psh - ppt
    s_ow = cuda.shared.array(FW_BM, int32)       # conv column of window offset 0
    acc = cuda.local.array(FW_OUT, float32)
    av = cuda.local.array(FW_TM, float32)
    bv = cuda.local.array(FW_TN, float32)
    bias = cuda.local.array(FW_TN, float32)
    ra = cuda.local.array(FW_AL, float32)         # prefetched patch values
    rb = cuda.local.array(FW_BL, float32)         # prefetched weights
    pa_off = cuda.local.array(FW_AL, int32)       # x offset of (n, row, col, 0) per staged pixel
    pa_row = cuda.local.array(FW_AL, int32)       # top input row; NOWHERE: no conv pixel
    pa_col = cuda.local.array(FW_AL, int32)
    n_m = uint32(y2.shape[0])
    n_f = uint32(y2.shape[1])
    n_k = uint32(w.shape[0] // y2.shape[1])
    uH = uint32(H)
    uW = uint32(W)
    uC = uint32(C)
    uKW = uint32(KW)
    tid = uint32(cuda.threadIdx.x)
    tn = uint32(tid % (FW_BN // FW_TN))
    tm = uint32(tid // (FW_BN // FW_TN))
    m0 = uint32(cuda.blockIdx.x * FW_BM)
    f0 = uint32(cuda.blockIdx.y * FW_BN)
    kk_l = uint32(tid % FW_BK)      # the patch column this thread stages: consecutive
    mm_l = uint32(tid // FW_BK)     # threads read consecutive input channels
    a0 = uint32(tm * FW_TM)
    b0 = uint32(tn * FW_TN)
    for mm in range(tid, FW_BM, FW_THREADS):      # the block's pixel table, once
        m = m0 + mm
        nb = -1
        oh = 0
        ow = 0
        if m < n_m:
            n = m // uint32(n_ph * n_pw)
            rem = uint32(m - n * uint32(n_ph * n_pw))
            p_h = uint32(rem // n_pw)
            nb = int32(n * uint32(H * W * C))
            oh = int32(p_h) * psh - ppt
            ow = int32(rem - p_h * n_pw) * psw - ppl
        s_nb[mm] = nb
        s_oh[mm] = oh
        s_ow[mm] = ow
    for c in range(FW_TN):
        f = f0 + b0 + uint32(c)
        bias[c] = b[f] if f < n_f else float32(0.0)
    for e in range(FW_OUT):
        best_s[e, tid] = float32(0.0)
        won_s[e, tid] = -1
    seen = uint32(0)                # bit r: pixel row r has met a conv pixel
    for q in range(pool_h * pool_w):
        qi = q // pool_w
        qj = q - qi * pool_w
        cuda.syncthreads()          # the pixel table is written
        for sl in range(FW_AL):
            mm = mm_l + uint32(sl * (FW_THREADS // FW_BK))
            oh = s_oh[mm] + qi
            ow = s_ow[mm] + qj
            ok = s_nb[mm] >= 0 and uint32(oh) < OH and uint32(ow) < OW
            row = int32(oh * sh - pt)
            col = int32(ow * sw - pl)
            pa_row[sl] = row if ok else NOWHERE
            pa_col[sl] = col if ok else NOWHERE
            pa_off[sl] = int32(s_nb[mm] + (row * W + col) * C)
        for e in range(FW_OUT):
            acc[e] = float32(0.0)
        _fwd_stage(x, w, n_k, n_f, uint32(0), kk_l, uH, uW, uC, uKW, tid, f0, pa_off, pa_row,
                   pa_col, ra, rb)
        k0 = uint32(0)
        while k0 < n_k:
            cuda.syncthreads()      # every thread is done reading the previous step's tiles
            for sl in range(FW_AL):
                a_s[kk_l * FW_AP + mm_l + uint32(sl * (FW_THREADS // FW_BK))] = ra[sl]
            for sl in range(FW_BL):
                e = uint32(tid + sl * FW_THREADS)
                b_s[(e // FW_BN) * FW_BP + e % FW_BN] = rb[sl]
            cuda.syncthreads()
            k0 = uint32(k0 + FW_BK)
            # the next step's loads now, so their latency hides behind the FMAs below
            _fwd_stage(x, w, n_k, n_f, k0, kk_l, uH, uW, uC, uKW, tid, f0, pa_off, pa_row,
                       pa_col, ra, rb)
            ao = a0
            bo = b0
            # FW_KU columns per trip, each fully unrolled: the compiler would not unroll all
            # FW_BK columns, and a rolled loop of one column is a third overhead
            for _ in range(FW_BK // FW_KU):
                for u in range(FW_KU):
                    for r in range(FW_TM):
                        av[r] = a_s[ao + uint32(u * FW_AP + r)]
                    for c in range(FW_TN):
                        bv[c] = b_s[bo + uint32(u * FW_BP + c)]
                    for r in range(FW_TM):
                        for c in range(FW_TN):
                            acc[r * FW_TN + c] += av[r] * bv[c]
                ao = uint32(ao + FW_KU * FW_AP)
                bo = uint32(bo + FW_KU * FW_BP)
        for r in range(FW_TM):      # epilogue: bias, ReLU, running max over the window
            mm = a0 + uint32(r)
            oh = s_oh[mm] + qi
            ow = s_ow[mm] + qj
            if s_nb[mm] >= 0 and uint32(oh) < OH and uint32(ow) < OW:
                first = (seen >> uint32(r)) & uint32(1) == uint32(0)
                for c in range(FW_TN):
                    v = acc[r * FW_TN + c] + bias[c]
                    if relu != 0 and v < float32(0.0):
                        v = float32(0.0)
                    if first or v > best_s[r * FW_TN + c, tid]:
                        best_s[r * FW_TN + c, tid] = v
                        won_s[r * FW_TN + c, tid] = int32(oh * OW + ow)
                seen |= uint32(1) << uint32(r)
    for r in range(FW_TM):
        m = m0 + a0 + uint32(r)
        if m < n_m:
            for c in range(FW_TN):
                f = f0 + b0 + uint32(c)
                if f < n_f:
                    y2[m, f] = best_s[r * FW_TN + c, tid]
                    if pooled != 0:
                        arg2[m, f] = won_s[r * FW_TN + c, tid]


@cuda.jit(device=True, inline="always")
def _dx_stage(dz, w, n_k, C, F, k0, kk_l, c0, KW, OH, OW, sh, sw, pa_base, pa_hp, pa_wp,
              nn_l, ra, rb):
    """Global loads of reduction step k0 of conv2d_dx_tile into registers: ra, this
    thread's DX_AL gathered dz values of column k = k0 + kk_l = (i * KW + j) * F + f (one
    per staged pixel); rb, its DX_BL weights w[i, j, c0 + nn, f] of the same column. 0 for
    taps that meet no output pixel, past K or past C. Loads are unconditional (index 0 when
    masked) and the value selected. dz and w (w2 (K, F)) flat; integers uint32 except the
    pixel registers (int32: a padded row may be negative)."""
    k = uint32(k0 + kk_l)
    tap = uint32(k // F)
    f = uint32(k - tap * F)
    i = uint32(tap // KW)
    j = uint32(tap - i * KW)
    kvalid = k < n_k
    for sl in range(DX_AL):
        oh_s = int32(pa_hp[sl] - int32(i))          # h + pt - i = oh * sh when it meets one
        ow_s = int32(pa_wp[sl] - int32(j))
        ok = kvalid and oh_s >= 0 and ow_s >= 0
        oh = uint32(oh_s)
        ow = uint32(ow_s)
        if sh != 1:
            oh = uint32(oh // sh)
            ok = ok and oh * sh == uint32(oh_s)
        if sw != 1:
            ow = uint32(ow // sw)
            ok = ok and ow * sw == uint32(ow_s)
        ok = ok and oh < OH and ow < OW
        v = dz[uint32(pa_base[sl] + (oh * OW + ow) * F + f) if ok else uint32(0)]
        ra[sl] = v if ok else float32(0.0)
    for sl in range(DX_BL):
        c = uint32(c0 + nn_l + sl * (DX_THREADS // BK))
        ok = kvalid and c < C
        v = w[uint32((tap * C + c) * F + f) if ok else uint32(0)]
        rb[sl] = v if ok else float32(0.0)


@cuda.jit
def conv2d_dx_tile(dz, w, dx2, H, W, KH, KW, OH, OW, sh, sw, pt, pl):
    """dx[n, h, w, c] = sum over taps (i, j) and f of dz[n, oh, ow, f] * w[i, j, c, f]
    where h + pt - i = oh * sh and w + pl - j = ow * sw (a gather, so no atomics).

    dz: the (N, OH, OW, F) gradient, flat; w: w2 (KH*KW*C, F) flat; dx2 (N*H*W, C), the
    (N, H, W, C) input gradient viewed as rows. float32. Overwrites every dx element.
    Grid (ceil(N*H*W / BM), ceil(C / BN)), block DX_THREADS (1-D).

    The forward's register-blocked GEMM (conv2d_fwd_tile) with rows = input pixels,
    columns = input channels and the reduction over (i, j, f): thread (tm, tn) keeps TM x TN
    outputs in registers; each thread stages one column (consecutive threads: consecutive f,
    coalesced) of both tiles, with register prefetch of the next step.
    """
    a_s = cuda.shared.array(DX_A_SIZE, float32, alignment=SHARED_ALIGN)  # dz [k][pixel]
    b_s = cuda.shared.array(DX_B_SIZE, float32, alignment=SHARED_ALIGN)  # w [k][c]
    acc = cuda.local.array(DX_OUT, float32)
    av = cuda.local.array(TM, float32)
    bv = cuda.local.array(TN, float32)
    ra = cuda.local.array(DX_AL, float32)        # prefetched dz values
    rb = cuda.local.array(DX_BL, float32)        # prefetched weights
    pa_base = cuda.local.array(DX_AL, int32)     # flat offset of dz[n, 0, 0, 0] per staged pixel
    pa_hp = cuda.local.array(DX_AL, int32)       # h + pt; NOWHERE past the last pixel
    pa_wp = cuda.local.array(DX_AL, int32)       # w + pl
    n_m = uint32(dx2.shape[0])
    C = uint32(dx2.shape[1])
    F = uint32(w.shape[0] // (KH * KW * dx2.shape[1]))
    n_k = uint32(KH * KW * F)
    uKW = uint32(KW)
    uOH = uint32(OH)
    uOW = uint32(OW)
    ush = uint32(sh)
    usw = uint32(sw)
    tid = uint32(cuda.threadIdx.x)
    tn = uint32(tid % (BN // TN))
    tm = uint32(tid // (BN // TN))
    m0 = uint32(cuda.blockIdx.x * BM)
    c0 = uint32(cuda.blockIdx.y * BN)
    kk_l = uint32(tid % BK)         # the column this thread stages: consecutive f
    mm_l = uint32(tid // BK)
    a0 = uint32(tm * TM)
    b0 = uint32(tn * TN)
    for sl in range(DX_AL):         # the staged pixels' geometry, once
        m = m0 + mm_l + uint32(sl * (DX_THREADS // BK))
        hp = NOWHERE
        wp = NOWHERE
        base = 0
        if m < n_m:
            n = m // uint32(H * W)
            rem = uint32(m - n * uint32(H * W))
            h = uint32(rem // uint32(W))
            hp = int32(h) + pt
            wp = int32(rem - h * uint32(W)) + pl
            base = int32(n * uint32(OH * OW) * F)
        pa_hp[sl] = hp
        pa_wp[sl] = wp
        pa_base[sl] = base
    for e in range(DX_OUT):
        acc[e] = float32(0.0)
    _dx_stage(dz, w, n_k, C, F, uint32(0), kk_l, c0, uKW, uOH, uOW, ush, usw, pa_base, pa_hp,
              pa_wp, mm_l, ra, rb)
    k0 = uint32(0)
    while k0 < n_k:
        cuda.syncthreads()          # every thread is done reading the previous step's tiles
        for sl in range(DX_AL):
            a_s[kk_l * DX_AP + mm_l + uint32(sl * (DX_THREADS // BK))] = ra[sl]
        for sl in range(DX_BL):
            b_s[kk_l * DX_BP + mm_l + uint32(sl * (DX_THREADS // BK))] = rb[sl]
        cuda.syncthreads()
        k0 = uint32(k0 + BK)
        _dx_stage(dz, w, n_k, C, F, k0, kk_l, c0, uKW, uOH, uOW, ush, usw, pa_base, pa_hp,
                  pa_wp, mm_l, ra, rb)
        ao = a0
        bo = b0
        for _ in range(BK // FW_KU):  # as in conv2d_fwd_tile
            for u in range(FW_KU):
                for r in range(TM):
                    av[r] = a_s[ao + uint32(u * DX_AP + r)]
                for c in range(TN):
                    bv[c] = b_s[bo + uint32(u * DX_BP + c)]
                for r in range(TM):
                    for c in range(TN):
                        acc[r * TN + c] += av[r] * bv[c]
            ao = uint32(ao + FW_KU * DX_AP)
            bo = uint32(bo + FW_KU * DX_BP)
    for r in range(TM):
        m = m0 + a0 + uint32(r)
        if m < n_m:
            for c in range(TN):
                cc = c0 + b0 + uint32(c)
                if cc < C:
                    dx2[m, cc] = acc[r * TN + c]


@cuda.jit
def conv2d_dw_tile(x, dz2, part, H, W, C, KW, OH, OW, sh, sw, pt, pl, m_chunk):
    """Stage 1 of dw/db: part[z, k, f] = sum over pixels m in chunk z of patch[m, k] * dz[m, f],
    and part[z, K, f] = sum over the chunk of dz[m, f] (the bias gradient).

    x: the (N, H, W, C) input, flat; dz2 (M=N*OH*OW, F), the gradient viewed as rows;
    part (S, K + 1, F). float32. Chunk z = pixels [z * m_chunk, (z + 1) * m_chunk).
    Overwrites part[z] for the block's (k, f) tile; the db row comes from the blocks with
    blockIdx.x == 0. Grid (ceil(K / DW_BK), ceil(F / DW_BN), S), block (DW_BN, DW_BK // DW_TK).
    """
    x_s = cuda.shared.array((DW_BM, DW_BK_PAD), float32)   # patches [pixel][k]
    d_s = cuda.shared.array((DW_BM, DW_BN), float32)       # dz [pixel][f]
    s_base = cuda.shared.array(DW_BM, int32)               # flat offset of x[n, 0, 0, 0]
    s_row = cuda.shared.array(DW_BM, int32)                # oh*sh - pt; NOWHERE: no pixel
    s_col = cuda.shared.array(DW_BM, int32)                # ow*sw - pl
    acc = cuda.local.array(DW_TK, float32)
    n_f = dz2.shape[1]
    n_m = dz2.shape[0]
    n_k = part.shape[1] - 1
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    n_threads = DW_BN * (DW_BK // DW_TK)
    tid = ty * DW_BN + tx
    k0 = cuda.blockIdx.x * DW_BK
    f0 = cuda.blockIdx.y * DW_BN
    z = cuda.blockIdx.z
    m_lo = z * m_chunk
    m_hi = min(n_m, m_lo + m_chunk)
    kk_l = tid % DW_BK              # this thread always stages patch column k: fixed (i, j, c)
    mm_l = tid // DW_BK
    k = k0 + kk_l
    kvalid = k < n_k
    i = k // (KW * C)
    j = (k - i * (KW * C)) // C
    c = k - i * (KW * C) - j * C
    with_db = cuda.blockIdx.x == 0 and ty == 0
    db_acc = float32(0.0)
    for r in range(DW_TK):
        acc[r] = float32(0.0)
    for ms in range(m_lo, m_hi, DW_BM):
        if tid < DW_BM:
            mm = tid
            m = ms + mm
            row = NOWHERE
            col = NOWHERE
            base = 0
            if m < m_hi:
                n = m // (OH * OW)
                rem = m - n * (OH * OW)
                oh = rem // OW
                row = oh * sh - pt
                col = (rem - oh * OW) * sw - pl
                base = n * (H * W * C)
            s_base[mm] = base
            s_row[mm] = row
            s_col[mm] = col
        cuda.syncthreads()
        for sl in range(DW_BM * DW_BK // n_threads):  # constant trip counts: see the forward
            mm = mm_l + sl * (n_threads // DW_BK)
            val = float32(0.0)
            row = s_row[mm] + i
            col = s_col[mm] + j
            if kvalid and row >= 0 and row < H and col >= 0 and col < W:
                val = x[s_base[mm] + (row * W + col) * C + c]
            x_s[mm, kk_l] = val
        for sl in range(DW_BM * DW_BN // n_threads):
            e = tid + sl * n_threads
            nn = e % DW_BN
            mm = e // DW_BN
            val = float32(0.0)
            if ms + mm < m_hi and f0 + nn < n_f:
                val = dz2[ms + mm, f0 + nn]
            d_s[mm, nn] = val
        cuda.syncthreads()
        for mm in range(min(DW_BM, m_hi - ms)):  # run-time trip count: see conv2d_fwd_tile
            dv = d_s[mm, tx]
            for r in range(DW_TK):
                acc[r] += x_s[mm, ty * DW_TK + r] * dv
            if with_db:
                db_acc += dv
        cuda.syncthreads()
    f = f0 + tx
    if f < n_f:
        for r in range(DW_TK):
            kr = k0 + ty * DW_TK + r
            if kr < n_k:
                part[z, kr, f] = acc[r]
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


F1 = float32[::1]
F2 = float32[:, ::1]
F4 = float32[:, :, :, ::1]
I2 = int32[:, ::1]
I4 = int32[:, :, :, ::1]
FWD_SIG = (F1, F1, F1, F2, I2) + (int32,) * 20
DX_SIG = (F1, F1, F2) + (int32,) * 10
DW_SIG = (F1, F2, float32[:, :, ::1]) + (int32,) * 11
SUM_SIG = (float32[:, :, ::1], F2, F1)

KERNELS = [
    KernelSpec("conv2d_fwd_tile", conv2d_fwd_tile, FWD_SIG, FW_THREADS),
    KernelSpec("conv2d_dx_tile", conv2d_dx_tile, DX_SIG, DX_THREADS),
    KernelSpec("conv2d_dw_tile", conv2d_dw_tile, DW_SIG, DW_BN * (DW_BK // DW_TK)),
    KernelSpec("conv2d_dw_sum", conv2d_dw_sum, SUM_SIG, SUM_THREADS),
]


# --- launchers (shared by conv2d, fused and dense wrappers; arguments already checked) ---

def _i32(*values):
    return tuple(np.int32(v) for v in values)


def _flat(a):
    return a.reshape(int(np.prod(a.shape)))


def _rows(a):
    """(N, ..., D) viewed as (N*..., D)."""
    shape = tuple(a.shape)      # the simulator's shape object has no negative indexing
    return a.reshape(int(np.prod(shape[:-1])), shape[-1])


def _dummy_argmax():
    return _mem.workspace("conv2d_dummy_argmax", (1, 1), np.int32)


def launch_forward(x, w2, b, y, kw, oh, ow, stride, pt, pl, relu=False,
                   pool=(1, 1), pool_stride=(1, 1), ppt=0, ppl=0, arg=None):
    """y (N, PH, PW, F) [and arg] from x (N, H, W, C) and w2 = w viewed as (K, F);
    see conv2d_fwd_tile. Without pool, PH, PW = OH, OW."""
    n, h, wd, c = x.shape
    _, ph, pw, f = y.shape
    grid = (_mem.blocks(n * ph * pw, FW_BM), _mem.blocks(f, FW_BN))
    pooled = arg is not None
    conv2d_fwd_tile[grid, fwd_threads()](
        _flat(x), _flat(w2), b, _rows(y), _rows(arg) if pooled else _dummy_argmax(),
        *_i32(h, wd, c, kw, ph, pw, oh, ow, stride[0], stride[1], pt, pl, pool[0], pool[1],
              pool_stride[0], pool_stride[1], ppt, ppl, relu, pooled))


def launch_dx(dz, w2, dx, kh, kw, stride, pt, pl):
    """dx (N, H, W, C) from dz (N, OH, OW, F) and w2 (K, F); see conv2d_dx_tile."""
    n, h, wd, c = dx.shape
    _, oh, ow, _ = dz.shape
    grid = (_mem.blocks(n * h * wd, BM), _mem.blocks(c, BN))
    conv2d_dx_tile[grid, dx_threads()](
        _flat(dz), _flat(w2), _rows(dx), *_i32(h, wd, kh, kw, oh, ow, stride[0], stride[1], pt, pl))


def dw_split(m, k, f):
    """(S, m_chunk): pixel chunks for the two-stage weight gradient. Enough chunks that
    the grid has about DW_TARGET_BLOCKS blocks, each chunk a multiple of DW_BM pixels."""
    tiles = _mem.blocks(k, DW_BK) * _mem.blocks(f, DW_BN)
    s = max(1, min(_mem.blocks(DW_TARGET_BLOCKS, tiles), _mem.blocks(m, DW_BM)))
    chunk = _mem.blocks(_mem.blocks(m, s), DW_BM) * DW_BM
    return _mem.blocks(m, chunk), chunk


def launch_dw(x, dz, dw2, db, kw, stride, pt, pl):
    """dw2 (K, F) and db (F,) from x (N, H, W, C) and dz (N, OH, OW, F), via a cached
    partials workspace; see conv2d_dw_tile and conv2d_dw_sum."""
    n, h, wd, c = x.shape
    _, oh, ow, f = dz.shape
    k = dw2.shape[0]
    s, chunk = dw_split(n * oh * ow, k, f)
    part = _mem.workspace("conv2d_dw_partials", (s, k + 1, f))
    grid = (_mem.blocks(k, DW_BK), _mem.blocks(f, DW_BN), s)
    conv2d_dw_tile[grid, dw_threads()](
        _flat(x), _rows(dz), part,
        *_i32(h, wd, c, kw, oh, ow, stride[0], stride[1], pt, pl, chunk))
    conv2d_dw_sum[_mem.blocks((k + 1) * f, SUM_THREADS), SUM_THREADS](part, dw2, db)


def backward_buffers(op, x_shape, w_shape, need_dx, out):
    """The out= tuple of a conv backward checked (the reference's out= convention) and
    its buffers: [(dw, host), (db, host)] and (dx, host) when need_dx. Called before any
    input is copied to the device, so a bad out= raises without touching it."""
    out = _validate.out_tuple(op, out, 3)
    specs = [("out[1]", out[1], w_shape, np.float32),
             ("out[2]", out[2], (w_shape[3],), np.float32)]
    if need_dx:
        specs.append(("out[0]", out[0], x_shape, np.float32))
    return _mem.out_buffers(op, *specs)


def launch_backward(x, w, dz, stride, pt, pl, need_dx, bufs):
    """(dx or None, dw, db) of the conv from device arrays x, w and dz (N, OH, OW, F), into
    `bufs` (backward_buffers')."""
    kh, kw, c, f = w.shape
    (dw, dw_host), (db, db_host) = bufs[:2]
    launch_dw(x, dz, dw.reshape(kh * kw * c, f), db, kw, stride, pt, pl)
    dx = None
    if need_dx:
        dx, dx_host = bufs[2]
        launch_dx(dz, w.reshape(kh * kw * c, f), dx, kh, kw, stride, pt, pl)
        dx = _mem.finish(dx, dx_host)
    return dx, _mem.finish(dw, dw_host), _mem.finish(db, db_host)


def check_conv(op, x, w, stride, padding):
    """The reference's checks of x and w (host or device arrays), plus float32 and
    C-contiguous device arrays. Returns (stride pair, OH, OW, pad_top, pad_left)."""
    _mem.check_float32(op, "x", x, 4)
    _mem.check_float32(op, "w", w, 4)
    geometry = _validate.conv2d_geometry(op, _mem.checkable(x), _mem.checkable(w), stride, padding)
    _, oh, ow, _, _ = geometry
    _mem.check_int32_indexable(op, x.shape, (x.shape[0], oh, ow, w.shape[3]))  # dz, y
    return geometry


def check_bias(op, b, n_out):
    _validate.check_bias(op, _mem.checkable(b), n_out, np.float32)
    _mem.check_float32(op, "b", b)


def check_dy(op, dy, shape):
    _validate.check_dy(op, _mem.checkable(dy), shape, np.float32)
    _mem.check_float32(op, "dy", dy)


# --- public ops ---

def conv2d_forward(x, w, b, stride=1, padding="valid", out=None):
    """y[n, oh, ow, f] = b[f] + sum_{i, j, c} xpad[n, oh*sh + i, ow*sw + j, c] * w[i, j, c, f].

    x (N, H, W, C), w (KH, KW, C, F), b (F,): float32 C-contiguous device arrays (host arrays
    are copied in); stride int or pair; padding 'valid' or 'same' (Keras geometry). Returns y
    (N, OH, OW, F): a new device array, or `out` (overwritten). One launch of conv2d_fwd_tile.
    """
    op = "conv2d_forward"
    stride, oh, ow, pt, pl = check_conv(op, x, w, stride, padding)
    check_bias(op, b, w.shape[3])
    kh, kw, c, f = w.shape
    [(y, y_host)] = _mem.out_buffers(op, ("out", out, (x.shape[0], oh, ow, f), np.float32))
    x, w, b = _mem.device_in(op, "x", x), _mem.device_in(op, "w", w), _mem.device_in(op, "b", b)
    launch_forward(x, w.reshape(kh * kw * c, f), b, y, kw, oh, ow, stride, pt, pl)
    return _mem.finish(y, y_host)


def conv2d_backward(x, w, dy, stride=1, padding="valid", need_dx=True, out=None):
    """Gradients of conv2d_forward given dy (N, OH, OW, F): (dx or None, dw, db).

    dx (N, H, W, C), dw (KH, KW, C, F), db (F,): new device arrays or the out= tuple's
    buffers (overwritten; an entry may be None). need_dx=False skips dx. dw and db are
    reduced in two deterministic stages (no atomics) through a cached workspace.
    """
    op = "conv2d_backward"
    stride, oh, ow, pt, pl = check_conv(op, x, w, stride, padding)
    check_dy(op, dy, (x.shape[0], oh, ow, w.shape[3]))
    bufs = backward_buffers(op, x.shape, w.shape, need_dx, out)
    x, w, dy = _mem.device_in(op, "x", x), _mem.device_in(op, "w", w), _mem.device_in(op, "dy", dy)
    return launch_backward(x, w, dy, stride, pt, pl, need_dx, bufs)

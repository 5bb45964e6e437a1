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
from numba import config, cuda, float32, int32, uint32, uint64

from .. import _validate
from . import _launch, _mem
from ._spec import KernelSpec
from . import dense as _dense

# dx GEMM tile (conv2d_dx_tile; the forward's tiles are FW_TILES, below, the same design):
# BM input pixels x BN input channels per block of (BM // TM) * (BN // TN) = 64 threads,
# each keeping TM x TN outputs in registers, reduced BK (tap, output channel) columns per
# step. Checked and derived by _gemm_tile_constants (DX_* globals).
# (The weight-gradient tiles, DW_TILES, are defined with their kernels below.)
TILES = dict(bm=64, bn=32, bk=8, tm=8, tn=4)
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

# Splitting the forward and dx grids when they would not fill the GPU (fwd_split,
# dx_split). A block of either kernel is 64 threads at <= 128 registers: 8 resident per SM,
# 1,056 on the 132 SMs of an H100/H200, so fw/dx_target_blocks = 2,112 is two waves. A
# grid with fewer blocks is split: the forward over its pool-window offsets first (no
# shorter reductions), then both over K (split-K, chunks of at least split_min_steps
# staging steps); the blocks write raw sums to a cached partials workspace and a second
# pass adds them in a fixed order (conv2d_fwd_sum: + bias, ReLU, pool; dense.dense_sum for
# dx): deterministic, no atomics. No split when the partials would exceed
# split_max_partials floats (32 MB: they should stay in the 50 MB L2 between the two
# launches), e.g. conv1's forward (its pool-window split would write the whole 90 MB
# pre-pool activation the fusion avoids).
SPLIT = dict(fw_target_blocks=2112, dx_target_blocks=2112, split_min_steps=4,
             split_max_partials=8 * 2 ** 20)
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
    """Set the tile constants (TILES's, FW_TILES's and DW_TILES's keys; missing ones take
    their values).

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
    split = dict(SPLIT, **{key: tiles.pop(key) for key in list(tiles) if key in SPLIT})
    if min(split.values()) < 1:
        raise ValueError(f"split settings {split} must be >= 1")
    dw = {key: tiles.pop(key) for key in list(tiles) if key.startswith("dw_")}
    t = dict(TILES, **{k: v for k, v in tiles.items() if k not in FW_TILES})
    f = dict(FW_TILES, **{k: v for k, v in tiles.items() if k in FW_TILES})
    fw = {f"FW_{k}": v for k, v in _gemm_tile_constants(
        f, f["fw_bm"], f["fw_bn"], f["fw_bk"], f["fw_tm"], f["fw_tn"]).items()}
    bm, bn, bk, tm, tn = t["bm"], t["bn"], t["bk"], t["tm"], t["tn"]
    dx = {f"DX_{k}": v for k, v in _gemm_tile_constants(t, bm, bn, bk, tm, tn).items()}
    _set_dw_tiles(**dw)     # the weight-gradient tiles (checked there): before any change
    globals().update(BM=bm, BN=bn, BK=bk, TM=tm, TN=tn, FW_BM=f["fw_bm"],
                     FW_BN=f["fw_bn"], FW_BK=f["fw_bk"], FW_TM=f["fw_tm"], FW_TN=f["fw_tn"],
                     **fw, **dx, **{k.upper(): v for k, v in split.items()})


def _current_tiles():
    return dict(fw_bm=FW_BM, fw_bn=FW_BN, fw_bk=FW_BK, fw_tm=FW_TM, fw_tn=FW_TN,
                bm=BM, bn=BN, bk=BK, tm=TM, tn=TN, **_current_dw_tiles(),
                **{k: globals()[k.upper()] for k in SPLIT})


def _compiled_kernels():
    """Names of this module's kernels that hold compiled code (in any CUDA context). The
    simulator never compiles (its `overloads` is always empty): it may change tiles any time."""
    return [spec.name for spec in globals().get("KERNELS", ())
            if len(getattr(spec.kernel, "overloads", ()))]


BM = BN = BK = TM = TN = DX_THREADS = DX_AP = DX_BP = DX_AL = DX_BL = DX_A_SIZE = 0
DX_B_SIZE = DX_OUT = 0     # set by set_tiles() below the kernels


def fwd_threads():
    return FW_THREADS


def dx_threads():
    return DX_THREADS




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


# launch_bounds (maxntid 64, minnctapersm 8): ptxas keeps conv2d_fwd_tile at <= 128
# registers (8 blocks, 16 warps per SM) without spills; without the bound the split-mode
# stores of the raw sums cost it 28 registers (154: 6 blocks). The simulator takes none.
FW_MIN_BLOCKS = 8
FW_JIT = {} if config.ENABLE_CUDASIM else dict(launch_bounds=(64, FW_MIN_BLOCKS))


@cuda.jit(**FW_JIT)
def conv2d_fwd_tile(x, w, b, y2, arg2, part, H, W, C, KW, n_ph, n_pw, OH, OW, sh, sw, pt, pl,
                    pool_h, pool_w, psh, psw, ppt, ppl, relu, pooled, q_per, k_chunk, n_ks):
    """y[n, ph, pw, f] = max over the pool window of act(conv(x, w) + b) at conv pixel (oh, ow).

    x: the (N, H, W, C) input, flat; w: w2 (K=KH*KW*C, F) flat; b (F,); y2 (M=N*PH*PW, F), the
    (N, PH, PW, F) output viewed as rows; arg2 int32 like y2, written only when pooled != 0:
    the flat index oh * OW + ow of the winner, first maximum in row-major window order
    (a (1, 1) dummy otherwise). act is ReLU when relu != 0. The unfused conv is pool 1x1,
    stride 1, no padding. All float32. Overwrites y2 (and arg2).
    Grid (ceil(M / FW_BM), ceil(F / FW_BN), G * n_ks), block FW_THREADS (1-D).

    Split (fwd_split; gridDim.z > 1): block z = gq * n_ks + kz reduces only the columns
    [kz * k_chunk, (kz + 1) * k_chunk) of K at the window offsets [gq * q_per, (gq + 1) *
    q_per) and writes the raw sums (no bias) to part[kz, q, m, f] (flat; Q = pool_h * pool_w
    offsets); y2 and arg2 are left to conv2d_fwd_sum. With one block in z it runs the whole
    reduction and the epilogue itself.

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
    split = cuda.gridDim.z > 1
    gq = uint32(cuda.blockIdx.z) // uint32(n_ks)
    kz = uint32(cuda.blockIdx.z) - gq * uint32(n_ks)
    k_lo = uint32(kz * uint32(k_chunk))
    k_hi = uint32(min(n_k, uint32(k_lo + uint32(k_chunk))))
    n_q = uint32(pool_h * pool_w)
    q_lo = uint32(gq * uint32(q_per))
    q_hi = uint32(min(n_q, uint32(q_lo + uint32(q_per))))
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
    for q in range(q_lo, q_hi):
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
        _fwd_stage(x, w, k_hi, n_f, k_lo, kk_l, uH, uW, uC, uKW, tid, f0, pa_off, pa_row,
                   pa_col, ra, rb)
        k0 = k_lo
        while k0 < k_hi:
            cuda.syncthreads()      # every thread is done reading the previous step's tiles
            for sl in range(FW_AL):
                a_s[kk_l * FW_AP + mm_l + uint32(sl * (FW_THREADS // FW_BK))] = ra[sl]
            for sl in range(FW_BL):
                e = uint32(tid + sl * FW_THREADS)
                b_s[(e // FW_BN) * FW_BP + e % FW_BN] = rb[sl]
            cuda.syncthreads()
            k0 = uint32(k0 + FW_BK)
            # the next step's loads now, so their latency hides behind the FMAs below
            _fwd_stage(x, w, k_hi, n_f, k0, kk_l, uH, uW, uC, uKW, tid, f0, pa_off, pa_row,
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
        if split:                   # block-uniform: the raw sums to part[kz, q]
            pbase = uint32((kz * n_q + uint32(q)) * n_m)
            for r in range(FW_TM):
                m = m0 + a0 + uint32(r)
                for c in range(FW_TN):
                    f = f0 + b0 + uint32(c)
                    if m < n_m and f < n_f:
                        part[uint32((pbase + m) * n_f + f)] = acc[r * FW_TN + c]
            continue
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
        if m < n_m and not split:
            for c in range(FW_TN):
                f = f0 + b0 + uint32(c)
                if f < n_f:
                    y2[m, f] = best_s[r * FW_TN + c, tid]
                    if pooled != 0:
                        arg2[m, f] = won_s[r * FW_TN + c, tid]


@cuda.jit
def conv2d_fwd_sum(part, b, y2, arg2, n_ks, n_ph, n_pw, OH, OW, pool_w, n_q, psh, psw, ppt,
                   ppl, relu, pooled):
    """Stage 2 of a split forward (conv2d_fwd_tile with gridDim.z > 1): for each pooled
    output (m, f) and window offset q = 0, 1, ... in row-major order, v = sum over kz = 0,
    1, ... of part[kz, q, m, f] + b[f] (then ReLU when relu != 0) at the offsets that fall
    in the conv grid; y2[m, f] = the first maximum, arg2[m, f] its flat conv index (when
    pooled != 0). The same rules as conv2d_fwd_tile's epilogue (padding never wins; 0 and
    -1 when no offset is in the grid) and fixed-order sums: deterministic.
    part (n_ks, n_q, M, F) flat, b (F,), y2 (M, F), arg2 int32 like y2 or a (1, 1) dummy.
    One thread per (m, f), f fastest (coalesced): grid ceil(M * F / _launch.ELEMENTWISE)."""
    e = uint32(cuda.grid(1))
    n_m = uint32(y2.shape[0])
    n_f = uint32(y2.shape[1])
    if e < uint32(n_m * n_f):     # no barrier in this kernel: the guard is safe
        m = uint32(e // n_f)
        f = uint32(e - m * n_f)
        rem = uint32(m % uint32(n_ph * n_pw))
        p_h = uint32(rem // uint32(n_pw))
        oh0 = int32(p_h) * psh - ppt
        ow0 = int32(rem - p_h * uint32(n_pw)) * psw - ppl
        best = float32(0.0)
        won = int32(-1)
        for q in range(n_q):
            qi = q // pool_w
            oh = oh0 + qi
            ow = ow0 + (q - qi * pool_w)
            if uint32(oh) < uint32(OH) and uint32(ow) < uint32(OW):
                v = float32(0.0)
                for kz in range(n_ks):
                    v += part[uint32(((uint32(kz) * uint32(n_q) + uint32(q)) * n_m + m) * n_f + f)]
                v += b[f]
                if relu != 0 and v < float32(0.0):
                    v = float32(0.0)
                if won < 0 or v > best:
                    best = v
                    won = int32(oh * OW + ow)
        y2[m, f] = best
        if pooled != 0:
            arg2[m, f] = won


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
def conv2d_dx_tile(dz, w, dx2, part, H, W, KH, KW, OH, OW, sh, sw, pt, pl, k_chunk):
    """dx[n, h, w, c] = sum over taps (i, j) and f of dz[n, oh, ow, f] * w[i, j, c, f]
    where h + pt - i = oh * sh and w + pl - j = ow * sw (a gather, so no atomics).

    dz: the (N, OH, OW, F) gradient, flat; w: w2 (KH*KW*C, F) flat; dx2 (N*H*W, C), the
    (N, H, W, C) input gradient viewed as rows. float32. Overwrites every dx element.
    Grid (ceil(N*H*W / BM), ceil(C / BN), S), block DX_THREADS (1-D).

    Split-K (dx_split; S = gridDim.z > 1): block z reduces the columns [z * k_chunk,
    (z + 1) * k_chunk) and writes its sums to part[z] (S, N*H*W, C), flat; dense.py's
    dense_sum adds them in the order z = 0, 1, ... (deterministic).

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
    z = uint32(cuda.blockIdx.z)
    k_lo = uint32(z * uint32(k_chunk))
    k_hi = uint32(min(n_k, uint32(k_lo + uint32(k_chunk))))
    out_base = uint32(z * n_m)      # rows of part[z] (0 and dx2 itself when S == 1)
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
    _dx_stage(dz, w, k_hi, C, F, k_lo, kk_l, c0, uKW, uOH, uOW, ush, usw, pa_base, pa_hp,
              pa_wp, mm_l, ra, rb)
    k0 = k_lo
    while k0 < k_hi:
        cuda.syncthreads()          # every thread is done reading the previous step's tiles
        for sl in range(DX_AL):
            a_s[kk_l * DX_AP + mm_l + uint32(sl * (DX_THREADS // BK))] = ra[sl]
        for sl in range(DX_BL):
            b_s[kk_l * DX_BP + mm_l + uint32(sl * (DX_THREADS // BK))] = rb[sl]
        cuda.syncthreads()
        k0 = uint32(k0 + BK)
        _dx_stage(dz, w, k_hi, C, F, k0, kk_l, c0, uKW, uOH, uOW, ush, usw, pa_base, pa_hp,
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
                    if cuda.gridDim.z == 1:
                        dx2[m, cc] = acc[r * TN + c]
                    else:
                        part[uint32((out_base + m) * C + cc)] = acc[r * TN + c]


# --- weight gradient: dw2 = patches^T @ dz and db = sum dz (this section owns its constants) ---
#
# Stage 1, conv2d_dw_tile: block (k tile, f tile, chunk z) computes the DW_BK x DW_BN tile of
# dw2 over the pixels of chunk z. Per step it stages DW_BM pixels: patches x_s[pixel][k] and
# dz d_s[pixel][f] (reduction-major, rows 16-byte aligned). Its DW_NT threads form DW_WS
# groups of (DW_BK / DW_TK) x (DW_BN / DW_TN) threads (one warp each by default); group g
# reduces pixels [g, g + 1) * DW_BM / DW_WS of each step, each thread into a DW_TK x DW_TN
# register tile: per pixel 2 + 1 128-bit shared loads feed 32 FMAs. At the end the groups'
# tiles are added in the fixed order g = 0, 1, ... and written to part[z].
# Stage 2, conv2d_dw_sum: each (k, f) adds its S partials in a fixed order and a fixed tree.
#
# DW_TARGET_BLOCKS: stage-1 grid size the split aims for (132 SMs x 6 resident blocks of
# 128 threads at <= 80 registers: 792 slots, so ~2.5 waves); DW_MIN_STEPS: fewest staging
# steps per chunk (fewer partials to write and re-read). DW_SUM_ROWS x DW_SUM_COLS: stage 2.
DW_TILES = dict(dw_bm=32, dw_bk=32, dw_bn=32, dw_tk=8, dw_tn=4, dw_ws=4, dw_unroll=2,
                dw_target_blocks=2048, dw_min_steps=4, dw_sum_rows=32, dw_sum_cols=32)


# launch_bounds (maxntid 128, minnctapersm 6): ptxas keeps conv2d_dw_tile at <= 80
# registers, so 6 blocks (24 warps) fit on an SM; a plain compile_ptx (the report's) lands
# at 76-84 depending on the code around it. The simulator's jit takes no launch_bounds.
DW_MAX_THREADS = 128
DW_MIN_BLOCKS = 6
DW_JIT = {} if config.ENABLE_CUDASIM else dict(launch_bounds=(DW_MAX_THREADS, DW_MIN_BLOCKS))


def _round4(n):
    """Row pitch of a staged tile: a multiple of 4 floats keeps every row 16-byte aligned,
    so a thread's 4 consecutive values are one ld.shared.v4.f32. Warps store along rows
    (consecutive threads, consecutive columns), so no bank-conflict padding is needed."""
    return -(-n // 4) * 4


def _set_dw_tiles(**tiles):
    """The weight-gradient half of set_tiles (keys of DW_TILES; missing ones take its values)."""
    unknown = set(tiles) - set(DW_TILES)
    if unknown:
        raise ValueError(f"unknown tile keys {sorted(unknown)}")
    t = dict(DW_TILES, **tiles)
    bm, bk, bn, tk, tn, ws = (t[k] for k in ("dw_bm", "dw_bk", "dw_bn", "dw_tk", "dw_tn", "dw_ws"))
    rows, cols, unroll = t["dw_sum_rows"], t["dw_sum_cols"], t["dw_unroll"]
    nt = (bk // tk) * (bn // tn) * ws if tk and tn else 0
    if (min(bm, bk, bn, tk, tn, ws, unroll, rows, cols, t["dw_target_blocks"],
            t["dw_min_steps"]) < 1
            or bk % tk or bn % tn or bm % ws or (bm // ws) % unroll
            or nt % bk or (bm * bk) % nt        # patch loader: a fixed column per thread
            or nt % bn or (bm * bn) % nt        # dz loader: a fixed column per thread
            or bm > nt or bm % (nt // bn)       # pixel geometry; the db sums
            or (bk * bn) % nt or rows & (rows - 1)):   # the epilogue; stage 2's tree
        raise ValueError(f"tiles {t} do not divide evenly among the threads")
    if nt > DW_MAX_THREADS:
        raise ValueError(f"tiles {t}: {nt} threads per conv2d_dw_tile block, more than its "
                         f"launch bound {DW_MAX_THREADS}")
    globals().update(DW_BM=bm, DW_BK=bk, DW_BN=bn, DW_TK=tk, DW_TN=tn, DW_WS=ws, DW_NT=nt,
                     DW_UNROLL=unroll,
                     DW_NACC=tk * tn, DW_XP=_round4(bk), DW_DP=_round4(bn),
                     DW_XS=bm * _round4(bk), DW_DS=bm * _round4(bn),
                     DW_TARGET_BLOCKS=t["dw_target_blocks"], DW_MIN_STEPS=t["dw_min_steps"],
                     DW_SUM_ROWS=rows, DW_SUM_COLS=cols)


def _current_dw_tiles():
    return dict(dw_bm=DW_BM, dw_bk=DW_BK, dw_bn=DW_BN, dw_tk=DW_TK, dw_tn=DW_TN, dw_ws=DW_WS,
                dw_unroll=DW_UNROLL,
                dw_target_blocks=DW_TARGET_BLOCKS, dw_min_steps=DW_MIN_STEPS,
                dw_sum_rows=DW_SUM_ROWS, dw_sum_cols=DW_SUM_COLS)


DW_BM = DW_BK = DW_BN = DW_TK = DW_TN = DW_WS = DW_UNROLL = DW_NT = DW_NACC = 0
DW_XP = DW_DP = DW_XS = DW_DS = 0
DW_TARGET_BLOCKS = DW_MIN_STEPS = DW_SUM_ROWS = DW_SUM_COLS = 0
_set_dw_tiles()


def dw_threads():
    """Threads per conv2d_dw_tile block (1-D)."""
    return DW_NT


@cuda.jit(**DW_JIT)
def conv2d_dw_tile(x, dz, part, dw2, db, H, W, C, KW, OH, OW, sh, sw, pt, pl, clipped,
                   n_m, n_k, n_f, m_chunk):
    """Stage 1 of dw/db: part[z, k, f] = sum over pixels m of chunk z of patch[m, k] * dz[m, f]
    and part[z, K, f] = sum over the chunk of dz[m, f] (the bias gradient).

    x: the (N, H, W, C) input, flat; dz: the (M=N*OH*OW, F) gradient, flat; part: the
    (S, K + 1, F) workspace, flat; dw2 (K*F,) and db (F,): the results, written directly
    (and part not touched) when S == 1; K = KH*KW*C = n_k, F = n_f, M = n_m. float32, int32
    scalars; every index below 2**31 (the launcher checks). clipped = 0 promises that no
    tap of any output pixel falls outside the image (no padding, e.g. 'valid'): the
    patch loader then skips the bounds checks. Chunk z = pixels
    [z * m_chunk, (z + 1) * m_chunk), m_chunk a multiple of DW_BM. Overwrites part[z] for
    the block's (k, f) tile (or dw2 and db when S == 1); the db row is written by the blocks
    with blockIdx.x == 0. Grid (ceil(K / DW_BK), ceil(F / DW_BN), S), block DW_NT (1-D).

    Deterministic: every sum runs in an order fixed by the shapes and tiles (per thread
    pixel by pixel, then groups 0, 1, ... through shared memory), never by timing.
    Index math is unsigned 32-bit: no int64 promotion, no negative-index wrap-around.
    """
    x_s = cuda.shared.array(DW_XS, float32, alignment=SHARED_ALIGN)   # patches [pixel][k]: DW_XP
    d_s = cuda.shared.array(DW_DS, float32, alignment=SHARED_ALIGN)   # dz [pixel][f]: pitch DW_DP
    red = cuda.shared.array((DW_BK, DW_DP), float32, alignment=SHARED_ALIGN)  # one group's tile
    geo = cuda.shared.array((DW_BM, 4), int32, alignment=SHARED_ALIGN)  # x offset, row, col
    db_s = cuda.shared.array(DW_NT, float32)
    acc = cuda.local.array(DW_NACC, float32)
    uH = uint32(H)
    uW = uint32(W)
    uC = uint32(C)
    uM = uint32(n_m)
    uK = uint32(n_k)
    uF = uint32(n_f)
    tid = uint32(cuda.threadIdx.x)
    g = uint32(tid // uint32(DW_NT // DW_WS))            # pixel group
    t = uint32(tid % uint32(DW_NT // DW_WS))
    xa = uint64((t // uint32(DW_BN // DW_TN)) * uint32(DW_TK))   # first k row of its tile
    da = uint64((t % uint32(DW_BN // DW_TN)) * uint32(DW_TN))    # first f column
    k0 = uint32(uint32(cuda.blockIdx.x) * uint32(DW_BK))
    f0 = uint32(uint32(cuda.blockIdx.y) * uint32(DW_BN))
    z = uint32(cuda.blockIdx.z)
    m_lo = uint32(z * uint32(m_chunk))
    m_hi = uint32(min(uM, uint32(m_lo + uint32(m_chunk))))
    # patch loader: this thread always stages column kk_l, so its tap (i, j), channel c and
    # the offset of x[n, oh*sh - pt + i, ow*sw - pl + j, c] from the pixel's are fixed
    kk_l = uint32(tid % uint32(DW_BK))
    p_l = uint32(tid // uint32(DW_BK))
    k = uint32(k0 + kk_l)
    kvalid = k < uK
    i = uint32(k // uint32(uint32(KW) * uC))
    j = uint32(uint32(k - i * (uint32(KW) * uC)) // uC)
    c = uint32(k - i * (uint32(KW) * uC) - j * uC)
    koff = uint32((i * uW + j) * uC + c)
    # dz loader: a fixed column nn_l, pixels q_l + DW_NT // DW_BN * s
    nn_l = uint32(tid % uint32(DW_BN))
    q_l = uint32(tid // uint32(DW_BN))
    fvalid = f0 + nn_l < uF
    with_db = cuda.blockIdx.x == 0
    db_acc = float32(0.0)
    for e in range(DW_NACC):
        acc[e] = float32(0.0)
    ms = m_lo
    while ms < m_hi:
        if tid < uint32(DW_BM):        # the geometry of pixel ms + tid (DW_BM <= DW_NT)
            m = uint32(ms + tid)
            off = 0
            row = NOWHERE
            col = NOWHERE
            if m < m_hi:
                n = uint32(m // uint32(OH * OW))
                rem = uint32(m - n * uint32(OH * OW))
                oh = uint32(rem // uint32(OW))
                row = int32(oh * uint32(sh)) - pt
                col = int32(uint32(rem - oh * uint32(OW)) * uint32(sw)) - pl
                off = int32(n * (uH * uW * uC)) + (row * W + col) * C
            geo[tid, 0] = off
            geo[tid, 1] = row
            geo[tid, 2] = col
        cuda.syncthreads()              # geometry ready; the previous step's reads done
        n_valid = uint32(m_hi - ms)
        for s in range(DW_BM * DW_BK // DW_NT):   # constant trip counts: unrolled
            p = uint32(p_l + uint32(s * (DW_NT // DW_BK)))
            val = float32(0.0)
            if kvalid:
                if clipped == 0:        # uniform: every tap of every pixel is in the image
                    if p < n_valid:
                        val = x[uint32(geo[p, 0] + int32(koff))]
                elif (uint32(geo[p, 1] + int32(i)) < uH
                        and uint32(geo[p, 2] + int32(j)) < uW):
                    val = x[uint32(geo[p, 0] + int32(koff))]
            x_s[uint32(p * uint32(DW_XP) + kk_l)] = val
        for s in range(DW_BM * DW_BN // DW_NT):
            q = uint32(q_l + uint32(s * (DW_NT // DW_BN)))
            m = uint32(ms + q)
            val = float32(0.0)
            if fvalid and m < m_hi:
                val = dz[uint32(m * uF + f0 + nn_l)]
            d_s[uint32(q * uint32(DW_DP) + nn_l)] = val
        cuda.syncthreads()
        # the hot loop: this group's pixels of the step, 32 FMAs per 3 shared loads (a
        # run-time trip count keeps it rolled; staged rows past m_hi are never read)
        p0 = uint32(g * uint32(DW_BM // DW_WS))
        n_it = uint32(min(uint32(DW_BM // DW_WS), uint32(m_hi - ms) - min(p0, uint32(m_hi - ms))))
        n_it = uint32(n_it + uint32(DW_UNROLL - 1)) // uint32(DW_UNROLL)
        xo = uint64(p0 * uint32(DW_XP)) + xa
        do = uint64(p0 * uint32(DW_DP)) + da
        for _ in range(n_it):
            for u in range(DW_UNROLL):
                for r in range(DW_TK):
                    a = x_s[xo + uint64(u * DW_XP + r)]
                    for q2 in range(DW_TN):
                        acc[r * DW_TN + q2] += a * d_s[do + uint64(u * DW_DP + q2)]
            xo += uint64(DW_UNROLL * DW_XP)
            do += uint64(DW_UNROLL * DW_DP)
        if with_db:                    # block-uniform: blocks of the first k tile sum dz
            for s in range(DW_BM // (DW_NT // DW_BN)):
                db_acc += d_s[(q_l + uint32(s * (DW_NT // DW_BN))) * uint32(DW_DP) + nn_l]
        ms = uint32(ms + uint32(DW_BM))
    # epilogue: red = group 0's tile, then red += group g's for g = 1, 2, ... (a fixed
    # order), then every thread writes red to part[z] (coalesced: consecutive f)
    db_s[tid] = db_acc
    for g2 in range(DW_WS):
        if g == uint32(g2):
            for r in range(DW_TK):
                for q2 in range(DW_TN):
                    v = acc[r * DW_TN + q2]
                    if g2 > 0:
                        v += red[xa + uint32(r), da + uint32(q2)]
                    red[xa + uint32(r), da + uint32(q2)] = v
        cuda.syncthreads()
    # a single chunk (S == 1): the sums are final, written to dw2 and db (no stage 2)
    direct = cuda.gridDim.z == 1
    out = dw2 if direct else part
    base = uint32(k0 * uF + f0) if direct else uint32((z * (uK + uint32(1)) + k0) * uF + f0)
    for s in range(DW_BK * DW_BN // DW_NT):
        e = tid + uint32(s * DW_NT)
        kk = e // uint32(DW_BN)
        nn = e % uint32(DW_BN)
        if k0 + kk < uK and f0 + nn < uF:
            out[base + kk * uF + nn] = red[kk, nn]
    if with_db and tid < uint32(DW_BN) and f0 + tid < uF:
        sdb = float32(0.0)
        for s in range(DW_NT // DW_BN):        # the fixed order s = 0, 1, ...
            sdb += db_s[uint32(s * DW_BN) + tid]
        if direct:
            db[f0 + tid] = sdb
        else:
            part[(z * (uK + uint32(1)) + uK) * uF + f0 + tid] = sdb


@cuda.jit
def conv2d_dw_sum(part, dw2, db, n_s, n_k, n_f):
    """Stage 2 of dw/db: dw2[k, f] = sum_z part[z, k, f], db[f] = sum_z part[z, K, f].

    part: the (S = n_s, K + 1, F) partials, flat; dw2 (K*F,) and db (F,), overwritten;
    float32. Block (DW_SUM_COLS, R) owns DW_SUM_COLS consecutive (k, f) entries (a warp
    reads 128 contiguous bytes of each part[z]); R = dw_sum_rows(S), a power of two
    <= DW_SUM_ROWS; thread row ty adds z = ty, ty + R, ... in that order, then the rows
    meet in a fixed binary tree (row r += row r + h for h = R / 2, ..., 1). The order
    depends only on S and the tiles, never on timing: the same inputs give the same bits
    on every run. Grid ceil((K + 1) * F / DW_SUM_COLS).
    """
    s_red = cuda.shared.array((DW_SUM_ROWS, DW_SUM_COLS), float32)
    tx = uint32(cuda.threadIdx.x)
    ty = uint32(cuda.threadIdx.y)
    n_rows = uint32(cuda.blockDim.y)
    n_kf = uint32(n_k) * uint32(n_f)
    n_e = n_kf + uint32(n_f)
    e = uint32(cuda.blockIdx.x) * uint32(DW_SUM_COLS) + tx
    acc = float32(0.0)
    if e < n_e:
        zz = ty
        while zz < uint32(n_s):
            acc += part[zz * n_e + e]
            zz += n_rows
    s_red[ty, tx] = acc
    h = n_rows // uint32(2)
    while h > uint32(0):
        cuda.syncthreads()
        if ty < h:
            s_red[ty, tx] += s_red[ty + h, tx]
        h = h // uint32(2)
    if ty == uint32(0) and e < n_e:
        if e < n_kf:
            dw2[e] = s_red[0, tx]
        else:
            db[e - n_kf] = s_red[0, tx]


set_tiles()     # the default tiles (after the dw section, which set_tiles calls into)

F1 = float32[::1]
F2 = float32[:, ::1]
F4 = float32[:, :, :, ::1]
I2 = int32[:, ::1]
I4 = int32[:, :, :, ::1]
FWD_SIG = (F1, F1, F1, F2, I2, F1) + (int32,) * 23
FWD_SUM_SIG = (F1, F1, F2, I2) + (int32,) * 13
DX_SIG = (F1, F1, F2, F1) + (int32,) * 11
DW_SIG = (F1, F1, F1, F1, F1) + (int32,) * 15
SUM_SIG = (F1, F1, F1, int32, int32, int32)

KERNELS = [
    KernelSpec("conv2d_fwd_tile", conv2d_fwd_tile, FWD_SIG, FW_THREADS),
    KernelSpec("conv2d_fwd_sum", conv2d_fwd_sum, FWD_SUM_SIG, _launch.ELEMENTWISE),
    KernelSpec("conv2d_dx_tile", conv2d_dx_tile, DX_SIG, DX_THREADS),
    KernelSpec("conv2d_dw_tile", conv2d_dw_tile, DW_SIG, DW_NT),
    KernelSpec("conv2d_dw_sum", conv2d_dw_sum, SUM_SIG, DW_SUM_ROWS * DW_SUM_COLS),
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


def _split(base, target, steps, bk, per_split, ways=1):
    """(G, S, k_chunk) for a grid of `base` blocks aiming at `target`: G <= ways groups of
    an outer loop (the forward's pool-window offsets; G * (ways // G) >= the need), then S
    chunks of k_chunk (a multiple of bk) over `steps` staging steps, at least
    SPLIT_MIN_STEPS each, while the partials (S * per_split floats, once split) stay within
    SPLIT_MAX_PARTIALS; (1, 1, steps * bk) when no split pays or fits."""
    whole = (1, 1, steps * bk)
    if base >= target or per_split > SPLIT_MAX_PARTIALS:
        return whole
    need = _mem.blocks(target, base)
    per = max(1, ways // min(ways, need))       # outer offsets per group
    g = _mem.blocks(ways, per)
    s = min(_mem.blocks(need, g), max(1, steps // SPLIT_MIN_STEPS),
            SPLIT_MAX_PARTIALS // per_split)
    chunk = _mem.blocks(steps, s)
    s = _mem.blocks(steps, chunk)
    return (whole if g == s == 1 else (g, s, chunk * bk))


def fwd_split(m, f, k, q):
    """(G, S, q_per, k_chunk) of conv2d_fwd_tile for M = m pooled pixels, F = f, K = k and
    q pool-window offsets (see SPLIT): grid z = G * S; G == S == 1: no split."""
    g, s, chunk = _split(_mem.blocks(m, FW_BM) * _mem.blocks(f, FW_BN), FW_TARGET_BLOCKS,
                         _mem.blocks(k, FW_BK), FW_BK, q * m * f, ways=q)
    return g, s, _mem.blocks(q, g), chunk


def dx_split(m, c, k):
    """(S, k_chunk) of conv2d_dx_tile for M = m input pixels, C = c and K = KH*KW*F = k."""
    _, s, chunk = _split(_mem.blocks(m, BM) * _mem.blocks(c, BN), DX_TARGET_BLOCKS,
                         _mem.blocks(k, BK), BK, m * c)
    return s, chunk


def forward_launches(x, w2, b, y, kw, oh, ow, stride, pt, pl, relu=False,
                     pool=(1, 1), pool_stride=(1, 1), ppt=0, ppl=0, arg=None):
    """The launches of y (N, PH, PW, F) [and arg] from x (N, H, W, C) and w2 = w viewed as
    (K, F): [(kernel, (grid, block), arguments)], conv2d_fwd_tile and, when fwd_split
    splits it, conv2d_fwd_sum. Without pool, PH, PW = OH, OW. Computed once per plan step
    (kernels/cuda/_bound.py) or per call (the public ops)."""
    n, h, wd, c = x.shape
    _, ph, pw, f = y.shape
    m, q = n * ph * pw, pool[0] * pool[1]
    g, s, q_per, k_chunk = fwd_split(m, f, w2.shape[0], q)
    pooled = arg is not None
    y2, arg2 = _rows(y), _rows(arg) if pooled else _dummy_argmax()
    part = _mem.workspace("conv2d_fwd_partials", (s * q * m * f if g * s > 1 else 1,))
    grid = (_mem.blocks(m, FW_BM), _mem.blocks(f, FW_BN), g * s)
    launches = [(conv2d_fwd_tile, (grid, fwd_threads()), (
        _flat(x), _flat(w2), b, y2, arg2, part,
        *_i32(h, wd, c, kw, ph, pw, oh, ow, stride[0], stride[1], pt, pl, pool[0], pool[1],
              pool_stride[0], pool_stride[1], ppt, ppl, relu, pooled, q_per, k_chunk, s)))]
    if g * s > 1:
        threads = _launch.ELEMENTWISE
        launches.append((conv2d_fwd_sum, (_mem.blocks(m * f, threads), threads), (
            part, b, y2, arg2, *_i32(s, ph, pw, oh, ow, pool[1], q, pool_stride[0],
                                     pool_stride[1], ppt, ppl, relu, pooled))))
    return launches


def dx_launches(dz, w2, dx, kh, kw, stride, pt, pl):
    """The launches of dx (N, H, W, C) from dz (N, OH, OW, F) and w2 (K, F):
    conv2d_dx_tile, split-K by dx_split and then dense.dense_sum."""
    n, h, wd, c = dx.shape
    _, oh, ow, _ = dz.shape
    m = n * h * wd
    s, k_chunk = dx_split(m, c, kh * kw * dz.shape[3])
    part = _mem.workspace("conv2d_dx_partials", (s, m, c) if s > 1 else (1, 1, 1))
    grid = (_mem.blocks(m, BM), _mem.blocks(c, BN), s)
    dx2 = _rows(dx)
    launches = [(conv2d_dx_tile, (grid, dx_threads()), (
        _flat(dz), _flat(w2), dx2, _flat(part),
        *_i32(h, wd, kh, kw, oh, ow, stride[0], stride[1], pt, pl, k_chunk)))]
    if s > 1:
        dummy = _mem.workspace("conv2d_dx_dummy", (1,))
        launches.append((_dense.dense_sum, (_mem.blocks(m * c, _dense.SUM_THREADS),
                                            _dense.SUM_THREADS),
                         (part, dummy, dx2, dummy, np.uint32(0))))
    return launches


def dw_split(m, k, f):
    """(S, m_chunk): the pixel chunks of the two-stage weight gradient for M = m pixels,
    K = k, F = f. Enough chunks that stage 1 has about DW_TARGET_BLOCKS blocks (several
    waves on 132 SMs), but at least DW_MIN_STEPS staging steps of DW_BM pixels per chunk
    (each chunk writes a (K + 1) x F partial that stage 2 reads back), and few enough that
    the flat partials stay below 2**31 elements. m_chunk is a multiple of DW_BM."""
    tiles = _mem.blocks(k, DW_BK) * _mem.blocks(f, DW_BN)
    steps = _mem.blocks(m, DW_BM)
    s = min(_mem.blocks(DW_TARGET_BLOCKS, tiles), steps // DW_MIN_STEPS,
            (2 ** 31 - 1) // ((k + 1) * f))
    chunk = _mem.blocks(steps, max(1, s)) * DW_BM
    return _mem.blocks(m, chunk), chunk


def dw_sum_rows(s):
    """Thread rows of a conv2d_dw_sum block for S partials: the power of two >= S, at most
    DW_SUM_ROWS (no row without a partial to add)."""
    rows = 1
    while rows < min(s, DW_SUM_ROWS):
        rows *= 2
    return rows


def dw_launches(x, dz, dw2, db, kw, stride, pt, pl):
    """The launches of dw2 (K, F) and db (F,) from x (N, H, W, C) and dz (N, OH, OW, F),
    via a cached partials workspace: conv2d_dw_tile, then conv2d_dw_sum when split."""
    n, h, wd, c = x.shape
    _, oh, ow, f = dz.shape
    k = dw2.shape[0]
    m = n * oh * ow
    s, chunk = dw_split(m, k, f)
    # one chunk: conv2d_dw_tile writes dw2 and db itself (part unused: a 1-element stand-in)
    part = _mem.workspace("conv2d_dw_partials", (s * (k + 1) * f if s > 1 else 1,))
    grid = (_mem.blocks(k, DW_BK), _mem.blocks(f, DW_BN), s)
    kh = k // (kw * c)
    clipped = pt > 0 or pl > 0 or (oh - 1) * stride[0] + kh > h or (ow - 1) * stride[1] + kw > wd
    launches = [(conv2d_dw_tile, (grid, dw_threads()), (
        _flat(x), _flat(dz), part, _flat(dw2), db,
        *_i32(h, wd, c, kw, oh, ow, stride[0], stride[1], pt, pl, clipped, m, k, f, chunk)))]
    if s > 1:
        launches.append((conv2d_dw_sum, (_mem.blocks((k + 1) * f, DW_SUM_COLS),
                                       (DW_SUM_COLS, dw_sum_rows(s))),
                         (part, _flat(dw2), db, *_i32(s, k, f))))
    return launches


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


def backward_launches(x, w, dz, stride, pt, pl, dx, dw, db):
    """The launches of the conv backward from device arrays x, w and dz (N, OH, OW, F) into
    dw, db and dx (None: not computed): dw_launches, then dx_launches."""
    kh, kw, c, f = w.shape
    launches = dw_launches(x, dz, dw.reshape(kh * kw * c, f), db, kw, stride, pt, pl)
    if dx is not None:
        launches += dx_launches(dz, w.reshape(kh * kw * c, f), dx, kh, kw, stride, pt, pl)
    return launches


def backward_result(bufs, need_dx):
    """What a conv backward op returns once its launches ran: () -> (dx or None, dw, db),
    each copied to its host out= array when it had one."""
    def result():
        (dw, dw_host), (db, db_host) = bufs[:2]
        dx = _mem.finish(*bufs[2]) if need_dx else None
        return dx, _mem.finish(dw, dw_host), _mem.finish(db, db_host)
    return result


def check_conv(op, x, w, stride, padding, layout=_validate.CONV2D_LAYOUT):
    """The reference's checks of x and w (host or device arrays), plus float32 and
    C-contiguous device arrays. Returns (stride pair, OH, OW, pad_top, pad_left).
    `layout`: as _validate.conv2d_geometry's (the depthwise ops pass theirs)."""
    _mem.check_float32(op, "x", x, 4)
    _mem.check_float32(op, "w", w, 4)
    geometry = _validate.conv2d_geometry(op, _mem.checkable(x), _mem.checkable(w), stride, padding,
                                         layout)
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

def conv2d_forward_launches(x, w, b, stride=1, padding="valid", out=None):
    """conv2d_forward's checks, copies in and launches, not launched: (launches, result),
    result() giving what the op returns once they ran (kernels/cuda/_bound.py binds them
    once per plan step)."""
    op = "conv2d_forward"
    stride, oh, ow, pt, pl = check_conv(op, x, w, stride, padding)
    check_bias(op, b, w.shape[3])
    kh, kw, c, f = w.shape
    [(y, y_host)] = _mem.out_buffers(op, ("out", out, (x.shape[0], oh, ow, f), np.float32))
    x, w, b = _mem.device_in(op, "x", x), _mem.device_in(op, "w", w), _mem.device_in(op, "b", b)
    return (forward_launches(x, w.reshape(kh * kw * c, f), b, y, kw, oh, ow, stride, pt, pl),
            lambda: _mem.finish(y, y_host))


def conv2d_forward(x, w, b, stride=1, padding="valid", out=None):
    """y[n, oh, ow, f] = b[f] + sum_{i, j, c} xpad[n, oh*sh + i, ow*sw + j, c] * w[i, j, c, f].

    x (N, H, W, C), w (KH, KW, C, F), b (F,): float32 C-contiguous device arrays (host arrays
    are copied in); stride int or pair; padding 'valid' or 'same' (Keras geometry). Returns y
    (N, OH, OW, F): a new device array, or `out` (overwritten). One launch of conv2d_fwd_tile
    (plus conv2d_fwd_sum when fwd_split splits the grid).
    """
    launches, result = conv2d_forward_launches(x, w, b, stride, padding, out)
    _launch.run(launches)
    return result()


def conv2d_backward_launches(x, w, dy, stride=1, padding="valid", need_dx=True, out=None):
    """conv2d_backward's checks, copies in and launches, not launched: (launches, result)."""
    op = "conv2d_backward"
    stride, oh, ow, pt, pl = check_conv(op, x, w, stride, padding)
    check_dy(op, dy, (x.shape[0], oh, ow, w.shape[3]))
    bufs = backward_buffers(op, x.shape, w.shape, need_dx, out)
    x, w, dy = _mem.device_in(op, "x", x), _mem.device_in(op, "w", w), _mem.device_in(op, "dy", dy)
    dx = bufs[2][0] if need_dx else None
    return (backward_launches(x, w, dy, stride, pt, pl, dx, bufs[0][0], bufs[1][0]),
            backward_result(bufs, need_dx))


def conv2d_backward(x, w, dy, stride=1, padding="valid", need_dx=True, out=None):
    """Gradients of conv2d_forward given dy (N, OH, OW, F): (dx or None, dw, db).

    dx (N, H, W, C), dw (KH, KW, C, F), db (F,): new device arrays or the out= tuple's
    buffers (overwritten; an entry may be None). need_dx=False skips dx. dw and db are
    reduced in two deterministic stages (no atomics) through a cached workspace.
    """
    launches, result = conv2d_backward_launches(x, w, dy, stride, padding, need_dx, out)
    _launch.run(launches)
    return result()

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

from .. import _validate
from . import _mem
from ._spec import KernelSpec

# Forward / dx GEMM tile: BM rows (pixels) x BN columns (channels) per block, staged
# BK reduction steps at a time. threadIdx.x walks the BN channels, so a warp's loads of
# weights and stores of outputs are 128 contiguous bytes (NHWC: channels innermost);
# each thread keeps TM pixel rows in registers. Block (BN, BM // TM) = 512 threads.
#
# Weight-gradient tile: DW_BK rows of dw2 x DW_BN output channels per block, reduced over
# DW_BM pixels per step; each thread keeps DW_TK rows. Block (DW_BN, DW_BK // DW_TK) = 256.
# DW_TARGET_BLOCKS sets how finely the pixel range is split (132 SMs, several blocks each).
#
# Chosen with ptxas -v for sm_90 (python -m fastconv.kernels.cuda.report): every conv
# kernel stays at <= 64 registers per thread with no spills, i.e. >= 50% theoretical
# occupancy (32 of 64 warps per SM). TM = 8 or DW_BM = 32 cost 70-95 registers.
TILES = dict(bm=64, bn=32, bk=16, tm=4, dw_bm=16, dw_bk=32, dw_bn=32, dw_tk=4,
             dw_target_blocks=1024)
SUM_THREADS = 256
NOWHERE = -(1 << 28)   # a row/column offset that puts every tap outside the image


def _padded(row, bk):
    """Row length for a [k][pixel] shared tile that a warp fills with BK consecutive k
    (consecutive input channels) times 32 // BK rows: a length that is 32 // BK modulo 32
    puts those 32 stores in 32 different banks (+1 would leave 2-way conflicts)."""
    return row + ((32 // bk) - row) % 32 if bk <= 32 else row + 1


def set_tiles(**tiles):
    """Set the tile constants (TILES's keys; missing ones take TILES's values).

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
    t = dict(TILES, **tiles)
    bm, bn, bk, tm = t["bm"], t["bn"], t["bk"], t["tm"]
    dbm, dbk, dbn, dtk = t["dw_bm"], t["dw_bk"], t["dw_bn"], t["dw_tk"]
    nt, dnt = bn * (bm // tm), dbn * (dbk // dtk)
    if (bm % tm or nt % bk or (bk * bm) % nt or (bk * bn) % nt or bm > nt
            or dbk % dtk or dnt % dbk or (dbm * dbk) % dnt or (dbm * dbn) % dnt or dbm > dnt):
        raise ValueError(f"tiles {t} do not divide evenly among the threads")
    globals().update(BM=bm, BN=bn, BK=bk, TM=tm, BM_PAD=_padded(bm, bk), BN_PAD=_padded(bn, bk),
                     DW_BM=dbm, DW_BK=dbk, DW_BN=dbn, DW_TK=dtk, DW_BK_PAD=dbk + 1,
                     DW_TARGET_BLOCKS=t["dw_target_blocks"])


def _current_tiles():
    return dict(bm=BM, bn=BN, bk=BK, tm=TM, dw_bm=DW_BM, dw_bk=DW_BK, dw_bn=DW_BN, dw_tk=DW_TK,
                dw_target_blocks=DW_TARGET_BLOCKS)


def _compiled_kernels():
    """Names of this module's kernels that hold compiled code (in any CUDA context). The
    simulator never compiles (its `overloads` is always empty): it may change tiles any time."""
    return [spec.name for spec in globals().get("KERNELS", ())
            if len(getattr(spec.kernel, "overloads", ()))]


BM = BN = BK = TM = BM_PAD = BN_PAD = DW_BM = DW_BK = DW_BN = DW_TK = DW_BK_PAD = 0
DW_TARGET_BLOCKS = 0
set_tiles()


def fwd_threads():
    return (BN, BM // TM)


def dw_threads():
    return (DW_BN, DW_BK // DW_TK)


@cuda.jit
def conv2d_fwd_tile(x, w2, b, y2, arg2, H, W, C, KW, n_ph, n_pw, OH, OW, sh, sw, pt, pl,
                    pool_h, pool_w, psh, psw, ppt, ppl, relu, pooled):
    """y[n, ph, pw, f] = max over the pool window of act(conv(x, w) + b) at conv pixel (oh, ow).

    x: the (N, H, W, C) input, flat; w2 (K=KH*KW*C, F); b (F,); y2 (M=N*PH*PW, F), the
    (N, PH, PW, F) output viewed as rows; arg2 int32 like y2, written only when pooled != 0:
    the flat index oh * OW + ow of the winner, first maximum in row-major window order
    (a (1, 1) dummy otherwise). act is ReLU when relu != 0. The unfused conv is pool 1x1,
    stride 1, no padding. All float32. Overwrites y2 (and arg2).
    Grid (ceil(M / BM), ceil(F / BN)), block (BN, BM // TM); needs (BN*BM/TM) % BK == 0.
    """
    a_s = cuda.shared.array((BK, BM_PAD), float32)   # patches [k][pixel]
    b_s = cuda.shared.array((BK, BN), float32)       # weights [k][channel]
    s_base = cuda.shared.array(BM, int32)            # flat offset of x[n, 0, 0, 0]
    s_row = cuda.shared.array(BM, int32)             # oh*sh - pt; NOWHERE for no conv pixel
    s_col = cuda.shared.array(BM, int32)             # ow*sw - pl
    s_pix = cuda.shared.array(BM, int32)             # oh*OW + ow, or -1
    acc = cuda.local.array(TM, float32)
    best = cuda.local.array(TM, float32)
    won = cuda.local.array(TM, int32)
    n_m = y2.shape[0]
    n_f = y2.shape[1]
    n_k = w2.shape[0]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    n_threads = BN * (BM // TM)
    tid = ty * BN + tx
    m0 = cuda.blockIdx.x * BM
    f0 = cuda.blockIdx.y * BN
    f = f0 + tx
    kk_l = tid % BK                 # this thread always stages column k0 + kk_l of the patches:
    mm_l = tid // BK                # consecutive threads read consecutive input channels
    for r in range(TM):
        best[r] = float32(0.0)
        won[r] = -1
    for q in range(pool_h * pool_w):
        qi = q // pool_w
        qj = q - qi * pool_w
        cuda.syncthreads()          # the previous window position is done with s_pix
        if tid < BM:                # BM <= threads per block
            mm = tid
            m = m0 + mm
            row = NOWHERE
            col = NOWHERE
            pix = -1
            base = 0
            if m < n_m:
                n = m // (n_ph * n_pw)
                rem = m - n * (n_ph * n_pw)
                p_h = rem // n_pw
                oh = p_h * psh - ppt + qi
                ow = (rem - p_h * n_pw) * psw - ppl + qj
                if oh >= 0 and oh < OH and ow >= 0 and ow < OW:
                    row = oh * sh - pt
                    col = ow * sw - pl
                    pix = oh * OW + ow
                    base = n * (H * W * C)
            s_base[mm] = base
            s_row[mm] = row
            s_col[mm] = col
            s_pix[mm] = pix
        for r in range(TM):
            acc[r] = float32(0.0)
        # (i, j, c) of k = k0 + kk_l, advanced by BK per step without dividing
        i = 0
        j = 0
        c = kk_l
        while c >= C:
            c -= C
            j += 1
            if j == KW:
                j = 0
                i += 1
        cuda.syncthreads()
        for k0 in range(0, n_k, BK):
            kvalid = k0 + kk_l < n_k
            # loops with constant trip counts below: unrolled with simple addressing (a
            # range(start, stop, step) with run-time bounds cost ~70 extra registers)
            for sl in range(BK * BM // n_threads):
                mm = mm_l + sl * (n_threads // BK)
                val = float32(0.0)
                row = s_row[mm] + i
                col = s_col[mm] + j
                if kvalid and row >= 0 and row < H and col >= 0 and col < W:
                    val = x[s_base[mm] + (row * W + col) * C + c]
                a_s[kk_l, mm] = val
            for sl in range(BK * BN // n_threads):
                e = tid + sl * n_threads
                nn = e % BN
                kk = e // BN
                val = float32(0.0)
                if k0 + kk < n_k and f0 + nn < n_f:
                    val = w2[k0 + kk, f0 + nn]
                b_s[kk, nn] = val
            c += BK
            while c >= C:
                c -= C
                j += 1
                if j == KW:
                    j = 0
                    i += 1
            cuda.syncthreads()
            # a run-time trip count: the compiler keeps this loop rolled, which keeps
            # registers low (fully unrolled it hoists every shared load: 160 registers)
            for kk in range(min(BK, n_k - k0)):
                wv = b_s[kk, tx]
                for r in range(TM):
                    acc[r] += a_s[kk, ty * TM + r] * wv
            cuda.syncthreads()
        bias = float32(0.0)
        if f < n_f:
            bias = b[f]
        for r in range(TM):
            pix = s_pix[ty * TM + r]
            if pix >= 0:
                val = acc[r] + bias
                if relu != 0 and val < float32(0.0):
                    val = float32(0.0)
                if won[r] < 0 or val > best[r]:
                    best[r] = val
                    won[r] = pix
    if f < n_f:
        for r in range(TM):
            m = m0 + ty * TM + r
            if m < n_m:
                y2[m, f] = best[r]
                if pooled != 0:
                    arg2[m, f] = won[r]


@cuda.jit
def conv2d_dx_tile(dz, w2, dx2, H, W, KH, KW, OH, OW, sh, sw, pt, pl):
    """dx[n, h, w, c] = sum over taps (i, j) and f of dz[n, oh, ow, f] * w[i, j, c, f]
    where h + pt - i = oh * sh and w + pl - j = ow * sw (a gather, so no atomics).

    dz: the (N, OH, OW, F) gradient, flat; w2 (KH*KW*C, F); dx2 (N*H*W, C), the (N, H, W, C)
    input gradient viewed as rows. float32. Overwrites every dx element.
    Grid (ceil(N*H*W / BM), ceil(C / BN)), block (BN, BM // TM).
    """
    a_s = cuda.shared.array((BK, BM_PAD), float32)   # gathered dz [k=(i, j, f)][pixel]
    b_s = cuda.shared.array((BK, BN_PAD), float32)   # w [k=(i, j, f)][c]
    s_base = cuda.shared.array(BM, int32)            # flat offset of dz[n, 0, 0, 0]
    s_hp = cuda.shared.array(BM, int32)              # h + pt; NOWHERE past the last pixel
    s_wp = cuda.shared.array(BM, int32)              # w + pl
    acc = cuda.local.array(TM, float32)
    n_m = dx2.shape[0]
    C = dx2.shape[1]
    F = w2.shape[1]
    n_k = KH * KW * F
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    n_threads = BN * (BM // TM)
    tid = ty * BN + tx
    m0 = cuda.blockIdx.x * BM
    c0 = cuda.blockIdx.y * BN
    kk_l = tid % BK                 # this thread stages column k0 + kk_l: consecutive f
    mm_l = tid // BK
    if tid < BM:
        mm = tid
        m = m0 + mm
        hp = NOWHERE
        wp = NOWHERE
        base = 0
        if m < n_m:
            n = m // (H * W)
            rem = m - n * (H * W)
            h = rem // W
            hp = h + pt
            wp = rem - h * W + pl
            base = n * (OH * OW * F)
        s_base[mm] = base
        s_hp[mm] = hp
        s_wp[mm] = wp
    for r in range(TM):
        acc[r] = float32(0.0)
    i = 0
    j = 0
    fo = kk_l
    while fo >= F:
        fo -= F
        j += 1
        if j == KW:
            j = 0
            i += 1
    cuda.syncthreads()
    for k0 in range(0, n_k, BK):
        kvalid = k0 + kk_l < n_k
        for sl in range(BK * BM // n_threads):        # constant trip counts: see the forward
            mm = mm_l + sl * (n_threads // BK)
            val = float32(0.0)
            oh_s = s_hp[mm] - i
            ow_s = s_wp[mm] - j
            if kvalid and oh_s >= 0 and ow_s >= 0:
                oh = oh_s
                ow = ow_s
                if sh != 1:
                    oh = oh_s // sh
                if sw != 1:
                    ow = ow_s // sw
                if oh * sh == oh_s and ow * sw == ow_s and oh < OH and ow < OW:
                    val = dz[s_base[mm] + (oh * OW + ow) * F + fo]
            a_s[kk_l, mm] = val
        wrow = (i * KW + j) * C + c0
        for sl in range(BK * BN // n_threads):
            nn = mm_l + sl * (n_threads // BK)
            val = float32(0.0)
            if kvalid and c0 + nn < C:
                val = w2[wrow + nn, fo]
            b_s[kk_l, nn] = val
        fo += BK
        while fo >= F:
            fo -= F
            j += 1
            if j == KW:
                j = 0
                i += 1
        cuda.syncthreads()
        for kk in range(min(BK, n_k - k0)):      # run-time trip count: see conv2d_fwd_tile
            wv = b_s[kk, tx]
            for r in range(TM):
                acc[r] += a_s[kk, ty * TM + r] * wv
        cuda.syncthreads()
    c = c0 + tx
    if c < C:
        for r in range(TM):
            m = m0 + ty * TM + r
            if m < n_m:
                dx2[m, c] = acc[r]


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
FWD_SIG = (F1, F2, F1, F2, I2) + (int32,) * 20
DX_SIG = (F1, F2, F2) + (int32,) * 10
DW_SIG = (F1, F2, float32[:, :, ::1]) + (int32,) * 11
SUM_SIG = (float32[:, :, ::1], F2, F1)

KERNELS = [
    KernelSpec("conv2d_fwd_tile", conv2d_fwd_tile, FWD_SIG, BN * (BM // TM)),
    KernelSpec("conv2d_dx_tile", conv2d_dx_tile, DX_SIG, BN * (BM // TM)),
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
    grid = (_mem.blocks(n * ph * pw, BM), _mem.blocks(f, BN))
    pooled = arg is not None
    conv2d_fwd_tile[grid, fwd_threads()](
        _flat(x), w2, b, _rows(y), _rows(arg) if pooled else _dummy_argmax(),
        *_i32(h, wd, c, kw, ph, pw, oh, ow, stride[0], stride[1], pt, pl, pool[0], pool[1],
              pool_stride[0], pool_stride[1], ppt, ppl, relu, pooled))


def launch_dx(dz, w2, dx, kh, kw, stride, pt, pl):
    """dx (N, H, W, C) from dz (N, OH, OW, F) and w2 (K, F); see conv2d_dx_tile."""
    n, h, wd, c = dx.shape
    _, oh, ow, _ = dz.shape
    grid = (_mem.blocks(n * h * wd, BM), _mem.blocks(c, BN))
    conv2d_dx_tile[grid, fwd_threads()](
        _flat(dz), w2, _rows(dx), *_i32(h, wd, kh, kw, oh, ow, stride[0], stride[1], pt, pl))


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

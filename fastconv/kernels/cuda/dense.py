"""Fully connected layer on CUDA: x (N, IN), w (IN, OUT), b (OUT,), y (N, OUT).

Three matrix products, all run by one register-blocked split-K GEMM kernel whose
operands are read through strides (so no transposed copy is ever made):

  y  = x @ w + b       A = x (N, IN),   B = w (IN, OUT)                 reduce over IN
  dx = dy @ w.T        A = dy (N, OUT), B = w read transposed (OUT, IN) reduce over OUT
  dw = x.T @ dy, db    A = x read transposed (IN, N) plus a row of ones, B = dy (N, OUT):
                       row IN of the product is db = sum_n dy          reduce over N

`dense_gemm` computes a BM x BN tile of C = A @ B per block, over one chunk of the
reduction (grid z). When the reduction is split into S > 1 chunks (so that a product
with few output tiles, like 6400->64 at batch 32, still spreads over the GPU) each
block writes its partial tile to a workspace part (S, M, N) and `dense_sum` adds the S
partials in the fixed order z = 0, 1, ... (plus the bias): no float atomics, the same
inputs give the same bits run to run. With S = 1 the GEMM writes the result directly.
docs/cuda_conv.md ("Dense") has the tiles, grids and estimates.

Tile constants are compile-time constants on a GPU; the simulator reads them live, so
tests shrink them (set_tiles) to get many blocks and ragged edges from tiny inputs.
"""
import numpy as np
from numba import config, cuda, float32, uint32

from .. import _validate
from . import _launch, _mem
from ._spec import KernelSpec

# Block tile BM rows x BN columns of C, TM x TN outputs per thread (registers), BK
# reduction steps staged in shared memory per barrier: block (BN // TN, BM // TM) = 128
# threads. Thread (tx, ty) owns rows ty*TM.. and columns tx*TN..: its TM values of A
# and TN values of B at one reduction step are contiguous, 16-byte aligned words of the
# staged tiles (two 128-bit shared loads per TM*TN = 16 FMAs), and a warp's stores are
# 2 rows x 64 contiguous floats. BM = 32 fits the seed's batch 32 (forward and dx);
# the split-K fills the GPU when the output has few tiles.
# TARGET_BLOCKS: aim for about 2 blocks per SM of an H100/H200 (132 SMs); MIN_CHUNK:
# a split chunk never reduces fewer steps than this (the partials then cost as much
# traffic as the operands; below it a split does not pay).
TILES = dict(bm=32, bn=64, bk=16, tm=4, tn=4, target_blocks=264, min_chunk=64)
SUM_THREADS = 256
PAD = 4                 # row padding of the staged tiles: keeps rows 16-byte aligned
# The simulator refuses shared-array alignment (cudasim: "not supported"); on a GPU
# the staged tiles are 16-byte aligned so the 4-wide row reads become ld.shared.v4.
ALIGN = None if config.ENABLE_CUDASIM else 16

BM = BN = BK = TM = TN = THREADS = A_PAD = B_PAD = A_LOADS = B_LOADS = 0
TARGET_BLOCKS = MIN_CHUNK = 0


def set_tiles(**tiles):
    """Set the tile constants (TILES's keys; missing ones take TILES's values).

    Only for the simulator, which reads module globals live (tests shrink the tiles so
    tiny inputs span several blocks). On a GPU a kernel freezes the constants when it
    first compiles, so RuntimeError once one has. Every staged tile must divide evenly
    among the threads (the loaders rely on it), BK must be a power of two.
    """
    compiled = [s.name for s in globals().get("KERNELS", ())
                if len(getattr(s.kernel, "overloads", ()))]
    if compiled:
        raise RuntimeError(f"dense.set_tiles: {', '.join(compiled)} already compiled; kernels "
                           f"freeze the tiles when they compile, so set them before the "
                           f"first cuda dense call (in a fresh process)")
    t = dict(TILES, **tiles)
    bm, bn, bk, tm, tn = t["bm"], t["bn"], t["bk"], t["tm"], t["tn"]
    threads = (bm // tm) * (bn // tn) if bm % tm == 0 and bn % tn == 0 else 0
    if (not threads or (bk * bm) % threads or (bk * bn) % threads or bk & (bk - 1)
            or threads % bk or threads % bm or threads % bn or bm % 4 or bn % 4 or t["min_chunk"] < 1 or t["target_blocks"] < 1):
        raise ValueError(f"tiles {t} do not divide evenly among the threads")
    globals().update(BM=bm, BN=bn, BK=bk, TM=tm, TN=tn, THREADS=threads, A_PAD=bm + PAD,
                     A_LOADS=bk * bm // threads, B_LOADS=bk * bn // threads,
                     B_PAD=bn + PAD, TARGET_BLOCKS=t["target_blocks"],
                     MIN_CHUNK=t["min_chunk"])


set_tiles()


@cuda.jit
def dense_gemm(a, b, bias, part, out, out_last, n_k, a_sm, a_sk, b_sk, b_sn, k_chunk,
               ones_row, direct, has_bias):
    """One BM x BN tile of C = A @ B over the reduction chunk z = blockIdx.z.

    A (M, K) is a[m * a_sm + k * a_sk] for m < R = out.shape[0], and a row of ones at
    m = R when ones_row != 0 (M = R + ones_row); B (K, N) is b[k * b_sk + n * b_sn], N =
    out.shape[1]. a, b flat float32; the chunk is k in [z * k_chunk, min(K, (z + 1) *
    k_chunk)), K = n_k. direct != 0 (one chunk): writes out[m, n] = C[m, n] (+ bias[n]
    when has_bias != 0) and out_last[n] = C[R, n] (the ones row); else writes the
    partial C to part[z, m, n] (part (S, M, N)). Overwrites; no atomics.
    Grid (ceil(N / BN), ceil(M / BM), S), block (BN // TN, BM // TM).
    Index math is unsigned 32-bit (the wrappers refuse operands of 2**31 elements).
    """
    a_s = cuda.shared.array((BK, A_PAD), float32, alignment=ALIGN)   # A tile [k][m]
    b_s = cuda.shared.array((BK, B_PAD), float32, alignment=ALIGN)   # B tile [k][n]
    acc = cuda.local.array((TM, TN), float32)
    av = cuda.local.array(TM, float32)
    bv = cuda.local.array(TN, float32)
    ra = cuda.local.array(A_LOADS, float32)   # the next stage, in flight
    rb = cuda.local.array(B_LOADS, float32)
    tx = uint32(cuda.threadIdx.x)
    ty = uint32(cuda.threadIdx.y)
    tid = uint32(ty * uint32(BN // TN) + tx)
    n_r = uint32(out.shape[0])
    n_m = uint32(n_r + ones_row)
    n_n = uint32(out.shape[1])
    n0 = uint32(uint32(cuda.blockIdx.x) * uint32(BN))
    m0 = uint32(uint32(cuda.blockIdx.y) * uint32(BM))
    z = uint32(cuda.blockIdx.z)
    k_lo = uint32(z * k_chunk)
    k_hi = uint32(min(n_k, uint32(k_lo + k_chunk)))
    r0 = uint32(ty * uint32(TM))         # this thread's first row and column of the tile
    c0 = uint32(tx * uint32(TN))
    # Loader maps, fixed for the whole reduction: load s of this thread stages A element
    # (ak + s * a_dk, am + s * a_dm) of the tile. Consecutive threads take consecutive k
    # when A is k-contiguous (x, dy rows), consecutive m when it is m-contiguous (x read
    # transposed): global reads coalesce either way (block-uniform choice). Same for B.
    if a_sk == 1:
        ak = uint32(tid % uint32(BK))
        am = uint32(tid // uint32(BK))
        a_dk = uint32(0)
        a_dm = uint32(THREADS // BK)
    else:
        am = uint32(tid % uint32(BM))
        ak = uint32(tid // uint32(BM))
        a_dk = uint32(THREADS // BM)
        a_dm = uint32(0)
    if b_sn == 1:
        bn_ = uint32(tid % uint32(BN))
        bk_ = uint32(tid // uint32(BN))
        b_dk = uint32(THREADS // BN)
        b_dn = uint32(0)
    else:
        bk_ = uint32(tid % uint32(BK))
        bn_ = uint32(tid // uint32(BK))
        b_dk = uint32(0)
        b_dn = uint32(THREADS // BK)
    for i in range(TM):
        for j in range(TN):
            acc[i, j] = float32(0.0)
    # Software pipeline: step t fetches stage t (k0 = k_lo + t * BK) from global memory
    # into registers, computes stage t - 1 from shared memory while those loads are in
    # flight, then stores stage t to shared memory. n_stage is block-uniform, so every
    # thread reaches both barriers of every step.
    n_stage = uint32(uint32(uint32(k_hi - k_lo) + uint32(BK - 1)) // uint32(BK))
    for t in range(n_stage + uint32(1)):
        k0 = uint32(k_lo + uint32(t) * uint32(BK))
        for s in range(A_LOADS):       # constant trip count: unrolled
            m = uint32(m0 + am + uint32(s) * a_dm)
            k = uint32(k0 + ak + uint32(s) * a_dk)
            val = float32(0.0)
            if k < k_hi:                          # past the last stage: no loads
                if m < n_r:
                    val = a[uint32(uint32(m * a_sm) + uint32(k * a_sk))]
                elif m < n_m:
                    val = float32(1.0)
            ra[s] = val
        for s in range(B_LOADS):
            n = uint32(n0 + bn_ + uint32(s) * b_dn)
            k = uint32(k0 + bk_ + uint32(s) * b_dk)
            val = float32(0.0)
            if k < k_hi and n < n_n:
                val = b[uint32(uint32(k * b_sk) + uint32(n * b_sn))]
            rb[s] = val
        if t > 0:
            # a run-time trip count keeps this loop rolled: per step 2 x 4-wide shared
            # loads and TM*TN FMAs on registers (the report's hottest loop)
            kn = uint32(min(uint32(BK), uint32(k_hi - uint32(k0 - uint32(BK)))))
            kk = uint32(0)
            while kk < kn:
                for i in range(TM):
                    av[i] = a_s[kk, r0 + uint32(i)]
                for j in range(TN):
                    bv[j] = b_s[kk, c0 + uint32(j)]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += av[i] * bv[j]
                kk = uint32(kk + uint32(1))
        cuda.syncthreads()                        # everyone is done reading stage t - 1
        if t < n_stage:
            for s in range(A_LOADS):
                a_s[uint32(ak + uint32(s) * a_dk), uint32(am + uint32(s) * a_dm)] = ra[s]
            for s in range(B_LOADS):
                b_s[uint32(bk_ + uint32(s) * b_dk), uint32(bn_ + uint32(s) * b_dn)] = rb[s]
        cuda.syncthreads()                        # stage t is staged
    for i in range(TM):
        m = uint32(m0 + r0 + uint32(i))
        for j in range(TN):
            n = uint32(n0 + c0 + uint32(j))
            if m < n_m and n < n_n:
                if direct == 0:
                    part[z, m, n] = acc[i, j]
                elif m < n_r:
                    v = acc[i, j]
                    if has_bias != 0:
                        v += bias[n]
                    out[m, n] = v
                else:
                    out_last[n] = acc[i, j]


@cuda.jit
def dense_sum(part, bias, out, out_last, has_bias):
    """Stage 2 of a split product: C[m, n] = sum_z part[z, m, n] in the fixed order
    z = 0, 1, ... (deterministic); writes out[m, n] = C[m, n] (+ bias[n] when
    has_bias != 0) for m < R = out.shape[0] and out_last[n] = C[R, n] for m = R (part
    has R + 1 rows when the product had a ones row). part (S, M, N), out (R, N),
    out_last, bias (N,) or (1,) dummies, float32; overwritten. One thread per (m, n),
    n fastest (coalesced): grid ceil(M * N / SUM_THREADS)."""
    e = uint32(cuda.grid(1))
    n_s = uint32(part.shape[0])
    n_m = uint32(part.shape[1])
    n_n = uint32(part.shape[2])
    if e < uint32(n_m * n_n):     # no barrier in this kernel: the guard is safe
        m = uint32(e // n_n)
        n = uint32(e - uint32(m * n_n))
        s = float32(0.0)
        z = uint32(0)
        while z < n_s:
            s += part[z, m, n]
            z = uint32(z + uint32(1))
        if m < uint32(out.shape[0]):
            if has_bias != 0:
                s += bias[n]
            out[m, n] = s
        else:
            out_last[n] = s


F1 = float32[::1]
F2 = float32[:, ::1]
F3 = float32[:, :, ::1]
GEMM_SIG = (F1, F1, F1, F3, F2, F1) + (uint32,) * 9
SUM_SIG = (F3, F1, F2, F1, uint32)

KERNELS = [
    KernelSpec("dense_gemm", dense_gemm, GEMM_SIG, THREADS),
    KernelSpec("dense_sum", dense_sum, SUM_SIG, SUM_THREADS),
]


# --- launchers (arguments already checked) ---

def _u32(*values):
    return tuple(np.uint32(v) for v in values)


def _flat(a):
    return a.reshape(int(np.prod(a.shape)))


def split(m, n, k):
    """(S, k_chunk): reduction chunks for an (M, N) output over K. Enough chunks that the
    grid has about TARGET_BLOCKS blocks, none shorter than MIN_CHUNK steps, each a
    multiple of BK (so only the last chunk is ragged)."""
    tiles = _mem.blocks(m, BM) * _mem.blocks(n, BN)
    s = max(1, min(_mem.blocks(TARGET_BLOCKS, tiles), int(k) // MIN_CHUNK))
    chunk = _mem.blocks(_mem.blocks(k, s), BK) * BK
    return _mem.blocks(k, chunk), chunk


def _dummy():
    return _mem.workspace("dense_dummy", (1,), np.float32)


def gemm_launches(a, b, out, out_last, strides, n_k, ones_row=False, bias=None):
    """The launches (not launched) of C = A @ B into out (R, N) [+ bias] and out_last (the
    ones row): [(kernel, (grid, block), arguments)], dense_gemm and, when split, dense_sum;
    see dense_gemm. `strides` = (a_sm, a_sk, b_sk, b_sn) of the flat a and b."""
    rows, cols = out.shape
    m = rows + int(ones_row)
    s, chunk = split(m, cols, n_k)
    direct = s == 1
    part = _mem.workspace("dense_partials", (1, 1, 1) if direct else (s, m, cols))
    grid = (_mem.blocks(cols, BN), _mem.blocks(m, BM), s)
    has_bias = bias is not None
    bias = bias if has_bias else _dummy()
    out_last = out_last if out_last is not None else _dummy()
    launches = [(dense_gemm, (grid, (BN // TN, BM // TM)), (
        _flat(a), _flat(b), bias, part, out, out_last,
        *_u32(n_k, *strides, chunk, ones_row, direct, has_bias)))]
    if not direct:
        launches.append((dense_sum, (_mem.blocks(m * cols, SUM_THREADS), SUM_THREADS),
                         (part, bias, out, out_last, np.uint32(has_bias))))
    return launches


# --- public ops ---

def _check(op, x, w):
    _mem.check_float32(op, "x", x, 2)
    _mem.check_float32(op, "w", w, 2)
    _validate.dense_check(op, _mem.checkable(x), _mem.checkable(w))
    # the kernels index with unsigned 32-bit math: refuse operands of 2**31 elements
    _mem.check_int32_indexable(op, x.shape, w.shape, (x.shape[0], w.shape[1]))


def dense_forward_launches(x, w, b, out=None):
    """dense_forward's checks, copies in and launches, not launched: (launches, result),
    result() giving what the op returns once they ran (kernels/cuda/_bound.py)."""
    op = "dense_forward"
    _check(op, x, w)
    _validate.check_bias(op, _mem.checkable(b), w.shape[1], np.float32)
    _mem.check_float32(op, "b", b)
    [(y, y_host)] = _mem.out_buffers(op, ("out", out, (x.shape[0], w.shape[1]), np.float32))
    x, w, b = _mem.device_in(op, "x", x), _mem.device_in(op, "w", w), _mem.device_in(op, "b", b)
    n_in, n_out = w.shape
    return (gemm_launches(x, w, y, None, (n_in, 1, n_out, 1), n_in, bias=b),
            lambda: _mem.finish(y, y_host))


def dense_forward(x, w, b, out=None):
    """y = x @ w + b: (N, OUT), a new device array or `out` (overwritten).

    x (N, IN), w (IN, OUT), b (OUT,): float32 C-contiguous device arrays (host arrays are
    copied in). One dense_gemm launch, plus dense_sum when the reduction is split.
    """
    launches, result = dense_forward_launches(x, w, b, out)
    _launch.run(launches)
    return result()


def dense_backward_launches(x, w, dy, need_dx=True, out=None):
    """dense_backward's checks, copies in and launches, not launched: (launches, result)."""
    op = "dense_backward"
    _check(op, x, w)
    _validate.check_dy(op, _mem.checkable(dy), (x.shape[0], w.shape[1]), np.float32)
    _mem.check_float32(op, "dy", dy)
    out = _validate.out_tuple(op, out, 3)
    specs = [("out[1]", out[1], w.shape, np.float32),
             ("out[2]", out[2], (w.shape[1],), np.float32)]
    if need_dx:
        specs.append(("out[0]", out[0], x.shape, np.float32))
    bufs = _mem.out_buffers(op, *specs)
    (dw, dw_host), (db, db_host) = bufs[:2]
    x, w, dy = _mem.device_in(op, "x", x), _mem.device_in(op, "w", w), _mem.device_in(op, "dy", dy)
    n, n_in = x.shape
    n_out = w.shape[1]
    # dw (IN, OUT) and db: A[i, k=n] = x[n, i] (a_sm 1, a_sk IN) plus the ones row
    launches = gemm_launches(x, dy, dw, db, (1, n_in, n_out, 1), n, ones_row=True)
    if need_dx:
        # dx (N, IN): A = dy (N, OUT), B[k=o, j=i] = w[i, o] (b_sk 1, b_sn OUT)
        launches += gemm_launches(dy, w, bufs[2][0], None, (n_out, 1, 1, n_out), n_out)

    def result():
        dx = _mem.finish(*bufs[2]) if need_dx else None
        return dx, _mem.finish(dw, dw_host), _mem.finish(db, db_host)
    return launches, result


def dense_backward(x, w, dy, need_dx=True, out=None):
    """(dx = dy @ w.T or None, dw = x.T @ dy, db = sum_n dy): new device arrays or the out=
    tuple's buffers (overwritten; an entry may be None). dw and db come from one product
    (x.T with a row of ones, times dy); every sum runs in a fixed order (deterministic)."""
    launches, result = dense_backward_launches(x, w, dy, need_dx, out)
    _launch.run(launches)
    return result()

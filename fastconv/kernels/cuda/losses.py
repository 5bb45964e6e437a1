"""Losses from logits on the GPU, mean over the batch, with the reference's meaning.

Each op returns (loss as a Python float, dlogits of logits' shape), as the
model layer expects (fastconv/models/_plan.py compute_loss: `loss, _ =
loss_fn(labels, logits, out=(None, dlogits))`, then math.isfinite(loss)).
dlogits stays on the device; the loss is the one value a step copies back.

One block of _launch.REDUCE threads: each thread takes rows i, i + T, ...,
writes their dlogits and accumulates its share of the loss; a shared-memory
tree reduction (fastconv/kernels/cuda/_reduce.py) adds the shares in a fixed
order, so the loss is deterministic. One block is right for batches (tens to
thousands of rows); the per-row work is a few flops.
"""
import math

import numpy as np
from numba import cuda, float32, int32, int64

from .. import _validate
from . import _launch
from ._launch import REDUCE_MAX
from ._mem import (cached, check_float32, checkable, device_in, finish, flat, is_device_array,
                   out_buffer)
from ._reduce import block_sum
from ._spec import KernelSpec

_F1 = float32[::1]


@cuda.jit
def bce_fwd_bwd(y, z, w, use_w, ls, dz, result):
    """Binary cross-entropy of sigmoid(z) against y, all (N,): dz = w * (sigmoid(z) - y) / N;
    result[0] = sum of w * (max(z, 0) - z*y + log1p(exp(-|z|))) / N, w the per-sample
    weights w (N,) when use_w != 0, else 1 (w is then any float32 array, unread; the
    product with 1 is exact, so the unweighted results are bitwise those of before);
    y smoothed to y * (1 - ls) + 0.5 * ls (exactly y at ls = 0). One block."""
    sh = cuda.shared.array(REDUCE_MAX, float32)
    t = cuda.threadIdx.x
    n = z.size
    inv_n = np.float32(1.0) / np.float32(n)
    acc = np.float32(0.0)
    for i in range(t, n, cuda.blockDim.x):
        zi = z[i]
        yi = y[i] * (np.float32(1.0) - ls) + np.float32(0.5) * ls
        wi = w[i] if use_w != 0 else np.float32(1.0)
        e = math.exp(-abs(zi))
        li = max(zi, np.float32(0.0)) - zi * yi + math.log1p(e)
        acc += wi * li
        if zi >= np.float32(0.0):
            sig = np.float32(1.0) / (np.float32(1.0) + e)
        else:
            sig = e / (np.float32(1.0) + e)
        dz[i] = (wi * (sig - yi)) * inv_n
    total = block_sum(sh, acc)
    if t == 0:
        result[0] = total * inv_n
        result[1] = np.float32(0.0)


@cuda.jit
def softmax_ce_fwd_bwd(labels, z, w, use_w, ls, dz, result):
    """Softmax cross-entropy of z (N, K) against class indices labels (N,) and the
    target t = onehot * (1 - ls) + ls / K (onehot at ls = 0):
    dz = w[r] * (softmax(z) - t) / N; result[0] = sum of w[r] * (logsumexp(z) -
    sum_j t_j z_j) / N, w as in bce_fwd_bwd (use_w == 0: all ones, w unread);
    result[1] = how many labels are outside [0, K) (their rows are left out). One block,
    one thread per row."""
    sh = cuda.shared.array(REDUCE_MAX, float32)
    t = cuda.threadIdx.x
    n = z.shape[0]
    k = z.shape[1]
    inv_n = np.float32(1.0) / np.float32(n)
    off = ls / np.float32(k)
    on = np.float32(1.0) - ls
    acc = np.float32(0.0)
    bad = np.float32(0.0)
    for r in range(t, n, cuda.blockDim.x):
        lab = labels[r]
        if lab < 0 or lab >= k:
            bad += np.float32(1.0)
            continue
        wr = w[r] if use_w != 0 else np.float32(1.0)
        m = z[r, 0]
        for j in range(1, k):
            m = max(m, z[r, j])
        s = np.float32(0.0)
        for j in range(k):
            s += math.exp(z[r, j] - m)
        tz = z[r, lab]
        if ls != np.float32(0.0):
            tz = on * z[r, lab]
            for j in range(k):
                tz += off * z[r, j]
        lr = math.log(s) + m - tz
        acc += wr * lr
        inv_s = np.float32(1.0) / s
        for j in range(k):
            p = math.exp(z[r, j] - m) * inv_s - off
            if j == lab:
                p -= on
            dz[r, j] = (wr * p) * inv_n
    total = block_sum(sh, acc)
    nbad = block_sum(sh, bad)
    if t == 0:
        result[0] = total * inv_n
        result[1] = nbad


# The step statistics a fit epoch accumulates on the device (float32 (STATS,)), read
# by the host once per epoch (or per progress refresh) instead of once per step. The
# loss sum is compensated (Kahan: LOSS_SUM + LOSS_COMP carry ~48 bits, like the host's
# float64 sum for any epoch length); the counts are exact below 2^24 samples an epoch.
# float32 because the kernels keep float64 out of the PTX (tests/test_cuda_ptx.py).
LOSS_SUM, LOSS_COMP, CORRECT, SEEN, STEPS, BAD, BAD_STEP, BAD_LOSS = range(8)
STATS = 8


@cuda.jit(device=True)
def _add_step(stats, loss, correct, n):
    """Thread 0 of the stats kernels: fold one step's mean loss and correct count into
    stats, unless an earlier step was non-finite (stats[BAD] != 0: that step ends the
    epoch on the host's side, later steps are not counted and their updates are skipped,
    kernels/cuda/optimizers.py). A non-finite loss is counted (loss and samples, as the
    host loop does) and sets BAD, BAD_STEP (the step's index among the counted ones) and
    BAD_LOSS; its correct count is not."""
    if stats[BAD] != np.float32(0.0):
        return
    term = loss * n - stats[LOSS_COMP]              # Kahan summation of loss * n
    total = stats[LOSS_SUM] + term
    stats[LOSS_COMP] = (total - stats[LOSS_SUM]) - term
    stats[LOSS_SUM] = total
    stats[SEEN] += n
    if math.isfinite(loss):
        stats[CORRECT] += correct
    else:
        stats[BAD] = np.float32(1.0)
        stats[BAD_STEP] = stats[STEPS]
        stats[BAD_LOSS] = loss
    stats[STEPS] += np.float32(1.0)


@cuda.jit
def binary_step_stats(y, z, result, stats):
    """After bce_fwd_bwd: result[0] is the step's mean loss; counts the rows where
    (z > 0) == (y > 0.5) (Keras binary accuracy of sigmoid(z) at 0.5) and folds both into
    stats (_add_step). y, z (N,) float32; stats float32 (STATS,), accumulated. One block."""
    sh = cuda.shared.array(REDUCE_MAX, float32)
    t = cuda.threadIdx.x
    n = z.size
    hits = np.float32(0.0)
    for i in range(t, n, cuda.blockDim.x):
        if (z[i] > np.float32(0.0)) == (y[i] > np.float32(0.5)):
            hits += np.float32(1.0)
    total = block_sum(sh, hits)             # exact: counts < 2^24
    if t == 0:
        _add_step(stats, result[0], total, np.float32(n))


@cuda.jit
def sparse_step_stats(labels, z, result, stats):
    """After softmax_ce_fwd_bwd: counts the rows of z (N, K) whose first maximum is at
    labels[r] (np.argmax's tie rule) and folds them and result[0] into stats
    (_add_step). labels (N,) int; stats float32 (STATS,), accumulated. One block."""
    sh = cuda.shared.array(REDUCE_MAX, float32)
    t = cuda.threadIdx.x
    n = z.shape[0]
    k = z.shape[1]
    hits = np.float32(0.0)
    for r in range(t, n, cuda.blockDim.x):
        best = 0
        m = z[r, 0]
        for j in range(1, k):
            if z[r, j] > m:
                m = z[r, j]
                best = j
        if best == labels[r]:
            hits += np.float32(1.0)
    total = block_sum(sh, hits)
    if t == 0:
        _add_step(stats, result[0], total, np.float32(n))


@cuda.jit
def stats_add_penalty(stats, acc, n):
    """After the step's loss_and_stats and the regularize ops: add the weights' penalty
    acc[0] (regularize's accumulator) to the step's loss, acc[0] * n into the compensated
    LOSS_SUM, unless a non-finite step has ended the epoch (stats[BAD]). One thread."""
    if cuda.threadIdx.x != 0 or stats[BAD] != np.float32(0.0):
        return
    term = acc[0] * n - stats[LOSS_COMP]
    total = stats[LOSS_SUM] + term
    stats[LOSS_COMP] = (total - stats[LOSS_SUM]) - term
    stats[LOSS_SUM] = total


@cuda.jit
def stats_reset(stats):
    """stats[:] = 0 (the start of an epoch). One block."""
    for i in range(cuda.threadIdx.x, stats.size, cuda.blockDim.x):
        stats[i] = np.float32(0.0)


KERNELS = [
    KernelSpec("bce_fwd_bwd", bce_fwd_bwd, (_F1, _F1, _F1, int32, float32, _F1, _F1),
               _launch.REDUCE),
    KernelSpec("softmax_ce_fwd_bwd", softmax_ce_fwd_bwd,
               (int32[::1], float32[:, ::1], _F1, int32, float32, float32[:, ::1], _F1),
               _launch.REDUCE),
    # device labels made from NumPy's default integers (to_device of an int64 array)
    KernelSpec("softmax_ce_fwd_bwd[int64 labels]", softmax_ce_fwd_bwd,
               (int64[::1], float32[:, ::1], _F1, int32, float32, float32[:, ::1], _F1),
               _launch.REDUCE),
    KernelSpec("binary_step_stats", binary_step_stats, (_F1, _F1, _F1, _F1), _launch.REDUCE),
    KernelSpec("sparse_step_stats", sparse_step_stats,
               (int32[::1], float32[:, ::1], _F1, _F1), _launch.REDUCE),
    KernelSpec("stats_add_penalty", stats_add_penalty, (_F1, _F1, float32), 32),
    KernelSpec("stats_reset", stats_reset, (_F1,), 32),
]


def _make_scratch():
    return cuda.device_array(2, np.float32), np.empty(2, np.float32)


def _weights_in(op, sample_weight, n):
    """(w, use_w) for the loss kernels: sample_weight as a float32 (N,) device array (a
    host one checked like the reference's and copied in; a device one must be float32,
    (N,) or (N, 1), its values the caller's), or with None this thread's 1-value
    placeholder (cached, never read) and use_w 0."""
    if sample_weight is None:
        return cached("loss_no_weights", cuda.device_array, (1,), np.float32), np.int32(0)
    w = _validate.check_sample_weight(op, checkable(sample_weight), n,
                                      values=not is_device_array(sample_weight))
    if is_device_array(sample_weight):
        return flat(device_in(op, "sample_weight", sample_weight)), np.int32(1)
    return device_in(op, "sample_weight", w), np.int32(1)


def _scratch():
    """(device (2,), host (2,)) float32 buffers for [loss, bad labels]: allocated once per
    thread and CUDA context (_mem.cached), so a step allocates nothing and threads
    never read each other's loss."""
    return cached("loss_scratch", _make_scratch)


def _reduce_threads():
    threads = _launch.REDUCE
    if threads > REDUCE_MAX or threads & (threads - 1):
        raise ValueError(f"_launch.REDUCE must be a power of two <= {REDUCE_MAX}, got {threads}")
    return threads


def binary_crossentropy(y_true, logits, out=None, sample_weight=None, label_smoothing=0.0):
    """Mean binary cross-entropy of sigmoid(logits) against y_true in [0, 1].

    logits (N,) or (N, 1) float32; y_true N values (a device array must be float32; a
    host one of any numeric dtype is copied in); sample_weight None or N weights (the
    reference's meaning: loss = sum(w * l) / N); label_smoothing in [0, 1] (the
    reference's). Returns (loss: float, dlogits of
    logits' shape), dlogits written into out[1] when out=(None, dlogits) is given.
    """
    op = "binary_crossentropy"
    _validate.check_binary_labels(op, checkable(y_true), checkable(logits))
    check_float32(op, "logits", logits)
    _, out_d = _validate.out_tuple(op, out, 2)  # out[0] would be the loss: a float, not a buffer
    ls = np.float32(_validate.check_label_smoothing(op, label_smoothing))
    _validate.check_sample_weight(op, checkable(sample_weight), logits.shape[0],
                                  values=not is_device_array(sample_weight))
    dz, host = out_buffer(op, "out[1]", out_d, logits.shape)
    w, use_w = _weights_in(op, sample_weight, logits.shape[0])
    y = device_in(op, "y_true", y_true)
    z = device_in(op, "logits", logits)
    result, result_host = _scratch()
    bce_fwd_bwd[1, _reduce_threads()](flat(y), flat(z), w, use_w, ls, flat(dz), result)
    result.copy_to_host(result_host)
    return float(result_host[0]), finish(dz, host)


def softmax_crossentropy(y_true_int, logits, out=None, sample_weight=None,
                         label_smoothing=0.0):
    """Mean cross-entropy of softmax(logits) (N, K) against class indices (N,), each
    row weighted by sample_weight when given (as binary_crossentropy's), the targets
    smoothed by label_smoothing (the reference's formula).

    A device y_true_int must be int32 or int64, (N,) or (N, 1); a host one is checked like the
    reference's (integers, in range) and copied in. Returns (loss: float, dlogits
    (N, K)), dlogits written into out[1] when given. Out-of-range device labels raise
    ValueError after the launch (the count comes back with the loss).
    """
    op = "softmax_crossentropy"
    y_checked = _validate.check_int_labels(op, checkable(y_true_int), checkable(logits))
    check_float32(op, "logits", logits)
    _, out_d = _validate.out_tuple(op, out, 2)
    if is_device_array(y_true_int) and y_true_int.dtype.kind != "i":
        # the reference's message: it would find non-integers among float labels
        raise TypeError(f"{op}: y_true must hold integer class indices, got dtype "
                        f"{y_true_int.dtype}")
    ls = np.float32(_validate.check_label_smoothing(op, label_smoothing))
    _validate.check_sample_weight(op, checkable(sample_weight), logits.shape[0],
                                  values=not is_device_array(sample_weight))
    dz, host = out_buffer(op, "out[1]", out_d, logits.shape)
    w, use_w = _weights_in(op, sample_weight, logits.shape[0])
    if is_device_array(y_true_int):
        labels = device_in(op, "y_true", y_true_int,
                           np.int64 if y_true_int.dtype == np.int64 else np.int32)
    else:
        labels = device_in(op, "y_true", y_checked, np.int32)
    z = device_in(op, "logits", logits)
    result, result_host = _scratch()
    softmax_ce_fwd_bwd[1, _reduce_threads()](flat(labels), z, w, use_w, ls, dz, result)
    result.copy_to_host(result_host)
    if result_host[1]:
        raise ValueError(f"{op}: class index out of range [0, {z.shape[1]}): "
                         f"{int(result_host[1])} of {z.shape[0]} labels")
    return float(result_host[0]), finish(dz, host)


# -- the model layer's device-side step (no host read per step) ---------------------------

def step_stats_buffer():
    """This thread's float32 (STATS,) device accumulator of fit's step statistics, in the
    current CUDA context (allocated once, _mem.cached). Every plan of the thread shares it:
    an epoch's batches of different sizes add to one sum."""
    return cached("step_stats", cuda.device_array, (STATS,), np.float32)


def reset_stats(stats):
    """Zero the accumulator on the device (no copy)."""
    stats_reset[1, 32](stats)


def loss_and_stats(kind, labels, logits, dlogits, stats, weights=None, label_smoothing=0.0):
    """Launch the loss (writing dlogits (N, K) and the step's mean loss into this
    thread's scratch) and fold the loss and the correct count into `stats`, all on the
    device: nothing is copied. kind: 'binary' (labels float32 (N, 1) like logits) or
    'sparse' (int32 (N,) class indices, already checked in range by the model layer);
    weights: None or the batch's float32 (N,) device sample weights (uploaded with the
    batch; the loss is then sum(w * l) / N, the accuracy stays unweighted as Keras's
    compiled `metrics`); label_smoothing the loss's (a float in [0, 1]). The model
    layer has checked the shapes and dtypes once, when
    it planned."""
    result, _ = _scratch()
    threads = _reduce_threads()
    if weights is None:
        w, use_w = _weights_in("loss_and_stats", None, 0)
    else:
        w, use_w = flat(weights), np.int32(1)
    ls = np.float32(label_smoothing)
    if kind == "binary":
        y, z = flat(labels), flat(logits)
        bce_fwd_bwd[1, threads](y, z, w, use_w, ls, flat(dlogits), result)
        binary_step_stats[1, threads](y, z, result, stats)
    else:
        softmax_ce_fwd_bwd[1, threads](labels, logits, w, use_w, ls, dlogits, result)
        sparse_step_stats[1, threads](labels, logits, result, stats)


def add_penalty(stats, acc, n):
    """Add the regularizers' penalty (the (1,) device accumulator regularize filled) to
    the step's loss in `stats`, n the step's batch size; nothing is copied."""
    stats_add_penalty[1, 32](stats, acc, np.float32(n))


def read_stats(stats, host):
    """Copy the accumulator into the host float32 (STATS,) array `host` (the one
    device->host copy of an epoch, or of a progress refresh); returns host."""
    stats.copy_to_host(host)
    return host

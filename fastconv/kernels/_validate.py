"""Argument checks and geometry shared by every backend.

Every public kernel of every backend calls these first, so a bad shape or
dtype gives the same message whichever backend the user picked. Messages name
the op, the argument, the expected and the actual value.

Geometry follows Keras (channels-last):
  valid: out = floor((in - k) / s) + 1, no padding; k > in is an error.
  same:  out = ceil(in / s); pad_total = max((out - 1) * s + k - in, 0),
         pad_before = pad_total // 2, the extra row/column at the bottom/right.
"""
from __future__ import annotations

import contextlib
import threading

import math

import numpy as np

from .._args import is_int

_state = threading.local()


@contextlib.contextmanager
def float64_allowed():
    """Let float32-only checks accept float64 inside this block.

    Only the reference engine honours it (it computes in float64 anyway and
    returns the input's dtype), so finite-difference tests can call the public
    reference ops in full float64 precision.
    """
    previous = getattr(_state, "allow64", False)
    _state.allow64 = True
    try:
        yield
    finally:
        _state.allow64 = previous


def float_dtypes():
    if getattr(_state, "allow64", False):
        return (np.float32, np.float64)
    return (np.float32,)


def check_float_array(op, name, a, ndim=None):
    """Raise TypeError/ValueError unless `a` is a float32 ndarray of rank `ndim`."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in float_dtypes():
        raise TypeError(f"{op}: {name} must be float32, got {a.dtype}")
    if ndim is not None:
        ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in ranks:
            want = " or ".join(str(r) for r in ranks)
            raise ValueError(
                f"{op}: {name} must have rank {want}, got rank {a.ndim} (shape {a.shape})")
    return a


def check_same_shape(op, name_a, a, name_b, b):
    if a.shape != b.shape:
        raise ValueError(
            f"{op}: {name_b} must have the shape of {name_a} {a.shape}, got {b.shape}")


def check_positive_float(op, name, value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{op}: {name} must be a finite number >= 0, got {value!r}")
    return v


def as_pair(op, name, value):
    """An int or a pair of ints >= 1, as a tuple (vertical, horizontal)."""
    if is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"{op}: {name} must be >= 1, got {value!r}")
    return pair


def check_padding(op, padding):
    if padding not in ("valid", "same"):
        raise ValueError(f"{op}: padding must be 'valid' or 'same', got {padding!r}")
    return padding


def window_geometry(op, in_hw, k_hw, stride, padding, what="kernel"):
    """Output size and padding of a sliding window over (H, W).

    Returns (OH, OW, pad_top, pad_left). Bottom/right padding is implied:
    windows that run past the input read padding.
    """
    padding = check_padding(op, padding)
    out, pads = [], []
    for dim, n, k, s in zip(("height", "width"), in_hw, k_hw, stride):
        if padding == "valid":
            if k > n:
                raise ValueError(
                    f"{op}: {what} {dim} {k} is larger than the input {dim} {n} "
                    f"with padding='valid'")
            out.append((n - k) // s + 1)
            pads.append(0)
        else:
            o = -(-n // s)
            out.append(o)
            pads.append(max((o - 1) * s + k - n, 0) // 2)
    return out[0], out[1], pads[0], pads[1]


CONV2D_LAYOUT = "(KH, KW, C_in, C_out)"
DEPTHWISE_LAYOUT = "(KH, KW, C, depth_multiplier)"   # Keras DepthwiseConv2D's kernel


def conv2d_geometry(op, x, w, stride, padding, layout=CONV2D_LAYOUT):
    """Validate conv2d operands. Returns (stride pair, OH, OW, pad_top, pad_left).

    `layout` names w's axes in the C_in mismatch message: DEPTHWISE_LAYOUT for the
    depthwise ops, whose w (KH, KW, C, M) checks the same (w.shape[2] is x's C)."""
    check_float_array(op, "x", x, 4)
    check_float_array(op, "w", w, 4)
    if w.dtype != x.dtype:
        raise TypeError(f"{op}: w must have x's dtype {x.dtype}, got {w.dtype}")
    if w.shape[2] != x.shape[3]:
        raise ValueError(
            f"{op}: w expects C_in={w.shape[2]} input channels but x has {x.shape[3]} "
            f"(x shape {x.shape}, w shape {w.shape} as {layout})")
    if min(x.shape) == 0 or min(w.shape) == 0:
        raise ValueError(f"{op}: empty operand (x shape {x.shape}, w shape {w.shape})")
    stride = as_pair(op, "stride", stride)
    oh, ow, pt, pl = window_geometry(op, x.shape[1:3], w.shape[0:2], stride, padding)
    return stride, oh, ow, pt, pl


def pool2d_geometry(op, x, pool, stride, padding):
    """Validate pooling operands. Returns (pool pair, stride pair, OH, OW, pad_top, pad_left)."""
    check_float_array(op, "x", x, 4)
    if min(x.shape) == 0:
        raise ValueError(f"{op}: empty input x of shape {x.shape}")
    pool = as_pair(op, "pool", pool)
    stride = pool if stride is None else as_pair(op, "stride", stride)
    oh, ow, pt, pl = window_geometry(op, x.shape[1:3], pool, stride, padding, what="pool")
    return pool, stride, oh, ow, pt, pl


def avgpool2d_grad_geometry(op, dy, x_shape, pool, stride, padding):
    """avgpool2d_backward's checks, after dy's own (a float array of rank 4): x_shape is
    (N, H, W, C) with no zero, and dy has the pooled shape (N, OH, OW, C) of x_shape under
    pool, stride, padding (maxpool2d's geometry). Returns (x_shape, pool pair, stride pair,
    OH, OW, pad_top, pad_left)."""
    try:
        x_shape = tuple(int(s) for s in x_shape)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: x_shape must be a tuple of 4 ints (N, H, W, C), got "
                        f"{x_shape!r}") from None
    if len(x_shape) != 4 or min(x_shape) < 1:
        raise ValueError(f"{op}: x_shape must be (N, H, W, C) with every size >= 1, got "
                         f"{x_shape}")
    pool = as_pair(op, "pool", pool)
    stride = pool if stride is None else as_pair(op, "stride", stride)
    oh, ow, pt, pl = window_geometry(op, x_shape[1:3], pool, stride, padding, what="pool")
    want = (x_shape[0], oh, ow, x_shape[3])
    if tuple(dy.shape) != want:
        raise ValueError(f"{op}: dy must have shape {want} (x_shape {x_shape} pooled by "
                         f"{pool}, stride {stride}, {padding!r}), got {tuple(dy.shape)}")
    return x_shape, pool, stride, oh, ow, pt, pl


def check_bias(op, b, n_out, dtype):
    check_float_array(op, "b", b, 1)
    if b.dtype != dtype:
        raise TypeError(f"{op}: b must have dtype {dtype}, got {b.dtype}")
    if b.shape[0] != n_out:
        raise ValueError(f"{op}: b must have shape ({n_out},), got {b.shape}")


def check_dy(op, dy, expected_shape, dtype):
    check_float_array(op, "dy", dy)
    if dy.dtype != dtype:
        raise TypeError(f"{op}: dy must have dtype {dtype}, got {dy.dtype}")
    if dy.shape != tuple(expected_shape):
        raise ValueError(f"{op}: dy must have shape {tuple(expected_shape)}, got {dy.shape}")


def dense_check(op, x, w):
    check_float_array(op, "x", x, 2)
    check_float_array(op, "w", w, 2)
    if w.dtype != x.dtype:
        raise TypeError(f"{op}: w must have x's dtype {x.dtype}, got {w.dtype}")
    if w.shape[0] != x.shape[1]:
        raise ValueError(
            f"{op}: w expects {w.shape[0]} input features but x has {x.shape[1]} "
            f"(x shape {x.shape}, w shape {w.shape} as (in, out))")


def check_rate(op, rate):
    r = check_positive_float(op, "rate", rate)
    if r >= 1.0:
        raise ValueError(f"{op}: rate must be in [0, 1), got {rate!r}")
    return r


def check_binary_labels(op, y_true, logits):
    check_float_array(op, "logits", logits, (1, 2))
    if logits.ndim == 2 and logits.shape[1] != 1:
        raise ValueError(f"{op}: logits must have shape (N,) or (N, 1), got {logits.shape}")
    y = np.asarray(y_true)
    if y.size != logits.shape[0] or y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
        raise ValueError(
            f"{op}: y_true must have shape ({logits.shape[0]},) or ({logits.shape[0]}, 1) "
            f"to match logits {logits.shape}, got {y.shape}")
    if not np.issubdtype(y.dtype, np.number) and y.dtype != np.bool_:
        raise TypeError(f"{op}: y_true must be numeric, got {y.dtype}")
    return y.reshape(logits.shape)


def check_label_smoothing(op, label_smoothing):
    """The loss ops' label_smoothing: a number in [0, 1] (Keras's range), as a float."""
    try:
        ls = float(label_smoothing)
    except (TypeError, ValueError):
        ls = float("nan")
    if isinstance(label_smoothing, bool) or not 0.0 <= ls <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be a number in [0, 1], got "
                         f"{label_smoothing!r}")
    return ls


def check_sample_weight(op, sample_weight, n, values=True):
    """The loss ops' optional per-sample weights: None, or N numbers, (N,) or (N, 1).
    values: also require them finite and >= 0 (a host array; a device array's values
    are the caller's). Returns None or the weights as an (N,) array."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.ndim > 2 or w.size != n or (w.ndim == 2 and w.shape[1] != 1) or w.ndim == 0:
        raise ValueError(f"{op}: sample_weight must have shape ({n},) or ({n}, 1), one "
                         f"weight per sample, got {w.shape}")
    if not np.issubdtype(w.dtype, np.number) and w.dtype != np.bool_:
        raise TypeError(f"{op}: sample_weight must be numeric, got {w.dtype}")
    w = w.reshape(n)
    if values and n and (not np.all(np.isfinite(w)) or w.min() < 0):
        raise ValueError(f"{op}: sample_weight must be finite and >= 0, got min {w.min()}, "
                         f"max {w.max()}")
    return w


def check_int_labels(op, y_true, logits):
    check_float_array(op, "logits", logits, 2)
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (logits.shape[0],):
        raise ValueError(
            f"{op}: y_true must have shape ({logits.shape[0]},) of class indices, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise TypeError(f"{op}: y_true must hold integer class indices, got dtype {y.dtype}")
    k = logits.shape[1]
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"{op}: class index out of range [0, {k}): min {y.min()}, max {y.max()}")
    return y


def check_pool_grad(op, dy, argmax, x_shape, is_array=None):
    """maxpool2d_backward's shape checks, after dy's own: x_shape is (N, H, W, C),
    argmax an int32 array of dy's shape (an ndarray, or whatever `is_array` accepts:
    cuda's device arrays), and dy matches x_shape in N and C. Returns x_shape as a
    tuple of ints. The range of argmax is each backend's to check."""
    x_shape = tuple(int(s) for s in x_shape)
    if len(x_shape) != 4:
        raise ValueError(f"{op}: x_shape must be (N, H, W, C), got {x_shape}")
    if not (isinstance(argmax, np.ndarray) or (is_array is not None and is_array(argmax))) \
            or argmax.dtype != np.int32:
        raise TypeError(f"{op}: argmax must be an int32 ndarray, got "
                        f"{getattr(argmax, 'dtype', type(argmax).__name__)}")
    check_same_shape(op, "dy", dy, "argmax", argmax)
    n, h, w, c = x_shape
    if dy.shape[0] != n or dy.shape[3] != c:
        raise ValueError(f"{op}: dy {tuple(dy.shape)} does not match x_shape {x_shape} in "
                         f"N or C")
    return x_shape


def check_argmax_range(op, argmax, n_pixels):
    """ValueError unless every index of the host array `argmax` is in [0, n_pixels)."""
    if argmax.size and (argmax.min() < 0 or argmax.max() >= n_pixels):
        raise ValueError(f"{op}: argmax holds indices outside [0, {n_pixels})")


# The fused ops' argument checks. A fused op is defined as a composition of the
# unfused ops (kernels/reference/fused.py), so a bad argument raises what that
# composition raises: the same type and text, naming the unfused op that
# checks it (e.g. conv2d_relu_maxpool_forward's bad pool is maxpool2d_forward's
# error), and the fused op's own name only for its out= buffers. Every backend's
# fused ops call these, in the reference's order, so no message depends on the
# backend. Arrays may be any the checks accept (cuda passes _mem.checkable ones).

def fused_relu_grad(dy, y):
    """relu_backward's checks of (dy, y), which every fused backward runs first."""
    op = "relu_backward"
    check_float_array(op, "dy", dy)
    check_float_array(op, "y", y)
    check_same_shape(op, "dy", dy, "y", y)


def fused_pool_geometry(oh, ow, pool, pool_stride, pool_padding):
    """maxpool2d_forward's checks on the (OH, OW) conv output grid of a fused forward:
    (pool pair, stride pair, PH, PW, pad_top, pad_left)."""
    op = "maxpool2d_forward"
    pool = as_pair(op, "pool", pool)
    stride = pool if pool_stride is None else as_pair(op, "stride", pool_stride)
    ph, pw, pt, pl = window_geometry(op, (oh, ow), pool, stride, pool_padding, what="pool")
    return pool, stride, ph, pw, pt, pl


def fused_pool_grad(dy, argmax, grid_shape, is_array=None):
    """maxpool2d_backward's shape checks of a fused pooled backward: dy (N, PH, PW, F),
    argmax int32 of dy's shape, grid_shape the conv output (N, OH, OW, F). Returns
    grid_shape as ints. The range of argmax is each backend's to check
    (check_argmax_range where it is on the host)."""
    op = "maxpool2d_backward"
    check_float_array(op, "dy", dy, 4)
    return check_pool_grad(op, dy, argmax, grid_shape, is_array)


def check_update(op, p, g, *state):
    check_float_array(op, "p", p)
    for name, a in (("g", g),) + tuple(state):
        check_float_array(op, name, a)
        if a.dtype != p.dtype:
            raise TypeError(f"{op}: {name} must have p's dtype {p.dtype}, got {a.dtype}")
        check_same_shape(op, "p", p, name, a)


# The optimizer updates' argument checks, shared by every backend. `check` checks
# the arrays (p, g, then (name, state array) pairs); a backend passes its own when
# its arrays need adapting first (cuda: device arrays).

def sgd_args(op, p, g, v_, lr, momentum, check=check_update):
    """(lr, momentum) of sgd_update, checked; v_ may be None only without momentum."""
    lr = check_positive_float(op, "lr", lr)
    momentum = check_positive_float(op, "momentum", momentum)
    if momentum > 0 or v_ is not None:
        if v_ is None:
            raise ValueError(f"{op}: momentum={momentum} needs a velocity array v, got None")
        check(op, p, g, ("v", v_))
    else:
        check(op, p, g)
    return lr, momentum


def rmsprop_args(op, p, g, ms, lr, rho, eps, check=check_update):
    """(lr, rho, eps) of rmsprop_update, checked."""
    lr = check_positive_float(op, "lr", lr)
    rho = check_positive_float(op, "rho", rho)
    eps = check_positive_float(op, "eps", eps)
    check(op, p, g, ("ms", ms))
    return lr, rho, eps


def adam_args(op, p, g, m, v_, t, lr, check=check_update):
    """lr of adam_update, checked; t is the step number, an int >= 1."""
    lr = check_positive_float(op, "lr", lr)
    if not is_int(t) or t < 1:
        raise ValueError(f"{op}: t must be an int >= 1 (the step number), got {t!r}")
    check(op, p, g, ("m", m), ("v", v_))
    return lr


def check_accumulator(op, name, acc, dtype):
    """acc: a float array of shape (1,) and the data's dtype (one number kept on the
    backend's device, so a sum can be used by a later op without a host read)."""
    check_float_array(op, name, acc)
    if tuple(acc.shape) != (1,):
        raise ValueError(f"{op}: {name} must have shape (1,), got {tuple(acc.shape)}")
    if acc.dtype != dtype:
        raise TypeError(f"{op}: {name} must have {dtype}, the data's dtype, got {acc.dtype}")


def sum_squares_args(op, x, acc, accumulate):
    """Checks of sum_squares (host arrays, or cuda's checkable stand-ins)."""
    check_float_array(op, "x", x)
    check_accumulator(op, "acc", acc, x.dtype)
    if not isinstance(accumulate, (bool, np.bool_)):
        raise TypeError(f"{op}: accumulate must be True or False, got {accumulate!r}")
    return bool(accumulate)


def regularize_args(op, w, g, l1, l2, acc, accumulate):
    """Checks of regularize: w a float array, g None or w's shape and dtype, l1 and l2
    finite numbers >= 0, acc a (1,) accumulator of w's dtype. Returns (l1, l2, accumulate)."""
    check_float_array(op, "w", w)
    if g is not None:
        check_float_array(op, "g", g)
        if g.dtype != w.dtype:
            raise TypeError(f"{op}: g must have w's dtype {w.dtype}, got {g.dtype}")
        check_same_shape(op, "w", w, "g", g)
    factors = []
    for name, v in (("l1", l1), ("l2", l2)):
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = float("nan")
        if isinstance(v, bool) or not (f >= 0 and math.isfinite(f)):
            raise ValueError(f"{op}: {name} must be a finite number >= 0, got {v!r}")
        factors.append(f)
    check_accumulator(op, "acc", acc, w.dtype)
    if not isinstance(accumulate, (bool, np.bool_)):
        raise TypeError(f"{op}: accumulate must be True or False, got {accumulate!r}")
    return factors[0], factors[1], bool(accumulate)


def clip_by_norm_args(op, g, sumsq, clipnorm):
    """clipnorm of clip_by_norm, checked (> 0: 0 would zero every gradient)."""
    check_float_array(op, "g", g)
    check_accumulator(op, "sumsq", sumsq, g.dtype)
    clipnorm = check_positive_float(op, "clipnorm", clipnorm)
    if clipnorm == 0:
        raise ValueError(f"{op}: clipnorm must be > 0, got {clipnorm!r}")
    return clipnorm


def clip_by_value_args(op, g, clipvalue):
    """clipvalue of clip_by_value, checked (> 0)."""
    check_float_array(op, "g", g)
    clipvalue = check_positive_float(op, "clipvalue", clipvalue)
    if clipvalue == 0:
        raise ValueError(f"{op}: clipvalue must be > 0, got {clipvalue!r}")
    return clipvalue


# The out= convention, shared by every backend: out is None (return new arrays),
# an array (single result), or a tuple shaped like the result with an array for
# each array output and None elsewhere (e.g. dx when need_dx=False, or a loss's
# scalar). Shapes and dtypes must match exactly. The reference computes, then
# deliver()s; the fast backends check each buffer first (check_out) and write
# into it. Only what is genuinely the backend's stays there (device buffers,
# staging copies: cpu/_common.Target, cuda/_mem.out_buffers).

def out_tuple(op, out, n):
    """The out= tuple of an op with `n` results: out itself, or n Nones for out=None.
    (No new list or tuple per call: under tracemalloc, objects parked in CPython's
    freelists count as allocated, and the model layer's no-allocation test measures
    exactly that.)"""
    if out is None:
        return _NONES[n] if n in _NONES else (None,) * n
    if not isinstance(out, tuple) or len(out) != n:
        raise TypeError(f"{op}: out must be a tuple of {n} (arrays or None), got "
                        f"{type(out).__name__}")
    return out


_NONES = {n: (None,) * n for n in range(1, 5)}


def check_out(op, name, buf, shape, dtype, is_device_array=None):
    """Raise unless the out= buffer `buf` is exactly `dtype` of `shape`: a numpy.ndarray,
    or (where the backend passes its `is_device_array` test: cuda) a device array."""
    shape = tuple(shape)
    dtype = np.dtype(dtype)
    if not (isinstance(buf, np.ndarray)
            or (is_device_array is not None and is_device_array(buf))):
        kinds = "a numpy.ndarray" if is_device_array is None else \
            "a numpy.ndarray or a device array"
        raise TypeError(f"{op}: {name} must be {kinds}, got {type(buf).__name__}")
    if tuple(buf.shape) != shape or buf.dtype != dtype:
        raise ValueError(f"{op}: {name} must be {dtype} of shape {shape}, got "
                         f"{buf.dtype} of shape {tuple(buf.shape)}")


def deliver(op, result, out):
    """Write `result` into the caller's `out` buffers and return them (the out=
    convention above; the reference's ops compute first, then deliver)."""
    if out is None:
        return result
    if not isinstance(result, tuple):
        _copy_into(op, "out", result, out)
        return out
    out = out_tuple(op, out, len(result))
    delivered = []
    for k, (r, o) in enumerate(zip(result, out)):
        if isinstance(r, np.ndarray) and o is not None:
            _copy_into(op, f"out[{k}]", r, o)
            delivered.append(o)
        else:
            delivered.append(r)
    return tuple(delivered)


def _copy_into(op, name, result, buf):
    check_out(op, name, buf, result.shape, result.dtype)
    buf[...] = result


def check_merge_inputs(op, xs, same="shape"):
    """Validate the inputs of a merge op (add_forward, concat_forward): a list or
    tuple of >= 2 float32 arrays of one dtype. same='shape': all of xs[0]'s shape
    (add); same='leading': rank 2 (N, C) or 4 (NHWC), all axes but the last
    (channel) one equal (concat). Returns xs as a tuple."""
    if not isinstance(xs, (list, tuple)):
        raise TypeError(f"{op}: xs must be a list or tuple of arrays, got {type(xs).__name__}")
    if len(xs) < 2:
        raise ValueError(f"{op}: xs must hold at least 2 arrays, got {len(xs)}")
    ndim = (2, 4) if same == "leading" else None
    for k, x in enumerate(xs):
        check_float_array(op, f"xs[{k}]", x, ndim)
        if x.dtype != xs[0].dtype:
            raise TypeError(f"{op}: xs[{k}] must have xs[0]'s dtype {xs[0].dtype}, got {x.dtype}")
        if same == "shape" and x.shape != xs[0].shape:
            raise ValueError(
                f"{op}: xs[{k}] must have the shape of xs[0] {xs[0].shape}, got {x.shape}")
        if same == "leading" and x.shape[:-1] != xs[0].shape[:-1]:
            raise ValueError(
                f"{op}: xs[{k}] {x.shape} must match xs[0] {xs[0].shape} in every axis but "
                f"the last (channels)")
    return tuple(xs)


def check_concat_split(op, dy, channels):
    """Validate concat_backward's operands: dy (N, C) or NHWC float32, channels a
    list or tuple of >= 2 ints >= 1 summing to dy's last axis. Returns channels
    as a tuple of ints."""
    check_float_array(op, "dy", dy, (2, 4))
    if (not isinstance(channels, (list, tuple)) or not all(is_int(c) for c in channels)):
        raise TypeError(f"{op}: channels must be a list or tuple of ints, got {channels!r}")
    channels = tuple(int(c) for c in channels)
    if len(channels) < 2:
        raise ValueError(f"{op}: channels must hold at least 2 counts, got {len(channels)}")
    if min(channels) < 1:
        raise ValueError(f"{op}: channels must be >= 1 each, got {channels}")
    if sum(channels) != dy.shape[-1]:
        raise ValueError(
            f"{op}: channels {channels} sum to {sum(channels)} but dy {dy.shape} has "
            f"{dy.shape[-1]} channels")
    return channels


def check_accumulate(op, dst, src):
    """accumulate_grad's arguments: two float arrays of one dtype and one shape."""
    check_float_array(op, "dst", dst)
    check_float_array(op, "src", src)
    if src.dtype != dst.dtype:
        raise TypeError(f"{op}: src must have dst's dtype {dst.dtype}, got {src.dtype}")
    check_same_shape(op, "dst", dst, "src", src)

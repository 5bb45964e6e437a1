"""The op table (PyTorch's OpInfo, in small): per op of the kernel contract, its
sample inputs, its gradient samples and its error inputs. OPS[name] is an op's entry.

- `samples(shapes, seed)` yields Sample(op, args, kwargs, label) for every op.
  tests/test_opinfo.py runs each sample on every available backend against the
  reference, and checks out= buffers with them, so a new backend or op gets
  every case from its table entry; `fastconv check` draws from the same table.
- `gradient_samples()`: the float64 finite-difference cases of the reference's
  backward ops and losses (fastconv.testing.gradcheck runs them; `fastconv selftest`).
- `error_inputs()`: inputs that must raise, with the reference's exception type
  and message, which every backend must raise word for word.

Shapes: 'quick' are small and odd on purpose (batch 1, odd sizes, channel
counts that are multiples of nothing, stride 2, 'same', remainder rows).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from . import CONTRACT, FUSED, OPTIONAL

F32 = np.float32
F64 = np.float64


class Sample(NamedTuple):
    op: str
    args: tuple
    kwargs: dict
    label: str


def _conv_configs(shapes):
    if shapes == "seed":  # the seed model's layers, batch 8
        return [((8, 150, 150, 3), (3, 3), 32, 1, "valid"),
                ((8, 49, 49, 32), (3, 3), 32, 1, "valid"),
                ((8, 23, 23, 32), (3, 3), 64, 1, "valid")]
    return [((1, 13, 11, 1), (3, 3), 7, 1, "valid"),
            ((5, 13, 11, 3), (3, 3), 32, 1, "valid"),
            ((2, 9, 10, 5), (3, 3), 1, 2, "same"),
            ((2, 8, 7, 3), (2, 3), 7, (2, 1), "valid"),
            ((1, 6, 9, 5), (5, 5), 7, 1, "same"),
            ((3, 7, 7, 3), (1, 1), 7, 1, "valid")]


def _pool_configs(shapes):
    if shapes == "seed":
        return [((8, 148, 148, 32), 3, None, "valid"),
                ((8, 47, 47, 32), 2, None, "valid"),
                ((8, 21, 21, 64), 2, None, "valid")]
    return [((1, 13, 11, 7), 2, None, "valid"),    # remainder row and column
            ((5, 12, 9, 3), 3, None, "valid"),
            ((2, 9, 9, 5), 3, 2, "valid"),         # overlapping windows
            ((2, 7, 10, 3), 2, None, "same"),
            ((1, 4, 4, 1), (2, 3), (1, 2), "same")]


def _dense_configs(shapes):
    if shapes == "seed":
        return [(8, 6400, 64), (8, 64, 1)]
    return [(1, 7, 3), (5, 13, 7), (4, 100, 1)]


def _f32(a):
    return np.ascontiguousarray(a, dtype=F32)


def samples(shapes="quick", seed=0):
    """Yield a Sample for every op of the contract; fresh random inputs from `seed`."""
    from . import reference as R

    rng = np.random.default_rng(seed)
    for shape, k, f, stride, padding in _conv_configs(shapes):
        x = _f32(rng.standard_normal(shape))
        w = _f32(rng.standard_normal(k + (shape[3], f)) * 0.3)
        b = _f32(rng.standard_normal(f))
        label = f"x{shape} w{w.shape} s{stride} {padding}"
        yield Sample("conv2d_forward", (x, w, b), dict(stride=stride, padding=padding), label)
        y = R.conv2d_forward(x, w, b, stride, padding)
        dy = _f32(rng.standard_normal(y.shape))
        for need_dx in (True, False):
            yield Sample("conv2d_backward", (x, w, dy),
                         dict(stride=stride, padding=padding, need_dx=need_dx),
                         f"{label} need_dx={need_dx}")
    for (shape, k, f, stride, padding), (pool, pool_stride) in zip(
            _conv_configs(shapes), [(3, None), (2, None), (2, 1), (3, 2), (2, None), (2, 2)]):
        x = _f32(rng.standard_normal(shape))
        w = _f32(rng.standard_normal(k + (shape[3], f)) * 0.3)
        b = _f32(rng.standard_normal(f) * 0.1)
        label = f"x{shape} w{w.shape} s{stride} {padding}"
        yield Sample("conv2d_relu_forward", (x, w, b), dict(stride=stride, padding=padding), label)
        y = R.conv2d_relu_forward(x, w, b, stride, padding)
        dy = _f32(rng.standard_normal(y.shape))
        yield Sample("conv2d_relu_backward", (x, w, dy, y),
                     dict(stride=stride, padding=padding, need_dx=True), label)
        pool_kw = dict(pool=pool, pool_stride=pool_stride)
        label = f"{label} pool {pool} stride {pool_stride}"
        yield Sample("conv2d_relu_maxpool_forward", (x, w, b),
                     dict(stride=stride, padding=padding, **pool_kw), label)
        y, arg = R.conv2d_relu_maxpool_forward(x, w, b, stride, padding, **pool_kw)
        dy = _f32(rng.standard_normal(y.shape))
        for need_dx in (True, False):
            yield Sample("conv2d_relu_maxpool_backward", (x, w, dy, y, arg),
                         dict(stride=stride, padding=padding, need_dx=need_dx),
                         f"{label} need_dx={need_dx}")
    for shape, pool, stride, padding in _pool_configs(shapes):
        x = _f32(rng.standard_normal(shape))
        x.reshape(-1)[::7] = 0.5  # ties inside windows, so the tie rule is exercised
        label = f"x{shape} pool {pool} stride {stride} {padding}"
        yield Sample("maxpool2d_forward", (x,), dict(pool=pool, stride=stride, padding=padding),
                     label)
        y, arg = R.maxpool2d_forward(x, pool, stride, padding)
        dy = _f32(rng.standard_normal(y.shape))
        yield Sample("maxpool2d_backward", (dy, arg, x.shape), {}, label)
    for n, d_in, d_out in _dense_configs(shapes):
        x = _f32(rng.standard_normal((n, d_in)))
        w = _f32(rng.standard_normal((d_in, d_out)) * 0.1)
        b = _f32(rng.standard_normal(d_out))
        dy = _f32(rng.standard_normal((n, d_out)))
        label = f"{n}x{d_in} -> {d_out}"
        yield Sample("dense_forward", (x, w, b), {}, label)
        for need_dx in (True, False):
            yield Sample("dense_backward", (x, w, dy), dict(need_dx=need_dx),
                         f"{label} need_dx={need_dx}")
    act_shape = (8, 148, 148, 32) if shapes == "seed" else (3, 7, 5, 6)
    x = _f32(rng.standard_normal(act_shape))
    x.reshape(-1)[::11] = 0.0  # exact zeros: ReLU's gradient there is 0
    dy = _f32(rng.standard_normal(act_shape))
    label = f"x{act_shape}"
    yield Sample("relu_forward", (x,), {}, label)
    yield Sample("relu_backward", (dy, R.relu_forward(x)), {}, label)
    z = _f32(rng.standard_normal(act_shape) * 4)
    z.reshape(-1)[:2] = (-100.0, 100.0)  # saturation must not overflow
    yield Sample("sigmoid_forward", (z,), {}, label)
    yield Sample("sigmoid_backward", (dy, R.sigmoid_forward(z)), {}, label)
    for n, k in ((1, 3), (7, 10)):
        z = _f32(rng.standard_normal((n, k)) * 3)
        yield Sample("softmax_forward", (z,), {}, f"{n}x{k}")
        yield Sample("softmax_backward", (_f32(rng.standard_normal((n, k))),
                                          R.softmax_forward(z)), {}, f"{n}x{k}")
    for rate in (0.0, 0.5):
        label = f"x{act_shape} rate {rate}"
        yield Sample("dropout_forward", (x, rate, np.random.default_rng(seed + 1)), {}, label)
        mask = R.dropout_forward(x, rate, np.random.default_rng(seed + 1))[1]
        yield Sample("dropout_backward", (dy, mask), {}, label)
    for n in (1, 32):
        z = _f32(rng.standard_normal((n, 1)) * 5)
        z[0, 0] = 40.0  # large logits stay finite
        y = _f32(rng.random((n, 1)) > 0.5)
        yield Sample("binary_crossentropy", (y, z), {}, f"N={n}")
    for n, k in ((1, 2), (9, 5)):
        z = _f32(rng.standard_normal((n, k)) * 5)
        yield Sample("softmax_crossentropy", (rng.integers(0, k, n), z), {}, f"{n}x{k}")
    # per-sample weights (Keras 3's sum_over_batch_size: sum(w * l) / N), from a stream
    # of their own so the samples after these draw what they always drew
    wrng = np.random.default_rng(seed + 16)
    for n, shape in ((1, (1,)), (7, (7, 1))):
        z = _f32(wrng.standard_normal(shape) * 4)
        y = _f32(wrng.random(shape) > 0.5)
        w = _f32(wrng.random(n) * 3)
        w[0] = 0.0                                     # a zero weight drops its sample
        yield Sample("binary_crossentropy", (y, z), dict(sample_weight=w),
                     f"N={n} sample_weight")
    for n, k in ((1, 3), (9, 5)):
        z = _f32(wrng.standard_normal((n, k)) * 3)
        w = _f32(wrng.random((n, 1)) * 2)
        yield Sample("softmax_crossentropy", (wrng.integers(0, k, n), z),
                     dict(sample_weight=w), f"{n}x{k} sample_weight (N, 1)")
    # label smoothing (Keras 3's targets), alone and with weights; its own stream too
    srng = np.random.default_rng(seed + 17)
    for n, ls, weighted in ((5, 0.1, False), (1, 1.0, False), (6, 0.3, True)):
        z = _f32(srng.standard_normal((n, 1)) * 4)
        y = _f32(srng.random((n, 1)) > 0.5)
        kw = dict(label_smoothing=ls)
        if weighted:
            kw["sample_weight"] = _f32(srng.random(n))
        label = f"N={n} label_smoothing {ls}" + (" sample_weight" if weighted else "")
        yield Sample("binary_crossentropy", (y, z), kw, label)
        z = _f32(srng.standard_normal((n, 4)) * 3)
        yield Sample("softmax_crossentropy", (srng.integers(0, 4, n), z), dict(kw),
                     f"{label} K=4")
    p_shape = (3, 3, 32, 64) if shapes == "seed" else (3, 3, 5, 7)
    p = _f32(rng.standard_normal(p_shape))
    g = _f32(rng.standard_normal(p_shape))
    s1 = _f32(rng.random(p_shape))
    s2 = _f32(rng.random(p_shape))
    label = f"p{p_shape}"
    yield Sample("sgd_update", (p, g, None), dict(lr=0.01, momentum=0.0, nesterov=False),
                 f"{label} plain")
    for nesterov in (False, True):
        yield Sample("sgd_update", (p, g, s1), dict(lr=0.01, momentum=0.9, nesterov=nesterov),
                     f"{label} momentum nesterov={nesterov}")
    yield Sample("rmsprop_update", (p, g, s1), dict(lr=1e-3, rho=0.9, eps=1e-7), label)
    yield Sample("adam_update", (p, g, s1, s2), dict(t=3, lr=1e-3), label)
    yield from _clip_samples(rng, p_shape)
    yield from _regularize_samples(np.random.default_rng(seed + 18), p_shape)
    yield from _merge_samples(rng, shapes)
    if shapes != "seed":  # the seed model has no global pooling, rescaling or batchnorm
        yield from _globalpool_samples(rng)
        yield from _norm_samples(rng)
        yield from _bn_relu_samples(np.random.default_rng(seed + 19))
        yield from _bn_fold_samples(np.random.default_rng(seed + 20))
    yield from _depthwise_samples(rng, shapes)
    yield from _avgpool_samples(rng, shapes)


def _avgpool_samples(rng, shapes):
    """Average pooling at the max pooling configurations, plus 'same' windows that
    overhang by more than one pixel (pool 3 stride 1, (4, 3) stride (2, 3)) and a
    channel count past a warp."""
    from . import reference as R

    extra = [] if shapes == "seed" else [((3, 5, 7, 33), 3, 1, "same"),
                                         ((2, 7, 8, 3), (4, 3), (2, 3), "same"),
                                         ((1, 9, 11, 5), 3, (2, 3), "valid")]
    for shape, pool, stride, padding in _pool_configs(shapes) + extra:
        x = _f32(rng.standard_normal(shape))
        label = f"x{shape} pool {pool} stride {stride} {padding}"
        kw = dict(pool=pool, stride=stride, padding=padding)
        yield Sample("avgpool2d_forward", (x,), kw, label)
        y = R.avgpool2d_forward(x, **kw)
        yield Sample("avgpool2d_backward", (_f32(rng.standard_normal(y.shape)), x.shape), kw,
                     label)


def _regularize_samples(rng, p_shape):
    """Keras's L1/L2 penalty and gradient: l2 alone, l1 with exact zeros (sign 0), both,
    accumulated, the penalty only (g None), and more weights than a block of threads."""
    w = _f32(rng.standard_normal(p_shape))
    w.reshape(-1)[::5] = 0.0
    g = _f32(rng.standard_normal(p_shape))
    label = f"w{p_shape}"
    yield Sample("regularize", (w, g, 0.0, 0.01, _f32([0.0])), {}, f"{label} l2")
    yield Sample("regularize", (w, g, 0.05, 0.0, _f32([0.0])), {}, f"{label} l1 zeros")
    yield Sample("regularize", (w, g, 0.02, 0.3, _f32([1.5])), dict(accumulate=True),
                 f"{label} l1_l2 accumulate")
    yield Sample("regularize", (w, None, 0.1, 0.2, _f32([0.0])), {}, f"{label} penalty only")
    big = _f32(rng.standard_normal(1001))
    yield Sample("regularize", (big, _f32(rng.standard_normal(1001)), 0.01, 0.001,
                                _f32([0.0])), {}, "n=1001")


def _clip_samples(rng, p_shape):
    """Gradient clipping: sums of squares fresh and accumulated (a global norm), a norm
    above and one below clipnorm (scaled / unchanged), a zero gradient, clip by value."""
    g = _f32(rng.standard_normal(p_shape))
    label = f"g{p_shape}"
    yield Sample("sum_squares", (g, _f32([0.0])), dict(accumulate=False), label)
    yield Sample("sum_squares", (g, _f32([2.5])), dict(accumulate=True), f"{label} accumulate")
    yield Sample("sum_squares", (_f32(rng.standard_normal(1001)), _f32([0.0])), {}, "n=1001")
    sq = float(np.sum(g.astype(F64) ** 2))
    for clipnorm in (0.5 * np.sqrt(sq), 2.0 * np.sqrt(sq)):
        yield Sample("clip_by_norm", (g, _f32([sq])), dict(clipnorm=clipnorm),
                     f"{label} clipnorm {clipnorm / np.sqrt(sq):.1f} x norm")
    yield Sample("clip_by_norm", (_f32(np.zeros(7)), _f32([0.0])), dict(clipnorm=1.0),
                 "zero gradient")
    yield Sample("clip_by_value", (g, 0.5), {}, label)


def _merge_samples(rng, shapes):
    """add / concat / accumulate_grad at (N, C) and NHWC, batch 1, odd channel counts
    ('seed': two branches of the seed model's second conv output)."""
    configs = ((((8, 47, 47), (32, 32)),) if shapes == "seed" else
               (((1, 5, 3), (3, 5)), ((3, 7, 6), (1, 7, 2)), ((4,), (5, 3)), ((1,), (1, 1, 9))))
    for lead, chans in configs:
        xs = [_f32(rng.standard_normal(lead + (c,))) for c in chans]
        label = f"{len(xs)} x {[x.shape for x in xs]}"
        yield Sample("concat_forward", (xs,), {}, label)
        dy = _f32(rng.standard_normal(lead + (sum(chans),)))
        yield Sample("concat_backward", (dy, chans), {}, label)
        same = [_f32(rng.standard_normal(lead + (chans[-1],))) for _ in chans]
        label = f"{len(same)} x {same[0].shape}"
        yield Sample("add_forward", (same,), {}, label)
        yield Sample("accumulate_grad", (same[0], same[1]), {}, label)


def _globalpool_samples(rng):
    from . import reference as R

    for shape in ((1, 1, 1, 1), (1, 13, 11, 7), (5, 4, 9, 3), (2, 7, 7, 33), (3, 2, 1, 5)):
        x = _f32(rng.standard_normal(shape))
        x.reshape(-1)[::5] = 0.5  # ties across pixels, so the first-maximum rule is exercised
        label = f"x{shape}"
        n, h, w, c = shape
        yield Sample("global_avgpool2d_forward", (x,), {}, label)
        yield Sample("global_avgpool2d_backward", (_f32(rng.standard_normal((n, c))), shape),
                     {}, label)
        yield Sample("global_maxpool2d_forward", (x,), {}, label)
        _, arg = R.global_maxpool2d_forward(x)
        yield Sample("global_maxpool2d_backward", (_f32(rng.standard_normal((n, c))), arg, shape),
                     {}, label)


def _norm_samples(rng):
    """Rescaling at any rank; BatchNormalization over NHWC and (N, C), batch 1, odd
    channel counts, a mean far from 0 (the one-pass variance's cancellation)."""
    from . import reference as R

    for shape in ((1, 1), (2, 9), (1, 5, 3, 7), (3, 4, 5, 33), (4, 7, 6, 3)):
        x = _f32(rng.standard_normal(shape) * 2.0 + 3.0)
        c = shape[-1]
        label = f"x{shape}"
        yield Sample("rescale_forward", (x, 1.0 / 255), dict(offset=-0.5), label)
        yield Sample("rescale_backward", (x, -2.5), {}, label)
        gamma = _f32(rng.standard_normal(c))
        beta = _f32(rng.standard_normal(c))
        yield Sample("batchnorm_train_forward", (x, gamma, beta), dict(epsilon=1e-3), label)
        _, mean, var = R.batchnorm_train_forward(x, gamma, beta, 1e-3)
        dy = _f32(rng.standard_normal(shape))
        for need_dx in (True, False):
            yield Sample("batchnorm_backward", (dy, x, gamma, mean, var),
                         dict(epsilon=1e-3, need_dx=need_dx), f"{label} need_dx={need_dx}")
        moving_mean = _f32(rng.standard_normal(c))
        moving_var = _f32(rng.random(c) + 0.1)
        yield Sample("batchnorm_infer_forward", (x, gamma, beta, moving_mean, moving_var),
                     dict(epsilon=1e-3), label)
        yield Sample("batchnorm_moving_update", (moving_mean, moving_var, mean, var),
                     dict(momentum=0.99), label)


def _bn_relu_samples(rng):
    """The fused BatchNormalization -> ReLU: NHWC and (N, C), batch 1, odd channel
    counts, a mean far from 0, a beta that keeps a channel all positive (or all zero)."""
    from . import reference as R

    for shape in ((1, 1), (2, 9), (1, 5, 3, 7), (3, 4, 5, 33), (4, 7, 6, 3)):
        x = _f32(rng.standard_normal(shape) * 2.0 + 3.0)
        c = shape[-1]
        label = f"x{shape}"
        gamma = _f32(rng.standard_normal(c))
        beta = _f32(rng.standard_normal(c))
        beta[0] = 50.0 if c > 2 else beta[0]           # channel 0: relu passes everything
        beta[-1] = -50.0 if c > 2 else beta[-1]        # the last: relu passes nothing
        yield Sample("batchnorm_relu_train_forward", (x, gamma, beta), dict(epsilon=1e-3),
                     label)
        y, mean, var = R.batchnorm_relu_train_forward(x, gamma, beta, 1e-3)
        dy = _f32(rng.standard_normal(shape))
        for need_dx in (True, False):
            yield Sample("batchnorm_relu_backward", (dy, y, x, gamma, mean, var),
                         dict(epsilon=1e-3, need_dx=need_dx), f"{label} need_dx={need_dx}")


def _bn_fold_samples(rng):
    """BatchNormalization folded into a conv kernel: Conv2D kernels (3, 3, C, F) and
    pointwise (1, 1, C, F), F = 1 and odd F, the moving variance near 0 (large scales)."""
    for shape in ((3, 3, 2, 1), (3, 3, 5, 7), (1, 1, 9, 33), (2, 3, 1, 6)):
        f = shape[-1]
        kernel = _f32(rng.standard_normal(shape) * 0.3)
        bias = _f32(rng.standard_normal(f))
        gamma, beta = _f32(rng.standard_normal(f)), _f32(rng.standard_normal(f))
        moving_mean = _f32(rng.standard_normal(f))
        moving_var = _f32(rng.random(f) + 0.1)
        moving_var[0] = 0.0                         # s = gamma / sqrt(epsilon)
        yield Sample("batchnorm_fold", (kernel, bias, gamma, beta, moving_mean, moving_var),
                     dict(epsilon=1e-3), f"kernel{shape}")


def _depthwise_configs(shapes):
    """(x shape, kernel, depth_multiplier M, stride, padding) of the depthwise samples."""
    if shapes == "seed":  # SeparableConv2D-like layers at the seed's feature-map sizes
        return [((8, 47, 47, 32), (3, 3), 1, 1, "same"),
                ((8, 23, 23, 64), (3, 3), 2, 2, "same")]
    return [((1, 7, 9, 5), (3, 3), 1, 1, "same"),       # batch 1, odd sizes
            ((2, 9, 8, 3), (3, 3), 2, 2, "same"),       # stride 2, M = 2
            ((1, 8, 11, 7), (3, 2), 2, (2, 1), "valid"),
            ((2, 6, 7, 13), (5, 5), 1, 1, "same"),      # kernel as large as the input
            ((1, 5, 5, 2), (1, 1), 3, 2, "valid"),
            ((2, 7, 6, 37), (3, 3), 1, 2, "valid")]     # C*M past a vector or a warp


def _depthwise_samples(rng, shapes):
    from . import reference as R

    for shape, k, m, stride, padding in _depthwise_configs(shapes):
        x = _f32(rng.standard_normal(shape))
        w = _f32(rng.standard_normal(k + (shape[3], m)) * 0.3)
        b = _f32(rng.standard_normal(shape[3] * m))
        label = f"x{shape} w{w.shape} s{stride} {padding}"
        yield Sample("depthwise_conv2d_forward", (x, w, b), dict(stride=stride, padding=padding),
                     label)
        y = R.depthwise_conv2d_forward(x, w, b, stride, padding)
        dy = _f32(rng.standard_normal(y.shape))
        for need_dx in (True, False):
            yield Sample("depthwise_conv2d_backward", (x, w, dy),
                         dict(stride=stride, padding=padding, need_dx=need_dx),
                         f"{label} need_dx={need_dx}")


def _z(*shape, dtype=F32):
    return np.zeros(shape, dtype)


class ErrorInput(NamedTuple):
    """Input that must raise: the exception type and the exact message the reference raises."""
    sample: Sample
    error: type
    message: str


def error_inputs():
    """Yield an ErrorInput (one mistake each) for every op, fused ops included.

    The reference's exception type and message are the contract: every backend
    must raise exactly the same for each of these (tests/test_opinfo.py runs
    them on the reference, cpu and cuda; tests/test_cuda_errors.py again with
    device arrays). A fused op checks in the order and words of the
    composition the reference defines it as (fastconv/kernels/reference/fused.py):
    conv2d_relu_maxpool_forward's bad pool is named by maxpool2d_forward, its bad
    bias by conv2d_forward, its bad out= by itself.
    """
    z, rng = _z, np.random.default_rng
    x, w, b = z(1, 6, 6, 2), z(3, 3, 2, 3), z(3)           # conv: y (1, 4, 4, 3)
    y4, yp, ap = z(1, 4, 4, 3), z(1, 2, 2, 3), np.zeros((1, 2, 2, 3), np.int32)
    cases = [
        # conv2d
        ("conv2d_forward", (z(5, 5, 3), z(3, 3, 3, 2), z(2)), {}, "x of rank 3",
         ValueError, "conv2d_forward: x must have rank 4, got rank 3 (shape (5, 5, 3))"),
        ("conv2d_forward", (z(1, 5, 5, 3), z(3, 3, 4, 2), z(2)), {}, "C_in mismatch",
         ValueError, "conv2d_forward: w expects C_in=4 input channels but x has 3 (x shape (1, "
                     "5, 5, 3), w shape (3, 3, 4, 2) as (KH, KW, C_in, C_out))"),
        ("conv2d_forward", (z(1, 2, 5, 3), z(3, 3, 3, 2), z(2)), {}, "kernel taller than x",
         ValueError, "conv2d_forward: kernel height 3 is larger than the input height 2 with "
                     "padding='valid'"),
        ("conv2d_forward", (z(1, 5, 5, 3, dtype=np.float64), z(3, 3, 3, 2), z(2)), {},
         "x float64",
         TypeError, "conv2d_forward: x must be float32, got float64"),
        ("conv2d_forward", (z(1, 5, 5, 3), z(3, 3, 3, 2), z(3)), {}, "b of the wrong size",
         ValueError, "conv2d_forward: b must have shape (2,), got (3,)"),
        ("conv2d_forward", (x, w, b), dict(padding="full"), "unknown padding",
         ValueError, "conv2d_forward: padding must be 'valid' or 'same', got 'full'"),
        ("conv2d_forward", (x, w, b), dict(stride=0), "stride 0",
         ValueError, "conv2d_forward: stride must be >= 1, got 0"),
        ("conv2d_forward", ([[1.0]], w, b), {}, "x a list",
         TypeError, "conv2d_forward: x must be a numpy.ndarray, got list"),
        ("conv2d_forward", (x, w, b), dict(out=z(1, 4, 4, 2)), "out of the wrong shape",
         ValueError, "conv2d_forward: out must be float32 of shape (1, 4, 4, 3), got float32 of "
                     "shape (1, 4, 4, 2)"),
        ("conv2d_backward", (z(1, 5, 5, 3), z(3, 3, 3, 2), z(1, 3, 3, 4)), {},
         "dy of the wrong shape",
         ValueError, "conv2d_backward: dy must have shape (1, 3, 3, 2), got (1, 3, 3, 4)"),
        ("conv2d_backward", (x, w, y4), dict(out=w), "out not a tuple",
         TypeError, "conv2d_backward: out must be a tuple of 3 (arrays or None), got ndarray"),
        # fused conv2d + relu (+ maxpool)
        ("conv2d_relu_forward", (z(6, 6, 2), w, b), {}, "x of rank 3",
         ValueError, "conv2d_forward: x must have rank 4, got rank 3 (shape (6, 6, 2))"),
        ("conv2d_relu_forward", (x, w, z(4)), {}, "b of the wrong size",
         ValueError, "conv2d_forward: b must have shape (3,), got (4,)"),
        ("conv2d_relu_forward", (x, w, b), dict(padding="full"), "unknown padding",
         ValueError, "conv2d_forward: padding must be 'valid' or 'same', got 'full'"),
        ("conv2d_relu_forward", (x, w, b), dict(out=z(1, 4, 4, 2)), "out of the wrong shape",
         ValueError, "conv2d_relu_forward: out must be float32 of shape (1, 4, 4, 3), got "
                     "float32 of shape (1, 4, 4, 2)"),
        ("conv2d_relu_backward", (x, w, y4, z(1, 4, 4, 2)), {}, "y of another shape than dy",
         ValueError, "relu_backward: y must have the shape of dy (1, 4, 4, 3), got (1, 4, 4, 2)"),
        ("conv2d_relu_backward", (x, w, z(1, 4, 4, 2), z(1, 4, 4, 2)), {},
         "dy of the wrong shape",
         ValueError, "conv2d_backward: dy must have shape (1, 4, 4, 3), got (1, 4, 4, 2)"),
        ("conv2d_relu_backward", (x, w, z(1, 4, 4, 3, dtype=np.float64), y4), {},
         "dy float64",
         TypeError, "relu_backward: dy must be float32, got float64"),
        ("conv2d_relu_backward", (x, z(3, 3, 3, 3), y4, y4), {}, "C_in mismatch",
         ValueError, "conv2d_backward: w expects C_in=3 input channels but x has 2 (x shape (1, "
                     "6, 6, 2), w shape (3, 3, 3, 3) as (KH, KW, C_in, C_out))"),
        ("conv2d_relu_backward", (x, w, y4, y4), dict(out=(None, None)), "out of 2",
         TypeError, "conv2d_relu_backward: out must be a tuple of 3 (arrays or None), got tuple"),
        ("conv2d_relu_maxpool_forward", (x, w, b), dict(pool=5), "pool larger than y",
         ValueError, "maxpool2d_forward: pool height 5 is larger than the input height 4 with "
                     "padding='valid'"),
        ("conv2d_relu_maxpool_forward", (x, w, b), dict(pool=0), "pool 0",
         ValueError, "maxpool2d_forward: pool must be >= 1, got 0"),
        ("conv2d_relu_maxpool_forward", (x, w, b), dict(pool_padding="full"),
         "unknown pool padding",
         ValueError, "maxpool2d_forward: padding must be 'valid' or 'same', got 'full'"),
        ("conv2d_relu_maxpool_forward", (x, w, b), dict(pool_stride=(1, 0)), "pool stride 0",
         ValueError, "maxpool2d_forward: stride must be >= 1, got (1, 0)"),
        ("conv2d_relu_maxpool_forward", (x, z(3, 3, 3, 3), b), {}, "C_in mismatch",
         ValueError, "conv2d_forward: w expects C_in=3 input channels but x has 2 (x shape (1, "
                     "6, 6, 2), w shape (3, 3, 3, 3) as (KH, KW, C_in, C_out))"),
        ("conv2d_relu_maxpool_forward", (x, w, z(4)), {}, "b of the wrong size",
         ValueError, "conv2d_forward: b must have shape (3,), got (4,)"),
        ("conv2d_relu_maxpool_forward", (x, w, b), dict(stride=0), "stride 0",
         ValueError, "conv2d_forward: stride must be >= 1, got 0"),
        ("conv2d_relu_maxpool_forward", (x, w, b), dict(out=(yp, yp)), "out[1] float32",
         ValueError, "conv2d_relu_maxpool_forward: out[1] must be int32 of shape (1, 2, 2, 3), "
                     "got float32 of shape (1, 2, 2, 3)"),
        ("conv2d_relu_maxpool_forward", (x, w, b), dict(out=yp), "out not a tuple",
         TypeError, "conv2d_relu_maxpool_forward: out must be a tuple of 2 (arrays or None), got "
                    "ndarray"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, yp, ap.astype(np.int64)), {},
         "argmax int64",
         TypeError, "maxpool2d_backward: argmax must be an int32 ndarray, got int64"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, yp, yp), {}, "argmax float32",
         TypeError, "maxpool2d_backward: argmax must be an int32 ndarray, got float32"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, yp, ap + 16), {}, "argmax past the grid",
         ValueError, "maxpool2d_backward: argmax holds indices outside [0, 16)"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, yp, ap - 1), {}, "argmax negative",
         ValueError, "maxpool2d_backward: argmax holds indices outside [0, 16)"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, z(1, 2, 3, 3), ap), {},
         "y of another shape than dy",
         ValueError, "relu_backward: y must have the shape of dy (1, 2, 2, 3), got (1, 2, 3, 3)"),
        ("conv2d_relu_maxpool_backward", (x, w, z(1, 2, 2, 2), z(1, 2, 2, 2), ap[..., :2]), {},
         "dy with the wrong channels",
         ValueError, "maxpool2d_backward: dy (1, 2, 2, 2) does not match x_shape (1, 4, 4, 3) in "
                     "N or C"),
        ("conv2d_relu_maxpool_backward", (x, w, z(2, 2, 3), z(2, 2, 3), ap[0]), {},
         "dy of rank 3",
         ValueError, "maxpool2d_backward: dy must have rank 4, got rank 3 (shape (2, 2, 3))"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, yp, ap[..., :2]), {},
         "argmax of another shape than dy",
         ValueError, "maxpool2d_backward: argmax must have the shape of dy (1, 2, 2, 3), got (1, "
                     "2, 2, 2)"),
        ("conv2d_relu_maxpool_backward", (x, w, yp.astype(np.float64), yp, ap), {},
         "dy float64",
         TypeError, "relu_backward: dy must be float32, got float64"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, yp, ap), dict(stride=-1), "stride -1",
         ValueError, "conv2d_relu_maxpool_backward: stride must be >= 1, got -1"),
        ("conv2d_relu_maxpool_backward", (z(1, 6, 6, 3), w, yp, yp, ap), {}, "C_in mismatch",
         ValueError, "conv2d_relu_maxpool_backward: w expects C_in=2 input channels but x has 3 "
                     "(x shape (1, 6, 6, 3), w shape (3, 3, 2, 3) as (KH, KW, C_in, C_out))"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, yp, ap), dict(out=(None, None)), "out of 2",
         TypeError, "conv2d_relu_maxpool_backward: out must be a tuple of 3 (arrays or None), "
                    "got tuple"),
        # pooling
        ("maxpool2d_forward", (z(1, 2, 2, 1), 3), {}, "pool larger than x",
         ValueError, "maxpool2d_forward: pool height 3 is larger than the input height 2 with "
                     "padding='valid'"),
        ("maxpool2d_forward", (z(1, 4, 4, 1, dtype=np.int32),), {}, "x int32",
         TypeError, "maxpool2d_forward: x must be float32, got int32"),
        ("maxpool2d_forward", (z(4, 4, 1),), {}, "x of rank 3",
         ValueError, "maxpool2d_forward: x must have rank 4, got rank 3 (shape (4, 4, 1))"),
        ("maxpool2d_forward", (z(1, 4, 4, 1),), dict(pool=0), "pool 0",
         ValueError, "maxpool2d_forward: pool must be >= 1, got 0"),
        ("maxpool2d_forward", (z(1, 4, 4, 1),), dict(padding="full"), "unknown padding",
         ValueError, "maxpool2d_forward: padding must be 'valid' or 'same', got 'full'"),
        ("maxpool2d_forward", (z(1, 4, 4, 1),), dict(out=(z(1, 2, 2, 1), z(1, 2, 2, 1))),
         "out[1] float32",
         ValueError, "maxpool2d_forward: out[1] must be int32 of shape (1, 2, 2, 1), got float32 "
                     "of shape (1, 2, 2, 1)"),
        ("maxpool2d_backward", (z(1, 2, 2, 1), z(1, 2, 2, 1, dtype=np.int64), (1, 4, 4, 1)), {},
         "argmax int64",
         TypeError, "maxpool2d_backward: argmax must be an int32 ndarray, got int64"),
        ("maxpool2d_backward", (z(1, 2, 2, 1), z(1, 2, 3, 1, dtype=np.int32), (1, 4, 4, 1)), {},
         "argmax of another shape than dy",
         ValueError, "maxpool2d_backward: argmax must have the shape of dy (1, 2, 2, 1), got (1, "
                     "2, 3, 1)"),
        ("maxpool2d_backward", (z(1, 2, 2, 1), z(1, 2, 2, 1, dtype=np.int32), (1, 4, 4)), {},
         "x_shape of rank 3",
         ValueError, "maxpool2d_backward: x_shape must be (N, H, W, C), got (1, 4, 4)"),
        ("maxpool2d_backward", (z(1, 2, 2, 1), z(1, 2, 2, 1, dtype=np.int32), (2, 4, 4, 1)), {},
         "x_shape of another batch",
         ValueError, "maxpool2d_backward: dy (1, 2, 2, 1) does not match x_shape (2, 4, 4, 1) in "
                     "N or C"),
        ("maxpool2d_backward", (z(1, 2, 2, 1), np.full((1, 2, 2, 1), 16, np.int32),
                                (1, 4, 4, 1)), {}, "argmax past x",
         ValueError, "maxpool2d_backward: argmax holds indices outside [0, 16)"),
        # dense
        ("dense_forward", (z(2, 5), z(6, 3), z(3)), {}, "in-features mismatch",
         ValueError, "dense_forward: w expects 6 input features but x has 5 (x shape (2, 5), w "
                     "shape (6, 3) as (in, out))"),
        ("dense_forward", (z(2, 5, 1), z(5, 3), z(3)), {}, "x of rank 3",
         ValueError, "dense_forward: x must have rank 2, got rank 3 (shape (2, 5, 1))"),
        ("dense_backward", (z(2, 5), z(5, 3), z(2, 4)), {}, "dy of the wrong shape",
         ValueError, "dense_backward: dy must have shape (2, 3), got (2, 4)"),
        # activations
        ("relu_forward", ([[1.0]],), {}, "x a list",
         TypeError, "relu_forward: x must be a numpy.ndarray, got list"),
        ("relu_forward", (z(2, 3, dtype=np.float64),), {}, "x float64",
         TypeError, "relu_forward: x must be float32, got float64"),
        ("relu_forward", (z(2, 3),), dict(out=z(3, 2)), "out of the wrong shape",
         ValueError, "relu_forward: out must be float32 of shape (2, 3), got float32 of shape "
                     "(3, 2)"),
        ("relu_forward", (z(2, 3),), dict(out=z(2, 3, dtype=np.float64)), "out float64",
         ValueError, "relu_forward: out must be float32 of shape (2, 3), got float64 of shape "
                     "(2, 3)"),
        ("relu_backward", (z(2, 3), z(3, 2)), {}, "y of another shape than dy",
         ValueError, "relu_backward: y must have the shape of dy (2, 3), got (3, 2)"),
        ("sigmoid_forward", (z(4, dtype=np.int32),), {}, "x int32",
         TypeError, "sigmoid_forward: x must be float32, got int32"),
        ("sigmoid_backward", (z(4), z(5)), {}, "y of another shape than dy",
         ValueError, "sigmoid_backward: y must have the shape of dy (4,), got (5,)"),
        ("softmax_forward", (z(2, 3, 4),), {}, "x of rank 3",
         ValueError, "softmax_forward: x must have rank 2, got rank 3 (shape (2, 3, 4))"),
        ("softmax_backward", (z(2, 3), z(2, 4)), {}, "y of another shape than dy",
         ValueError, "softmax_backward: y must have the shape of dy (2, 3), got (2, 4)"),
        ("dropout_forward", (z(3), 1.0, rng()), {}, "rate 1",
         ValueError, "dropout_forward: rate must be in [0, 1), got 1.0"),
        ("dropout_forward", (z(3), -0.1, rng()), {}, "rate < 0",
         ValueError, "dropout_forward: rate must be a finite number >= 0, got -0.1"),
        ("dropout_forward", (z(3), 0.5, np.random.RandomState(0)), {}, "a legacy RandomState",
         TypeError, "dropout_forward: rng must be a numpy.random.Generator, got RandomState"),
        ("dropout_backward", (z(3), z(4)), {}, "mask of another shape than dy",
         ValueError, "dropout_backward: mask must have the shape of dy (3,), got (4,)"),
        # losses
        ("binary_crossentropy", (z(3), z(4, 1)), {}, "y_true of the wrong size",
         ValueError, "binary_crossentropy: y_true must have shape (4,) or (4, 1) to match logits "
                     "(4, 1), got (3,)"),
        ("binary_crossentropy", (z(4), z(4, 2)), {}, "logits of 2 columns",
         ValueError, "binary_crossentropy: logits must have shape (N,) or (N, 1), got (4, 2)"),
        ("binary_crossentropy", (np.array(["a"] * 4), z(4)), {}, "y_true strings",
         TypeError, "binary_crossentropy: y_true must be numeric, got <U1"),
        ("softmax_crossentropy", (np.array([0, 3]), z(2, 3)), {}, "class index out of range",
         ValueError, "softmax_crossentropy: class index out of range [0, 3): min 0, max 3"),
        ("binary_crossentropy", (z(4), z(4)), dict(sample_weight=z(3)),
         "sample_weight of the wrong size", ValueError,
         "binary_crossentropy: sample_weight must have shape (4,) or (4, 1), one weight per "
         "sample, got (3,)"),
        ("binary_crossentropy", (z(2), z(2)), dict(sample_weight=np.array([1.0, -1.0])),
         "a negative sample_weight", ValueError,
         "binary_crossentropy: sample_weight must be finite and >= 0, got min -1.0, max 1.0"),
        ("softmax_crossentropy", (np.array([0, 1]), z(2, 3)),
         dict(sample_weight=np.array(["a", "b"])), "sample_weight strings", TypeError,
         "softmax_crossentropy: sample_weight must be numeric, got <U1"),
        ("binary_crossentropy", (z(2), z(2)), dict(label_smoothing=1.5),
         "label_smoothing above 1", ValueError,
         "binary_crossentropy: label_smoothing must be a number in [0, 1], got 1.5"),
        ("softmax_crossentropy", (np.array([0, 1]), z(2, 3)), dict(label_smoothing="x"),
         "label_smoothing a string", ValueError,
         "softmax_crossentropy: label_smoothing must be a number in [0, 1], got 'x'"),
        ("softmax_crossentropy", (np.array([0.5, 1.0]), z(2, 3)), {}, "fractional labels",
         TypeError, "softmax_crossentropy: y_true must hold integer class indices, got dtype "
                    "float64"),
        ("softmax_crossentropy", (np.array([0, 1, 2]), z(2, 3)), {}, "3 labels, 2 rows",
         ValueError, "softmax_crossentropy: y_true must have shape (2,) of class indices, got "
                     "(3,)"),
        ("softmax_crossentropy", (np.array([0, 1]), z(2, 3, dtype=np.float64)), {},
         "logits float64",
         TypeError, "softmax_crossentropy: logits must be float32, got float64"),
        # optimizers
        ("sgd_update", (z(3), z(3), None), dict(lr=0.1, momentum=0.9), "momentum without v",
         ValueError, "sgd_update: momentum=0.9 needs a velocity array v, got None"),
        ("sgd_update", (z(3), z(4), None), dict(lr=0.1), "g of another shape than p",
         ValueError, "sgd_update: g must have the shape of p (3,), got (4,)"),
        ("sgd_update", (z(3), z(3), None), dict(lr=-1.0), "lr < 0",
         ValueError, "sgd_update: lr must be a finite number >= 0, got -1.0"),
        ("sgd_update", (z(3), z(3), z(3, dtype=np.float64)), dict(lr=0.1, momentum=0.9),
         "v float64",
         TypeError, "sgd_update: v must be float32, got float64"),
        ("rmsprop_update", (z(3), z(3), z(2)), dict(lr=0.1), "ms of another shape than p",
         ValueError, "rmsprop_update: ms must have the shape of p (3,), got (2,)"),
        ("rmsprop_update", (z(3), z(3), z(3)), dict(lr="fast"), "lr a string",
         TypeError, "rmsprop_update: lr must be a number, got 'fast'"),
        ("sum_squares", (z(3), z(2)), {}, "acc of shape (2,)",
         ValueError, "sum_squares: acc must have shape (1,), got (2,)"),
        ("sum_squares", (z(3), z(1)), dict(accumulate=1), "accumulate an int",
         TypeError, "sum_squares: accumulate must be True or False, got 1"),
        ("sum_squares", ([1.0, 2.0], z(1)), {}, "x a list",
         TypeError, "sum_squares: x must be a numpy.ndarray, got list"),
        ("regularize", (z(3), z(4), 0.0, 0.1, z(1)), {}, "g of another shape",
         ValueError, "regularize: g must have the shape of w (3,), got (4,)"),
        ("regularize", (z(3), z(3), -0.1, 0.1, z(1)), {}, "l1 < 0",
         ValueError, "regularize: l1 must be a finite number >= 0, got -0.1"),
        ("regularize", (z(3), None, 0.0, float("inf"), z(1)), {}, "l2 inf",
         ValueError, "regularize: l2 must be a finite number >= 0, got inf"),
        ("regularize", (z(3), z(3), 0.0, 0.1, z(2)), {}, "acc of shape (2,)",
         ValueError, "regularize: acc must have shape (1,), got (2,)"),
        ("clip_by_norm", (z(3), z(1)), dict(clipnorm=0.0), "clipnorm 0",
         ValueError, "clip_by_norm: clipnorm must be > 0, got 0.0"),
        ("clip_by_norm", (z(3), z(1, dtype=np.float64)), dict(clipnorm=1.0),
         "sumsq float64", TypeError, "clip_by_norm: sumsq must be float32, got float64"),
        ("clip_by_value", (z(3), -1.0), {}, "clipvalue < 0",
         ValueError, "clip_by_value: clipvalue must be a finite number >= 0, got -1.0"),
        ("clip_by_value", (z(3), "big"), {}, "clipvalue a string",
         TypeError, "clip_by_value: clipvalue must be a number, got 'big'"),
        ("adam_update", (z(3), z(3), z(3), z(3)), dict(t=0, lr=0.1), "t 0",
         ValueError, "adam_update: t must be an int >= 1 (the step number), got 0"),
        ("adam_update", (z(3), z(3), z(3), z(2)), dict(t=1, lr=0.1), "v of another shape",
         ValueError, "adam_update: v must have the shape of p (3,), got (2,)"),
        # merge ops
        ("add_forward", ([z(2, 3)],), {}, "one input",
         ValueError, "add_forward: xs must hold at least 2 arrays, got 1"),
        ("add_forward", (z(2, 3),), {}, "xs an array",
         TypeError, "add_forward: xs must be a list or tuple of arrays, got ndarray"),
        ("add_forward", ([z(2, 3), z(2, 4)],), {}, "shape mismatch",
         ValueError, "add_forward: xs[1] must have the shape of xs[0] (2, 3), got (2, 4)"),
        ("add_forward", ([z(2, 3), z(2, 3, dtype=np.float64)],), {}, "xs[1] float64",
         TypeError, "add_forward: xs[1] must be float32, got float64"),
        ("add_forward", ([z(2, 3), z(2, 3)],), dict(out=z(2, 4)), "out of the wrong shape",
         ValueError, "add_forward: out must be float32 of shape (2, 3), got float32 of shape "
                     "(2, 4)"),
        ("concat_forward", ((z(1, 2, 2, 3),),), {}, "one input",
         ValueError, "concat_forward: xs must hold at least 2 arrays, got 1"),
        ("concat_forward", ([z(1, 2, 2, 3), z(1, 2, 3, 3)],), {}, "shape mismatch",
         ValueError, "concat_forward: xs[1] (1, 2, 3, 3) must match xs[0] (1, 2, 2, 3) in "
                     "every axis but the last (channels)"),
        ("concat_forward", ([z(1, 2, 2, 3), z(1, 2, 3)],), {}, "xs[1] of rank 3",
         ValueError, "concat_forward: xs[1] must have rank 2 or 4, got rank 3 (shape (1, 2, 3))"),
        ("concat_forward", ([z(2, 3, dtype=np.float64), z(2, 3)],), {}, "xs[0] float64",
         TypeError, "concat_forward: xs[0] must be float32, got float64"),
        ("concat_forward", ([z(2, 3), z(2, 2)],), dict(out=z(2, 6)), "out of the wrong shape",
         ValueError, "concat_forward: out must be float32 of shape (2, 5), got float32 of shape "
                     "(2, 6)"),
        ("concat_backward", (z(2, 5), (2, 2)), {}, "channels not summing to C",
         ValueError, "concat_backward: channels (2, 2) sum to 4 but dy (2, 5) has 5 channels"),
        ("concat_backward", (z(2, 5), (5,)), {}, "one part",
         ValueError, "concat_backward: channels must hold at least 2 counts, got 1"),
        ("concat_backward", (z(2, 5), (5, 0)), {}, "a zero count",
         ValueError, "concat_backward: channels must be >= 1 each, got (5, 0)"),
        ("concat_backward", (z(2, 5), 5), {}, "channels an int",
         TypeError, "concat_backward: channels must be a list or tuple of ints, got 5"),
        ("concat_backward", (z(2, 5, dtype=np.float64), (2, 3)), {}, "dy float64",
         TypeError, "concat_backward: dy must be float32, got float64"),
        ("concat_backward", (z(2, 5), (2, 3)), dict(out=(z(2, 2),)), "out of 1",
         TypeError, "concat_backward: out must be a tuple of 2 (arrays or None), got tuple"),
        ("concat_backward", (z(2, 5), (2, 3)), dict(out=(None, z(2, 2))), "out[1] wrong shape",
         ValueError, "concat_backward: out[1] must be float32 of shape (2, 3), got float32 of "
                     "shape (2, 2)"),
        ("accumulate_grad", (z(2, 3), z(3, 2)), {}, "shape mismatch",
         ValueError, "accumulate_grad: src must have the shape of dst (2, 3), got (3, 2)"),
        ("accumulate_grad", (z(2, 3), z(2, 3, dtype=np.float64)), {}, "src float64",
         TypeError, "accumulate_grad: src must be float32, got float64"),
        ("accumulate_grad", (z(2, 3), [[0.0]]), {}, "src a list",
         TypeError, "accumulate_grad: src must be a numpy.ndarray, got list"),
        # global pooling
        ("global_avgpool2d_forward", (z(2, 3, 4),), {}, "x of rank 3",
         ValueError, "global_avgpool2d_forward: x must have rank 4, got rank 3 (shape (2, 3, 4))"),
        ("global_avgpool2d_forward", (z(1, 0, 3, 2),), {}, "no pixels",
         ValueError, "global_avgpool2d_forward: x must have H >= 1 and W >= 1, got shape "
                     "(1, 0, 3, 2)"),
        ("global_avgpool2d_forward", (z(1, 2, 2, 1, dtype=np.int32),), {}, "x int32",
         TypeError, "global_avgpool2d_forward: x must be float32, got int32"),
        ("global_avgpool2d_forward", (z(1, 2, 2, 3),), dict(out=z(1, 2)), "out of the wrong shape",
         ValueError, "global_avgpool2d_forward: out must be float32 of shape (1, 3), got float32 "
                     "of shape (1, 2)"),
        ("global_avgpool2d_backward", (z(2, 3), (2, 4, 4, 5)), {}, "dy of another C",
         ValueError, "global_avgpool2d_backward: dy must have shape (N, C) = (2, 5) for "
                     "input_shape (2, 4, 4, 5), got (2, 3)"),
        ("global_avgpool2d_backward", (z(2, 3), (2, 4, 3)), {}, "input_shape of rank 3",
         ValueError, "global_avgpool2d_backward: input_shape must be (N, H, W, C), got "
                     "(2, 4, 3)"),
        ("global_avgpool2d_backward", (z(2, 3), (2, 0, 4, 3)), {}, "input_shape with H 0",
         ValueError, "global_avgpool2d_backward: input_shape must have H >= 1 and W >= 1, got "
                     "(2, 0, 4, 3)"),
        ("global_avgpool2d_backward", (z(2, 3), None), {}, "input_shape None",
         TypeError, "global_avgpool2d_backward: input_shape must be a tuple of 4 ints "
                    "(N, H, W, C), got None"),
        ("global_avgpool2d_backward", (z(2, 1, 3), (2, 1, 1, 3)), {}, "dy of rank 3",
         ValueError, "global_avgpool2d_backward: dy must have rank 2, got rank 3 (shape "
                     "(2, 1, 3))"),
        ("global_maxpool2d_forward", (z(2, 3, 4, 1, dtype=np.float64),), {}, "x float64",
         TypeError, "global_maxpool2d_forward: x must be float32, got float64"),
        ("global_maxpool2d_forward", (z(1, 3, 0, 1),), {}, "no pixels",
         ValueError, "global_maxpool2d_forward: x must have H >= 1 and W >= 1, got shape "
                     "(1, 3, 0, 1)"),
        ("global_maxpool2d_forward", (z(1, 2, 2, 3),), dict(out=(z(1, 3), z(1, 3))),
         "out[1] float32",
         ValueError, "global_maxpool2d_forward: out[1] must be int32 of shape (1, 3), got "
                     "float32 of shape (1, 3)"),
        ("global_maxpool2d_backward", (z(1, 3), z(1, 3, dtype=np.int64), (1, 2, 2, 3)), {},
         "argmax int64",
         TypeError, "global_maxpool2d_backward: argmax must be an int32 ndarray, got int64"),
        ("global_maxpool2d_backward", (z(1, 3), z(1, 2, dtype=np.int32), (1, 2, 2, 3)), {},
         "argmax of another shape",
         ValueError, "global_maxpool2d_backward: argmax must have the shape of dy (1, 3), got "
                     "(1, 2)"),
        ("global_maxpool2d_backward", (z(1, 3), np.full((1, 3), 4, np.int32), (1, 2, 2, 3)), {},
         "argmax past x",
         ValueError, "global_maxpool2d_backward: argmax holds indices outside [0, 4)"),
        ("global_maxpool2d_backward", (z(1, 3), np.full((1, 3), -1, np.int32), (1, 2, 2, 3)), {},
         "argmax negative",
         ValueError, "global_maxpool2d_backward: argmax holds indices outside [0, 4)"),
        ("global_maxpool2d_backward", (z(2, 3), z(2, 3, dtype=np.int32), (1, 2, 2, 3)), {},
         "dy of another N",
         ValueError, "global_maxpool2d_backward: dy must have shape (N, C) = (1, 3) for "
                     "input_shape (1, 2, 2, 3), got (2, 3)"),
        # rescaling
        ("rescale_forward", (z(2, 3, dtype=np.float64), 0.5), {}, "x float64",
         TypeError, "rescale_forward: x must be float32, got float64"),
        ("rescale_forward", (z(2, 3), "1/255"), {}, "scale a string",
         TypeError, "rescale_forward: scale must be a number, got '1/255'"),
        ("rescale_forward", (z(2, 3), 0.5), dict(offset=float("nan")), "offset nan",
         ValueError, "rescale_forward: offset must be finite, got nan"),
        ("rescale_forward", (z(2, 3), 0.5), dict(out=z(3, 2)), "out of the wrong shape",
         ValueError, "rescale_forward: out must be float32 of shape (2, 3), got float32 of "
                     "shape (3, 2)"),
        ("rescale_backward", ([1.0, 2.0], 0.5), {}, "dy a list",
         TypeError, "rescale_backward: dy must be a numpy.ndarray, got list"),
        ("rescale_backward", (z(2, 3), None), {}, "scale None",
         TypeError, "rescale_backward: scale must be a number, got None"),
        # batch normalization
        ("batchnorm_train_forward", (z(4), z(4), z(4)), {}, "x of rank 1",
         ValueError, "batchnorm_train_forward: x must have rank >= 2 (batch, ..., channels), "
                     "got rank 1 (shape (4,))"),
        ("batchnorm_train_forward", (z(0, 3), z(3), z(3)), {}, "an empty batch",
         ValueError, "batchnorm_train_forward: x must not be empty, got shape (0, 3)"),
        ("batchnorm_train_forward", (z(2, 3, 3, 4), z(3), z(4)), {}, "gamma of another C",
         ValueError, "batchnorm_train_forward: gamma must be float32 of shape (4,) (x's "
                     "channels), got float32 of shape (3,)"),
        ("batchnorm_train_forward", (z(2, 4), z(4), z(4)), dict(epsilon=0.0), "epsilon 0",
         ValueError, "batchnorm_train_forward: epsilon must be > 0, got 0.0"),
        ("batchnorm_train_forward", (z(2, 4, dtype=np.int32), z(4), z(4)), {}, "x int32",
         TypeError, "batchnorm_train_forward: x must be float32, got int32"),
        ("batchnorm_train_forward", (z(2, 4), z(4), z(4)), dict(out=(z(2, 4), z(3), None)),
         "out mean of the wrong shape",
         ValueError, "batchnorm_train_forward: out[1] must be float32 of shape (4,), got "
                     "float32 of shape (3,)"),
        ("batchnorm_infer_forward", (z(2, 4), z(4), z(4), z(4), z(4, 1)), {},
         "moving_variance of rank 2",
         ValueError, "batchnorm_infer_forward: moving_variance must have rank 1, got rank 2 "
                     "(shape (4, 1))"),
        ("batchnorm_infer_forward", (z(2, 4), z(4), z(4), z(4), np.full(4, -1.0, F32)), {},
         "moving_variance below -epsilon",
         ValueError, "batchnorm_infer_forward: moving_variance + epsilon must be > 0, got a "
                     "minimum of -0.999"),
        ("batchnorm_backward", (z(2, 5), z(2, 4), z(4), z(4), z(4)), {}, "dy of another shape",
         ValueError, "batchnorm_backward: dy must have the shape of x (2, 4), got (2, 5)"),
        ("batchnorm_backward", (z(2, 4), z(2, 4), z(4), z(5), z(4)), {}, "mean of another C",
         ValueError, "batchnorm_backward: mean must be float32 of shape (4,) (x's channels), "
                     "got float32 of shape (5,)"),
        ("batchnorm_backward", (z(2, 4), z(2, 4), z(4), z(4), z(4)), dict(epsilon=-1e-3),
         "epsilon negative",
         ValueError, "batchnorm_backward: epsilon must be > 0, got -0.001"),
        ("batchnorm_fold", (z(3, 3, 2, 4), z(5), z(4), z(4), z(4), z(4)), {},
         "bias of another F",
         ValueError, "batchnorm_fold: bias must be float32 of shape (4,) (kernel's output "
                     "channels), got float32 of shape (5,)"),
        ("batchnorm_fold", (z(3, 3, 2, 4, dtype=np.int32), z(4), z(4), z(4), z(4), z(4)), {},
         "kernel int32", TypeError, "batchnorm_fold: kernel must be float32, got int32"),
        ("batchnorm_fold", (z(1, 1, 2, 4), z(4), z(4), z(4), z(4), np.full(4, -1.0, F32)), {},
         "moving_variance + epsilon < 0",
         ValueError, "batchnorm_fold: moving_variance + epsilon must be > 0, got a minimum of "
                     "-0.999"),
        ("batchnorm_fold", (z(1, 1, 2, 4), z(4), z(4), z(4), z(4), z(4)), dict(epsilon=-1.0),
         "epsilon -1", ValueError, "batchnorm_fold: epsilon must be > 0, got -1.0"),
        ("batchnorm_fold", (z(1, 1, 2, 4), z(4), z(4), z(4), z(4), z(4)),
         dict(out=(z(1, 1, 2, 4), z(3))), "out[1] of another F",
         ValueError, "batchnorm_fold: out[1] must be float32 of shape (4,), got float32 of "
                     "shape (3,)"),
        ("batchnorm_relu_train_forward", (z(2, 3, 3, 4), z(3), z(4)), {}, "gamma of another C",
         ValueError, "batchnorm_train_forward: gamma must be float32 of shape (4,) (x's "
                     "channels), got float32 of shape (3,)"),
        ("batchnorm_relu_train_forward", (z(2, 4, dtype=np.int32), z(4), z(4)), {}, "x int32",
         TypeError, "batchnorm_train_forward: x must be float32, got int32"),
        ("batchnorm_relu_backward", (z(2, 4), z(2, 5), z(2, 4), z(4), z(4), z(4)), {},
         "y of another shape",
         ValueError, "relu_backward: y must have the shape of dy (2, 4), got (2, 5)"),
        ("batchnorm_relu_backward", (z(2, 5), z(2, 5), z(2, 4), z(4), z(4), z(4)), {},
         "dy of another shape than x",
         ValueError, "batchnorm_backward: dy must have the shape of x (2, 4), got (2, 5)"),
        ("batchnorm_relu_backward", (z(2, 4), z(2, 4, dtype=np.int32), z(2, 4), z(4), z(4),
                                     z(4)), {}, "y int32",
         TypeError, "relu_backward: y must be float32, got int32"),
        ("batchnorm_relu_backward", (z(2, 4), z(2, 4), z(2, 4), z(4), z(4), z(4)),
         dict(epsilon=0.0), "epsilon 0",
         ValueError, "batchnorm_backward: epsilon must be > 0, got 0.0"),
        ("batchnorm_moving_update", (z(4), z(4), z(4), z(4)), dict(momentum=1.5),
         "momentum above 1",
         ValueError, "batchnorm_moving_update: momentum must be in [0, 1], got 1.5"),
        ("batchnorm_moving_update", (z(4), z(4), z(4), z(4, dtype=np.float64)), {},
         "var float64",
         TypeError, "batchnorm_moving_update: var must be float32, got float64"),
        ("batchnorm_moving_update", (z(4), z(3), z(4), z(4)), {}, "moving_variance of 3",
         ValueError, "batchnorm_moving_update: moving_variance must be float32 of shape (4,) "
                     "(x's channels), got float32 of shape (3,)"),
        # depthwise conv2d: x (1, 6, 6, 2), w (3, 3, 2, 2) -> y (1, 4, 4, 4)
        ("depthwise_conv2d_forward", (z(6, 6, 2), z(3, 3, 2, 2), z(4)), {}, "x of rank 3",
         ValueError, "depthwise_conv2d_forward: x must have rank 4, got rank 3 (shape (6, 6, 2))"),
        ("depthwise_conv2d_forward", (x, z(3, 3, 3, 2), z(6)), {}, "C mismatch",
         ValueError, "depthwise_conv2d_forward: w expects C_in=3 input channels but x has 2 (x "
                     "shape (1, 6, 6, 2), w shape (3, 3, 3, 2) as (KH, KW, C, depth_multiplier))"),
        ("depthwise_conv2d_forward", (x, z(7, 3, 2, 1), z(2)), {}, "kernel taller than x",
         ValueError, "depthwise_conv2d_forward: kernel height 7 is larger than the input height "
                     "6 with padding='valid'"),
        ("depthwise_conv2d_forward", (z(1, 6, 6, 2, dtype=np.float64), z(3, 3, 2, 2), z(4)), {},
         "x float64",
         TypeError, "depthwise_conv2d_forward: x must be float32, got float64"),
        ("depthwise_conv2d_forward", (x, z(3, 3, 2, 2, dtype=np.float64), z(4)), {},
         "w float64",
         TypeError, "depthwise_conv2d_forward: w must be float32, got float64"),
        ("depthwise_conv2d_forward", (x, z(3, 3, 2, 2), z(2)), {}, "b of C, not C*M",
         ValueError, "depthwise_conv2d_forward: b must have shape (4,), got (2,)"),
        ("depthwise_conv2d_forward", (x, z(3, 3, 2, 2), z(4)), dict(padding="full"),
         "unknown padding",
         ValueError, "depthwise_conv2d_forward: padding must be 'valid' or 'same', got 'full'"),
        ("depthwise_conv2d_forward", (x, z(3, 3, 2, 2), z(4)), dict(stride=(1, 0)), "stride 0",
         ValueError, "depthwise_conv2d_forward: stride must be >= 1, got (1, 0)"),
        ("depthwise_conv2d_forward", (x, z(3, 3, 2, 0), z(0)), {}, "M = 0",
         ValueError, "depthwise_conv2d_forward: empty operand (x shape (1, 6, 6, 2), w shape "
                     "(3, 3, 2, 0))"),
        ("depthwise_conv2d_forward", (x, [[0.0]], z(4)), {}, "w a list",
         TypeError, "depthwise_conv2d_forward: w must be a numpy.ndarray, got list"),
        ("depthwise_conv2d_forward", (x, z(3, 3, 2, 2), z(4)), dict(out=z(1, 4, 4, 2)),
         "out of C channels, not C*M",
         ValueError, "depthwise_conv2d_forward: out must be float32 of shape (1, 4, 4, 4), got "
                     "float32 of shape (1, 4, 4, 2)"),
        ("depthwise_conv2d_backward", (x, z(3, 3, 2, 2), z(1, 4, 4, 2)), {},
         "dy of C channels, not C*M",
         ValueError, "depthwise_conv2d_backward: dy must have shape (1, 4, 4, 4), got "
                     "(1, 4, 4, 2)"),
        ("depthwise_conv2d_backward", (x, z(3, 3, 2, 2), z(1, 4, 4, 4, dtype=np.float64)), {},
         "dy float64",
         TypeError, "depthwise_conv2d_backward: dy must be float32, got float64"),
        ("depthwise_conv2d_backward", (x, z(3, 3, 3, 1), z(1, 4, 4, 3)), {}, "C mismatch",
         ValueError, "depthwise_conv2d_backward: w expects C_in=3 input channels but x has 2 "
                     "(x shape (1, 6, 6, 2), w shape (3, 3, 3, 1) as (KH, KW, C, "
                     "depth_multiplier))"),
        ("depthwise_conv2d_backward", (x, z(3, 3, 2, 2), z(1, 4, 4, 4)),
         dict(out=z(3, 3, 2, 2)), "out not a tuple",
         TypeError, "depthwise_conv2d_backward: out must be a tuple of 3 (arrays or None), got "
                    "ndarray"),
        ("depthwise_conv2d_backward", (x, z(3, 3, 2, 2), z(1, 4, 4, 4)),
         dict(out=(None, z(3, 3, 2, 1), None)), "out[1] of the wrong shape",
         ValueError, "depthwise_conv2d_backward: out[1] must be float32 of shape (3, 3, 2, 2), "
                     "got float32 of shape (3, 3, 2, 1)"),
        # average pooling: x (1, 4, 4, 3), pool 2 -> y (1, 2, 2, 3)
        ("avgpool2d_forward", (z(4, 4, 3),), {}, "x of rank 3",
         ValueError, "avgpool2d_forward: x must have rank 4, got rank 3 (shape (4, 4, 3))"),
        ("avgpool2d_forward", (z(1, 4, 4, 3, dtype=np.int32),), {}, "x int32",
         TypeError, "avgpool2d_forward: x must be float32, got int32"),
        ("avgpool2d_forward", (z(1, 2, 4, 3),), dict(pool=3), "pool taller than x",
         ValueError, "avgpool2d_forward: pool height 3 is larger than the input height 2 with "
                     "padding='valid'"),
        ("avgpool2d_forward", (z(1, 4, 4, 3),), dict(pool=0), "pool 0",
         ValueError, "avgpool2d_forward: pool must be >= 1, got 0"),
        ("avgpool2d_forward", (z(1, 4, 4, 3),), dict(stride=(1, 0)), "stride 0",
         ValueError, "avgpool2d_forward: stride must be >= 1, got (1, 0)"),
        ("avgpool2d_forward", (z(1, 4, 4, 3),), dict(padding="full"), "unknown padding",
         ValueError, "avgpool2d_forward: padding must be 'valid' or 'same', got 'full'"),
        ("avgpool2d_forward", (z(1, 0, 4, 3),), {}, "no rows",
         ValueError, "avgpool2d_forward: empty input x of shape (1, 0, 4, 3)"),
        ("avgpool2d_forward", (z(1, 4, 4, 3),), dict(out=z(1, 2, 2, 2)), "out of the wrong shape",
         ValueError, "avgpool2d_forward: out must be float32 of shape (1, 2, 2, 3), got float32 "
                     "of shape (1, 2, 2, 2)"),
        ("avgpool2d_backward", (yp, (1, 4, 4, 3)), dict(stride=1), "dy of another geometry",
         ValueError, "avgpool2d_backward: dy must have shape (1, 3, 3, 3) (x_shape (1, 4, 4, 3) "
                     "pooled by (2, 2), stride (1, 1), 'valid'), got (1, 2, 2, 3)"),
        ("avgpool2d_backward", (yp, (1, 4, 4, 3)), dict(pool=3, stride=1, padding="same"),
         "dy of another geometry (stride 1)",
         ValueError, "avgpool2d_backward: dy must have shape (1, 4, 4, 3) (x_shape (1, 4, 4, 3) "
                     "pooled by (3, 3), stride (1, 1), 'same'), got (1, 2, 2, 3)"),
        ("avgpool2d_backward", (z(2, 2, 3), (1, 4, 4, 3)), {}, "dy of rank 3",
         ValueError, "avgpool2d_backward: dy must have rank 4, got rank 3 (shape (2, 2, 3))"),
        ("avgpool2d_backward", (z(1, 2, 2, 3, dtype=np.float64), (1, 4, 4, 3)), {}, "dy float64",
         TypeError, "avgpool2d_backward: dy must be float32, got float64"),
        ("avgpool2d_backward", (yp, (1, 4, 4)), {}, "x_shape of rank 3",
         ValueError, "avgpool2d_backward: x_shape must be (N, H, W, C) with every size >= 1, "
                     "got (1, 4, 4)"),
        ("avgpool2d_backward", (yp, None), {}, "x_shape None",
         TypeError, "avgpool2d_backward: x_shape must be a tuple of 4 ints (N, H, W, C), got "
                    "None"),
        ("avgpool2d_backward", (yp, (1, 4, 4, 3)), dict(padding="full"), "unknown padding",
         ValueError, "avgpool2d_backward: padding must be 'valid' or 'same', got 'full'"),
        ("avgpool2d_backward", (yp, (1, 4, 4, 3)), dict(out=z(1, 4, 4, 2)),
         "out of the wrong shape",
         ValueError, "avgpool2d_backward: out must be float32 of shape (1, 4, 4, 3), got float32 "
                     "of shape (1, 4, 4, 2)"),
    ]
    for op, args, kwargs, label, error, message in cases:
        yield ErrorInput(Sample(op, args, kwargs, label), error, message)


def bad_samples():
    """The Samples of error_inputs(), for callers that compare with the reference itself."""
    for case in error_inputs():
        yield case.sample



# -- gradient samples: finite-difference cases of the reference, in float64 --------------

class GradientSample(NamedTuple):
    """A finite-difference case of `op`'s gradient (fastconv.testing.gradcheck runs it).

    build(rng) -> (loss, grads): loss() is a scalar of float64 inputs that the
    checker perturbs in place, grads is ((what, input, analytic gradient), ...).
    L = sum(forward(...) * r) for a fixed random r. `tampered` indexes the
    gradient that a test corrupts to see the check fail.
    """
    op: str
    label: str
    build: Callable
    tampered: int = 0


def _away_from_zero(rng, shape, gap=0.05):
    """Random values with |x| >= gap, so ReLU's kink is never straddled by h."""
    x = rng.uniform(gap, 1.0, shape) * rng.choice([-1.0, 1.0], shape)
    return x.astype(F64)


def _distinct(rng, shape):
    """A random permutation of well-separated values, so pooling has no near-ties."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 - 1.0).astype(F64)


def _conv_grad(shape, k, c_out, stride, padding):
    from . import reference as R

    def build(rng):
        x = rng.standard_normal(shape)
        w = rng.standard_normal(k + (shape[3], c_out)) * 0.5
        b = rng.standard_normal(c_out)
        y = R.conv2d_forward(x, w, b, stride, padding)
        r = rng.standard_normal(y.shape)
        dx, dw, db = R.conv2d_backward(x, w, r, stride, padding)
        loss = lambda: float(np.sum(R.conv2d_forward(x, w, b, stride, padding) * r))  # noqa: E731
        return loss, (("conv2d dx", x, dx), ("conv2d dw", w, dw), ("conv2d db", b, db))
    return GradientSample("conv2d_backward", f"conv2d x{shape} k{k} F{c_out} s{stride} {padding}",
                          build, tampered=1)


def _fused_grad(shape, f, pool):
    """conv + relu + maxpool as one op: the gradient the fused CPU/CUDA kernels must give."""
    from . import reference as R

    def build(rng):
        x = rng.standard_normal(shape)
        w = rng.standard_normal((3, 3, shape[3], f)) * 0.5
        b = rng.standard_normal(f) * 0.1
        y, arg = R.conv2d_relu_maxpool_forward(x, w, b, pool=pool)
        r = rng.standard_normal(y.shape)
        dx, dw, db = R.conv2d_relu_maxpool_backward(x, w, r, y, arg)
        def loss():
            return float(np.sum(R.conv2d_relu_maxpool_forward(x, w, b, pool=pool)[0] * r))
        return loss, (("conv2d_relu_maxpool dx", x, dx), ("conv2d_relu_maxpool dw", w, dw),
                      ("conv2d_relu_maxpool db", b, db))
    return GradientSample("conv2d_relu_maxpool_backward",
                          f"conv2d+relu+maxpool x{shape} F{f} pool {pool}", build)


def _pool_grad(shape, pool, stride, padding):
    from . import reference as R

    def build(rng):
        x = _distinct(rng, shape)
        y, arg = R.maxpool2d_forward(x, pool, stride, padding)
        r = rng.standard_normal(y.shape)
        dx = R.maxpool2d_backward(r, arg, x.shape)
        loss = lambda: float(np.sum(R.maxpool2d_forward(x, pool, stride, padding)[0] * r))  # noqa
        return loss, (("maxpool2d dx", x, dx),)
    return GradientSample("maxpool2d_backward",
                          f"maxpool2d x{shape} pool {pool} stride {stride} {padding}", build)


def _globalpool_grad(kind, shape):
    """Global average or max pooling: dx of L = sum(y * r) (max: distinct values, no ties)."""
    from . import reference as R
    forward = getattr(R, f"global_{kind}pool2d_forward")
    backward = getattr(R, f"global_{kind}pool2d_backward")

    def build(rng):
        x = _distinct(rng, shape)
        r = rng.standard_normal((shape[0], shape[3]))
        if kind == "max":
            dx = backward(r, forward(x)[1], x.shape)
            loss = lambda: float(np.sum(forward(x)[0] * r))  # noqa: E731
        else:
            dx = backward(r, x.shape)
            loss = lambda: float(np.sum(forward(x) * r))  # noqa: E731
        return loss, ((f"global_{kind}pool2d dx", x, dx),)
    return GradientSample(f"global_{kind}pool2d_backward", f"global_{kind}pool2d x{shape}",
                          build)


def _rescale_grad(shape, scale, offset):
    from . import reference as R

    def build(rng):
        x = rng.standard_normal(shape)
        r = rng.standard_normal(shape)
        dx = R.rescale_backward(r, scale)
        loss = lambda: float(np.sum(R.rescale_forward(x, scale, offset) * r))  # noqa: E731
        return loss, (("rescale dx", x, dx),)
    return GradientSample("rescale_backward", f"rescale x{shape} scale {scale}", build)


def _batchnorm_grad(shape):
    """Training-mode batchnorm: dx, dgamma, dbeta of L = sum(y * r), the batch
    statistics recomputed from x at every perturbation (as the forward does)."""
    from . import reference as R

    def build(rng):
        c = shape[-1]
        x = rng.standard_normal(shape) * 1.5 + 0.5
        gamma = rng.standard_normal(c)
        beta = rng.standard_normal(c)
        r = rng.standard_normal(shape)
        _, mean, var = R.batchnorm_train_forward(x, gamma, beta, 1e-3)
        dx, dgamma, dbeta = R.batchnorm_backward(r, x, gamma, mean, var, 1e-3)
        def loss():
            return float(np.sum(R.batchnorm_train_forward(x, gamma, beta, 1e-3)[0] * r))
        return loss, (("batchnorm dx", x, dx), ("batchnorm dgamma", gamma, dgamma),
                      ("batchnorm dbeta", beta, dbeta))
    return GradientSample("batchnorm_backward", f"batchnorm x{shape}", build)


def _batchnorm_relu_grad(shape, gap=0.05):
    """The fused BatchNormalization -> ReLU: dx, dgamma, dbeta of L = sum(y * r), y =
    relu(batchnorm(x)), x drawn again until every pre-relu value is >= gap from 0 (the
    kink is never straddled by the checker's step)."""
    from . import reference as R

    def build(rng):
        c = shape[-1]
        gamma = rng.standard_normal(c)
        beta = rng.standard_normal(c) * 0.5
        while True:
            x = rng.standard_normal(shape) * 1.5 + 0.5
            z, _, _ = R.batchnorm_train_forward(x, gamma, beta, 1e-3)
            if np.abs(z).min() >= gap:
                break
        r = rng.standard_normal(shape)
        y, mean, var = R.batchnorm_relu_train_forward(x, gamma, beta, 1e-3)
        dx, dgamma, dbeta = R.batchnorm_relu_backward(r, y, x, gamma, mean, var, 1e-3)
        def loss():
            return float(np.sum(R.batchnorm_relu_train_forward(x, gamma, beta, 1e-3)[0] * r))
        return loss, (("batchnorm_relu dx", x, dx), ("batchnorm_relu dgamma", gamma, dgamma),
                      ("batchnorm_relu dbeta", beta, dbeta))
    return GradientSample("batchnorm_relu_backward", f"batchnorm+relu x{shape}", build)


def _dense_grad(n, d_in, d_out):
    from . import reference as R

    def build(rng):
        x = rng.standard_normal((n, d_in))
        w = rng.standard_normal((d_in, d_out))
        b = rng.standard_normal(d_out)
        r = rng.standard_normal((n, d_out))
        dx, dw, db = R.dense_backward(x, w, r)
        loss = lambda: float(np.sum(R.dense_forward(x, w, b) * r))  # noqa: E731
        return loss, (("dense dx", x, dx), ("dense dw", w, dw), ("dense db", b, db))
    return GradientSample("dense_backward", f"dense {n}x{d_in} -> {d_out}", build)


def _unary_grad(name, make_x):
    from . import reference as R
    forward, backward = getattr(R, f"{name}_forward"), getattr(R, f"{name}_backward")

    def build(rng):
        x = make_x(rng)
        y = forward(x)
        r = rng.standard_normal(y.shape)
        dx = backward(r, y)
        return (lambda: float(np.sum(forward(x) * r))), ((f"{name} dx", x, dx),)
    return GradientSample(f"{name}_backward", name, build)


def _dropout_grad():
    from . import reference as R

    def build(rng):
        x = rng.standard_normal((3, 4, 5))
        _, mask = R.dropout_forward(x, 0.4, np.random.default_rng(1))
        r = rng.standard_normal(x.shape)
        dx = R.dropout_backward(r, mask)
        def loss():
            return float(np.sum(R.dropout_forward(x, 0.4, np.random.default_rng(1))[0] * r))
        return loss, (("dropout dx", x, dx),)
    return GradientSample("dropout_backward", "dropout rate 0.4", build)


def _bce_grad(shape, weighted=False, label_smoothing=0.0):
    from . import reference as R

    def build(rng):
        z = rng.standard_normal(shape) * 3
        y = (rng.random(shape) > 0.5).astype(F64)
        kw = dict(sample_weight=rng.random(shape[0]) * 2) if weighted else {}
        if label_smoothing:
            kw["label_smoothing"] = label_smoothing
        _, dz = R.binary_crossentropy(y, z, **kw)
        return (lambda: R.binary_crossentropy(y, z, **kw)[0]), (("bce dlogits", z, dz),)
    label = f"binary_crossentropy {shape}" + (" sample_weight" if weighted else "") + \
        (f" label_smoothing {label_smoothing}" if label_smoothing else "")
    return GradientSample("binary_crossentropy", label, build)


def _softmax_ce_grad(n, k, weighted=False, label_smoothing=0.0):
    from . import reference as R

    def build(rng):
        z = rng.standard_normal((n, k)) * 3
        y = rng.integers(0, k, n)
        kw = dict(sample_weight=rng.random(n) * 2) if weighted else {}
        if label_smoothing:
            kw["label_smoothing"] = label_smoothing
        _, dz = R.softmax_crossentropy(y, z, **kw)
        return ((lambda: R.softmax_crossentropy(y, z, **kw)[0]),
                (("softmax_crossentropy dlogits", z, dz),))
    label = f"softmax_crossentropy {n}x{k}" + (" sample_weight" if weighted else "") + \
        (f" label_smoothing {label_smoothing}" if label_smoothing else "")
    return GradientSample("softmax_crossentropy", label, build)


def _regularize_grad(l1, l2):
    """regularize's gradient of its penalty: L = penalty(w), dL/dw = the g it adds to a
    zero g (w kept away from 0, where |w| has no derivative)."""
    from . import reference as R

    def build(rng):
        w = _away_from_zero(rng, (3, 4))
        acc = np.zeros(1)
        g = np.zeros_like(w)
        R.regularize(w, g, l1, l2, acc)

        def loss():
            a = np.zeros(1)
            R.regularize(w, None, l1, l2, a)
            return float(a[0])
        return loss, (("regularize dw", w, g),)
    return GradientSample("regularize", f"regularize l1 {l1} l2 {l2}", build)


def gradient_samples():
    """Every finite-difference case, in the order `fastconv selftest` prints them."""
    return [
        _conv_grad((2, 5, 6, 3), (3, 3), 4, 1, "valid"),
        _conv_grad((1, 7, 6, 1), (3, 2), 3, 2, "same"),
        _conv_grad((1, 6, 5, 2), (2, 3), 2, (2, 1), "valid"),
        _conv_grad((1, 5, 5, 3), (1, 1), 2, 1, "same"),
        _fused_grad((2, 8, 9, 2), 3, 3),
        _pool_grad((2, 7, 6, 3), 2, None, "valid"),
        _pool_grad((1, 8, 7, 2), 3, 2, "valid"),
        _pool_grad((1, 5, 7, 2), 2, None, "same"),
        _globalpool_grad("avg", (2, 5, 3, 3)),
        _globalpool_grad("avg", (1, 1, 4, 5)),
        _globalpool_grad("max", (2, 5, 3, 3)),
        _globalpool_grad("max", (1, 3, 1, 4)),
        _dense_grad(3, 7, 5),
        _dense_grad(1, 4, 1),
        _unary_grad("relu", lambda rng: _away_from_zero(rng, (2, 3, 4, 5))),
        _unary_grad("sigmoid", lambda rng: rng.standard_normal((4, 3)) * 3),
        _unary_grad("softmax", lambda rng: rng.standard_normal((4, 5)) * 2),
        _dropout_grad(),
        _bce_grad((6, 1)),
        _bce_grad((5,)),
        _softmax_ce_grad(5, 4),
        _bce_grad((6, 1), weighted=True),
        _softmax_ce_grad(5, 4, weighted=True),
        _regularize_grad(0.03, 0.2),
        _bce_grad((5, 1), label_smoothing=0.2),
        _softmax_ce_grad(4, 5, weighted=True, label_smoothing=0.3),
        _concat_grad((2, 3, 2), (3, 1, 4)),
        _concat_grad((3,), (2, 5)),
        _rescale_grad((2, 3, 4), 1.0 / 255, -0.5),
        _batchnorm_grad((3, 2, 3, 5)),
        _batchnorm_grad((4, 3)),
        _batchnorm_relu_grad((2, 3, 2, 3)),
        _batchnorm_relu_grad((5, 2)),
        _depthwise_grad((2, 5, 6, 3), (3, 3), 2, 1, "valid"),
        _depthwise_grad((1, 7, 6, 2), (3, 2), 1, 2, "same"),
        _depthwise_grad((1, 6, 5, 3), (2, 3), 3, (2, 1), "same"),
        _avgpool_grad((2, 7, 6, 3), 2, None, "valid"),
        _avgpool_grad((1, 7, 8, 2), 3, 2, "same"),
        _avgpool_grad((1, 5, 7, 2), (2, 3), (1, 2), "same"),
    ]


def _avgpool_grad(shape, pool, stride, padding):
    from . import reference as R
    kw = dict(pool=pool, stride=stride, padding=padding)

    def build(rng):
        x = rng.standard_normal(shape)
        y = R.avgpool2d_forward(x, **kw)
        r = rng.standard_normal(y.shape)
        dx = R.avgpool2d_backward(r, x.shape, **kw)
        loss = lambda: float(np.sum(R.avgpool2d_forward(x, **kw) * r))  # noqa: E731
        return loss, (("avgpool2d dx", x, dx),)
    return GradientSample("avgpool2d_backward",
                          f"avgpool2d x{shape} pool {pool} stride {stride} {padding}", build)


def _depthwise_grad(shape, k, m, stride, padding):
    from . import reference as R

    def build(rng):
        x = rng.standard_normal(shape)
        w = rng.standard_normal(k + (shape[3], m)) * 0.5
        b = rng.standard_normal(shape[3] * m)
        y = R.depthwise_conv2d_forward(x, w, b, stride, padding)
        r = rng.standard_normal(y.shape)
        dx, dw, db = R.depthwise_conv2d_backward(x, w, r, stride, padding)
        def loss():
            return float(np.sum(R.depthwise_conv2d_forward(x, w, b, stride, padding) * r))
        return loss, (("depthwise_conv2d dx", x, dx), ("depthwise_conv2d dw", w, dw),
                      ("depthwise_conv2d db", b, db))
    return GradientSample("depthwise_conv2d_backward",
                          f"depthwise_conv2d x{shape} k{k} M{m} s{stride} {padding}", build,
                          tampered=1)


def _concat_grad(lead, channels):
    """concat_backward as the gradient of concat_forward (add's is the identity)."""
    from . import reference as R

    def build(rng):
        xs = [rng.standard_normal(lead + (c,)) for c in channels]
        r = rng.standard_normal(lead + (sum(channels),))
        dxs = R.concat_backward(r, channels)
        loss = lambda: float(np.sum(R.concat_forward(xs) * r))  # noqa: E731
        return loss, tuple((f"concat dxs[{k}]", x, g) for k, (x, g) in enumerate(zip(xs, dxs)))
    return GradientSample("concat_backward", f"concat {lead} channels {channels}", build)


# -- the table, per op -------------------------------------------------------------------

# Optimizer updates (and clipping, batchnorm_moving_update, accumulate_grad) write into
# their arguments and take no out=.
IN_PLACE = ("sgd_update", "rmsprop_update", "adam_update", "accumulate_grad",
            "batchnorm_moving_update", "sum_squares", "clip_by_norm", "clip_by_value",
            "regularize")


class OpInfo(NamedTuple):
    """One op's entry: its sample inputs, gradient samples and error inputs.

    The inputs are written per kind above (one stream of random numbers serves
    every op, so `fastconv check` and the tests keep drawing the same inputs);
    an OpInfo selects its op's share of each.
    """
    name: str
    fused: bool       # a fused layer op: a backend may leave it out
    takes_out: bool   # fills caller-provided out= buffers (every op but the updates)

    def samples(self, shapes="quick", seed=0):
        return [s for s in samples(shapes, seed) if s.op == self.name]

    def gradient_samples(self):
        return [g for g in gradient_samples() if g.op == self.name]

    def error_inputs(self):
        return [e for e in error_inputs() if e.sample.op == self.name]


OPS = {name: OpInfo(name, name in FUSED, name not in IN_PLACE)
       for name in CONTRACT + FUSED + OPTIONAL}

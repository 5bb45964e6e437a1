"""One table of sample inputs per op (PyTorch's OpInfo, in small).

`samples()` yields Sample(op, args, kwargs, label) for every op of the kernel
contract. The test suite runs each sample on every available backend against
the reference (tests/test_backends_match_reference.py), so a new backend gets
every case for free; `fastconv check` will draw from the same table.

Shapes: 'quick' are small and odd on purpose (batch 1, odd sizes, channel
counts that are multiples of nothing, stride 2, 'same', remainder rows).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

F32 = np.float32


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


def _z(*shape, dtype=F32):
    return np.zeros(shape, dtype)


def bad_samples():
    """Yield a Sample of bad input (one mistake each) for every op, fused ops included.

    The reference's exception type and message are the contract: every backend
    must raise exactly the same for each of these (tests/test_backends_bad_input.py
    runs them on the reference, cpu and cuda; tests/test_cuda_errors.py again
    with device arrays). A fused op checks in the order and words of the
    composition the reference defines it as (fastconv/kernels/reference/fused.py):
    conv2d_relu_maxpool_forward's bad pool is named by maxpool2d_forward, its bad
    bias by conv2d_forward, its bad out= by itself.
    """
    z, rng = _z, np.random.default_rng
    x, w, b = z(1, 6, 6, 2), z(3, 3, 2, 3), z(3)           # conv: y (1, 4, 4, 3)
    y4, yp, ap = z(1, 4, 4, 3), z(1, 2, 2, 3), np.zeros((1, 2, 2, 3), np.int32)
    cases = [
        # conv2d
        ("conv2d_forward", (z(5, 5, 3), z(3, 3, 3, 2), z(2)), {}, "x of rank 3"),
        ("conv2d_forward", (z(1, 5, 5, 3), z(3, 3, 4, 2), z(2)), {}, "C_in mismatch"),
        ("conv2d_forward", (z(1, 2, 5, 3), z(3, 3, 3, 2), z(2)), {}, "kernel taller than x"),
        ("conv2d_forward", (z(1, 5, 5, 3, dtype=np.float64), z(3, 3, 3, 2), z(2)), {},
         "x float64"),
        ("conv2d_forward", (z(1, 5, 5, 3), z(3, 3, 3, 2), z(3)), {}, "b of the wrong size"),
        ("conv2d_forward", (x, w, b), dict(padding="full"), "unknown padding"),
        ("conv2d_forward", (x, w, b), dict(stride=0), "stride 0"),
        ("conv2d_forward", ([[1.0]], w, b), {}, "x a list"),
        ("conv2d_forward", (x, w, b), dict(out=z(1, 4, 4, 2)), "out of the wrong shape"),
        ("conv2d_backward", (z(1, 5, 5, 3), z(3, 3, 3, 2), z(1, 3, 3, 4)), {},
         "dy of the wrong shape"),
        ("conv2d_backward", (x, w, y4), dict(out=w), "out not a tuple"),
        # fused conv2d + relu (+ maxpool)
        ("conv2d_relu_forward", (z(6, 6, 2), w, b), {}, "x of rank 3"),
        ("conv2d_relu_forward", (x, w, z(4)), {}, "b of the wrong size"),
        ("conv2d_relu_forward", (x, w, b), dict(padding="full"), "unknown padding"),
        ("conv2d_relu_forward", (x, w, b), dict(out=z(1, 4, 4, 2)), "out of the wrong shape"),
        ("conv2d_relu_backward", (x, w, y4, z(1, 4, 4, 2)), {}, "y of another shape than dy"),
        ("conv2d_relu_backward", (x, w, z(1, 4, 4, 2), z(1, 4, 4, 2)), {},
         "dy of the wrong shape"),
        ("conv2d_relu_backward", (x, w, z(1, 4, 4, 3, dtype=np.float64), y4), {},
         "dy float64"),
        ("conv2d_relu_backward", (x, z(3, 3, 3, 3), y4, y4), {}, "C_in mismatch"),
        ("conv2d_relu_backward", (x, w, y4, y4), dict(out=(None, None)), "out of 2"),
        ("conv2d_relu_maxpool_forward", (x, w, b), dict(pool=5), "pool larger than y"),
        ("conv2d_relu_maxpool_forward", (x, w, b), dict(pool=0), "pool 0"),
        ("conv2d_relu_maxpool_forward", (x, w, b), dict(pool_padding="full"),
         "unknown pool padding"),
        ("conv2d_relu_maxpool_forward", (x, w, b), dict(pool_stride=(1, 0)), "pool stride 0"),
        ("conv2d_relu_maxpool_forward", (x, z(3, 3, 3, 3), b), {}, "C_in mismatch"),
        ("conv2d_relu_maxpool_forward", (x, w, z(4)), {}, "b of the wrong size"),
        ("conv2d_relu_maxpool_forward", (x, w, b), dict(stride=0), "stride 0"),
        ("conv2d_relu_maxpool_forward", (x, w, b), dict(out=(yp, yp)), "out[1] float32"),
        ("conv2d_relu_maxpool_forward", (x, w, b), dict(out=yp), "out not a tuple"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, yp, ap.astype(np.int64)), {},
         "argmax int64"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, yp, yp), {}, "argmax float32"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, yp, ap + 16), {}, "argmax past the grid"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, yp, ap - 1), {}, "argmax negative"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, z(1, 2, 3, 3), ap), {},
         "y of another shape than dy"),
        ("conv2d_relu_maxpool_backward", (x, w, z(1, 2, 2, 2), z(1, 2, 2, 2), ap[..., :2]), {},
         "dy with the wrong channels"),
        ("conv2d_relu_maxpool_backward", (x, w, z(2, 2, 3), z(2, 2, 3), ap[0]), {},
         "dy of rank 3"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, yp, ap[..., :2]), {},
         "argmax of another shape than dy"),
        ("conv2d_relu_maxpool_backward", (x, w, yp.astype(np.float64), yp, ap), {},
         "dy float64"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, yp, ap), dict(stride=-1), "stride -1"),
        ("conv2d_relu_maxpool_backward", (z(1, 6, 6, 3), w, yp, yp, ap), {}, "C_in mismatch"),
        ("conv2d_relu_maxpool_backward", (x, w, yp, yp, ap), dict(out=(None, None)), "out of 2"),
        # pooling
        ("maxpool2d_forward", (z(1, 2, 2, 1), 3), {}, "pool larger than x"),
        ("maxpool2d_forward", (z(1, 4, 4, 1, dtype=np.int32),), {}, "x int32"),
        ("maxpool2d_forward", (z(4, 4, 1),), {}, "x of rank 3"),
        ("maxpool2d_forward", (z(1, 4, 4, 1),), dict(pool=0), "pool 0"),
        ("maxpool2d_forward", (z(1, 4, 4, 1),), dict(padding="full"), "unknown padding"),
        ("maxpool2d_forward", (z(1, 4, 4, 1),), dict(out=(z(1, 2, 2, 1), z(1, 2, 2, 1))),
         "out[1] float32"),
        ("maxpool2d_backward", (z(1, 2, 2, 1), z(1, 2, 2, 1, dtype=np.int64), (1, 4, 4, 1)), {},
         "argmax int64"),
        ("maxpool2d_backward", (z(1, 2, 2, 1), z(1, 2, 3, 1, dtype=np.int32), (1, 4, 4, 1)), {},
         "argmax of another shape than dy"),
        ("maxpool2d_backward", (z(1, 2, 2, 1), z(1, 2, 2, 1, dtype=np.int32), (1, 4, 4)), {},
         "x_shape of rank 3"),
        ("maxpool2d_backward", (z(1, 2, 2, 1), z(1, 2, 2, 1, dtype=np.int32), (2, 4, 4, 1)), {},
         "x_shape of another batch"),
        ("maxpool2d_backward", (z(1, 2, 2, 1), np.full((1, 2, 2, 1), 16, np.int32),
                                (1, 4, 4, 1)), {}, "argmax past x"),
        # dense
        ("dense_forward", (z(2, 5), z(6, 3), z(3)), {}, "in-features mismatch"),
        ("dense_forward", (z(2, 5, 1), z(5, 3), z(3)), {}, "x of rank 3"),
        ("dense_backward", (z(2, 5), z(5, 3), z(2, 4)), {}, "dy of the wrong shape"),
        # activations
        ("relu_forward", ([[1.0]],), {}, "x a list"),
        ("relu_forward", (z(2, 3, dtype=np.float64),), {}, "x float64"),
        ("relu_forward", (z(2, 3),), dict(out=z(3, 2)), "out of the wrong shape"),
        ("relu_forward", (z(2, 3),), dict(out=z(2, 3, dtype=np.float64)), "out float64"),
        ("relu_backward", (z(2, 3), z(3, 2)), {}, "y of another shape than dy"),
        ("sigmoid_forward", (z(4, dtype=np.int32),), {}, "x int32"),
        ("sigmoid_backward", (z(4), z(5)), {}, "y of another shape than dy"),
        ("softmax_forward", (z(2, 3, 4),), {}, "x of rank 3"),
        ("softmax_backward", (z(2, 3), z(2, 4)), {}, "y of another shape than dy"),
        ("dropout_forward", (z(3), 1.0, rng()), {}, "rate 1"),
        ("dropout_forward", (z(3), -0.1, rng()), {}, "rate < 0"),
        ("dropout_forward", (z(3), 0.5, np.random.RandomState(0)), {}, "a legacy RandomState"),
        ("dropout_backward", (z(3), z(4)), {}, "mask of another shape than dy"),
        # losses
        ("binary_crossentropy", (z(3), z(4, 1)), {}, "y_true of the wrong size"),
        ("binary_crossentropy", (z(4), z(4, 2)), {}, "logits of 2 columns"),
        ("binary_crossentropy", (np.array(["a"] * 4), z(4)), {}, "y_true strings"),
        ("softmax_crossentropy", (np.array([0, 3]), z(2, 3)), {}, "class index out of range"),
        ("softmax_crossentropy", (np.array([0.5, 1.0]), z(2, 3)), {}, "fractional labels"),
        ("softmax_crossentropy", (np.array([0, 1, 2]), z(2, 3)), {}, "3 labels, 2 rows"),
        ("softmax_crossentropy", (np.array([0, 1]), z(2, 3, dtype=np.float64)), {},
         "logits float64"),
        # optimizers
        ("sgd_update", (z(3), z(3), None), dict(lr=0.1, momentum=0.9), "momentum without v"),
        ("sgd_update", (z(3), z(4), None), dict(lr=0.1), "g of another shape than p"),
        ("sgd_update", (z(3), z(3), None), dict(lr=-1.0), "lr < 0"),
        ("sgd_update", (z(3), z(3), z(3, dtype=np.float64)), dict(lr=0.1, momentum=0.9),
         "v float64"),
        ("rmsprop_update", (z(3), z(3), z(2)), dict(lr=0.1), "ms of another shape than p"),
        ("rmsprop_update", (z(3), z(3), z(3)), dict(lr="fast"), "lr a string"),
        ("adam_update", (z(3), z(3), z(3), z(3)), dict(t=0, lr=0.1), "t 0"),
        ("adam_update", (z(3), z(3), z(3), z(2)), dict(t=1, lr=0.1), "v of another shape"),
    ]
    for op, args, kwargs, label in cases:
        yield Sample(op, args, kwargs, label)

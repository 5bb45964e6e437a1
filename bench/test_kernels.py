"""Every kernel at the seed model's layer shapes (batch 32), forward and backward,
on every backend that loads here. Run: pytest bench/ --benchmark-only

Rows are named <backend>-<layer>; `python bench/report.py` turns a saved run
(--benchmark-json) into a table with GFLOP/s, % of peak and the ratio to the
reference.
"""
import numpy as np
import pytest

from . import seed_shapes as S
from .conftest import available, run
from fastconv import kernels

F32 = np.float32
BACKENDS = available()


def _conv_inputs(rng, shape, k, f, stride, padding):
    x = rng.standard_normal(shape, F32)
    w = (rng.standard_normal(k + (shape[3], f), F32) * 0.1).astype(F32)
    b = np.zeros(f, F32)
    oh, ow = S.conv_out(shape, k, stride, padding)
    dy = rng.standard_normal((shape[0], oh, ow, f), F32)
    return x, w, b, dy


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layer", list(S.CONVS))
def test_conv2d_forward(benchmark, backend, layer, rng):
    K = kernels.get(backend)
    shape, k, f, stride, padding = S.CONVS[layer]
    x, w, b, _ = _conv_inputs(rng, shape, k, f, stride, padding)
    run(benchmark, lambda: K.conv2d_forward(x, w, b, stride, padding),
        gflop=S.conv_flops(shape, k, f, stride, padding) / 1e9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layer", list(S.CONVS))
def test_conv2d_backward(benchmark, backend, layer, rng):
    K = kernels.get(backend)
    shape, k, f, stride, padding = S.CONVS[layer]
    x, w, b, dy = _conv_inputs(rng, shape, k, f, stride, padding)
    need_dx = not layer.startswith("conv1")  # the first layer needs no input gradient
    products = 2 if need_dx else 1
    run(benchmark, lambda: K.conv2d_backward(x, w, dy, stride, padding, need_dx=need_dx),
        gflop=products * S.conv_flops(shape, k, f, stride, padding) / 1e9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layer", list(S.POOLS))
def test_maxpool2d_forward(benchmark, backend, layer, rng):
    K = kernels.get(backend)
    shape, pool = S.POOLS[layer]
    x = rng.standard_normal(shape, F32)
    run(benchmark, lambda: K.maxpool2d_forward(x, pool), mbytes=x.nbytes / 1e6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layer", list(S.POOLS))
def test_maxpool2d_backward(benchmark, backend, layer, rng):
    K = kernels.get(backend)
    shape, pool = S.POOLS[layer]
    x = rng.standard_normal(shape, F32)
    y, arg = kernels.reference.maxpool2d_forward(x, pool)
    dy = rng.standard_normal(y.shape, F32)
    run(benchmark, lambda: K.maxpool2d_backward(dy, arg, shape), mbytes=x.nbytes / 1e6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layer", list(S.DENSES))
def test_dense_forward_backward(benchmark, backend, layer, rng):
    K = kernels.get(backend)
    n, d_in, d_out = S.DENSES[layer]
    x = rng.standard_normal((n, d_in), F32)
    w = (rng.standard_normal((d_in, d_out), F32) * 0.01).astype(F32)
    b = np.zeros(d_out, F32)
    dy = rng.standard_normal((n, d_out), F32)

    def step():
        K.dense_forward(x, w, b)
        K.dense_backward(x, w, dy)
    run(benchmark, step, gflop=3 * S.dense_flops(n, d_in, d_out) / 1e9, rounds=10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_forward_backward_pre_pool1(benchmark, backend, rng):
    """The memory-bound pass a fused engine avoids: ReLU over the 148x148x32 activation."""
    K = kernels.get(backend)
    x = rng.standard_normal((S.BATCH, 148, 148, 32), F32)

    def step():
        y = K.relu_forward(x)
        K.relu_backward(x, y)
    run(benchmark, step, mbytes=4 * x.nbytes / 1e6)

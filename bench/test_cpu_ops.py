"""The cpu engine's pool, dense, elementwise, loss and optimizer ops at the seed
model's shapes (batch 32), called as the model layer calls them (with out=
buffers), on cpu and on the NumPy reference. Conv and the fused ops have their
own suite (bench/test_cpu_conv.py); bench/test_kernels.py times every backend
without out=.

    pytest bench/test_cpu_ops.py --benchmark-only --benchmark-json=ops.json
    python bench/report.py ops.json        # ms, GB/s or GFLOP/s, x reference

Both backends come from fastconv.kernels.get(), as the model layer gets them.
"""
import numpy as np
import pytest

from fastconv import kernels

from . import seed_shapes as S
from .conftest import run

F32 = np.float32
BACKENDS = {name: kernels.get(name) for name in ("cpu", "reference")}
R, CPU = BACKENDS["reference"], BACKENDS["cpu"]
PRE_POOL1 = (S.BATCH, 148, 148, 32)
SEED_PARAMS = [(3, 3, 3, 32), (32,), (3, 3, 32, 32), (32,), (3, 3, 32, 64), (64,),
               (6400, 64), (64,), (64, 1), (1,)]


def _rounds(backend):
    return 3 if backend == "reference" else 10


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("layer", list(S.POOLS))
def test_maxpool2d_forward_out(benchmark, backend, layer, rng):
    K = BACKENDS[backend]
    shape, pool = S.POOLS[layer]
    x = rng.standard_normal(shape, F32)
    y, arg = R.maxpool2d_forward(x[:1], pool)
    out = (np.empty((shape[0],) + y.shape[1:], F32), np.empty((shape[0],) + y.shape[1:], np.int32))
    run(benchmark, lambda: K.maxpool2d_forward(x, pool, out=out), mbytes=x.nbytes / 1e6,
        rounds=_rounds(backend))


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("layer", list(S.POOLS))
def test_maxpool2d_backward_out(benchmark, backend, layer, rng):
    K = BACKENDS[backend]
    shape, pool = S.POOLS[layer]
    x = rng.standard_normal(shape, F32)
    y, arg = CPU.maxpool2d_forward(x, pool)
    dy = rng.standard_normal(y.shape, F32)
    dx = np.empty(shape, F32)
    run(benchmark, lambda: K.maxpool2d_backward(dy, arg, shape, out=dx), mbytes=x.nbytes / 1e6,
        rounds=_rounds(backend))


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("layer", list(S.DENSES))
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_dense_out(benchmark, backend, layer, direction, rng):
    K = BACKENDS[backend]
    n, d_in, d_out = S.DENSES[layer]
    x = rng.standard_normal((n, d_in), F32)
    w = (rng.standard_normal((d_in, d_out), F32) * 0.01).astype(F32)
    b = np.zeros(d_out, F32)
    dy = rng.standard_normal((n, d_out), F32)
    y = np.empty((n, d_out), F32)
    grads = (np.empty_like(x), np.empty_like(w), np.empty_like(b))
    if direction == "forward":
        fn, flop = (lambda: K.dense_forward(x, w, b, out=y)), S.dense_flops(n, d_in, d_out)
    else:
        fn, flop = (lambda: K.dense_backward(x, w, dy, out=grads)), 2 * S.dense_flops(n, d_in, d_out)
    run(benchmark, fn, gflop=flop / 1e9, rounds=10 * _rounds(backend))


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("op", ["relu_forward", "relu_backward", "sigmoid_forward",
                                "dropout_backward"])
def test_elementwise_pre_pool1_out(benchmark, backend, op, rng):
    """The memory-bound passes over the 148x148x32 activation (an unfused engine's cost)."""
    K = BACKENDS[backend]
    a = rng.standard_normal(PRE_POOL1, F32)
    b = rng.standard_normal(PRE_POOL1, F32)
    out = np.empty(PRE_POOL1, F32)
    fn = getattr(K, op)
    args = (a,) if op.endswith("_forward") else (a, b)
    streams = len(args) + 1
    run(benchmark, lambda: fn(*args, out=out), mbytes=streams * a.nbytes / 1e6,
        rounds=_rounds(backend))


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_dense_head_elementwise_and_loss(benchmark, backend, rng):
    """The (32, 64) and (32, 1) tail of a step: relu, dropout and sigmoid fwd/bwd, BCE."""
    K = BACKENDS[backend]
    h = rng.standard_normal((S.BATCH, 64), F32)
    mask = np.where(rng.random((S.BATCH, 64)) >= 0.5, F32(2), F32(0))
    z = rng.standard_normal((S.BATCH, 1), F32)
    lab = (rng.random((S.BATCH, 1)) > 0.5).astype(F32)
    bufs = [np.empty_like(h) for _ in range(4)]
    dz = np.empty_like(z)

    def tail():
        K.relu_forward(h, out=bufs[0])
        K.dropout_backward(bufs[0], mask, out=bufs[1])
        K.binary_crossentropy(lab, z, out=(None, dz))
        K.dropout_backward(h, mask, out=bufs[2])
        K.relu_backward(bufs[2], bufs[0], out=bufs[3])
    run(benchmark, tail, rounds=100)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_rmsprop_all_seed_parameters(benchmark, backend, rng):
    """One optimizer step over the seed's 438,369 parameters (10 arrays)."""
    K = BACKENDS[backend]
    params = [rng.standard_normal(s, F32) for s in SEED_PARAMS]
    grads = [rng.standard_normal(s, F32) for s in SEED_PARAMS]
    ms = [np.abs(rng.standard_normal(s, F32)) for s in SEED_PARAMS]

    def step():
        for p, g, m in zip(params, grads, ms):
            K.rmsprop_update(p, g, m, 1e-4, 0.9, 1e-7)
    run(benchmark, step, mbytes=5 * sum(p.nbytes for p in params) / 1e6, rounds=20)

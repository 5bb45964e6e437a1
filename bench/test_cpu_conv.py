"""The cpu engine's conv kernels, plain and fused, at the seed model's layer shapes
(batch 32), against the NumPy reference and, when torch is installed, PyTorch's
conv2d (a benchmark peer only). Run:

    pytest bench/test_cpu_conv.py --benchmark-only --benchmark-json=bench.json
    python bench/report.py bench.json

Rows are named <test>[<backend>-<layer>]. The cpu rows pass out= buffers, as the
model layer does, so they time the steady state (no allocation). FLOPs:
a forward conv is 2*N*OH*OW*KH*KW*C*F; the plain backward counts dw (and dx
where the layer needs it) at the same cost each. The fused pool backward
reports the FLOPs of the unfused backward it replaces ("dense equivalent"):
it only touches the 1 in pool_h*pool_w conv outputs that won their window,
so its GFLOP/s can exceed the machine's peak.
"""
import os

import numpy as np
import pytest

from fastconv import kernels

from . import seed_shapes as S
from .conftest import run

F32 = np.float32
BACKENDS = {name: kernels.get(name) for name in ("reference", "cpu")}
CPU = BACKENDS["cpu"]
# The seed's conv -> relu -> pool blocks: layer name -> pool size.
POOL_OF = dict(zip(S.CONVS, (3, 2, 2)))
# The reference takes seconds per call at batch 32: fewer rounds keep the suite short.
ROUNDS = {"reference": 1, "cpu": 5}


def _layer(rng, layer):
    shape, k, f, stride, padding = S.CONVS[layer]
    x = rng.standard_normal(shape, F32)
    w = (rng.standard_normal(k + (shape[3], f), F32) * 0.1).astype(F32)
    b = np.full(f, 0.01, F32)
    oh, ow = S.conv_out(shape, k, stride, padding)
    flops = S.conv_flops(shape, k, f, stride, padding)
    need_dx = not layer.startswith("conv1")  # the first layer needs no input gradient
    return x, w, b, (shape[0], oh, ow, f), flops, need_dx, dict(stride=stride, padding=padding)


def _grads(x, w, b, need_dx):
    return (np.empty_like(x) if need_dx else None, np.empty_like(w), np.empty_like(b))


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("layer", list(S.CONVS))
def test_conv2d_forward(benchmark, backend, layer, rng):
    K = BACKENDS[backend]
    x, w, b, y_shape, flops, _, kw = _layer(rng, layer)
    y = np.empty(y_shape, F32)
    run(benchmark, lambda: K.conv2d_forward(x, w, b, out=y, **kw), gflop=flops / 1e9,
        rounds=ROUNDS[backend])


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("layer", list(S.CONVS))
def test_conv2d_backward(benchmark, backend, layer, rng):
    K = BACKENDS[backend]
    x, w, b, y_shape, flops, need_dx, kw = _layer(rng, layer)
    dy = rng.standard_normal(y_shape, F32)
    out = _grads(x, w, b, need_dx)
    run(benchmark, lambda: K.conv2d_backward(x, w, dy, need_dx=need_dx, out=out, **kw),
        gflop=(1 + need_dx) * flops / 1e9, rounds=ROUNDS[backend])


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("layer", list(S.CONVS))
def test_conv2d_relu_maxpool_forward(benchmark, backend, layer, rng):
    K = BACKENDS[backend]
    x, w, b, y_shape, flops, _, kw = _layer(rng, layer)
    pool = POOL_OF[layer]
    pooled = (y_shape[0], y_shape[1] // pool, y_shape[2] // pool, y_shape[3])
    out = (np.empty(pooled, F32), np.empty(pooled, np.int32))
    run(benchmark, lambda: K.conv2d_relu_maxpool_forward(x, w, b, pool=pool, out=out, **kw),
        gflop=flops / 1e9, rounds=ROUNDS[backend])


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("layer", list(S.CONVS))
def test_conv2d_relu_maxpool_backward(benchmark, backend, layer, rng):
    K = BACKENDS[backend]
    x, w, b, _, flops, need_dx, kw = _layer(rng, layer)
    pool = POOL_OF[layer]
    y, arg = CPU.conv2d_relu_maxpool_forward(x, w, b, pool=pool, **kw)
    dy = rng.standard_normal(y.shape, F32)
    out = _grads(x, w, b, need_dx)
    benchmark.extra_info["live_fraction"] = float((y > 0).mean())
    run(benchmark,
        lambda: K.conv2d_relu_maxpool_backward(x, w, dy, y, arg, need_dx=need_dx, out=out, **kw),
        gflop=(1 + need_dx) * flops / 1e9, rounds=ROUNDS[backend])


@pytest.mark.parametrize("layer", list(S.CONVS))
def test_conv2d_forward_torch_peer(benchmark, layer, rng):
    """torch.nn.functional.conv2d (+bias), channels_last, 2 threads: the peer to beat."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(int(os.environ.get("FASTCONV_TORCH_THREADS", "2")))
    x, w, b, _, flops, _, kw = _layer(rng, layer)
    if kw["padding"] != "valid" or kw["stride"] != 1:
        pytest.skip("the seed's convs are valid, stride 1")
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
    bt = torch.from_numpy(b)
    with torch.no_grad():
        run(benchmark, lambda: torch.nn.functional.conv2d(xt, wt, bt), gflop=flops / 1e9)


# ---------------------------------------------------------------------------
# Script mode: python -m bench.test_cpu_conv
# The seed's three conv blocks (conv + bias + ReLU + max-pool, forward then the
# gradients the training step needs), fastconv's fused kernels against PyTorch
# (channels_last, autograd) in one process. Two clocks: wall time with every
# thread (what a quiet machine shows), and CPU time of one thread halved (steady
# on a machine shared with other jobs, where wall time is noise).
# ---------------------------------------------------------------------------

def _best(fn, reps, clock, threads):
    import numba
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        fn()
        times = []
        for _ in range(reps):
            t0 = clock()
            fn()
            times.append(clock() - t0)
    finally:
        numba.set_num_threads(before)
    return min(times)


def main(reps=5):
    import time

    import numba
    try:
        import torch
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    threads = numba.config.NUMBA_NUM_THREADS
    clocks = {"wall": (time.perf_counter, threads, 1.0),
              "cpu/2": (time.process_time, 1, 0.5)}
    total = {}
    print(f"{'layer':<22} {'clock':<6} {'fc fwd':>8} {'fc bwd':>8} {'fc sum':>8} "
          f"{'torch fwd':>10} {'torch f+b':>10} {'ratio':>6}   (ms)")
    for layer in S.CONVS:
        x, w, b, _, _, need_dx, kw = _layer(rng, layer)
        pool = POOL_OF[layer]
        y, arg = CPU.conv2d_relu_maxpool_forward(x, w, b, pool=pool, **kw)
        dy = rng.standard_normal(y.shape, F32)
        outs = (np.empty_like(y), np.empty_like(arg))
        grads = _grads(x, w, b, need_dx)

        def fc_fwd():
            CPU.conv2d_relu_maxpool_forward(x, w, b, pool=pool, out=outs, **kw)

        def fc_bwd():
            CPU.conv2d_relu_maxpool_backward(x, w, dy, y, arg, need_dx=need_dx, out=grads, **kw)

        if torch is not None:
            xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(
                memory_format=torch.channels_last).requires_grad_(need_dx)
            wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))).requires_grad_()
            bt = torch.from_numpy(b).requires_grad_()
            dyt = torch.from_numpy(dy).permute(0, 3, 1, 2).contiguous(
                memory_format=torch.channels_last)

            def t_fwd():
                with torch.no_grad():
                    torch.nn.functional.max_pool2d(
                        torch.relu(torch.nn.functional.conv2d(xt, wt, bt)), pool)

            def t_step():
                wt.grad = bt.grad = xt.grad = None
                torch.nn.functional.max_pool2d(
                    torch.relu(torch.nn.functional.conv2d(xt, wt, bt)), pool).backward(dyt)

        for name, (clock, nthreads, scale) in clocks.items():
            f = _best(fc_fwd, reps, clock, nthreads) * scale
            bw = _best(fc_bwd, reps, clock, nthreads) * scale
            tf = ts = float("nan")
            if torch is not None:
                torch.set_num_threads(nthreads)
                tf = _best(t_fwd, reps, clock, nthreads) * scale
                ts = _best(t_step, reps, clock, nthreads) * scale
            acc = total.setdefault(name, [0.0, 0.0])
            acc[0] += f + bw
            acc[1] += ts
            print(f"{layer.split()[0]:<22} {name:<6} {f * 1e3:8.1f} {bw * 1e3:8.1f} "
                  f"{(f + bw) * 1e3:8.1f} {tf * 1e3:10.1f} {ts * 1e3:10.1f} {ts / (f + bw):6.2f}")
    for name, (fc, tt) in total.items():
        print(f"{'all three blocks':<22} {name:<6} {'':>8} {'':>8} {fc * 1e3:8.1f} {'':>10} "
              f"{tt * 1e3:10.1f} {tt / fc:6.2f}")


if __name__ == "__main__":
    main()

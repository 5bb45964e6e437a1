"""The cpu engine's 1x1 convs (fastconv/kernels/cpu/pointwise.py: GEMMs over pixel rows)
at the keras.io xception's shapes (180x180 input, width 1, batch 8): SeparableConv2D's
pointwise halves (stride 1) and the residual shortcuts (stride 2, 'same'). Run:

    pytest bench/test_cpu_pointwise.py --benchmark-only --benchmark-json=bench.json
    NUMBA_NUM_THREADS=1 python -m bench.test_cpu_pointwise [batch] [width] [reps]
    NUMBA_NUM_THREADS=1 python -m bench.test_cpu_pointwise step [batch] [width] [reps]

Rows are named <test>[<layer>]; out= buffers, as the model layer passes them. FLOPs:
2*P*C*F for the forward (P = N*OH*OW pixel rows), twice that for the backward (dx and
dw). Script mode times each kernel against conv2d's general kernels (the code path
before pointwise.py, forced by turning the dispatch off) in one process, interleaved,
in CPU time (time.process_time): on a shared machine that is what stays steady.
"""
import sys
import time

import numpy as np
import pytest

from fastconv import kernels

from . import seed_shapes as S
from .conftest import run

F32 = np.float32
CPU = kernels.get("cpu")


def layers(batch=8, width=1.0):
    """{name: (x shape, F, stride)} of the xception's 1x1 convs."""
    def f(c):
        return max(1, int(round(c * width)))
    out = {}
    sizes = [(90, 128, 256), (90, 256, 256), (45, 256, 512), (45, 512, 512),
             (23, 512, 728), (23, 728, 728), (12, 728, 1024)]
    for h, c, k in sizes:
        out[f"pw {h}x{h} {f(c)}->{f(k)}"] = ((batch, h, h, f(c)), f(k), 1)
    for h, c, k in [(90, 128, 256), (45, 256, 512), (23, 512, 728)]:
        hi = 2 * h
        out[f"s2 {hi}x{hi} {f(c)}->{f(k)}"] = ((batch, hi, hi, f(c)), f(k), 2)
    return out


LAYERS = layers()


def _make(rng, shape, f, stride):
    x = rng.standard_normal(shape, F32)
    w = (rng.standard_normal((1, 1, shape[3], f), F32) * 0.1).astype(F32)
    b = np.full(f, 0.01, F32)
    oh, ow = S.conv_out(shape, (1, 1), stride, "same")
    y = np.empty((shape[0], oh, ow, f), F32)
    dy = rng.standard_normal(y.shape, F32)
    flops = S.conv_flops(shape, (1, 1), f, stride, "same")
    return x, w, b, y, dy, flops


@pytest.mark.parametrize("layer", list(LAYERS))
def test_pointwise_forward(benchmark, layer, rng):
    shape, f, stride = LAYERS[layer]
    x, w, b, y, _, flops = _make(rng, shape, f, stride)
    run(benchmark, lambda: CPU.conv2d_forward(x, w, b, stride, "same", out=y),
        gflop=flops / 1e9)


@pytest.mark.parametrize("layer", list(LAYERS))
def test_pointwise_backward(benchmark, layer, rng):
    shape, f, stride = LAYERS[layer]
    x, w, b, _, dy, flops = _make(rng, shape, f, stride)
    out = (np.empty_like(x), np.empty_like(w), np.empty_like(b))
    run(benchmark, lambda: CPU.conv2d_backward(x, w, dy, stride, "same", out=out),
        gflop=2 * flops / 1e9)


def _dispatch(new):
    """Turn pointwise.py's dispatch on (new) or off (conv2d's general kernels)."""
    from fastconv.kernels.cpu import pointwise as PW
    if not hasattr(PW, "_ON"):
        PW._ON = (PW.forward_pays, PW.grad_w_pays, PW.grad_x_pays)
    PW.forward_pays, PW.grad_w_pays, PW.grad_x_pays = (
        PW._ON if new else (lambda *a: False,) * 3)


def _interleaved(fns, reps):
    """{(name, new): best CPU seconds} of each fn with the dispatch off and on, `reps`
    interleaved rounds after one warm-up round (compiles, workspaces)."""
    best = {}
    try:
        for r in range(reps + 1):
            for new in (False, True):
                _dispatch(new)
                for k, fn in fns.items():
                    t0 = time.process_time()
                    fn()
                    t = time.process_time() - t0
                    if r:
                        best[k, new] = min(t, best.get((k, new), float("inf")))
    finally:
        _dispatch(True)
    return best


def step(batch=8, width=1.0, reps=2):
    """The whole xception training step and inference (180x180), old -> new, CPU ms,
    best of `reps` interleaved rounds in one process."""
    import fastconv
    model = fastconv.models.keras_io_xception((180, 180, 3), width=width, seed=0)
    rng = np.random.default_rng(0)
    x = (255 * rng.random((batch, 180, 180, 3))).astype(F32)
    y = (rng.random(batch) > 0.5).astype(F32)
    fns = {"train": lambda: model.train_on_batch(x, y),
           "infer": lambda: model.predict_on_batch(x)}
    best = _interleaved(fns, reps)
    for k in fns:
        o, n = best[k, False], best[k, True]
        print(f"xception width {width:g} 180x180 batch {batch} {k}: {o * 1e3:.0f} -> "
              f"{n * 1e3:.0f} CPU ms ({batch / o:.1f} -> {batch / n:.1f} img/CPU-s, "
              f"{o / n:.2f}x)")


def main(batch=8, width=1.0, reps=2):
    """Old (conv2d's general kernels) -> new (pointwise.py) per layer, CPU ms, best of
    `reps` interleaved rounds; GFLOP/s beside."""
    rng = np.random.default_rng(0)
    total = {}
    print(f"1x1 convs of the keras.io xception, width {width:g}, batch {batch}: "
          "general kernels -> pointwise.py, CPU ms (GFLOP/s)")
    for name, (shape, f, stride) in layers(batch, width).items():
        x, w, b, y, dy, flops = _make(rng, shape, f, stride)
        grads = (np.empty_like(x), np.empty_like(w), np.empty_like(b))
        fns = {"fwd": (lambda: CPU.conv2d_forward(x, w, b, stride, "same", out=y), flops),
               "dw": (lambda: CPU.conv2d_backward(x, w, dy, stride, "same", need_dx=False,
                                                  out=(None,) + grads[1:]), flops),
               "dx+dw": (lambda: CPU.conv2d_backward(x, w, dy, stride, "same", out=grads),
                         2 * flops)}
        best = _interleaved({k: fn for k, (fn, _) in fns.items()}, reps)
        cells = []
        for k, (_, fl) in fns.items():
            o, n = best[k, False], best[k, True]
            total[k, False] = total.get((k, False), 0) + o
            total[k, True] = total.get((k, True), 0) + n
            cells.append(f"{k} {o * 1e3:7.2f} -> {n * 1e3:7.2f} ({fl / o / 1e9:4.0f} -> "
                         f"{fl / n / 1e9:4.0f})")
        print(f"  {name:<22}" + "   ".join(cells))
    print("  all".ljust(24) + "   ".join(
        f"{k} {total[k, False] * 1e3:7.1f} -> {total[k, True] * 1e3:7.1f}"
        for k in ("fwd", "dw", "dx+dw")))


if __name__ == "__main__":
    args = sys.argv[1:]
    what = step if args[:1] == ["step"] else main
    args = args[1:] if what is step else args
    what(int(args[0]) if args else 8, float(args[1]) if len(args) > 1 else 1.0,
         int(args[2]) if len(args) > 2 else 2)

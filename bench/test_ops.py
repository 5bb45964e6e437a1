"""Every op of the kernel contract, from the op table (fastconv.kernels.opinfo), on
every backend that loads here: the benchmark a new op or backend gets for free.

Each row is one 'seed'-shapes sample of `opinfo.samples("seed")` (the seed model's
layer shapes at batch 8, the shapes `fastconv check --shapes seed` proves), called as
the table calls it (no out= buffers; bench/test_cpu_ops.py and bench/test_cpu_conv.py
time the cpu engine the way the model layer calls it, with out=). Conv and dense rows
record GFLOP (a multiply-add is 2 FLOPs), the others the bytes of their array inputs.

    pytest bench/test_ops.py --benchmark-only --benchmark-json=ops.json
    python bench/report.py ops.json          # ms, GFLOP/s or GB/s, x reference
"""
import numpy as np
import pytest

from fastconv import kernels
from fastconv.kernels.opinfo import samples

from . import seed_shapes as S
from .conftest import available, run

BACKENDS = available()
SAMPLES = list(samples("seed"))


def _conv_products(sample):
    """How many conv-sized products the op computes (forward 1; backward dw, plus dx)."""
    if sample.op.endswith("_forward"):
        return 1
    return 2 if sample.kwargs.get("need_dx", True) else 1


def _napkin(sample):
    """(gflop, mbytes) of one call: FLOPs for conv and dense, input bytes for the rest."""
    op, args, kw = sample.op, sample.args, sample.kwargs
    if op.startswith("conv2d"):
        x, w = args[0], args[1]
        flops = S.conv_flops(x.shape, w.shape[:2], w.shape[3], kw["stride"], kw["padding"])
        return _conv_products(sample) * flops / 1e9, None
    if op.startswith("dense"):
        x, w = args[0], args[1]
        flops = S.dense_flops(x.shape[0], w.shape[0], w.shape[1])
        return _conv_products(sample) * flops / 1e9, None
    nbytes = sum(a.nbytes for a in args if isinstance(a, np.ndarray))
    return None, nbytes / 1e6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sample", SAMPLES, ids=[f"{s.op}-{s.label}" for s in SAMPLES])
def test_op(benchmark, backend, sample):
    K = kernels.get(backend)
    fn = getattr(K, sample.op, None)
    if fn is None:  # a fused op the backend leaves to the model layer's composition
        pytest.skip(f"backend {backend} has no {sample.op}")
    gflop, mbytes = _napkin(sample)
    run(benchmark, lambda: fn(*sample.args, **sample.kwargs), gflop=gflop, mbytes=mbytes,
        rounds=2 if backend == "reference" else 5)

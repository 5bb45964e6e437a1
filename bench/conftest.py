import numpy as np
import pytest

from fastconv import kernels


def available(names=kernels.BACKENDS):
    out = []
    for name in names:
        try:
            kernels.get(name)
            out.append(name)
        except kernels.BackendUnavailable:
            pass
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def run(benchmark, fn, *, gflop=None, mbytes=None, rounds=3):
    """Time fn with pytest-benchmark and record the napkin math in extra_info."""
    if gflop is not None:
        benchmark.extra_info["gflop"] = gflop
    if mbytes is not None:
        benchmark.extra_info["mbytes"] = mbytes
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)

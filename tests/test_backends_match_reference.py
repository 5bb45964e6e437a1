"""Every sample of the op table (fastconv.kernels.opinfo) on every available backend.

This is the test a new backend gets for free: once `kernels.get(name)` loads
it, each op is compared with the reference (rtol 1e-4, atol 1e-5, float32).
"""
import numpy as np
import pytest

from fastconv import kernels
from fastconv.kernels.opinfo import samples
from fastconv.testing import assert_matches_reference

from .backends import available_backends

FOUND, _ = available_backends()
SAMPLES = list(samples("quick"))


@pytest.mark.parametrize("backend", FOUND)
@pytest.mark.parametrize("sample", SAMPLES, ids=[f"{s.op}-{s.label}" for s in SAMPLES])
def test_backend_matches_reference(backend, sample):
    module = kernels.get(backend)
    if sample.op in kernels.FUSED and not hasattr(module, sample.op):
        pytest.skip(f"{backend} has no fused {sample.op}; the model layer composes it")
    assert_matches_reference(backend, sample.op, *sample.args, rtol=1e-4, atol=1e-5,
                             **sample.kwargs)


def test_table_covers_the_whole_contract():
    assert {s.op for s in SAMPLES} == set(kernels.CONTRACT + kernels.FUSED)


def test_out_buffers_are_filled_and_returned(rng):
    for backend in FOUND:
        K = kernels.get(backend)
        x = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
        w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
        b = rng.standard_normal(4).astype(np.float32)
        y = np.empty((2, 4, 3, 4), np.float32)
        got = K.conv2d_forward(x, w, b, out=y)
        assert got is y
        np.testing.assert_allclose(y, kernels.reference.conv2d_forward(x, w, b), rtol=1e-4,
                                   atol=1e-5)
        dw, db = np.empty_like(w), np.empty_like(b)
        dx, dw2, db2 = K.conv2d_backward(x, w, y, need_dx=False, out=(None, dw, db))
        assert dx is None and dw2 is dw and db2 is db
        with pytest.raises(ValueError, match=r"out must be float32 of shape \(2, 4, 3, 4\)"):
            K.conv2d_forward(x, w, b, out=np.empty((2, 4, 3, 5), np.float32))

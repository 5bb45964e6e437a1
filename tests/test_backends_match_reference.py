"""Every sample of the op table (fastconv.opcases) on every available backend.

This is the test a new backend gets for free: once `kernels.get(name)` loads
it, each op is compared with the reference (rtol 1e-4, atol 1e-5, float32).
"""
import pytest

from fastconv.opcases import samples
from fastconv.testing import assert_matches_reference

from .backends import available_backends

FOUND, _ = available_backends()
SAMPLES = list(samples("quick"))


@pytest.mark.parametrize("backend", FOUND)
@pytest.mark.parametrize("sample", SAMPLES, ids=[f"{s.op}-{s.label}" for s in SAMPLES])
def test_backend_matches_reference(backend, sample):
    assert_matches_reference(backend, sample.op, *sample.args, rtol=1e-4, atol=1e-5,
                             **sample.kwargs)


def test_table_covers_the_whole_contract():
    from fastconv.kernels import CONTRACT
    assert {s.op for s in SAMPLES} == set(CONTRACT)

"""Every op of the op table (fastconv.kernels.opinfo) on every backend, three ways.

This is the test a new backend or op gets from its table entry:
  * every sample matches the reference (rtol 1e-4, atol 1e-5, float32), once
    `kernels.get(name)` loads the backend;
  * every error input raises the reference's exception type and message, word
    for word, so a message never depends on the backend the user picked. The
    cuda package is called directly with host arrays: its checks run before
    anything touches the device, so no GPU (and no simulator) is needed; it runs
    again through kernels.get("cuda") under the simulator here, and with
    stand-ins for device arrays in tests/test_cuda_errors.py;
  * every op that takes out= fills the caller's buffers with the values it
    returns without them, and returns those very buffers.
"""
import copy
import importlib

import numpy as np
import pytest

from fastconv import kernels
from fastconv.kernels import reference as R
from fastconv.kernels.opinfo import OPS, bad_samples, error_inputs, gradient_samples, samples
from fastconv.testing import assert_matches_reference

from .backends import available_backends

FOUND, _ = available_backends()
SAMPLES = list(samples("quick"))
ERRORS = list(error_inputs())
BAD = list(bad_samples())
OUT_SAMPLES = [s for s in SAMPLES if OPS[s.op].takes_out]
TABLE = kernels.CONTRACT + kernels.FUSED + kernels.OPTIONAL


def _ids(table):
    return [f"{s.op}-{s.label}" for s in table]


def _backend_with(backend, op):
    """kernels.get(backend), skipping a fused op the backend leaves to the model layer
    and an optional op it does not export yet."""
    module = kernels.get(backend)
    if op in kernels.FUSED and not hasattr(module, op):
        pytest.skip(f"{backend} has no fused {op}; the model layer composes it")
    return _skip_unless_exported(module, backend, op)


def _skip_unless_exported(module, backend, op):
    if op in kernels.OPTIONAL and not hasattr(module, op):
        pytest.skip(f"{backend} does not export the optional op {op} yet")
    return module


# -- the table ---------------------------------------------------------------------------

def test_table_covers_the_whole_contract():
    assert {s.op for s in SAMPLES} == set(TABLE)


def test_the_table_has_bad_input_for_every_op():
    assert {s.op for s in BAD} == set(TABLE)


def test_every_op_has_one_entry_with_samples_and_error_inputs():
    assert list(OPS) == list(TABLE)
    for name, info in OPS.items():
        assert info.name == name and info.fused == (name in kernels.FUSED)
        assert info.samples() and info.error_inputs(), name
    assert {g.op for g in gradient_samples()} <= set(OPS)


# -- 1. against the reference ------------------------------------------------------------

@pytest.mark.parametrize("backend", FOUND)
@pytest.mark.parametrize("sample", SAMPLES, ids=_ids(SAMPLES))
def test_backend_matches_reference(backend, sample):
    _backend_with(backend, sample.op)
    assert_matches_reference(backend, sample.op, *sample.args, rtol=1e-4, atol=1e-5,
                             **sample.kwargs)


# -- 2. error inputs: the reference's exception and message ------------------------------

def _backend(name):
    """The backend module; cuda's package even where no device can run it (the checks
    come first), skipped only when numba-cuda is not installed."""
    if name == "cuda" and name not in FOUND:
        pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
        return importlib.import_module("fastconv.kernels.cuda")
    if name not in FOUND:
        pytest.skip(f"backend {name} does not load here")
    return kernels.get(name)


def error_of(fn, args, kwargs):
    """(exception type name, message) that fn(*args, **kwargs) raises, or None."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # the type is part of what is compared
        return type(exc).__name__, str(exc)
    return None


@pytest.mark.parametrize("case", ERRORS, ids=_ids(e.sample for e in ERRORS))
def test_the_reference_raises_the_tables_error(case):
    s = case.sample
    assert error_of(getattr(R, s.op), s.args, s.kwargs) == (case.error.__name__, case.message)


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("sample", BAD, ids=_ids(BAD))
def test_bad_input_raises_the_references_error(backend, sample):
    want = error_of(getattr(R, sample.op), sample.args, sample.kwargs)
    assert want is not None, f"the reference accepts {sample.op} {sample.label}: not bad input"
    module = _skip_unless_exported(_backend(backend), backend, sample.op)
    got = error_of(getattr(module, sample.op), sample.args, sample.kwargs)
    assert got == want, f"{backend}.{sample.op} ({sample.label})"


SIM = """
import json
from fastconv import kernels
from fastconv.kernels.opinfo import bad_samples
K = kernels.get("cuda")
out = []
for s in bad_samples():
    if not hasattr(K, s.op):
        out.append("absent")
        continue
    try:
        getattr(K, s.op)(*s.args, **s.kwargs)
        out.append(None)
    except Exception as exc:
        out.append([type(exc).__name__, str(exc)])
print("RESULT:" + json.dumps(out))
"""


def test_cuda_under_the_simulator_raises_the_references_errors():
    """The same table through kernels.get('cuda') under the simulator, as a model on
    NUMBA_ENABLE_CUDASIM=1 calls it (a child process: the simulator is chosen at import)."""
    import json
    import os
    import subprocess
    import sys
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    proc = subprocess.run([sys.executable, "-c", SIM], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.split("RESULT:", 1)[1])
    want = [error_of(getattr(R, s.op), s.args, s.kwargs) for s in BAD]
    differ = [f"{s.op} ({s.label}): cuda {g}, reference {list(w)}"
              for s, g, w in zip(BAD, got, want)
              if g != list(w) and not (g == "absent" and s.op in kernels.OPTIONAL)]
    assert not differ, "\n".join(differ)


# -- 3. out= buffers ---------------------------------------------------------------------

def _buffers(result):
    """Caller buffers shaped like `result`, holding garbage the op must overwrite:
    an array for each array output, None elsewhere (a loss's scalar, dx without need_dx)."""
    def buffer(r):
        if not isinstance(r, np.ndarray):
            return None
        return np.full(r.shape, np.nan if r.dtype.kind == "f" else -7, r.dtype)
    if isinstance(result, tuple):
        return tuple(buffer(r) for r in result)
    return buffer(result)


def _live(op, k, a, expected):
    """A fused pool's argmax is defined only where y > 0 (as compare_to_reference has it)."""
    if op == "conv2d_relu_maxpool_forward" and k == 1:
        return a[expected[0] > 0]
    return a


@pytest.mark.parametrize("backend", FOUND)
@pytest.mark.parametrize("sample", OUT_SAMPLES, ids=_ids(OUT_SAMPLES))
def test_out_buffers_get_the_results_and_are_returned(backend, sample):
    K = _backend_with(backend, sample.op)
    op = getattr(K, sample.op)
    # copies: dropout's generator must draw the same numbers in both calls
    expected = op(*copy.deepcopy(sample.args), **copy.deepcopy(sample.kwargs))
    out = _buffers(expected)
    got = op(*copy.deepcopy(sample.args), out=out, **copy.deepcopy(sample.kwargs))
    if not isinstance(expected, tuple):
        assert got is out
        got, out, expected = (got,), (out,), (expected,)
    assert isinstance(got, tuple) and len(got) == len(expected)
    for k, (g, o, e) in enumerate(zip(got, out, expected)):
        where = f"{backend}.{sample.op} out[{k}]"
        if o is None:  # a loss's scalar or a skipped dx: as returned without out=
            assert type(g) is type(e) and g == e, where
            continue
        assert g is o, f"{where}: not the caller's buffer"
        assert np.array_equal(_live(sample.op, k, o, expected),
                              _live(sample.op, k, e, expected), equal_nan=True), where


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

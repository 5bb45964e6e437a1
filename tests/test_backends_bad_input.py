"""One table of bad inputs (fastconv.kernels.opinfo.bad_samples) on every backend.

The reference's exception type and message are the contract: the cpu and the
cuda backend must raise exactly the same for every case, fused ops included,
so a message never depends on the backend the user picked. The cuda package is
called directly with host arrays: its checks run before anything touches the
device, so no GPU (and no simulator) is needed; tests/test_cuda_errors.py runs
the same table again with stand-ins for device arrays.
"""
import importlib

import pytest

from fastconv import kernels
from fastconv.kernels import reference as R
from fastconv.kernels.opinfo import bad_samples

from .backends import available_backends

FOUND, _ = available_backends()
BAD = list(bad_samples())


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


def test_the_table_has_bad_input_for_every_op():
    assert {s.op for s in BAD} == set(kernels.CONTRACT + kernels.FUSED)


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("sample", BAD, ids=[f"{s.op}-{s.label}" for s in BAD])
def test_bad_input_raises_the_references_error(backend, sample):
    want = error_of(getattr(R, sample.op), sample.args, sample.kwargs)
    assert want is not None, f"the reference accepts {sample.op} {sample.label}: not bad input"
    module = _backend(backend)
    got = error_of(getattr(module, sample.op), sample.args, sample.kwargs)
    assert got == want, f"{backend}.{sample.op} ({sample.label})"


SIM = """
import json
from fastconv import kernels
from fastconv.kernels.opinfo import bad_samples
K = kernels.get("cuda")
out = []
for s in bad_samples():
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
              for s, g, w in zip(BAD, got, want) if g != list(w)]
    assert not differ, "\n".join(differ)

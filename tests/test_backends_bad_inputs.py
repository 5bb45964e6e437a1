"""One table of bad inputs (fastconv.opcases.bad_samples), run on every backend: each
raises the reference's exception type with the reference's text, word for word. Before,
the cuda fused ops named themselves (`conv2d_relu_maxpool_forward: b must ...`) where the
reference and the cpu said `conv2d_forward: b must ...`, and a test pinned that."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from fastconv import kernels
from fastconv.opcases import bad_samples

from .backends import available_backends

FOUND, MISSING = available_backends()
R = kernels.get("reference")
SAMPLES = list(bad_samples())


def _error(fn, sample):
    try:
        fn(*sample.args, **sample.kwargs)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


REFERENCE = [_error(getattr(R, s.op), s) for s in SAMPLES]


def test_the_reference_refuses_every_bad_sample():
    assert "no error" not in REFERENCE


@pytest.mark.skipif("cpu" not in FOUND, reason=MISSING.get("cpu", ""))
@pytest.mark.parametrize("k", range(len(SAMPLES)), ids=[s.label for s in SAMPLES])
def test_cpu_raises_the_reference_message(k):
    cpu = kernels.get("cpu")
    assert _error(getattr(cpu, SAMPLES[k].op), SAMPLES[k]) == REFERENCE[k]


SIM = textwrap.dedent("""
    import json
    from fastconv import kernels
    from fastconv.opcases import bad_samples
    K = kernels.get("cuda")
    out = []
    for s in bad_samples():
        try:
            getattr(K, s.op)(*s.args, **s.kwargs)
            out.append("no error")
        except Exception as exc:
            out.append(f"{type(exc).__name__}: {exc}")
    print("RESULT:" + json.dumps(out))
""")


def test_cuda_raises_the_reference_messages_under_the_simulator():
    pytest.importorskip("numba.cuda")
    proc = subprocess.run([sys.executable, "-c", SIM], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    cuda = json.loads(proc.stdout.split("RESULT:", 1)[1])
    differ = [(s.op, s.label, c, r) for s, c, r in zip(SAMPLES, cuda, REFERENCE) if c != r]
    assert not differ, "\n".join(f"{op} {label}:\n  cuda: {c}\n  ref:  {r}"
                                 for op, label, c, r in differ)

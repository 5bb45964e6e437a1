"""One way to run a check under the CUDA simulator from a test.

NUMBA_ENABLE_CUDASIM=1 must be set before numba.cuda is imported, so a simulator check
runs in a child process that prints one line "RESULT:" + JSON. run() starts that child
with the simulator on, this checkout first on PYTHONPATH (a child started from a file
under tests/ would otherwise import whichever fastconv the interpreter finds first, e.g.
another checkout's editable install) and the checkout as its working directory, and
returns the parsed JSON. A child that exits with status 3 says the cuda backend cannot
load (its stdout says why): the test is skipped.
"""
import json
import os
import subprocess
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def env():
    """os.environ with the simulator on and this checkout first on PYTHONPATH."""
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
                PYTHONPATH=ROOT + (os.pathsep + path if path else ""))


def run(script, *args, timeout=600):
    """Run `script` (Python source, or the path of a .py file) with `args` under the
    simulator; the JSON after "RESULT:" in its stdout. Fails with the tails of the
    child's output when it exits non-zero or prints no result."""
    argv = [script] if script.endswith(".py") and os.path.isfile(script) else ["-c", script]
    proc = subprocess.run([sys.executable, *argv, *args], env=env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode == 3:
        pytest.skip(f"cuda backend under the simulator: {proc.stdout.strip()}")
    assert proc.returncode == 0 and "RESULT:" in proc.stdout, \
        proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.split("RESULT:", 1)[1])


# The start of a cuda script: skip (exit 3) when the cuda backend cannot load; the
# checkout (the child's working directory) importable, so `from tests.x import y` works.
CUDA_SKIP = """
import json, sys
import numpy as np
from fastconv import kernels
try:
    kernels.get("cuda")
except kernels.BackendUnavailable as exc:
    print("SKIP:", exc)
    sys.exit(3)
sys.path.insert(0, ".")
"""

# The start of a cuda model script: CUDA_SKIP, and launch configurations patched down so
# that small inputs still need several blocks.
CUDA_PRELUDE = CUDA_SKIP + """from fastconv.kernels.cuda import _launch
_launch.ELEMENTWISE = _launch.POOL = _launch.REDUCE = 32   # fewer simulated threads
"""

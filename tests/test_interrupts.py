"""Ctrl-C at random moments inside the Numba kernels reaches the caller as a
KeyboardInterrupt (issue 12 item 11): before, 19 of 20 interrupts of a conv loop came
out as `SystemError: CPUDispatcher(...) returned a result with an exception set`."""
import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest

from .backends import available_backends

FOUND, MISSING = available_backends()

# The child runs one kind of loop (a kernel, or a model's predict) until interrupted,
# reports what each interrupt raised and goes on; almost all of its time is in Numba.
CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import fastconv
    from fastconv import kernels, layers as L
    K = kernels.get("cpu")
    rng = np.random.default_rng(0)
    if sys.argv[1] == "kernel":
        x = rng.standard_normal((8, 48, 48, 16), dtype=np.float32)
        w = rng.standard_normal((3, 3, 16, 32), dtype=np.float32)
        b = np.zeros(32, np.float32)
        work = lambda: K.conv2d_forward(x, w, b)
    else:
        model = fastconv.Sequential([
            L.Conv2D(16, 3, activation="relu", input_shape=(48, 48, 3)),
            L.MaxPooling2D(2), L.Conv2D(16, 3, activation="relu"), L.Flatten(),
            L.Dense(1, activation="sigmoid")], device="cpu", seed=0)
        x = rng.random((16, 48, 48, 3), dtype=np.float32)
        work = lambda: model.predict(x, batch_size=16)
    work()
    print("ready", flush=True)
    while True:
        try:
            while True:
                work()
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
        except BaseException as exc:
            print("other", type(exc).__name__, flush=True)
""")


@pytest.mark.skipif("cpu" not in FOUND, reason=MISSING.get("cpu", ""))
@pytest.mark.parametrize("loop", ["kernel", "predict"])
def test_sigint_inside_numba_kernels_is_a_keyboard_interrupt(loop):
    child = subprocess.Popen([sys.executable, "-c", CHILD, loop], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = []
    try:
        assert child.stdout.readline().strip() == "ready"
        pick = random.Random(0)
        for _ in range(10):
            # most of the child's time is inside a kernel: a random moment lands there
            signal_after = pick.uniform(0.02, 0.15)
            try:
                child.wait(timeout=signal_after)
            except subprocess.TimeoutExpired:
                pass
            assert child.poll() is None, f"the child died: {seen}"
            child.send_signal(signal.SIGINT)
            seen.append(child.stdout.readline().strip())
    finally:
        child.kill()
        child.wait()
    assert seen == ["KeyboardInterrupt"] * 10, seen

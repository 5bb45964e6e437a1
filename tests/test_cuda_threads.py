"""The cuda backend's cached device buffers belong to one Python thread and one CUDA
context, and set_tiles() refuses once a conv kernel has compiled (issue 12 items 1, 18).

No GPU needed: numba.cuda's current_context and device_array are replaced by stand-ins
(a context object per "device", host arrays as buffers), which is all the caches touch.
The simulator cannot check concurrency itself: it refuses two kernel launches at once.
"""
import os
import threading

import numpy as np
import pytest

pytest.importorskip("numba.cuda")
if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("needs numba-cuda's real dispatchers (NUMBA_ENABLE_CUDASIM=1 is set)",
                allow_module_level=True)

from numba import cuda  # noqa: E402

from fastconv.kernels.cuda import _mem, conv2d, losses  # noqa: E402


class FakeContext:
    """What the caches read of a numba Context: it has a handle (and an id)."""

    def __init__(self, handle):
        self.handle = handle
        self.id = 0


@pytest.fixture
def fake_cuda(monkeypatch):
    """cuda.current_context() returns `state['ctx']`; device_array makes host arrays."""
    state = {"ctx": FakeContext(1)}
    monkeypatch.setattr(cuda, "current_context", lambda devnum=None: state["ctx"])
    monkeypatch.setattr(cuda, "device_array", lambda shape, dtype=np.float32:
                        np.empty(shape, dtype))
    return state


def _in_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def test_workspaces_and_loss_scratch_belong_to_their_thread(fake_cuda):
    ws = _mem.workspace("test_ws", (3, 4))
    assert _mem.workspace("test_ws", (3, 4)) is ws              # reused by its thread
    other = _in_thread(lambda: _mem.workspace("test_ws", (3, 4)))
    assert other is not ws and other.shape == (3, 4)
    scratch = losses._scratch()
    assert losses._scratch() is scratch
    theirs = _in_thread(losses._scratch)
    assert theirs[0] is not scratch[0] and theirs[1] is not scratch[1]


def test_workspaces_and_loss_scratch_are_keyed_by_the_cuda_context(fake_cuda):
    first = fake_cuda["ctx"]
    ws, scratch = _mem.workspace("test_ctx", (5,)), losses._scratch()
    # A new context (another device, or after cuda.close()), even one whose driver handle
    # equals the old one's, gets its own buffers.
    fake_cuda["ctx"] = FakeContext(first.handle)
    ws2, scratch2 = _mem.workspace("test_ctx", (5,)), losses._scratch()
    assert ws2 is not ws and scratch2[0] is not scratch[0]
    assert _mem.workspace("test_ctx", (5,)) is ws2
    fake_cuda["ctx"] = first                                        # back on the first
    assert _mem.workspace("test_ctx", (5,)) is ws
    assert losses._scratch()[0] is scratch[0]


def _tiles():
    return (conv2d.BM, conv2d.BN, conv2d.BK, conv2d.TM, conv2d.DW_BM, conv2d.DW_BK)


def test_set_tiles_after_a_conv_kernel_compiled_raises():
    before = _tiles()
    conv2d.set_tiles()                       # nothing compiled: allowed (the defaults)
    overloads = conv2d.conv2d_fwd_tile.overloads
    assert not overloads, "a conv kernel compiled in this process: test needs a fresh one"
    overloads[("stand-in signature",)] = object()     # what a first launch leaves behind
    try:
        with pytest.raises(RuntimeError, match=r"set_tiles: conv2d_fwd_tile already compiled"):
            conv2d.set_tiles(bm=8, bn=4, bk=4, tm=2)
        assert _tiles() == before            # kernels and launchers still agree
    finally:
        overloads.clear()
        conv2d.set_tiles()
    assert _tiles() == before

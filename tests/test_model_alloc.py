"""A steady-state training step allocates no buffers: the model layer hands every
kernel an out= buffer it allocated once per batch size.

The reference engine allocates inside its own ops (it computes in float64 and
copies into out=), so the model layer's own allocations are measured on a
"null" backend whose ops only check that they got out= buffers and write
into them in place. Backends other than the reference that load here (cpu,
cuda) are measured with their real kernels: Python/NumPy heap allocations
under tracemalloc (Numba's own runtime allocator is not traced).
"""
import tracemalloc
import types

import numpy as np
import pytest

from fastconv import kernels
from fastconv.kernels import _host

from .model_helpers import discs_and_squares, tiny_convnet

# A step may create a few short-lived Python objects (the loss float, kwargs dicts,
# shape tuples from argument checks): about 0.7 KiB on the reference's model layer and
# 2.6 KiB with the cpu engine's checks. The batch buffers are far larger (x: 64 x 16 x 16 x 1
# float32 is 64 KiB; the dense activations and dropout mask 64 x 16 float32 are 4 KiB).
MAX_TRANSIENT_BYTES = 4096
# Python objects a step leaves behind: CPython keeps freed tuples and floats on its free
# lists, which tracemalloc still counts, so a backend whose checks create many shape tuples
# shows a small positive net per step until the free lists fill (measured on cpu: 1.3 KiB a
# step, levelling off at ~340 KiB after ~600 steps). NumPy buffers must net to exactly 0.
MAX_NET_OBJECT_BYTES = 2048


def _fill(buf):
    assert isinstance(buf, np.ndarray), f"out must be a buffer, got {type(buf).__name__}"
    buf[...] = 0
    return buf


def _fill_all(out, expect_none=()):
    assert isinstance(out, tuple), f"out must be a tuple, got {type(out).__name__}"
    for k, o in enumerate(out):
        if k in expect_none:
            assert o is None
        else:
            _fill(o)
    return out


def null_backend():
    """Every contract and fused op, computing nothing, insisting on out= buffers."""
    calls = {}

    def op(name, fn):
        def wrapped(*args, out=None, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            assert out is not None, f"{name} was called without out="
            return fn(out, *args, **kwargs)
        return wrapped

    def backward(out, *args, need_dx=True, **kwargs):
        return _fill_all(out, () if need_dx else (0,))

    def loss(out, *args):
        _fill(out[1])
        return 0.5, out[1]

    ops = {
        "conv2d_forward": lambda out, *a, **k: _fill(out),
        "conv2d_relu_forward": lambda out, *a, **k: _fill(out),
        "conv2d_relu_maxpool_forward": lambda out, *a, **k: _fill_all(out),
        "maxpool2d_forward": lambda out, *a, **k: _fill_all(out),
        "dense_forward": lambda out, *a, **k: _fill(out),
        "conv2d_backward": backward, "conv2d_relu_backward": backward,
        "conv2d_relu_maxpool_backward": backward, "dense_backward": backward,
        "maxpool2d_backward": lambda out, *a, **k: _fill(out),
        "binary_crossentropy": loss, "softmax_crossentropy": loss,
    }
    for act in ("relu", "sigmoid", "softmax", "dropout"):
        ops[f"{act}_forward"] = lambda out, *a, **k: _fill(out)
        ops[f"{act}_backward"] = lambda out, *a, **k: _fill(out)
    mod = types.SimpleNamespace(NAME="null", calls=calls,
                                empty=_host.empty, zeros=_host.zeros,
                                to_device=_host.to_device, to_host=_host.to_host,
                                **{name: op(name, fn) for name, fn in ops.items()})
    for name in ("sgd_update", "rmsprop_update", "adam_update"):
        def update(*args, _name=name, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
        setattr(mod, name, update)
    assert all(hasattr(mod, n) for n in kernels.CONTRACT + kernels.FUSED)
    return mod


def _backends():
    params = [pytest.param("null", id="null"), pytest.param("null-unfused", id="null-unfused")]
    for name in ("cpu", "cuda"):
        params.append(pytest.param(name, id=name))
    return params


def _measure(model, x, y, batch_size, epochs=2, warmup=2):
    """Per-step (peak, net) traced bytes over the steady-state steps of fit's inner loop."""
    model._ensure_optimizer()
    data = ("arrays", x, model._prep_labels(y, x.shape[0]))
    snaps = [model._K.empty(tuple(p.shape)) for p in model._params()]   # the NaN guard's
    peaks, nets = [], []
    numpy_only = [tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)]
    for epoch in range(warmup + epochs):
        if epoch == warmup:
            before = tracemalloc.take_snapshot().filter_traces(numpy_only)
        batches = model._batches(data, batch_size, True, True)
        plan, _ = next(batches)                 # the epoch's permutation: once per epoch
        model._train_step(plan, snaps)
        for _ in range(x.shape[0] // batch_size - 1):
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            plan, _ = next(batches)             # copies the shuffled batch in
            loss, correct = model._train_step(plan, snaps)
            current, peak = tracemalloc.get_traced_memory()
            if epoch >= warmup:                 # plans are built, caches settle
                peaks.append(peak - base)
                nets.append(current - base)
            assert correct is not None
    after = tracemalloc.take_snapshot().filter_traces(numpy_only)
    numpy_net = sum(d.size_diff for d in after.compare_to(before, "filename"))
    return peaks, nets, numpy_net


@pytest.mark.parametrize("device", _backends())
def test_steady_state_training_step_allocates_no_buffers(device):
    rng = np.random.default_rng(0)
    x, y = discs_and_squares(256, rng, size=16)
    model = tiny_convnet(seed=0, input_shape=(16, 16, 1), dropout=0.25)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    if device.startswith("null"):
        K = null_backend()
        if device == "null-unfused":
            for name in kernels.FUSED:
                delattr(K, name)
        model._bind(K, "reference")
    else:
        try:
            model.to(device)
        except kernels.BackendUnavailable as exc:
            pytest.skip(f"backend {device!r} unavailable: {exc}")
    tracemalloc.start()
    try:
        peaks, nets, numpy_net = _measure(model, x, y, batch_size=64)
    finally:
        tracemalloc.stop()
    assert len(peaks) == 6
    print(f"\n{device}: per-step peak traced bytes {peaks}, net {nets}, "
          f"NumPy buffers net {numpy_net}")
    assert max(peaks) < MAX_TRANSIENT_BYTES, f"per-step peak traced bytes {peaks}"
    assert numpy_net == 0, f"NumPy buffers kept over the steady-state steps: {numpy_net} B"
    assert max(nets) < MAX_NET_OBJECT_BYTES, f"per-step net traced bytes {nets}"
    assert len(model._plans) == 1           # one plan (batch 64), built once
    if device == "null":
        calls = model._K.calls
        assert calls["conv2d_relu_maxpool_forward"] == 2 * 4 * 4   # fused convs x epochs x steps
        assert "conv2d_forward" not in calls and "maxpool2d_forward" not in calls
        assert "sigmoid_forward" not in calls                    # folded into the loss
    if device == "null-unfused":
        calls = model._K.calls
        assert calls["conv2d_forward"] == calls["maxpool2d_forward"] == 2 * 4 * 4


def test_buffers_are_reused_across_steps_and_epochs():
    rng = np.random.default_rng(1)
    x, y = discs_and_squares(40, rng, size=12)
    model = tiny_convnet(seed=0, input_shape=(12, 12, 1))
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    plans = dict(model._plans)
    assert sorted(plans) == [("infer", 8), ("infer", 16), ("train", 8), ("train", 16)] or \
        sorted(plans) == [("train", 8), ("train", 16)]
    ids = {k: (id(p.x), [id(s.y) for s in p.steps]) for k, p in plans.items()}
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    for k, p in plans.items():
        assert model._plans[k] is p
        assert (id(p.x), [id(s.y) for s in p.steps]) == ids[k]

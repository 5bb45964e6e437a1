"""model.fit overhead over the raw kernel step: the seed model (small_convnet, 150x150x3)
at batch 32, on every backend that loads here.

The raw step is the same training step written as bare kernel calls on buffers
allocated up front (fused conv+relu+pool where the backend has it, dropout with a
host-drawn mask, sigmoid folded into the loss, RMSprop): what the model layer
would cost if its own Python cost nothing. Each row records raw_step_s and
overhead_pct (fit seconds per step / raw step - 1) in extra_info; the target is
< 5% on cpu.

    pytest bench/test_model.py --benchmark-only --benchmark-json=bench.json -s
"""
import os
import time

import numpy as np
import pytest

from fastconv import kernels, small_convnet
from fastconv._memory import upload
from fastconv.kernels._validate import window_geometry

from . import seed_shapes as S
from .conftest import available

BACKENDS = available()
STEPS = int(os.environ.get("FASTCONV_BENCH_STEPS", "3"))   # training steps per timed fit
F32 = np.float32


class RawStep:
    """The seed model's training step as bare kernel calls (shape comments: N = batch)."""

    def __init__(self, K, weights, n, rng):
        self.K, self.n, self.rng = K, n, rng
        self.fused = kernels.fuses(K, "conv2d_relu_maxpool")
        self.p = [K.to_device(w) for w in weights]             # w1 b1 w2 b2 w3 b3 w4 b4 w5 b5
        self.g = [K.empty(w.shape) for w in weights]
        self.ms = [K.zeros(w.shape) for w in weights]
        e = K.empty
        self.x = e((n, 150, 150, 3))
        self.labels = e((n, 1))
        geo = [((n, 150, 150, 3), 32, 3), ((n, 49, 49, 32), 32, 2), ((n, 23, 23, 32), 64, 2)]
        self.convs = []
        inp = self.x
        for k, ((_, h, w, _c), f, pool) in enumerate(geo):
            oh, ow, _, _ = window_geometry("conv2d_forward", (h, w), (3, 3), (1, 1), "valid")
            ph, pw, _, _ = window_geometry("maxpool2d_forward", (oh, ow), (pool, pool),
                                           (pool, pool), "valid", what="pool")
            layer = {"x": inp, "pool": pool,
                     "y": e((n, ph, pw, f)), "arg": e((n, ph, pw, f), np.int32),
                     "dx": e(tuple(inp.shape)) if k else None}
            if not self.fused:                                 # the unfused composition
                layer.update(z=e((n, oh, ow, f)), a=e((n, oh, ow, f)),
                             da=e((n, oh, ow, f)), dz=e((n, oh, ow, f)))
            layer["dy"] = e((n, ph, pw, f))
            self.convs.append(layer)
            inp = layer["y"]
        self.flat = inp.reshape((n, 6400))                     # (N, 6400) view
        self.d1, self.r1, self.drop = e((n, 64)), e((n, 64)), e((n, 64))
        self.mask = e((n, 64))
        self.mask_host = np.empty((n, 64), F32)
        self.z, self.dz = e((n, 1)), e((n, 1))
        self.ddrop, self.dr1, self.dd1 = e((n, 64)), e((n, 64)), e((n, 64))
        self.dflat = e((n, 6400))
        self.convs[2]["dy"] = self.dflat.reshape((n, 10, 10, 64))
        self.convs[1]["dy"] = self.convs[2]["dx"]
        self.convs[0]["dy"] = self.convs[1]["dx"]

    def load(self, x, y):
        upload(x, self.x)
        upload(y.reshape(-1, 1), self.labels)

    def step(self):
        K, p, g = self.K, self.p, self.g
        for k, c in enumerate(self.convs):
            w, b = p[2 * k], p[2 * k + 1]
            if self.fused:
                K.conv2d_relu_maxpool_forward(c["x"], w, b, pool=c["pool"], out=(c["y"], c["arg"]))
            else:
                K.conv2d_forward(c["x"], w, b, out=c["z"])
                K.relu_forward(c["z"], out=c["a"])
                K.maxpool2d_forward(c["a"], pool=c["pool"], out=(c["y"], c["arg"]))
        K.dense_forward(self.flat, p[6], p[7], out=self.d1)
        K.relu_forward(self.d1, out=self.r1)
        u = self.rng.random((self.n, 64))
        np.copyto(self.mask_host, np.where(u >= 0.5, F32(2.0), F32(0.0)))
        upload(self.mask_host, self.mask)
        K.dropout_backward(self.r1, self.mask, out=self.drop)
        K.dense_forward(self.drop, p[8], p[9], out=self.z)
        loss, _ = K.binary_crossentropy(self.labels, self.z, out=(None, self.dz))
        K.dense_backward(self.drop, p[8], self.dz, out=(self.ddrop, g[8], g[9]))
        K.dropout_backward(self.ddrop, self.mask, out=self.dr1)
        K.relu_backward(self.dr1, self.r1, out=self.dd1)
        K.dense_backward(self.flat, p[6], self.dd1, out=(self.dflat, g[6], g[7]))
        for k in (2, 1, 0):
            c = self.convs[k]
            w = p[2 * k]
            out = (c["dx"], g[2 * k], g[2 * k + 1])
            if self.fused:
                K.conv2d_relu_maxpool_backward(c["x"], w, c["dy"], c["y"], c["arg"],
                                               need_dx=k > 0, out=out)
            else:
                K.maxpool2d_backward(c["dy"], c["arg"], tuple(c["a"].shape), out=c["da"])
                K.relu_backward(c["da"], c["a"], out=c["dz"])
                K.conv2d_backward(c["x"], w, c["dz"], need_dx=k > 0, out=out)
        for pk, gk, mk in zip(p, g, self.ms):
            K.rmsprop_update(pk, gk, mk, 1e-4, 0.9, 1e-7)
        return loss


def _data(n, rng):
    x = rng.random((n, 150, 150, 3), F32)
    y = (rng.random(n) > 0.5).astype(F32)
    return x, y


@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_step_vs_raw_kernel_step(benchmark, backend):
    rng = np.random.default_rng(0)
    n = S.BATCH
    x, y = _data(n * STEPS, rng)
    model = small_convnet(device=backend, seed=0)
    raw = RawStep(kernels.get(backend), model.get_weights(), n, np.random.default_rng(1))
    raw.load(x[:n], y[:n])
    raw.step()                                                 # warm up (compiles)
    raw_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        raw.step()
        raw_times.append(time.perf_counter() - t0)
    raw_s = min(raw_times)

    def fit():
        model.fit(x, y, batch_size=n, epochs=1, verbose=0)
    benchmark.extra_info.update(steps_per_round=STEPS, raw_step_s=raw_s, batch=n)
    benchmark.pedantic(fit, rounds=3, iterations=1, warmup_rounds=1)
    fit_step = benchmark.stats.stats.min / STEPS
    overhead = fit_step / raw_s - 1.0
    benchmark.extra_info.update(fit_step_s=fit_step, overhead_pct=100 * overhead,
                                images_per_s=n / fit_step)
    print(f"\n{backend}: raw step {raw_s * 1e3:.1f} ms, fit {fit_step * 1e3:.1f} ms/step "
          f"({n / fit_step:.1f} img/s), overhead {100 * overhead:+.2f}%")


def _noop_backend():
    """Every op returns its out= buffers untouched: timing fit on it measures the model
    layer alone (batch copy-in, dropout mask, NaN-guard snapshot, Python dispatch)."""
    import types
    ref = kernels.get("reference")

    def noop(*args, out=None, **kwargs):
        return out

    def loss(y, z, out=None):
        return 0.5, out[1]

    ops = {name: noop for name in kernels.CONTRACT + kernels.FUSED}
    ops.update(binary_crossentropy=loss, softmax_crossentropy=loss)
    return types.SimpleNamespace(NAME="noop", empty=ref.empty, zeros=ref.zeros,
                                 to_device=ref.to_device, to_host=ref.to_host, **ops)


def test_model_layer_own_cost_per_step(benchmark):
    rng = np.random.default_rng(0)
    n = S.BATCH
    steps = 10
    x, y = _data(n * steps, rng)
    model = small_convnet(device="reference", seed=0)
    model._bind(_noop_backend(), "reference")

    def fit():
        model.fit(x, y, batch_size=n, epochs=1, verbose=0)
    benchmark.pedantic(fit, rounds=5, iterations=1, warmup_rounds=1)
    own = benchmark.stats.stats.min / steps
    benchmark.extra_info.update(model_layer_step_s=own, batch=n)
    print(f"\nmodel layer's own cost: {own * 1e3:.2f} ms per training step at batch {n} "
          f"(copy-in of the shuffled batch, dropout mask, NaN-guard snapshot, dispatch)")

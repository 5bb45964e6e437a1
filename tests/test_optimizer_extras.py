"""Weight decay (AdamW and weight_decay= on SGD/RMSprop/Adam), gradient clipping
(clipnorm, global_clipnorm, clipvalue) and the ops behind them (sum_squares,
clip_by_norm, clip_by_value), against float64 references written from Keras 3's
formulas, on every device available: reference, cpu, and cuda under the simulator
(a subprocess, NUMBA_ENABLE_CUDASIM=1, this file run as a script).

Keras 3's step: grads = clip(grads); p -= p * wd * lr for every p; then the update.
Two steps per case, so the state the first step leaves (momentum, Adam's m and v,
t = 2) enters the second.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

F64 = np.float64
# reference and cpu: float64 arithmetic on float32 storage; cuda: float32 arithmetic
TOL = {"reference": dict(rtol=2e-6, atol=1e-7), "cpu": dict(rtol=2e-6, atol=1e-7),
       "cuda": dict(rtol=2e-5, atol=2e-6)}
SHAPES = ((3, 4), (5,), (2, 2, 3))
STEPS = 2


def _optimizers():
    """name -> (class name, kwargs) of every case; the schedule one by config."""
    cosine = {"class_name": "CosineDecay",
              "config": dict(initial_learning_rate=0.0, decay_steps=4, warmup_target=0.05,
                             warmup_steps=1)}
    return {
        "sgd wd": ("SGD", dict(learning_rate=0.1, weight_decay=0.3)),
        "sgd momentum nesterov wd clipvalue": ("SGD", dict(learning_rate=0.1, momentum=0.9,
                                                           nesterov=True, weight_decay=0.2,
                                                           clipvalue=0.5)),
        "rmsprop wd clipnorm": ("RMSprop", dict(learning_rate=0.01, weight_decay=0.5,
                                                clipnorm=1.0)),
        "adam wd global_clipnorm": ("Adam", dict(learning_rate=0.01, weight_decay=0.1,
                                                 global_clipnorm=2.0)),
        "adamw defaults": ("AdamW", dict(learning_rate=0.01)),
        "adamw schedule clipnorm": ("AdamW", dict(learning_rate=cosine, weight_decay=0.5,
                                                  clipnorm=0.7)),
        "adam clipvalue": ("Adam", dict(learning_rate=0.01, clipvalue=0.3)),
    }


def _data(seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[(rng.standard_normal(s) * 1.5).astype(np.float32) for s in SHAPES]
             for _ in range(STEPS)]
    return params, grads


# -- the float64 reference of Keras 3's formulas -----------------------------------------

def keras_reference(cls, kw, params, grads):
    """params after STEPS steps of optimizer `cls`(**kw), float64, from Keras 3's code."""
    from fastconv.optimizers import schedules
    lr_arg = kw["learning_rate"]
    rate = (schedules.deserialize(lr_arg) if isinstance(lr_arg, dict)
            else (lambda step: lr_arg))
    wd = kw.get("weight_decay", 0.004 if cls == "AdamW" else None)
    ps = [p.astype(F64) for p in params]
    state = [dict(v=np.zeros_like(p), m=np.zeros_like(p), ms=np.zeros_like(p)) for p in ps]
    for step, gs in enumerate(grads):
        lr = rate(step)
        gs = [g.astype(F64) for g in gs]
        if kw.get("clipnorm"):              # _clip_by_norm
            c = kw["clipnorm"]
            gs = [g * c / max(np.sqrt(np.sum(g * g)), c) for g in gs]
        elif kw.get("global_clipnorm"):     # clip_by_global_norm
            c = kw["global_clipnorm"]
            n = np.sqrt(sum(np.sum(g * g) for g in gs))
            gs = [g * (c * min(1.0 / n, 1.0 / c)) for g in gs]
        elif kw.get("clipvalue"):
            v = kw["clipvalue"]
            gs = [np.clip(g, -v, v) for g in gs]
        if wd:
            ps = [p - p * wd * lr for p in ps]
        t = step + 1
        for i, (p, g, s) in enumerate(zip(ps, gs, state)):
            if cls == "SGD":
                mom = kw.get("momentum", 0.0)
                if mom:
                    s["v"] = mom * s["v"] - lr * g
                    ps[i] = p + (mom * s["v"] - lr * g if kw.get("nesterov") else s["v"])
                else:
                    ps[i] = p - lr * g
            elif cls == "RMSprop":
                rho, eps = kw.get("rho", 0.9), kw.get("epsilon", 1e-7)
                s["ms"] = rho * s["ms"] + (1 - rho) * g * g
                ps[i] = p - lr * g / np.sqrt(s["ms"] + eps)
            else:                           # Adam, AdamW
                b1, b2, eps = 0.9, 0.999, 1e-7
                alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                s["m"] = s["m"] + (g - s["m"]) * (1 - b1)
                s["v"] = s["v"] + (g * g - s["v"]) * (1 - b2)
                ps[i] = p - alpha * s["m"] / (np.sqrt(s["v"]) + eps)
    return ps


# -- the steps on a backend ---------------------------------------------------------------

def run_steps(device, cls, kw, params, grads):
    """Host copies of params after STEPS optimizer steps on `device` (device arrays on
    cuda: the optimizer's clip sums stay there)."""
    from fastconv import kernels, optimizers
    K = kernels.get(device)
    opt = getattr(optimizers, cls)(**kw)
    ps = [K.to_device(p.copy()) if device == "cuda" else p.copy() for p in params]
    opt.build(K, ps)
    for gs in grads:
        opt.apply(K, ps, [K.to_device(g.copy()) if device == "cuda" else g.copy()
                          for g in gs])
    return [np.asarray(K.to_host(p)) for p in ps]


def guarded_snapshot_check():
    """On cuda, fit's guarded updates with weight decay: the snapshot holds the weights
    before the step (the decay takes it, the update after it does not overwrite it with
    the decayed weights) and the step equals the unguarded one."""
    from fastconv import kernels
    from fastconv.kernels.cuda import losses as L
    from fastconv.models.training import _GuardedUpdates
    from fastconv.optimizers import AdamW
    K = kernels.get("cuda")
    params, grads = _data(1)
    want = run_steps("cuda", "AdamW", dict(learning_rate=0.01, weight_decay=0.5),
                     params, grads[:1])
    ps = [K.to_device(p.copy()) for p in params]
    snaps = [K.empty(p.shape) for p in params]
    stats = L.step_stats_buffer()
    L.reset_stats(stats)
    opt = AdamW(learning_rate=0.01, weight_decay=0.5)
    opt.build(K, ps)
    opt.apply(_GuardedUpdates(K, stats, ps, snaps), ps, [K.to_device(g) for g in grads[0]])
    problems = []
    for i, (p, s, p0, w) in enumerate(zip(ps, snaps, params, want)):
        if not np.array_equal(K.to_host(s), p0):
            problems.append(f"snapshot {i} is not the weights before the step")
        if not np.array_equal(K.to_host(p), w):
            problems.append(f"guarded step {i} differs from the unguarded one")
    return problems


def cuda_results():
    """{case: max relative error vs the float64 reference} on cuda, and the guard check."""
    out = {}
    params, grads = _data()
    for name, (cls, kw) in _optimizers().items():
        got = run_steps("cuda", cls, kw, params, grads)
        want = keras_reference(cls, kw, params, grads)
        ok = all(np.allclose(g, w, **TOL["cuda"]) for g, w in zip(got, want))
        moved = max(float(np.max(np.abs(w - p))) for w, p in zip(want, params))
        out[name] = dict(ok=bool(ok), moved=moved,
                         err=max(float(np.max(np.abs(g - w))) for g, w in zip(got, want)))
    out["guard"] = guarded_snapshot_check()
    return out


@pytest.fixture(scope="module")
def cuda_sim():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and "numba.cuda" in proc.stderr and "No module" in proc.stderr:
        pytest.skip("numba-cuda is not installed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(_optimizers()))
@pytest.mark.parametrize("device", ["reference", "cpu", "cuda"])
def test_two_steps_match_the_keras_formula(device, name, request):
    cls, kw = _optimizers()[name]
    params, grads = _data()
    want = keras_reference(cls, kw, params, grads)
    # the case must move the weights well beyond the tolerance, or it could not fail
    assert max(float(np.max(np.abs(w - p))) for w, p in zip(want, params)) > 1e-3
    if device == "cuda":
        r = request.getfixturevalue("cuda_sim")[name]
        assert r["ok"], f"cuda max abs error {r['err']}"
        return
    got = run_steps(device, cls, kw, params, grads)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **TOL[device])


def test_cuda_guarded_updates_keep_the_snapshot_before_weight_decay(cuda_sim):
    assert cuda_sim["guard"] == []


def test_each_clip_and_the_decay_matter():
    """Dropping the clip or the decay from the reference moves it beyond the tolerance:
    the cases above test them, not only the plain update."""
    params, grads = _data()
    for name, (cls, kw) in _optimizers().items():
        full = keras_reference(cls, kw, params, grads)
        for knob in ("weight_decay", "clipnorm", "global_clipnorm", "clipvalue"):
            if kw.get(knob) or (knob == "weight_decay" and cls == "AdamW"):
                off = dict(kw, **{knob: 0.0 if cls == "AdamW" else None})
                less = keras_reference(cls, off, params, grads)
                assert max(float(np.max(np.abs(a - b))) for a, b in zip(full, less)) > 1e-4, \
                    (name, knob)


# -- the ops, reference and cpu (cuda: the op table under the simulator) ----------------

@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_clip_ops_against_float64(device):
    from fastconv import kernels
    K = kernels.get(device)
    rng = np.random.default_rng(4)
    for shape in ((7,), (3, 5, 2), (1001,)):
        g = rng.standard_normal(shape).astype(np.float32)
        acc = np.zeros(1, np.float32)
        K.sum_squares(g, acc)
        sq = np.sum(g.astype(F64) ** 2)
        assert acc[0] == pytest.approx(sq, rel=1e-6)
        K.sum_squares(g, acc, accumulate=True)
        assert acc[0] == pytest.approx(2 * sq, rel=1e-6)
        for c in (0.3 * np.sqrt(sq), 3.0 * np.sqrt(sq)):
            h = g.copy()
            K.clip_by_norm(h, np.float32([sq]), c)
            want = g.astype(F64) * c / max(np.sqrt(sq), c)
            np.testing.assert_allclose(h, want, rtol=1e-6, atol=1e-7)
            assert np.sqrt(np.sum(h.astype(F64) ** 2)) == pytest.approx(min(c, np.sqrt(sq)),
                                                                         rel=1e-5)
        h = g.copy()
        K.clip_by_value(h, 0.4)
        np.testing.assert_array_equal(h, np.clip(g, -0.4, 0.4))
    z = np.zeros(4, np.float32)
    K.clip_by_norm(z, np.zeros(1, np.float32), 1.0)              # zero norm: unchanged
    np.testing.assert_array_equal(z, 0)
    nan = np.array([1.0, np.nan], np.float32)
    K.clip_by_norm(nan, np.float32([np.nan]), 1.0)               # NaN norm: NaN, as Keras
    assert np.all(np.isnan(nan))
    v = np.array([np.nan, 2.0, -2.0], np.float32)
    K.clip_by_value(v, 1.0)
    assert np.isnan(v[0]) and list(v[1:]) == [1.0, -1.0]


# -- arguments, config, training --------------------------------------------------------

def test_arguments_and_config():
    from fastconv import optimizers as O
    w = O.AdamW()
    assert (w.learning_rate, w.weight_decay, w.beta_1, w.beta_2, w.epsilon) == (
        0.001, 0.004, 0.9, 0.999, 1e-7)
    assert O.get("adamw").get_config() == w.get_config()
    for opt in (O.SGD(weight_decay=0.1, clipnorm=1.0), O.RMSprop(global_clipnorm=2.0),
                O.Adam(clipvalue=0.5, weight_decay=0.01), O.AdamW(weight_decay=0.0)):
        assert O.get(O.serialize(opt)).get_config() == opt.get_config()
    assert O.SGD().get_config() == {"learning_rate": 0.01, "momentum": 0.0,
                                    "nesterov": False}
    with pytest.raises(ValueError, match=r"SGD: only one of `clipnorm`, `clipvalue` and "
                                         r"`global_clipnorm` can be set, received "
                                         r"clipnorm=1\.0, clipvalue=0\.5"):
        O.SGD(clipnorm=1.0, clipvalue=0.5)
    with pytest.raises(ValueError, match=r"AdamW: `weight_decay` must be a float, received "
                                         r"weight_decay=None"):
        O.AdamW(weight_decay=None)
    with pytest.raises(ValueError, match=r"Adam: `weight_decay` must be in \[0\.0, inf\), "
                                         r"received weight_decay=-0\.1"):
        O.Adam(weight_decay=-0.1)
    with pytest.raises(ValueError, match=r"RMSprop: `clipnorm` must be a number, received "
                                         r"clipnorm='1'"):
        O.RMSprop(clipnorm="1")


def test_fit_with_adamw_and_clipping_trains_and_round_trips(tmp_path):
    import fastconv
    from fastconv import layers as L
    from fastconv.optimizers import AdamW
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    model = fastconv.Sequential([L.Dense(8, activation="relu", input_shape=(4,)),
                                 L.Dense(1, activation="sigmoid")], device="cpu", seed=0)
    model.compile(optimizer=AdamW(learning_rate=0.05, global_clipnorm=1.0),
                  loss="binary_crossentropy")
    h = model.fit(x, y, batch_size=8, epochs=6, verbose=0)
    assert h.history["loss"][-1] < 0.8 * h.history["loss"][0]
    model.save(tmp_path / "m.npz")
    back = fastconv.load_model(tmp_path / "m.npz")
    assert back.optimizer.get_config() == model.optimizer.get_config()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    back.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)


if __name__ == "__main__":          # the cuda simulator run of cuda_sim()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        raise SystemExit("run with NUMBA_ENABLE_CUDASIM=1")
    print(json.dumps(cuda_results()))

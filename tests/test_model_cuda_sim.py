"""The model on device='cuda' under the CUDA simulator, against the reference.

The cross-backend comparison trains without dropout: cuda draws its dropout masks on
the device from a seed (kernels/cuda/activations.dropout_hash_fwd), not from the host
generator the cpu and reference backends share, so with dropout the two trainings
differ by design. Dropout on cuda is checked against itself instead: the same seed
gives the same training run to run and across a save and resume.

Runs in its own process: NUMBA_ENABLE_CUDASIM=1 must be set before numba.cuda
is imported. Skips (with the reason) while the cuda backend cannot load, e.g.
before the CUDA engine lands.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys, tempfile, os
    import numpy as np
    from fastconv import kernels
    try:
        kernels.get("cuda")
    except kernels.BackendUnavailable as exc:
        print("SKIP:", exc)
        sys.exit(3)
    sys.path.insert(0, {tests!r})
    from model_helpers import tiny_convnet
    from fastconv.optimizers import SGD
    import fastconv

    rng = np.random.default_rng(0)
    x = rng.random((16, 12, 12, 3), np.float32)
    y = (rng.random(16) > 0.5).astype(np.float32)
    out = {{}}
    for device in ("reference", "cuda"):
        # dropout 0: cuda's device-drawn masks are not the reference's (see above)
        m = tiny_convnet(device=device, seed=3, input_shape=(12, 12, 3), dropout=0.0)
        m.compile(optimizer=SGD(0.05, momentum=0.9), loss="binary_crossentropy", metrics=["accuracy"])
        losses = [m.train_on_batch(x[k:k + 8], y[k:k + 8])[0] for k in (0, 8)]
        h = m.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x, y))
        out[device] = {{"losses": losses + h.history["loss"] + h.history["val_loss"],
                        "weights": [w.tolist() for w in m.get_weights()],
                        "pred": m.predict(x).tolist()}}
        # sample and class weights: fit's device-side step (the weights staged with the
        # batch), evaluate and train_on_batch, binary (label-smoothed) and sparse
        mw = tiny_convnet(device=device, seed=5, input_shape=(12, 12, 3), dropout=0.0)
        mw.compile(optimizer=SGD(0.05),
                   loss=fastconv.losses.BinaryCrossentropy(label_smoothing=0.1),
                   metrics=["precision", "auc"])    # streamed: the logits copied per step
        sw = np.linspace(0.0, 2.0, 16).astype(np.float32)
        hw = mw.fit(x, y, batch_size=8, epochs=2, verbose=0, sample_weight=sw)
        weighted = hw.history["loss"] + hw.history["precision"] + hw.history["auc"] + list(
            mw.evaluate(x, y, batch_size=5, sample_weight=sw, return_dict=True).values()) + [
            mw.train_on_batch(x[:8], y[:8], class_weight={{0: 3.0, 1: 0.5}})[0]]
        ms = tiny_convnet(device=device, seed=6, input_shape=(12, 12, 3), dropout=0.0,
                          classes=3)
        ms.compile(optimizer=SGD(0.05), loss="sparse_categorical_crossentropy")
        y3 = np.arange(16) % 3
        hs = ms.fit(x, y3, batch_size=8, epochs=2, verbose=0, class_weight="balanced")
        # regularizers: the penalty's gradient and its loss on the device step (fit),
        # and in evaluate
        mr = fastconv.Sequential([
            fastconv.layers.Conv2D(4, 3, input_shape=(12, 12, 3),
                                   kernel_regularizer=fastconv.regularizers.l2(0.01)),
            fastconv.layers.Flatten(),
            fastconv.layers.Dense(1, kernel_regularizer=fastconv.regularizers.l1(0.001),
                                  bias_regularizer="l2"),
            fastconv.layers.Activation("sigmoid")], device=device, seed=7)
        mr.compile(optimizer=SGD(0.05), loss="binary_crossentropy")
        hr = mr.fit(x, y, batch_size=8, epochs=2, verbose=0)
        out[device]["weighted"] = weighted + hs.history["loss"] + hr.history["loss"] + [
            mr.evaluate(x, y, batch_size=16)]
        out[device]["reg_weights"] = [w.tolist() for w in mr.get_weights()]
        if device == "cuda":
            path = os.path.join(tempfile.mkdtemp(), "m.npz")
            m.save(path)
            back = fastconv.load_model(path, device="reference")
            out["reloaded_pred"] = back.predict(x).tolist()
            back.to("cuda")
            out["back_on_cuda_pred"] = back.predict(x).tolist()
    print("RESULT:" + json.dumps(out))
""")


def test_cuda_model_under_the_simulator_matches_the_reference():
    import numpy as np
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    tests = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests)], env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode == 3:
        pytest.skip(f"cuda backend under the simulator: {proc.stdout.strip()}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(proc.stdout.split("RESULT:", 1)[1])
    ref, dev = result["reference"], result["cuda"]
    np.testing.assert_allclose(dev["losses"], ref["losses"], rtol=2e-4, atol=1e-5)
    for a, b in zip(dev["weights"], ref["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(dev["pred"], ref["pred"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(dev["weighted"], ref["weighted"], rtol=2e-4, atol=1e-5)
    for a, b in zip(dev["reg_weights"], ref["reg_weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-3, atol=1e-5)
    # saved on cuda, loaded on the host and moved back: the same predictions
    np.testing.assert_allclose(result["reloaded_pred"], dev["pred"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result["back_on_cuda_pred"], dev["pred"], rtol=1e-4, atol=1e-5)


DEVICE_STEP_SCRIPT = textwrap.dedent("""
    import json, os, sys, tempfile, warnings
    import numpy as np
    from fastconv import kernels
    try:
        kernels.get("cuda")
    except kernels.BackendUnavailable as exc:
        print("SKIP:", exc)
        sys.exit(3)
    import fastconv
    from fastconv import callbacks as C
    from fastconv.kernels.cuda import _launch
    _launch.ELEMENTWISE = _launch.POOL = _launch.REDUCE = 32   # fewer simulated threads
    sys.path.insert(0, {tests!r})
    from model_helpers import tiny_convnet, discs_and_squares

    rng = np.random.default_rng(2)
    x, y = discs_and_squares(8, rng, size=12)
    out = {{}}

    def model(dropout=0.5):
        m = tiny_convnet(device="cuda", seed=3, input_shape=(12, 12, 1), dropout=dropout)
        m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        return m

    def result(m, h):
        return {{"w": [w.tolist() for w in m.get_weights()], "loss": h.history["loss"],
                 "acc": h.history["accuracy"], "it": m.optimizer.iterations}}

    m = model()
    out["a"] = result(m, m.fit(x, y, batch_size=4, epochs=2, verbose=0))
    step = next(s for s in m._plan("train", 4).steps if type(s).__name__ == "DropoutStep")
    out["mask_values"] = sorted(set(np.unique(step.mask.copy_to_host()).tolist()))
    m = model()
    m.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = os.path.join(tempfile.mkdtemp(), "m.npz")
    m.save(path)
    back = fastconv.load_model(path, device="cuda")
    h = back.fit(x, y, batch_size=4, epochs=2, initial_epoch=1, verbose=0)
    out["resumed"] = result(back, h)

    class NaNAt:
        def __init__(self, n, bad):
            self.n, self.bad = n, bad
        def __len__(self):
            return self.n
        def __iter__(self):
            for k in range(self.n):
                xb = x[4 * k:4 * k + 4].copy()
                if k == self.bad:
                    xb[0, 0, 0, 0] = np.nan
                yield xb, y[4 * k:4 * k + 4]

    m = model(0.0)
    out["w0"] = [w.tolist() for w in m.get_weights()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = m.fit(NaNAt(2, 1), epochs=3, verbose=0)
    out["nan"] = result(m, h)
    out["nan_msgs"] = [str(w.message) for w in caught
                       if issubclass(w.category, C.NonFiniteLossWarning)]
    ref2 = model(0.0)
    out["one_step"] = result(ref2, ref2.fit(NaNAt(1, -1), epochs=1, verbose=0))
    print("RESULT:" + json.dumps(out))
""")


def test_cuda_training_with_dropout_is_reproducible_and_keeps_weights_on_nan():
    """cuda's device-drawn dropout: the same seed trains the same in a second run that
    saves after one epoch and resumes from the file (the seed of each step's mask comes
    from the model's saved dropout generator); the masks are inverted-dropout masks. A NaN loss found in the device
    accumulator stops training with the last good weights and step count, as on the
    host backends (tests/test_model_training.py)."""
    import math
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    tests = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", DEVICE_STEP_SCRIPT.format(tests=tests)],
                          env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode == 3:
        pytest.skip(f"cuda backend under the simulator: {proc.stdout.strip()}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r = json.loads(proc.stdout.split("RESULT:", 1)[1])
    assert r["resumed"]["w"] == r["a"]["w"] and r["resumed"]["it"] == r["a"]["it"] == 4
    assert r["resumed"]["loss"] == r["a"]["loss"][1:]
    assert r["mask_values"] == [0.0, 2.0]                   # rate 0.5: dropped or 1 / 0.5
    assert len(r["nan_msgs"]) == 1 and "loss became nan at epoch 1, batch 2" in r["nan_msgs"][0]
    assert len(r["nan"]["loss"]) == 1 and math.isnan(r["nan"]["loss"][0])
    # batch 0 was applied (the step count says 1, as on the host backends), batch 1's
    # loss is NaN: the weights put back are those batch 0 started from (its guarded
    # update saved them), not those after its update
    assert r["nan"]["it"] == r["one_step"]["it"] == 1
    assert r["nan"]["w"] == r["w0"] != r["one_step"]["w"]


DEVICE_ARRAY_SCRIPT = textwrap.dedent("""
    import json, os, sys, tempfile, types
    import numpy as np
    from numba import cuda
    import fastconv
    from fastconv import kernels
    from fastconv.kernels import reference as R
    sys.path.insert(0, {tests!r})
    from model_helpers import tiny_convnet, discs_and_squares

    def host(a):
        return a.copy_to_host() if hasattr(a, "copy_to_host") else a

    def put(dev, value):
        assert not isinstance(dev, np.ndarray), "model passed a host buffer as out="
        dev.copy_to_device(np.ascontiguousarray(value))

    def wrap(name):
        f = getattr(R, name)
        def op(*args, out=None, **kwargs):
            for a in list(args) + list(kwargs.values()):
                assert not isinstance(a, np.ndarray), \\
                    f"{{name}}: host array argument of shape {{a.shape}}"
            hargs = [host(a) for a in args]
            hkw = {{k: host(v) for k, v in kwargs.items()}}
            result = f(*hargs, **hkw)
            if name.endswith("_update"):          # in place: write the host copies back
                for d, h in zip(args, hargs):
                    if hasattr(d, "copy_to_device"):
                        put(d, h)
                return None
            if out is None:
                raise AssertionError(f"{{name}} called without out=")
            if isinstance(result, tuple):
                for o, r in zip(out, result):
                    if o is not None:
                        put(o, r)
                return tuple(o if o is not None else r for o, r in zip(out, result))
            put(out, result)
            return out
        return op

    def to_host(v):
        if isinstance(v, (tuple, list)):
            return type(v)(to_host(a) for a in v)
        return host(v)

    dev = types.SimpleNamespace(
        NAME="device-arrays",
        empty=lambda shape, dtype=np.float32: cuda.device_array(shape, dtype),
        zeros=lambda shape, dtype=np.float32: cuda.to_device(np.zeros(shape, dtype)),
        to_device=lambda a: cuda.to_device(np.ascontiguousarray(a)),
        to_host=to_host,
        **{{n: wrap(n) for n in kernels.CONTRACT + kernels.FUSED}})

    rng = np.random.default_rng(0)
    x, y = discs_and_squares(24, rng, size=12)
    out = {{}}
    for name in ("reference", "device"):
        m = tiny_convnet(device="reference", seed=3, input_shape=(12, 12, 1))
        m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        if name == "device":
            m._bind(dev, "cuda")
        losses = [m.train_on_batch(x[:8], y[:8])[0]]
        h = m.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x, y))
        losses += h.history["loss"] + h.history["val_loss"] + h.history["accuracy"]
        losses += m.evaluate(x, y, batch_size=5)
        out[name] = {{"losses": losses, "pred": m.predict(x, batch_size=7).tolist(),
                      "weights": [w.tolist() for w in m.get_weights()]}}
        if name == "device":
            path = os.path.join(tempfile.mkdtemp(), "m.npz")
            m.save(path)
            back = fastconv.load_model(path, device="reference")
            out["reloaded_pred"] = back.predict(x).tolist()
            m.set_weights(back.get_weights())
            out["set_pred"] = m.predict(x).tolist()
    print("RESULT:" + json.dumps(out))
""")


def test_model_runs_on_a_backend_whose_buffers_are_device_arrays():
    """The model never assumes NumPy buffers: a backend with the reference's math and
    numba simulator device arrays as buffers gives the reference's results bit for bit."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    tests = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", DEVICE_ARRAY_SCRIPT.format(tests=tests)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(proc.stdout.split("RESULT:", 1)[1])
    ref, dev = result["reference"], result["device"]
    assert dev["losses"] == ref["losses"]
    assert dev["pred"] == ref["pred"]
    assert dev["weights"] == ref["weights"]
    assert result["reloaded_pred"] == dev["pred"] == result["set_pred"]

"""fit's device-side step on device='cuda', under the CUDA simulator: its kernels against
NumPy, and its host<->device traffic.

Kernels (test_step_kernels_match_numpy): the counter-based dropout mask
(activations.dropout_hash_fwd) against its NumPy twin, the step accumulator
(losses.binary/sparse_step_stats) against the host loop's sums, and the guarded
optimizer updates against the plain ones (skip on a non-finite step, snapshot).

Traffic (test_steady_fit_step_copies_one_batch_in_and_allocates_nothing):

Issue 19: a training step copies one batch in and (at most) the loss out, allocates
no device memory and copies no parameters on the device. The simulator routes every
copy and allocation through a few Python seams, which the script wraps and counts:
  numba.cuda.device_array / device_array_like / to_device / mapped_array
                                                 device allocations (to_device also
                                                 a host->device copy);
  FakeCUDAArray.copy_to_device                   host->device, or device->device when
                                                 the source is a device array;
  FakeCUDAArray.copy_to_host                     device->host;
  a kernel launched with a host ndarray argument an implicit copy in and back;
  numba.cuda.pinned_array                        pinned host staging (setup only).
It also counts the conv/dense ops' argument checks and grid/split choices
(conv2d.check_conv, backward_buffers, dense._check; fwd_split, dx_split, dw_split,
dense.split): the plan's conv and dense steps replay pre-bound launches
(kernels/cuda/_bound.py), so a steady step calls none of them.
Counted between the starts of batch 1 and of the last batch of the second epoch (the
plan, its staging buffers and the optimizer state exist by then), so per-epoch work
(resetting and reading the epoch's loss and accuracy) is outside the window; the
per-epoch reads are checked separately.

Runs in its own process: NUMBA_ENABLE_CUDASIM=1 must be set before numba.cuda is
imported. Launch sizes are patched down (32 threads, at most 3 blocks) so tiny inputs
span several blocks with ragged edges.
"""
import textwrap

import pytest

from . import simulator

KERNEL_SCRIPT = textwrap.dedent("""
    import json, math, sys
    import numpy as np
    from fastconv import kernels
    try:
        kernels.get("cuda")
    except kernels.BackendUnavailable as exc:
        print("SKIP:", exc)
        sys.exit(3)
    from numba import cuda
    from fastconv.kernels.cuda import _launch, activations as A, losses as L, optimizers as O
    _launch.ELEMENTWISE = _launch.POOL = _launch.REDUCE = 32
    _launch.MAX_BLOCKS = 3
    rng = np.random.default_rng(5)
    report = {{"dropout": [], "stats": [], "guarded": []}}

    # dropout: several blocks, grid-stride rounds, ragged ends, odd shapes, two rates
    for shape, rate, seed in (((1,), 0.5, 1), ((7, 3), 0.25, 2**40 + 3),
                              ((5, 13, 3), 0.5, 2**64 - 1), ((2, 9, 11, 3), 0.1, 12345)):
        x = rng.standard_normal(shape).astype(np.float32)
        y, mask = A.dropout_forward_seeded(cuda.to_device(x), rate, seed,
                                           out=(cuda.device_array(shape, np.float32),
                                                cuda.device_array(shape, np.float32)))
        want = A.dropout_mask_ref(shape, rate, seed)
        report["dropout"].append([np.array_equal(mask.copy_to_host(), want),
                                  np.array_equal(y.copy_to_host(), x * want)])
    big = A.dropout_mask_ref((100000,), 0.3, 99)
    report["keep"] = float(np.count_nonzero(big) / big.size)
    other = A.dropout_mask_ref((100000,), 0.3, 100)
    report["agree"] = float(np.mean((big != 0) == (other != 0)))

    # the step accumulator over steps of both kinds, a NaN step, then a finite one
    for kind, k in (("binary", 1), ("sparse", 5)):
        stats = cuda.to_device(np.zeros(L.STATS, np.float32))
        L.reset_stats(stats)
        host = dict(loss=0.0, correct=0, seen=0, steps=0, bad=None)
        for step, n in enumerate((37, 1, 40, 8)):
            z = (rng.standard_normal((n, k)) * 2).astype(np.float32)
            if step == 2:
                z[3, 0] = np.nan
            if kind == "binary":
                lab = (rng.random((n, 1)) > 0.5).astype(np.float32)
            else:
                lab = rng.integers(0, k, n).astype(np.int32)
            dz = cuda.device_array(z.shape, np.float32)
            L.loss_and_stats(kind, cuda.to_device(lab), cuda.to_device(z), dz, stats)
            R = kernels.get("reference")
            if kind == "binary":
                loss, _ = R.binary_crossentropy(lab, z)
                hits = int(np.count_nonzero((z > 0) == (lab > 0.5)))
            else:
                loss, _ = R.softmax_crossentropy(lab, z)
                hits = int(np.count_nonzero(np.argmax(z, axis=1) == lab))
            if host["bad"] is None:
                host["loss"] += loss * n
                host["seen"] += n
                if math.isfinite(loss):
                    host["correct"] += hits
                else:
                    host["bad"] = step
                host["steps"] += 1
        got = stats.copy_to_host()
        report["stats"].append(dict(kind=kind, got=got.tolist(), want=host,
                                    bad_step=float(got[L.BAD_STEP]), bad=float(got[L.BAD]),
                                    steps=float(got[L.STEPS])))

    # guarded updates: a clean flag updates like the plain op and saves the old p; a set
    # flag leaves p, its state and the snapshot as they were
    for opt in ("sgd0", "sgdm", "rmsprop", "adam"):
        for flag in (0.0, 1.0):
            n = 101
            p = rng.standard_normal(n).astype(np.float32)
            g = rng.standard_normal(n).astype(np.float32)
            s1 = np.abs(rng.standard_normal(n)).astype(np.float32)
            s2 = np.abs(rng.standard_normal(n)).astype(np.float32)
            stats = np.zeros(L.STATS, np.float32)
            stats[L.BAD] = flag
            snap0 = rng.standard_normal(n).astype(np.float32)
            dev = [cuda.to_device(a) for a in (p, g, s1, s2, snap0)]
            ref = [cuda.to_device(a) for a in (p, g, s1, s2)]
            guard = (cuda.to_device(stats), dev[4])
            if opt == "sgd0":
                O.sgd_update(dev[0], dev[1], None, 0.1, guard=guard)
                O.sgd_update(ref[0], ref[1], None, 0.1)
            elif opt == "sgdm":
                O.sgd_update(dev[0], dev[1], dev[2], 0.1, 0.9, True, guard=guard)
                O.sgd_update(ref[0], ref[1], ref[2], 0.1, 0.9, True)
            elif opt == "rmsprop":
                O.rmsprop_update(dev[0], dev[1], dev[2], 0.01, guard=guard)
                O.rmsprop_update(ref[0], ref[1], ref[2], 0.01)
            else:
                O.adam_update(dev[0], dev[1], dev[2], dev[3], 3, 0.01, guard=guard)
                O.adam_update(ref[0], ref[1], ref[2], ref[3], 3, 0.01)
            got = [d.copy_to_host() for d in dev]
            if flag:
                ok = all(np.array_equal(a, b) for a, b in zip(got, (p, g, s1, s2, snap0)))
            else:
                want = [r.copy_to_host() for r in ref]
                ok = (all(np.array_equal(a, b) for a, b in zip(got[:4], want))
                      and np.array_equal(got[4], p))
            report["guarded"].append([opt, flag, bool(ok)])
    print("RESULT:" + json.dumps(report))
""")


def _run(script, **fields):
    return simulator.run(script.format(tests=simulator.TESTS, **fields), timeout=900)


def test_step_kernels_match_numpy():
    import numpy as np
    r = _run(KERNEL_SCRIPT)
    assert r["dropout"] and all(all(pair) for pair in r["dropout"]), r["dropout"]
    assert abs(r["keep"] - 0.7) < 0.005, r["keep"]          # 3.5 sigma at n = 1e5
    assert abs(r["agree"] - (0.7 ** 2 + 0.3 ** 2)) < 0.005, r["agree"]   # seeds independent
    for s in r["stats"]:
        got, want = s["got"], s["want"]
        np.testing.assert_allclose(got[0] - got[1], want["loss"], rtol=1e-5)
        assert got[2] == want["correct"] and got[3] == want["seen"], s
        assert s["steps"] == want["steps"] == 3 and s["bad"] == 1 and s["bad_step"] == 2, s
        assert not np.isfinite(got[0]), s                   # the NaN step was counted
    assert len(r["guarded"]) == 8 and all(ok for _, _, ok in r["guarded"]), r["guarded"]


SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from fastconv import kernels, callbacks
    try:
        kernels.get("cuda")
    except kernels.BackendUnavailable as exc:
        print("SKIP:", exc)
        sys.exit(3)
    from numba import cuda
    from numba.cuda.simulator import kernel as sim_kernel
    from numba.cuda.simulator.cudadrv import devicearray as sim_da
    sys.path.insert(0, {tests!r})
    from model_helpers import tiny_convnet, discs_and_squares
    from fastconv import Sequential, layers as L
    from fastconv.kernels.cuda import _launch
    # fewer simulated threads per block (each is a Python thread): powers of two, <= the
    # compiled shared sizes
    _launch.ELEMENTWISE = _launch.POOL = 32
    _launch.REDUCE = 32

    counts = dict(h2d=0, d2h=0, d2d=0, alloc=0, implicit=0, pinned=0, checks=0, grids=0)

    def counting(fn, *keys):
        def wrapped(*args, **kwargs):
            for k in keys:
                counts[k] += 1
            return fn(*args, **kwargs)
        return wrapped

    for name in ("device_array", "device_array_like", "mapped_array"):
        setattr(cuda, name, counting(getattr(cuda, name), "alloc"))
    cuda.to_device = counting(cuda.to_device, "alloc", "h2d")
    cuda.pinned_array = counting(cuda.pinned_array, "pinned")
    orig_to_dev = sim_da.FakeCUDAArray.copy_to_device
    def copy_to_device(self, ary, stream=0):
        counts["d2d" if isinstance(ary, sim_da.FakeCUDAArray) else "h2d"] += 1
        return orig_to_dev(self, ary, stream)
    sim_da.FakeCUDAArray.copy_to_device = copy_to_device
    sim_da.FakeCUDAArray.copy_to_host = counting(sim_da.FakeCUDAArray.copy_to_host, "d2h")
    orig_call = sim_kernel.FakeCUDAKernel.__call__
    def launch(self, *args):
        if not (self._device or sim_kernel._kernel_context):     # a launch from the host
            counts["implicit"] += sum(isinstance(a, np.ndarray) and a.ndim > 0 for a in args)
        return orig_call(self, *args)
    sim_kernel.FakeCUDAKernel.__call__ = launch

    # the conv and dense steps replay pre-bound launches (kernels/cuda/_bound.py): their
    # ops' argument checks and grid/split choices run when a step is bound, not per step
    from fastconv.kernels.cuda import conv2d as C, dense as D
    for mod, name, key in ((C, "check_conv", "checks"), (C, "backward_buffers", "checks"),
                           (D, "_check", "checks"), (C, "fwd_split", "grids"),
                           (C, "dx_split", "grids"), (C, "dw_split", "grids"),
                           (D, "split", "grids")):
        setattr(mod, name, counting(getattr(mod, name), key))

    class Window(callbacks.Callback):
        # counts at the start of batch 1 and of the last batch of epoch 1 (the second)
        def __init__(self, steps):
            super().__init__()
            self.steps, self.marks, self.epoch = steps, [], 0
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_begin(self, batch, logs=None):
            if self.epoch == 1 and batch in (1, self.steps - 1):
                self.marks.append(dict(counts))
        def on_epoch_end(self, epoch, logs=None):
            self.marks.append(dict(counts))

    rng = np.random.default_rng(0)
    x, y = discs_and_squares(16, rng, size=12)
    m = {make}
    m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    steps = 4
    w = Window(steps)
    h = m.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[w])
    epoch0_end, a, b, epoch1_end = w.marks
    per_step = {{k: (b[k] - a[k]) / (steps - 2) for k in counts}}
    # the epoch's tail: its last step plus the end-of-epoch reads
    tail = {{k: epoch1_end[k] - b[k] for k in counts}}
    print("RESULT:" + json.dumps({{"per_step": per_step, "tail": tail,
                                  "loss": h.history["loss"],
                                  "accuracy": h.history["accuracy"]}}))
""")


MODELS = {
    "convnet": 'tiny_convnet(device="cuda", seed=3, input_shape=(12, 12, 1), dropout=0.25)',
    # BatchNormalization after a conv (NHWC) and a dense layer ((N, C)): its statistics'
    # scratch and the guarded moving update must not allocate or copy per step either
    "batchnorm": ('Sequential([L.Input((12, 12, 1)), L.Conv2D(3, 3, strides=2), '
                  'L.BatchNormalization(), L.Activation("relu"), L.Flatten(), L.Dense(4), '
                  'L.BatchNormalization(momentum=0.9), L.Activation("relu"), '
                  'L.Dense(1, activation="sigmoid")], device="cuda", seed=3)'),
}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_steady_fit_step_copies_one_batch_in_and_allocates_nothing(model):
    result = _run(SCRIPT, make=MODELS[model])
    step, tail = result["per_step"], result["tail"]
    print(f"\nper steady step: {step}\nlast step + epoch end: {tail}")
    assert step["h2d"] + step["d2h"] <= 2, step       # the batch in, at most the loss out
    assert step["h2d"] <= 1, step                     # x and labels travel together
    assert step["alloc"] == 0, step
    assert step["d2d"] == 0, step                     # no parameter snapshots
    assert step["implicit"] == 0, step                # no host array handed to a kernel
    assert step["pinned"] == 0, step
    assert step["checks"] == 0 and step["grids"] == 0, step    # pre-bound conv/dense launches
    # the last step (one upload) and one read of the epoch's loss and accuracy
    assert tail["h2d"] <= 1 and tail["d2h"] <= 1 and tail["alloc"] == 0, tail
    assert tail["d2d"] == 0 and tail["implicit"] == 0, tail
    assert all(v == v for v in result["loss"] + result["accuracy"])    # finite, not NaN

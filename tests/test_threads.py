"""Every public entry point gives bitwise the same result from several Python threads at
once as serially (issue 12 item 1): model predict/evaluate/fit/train_on_batch and the cpu
kernels called directly.

The cpu kernels release the GIL (nogil=True), so threads really overlap on two cores; a
shared workspace or plan buffer shows up as wrong numbers in most calls. All threads wait
at one barrier before their first call so that they start together.
"""
import sys
import threading

import numpy as np
import pytest

from fastconv import Sequential, kernels
from fastconv import layers as L
from fastconv.optimizers import SGD

THREADS = 8


def _run_together(jobs):
    """Run each zero-argument callable in its own thread, all released at once; return
    their results in order (re-raising the first exception)."""
    barrier = threading.Barrier(len(jobs))
    results = [None] * len(jobs)
    errors = []

    def body(k):
        try:
            barrier.wait()
            results[k] = jobs[k]()
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(len(jobs))]
    # Switch threads every few microseconds rather than every 5 ms, so that code holding
    # the GIL (the reference engine, the plan's Python steps) interleaves too.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    if errors:
        raise errors[0]
    return results


def _net(device, size, seed, filters=(8, 32)):
    """A tiny 'same'-padded conv net (cpu workspaces: padded x, packed w with >= 32
    filters, the fused pool's row scratch), softmax over 3 classes."""
    return Sequential([
        L.Conv2D(filters[0], 3, padding="same", activation="relu", input_shape=(size, size, 3)),
        L.MaxPooling2D(2),
        L.Conv2D(filters[1], 3, padding="same", activation="relu"),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(3, activation="softmax"),
    ], device=device, seed=seed)


def _inputs(count, n, size, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, size, size, 3)).astype(np.float32) for _ in range(count)]


def _mismatches(got, want):
    return sum(not np.array_equal(g, w) for g, w in zip(got, want))


def _predict_jobs(models, inputs_per_thread):
    """One job per thread: predict each of its inputs with its model, in order."""
    def job(model, xs):
        return lambda: [model.predict(x, batch_size=x.shape[0]) for x in xs]
    return [job(m, xs) for m, xs in zip(models, inputs_per_thread)]


@pytest.mark.parametrize("device, calls, size", [("cpu", 25, 32), ("reference", 25, 24)])
def test_predict_on_one_model_from_8_threads_matches_serial(device, calls, size):
    model = _net(device, size, seed=1)
    inputs = [_inputs(calls, 4, size, seed=100 + t) for t in range(THREADS)]
    serial = [[model.predict(x, batch_size=4) for x in xs] for xs in inputs]
    together = _run_together(_predict_jobs([model] * THREADS, inputs))
    wrong = sum(_mismatches(g, w) for g, w in zip(together, serial))
    assert wrong == 0, f"{wrong} of {THREADS * calls} concurrent predictions differ from serial"


def test_predict_on_several_models_from_8_threads_matches_serial():
    # Two models per input size (same architecture, different weights): they share every
    # workspace shape, and the two sizes share the packed weights' shape. (cpu only: the
    # reference keeps no state outside its models' plans.)
    device, calls, sizes = "cpu", 25, (32, 48)
    models = [_net(device, sizes[t % 2], seed=10 + t % 4) for t in range(THREADS)]
    inputs = [_inputs(calls, 2, sizes[t % 2], seed=200 + t) for t in range(THREADS)]
    serial = [[m.predict(x, batch_size=2) for x in xs] for m, xs in zip(models, inputs)]
    together = _run_together(_predict_jobs(models, inputs))
    wrong = sum(_mismatches(g, w) for g, w in zip(together, serial))
    assert wrong == 0, f"{wrong} of {THREADS * calls} concurrent predictions differ from serial"


def _compiled(device, size, seed):
    m = _net(device, size, seed)
    m.compile(optimizer=SGD(0.05, momentum=0.9), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    return m


def _labelled(n, size, seed):
    x = _inputs(1, n, size, seed)[0]
    return x, (np.arange(n) % 3).astype(np.int32)


def test_fit_while_another_model_predicts_matches_serial():
    size = 32
    x, y = _labelled(24, size, seed=5)
    serial_fit = _compiled("cpu", size, seed=7)
    serial_fit.fit(x, y, batch_size=8, epochs=3, verbose=0, validation_data=(x, y))
    want_weights = serial_fit.get_weights()

    other = _net("cpu", size, seed=8)              # same shapes: same workspaces
    xs = _inputs(6, 8, size, seed=9)
    want_pred = [other.predict(v, batch_size=8) for v in xs]

    fitted = _compiled("cpu", size, seed=7)
    done = threading.Event()

    def fit():
        try:
            return fitted.fit(x, y, batch_size=8, epochs=3, verbose=0,
                              validation_data=(x, y)).history
        finally:
            done.set()

    def predict():
        rounds = []
        while not done.is_set() or len(rounds) < 2:
            rounds.append([other.predict(v, batch_size=8) for v in xs])
        return rounds

    history, rounds = _run_together([fit, predict])
    assert history == serial_fit.history.history
    for got, want in zip(fitted.get_weights(), want_weights):
        np.testing.assert_array_equal(got, want)
    wrong = sum(_mismatches(r, want_pred) for r in rounds)
    assert wrong == 0, f"{wrong} of {len(rounds) * len(xs)} predictions during fit differ"


def test_train_on_batch_and_evaluate_on_one_model_from_threads_match_serial():
    # Every thread trains on the same batch, so the sequence of updates is the same whatever
    # order the threads take turns in: the final weights equal 4 x 5 serial steps, and the
    # losses are the serial losses in some order.
    size, calls = 32, 5
    x, y = _labelled(8, size, seed=11)
    serial = _compiled("cpu", size, seed=12)
    want_losses = sorted(serial.train_on_batch(x, y)[0] for _ in range(4 * calls))
    want_eval = serial.evaluate(x, y, batch_size=4)

    model = _compiled("cpu", size, seed=12)
    rounds = _run_together([lambda: [model.train_on_batch(x, y)[0] for _ in range(calls)]] * 4)
    assert sorted(v for r in rounds for v in r) == want_losses
    for got, want in zip(model.get_weights(), serial.get_weights()):
        np.testing.assert_array_equal(got, want)
    evals = _run_together([lambda: [model.evaluate(x, y, batch_size=4) for _ in range(4)]] * 4)
    assert all(e == want_eval for r in evals for e in r)


def _kernel_cases():
    """Zero-argument calls of the cpu engine: forward/backward convs and the fused ops at
    two shapes each (valid and same padding, strides 1 and 2, >= 32 filters), pool, dense
    and a loss."""
    K = kernels.get("cpu")
    rng = np.random.default_rng(3)
    cases = []
    for n, hw, c, f, stride, padding in [(2, 20, 3, 32, 1, "same"), (3, 17, 8, 40, 2, "valid")]:
        x = rng.standard_normal((n, hw, hw, c)).astype(np.float32)
        w = rng.standard_normal((3, 3, c, f)).astype(np.float32)
        b = rng.standard_normal(f).astype(np.float32)
        kw = dict(stride=stride, padding=padding)
        y = K.conv2d_forward(x, w, b, **kw)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        yr = K.conv2d_relu_forward(x, w, b, **kw)
        yp, arg = K.conv2d_relu_maxpool_forward(x, w, b, **kw)
        dyp = rng.standard_normal(yp.shape).astype(np.float32)
        cases += [
            (lambda x=x, w=w, b=b, kw=kw: K.conv2d_forward(x, w, b, **kw)),
            (lambda x=x, w=w, dy=dy, kw=kw: K.conv2d_backward(x, w, dy, **kw)),
            (lambda x=x, w=w, dy=dy, yr=yr, kw=kw: K.conv2d_relu_backward(x, w, dy, yr, **kw)),
            (lambda x=x, w=w, b=b, kw=kw: K.conv2d_relu_maxpool_forward(x, w, b, **kw)),
            (lambda x=x, w=w, d=dyp, yp=yp, a=arg, kw=kw:
             K.conv2d_relu_maxpool_backward(x, w, d, yp, a, **kw)),
        ]
    # The other cpu ops keep no scratch; they run alongside the convs here all the same.
    x = rng.standard_normal((4, 9, 9, 16)).astype(np.float32)
    yp, arg = K.maxpool2d_forward(x, pool=2)
    dyp = rng.standard_normal(yp.shape).astype(np.float32)
    xd = rng.standard_normal((6, 200)).astype(np.float32)
    wd = rng.standard_normal((200, 48)).astype(np.float32)
    bd = rng.standard_normal(48).astype(np.float32)
    dyd = rng.standard_normal((6, 48)).astype(np.float32)
    labels = (np.arange(6) % 48).astype(np.int32)
    cases += [
        lambda: K.maxpool2d_forward(x, pool=2),
        lambda: K.maxpool2d_backward(dyp, arg, x.shape),
        lambda: K.dense_forward(xd, wd, bd),
        lambda: K.dense_backward(xd, wd, dyd),
        lambda: K.softmax_crossentropy(labels, dyd),
    ]
    return cases


def _same(a, b):
    if isinstance(a, (tuple, list)):
        return all(_same(u, v) for u, v in zip(a, b))
    return (a is None and b is None) or np.array_equal(a, b)


def test_cpu_kernels_called_from_8_threads_at_mixed_shapes_match_serial():
    cases = _kernel_cases()
    # Each thread runs every case, starting at a different one, so that at any moment
    # threads run different ops and shapes that share workspace names.
    order = [[(t + k) % len(cases) for k in range(3 * len(cases))] for t in range(THREADS)]
    serial = [c() for c in cases]
    together = _run_together([lambda o=o: [(i, cases[i]()) for i in o] for o in order])
    wrong = sum(not _same(got, serial[i]) for r in together for i, got in r)
    assert wrong == 0, f"{wrong} of {THREADS * len(order[0])} concurrent kernel calls differ"

"""Sequential trains: it learns, its gradients are right, backends and plans agree,
seeds reproduce, and fit/evaluate/predict/train_on_batch behave like Keras."""
import math
import types
import warnings

import numpy as np
import pytest

import fastconv
from fastconv import callbacks as C
from fastconv import kernels
from fastconv import layers as L
from fastconv.optimizers import SGD, Adam, RMSprop

from .model_helpers import discs_and_squares, tiny_convnet


def _backend_or_skip(device):
    try:
        kernels.get(device)
    except kernels.BackendUnavailable as exc:
        pytest.skip(f"backend {device!r} unavailable: {exc}")


@pytest.fixture(scope="module")
def shapes_data():
    rng = np.random.default_rng(7)
    return (discs_and_squares(1000, rng, noise=0.1),
            discs_and_squares(400, rng, noise=0.1))


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_tiny_convnet_learns_discs_vs_squares(device, shapes_data):
    """Held-out accuracy >= 95% (measured 0.983-1.0 over seeds 0-5 on the reference)."""
    _backend_or_skip(device)
    (x, y), (xv, yv) = shapes_data
    model = tiny_convnet(device=device, seed=3, filters=(8, 16), units=32)
    model.compile(optimizer=Adam(learning_rate=0.003), loss="binary_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=8, validation_data=(xv, yv), verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 8
    assert history.history["loss"][-1] < history.history["loss"][0]
    loss, acc = model.evaluate(xv, yv)
    assert acc >= 0.95, f"held-out accuracy {acc:.3f} after 8 epochs"
    assert history.history["val_accuracy"][-1] == acc
    pred = model.predict(xv)
    assert pred.shape == (400, 1) and pred.dtype == np.float32
    assert np.all((pred >= 0) & (pred <= 1))
    assert np.mean((pred[:, 0] > 0.5) == (yv > 0.5)) == pytest.approx(acc)


def _loss_and_grads(model, x, y):
    """The training plan's loss and host copies of the gradients, without updating."""
    plan = model._plan("train", x.shape[0])
    plan.load_slice(x, model._prep_labels(y, x.shape[0]), 0, x.shape[0])
    plan.forward()
    loss = plan.compute_loss()
    plan.backward()
    K = plan.K
    return loss, [np.array(K.to_host(g), np.float64) for g in model._grad_list(K)]


def test_gradients_match_finite_differences():
    """Directional derivative of the loss along random weight directions."""
    rng = np.random.default_rng(0)
    x, y = discs_and_squares(6, rng, size=12)
    model = tiny_convnet(seed=1, input_shape=(12, 12, 1), dropout=0.0)
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    _, grads = _loss_and_grads(model, x, y)
    w0 = model.get_weights()
    for trial in range(3):
        d = [rng.standard_normal(w.shape) for w in w0]
        norm = math.sqrt(sum(float((v * v).sum()) for v in d))
        d = [v / norm for v in d]
        h = 1e-2
        losses = []
        for sign in (1, -1):
            model.set_weights([w + sign * h * v for w, v in zip(w0, d)])
            losses.append(_loss_and_grads(model, x, y)[0])
        numeric = (losses[0] - losses[1]) / (2 * h)
        analytic = sum(float((g * v).sum()) for g, v in zip(grads, d))
        assert analytic == pytest.approx(numeric, rel=2e-2, abs=1e-4), trial
    model.set_weights(w0)


def test_sgd_step_matches_hand_computed_logistic_regression():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 3)).astype(np.float32)
    y = (rng.random(8) > 0.5).astype(np.float32)
    model = fastconv.Sequential([L.Dense(1, activation="sigmoid", input_shape=(3,))],
                                device="reference", seed=0)
    model.compile(optimizer=SGD(learning_rate=0.5), loss="binary_crossentropy")
    w, b = [a.astype(np.float64) for a in model.get_weights()]
    z = x @ w + b
    p = 1 / (1 + np.exp(-z[:, 0]))
    want_loss = np.mean(-y * np.log(p) - (1 - y) * np.log(1 - p))
    dz = ((p - y) / 8)[:, None]
    loss = model.train_on_batch(x, y)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    w1, b1 = model.get_weights()
    np.testing.assert_allclose(w1, w - 0.5 * x.T @ dz, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b1, b - 0.5 * dz.sum(0), rtol=1e-5, atol=1e-6)


def _unfused_reference():
    ref = kernels.get("reference")
    names = kernels.CONTRACT + ("empty", "zeros", "to_device", "to_host")
    return types.SimpleNamespace(NAME="reference-unfused", **{n: getattr(ref, n) for n in names})


def test_fused_and_unfused_plans_give_the_same_loss_curve():
    rng = np.random.default_rng(2)
    x, y = discs_and_squares(40, rng, size=12)
    curves = []
    for unfused in (False, True):
        model = tiny_convnet(seed=5, input_shape=(12, 12, 1))
        model.compile(optimizer=RMSprop(learning_rate=0.003), loss="binary_crossentropy",
                      metrics=["accuracy"])
        if unfused:
            model._backend()
            model._K = _unfused_reference()
            for layer in model.layers:
                layer._K = model._K
        h = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        curves.append((h.history["loss"], model.get_weights()))
        assert model.plan_summary()[:3] == (["conv", "relu", "pool"] if unfused else
                                            ["conv2d_relu_maxpool", "conv2d_relu_maxpool",
                                             "flatten"])
    np.testing.assert_allclose(curves[0][0], curves[1][0], rtol=1e-6)
    for a, b in zip(curves[0][1], curves[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _curve(device, x, y, steps_seed=11):
    # SGD with momentum: float32 differences stay proportional to the gradients (RMSprop
    # and Adam turn a tiny gradient's rounding into a full-size step of either sign).
    model = tiny_convnet(device=device, seed=steps_seed, input_shape=(12, 12, 3))
    model.compile(optimizer=SGD(learning_rate=0.05, momentum=0.9), loss="binary_crossentropy",
                  metrics=["accuracy"])
    losses = [model.train_on_batch(x[k:k + 8], y[k:k + 8])[0] for k in range(0, 32, 8)]
    h = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    return losses + h.history["loss"], model.get_weights()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_backend_loss_curve_matches_reference(device):
    """Same model, seed and data: the backend's loss curve follows the reference's."""
    _backend_or_skip(device)
    rng = np.random.default_rng(4)
    x = rng.random((32, 12, 12, 3), np.float32)
    y = (rng.random(32) > 0.5).astype(np.float32)
    ref_curve, ref_w = _curve("reference", x, y)
    dev_curve, dev_w = _curve(device, x, y)
    np.testing.assert_allclose(dev_curve, ref_curve, rtol=2e-4, atol=1e-5)
    for a, b in zip(dev_w, ref_w):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_same_seed_gives_bitwise_identical_weights(device):
    _backend_or_skip(device)
    rng = np.random.default_rng(5)
    x, y = discs_and_squares(48, rng, size=12)
    runs = []
    for _ in range(2):
        fastconv.set_seed(123)
        model = tiny_convnet(device=device, seed=None, input_shape=(12, 12, 1))
        model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        h = model.fit(x, y, batch_size=16, epochs=2, verbose=0)   # shuffles, drops out
        runs.append((h.history, model.get_weights()))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        assert np.array_equal(a, b)
    fastconv.set_seed(124)
    other = tiny_convnet(device=device, seed=None, input_shape=(12, 12, 1))
    assert not np.array_equal(other.get_weights()[0], runs[0][1][0])


def test_seed_argument_fixes_init_and_differs_between_seeds():
    a = tiny_convnet(seed=9).get_weights()
    b = tiny_convnet(seed=9).get_weights()
    c = tiny_convnet(seed=10).get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    # glorot_uniform limits and zero biases
    k = a[0]
    limit = math.sqrt(6 / (3 * 3 * 1 + 3 * 3 * 8))
    assert k.shape == (3, 3, 1, 8) and np.abs(k).max() <= limit and np.abs(k).max() > 0.5 * limit
    assert not a[1].any()


def test_dropout_mask_is_the_reference_mask_of_the_model_generator():
    from fastconv.kernels.reference import dropout_mask
    model = fastconv.Sequential([L.Dropout(0.4, input_shape=(5, 7))], device="reference",
                                seed=3)
    plan = model._plan("train", 6)
    expected_rng = np.random.default_rng(np.random.SeedSequence(3).spawn(3)[2])
    x = np.ones((6, 5, 7), np.float32)
    plan.load_slice(x, None, 0, 6)
    for _ in range(2):
        plan.forward()
        np.testing.assert_array_equal(plan.steps[0].mask, dropout_mask((6, 5, 7), 0.4,
                                                                       expected_rng))
        np.testing.assert_array_equal(plan.steps[0].y, plan.steps[0].mask)
    # inference: identity
    np.testing.assert_array_equal(model.predict(x), x)


class Batches:
    """A data-pipeline-like object: __iter__ and __len__, re-iterable."""

    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.iterations = 0

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        self.iterations += 1
        for k in range(0, len(self.x), self.batch_size):
            yield self.x[k:k + self.batch_size], self.y[k:k + self.batch_size]


def test_fit_accepts_an_iterable_of_batches_and_reiterates_it_each_epoch():
    rng = np.random.default_rng(6)
    x, y = discs_and_squares(40, rng, size=12)
    data = Batches(x, y, 16)       # last batch has 8: a second plan
    a = tiny_convnet(seed=1, input_shape=(12, 12, 1))
    a.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
    ha = a.fit(data, epochs=3, verbose=0, validation_data=Batches(x[:16], y[:16], 8))
    assert data.iterations == 3
    b = tiny_convnet(seed=1, input_shape=(12, 12, 1))
    b.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
    hb = b.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
               validation_data=(x[:16], y[:16]))
    assert ha.history == hb.history
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    np.testing.assert_array_equal(a.predict(Batches(x, y, 16)), a.predict(x))


def test_validation_split_uses_the_last_fraction_like_keras():
    rng = np.random.default_rng(8)
    x, y = discs_and_squares(50, rng, size=12)
    a = tiny_convnet(seed=2, input_shape=(12, 12, 1))
    a.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    ha = a.fit(x, y, batch_size=10, epochs=2, validation_split=0.2, verbose=0)
    b = tiny_convnet(seed=2, input_shape=(12, 12, 1))
    b.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    hb = b.fit(x[:40], y[:40], batch_size=10, epochs=2, validation_data=(x[40:], y[40:]),
               verbose=0)
    assert ha.history == hb.history


def test_history_loss_is_the_sample_weighted_mean_of_batch_losses():
    rng = np.random.default_rng(9)
    x, y = discs_and_squares(20, rng, size=12)
    model = tiny_convnet(seed=4, input_shape=(12, 12, 1), dropout=0.0)
    model.compile(optimizer=SGD(0.0), loss="binary_crossentropy", metrics=["accuracy"])
    h = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)   # lr 0: no change
    loss, acc = model.evaluate(x, y, batch_size=20)
    assert h.history["loss"][0] == pytest.approx(loss, rel=1e-6)
    assert h.history["accuracy"][0] == pytest.approx(acc)


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_softmax_models_train_with_both_label_formats(loss):
    rng = np.random.default_rng(10)
    x, y = discs_and_squares(64, rng, size=12)
    labels = y.astype(np.int64)
    if loss == "categorical_crossentropy":
        labels = np.eye(2, dtype=np.float32)[labels]
    model = tiny_convnet(seed=6, input_shape=(12, 12, 1), classes=2)
    model.compile(optimizer=Adam(0.01), loss=loss, metrics=["accuracy"])
    h = model.fit(x, labels, batch_size=16, epochs=4, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    p = model.predict(x[:5])
    assert p.shape == (5, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)


def test_verbose_fit_prints_keras_style_epoch_lines(capsys):
    rng = np.random.default_rng(11)
    x, y = discs_and_squares(16, rng, size=12)
    model = tiny_convnet(seed=0, input_shape=(12, 12, 1))
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=8, epochs=2, verbose=1, validation_split=0.25)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert " - loss: " in out and " - accuracy: " in out and " - val_loss: " in out


# ------------------------------------------------------------------ callbacks

def test_early_stopping_stops_after_patience_epochs_without_improvement():
    rng = np.random.default_rng(12)
    x, y = discs_and_squares(32, rng, size=12)
    model = tiny_convnet(seed=0, input_shape=(12, 12, 1), dropout=0.0)
    model.compile(optimizer=SGD(0.0), loss="binary_crossentropy", metrics=["accuracy"])
    stop = C.EarlyStopping(monitor="loss", patience=2, restore_best_weights=True)
    h = model.fit(x, y, batch_size=16, epochs=20, verbose=0, shuffle=False, callbacks=[stop])
    assert len(h.history["loss"]) == 3 and stop.stopped_epoch == 2   # lr 0: never improves


def test_early_stopping_restores_best_epoch_weights():
    rng = np.random.default_rng(12)
    x, y = discs_and_squares(32, rng, size=12)
    seen = {}

    class Record(C.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = (logs["val_loss"], self.model.get_weights())

    model = tiny_convnet(seed=0, input_shape=(12, 12, 1))
    model.compile(optimizer=Adam(0.2), loss="binary_crossentropy", metrics=["accuracy"])
    stop = C.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    model.fit(x, y, batch_size=8, epochs=6, verbose=0, validation_data=(x, y),
              callbacks=[Record(), stop])
    best = min(seen, key=lambda e: seen[e][0])
    assert stop.best_epoch == best
    for a, b in zip(model.get_weights(), seen[best][1]):
        np.testing.assert_array_equal(a, b)


def test_model_checkpoint_saves_only_improvements(tmp_path):
    rng = np.random.default_rng(13)
    x, y = discs_and_squares(32, rng, size=12)
    model = tiny_convnet(seed=0, input_shape=(12, 12, 1))
    model.compile(optimizer=Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    path = tmp_path / "best.npz"
    vals = []

    class Record(C.Callback):
        def on_epoch_end(self, epoch, logs=None):
            vals.append((logs["val_loss"], self.model.get_weights()))

    ck = C.ModelCheckpoint(str(path), monitor="val_loss", save_best_only=True)
    model.fit(x, y, batch_size=8, epochs=4, verbose=0, validation_data=(x, y),
              callbacks=[ck, Record()])
    best_loss, best_w = min(vals, key=lambda v: v[0])
    assert ck.best == best_loss
    loaded = fastconv.load_model(path, device="reference")
    for a, b in zip(loaded.get_weights(), best_w):
        np.testing.assert_array_equal(a, b)
    every = C.ModelCheckpoint(str(tmp_path / "w-{epoch:02d}.npz"), save_weights_only=True)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[every])
    assert sorted(p.name for p in tmp_path.glob("w-*.npz")) == ["w-01.npz", "w-02.npz"]


class NaNAt:
    """(x, y) batches where batch `bad` of epoch 0 holds a NaN pixel."""

    def __init__(self, x, y, bad):
        self.x, self.y, self.bad = x, y, bad

    def __len__(self):
        return len(self.x) // 8

    def __iter__(self):
        for k in range(len(self)):
            xb = self.x[8 * k:8 * k + 8].copy()
            if k == self.bad:
                xb[0, 0, 0, 0] = np.nan
            yield xb, self.y[8 * k:8 * k + 8]


def test_nan_loss_stops_training_and_restores_the_last_good_weights():
    rng = np.random.default_rng(14)
    x, y = discs_and_squares(40, rng, size=12)
    model = tiny_convnet(seed=0, input_shape=(12, 12, 1))
    model.compile(optimizer=Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    with pytest.warns(C.NonFiniteLossWarning, match=r"loss became nan at epoch 1, batch 4: "
                                                     r"training stopped and the weights"):
        h = model.fit(NaNAt(x, y, bad=3), epochs=5, verbose=0)
    assert len(h.history["loss"]) == 1 and math.isnan(h.history["loss"][0])
    got = model.get_weights()
    assert all(np.isfinite(w).all() for w in got)
    # Batches 0-2 gave finite losses, batch 3 NaN (its update is skipped). The last
    # weights known to give a finite loss are those batch 2 started from: 2 updates.
    ref2 = tiny_convnet(seed=0, input_shape=(12, 12, 1))
    ref2.compile(optimizer=Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    ref2.fit(NaNAt(x[:16], y[:16], bad=-1), epochs=1, verbose=0)
    for a, b in zip(got, ref2.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.predict(x[:4]).shape == (4, 1)


def test_nan_guard_can_leave_the_weights():
    rng = np.random.default_rng(14)
    x, y = discs_and_squares(24, rng, size=12)
    model = tiny_convnet(seed=0, input_shape=(12, 12, 1))
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    guard = C.TerminateOnNaN(restore_weights=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(NaNAt(x, y, bad=0), epochs=2, verbose=0, callbacks=[guard])
    assert "weights were left as they were" in guard.message
    assert any(issubclass(w.category, C.NonFiniteLossWarning) for w in caught)


def test_to_moves_weights_and_optimizer_state_and_training_continues_identically():
    rng = np.random.default_rng(15)
    x, y = discs_and_squares(32, rng, size=12)
    runs = []
    for move in (False, True):
        model = tiny_convnet(seed=8, input_shape=(12, 12, 1))
        model.compile(optimizer=Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        if move:
            assert model.to("reference") is model and model.device == "reference"
            assert not model._plans                         # buffers are rebuilt
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        runs.append(model.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_fit_without_metrics_and_verbose_2(capsys):
    rng = np.random.default_rng(16)
    x, y = discs_and_squares(16, rng, size=12)
    model = tiny_convnet(seed=0, input_shape=(12, 12, 1))
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    h = model.fit(x, y, batch_size=8, epochs=2, verbose=2, validation_data=(x, y))
    assert set(h.history) == {"loss", "val_loss"} and h.epoch == [0, 1]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Epoch 1/2" and out[1].startswith("16/16 - ") and "val_loss" in out[1]
    assert isinstance(model.evaluate(x, y), float)
    assert isinstance(model.train_on_batch(x, y), float)


def test_uncompiled_model_predicts_and_builds_from_data():
    model = fastconv.Sequential([L.Conv2D(4, 3, activation="relu"), L.Flatten(),
                                 L.Dense(3, activation="softmax")], device="reference", seed=0)
    assert not model.built
    x = np.random.default_rng(0).random((5, 6, 6, 2), np.float32)
    p = model.predict(x, batch_size=2)
    assert model.input_shape == (None, 6, 6, 2) and p.shape == (5, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    assert model.count_params() == 3 * 3 * 2 * 4 + 4 + 64 * 3 + 3
    config = model.get_config()
    again = fastconv.Sequential.from_config(config, device="reference")
    assert again.get_config() == config
    again.set_weights(model.get_weights())
    np.testing.assert_array_equal(again.predict(x), p)


def test_one_shot_generators_with_and_without_steps_per_epoch():
    rng = np.random.default_rng(17)
    x, y = discs_and_squares(32, rng, size=12)

    def gen():
        while True:
            for k in range(0, 32, 8):
                yield x[k:k + 8], y[k:k + 8]

    a = tiny_convnet(seed=0, input_shape=(12, 12, 1))
    a.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    ha = a.fit(gen(), steps_per_epoch=4, epochs=2, verbose=0)
    b = tiny_convnet(seed=0, input_shape=(12, 12, 1))
    b.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    hb = b.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert ha.history == hb.history           # no batch is skipped between epochs
    once = (batch for batch in [(x[:8], y[:8])])
    with pytest.raises(ValueError, match=r"yielded no samples in epoch 2 \(a one-shot "
                                         r"generator is exhausted"):
        a.fit(once, epochs=2, verbose=0)


def test_built_layers_keep_their_weights_when_added_and_models_build_from_data():
    dense = L.Dense(3)
    dense.build((None, 4), rng=np.random.default_rng(0))
    kernel = dense.get_weights()[0]
    model = fastconv.Sequential([L.Input((4,)), dense, L.Dense(1, activation="sigmoid")],
                                device="reference")
    np.testing.assert_array_equal(model.get_weights()[0], kernel)
    with pytest.raises(L.LayerError, match=r"Dense layer 'dense_1' was built for input shape "
                                           r"\(None, 4\) but the model's output here is "
                                           r"\(None, 5\)"):
        fastconv.Sequential([L.Input((5,)), dense], device="reference")
    lazy = fastconv.Sequential([L.Dense(2, activation="relu"), L.Dense(1, activation="sigmoid")],
                               device="reference", seed=0)
    lazy.compile(optimizer="sgd", loss="binary_crossentropy")
    loss = lazy.train_on_batch(np.ones((3, 4), np.float32), np.ones(3))
    assert lazy.input_shape == (None, 4) and np.isfinite(loss)

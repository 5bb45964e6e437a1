"""Weight regularizers (fastconv.regularizers, Keras 3's formulas: l2 = x * sum(w^2), no
0.5; l1 = x * sum(|w|)): the objects and their configs (as Keras 3.15 writes them), the
regularize op (every backend against the reference in tests/test_opinfo.py, the
finite-difference case in tests/test_reference_gradients.py), and the model: the
penalty in the loss fit/train_on_batch/evaluate report (Keras 3 includes it in
evaluate too) and its gradient in the update, saved and loaded. cuda: the op and the
device step's penalty kernel in the simulator (tests/test_cuda_sim.py)."""
import numpy as np
import pytest

import fastconv
from fastconv import Sequential, kernels, regularizers
from fastconv import layers as L
from fastconv.kernels import float64_allowed
from fastconv.kernels import reference as R
from fastconv.optimizers import SGD

from .backends import available_backends

HOST = [b for b in available_backends()[0] if b in ("reference", "cpu")]


def test_formulas_and_configs_are_keras_3():
    w = np.array([[1.0, -2.0], [0.0, 0.5]])
    assert regularizers.l2(0.5)(w) == pytest.approx(0.5 * 5.25)
    assert regularizers.l1(0.1)(w) == pytest.approx(0.1 * 3.5)
    assert regularizers.l1_l2(l1=0.1, l2=0.5)(w) == pytest.approx(0.35 + 2.625)
    assert regularizers.L2(0.5).get_config() == {"l2": 0.5}
    assert regularizers.L1L2(0.1, 0.2).get_config() == {"l1": 0.1, "l2": 0.2}
    assert regularizers.serialize(regularizers.l2(0.5)) == {
        "module": "keras.regularizers", "class_name": "L2", "config": {"l2": 0.5},
        "registered_name": None}
    assert regularizers.get("l2") == regularizers.L2(0.01)
    assert regularizers.get(regularizers.serialize(regularizers.L1(0.3))) == \
        regularizers.L1(0.3)


@pytest.mark.parametrize("backend", HOST)
def test_the_op_is_the_formula(backend):
    K = kernels.get(backend)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    w[0, 0] = 0.0
    g = rng.standard_normal((3, 4)).astype(np.float32)
    g0, acc = g.copy(), np.zeros(1, np.float32)
    K.regularize(w, g, 0.03, 0.2, acc)
    w64 = w.astype(np.float64)
    assert acc[0] == pytest.approx(0.03 * np.abs(w64).sum() + 0.2 * (w64 ** 2).sum(),
                                   rel=1e-6)
    np.testing.assert_allclose(g, g0 + 0.03 * np.sign(w64) + 0.4 * w64, rtol=1e-6,
                               atol=1e-7)
    K.regularize(w, None, 0.0, 1.0, acc, accumulate=True)
    assert acc[0] == pytest.approx(0.03 * np.abs(w64).sum() + 1.2 * (w64 ** 2).sum(),
                                   rel=1e-6)


def test_reference_in_float64():
    w = np.array([0.5, -1.5, 0.0])
    acc = np.zeros(1)
    g = np.zeros(3)
    with float64_allowed():
        R.regularize(w, g, 0.1, 0.25, acc)
    assert acc[0] == pytest.approx(0.1 * 2.0 + 0.25 * 2.5, rel=1e-15)
    np.testing.assert_allclose(g, [0.1 + 0.25, -0.1 - 0.75, 0.0], rtol=1e-15)


def _model(device, seed=0, **regs):
    return Sequential([L.Conv2D(3, 3, input_shape=(6, 6, 2), **regs.get("conv", {})),
                       L.Flatten(),
                       L.Dense(1, **regs.get("dense", {})), L.Activation("sigmoid")],
                      device=device, seed=seed)


def _data():
    rng = np.random.default_rng(3)
    return (rng.standard_normal((5, 6, 6, 2)).astype(np.float32),
            (rng.random(5) > 0.5).astype(np.float32))


REGS = dict(conv=dict(kernel_regularizer=regularizers.l2(0.05)),
            dense=dict(kernel_regularizer=regularizers.l1_l2(0.01, 0.02),
                       bias_regularizer="l1"))


def _penalty(weights):
    k0, _, k1, b1 = (w.astype(np.float64) for w in weights)
    return (0.05 * (k0 ** 2).sum() + 0.01 * np.abs(k1).sum() + 0.02 * (k1 ** 2).sum()
            + 0.01 * np.abs(b1).sum())


@pytest.mark.parametrize("backend", HOST)
def test_the_penalty_is_in_the_reported_loss_and_its_gradient_in_the_step(backend):
    x, y = _data()
    a, b = _model(backend, **REGS), _model(backend)
    lr = 0.1
    for m in (a, b):
        m.compile(optimizer=SGD(lr), loss="binary_crossentropy")
    w0 = a.get_weights()
    assert all(np.array_equal(p, q) for p, q in zip(w0, b.get_weights()))
    pen = _penalty(w0)
    plain = b.evaluate(x, y)
    assert a.evaluate(x, y) == pytest.approx(plain + pen, rel=1e-5)
    assert a.train_on_batch(x, y) == pytest.approx(plain + pen, rel=1e-5)
    b.train_on_batch(x, y)
    # the same loss gradient at the same weights: the updates differ by lr * dpenalty
    k0, b0, k1, b1 = (w.astype(np.float64) for w in w0)
    dpen = [0.1 * k0, 0 * b0, 0.01 * np.sign(k1) + 0.04 * k1, 0.01 * np.sign(b1)]
    for wa, wb, d in zip(a.get_weights(), b.get_weights(), dpen):
        np.testing.assert_allclose(wa, wb - lr * d, rtol=1e-4, atol=1e-6)
    # fit's loss of a one-batch epoch: the step's loss with the penalty, before the update
    before = a.evaluate(x, y)
    h = a.fit(x, y, batch_size=5, epochs=1, verbose=0, shuffle=False)
    assert h.history["loss"][0] == pytest.approx(before, rel=1e-5)


def test_regularizers_are_saved_and_loaded(tmp_path):
    x, y = _data()
    m = _model("reference", **REGS)
    m.compile(optimizer="sgd", loss="binary_crossentropy")
    path = str(tmp_path / "m.npz")
    m.save(path)
    back = fastconv.load_model(path, device="reference")
    assert back.layers[0].kernel_regularizer == regularizers.L2(0.05)
    assert back.layers[2].bias_regularizer == regularizers.L1(0.01)
    assert back.evaluate(x, y) == m.evaluate(x, y)
    cfg = m.layers[2].get_config()
    assert cfg["kernel_regularizer"]["class_name"] == "L1L2"
    assert "kernel_regularizer" not in _model("reference").layers[0].get_config()


def test_bad_regularizers_are_named():
    with pytest.raises(ValueError, match="Dense: kernel_regularizer must be None, 'l1', "
                                         "'l2', 'l1_l2' or a fastconv.regularizers object"):
        L.Dense(1, kernel_regularizer="l3")
    with pytest.raises(ValueError, match="L2: l2 must be a finite number >= 0"):
        regularizers.l2(-1.0)

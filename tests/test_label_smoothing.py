"""label_smoothing on the cross-entropy losses: Keras 3's formulas (binary y -> y * (1 -
ls) + 0.5 * ls; categorical onehot -> onehot * (1 - ls) + ls / K), the loss objects of
fastconv.losses, saving, and Keras 3's own values on fixed batches
(tests/keras_vectors/make_losses.py printed them; Keras works from the probabilities
with a 1e-7 clip, fastconv from the logits: the same to ~1e-6 at these logits). The cuda
kernels are checked in the simulator (tests/test_cuda_sim.py)."""
import numpy as np
import pytest

import fastconv
from fastconv import Sequential, kernels, losses
from fastconv import layers as L
from fastconv.kernels import float64_allowed
from fastconv.kernels import reference as R

from .backends import available_backends

HOST = [b for b in available_backends()[0] if b in ("reference", "cpu")]

Z = np.array([[2.0], [-1.0], [0.5], [-3.0]], np.float32)
Y = np.array([[1.0], [0.0], [0.0], [1.0]], np.float32)
W = np.array([0.5, 2.0, 0.0, 1.5], np.float32)
ZS = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.5, 0.5, 0.5]], np.float32)
YS = np.array([1, 2, 0])
KERAS = {"bce ls=0.1": 1.1094635725021362, "bce ls=0.1 weighted": 1.2969671487808228,
         "cce ls=0.2": 0.5565991401672363, "cce weighted": 0.5497073531150818}


def _bce_formula(ls, w=None):
    z, y = Z[:, 0].astype(np.float64), Y[:, 0].astype(np.float64)
    y = y * (1 - ls) + 0.5 * ls
    p = 1.0 / (1.0 + np.exp(-z))
    w = np.ones(4) if w is None else w.astype(np.float64)
    per = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return (w * per).sum() / 4, w * (p - y) / 4


def _cce_formula(ls, w=None):
    z = ZS.astype(np.float64)
    t = np.eye(3)[YS] * (1 - ls) + ls / 3
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    w = np.ones(3) if w is None else w.astype(np.float64)
    per = -(t * np.log(p)).sum(axis=1)
    return (w * per).sum() / 3, w[:, None] * (p - t) / 3


@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("ls", [0.1, 0.5, 1.0])
def test_smoothed_losses_follow_the_formula(backend, ls):
    K = kernels.get(backend)
    want, dwant = _bce_formula(ls)
    loss, dz = K.binary_crossentropy(Y, Z, label_smoothing=ls)
    assert loss == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(dz[:, 0], dwant, rtol=1e-5, atol=1e-8)
    want, dwant = _cce_formula(ls, W[:3])
    loss, dz = K.softmax_crossentropy(YS, ZS, label_smoothing=ls, sample_weight=W[:3])
    assert loss == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(dz, dwant, rtol=1e-5, atol=1e-8)


def test_the_reference_is_the_formula_in_float64():
    with float64_allowed():
        loss, dz = R.softmax_crossentropy(YS, ZS.astype(np.float64), label_smoothing=0.3)
    want, dwant = _cce_formula(0.3)
    assert loss == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(dz, dwant, rtol=1e-12)


@pytest.mark.parametrize("backend", HOST)
def test_zero_smoothing_is_bitwise_the_plain_loss(backend):
    K = kernels.get(backend)
    a, b = K.binary_crossentropy(Y, Z), K.binary_crossentropy(Y, Z, label_smoothing=0.0)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    a, b = K.softmax_crossentropy(YS, ZS), K.softmax_crossentropy(YS, ZS, label_smoothing=0)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("backend", HOST)
def test_keras_values(backend):
    K = kernels.get(backend)
    assert K.binary_crossentropy(Y, Z, label_smoothing=0.1)[0] == pytest.approx(
        KERAS["bce ls=0.1"], rel=2e-6)
    assert K.binary_crossentropy(Y, Z, label_smoothing=0.1, sample_weight=W)[0] == \
        pytest.approx(KERAS["bce ls=0.1 weighted"], rel=2e-6)
    assert K.softmax_crossentropy(YS, ZS, label_smoothing=0.2)[0] == pytest.approx(
        KERAS["cce ls=0.2"], rel=2e-6)
    assert K.softmax_crossentropy(YS, ZS, sample_weight=np.array([3.0, 0.25, 1.0]))[0] == \
        pytest.approx(KERAS["cce weighted"], rel=2e-6)


def _model(loss, units=1):
    m = Sequential([L.Dense(units, input_shape=(2,)),
                    L.Activation("sigmoid" if units == 1 else "softmax")], seed=0,
                   device="reference")
    m.compile(optimizer="sgd", loss=loss, metrics=["accuracy"])
    return m


def test_compile_with_loss_objects_and_save(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2)).astype(np.float32)
    y = (rng.random(6) > 0.5).astype(np.float32)
    m = _model(losses.BinaryCrossentropy(label_smoothing=0.2))
    assert m.loss == "binary_crossentropy" and m._loss.label_smoothing == 0.2
    p = m.predict(x)[:, 0].astype(np.float64)
    t = y * 0.8 + 0.1
    want = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    assert m.test_on_batch(x, y)[0] == pytest.approx(want, rel=1e-5)
    path = str(tmp_path / "m.npz")
    m.save(path)
    back = fastconv.load_model(path, device="reference")
    assert back._loss.label_smoothing == 0.2
    assert back.test_on_batch(x, y)[0] == m.test_on_batch(x, y)[0]
    # a plain loss saves as before: its name
    plain = _model("binary_crossentropy")
    assert losses.serialize(plain._loss) == "binary_crossentropy"
    # categorical: one-hot labels, smoothing over K
    mc = _model(losses.CategoricalCrossentropy(label_smoothing=0.3), units=3)
    yc = np.eye(3, dtype=np.float32)[np.arange(6) % 3]
    pc = mc.predict(x).astype(np.float64)
    want = -((yc * 0.7 + 0.1) * np.log(pc)).sum(axis=1).mean()
    assert mc.evaluate(x, yc)[0] == pytest.approx(want, rel=1e-5)
    h = mc.fit(x, yc, epochs=2, verbose=0)
    assert np.isfinite(h.history["loss"]).all()


def test_loss_objects_refuse_what_keras_refuses_or_fastconv_cannot():
    with pytest.raises(TypeError):
        losses.SparseCategoricalCrossentropy(label_smoothing=0.1)     # none in Keras 3
    with pytest.raises(ValueError, match="from_logits=True is not supported"):
        losses.BinaryCrossentropy(from_logits=True)
    with pytest.raises(ValueError, match="label_smoothing must be a number in \\[0, 1\\]"):
        losses.CategoricalCrossentropy(label_smoothing=2)
    assert losses.get(losses.SparseCategoricalCrossentropy()).name == \
        "sparse_categorical_crossentropy"

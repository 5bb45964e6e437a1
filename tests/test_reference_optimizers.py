"""Optimizer updates against Keras 3 formulas worked by hand for one element."""
import numpy as np
import pytest

from fastconv.kernels import reference as R

F32 = np.float32


def one(v):
    return np.array([v], F32)


def test_sgd_plain_momentum_nesterov():
    p = one(1.0)
    R.sgd_update(p, one(2.0), None, lr=0.1)
    assert p[0] == pytest.approx(0.8)
    p, v = one(1.0), one(0.5)
    R.sgd_update(p, one(2.0), v, lr=0.1, momentum=0.9)
    assert v[0] == pytest.approx(0.9 * 0.5 - 0.2)         # 0.25
    assert p[0] == pytest.approx(1.25)
    p, v = one(1.0), one(0.5)
    R.sgd_update(p, one(2.0), v, lr=0.1, momentum=0.9, nesterov=True)
    assert p[0] == pytest.approx(1.0 + 0.9 * 0.25 - 0.2)


def test_rmsprop_two_steps_keras_formula():
    p, ms = one(1.0), one(0.0)
    R.rmsprop_update(p, one(0.5), ms, lr=1e-3)
    assert ms[0] == pytest.approx(0.1 * 0.25)
    assert p[0] == pytest.approx(1.0 - 1e-3 * 0.5 / np.sqrt(0.025 + 1e-7), rel=1e-7)
    R.rmsprop_update(p, one(-1.0), ms, lr=1e-3)
    assert ms[0] == pytest.approx(0.9 * 0.025 + 0.1, rel=1e-6)


def test_adam_first_step_moves_by_about_lr():
    p, m, v = one(1.0), one(0.0), one(0.0)
    R.adam_update(p, one(0.3), m, v, t=1, lr=1e-3)
    assert m[0] == pytest.approx(0.03) and v[0] == pytest.approx(0.001 * 0.09)
    alpha = 1e-3 * np.sqrt(1 - 0.999) / (1 - 0.9)
    assert p[0] == pytest.approx(1.0 - alpha * 0.03 / (np.sqrt(0.00009) + 1e-7), rel=1e-6)


def test_update_validates():
    with pytest.raises(ValueError, match="momentum=0.9 needs a velocity"):
        R.sgd_update(one(1), one(1), None, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"ms must have the shape of p \(1,\), got \(2,\)"):
        R.rmsprop_update(one(1), one(1), np.zeros(2, F32), lr=0.1)
    with pytest.raises(ValueError, match="t must be an int >= 1"):
        R.adam_update(one(1), one(1), one(0), one(0), t=0, lr=0.1)
    with pytest.raises(TypeError, match="g must be float32, got float64"):
        R.rmsprop_update(one(1), np.ones(1), one(0), lr=0.1)

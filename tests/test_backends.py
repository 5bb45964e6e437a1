"""kernels.get(), the contract every backend exports, and the reference-matching helper."""
import types

import numpy as np
import pytest

from fastconv import kernels
from fastconv.kernels import reference as R
from fastconv.testing import MismatchError, assert_matches_reference

from .backends import available_backends


def test_get_reference_has_every_contract_op():
    mod = kernels.get("reference")
    for name in kernels.CONTRACT:
        assert callable(getattr(mod, name)), name


def test_get_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown backend 'tpu'; choose one of reference, cpu"):
        kernels.get("tpu")


def test_unavailable_backends_say_why():
    found, missing = available_backends()
    assert "reference" in found
    for name, why in missing.items():
        assert name in why and len(why) > 30


def _broken_backend(op, transform):
    """A fake backend that is the reference except that `op`'s output is transformed."""
    mod = types.SimpleNamespace(NAME="broken", **{n: getattr(R, n) for n in kernels.CONTRACT})
    setattr(mod, op, lambda *a, **k: transform(getattr(R, op)(*a, **k)))
    return mod


def test_helper_catches_a_wrong_output(rng):
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    b = np.zeros(4, np.float32)
    assert_matches_reference(R, "conv2d_forward", x, w, b)
    broken = _broken_backend("conv2d_forward", lambda y: y * np.float32(1.001))
    with pytest.raises(MismatchError, match=r"broken.conv2d_forward out: 128 of 128 values"):
        assert_matches_reference(broken, "conv2d_forward", x, w, b)


def test_helper_catches_wrong_argmax_and_dtype(rng):
    x = rng.standard_normal((1, 4, 4, 2)).astype(np.float32)
    broken = _broken_backend("maxpool2d_forward", lambda r: (r[0], r[1][::-1].copy()))
    assert_matches_reference(broken, "maxpool2d_forward", x)  # batch 1: reversal is a no-op
    broken = _broken_backend("maxpool2d_forward", lambda r: (r[0], r[1] + 1))
    with pytest.raises(MismatchError, match="integers differ"):
        assert_matches_reference(broken, "maxpool2d_forward", x)
    broken = _broken_backend("relu_forward", lambda y: y.astype(np.float64))
    with pytest.raises(MismatchError, match="dtype float64, reference float32"):
        assert_matches_reference(broken, "relu_forward", x)


def test_helper_checks_in_place_updates(rng):
    p = rng.standard_normal(5).astype(np.float32)
    g = rng.standard_normal(5).astype(np.float32)
    ms = np.zeros(5, np.float32)

    def lazy_rmsprop(p, g, ms, lr, rho=0.9, eps=1e-7):
        p -= np.float32(lr) * g   # forgets the state
    broken = _broken_backend("relu_forward", lambda y: y)
    broken.rmsprop_update = lazy_rmsprop
    with pytest.raises(MismatchError, match=r"rmsprop_update arg\[0\]"):
        assert_matches_reference(broken, "rmsprop_update", p, g, ms, lr=0.01)

"""Bad input to the cuda ops raises the reference's exception and message.

No GPU and no simulator needed: the checks run before anything touches the
device. Each case runs on the reference and on the cuda package, with host
arrays and again with stand-ins for device arrays (objects with the device
array interface the wrappers look for: shape, dtype, copy_to_host,
is_c_contiguous), and the two errors must be the same.
"""
import numpy as np
import pytest

from fastconv.kernels import reference as R

C = pytest.importorskip("fastconv.kernels.cuda", reason="numba-cuda is not installed")

F32 = np.float32


class DeviceStandIn:
    """Just enough of a numba DeviceNDArray for the argument checks."""

    def __init__(self, a):
        self.shape, self.dtype, self.size, self.ndim = a.shape, a.dtype, a.size, a.ndim

    def copy_to_host(self, *_):
        raise AssertionError("a bad-input check touched the device")

    def is_c_contiguous(self):
        return True


def z(*shape, dtype=F32):
    return np.zeros(shape, dtype)


RNG = np.random.default_rng
CASES = [
    ("relu_forward", ([[1.0]],), {}),
    ("relu_forward", (z(2, 3, dtype=np.float64),), {}),
    ("relu_backward", (z(2, 3), z(3, 2)), {}),
    ("relu_forward", (z(2, 3),), dict(out=z(3, 2))),
    ("relu_forward", (z(2, 3),), dict(out=z(2, 3, dtype=np.float64))),
    ("sigmoid_forward", (z(4, dtype=np.int32),), {}),
    ("sigmoid_backward", (z(4), z(5)), {}),
    ("softmax_forward", (z(2, 3, 4),), {}),
    ("softmax_backward", (z(2, 3), z(2, 4)), {}),
    ("dropout_forward", (z(3), 1.0, RNG()), {}),
    ("dropout_forward", (z(3), -0.1, RNG()), {}),
    ("dropout_forward", (z(3), 0.5, np.random.RandomState(0)), {}),
    ("dropout_backward", (z(3), z(4)), {}),
    ("maxpool2d_forward", (z(1, 2, 2, 1), 3), {}),
    ("maxpool2d_forward", (z(1, 4, 4, 1, dtype=np.int32),), {}),
    ("maxpool2d_forward", (z(4, 4, 1),), {}),
    ("maxpool2d_forward", (z(1, 4, 4, 1),), dict(pool=0)),
    ("maxpool2d_forward", (z(1, 4, 4, 1),), dict(padding="full")),
    ("maxpool2d_forward", (z(1, 4, 4, 1),), dict(out=(z(1, 2, 2, 1), z(1, 2, 2, 1)))),
    ("maxpool2d_backward", (z(1, 2, 2, 1), z(1, 2, 2, 1, dtype=np.int64), (1, 4, 4, 1)), {}),
    ("maxpool2d_backward", (z(1, 2, 2, 1), z(1, 2, 3, 1, dtype=np.int32), (1, 4, 4, 1)), {}),
    ("maxpool2d_backward", (z(1, 2, 2, 1), z(1, 2, 2, 1, dtype=np.int32), (1, 4, 4)), {}),
    ("maxpool2d_backward", (z(1, 2, 2, 1), z(1, 2, 2, 1, dtype=np.int32), (2, 4, 4, 1)), {}),
    ("maxpool2d_backward", (z(1, 2, 2, 1), np.full((1, 2, 2, 1), 16, np.int32),
                            (1, 4, 4, 1)), {}),
    ("binary_crossentropy", (z(3), z(4, 1)), {}),
    ("binary_crossentropy", (z(4), z(4, 2)), {}),
    ("binary_crossentropy", (np.array(["a"] * 4), z(4)), {}),
    ("softmax_crossentropy", (np.array([0, 3]), z(2, 3)), {}),
    ("softmax_crossentropy", (np.array([0.5, 1.0]), z(2, 3)), {}),
    ("softmax_crossentropy", (np.array([0, 1, 2]), z(2, 3)), {}),
    ("softmax_crossentropy", (np.array([0, 1]), z(2, 3, dtype=np.float64)), {}),
    ("sgd_update", (z(3), z(3), None), dict(lr=0.1, momentum=0.9)),
    ("sgd_update", (z(3), z(4), None), dict(lr=0.1)),
    ("sgd_update", (z(3), z(3), None), dict(lr=-1.0)),
    ("sgd_update", (z(3), z(3), z(3, dtype=np.float64)), dict(lr=0.1, momentum=0.9)),
    ("rmsprop_update", (z(3), z(3), z(2)), dict(lr=0.1)),
    ("rmsprop_update", (z(3), z(3), z(3)), dict(lr="fast")),
    ("adam_update", (z(3), z(3), z(3), z(3)), dict(t=0, lr=0.1)),
    ("adam_update", (z(3), z(3), z(3), z(2)), dict(t=1, lr=0.1)),
]


def _error(fn, args, kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        return type(exc), str(exc)
    return None, "no error"


def _on_device(value):
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        return DeviceStandIn(value)
    if isinstance(value, tuple):
        return tuple(_on_device(v) for v in value)
    return value


@pytest.mark.parametrize("where", ["host arrays", "device arrays"])
@pytest.mark.parametrize("op, args, kwargs", CASES,
                         ids=[f"{k}-{c[0]}" for k, c in enumerate(CASES)])
def test_cuda_raises_like_the_reference(op, args, kwargs, where):
    want = _error(getattr(R, op), args, kwargs)
    assert want[0] is not None, f"the reference accepts case {op}{args}: not a bad input"
    if where == "device arrays":
        if op in ("softmax_crossentropy", "maxpool2d_backward") and "out of range" in want[1] \
                or "outside [0," in want[1]:
            pytest.skip("value checks of device labels/argmax happen on the device")
        args = tuple(_on_device(a) for a in args)
        kwargs = {k: _on_device(v) for k, v in kwargs.items()}
    got = _error(getattr(C, op), args, kwargs)
    assert got == want


def test_a_non_contiguous_device_array_is_refused():
    class Strided(DeviceStandIn):
        def is_c_contiguous(self):
            return False
    with pytest.raises(ValueError, match="relu_forward: x must be a C-contiguous device array"):
        C.relu_forward(Strided(z(4, 4)))


def test_out_of_the_wrong_kind_is_refused():
    with pytest.raises(TypeError, match=r"sigmoid_forward: out must be a numpy.ndarray or a "
                                        r"device array, got list"):
        C.sigmoid_forward(DeviceStandIn(z(3)), out=[0.0, 0.0, 0.0])
    with pytest.raises(TypeError, match=r"dropout_forward: out must be a tuple of 2"):
        C.dropout_forward(DeviceStandIn(z(3)), 0.5, RNG(), out=DeviceStandIn(z(3)))

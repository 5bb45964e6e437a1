"""Bad input to the cuda ops raises the reference's exception and message.

No GPU and no simulator needed: the checks run before anything touches the
device. Each case of the op table's bad inputs (fastconv.kernels.opinfo.bad_samples)
runs on the reference and on the cuda package with stand-ins for device arrays
(objects with the device array interface the wrappers look for: shape, dtype,
copy_to_host, is_c_contiguous), and the two errors must be the same. With host
arrays the same table runs in tests/test_opinfo.py.
"""
import numpy as np
import pytest

from fastconv import kernels
from fastconv.kernels import reference as R
from fastconv.kernels.opinfo import bad_samples

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
# the one table of bad inputs every backend runs (tests/test_opinfo.py)
CASES = [(c.op, c.args, c.kwargs) for c in bad_samples()]


def _error(fn, args, kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        return type(exc), str(exc)
    return None, "no error"


def _on_device(value):
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        return DeviceStandIn(value)
    if isinstance(value, (tuple, list)):        # merge ops take lists of arrays
        return type(value)(_on_device(v) for v in value)
    return value


@pytest.mark.parametrize("op, args, kwargs", CASES,
                         ids=[f"{k}-{c[0]}" for k, c in enumerate(CASES)])
def test_cuda_raises_like_the_reference_with_device_arrays(op, args, kwargs):
    if not hasattr(C, op):
        assert op in kernels.OPTIONAL, f"cuda lacks the contract op {op}"
        pytest.skip(f"cuda does not export the optional op {op} yet")
    want = _error(getattr(R, op), args, kwargs)
    assert want[0] is not None, f"the reference accepts case {op}{args}: not a bad input"
    if op in ("softmax_crossentropy", "maxpool2d_backward") and "out of range" in want[1] \
            or "outside [0," in want[1]:
        pytest.skip("value checks of device labels/argmax happen on the device")
    if "moving_variance + epsilon must be > 0" in want[1]:
        pytest.skip("a device moving_variance is not read back to check its values (a host "
                    "one is: test_a_host_moving_variance_is_checked_like_the_reference)")
    if "sample_weight must be finite and >= 0" in want[1] and "sample_weight" in kwargs:
        pytest.skip("the values of device sample weights are not read (the model layer "
                    "checks them on the host)")
    if want[1].endswith("got ndarray"):
        pytest.skip("the message names the type of the array given, here the stand-in's")
    args = tuple(_on_device(a) for a in args)
    kwargs = {k: _on_device(v) for k, v in kwargs.items()}
    got = _error(getattr(C, op), args, kwargs)
    assert got == want


def test_a_host_moving_variance_is_checked_like_the_reference():
    args = (z(2, 4), z(4), z(4), z(4), np.full(4, -1.0, F32))
    want = _error(R.batchnorm_infer_forward, args, {})
    assert want[0] is ValueError and "moving_variance + epsilon must be > 0" in want[1]
    device = tuple(DeviceStandIn(a) for a in args[:4]) + (args[4],)
    assert _error(C.batchnorm_infer_forward, device, {}) == want


def test_a_guard_that_is_not_the_step_accumulator_is_refused():
    v = DeviceStandIn(z(3))
    with pytest.raises(TypeError, match=r"batchnorm_moving_update: guard must be the step "
                                        r"accumulator, a float32 device array"):
        C.batchnorm_moving_update(v, v, v, v, 0.9, guard=z(8))


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


def test_cuda_exports_every_op_of_the_contract():
    """The merge, global pooling, rescaling, batch normalization and depthwise ops are on
    every backend, cuda included: they are contract ops now, and no op is optional."""
    assert kernels.OPTIONAL == ()
    assert set(kernels.MERGE + kernels.GLOBALPOOL + kernels.RESCALE + kernels.BATCHNORM
               + kernels.DEPTHWISE) <= set(kernels.CONTRACT)
    missing = [op for op in kernels.CONTRACT if not callable(getattr(C, op, None))]
    assert missing == []

"""Bad input raises errors that name the op, the argument, expected and actual."""
import numpy as np
import pytest

from fastconv.kernels import reference as R

F32 = np.float32


def z(*shape, dtype=F32):
    return np.zeros(shape, dtype)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: R.conv2d_forward(z(5, 5, 3), z(3, 3, 3, 2), z(2)), ValueError,
     r"conv2d_forward: x must have rank 4, got rank 3 \(shape \(5, 5, 3\)\)"),
    (lambda: R.conv2d_forward(z(1, 5, 5, 3), z(3, 3, 4, 2), z(2)), ValueError,
     r"conv2d_forward: w expects C_in=4 input channels but x has 3"),
    (lambda: R.conv2d_forward(z(1, 2, 5, 3), z(3, 3, 3, 2), z(2)), ValueError,
     r"conv2d_forward: kernel height 3 is larger than the input height 2"),
    (lambda: R.conv2d_forward(z(1, 5, 5, 3, dtype=np.float64), z(3, 3, 3, 2), z(2)), TypeError,
     r"conv2d_forward: x must be float32, got float64"),
    (lambda: R.conv2d_forward(z(1, 5, 5, 3), z(3, 3, 3, 2), z(3)), ValueError,
     r"conv2d_forward: b must have shape \(2,\), got \(3,\)"),
    (lambda: R.conv2d_forward(z(1, 5, 5, 3), z(3, 3, 3, 2), z(2), padding="full"), ValueError,
     r"padding must be 'valid' or 'same', got 'full'"),
    (lambda: R.conv2d_forward(z(1, 5, 5, 3), z(3, 3, 3, 2), z(2), stride=0), ValueError,
     r"stride must be >= 1, got 0"),
    (lambda: R.conv2d_forward([[1.0]], z(3, 3, 3, 2), z(2)), TypeError,
     r"x must be a numpy.ndarray, got list"),
    (lambda: R.conv2d_backward(z(1, 5, 5, 3), z(3, 3, 3, 2), z(1, 3, 3, 4)), ValueError,
     r"conv2d_backward: dy must have shape \(1, 3, 3, 2\), got \(1, 3, 3, 4\)"),
    (lambda: R.maxpool2d_forward(z(1, 2, 2, 1), 3), ValueError,
     r"maxpool2d_forward: pool height 3 is larger than the input height 2"),
    (lambda: R.maxpool2d_forward(z(1, 4, 4, 1, dtype=np.int32)), TypeError,
     r"maxpool2d_forward: x must be float32, got int32"),
    (lambda: R.maxpool2d_backward(z(1, 2, 2, 1), z(1, 2, 2, 1, dtype=np.int64), (1, 4, 4, 1)),
     TypeError, r"maxpool2d_backward: argmax must be an int32 ndarray, got int64"),
    (lambda: R.dense_forward(z(2, 5), z(6, 3), z(3)), ValueError,
     r"dense_forward: w expects 6 input features but x has 5"),
    (lambda: R.dense_forward(z(2, 5, 1), z(5, 3), z(3)), ValueError,
     r"dense_forward: x must have rank 2, got rank 3"),
    (lambda: R.relu_backward(z(2, 3), z(3, 2)), ValueError,
     r"relu_backward: y must have the shape of dy \(2, 3\), got \(3, 2\)"),
    (lambda: R.dropout_forward(z(3), 1.0, np.random.default_rng()), ValueError,
     r"dropout_forward: rate must be in \[0, 1\), got 1.0"),
    (lambda: R.binary_crossentropy(z(3), z(4, 1)), ValueError,
     r"binary_crossentropy: y_true must have shape \(4,\) or \(4, 1\)"),
    (lambda: R.softmax_crossentropy(np.array([0, 3]), z(2, 3)), ValueError,
     r"softmax_crossentropy: class index out of range \[0, 3\)"),
])
def test_bad_input_is_named(call, exc, match):
    with pytest.raises(exc, match=match):
        call()

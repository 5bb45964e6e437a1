"""Depthwise convolution (Keras DepthwiseConv2D) by hand and against an independent
formulation: a depthwise conv is a conv2d whose (KH, KW, C, C*M) kernel is zero except
w_full[i, j, c, c*M + m] = w[i, j, c, m] (Keras's channel order: output c*M + m is
multiplier m of input channel c). The op table (tests/test_opinfo.py) checks every
backend against the reference on random inputs, error messages and out= buffers;
tests/test_reference_gradients.py the reference against finite differences."""
from pathlib import Path

import numpy as np
import pytest

from fastconv import kernels
from fastconv.kernels import reference as R

from .backends import available_backends

BACKENDS, _ = available_backends()


def _host(K, value):
    """Results as host arrays (cuda returns device arrays)."""
    return K.to_host(value) if hasattr(K, "to_host") else value


def _full(w):
    """The conv2d kernel (KH, KW, C, C*M) equal to the depthwise kernel w (KH, KW, C, M)."""
    kh, kw, c, m = w.shape
    full = np.zeros((kh, kw, c, c * m), w.dtype)
    for ch in range(c):
        full[:, :, ch, ch * m:(ch + 1) * m] = w[:, :, ch, :]
    return full


@pytest.mark.parametrize("shape, k, m, stride, padding", [
    ((2, 7, 6, 3), (3, 3), 2, 1, "same"),
    ((1, 9, 8, 4), (3, 2), 3, (2, 1), "valid"),
    ((1, 6, 7, 5), (5, 5), 1, 2, "same"),
])
def test_reference_equals_conv2d_with_the_block_diagonal_kernel(shape, k, m, stride, padding):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(k + (shape[3], m)).astype(np.float32)
    b = rng.standard_normal(shape[3] * m).astype(np.float32)
    y = R.depthwise_conv2d_forward(x, w, b, stride, padding)
    y_full = R.conv2d_forward(x, _full(w), b, stride, padding)
    np.testing.assert_allclose(y, y_full, rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = R.depthwise_conv2d_backward(x, w, dy, stride, padding)
    dx_full, dw_full, db_full = R.conv2d_backward(x, _full(w), dy, stride, padding)
    np.testing.assert_allclose(dx, dx_full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, np.stack([dw_full[:, :, c, c * m:(c + 1) * m]
                                             for c in range(shape[3])], axis=2),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db, db_full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_depthwise_channel_order_by_hand(backend):
    """One pixel, a 1x1 kernel: y[c*M + m] = b + x[c] * w[c, m]."""
    K = kernels.get(backend)
    if not hasattr(K, "depthwise_conv2d_forward"):
        pytest.skip(f"{backend} has no depthwise_conv2d_forward yet")
    x = np.array([2.0, 3.0], np.float32).reshape(1, 1, 1, 2)
    w = np.array([[10.0, 100.0], [1000.0, 10000.0]], np.float32).reshape(1, 1, 2, 2)
    b = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    y = _host(K, K.depthwise_conv2d_forward(x, w, b))
    np.testing.assert_array_equal(y.reshape(-1), [21.0, 202.0, 3003.0, 30004.0])
    dx, dw, db = _host(K, K.depthwise_conv2d_backward(x, w, np.ones((1, 1, 1, 4), np.float32)))
    np.testing.assert_array_equal(dx.reshape(-1), [110.0, 11000.0])
    np.testing.assert_array_equal(dw.reshape(2, 2), [[2.0, 2.0], [3.0, 3.0]])
    np.testing.assert_array_equal(db, np.ones(4))


@pytest.mark.parametrize("m, stride, padding", [(1, 1, "same"), (2, 2, "valid")])
def test_cpu_depthwise_is_bitwise_equal_at_1_and_2_threads(m, stride, padding):
    """Forward, dx, dw and db the same bits whatever the thread count (dw, db: fixed
    chunks summed in order), with more rows than chunks, and within the tolerance of
    the reference."""
    import numba
    K = kernels.get("cpu")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 23, 19, 11)).astype(np.float32)   # 3 * 23 rows > 32 chunks
    w = rng.standard_normal((3, 3, 11, m)).astype(np.float32)
    b = rng.standard_normal(11 * m).astype(np.float32)
    y = R.depthwise_conv2d_forward(x, w, b, stride, padding)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    runs = []
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            runs.append((K.depthwise_conv2d_forward(x, w, b, stride, padding),)
                        + K.depthwise_conv2d_backward(x, w, dy, stride, padding))
    finally:
        numba.set_num_threads(before)
    for a, c in zip(*runs):
        assert np.array_equal(a, c)
    want = (y,) + R.depthwise_conv2d_backward(x, w, dy, stride, padding)
    for got, ref in zip(runs[0], want):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


KERAS = Path(__file__).resolve().parent / "keras_vectors" / "depthwise.npz"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(4))
def test_depthwise_matches_keras(backend, case):
    """Keras 3 itself (DepthwiseConv2D with set_weights([w, b]), and JAX's vjp of
    keras.ops.depthwise_conv for the gradients; tests/keras_vectors/make_depthwise.py):
    M = 1, 2, 3, strides 1, 2, (2, 1), 'same' and 'valid'. rtol 1e-4, atol 1e-5."""
    K = kernels.get(backend)
    if not hasattr(K, "depthwise_conv2d_forward"):
        pytest.skip(f"{backend} has no depthwise ops yet")
    d = np.load(KERAS)
    x, w, b, dy = (d[f"{name}{case}"] for name in ("x", "w", "b", "dy"))
    stride, padding = tuple(int(s) for s in d[f"stride{case}"]), str(d[f"padding{case}"])
    y = _host(K, K.depthwise_conv2d_forward(x, w, b, stride, padding))
    np.testing.assert_allclose(y, d[f"y{case}"], rtol=1e-4, atol=1e-5)
    grads = _host(K, K.depthwise_conv2d_backward(x, w, dy, stride, padding))
    for got, name in zip(grads, ("dx", "dw", "db")):
        np.testing.assert_allclose(got, d[f"{name}{case}"], rtol=1e-4, atol=1e-5, err_msg=name)

"""Reference forward ops against small cases computed by hand."""
import numpy as np
import pytest

from fastconv.kernels import reference as R

F32 = np.float32


def img(a):
    """A (H, W) array as one single-channel image (1, H, W, 1) float32."""
    return np.asarray(a, F32)[None, :, :, None]


def test_conv_4x4_known_kernel():
    x = img(np.arange(16).reshape(4, 4))
    w = np.zeros((3, 3, 1, 1), F32)
    w[0, 0, 0, 0], w[2, 2, 0, 0] = 1.0, -1.0   # x[i, j] - x[i+2, j+2] = -10 everywhere
    y = R.conv2d_forward(x, w, np.array([0.5], F32))
    np.testing.assert_array_equal(y[0, :, :, 0], np.full((2, 2), -9.5, F32))


def test_conv_same_padding_puts_extra_at_bottom_right():
    # 4x4 input, 2x2 kernel, stride 1, same: pad_total 1 -> 0 before, 1 after.
    x = img(np.arange(1, 17).reshape(4, 4))
    w = np.ones((2, 2, 1, 1), F32)
    y = R.conv2d_forward(x, w, np.zeros(1, F32), padding="same")[0, :, :, 0]
    assert y.shape == (4, 4)
    assert y[0, 0] == 1 + 2 + 5 + 6
    assert y[3, 3] == 16          # only x[3, 3]: the rest is padding
    assert y[0, 3] == 4 + 8


def test_conv_stride_2_same_shape_and_values():
    x = img(np.arange(25).reshape(5, 5))
    w = np.zeros((3, 3, 1, 1), F32)
    w[1, 1, 0, 0] = 1.0      # centre tap: y = x at the window centres
    y = R.conv2d_forward(x, w, np.zeros(1, F32), stride=2, padding="same")[0, :, :, 0]
    # out = ceil(5/2) = 3, pad_total = (3-1)*2 + 3 - 5 = 2 -> 1 before: centres at 0, 2, 4.
    np.testing.assert_array_equal(y, np.arange(25).reshape(5, 5)[::2, ::2])


def test_conv_non_square_multichannel_matches_direct_sum(rng):
    x = rng.standard_normal((2, 5, 7, 3)).astype(F32)
    w = rng.standard_normal((2, 3, 3, 4)).astype(F32)
    b = rng.standard_normal(4).astype(F32)
    y = R.conv2d_forward(x, w, b, stride=(1, 2))
    assert y.shape == (2, 4, 3, 4)
    n, oh, ow, f = 1, 2, 1, 3
    direct = b[f] + sum(float(x[n, oh + i, 2 * ow + j, c]) * float(w[i, j, c, f])
                        for i in range(2) for j in range(3) for c in range(3))
    assert y[n, oh, ow, f] == pytest.approx(direct, rel=1e-6)


def test_maxpool_tie_goes_to_first_in_row_major_order():
    x = img([[1, 5, 0, 0],
             [5, 2, 0, 0],
             [0, 0, 3, 3],
             [0, 0, 3, 3]])
    y, arg = R.maxpool2d_forward(x, 2)
    np.testing.assert_array_equal(y[0, :, :, 0], [[5, 0], [0, 3]])
    np.testing.assert_array_equal(arg[0, :, :, 0], [[1, 2], [8, 10]])  # h * W + w
    dx = R.maxpool2d_backward(np.ones_like(y), arg, x.shape)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0, 1, 1, 0], [0, 0, 0, 0],
                                                    [1, 0, 1, 0], [0, 0, 0, 0]])


def test_maxpool_floor_drops_remainder_and_pool3_seed_shape():
    x = np.zeros((1, 148, 148, 2), F32)
    y, _ = R.maxpool2d_forward(x, 3)
    assert y.shape == (1, 49, 49, 2)
    y, _ = R.maxpool2d_forward(np.zeros((1, 47, 47, 1), F32), 2)
    assert y.shape == (1, 23, 23, 1)


def test_maxpool_same_padding_never_wins():
    x = img([[-5, -6, -7]])
    y, arg = R.maxpool2d_forward(x, 2, padding="same")
    # out = (1, 2); windows rows {0 (,pad)}, cols {0,1} and {2,(pad)}.
    np.testing.assert_array_equal(y[0, :, :, 0], [[-5, -7]])
    np.testing.assert_array_equal(arg[0, :, :, 0], [[0, 2]])


def test_maxpool_overlapping_windows_add_gradients():
    x = img([[0, 0, 0], [0, 9, 0], [0, 0, 0]])
    y, arg = R.maxpool2d_forward(x, 2, stride=1)
    assert (arg == 4).all()
    dx = R.maxpool2d_backward(np.ones_like(y), arg, x.shape)
    assert dx[0, 1, 1, 0] == 4 and dx.sum() == 4


def test_dense_and_activations_small():
    x = np.array([[1.0, 2.0]], F32)
    w = np.array([[1.0, -1.0], [0.5, 2.0]], F32)
    y = R.dense_forward(x, w, np.array([0.0, 1.0], F32))
    np.testing.assert_array_equal(y, [[2.0, 4.0]])
    np.testing.assert_array_equal(R.relu_forward(np.array([-1, 0, 2], F32)), [0, 0, 2])
    np.testing.assert_array_equal(
        R.relu_backward(np.array([5, 5, 5], F32), np.array([0, 0, 2], F32)), [0, 0, 5])
    s = R.sigmoid_forward(np.array([0.0, -1000.0, 1000.0], F32))
    np.testing.assert_array_equal(s, [0.5, 0.0, 1.0])
    sm = R.softmax_forward(np.array([[0.0, np.log(3.0)]], F32))
    np.testing.assert_allclose(sm, [[0.25, 0.75]], rtol=1e-6)


def test_dropout_is_inverted_and_seeded():
    x = np.ones((1000,), F32)
    y, mask = R.dropout_forward(x, 0.25, np.random.default_rng(0))
    assert set(np.unique(mask)) <= {0.0, F32(1 / 0.75)}
    assert abs((mask == 0).mean() - 0.25) < 0.05
    y2, _ = R.dropout_forward(x, 0.25, np.random.default_rng(0))
    np.testing.assert_array_equal(y, y2)
    y0, m0 = R.dropout_forward(x, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(y0, x)


def test_binary_crossentropy_values_and_stability():
    z = np.array([[0.0], [100.0], [-100.0]], F32)
    y = np.array([1.0, 1.0, 1.0], F32)
    loss, dz = R.binary_crossentropy(y, z)
    assert loss == pytest.approx((np.log(2) + 0.0 + 100.0) / 3, rel=1e-6)
    np.testing.assert_allclose(dz[:, 0], [-0.5 / 3, 0.0, -1 / 3], atol=1e-7)
    assert np.isfinite(dz).all()


def test_softmax_crossentropy_values():
    z = np.array([[0.0, 0.0], [np.log(3.0), 0.0]], F32)
    loss, dz = R.softmax_crossentropy(np.array([0, 1]), z)
    assert loss == pytest.approx((np.log(2) + np.log(4)) / 2, rel=1e-6)
    np.testing.assert_allclose(dz, [[-0.25, 0.25], [0.375, -0.375]], rtol=1e-6)

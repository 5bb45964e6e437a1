"""The affine warp (Numba) against its NumPy reference, and Augmentation's semantics."""
import math

import numpy as np
import pytest

from fastconv.data import Augmentation, affine_warp, affine_warp_reference
from fastconv.data.warp import FILL_MODES, _warp_kernel

# Both compute in float64 and round once to float32; values are 0..255 (times scale),
# so 1e-4 absolute is ~1 float32 ulp at 255 and still catches any wrong tap or weight.
RTOL, ATOL = 1e-5, 1e-4


def _matrix(rng, h, w):
    t, s = rng.uniform(-0.6, 0.6, 2)
    z = rng.uniform(0.6, 1.5, 2)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    shear = np.array([[1, -math.sin(s)], [0, math.cos(s)]])
    a = rot @ shear @ np.diag(z)
    off = rng.uniform(-0.3, 0.3, 2) * (h, w) + np.array([h, w]) / 2
    return np.hstack([a, off[:, None]])


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (13, 17, 1), (16, 9, 4), (2, 31, 3)])
@pytest.mark.parametrize("fill_mode", FILL_MODES)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_warp_matches_reference(shape, fill_mode, dtype):
    rng = np.random.default_rng(hash((shape, fill_mode)) % 2**32)
    src = rng.integers(0, 256, shape).astype(dtype)
    for trial in range(3):
        m = _matrix(rng, *shape[:2])
        out_hw = shape[:2] if trial < 2 else (shape[0] + 3, max(1, shape[1] - 1))
        kw = dict(fill_mode=fill_mode, cval=37.0, scale=1 / 255 if trial else 1.0)
        want = affine_warp_reference(src, m, out_hw, **kw)
        out = np.full(out_hw + (shape[2],), np.nan, np.float32)
        got = affine_warp(src, m, out=out, **kw)
        assert got is out and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * kw["scale"])


def test_far_outside_coordinates():
    src = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    for fill_mode in FILL_MODES:
        for off in (1e9, -1e12, 3.5e15):
            m = np.array([[1.0, 0.0, off], [0.0, 1.0, -off / 3]])
            np.testing.assert_allclose(affine_warp(src, m, fill_mode=fill_mode, cval=9),
                                       affine_warp_reference(src, m, fill_mode=fill_mode, cval=9),
                                       rtol=RTOL, atol=ATOL)


# The reference itself, on warps whose result is known without interpolation code.
def test_reference_identity_shift_flip():
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    f = src.astype(np.float32)
    eye = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_array_equal(affine_warp_reference(src, eye), f)
    np.testing.assert_array_equal(affine_warp(src, eye, scale=0.5), f * np.float32(0.5))
    right2 = np.array([[1.0, 0, 0], [0, 1.0, -2]])           # content moves 2 px right
    out = affine_warp_reference(src, right2, fill_mode="nearest")
    np.testing.assert_array_equal(out[:, 2:], f[:, :-2])
    np.testing.assert_array_equal(out[:, :2], np.repeat(f[:, :1], 2, axis=1))
    out = affine_warp_reference(src, right2, fill_mode="constant", cval=7)
    np.testing.assert_array_equal(out[:, :2], 7)
    np.testing.assert_array_equal(affine_warp_reference(src, right2, fill_mode="wrap"),
                                  np.roll(f, 2, axis=1))
    out = affine_warp_reference(src, right2, fill_mode="reflect")
    np.testing.assert_array_equal(out[:, :2], f[:, 1::-1])   # b a | a b c ...
    flip = np.array([[1.0, 0, 0], [0, -1.0, 7]])
    np.testing.assert_array_equal(affine_warp_reference(src, flip), f[:, ::-1])
    half = np.array([[1.0, 0, 0], [0, 1.0, 0.5]])            # midway between columns
    out = affine_warp_reference(src, half)
    np.testing.assert_allclose(out[:, :-1], (f[:, :-1] + f[:, 1:]) / 2, rtol=1e-6)


def test_warp_bad_input():
    src = np.zeros((4, 4, 3), np.uint8)
    eye = np.eye(3)
    with pytest.raises(ValueError, match=r"src must be an \(H, W, C\)"):
        affine_warp(np.zeros((4, 4), np.uint8), eye)
    with pytest.raises(TypeError, match="src must be uint8 or float32, got float64"):
        affine_warp(np.zeros((4, 4, 3)), eye)
    with pytest.raises(ValueError, match="matrix must be 2x3"):
        affine_warp(src, np.eye(2))
    with pytest.raises(ValueError, match="matrix must be finite"):
        affine_warp(src, np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="fill_mode must be one of"):
        affine_warp(src, eye, fill_mode="mirror")
    with pytest.raises(TypeError, match="out must be a float32"):
        affine_warp(src, eye, out=np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match=r"out must be \(H, W, 3\)"):
        affine_warp(src, eye, out=np.zeros((4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="scale must be a finite number"):
        affine_warp(src, eye, scale=float("inf"))


def test_warp_kernel_runs_without_the_gil():
    assert _warp_kernel.targetoptions.get("nogil") is True


# ---------------------------------------------------------------- Augmentation
def test_identity_and_arguments():
    assert Augmentation().is_identity
    assert not Augmentation(horizontal_flip=True).is_identity
    src = np.random.default_rng(0).integers(0, 256, (5, 6, 3)).astype(np.uint8)
    out = Augmentation().apply(src, np.random.default_rng(0), scale=2.0)
    np.testing.assert_array_equal(out, src.astype(np.float32) * 2)
    assert Augmentation(zoom_range=0.2).zoom_range == (0.8, 1.2)
    assert Augmentation(zoom_range=[0.5, 1.0]).zoom_range == (0.5, 1.0)
    for kw, err, msg in [({"shear_range": -1}, ValueError, "shear_range must be a finite"),
                         ({"zoom_range": 1.0}, ValueError, "0 < lo <= hi"),
                         ({"zoom_range": (1, 2, 3)}, ValueError, "a number or a pair"),
                         ({"rotation_range": "20"}, TypeError, "rotation_range must be a"),
                         ({"fill_mode": "edge"}, ValueError, "fill_mode must be one of")]:
        with pytest.raises(err, match=msg):
            Augmentation(**kw)


def test_random_params_follow_keras_ranges():
    aug = Augmentation(horizontal_flip=True, shear_range=20, zoom_range=0.2,
                       rotation_range=30, width_shift_range=0.1, height_shift_range=4)
    rng = np.random.default_rng(1)
    ps = [aug.random_params(rng, (50, 80, 3)) for _ in range(400)]
    col = {k: np.array([p[k] for p in ps], float) for k in ps[0]}
    assert np.abs(col["theta"]).max() <= 30 and np.abs(col["shear"]).max() <= 20
    assert np.abs(col["ty"]).max() <= 0.1 * 80 and np.abs(col["ty"]).max() > 0.08 * 80
    assert np.abs(col["tx"]).max() <= 4 and np.abs(col["tx"]).max() > 3.5     # pixels
    for z in ("zx", "zy"):
        assert 0.8 <= col[z].min() and col[z].max() <= 1.2
    assert np.mean(col["zx"] == col["zy"]) == 0                # independent per axis
    assert 0.4 < col["flip_horizontal"].mean() < 0.6 and not col["flip_vertical"].any()
    again = Augmentation(**aug.get_config()).random_params(np.random.default_rng(1), (50, 80))
    assert again == ps[0]


def _params(**kw):
    p = {"theta": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0,
         "flip_horizontal": False, "flip_vertical": False}
    p.update(kw)
    return p


def test_matrix_semantics():
    rng = np.random.default_rng(2)
    src = rng.integers(0, 256, (7, 7, 3)).astype(np.uint8)
    f = src.astype(np.float32)

    def warp(**kw):
        return affine_warp(src, Augmentation.matrix(_params(**kw), src.shape))

    np.testing.assert_array_equal(warp(flip_horizontal=True), f[:, ::-1])
    np.testing.assert_array_equal(warp(flip_vertical=True), f[::-1])
    np.testing.assert_allclose(warp(theta=90), np.rot90(f, k=-1), atol=1e-3)
    np.testing.assert_allclose(warp(theta=-90, flip_horizontal=True),
                               np.rot90(f, k=1)[:, ::-1], atol=1e-3)
    np.testing.assert_array_equal(warp(tx=2)[:-2], f[2:])    # Keras: tx moves rows
    np.testing.assert_array_equal(warp(ty=-3)[:, 3:], f[:, :-3])
    zoomed = warp(zx=2.0, zy=2.0)                             # about the centre pixel
    np.testing.assert_array_equal(zoomed[3, 3], f[3, 3])
    np.testing.assert_array_equal(zoomed[2, 4], f[1, 5])
    m = Augmentation.matrix(_params(shear=30), (7, 7))        # degrees, as Keras >= 2.2
    assert m[0, 1] == pytest.approx(-0.5) and m[1, 1] == pytest.approx(math.sqrt(3) / 2)
    assert m[0, 0] == 1 and m[1, 0] == 0
    centre = m @ np.array([3.0, 3.0, 1.0])
    np.testing.assert_allclose(centre[:2], [3.0, 3.0])        # pivot at the centre


def test_apply_is_reproducible_and_random():
    aug = Augmentation(horizontal_flip=True, shear_range=10, zoom_range=0.2)
    src = np.random.default_rng(3).integers(0, 256, (12, 10, 3)).astype(np.uint8)
    a = aug.apply(src, np.random.default_rng(5), scale=1 / 255)
    b = aug.apply(src, np.random.default_rng(5), scale=1 / 255)
    c = aug.apply(src, np.random.default_rng(6), scale=1 / 255)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    params = aug.random_params(np.random.default_rng(5), src.shape)
    want = affine_warp_reference(src, aug.matrix(params, src.shape), scale=1 / 255)
    np.testing.assert_allclose(a, want, rtol=RTOL, atol=ATOL / 255)

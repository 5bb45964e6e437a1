"""fastconv/_vector_width.py: the 512-bit switch and the conv tile it selects, and
the SLP vectorizer switch.

On an AVX-512 machine the suite runs the 512-bit build (6 x 32 conv tile) with SLP
on; the 256-bit build (3 x 32 tile, what every other CPU gets) and the build without
SLP (FASTCONV_SLP_VECTORIZE=0) would go untested. These run them in child processes
with their own Numba cache, against the NumPy reference, on row widths that use the
full tile, the slid-back ragged end, and rows narrower than a tile.
"""
import json
import os
import subprocess
import sys

import fastconv
from fastconv.kernels.cpu import conv2d

CHILD = r"""
import json, sys
import numba, numpy as np
import fastconv
from fastconv.kernels import reference as R
from fastconv.kernels.cpu import conv2d as C, fused as Fu
rng = np.random.default_rng(0)
worst = 0.0
# (x shape, kernel, filters, stride, padding, pool): OW 11 (3 full tiles + slide),
# 9 (tiles + slide), 5 (one 3-wide tile + 2 pixels), 2 (narrower than a tile);
# F 33 covers the partial channel block.
for shape, k, f, stride, padding, pool in [
        ((2, 13, 13, 3), (3, 3), 32, 1, "valid", 2),
        ((2, 11, 11, 16), (3, 3), 33, 1, "valid", 3),
        ((2, 9, 9, 5), (3, 3), 7, 2, "same", 2),
        ((1, 6, 4, 3), (5, 3), 32, 1, "valid", 2)]:
    x = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal(k + (shape[3], f)) * 0.3).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    want = R.conv2d_forward(x, w, b, stride, padding).astype(np.float64)
    got = C.conv2d_forward(x, w, b, stride, padding)
    worst = max(worst, float(np.max(np.abs(got - want) / (1e-5 + 1e-4 * np.abs(want)))))
    yp, _ = Fu.conv2d_relu_maxpool_forward(x, w, b, stride, padding, pool=pool)
    yr, _ = R.maxpool2d_forward(np.maximum(want, 0).astype(np.float32), pool)
    worst = max(worst, float(np.max(np.abs(yp - yr) / (1e-5 + 1e-4 * np.abs(yr)))))
# scalar float moves in the RGB layer's tile loop: with SLP the tile's bias load and
# store are zmm moves and its accumulators never leave the registers
sig = C._conv_row_3x3_short.signatures
scalar = C._conv_row_3x3_short.inspect_asm(sig[0]).count("vmovss") if sig else None
print(json.dumps({"enabled": fastconv._vector_width.ENABLED, "px": C.PX,
                  "features": numba.config.CPU_FEATURES, "worst": worst,
                  "slp": numba.config.SLP_VECTORIZE, "scalar_moves": scalar}))
"""


def _child(tmp_path, **env_vars):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), **env_vars)
    env.pop("NUMBA_CPU_FEATURES", None)
    env.pop("NUMBA_SLP_VECTORIZE", None)
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_256_bit_build_matches_reference(tmp_path):
    got = _child(tmp_path, FASTCONV_PREFER_256_BIT="1")
    # opted out: Numba's features untouched, the 3 x 32 tile
    assert got["enabled"] is False and got["features"] is None and got["px"] == 3
    # |got - want| <= 1e-5 + 1e-4 |want| everywhere (the suite's conv tolerance)
    assert got["worst"] <= 1.0, got


def test_this_process_tile_follows_the_switch():
    import numba
    assert conv2d.PX == (6 if fastconv._vector_width.ENABLED else 3)
    if fastconv._vector_width.ENABLED:
        assert numba.config.CPU_FEATURES.endswith(",-prefer-256-bit")
    # a second call never changes a setting that is already made
    assert fastconv._vector_width.prefer_512_bit_vectors() is False


def test_build_without_slp_matches_reference(tmp_path):
    got = _child(tmp_path, FASTCONV_SLP_VECTORIZE="0")
    assert got["slp"] == 0
    assert got["worst"] <= 1.0, got   # the same tolerance as above
    if got["enabled"]:
        assert got["scalar_moves"] > 0, got   # what the check below guards against


def test_slp_keeps_the_rgb_tile_in_vector_registers(tmp_path):
    got = _child(tmp_path)
    assert got["slp"] == 1 and got["worst"] <= 1.0, got
    if got["enabled"]:
        # without SLP this function had 192 scalar moves per tile (and 288 in all)
        assert got["scalar_moves"] == 0, got


def test_this_process_has_slp_unless_the_user_chose():
    import numba
    chose = "NUMBA_SLP_VECTORIZE" in os.environ or \
        os.environ.get("FASTCONV_SLP_VECTORIZE") == "0"
    if not chose:
        assert numba.config.SLP_VECTORIZE == 1
    # a second call never changes a setting that is already made
    assert fastconv._vector_width.slp_vectorize() is False

"""fastconv/_vector_width.py: the 512-bit switch and the conv tile it selects.

On an AVX-512 machine the suite runs the 512-bit build (6 x 32 conv tile); the
256-bit build (3 x 32 tile, what every other CPU gets) would go untested. This
runs it in a child process with FASTCONV_PREFER_256_BIT=1 and its own Numba
cache, against the NumPy reference, on row widths that use the full tile, the
slid-back ragged end, and rows narrower than a tile.
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
print(json.dumps({"enabled": fastconv._vector_width.ENABLED, "px": C.PX,
                  "features": numba.config.CPU_FEATURES, "worst": worst}))
"""


def test_256_bit_build_matches_reference(tmp_path):
    env = dict(os.environ, FASTCONV_PREFER_256_BIT="1", NUMBA_CACHE_DIR=str(tmp_path))
    env.pop("NUMBA_CPU_FEATURES", None)
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
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

"""The CUDA conv2d, fused and dense kernels under the CUDA simulator, against the reference.

Runs in its own process: NUMBA_ENABLE_CUDASIM=1 must be set before numba.cuda is imported.
The wrappers are called directly (fastconv.kernels.cuda.conv2d/fused/dense), not through
kernels.get("cuda"), which needs the whole contract. Most cases shrink the tile constants
(conv2d.set_tiles: the simulator reads them live) so that tiny inputs still span several
blocks in every grid dimension with ragged edge tiles; one case keeps the real tiles.
"""
import os
import textwrap

import pytest

from . import simulator

SCRIPT = textwrap.dedent("""
    import json, types
    import numpy as np
    from numba import cuda
    from fastconv import testing
    from fastconv.kernels.cuda import conv2d, dense, fused
    from fastconv.kernels import reference as R

    def to_host(v):
        if isinstance(v, (tuple, list)):
            return type(v)(to_host(a) for a in v)
        return v.copy_to_host() if hasattr(v, "copy_to_host") else v

    K = types.SimpleNamespace(
        NAME="cuda-sim", to_device=lambda a: cuda.to_device(np.ascontiguousarray(a)),
        to_host=to_host,
        conv2d_forward=conv2d.conv2d_forward, conv2d_backward=conv2d.conv2d_backward,
        dense_forward=dense.dense_forward, dense_backward=dense.dense_backward,
        **{n: getattr(fused, n) for n in ("conv2d_relu_forward", "conv2d_relu_backward",
            "conv2d_relu_maxpool_forward", "conv2d_relu_maxpool_backward")})

    rng = np.random.default_rng(0)
    f32 = lambda a: np.ascontiguousarray(a, np.float32)
    results, splits = [], []

    def note_splits(x, w, y, q):
        # how launch_forward / launch_dx split these grids (y: the forward's output, q pool
        # window offsets); the test wants every path taken
        (n, h, wd, c), (kh, kw, _, f) = x.shape, w.shape
        g, s, _, _ = conv2d.fwd_split(n * y.shape[1] * y.shape[2], f, kh * kw * c, q)
        splits.append({"fwd": [g, s], "dx": conv2d.dx_split(n * h * wd, c, kh * kw * f)[0]})

    def check(op, *args, **kw):
        r = testing.compare_to_reference(K, op, *args, **kw)
        results.append({"op": op, "args": [str(getattr(a, "shape", a)) for a in args],
                         "kw": str(kw), "passed": r.passed, "message": r.message[:600]})

    def conv_case(shape, k, f, stride, padding, pool=None, relu=True, skip_dx=True):
        x = f32(rng.standard_normal(shape))
        w = f32(rng.standard_normal(k + (shape[3], f)) * 0.3)
        b = f32(rng.standard_normal(f) * 0.1)
        kw = dict(stride=stride, padding=padding)
        y = R.conv2d_forward(x, w, b, **kw)
        if pool is None:
            note_splits(x, w, y, 1)
            check("conv2d_forward", x, w, b, **kw)
            dy = f32(rng.standard_normal(y.shape))
            for need_dx in (True, False) if skip_dx else (True,):
                check("conv2d_backward", x, w, dy, need_dx=need_dx, **kw)
            if relu:
                check("conv2d_relu_forward", x, w, b, **kw)
                check("conv2d_relu_backward", x, w, dy, R.relu_forward(y), **kw)
        else:
            pkw = dict(pool=pool[0], pool_stride=pool[1], pool_padding=pool[2])
            check("conv2d_relu_maxpool_forward", x, w, b, **kw, **pkw)
            yp, arg = R.conv2d_relu_maxpool_forward(x, w, b, **kw, **pkw)
            pp = pool[0] if isinstance(pool[0], tuple) else (pool[0], pool[0])
            note_splits(x, w, yp, pp[0] * pp[1])
            dy = f32(rng.standard_normal(yp.shape))
            check("conv2d_relu_maxpool_backward", x, w, dy, yp, arg, **kw)

    def dense_case(n, d_in, d_out):
        x = f32(rng.standard_normal((n, d_in)))
        w = f32(rng.standard_normal((d_in, d_out)) * 0.1)
        b = f32(rng.standard_normal(d_out))
        dy = f32(rng.standard_normal((n, d_out)))
        check("dense_forward", x, w, b)
        for need_dx in (True, False):
            check("dense_backward", x, w, dy, need_dx=need_dx)

    # The real tiles (forward and dx: 64 x 32 blocks of 64 threads, 8 x 4 outputs each):
    # 90 pixels and 33 channels make a 2 x 2 forward grid with ragged edges in both
    # dimensions (dx: 168 pixels, 3 blocks); the pooled case has 2 channel blocks and a
    # ragged K (27 = 3 steps of 8, the last one partly past K).
    conv_case((3, 7, 8, 2), (3, 3), 33, 1, "valid", relu=False, skip_dx=False)
    conv_case((2, 9, 9, 3), (3, 3), 33, 1, "valid", pool=(2, None, "valid"))

    # Another forward and dx tile (16 x 8 blocks of 8 threads, 4 x 4 outputs each, 2 columns
    # per step: one trip of the FMA loop per step): several blocks per grid dimension.
    conv2d.set_tiles(fw_bm=16, fw_bn=8, fw_bk=2, fw_tm=4, fw_tn=4, bm=16, bn=8, bk=2, tm=4, tn=4)
    conv_case((2, 6, 7, 3), (3, 3), 11, 1, "same", relu=False)
    conv_case((2, 7, 6, 9), (3, 3), 5, 2, "same", relu=False)   # dx: 2 channel blocks, stride 2
    conv_case((2, 8, 9, 3), (3, 3), 9, 1, "valid", pool=(2, None, "valid"))

    # Tiny tiles: forward and dx 8 pixels x 4 channels in 8-thread blocks of 2 x 2 outputs;
    # 8 rows x 4 channels of dw (2 pixel groups of 2x2 thread tiles), stage 1 aiming at 8
    # blocks.
    conv2d.set_tiles(fw_bm=8, fw_bn=4, fw_bk=4, fw_tm=2, fw_tn=2,
                     bm=8, bn=4, bk=4, tm=2, tn=2, dw_bm=4, dw_bk=8, dw_bn=4, dw_tk=2, dw_tn=2,
                     dw_ws=2, dw_target_blocks=8, dw_min_steps=1, dw_sum_rows=4,
                     dw_sum_cols=8)
    conv_case((2, 7, 6, 3), (3, 3), 5, 1, "valid")
    conv_case((2, 6, 5, 5), (3, 3), 6, 2, "same")   # dx: 2 channel blocks; dw_sum: 2 blocks
    conv_case((1, 5, 6, 2), (2, 3), 3, (2, 1), "same", relu=False)
    conv_case((1, 4, 5, 3), (5, 5), 5, 1, "same", relu=False, skip_dx=False)  # kernel > input
    conv_case((2, 8, 7, 3), (3, 3), 5, 1, "valid", pool=(2, None, "valid"))
    conv_case((1, 9, 9, 2), (3, 3), 6, 1, "valid", pool=(3, 2, "valid"))   # overlapping
    conv_case((2, 6, 7, 3), (3, 3), 5, 1, "same", pool=(2, None, "same"))
    conv_case((1, 7, 8, 2), (2, 2), 3, 2, "valid", pool=((2, 3), (1, 2), "same"))
    dense_case(3, 7, 5)
    dense_case(1, 13, 9)
    dense_case(10, 3, 1)
    print("RESULT:" + json.dumps({"results": results, "splits": splits}))
""")


def _run(script, timeout=600):
    return simulator.run(script, timeout=timeout)


def test_conv_fused_dense_match_the_reference_under_the_simulator():
    run = _run(SCRIPT)
    results = run["results"]
    assert len(results) == 44
    failed = [r for r in results if not r["passed"]]
    assert not failed, "\n".join(f"{r['op']} {r['args']} {r['kw']}: {r['message']}"
                                 for r in failed)
    # every path of the split forward and dx ran against the reference: whole grids, the
    # forward split over the pool window (G > 1) and over K (S > 1), dx split-K
    fwd = [tuple(s["fwd"]) for s in run["splits"]]
    dx = [s["dx"] for s in run["splits"]]
    assert (1, 1) in fwd and any(g > 1 for g, _ in fwd) and any(s > 1 for _, s in fwd), fwd
    assert any(g > 1 and s > 1 for g, s in fwd), fwd
    assert 1 in dx and max(dx) > 1, dx



# The weight gradient at every tile configuration conv2d_dw_tile allows: the real tile shapes
# (with the pixel range split finely, so stage 2 runs) and tiny ones that give several
# blocks in every grid dimension, ragged k/f/pixel edges, a row pitch padded to 16 bytes
# (dw_bk=6), a block that is not a warp multiple, one pixel group, no unrolling. Cases
# cover the unclipped loader (no padding: no bounds checks) and the clipped one ('same'
# padding, also with top/left padding 0 and only bottom/right taps outside).
DW_SCRIPT = textwrap.dedent("""
    import json, types
    import numpy as np
    from numba import cuda
    from fastconv import testing
    from fastconv.kernels.cuda import conv2d, dense
    from fastconv.kernels import reference as R

    def to_host(v):
        if isinstance(v, (tuple, list)):
            return type(v)(to_host(a) for a in v)
        return v.copy_to_host() if hasattr(v, "copy_to_host") else v

    K = types.SimpleNamespace(
        NAME="cuda-sim", to_device=lambda a: cuda.to_device(np.ascontiguousarray(a)),
        to_host=to_host, conv2d_backward=conv2d.conv2d_backward,
        dense_backward=dense.dense_backward)
    rng = np.random.default_rng(2)
    f32 = lambda a: np.ascontiguousarray(a, np.float32)
    results, runs = [], []

    def inputs(shape, k, f, stride, padding):
        x = f32(rng.standard_normal(shape))
        w = f32(rng.standard_normal(k + (shape[3], f)) * 0.3)
        y = R.conv2d_forward(x, w, np.zeros(f, np.float32), stride=stride, padding=padding)
        return x, w, f32(rng.standard_normal(y.shape)), y.shape

    def conv(config, shape, k, f, stride, padding):
        x, w, dy, (n, oh, ow, _) = inputs(shape, k, f, stride, padding)
        s, chunk = conv2d.dw_split(n * oh * ow, k[0] * k[1] * shape[3], f)
        r = testing.compare_to_reference(K, "conv2d_backward", x, w, dy, stride=stride,
                                         padding=padding, need_dx=False)
        results.append({"config": config, "case": [shape, k, f, str(stride), padding],
                        "chunks": s, "passed": r.passed, "message": r.message[:600]})

    def dense_case(config, n, d_in, d_out):
        x = f32(rng.standard_normal((n, d_in)))
        w = f32(rng.standard_normal((d_in, d_out)))
        dy = f32(rng.standard_normal((n, d_out)))
        r = testing.compare_to_reference(K, "dense_backward", x, w, dy, need_dx=False)
        results.append({"config": config, "case": ["dense", n, d_in, d_out],
                        "chunks": conv2d.dw_split(n, d_in, d_out)[0], "passed": r.passed,
                        "message": r.message[:600]})

    def twice(config, shape, k, f, stride, padding):
        # the same inputs twice: dw and db must be the same bits (fixed-order sums)
        x, w, dy, (n, oh, ow, _) = inputs(shape, k, f, stride, padding)
        got = [[a.copy_to_host().tobytes() for a in conv2d.conv2d_backward(
            cuda.to_device(x), cuda.to_device(w), cuda.to_device(dy), stride=stride,
            padding=padding, need_dx=False)[1:]] for _ in range(2)]
        runs.append({"config": config, "chunks": conv2d.dw_split(
            n * oh * ow, k[0] * k[1] * shape[3], f)[0], "same": got[0] == got[1]})

    SPLIT = dict(dw_target_blocks=64, dw_min_steps=1)
    CONFIGS = {
        "real": dict(SPLIT),
        "tiny": dict(SPLIT, dw_bm=4, dw_bk=8, dw_bn=4, dw_tk=2, dw_tn=2, dw_ws=2,
                     dw_sum_rows=4, dw_sum_cols=8),
        "odd": dict(SPLIT, dw_bm=6, dw_bk=6, dw_bn=2, dw_tk=2, dw_tn=1, dw_ws=2, dw_unroll=3,
                    dw_sum_rows=2, dw_sum_cols=4),
        "flat": dict(SPLIT, dw_bm=4, dw_bk=4, dw_bn=4, dw_tk=1, dw_tn=1, dw_ws=1,
                     dw_unroll=1, dw_sum_rows=8, dw_sum_cols=8),
    }
    for name, tiles in CONFIGS.items():
        conv2d.set_tiles(**tiles)
        if name == "real":
            # 2 k tiles (K = 36) x 2 f tiles (F = 33) x 2 chunks of 32 pixels (M = 42)
            conv(name, (1, 9, 8, 4), (3, 3), 33, 1, "valid")
            conv(name, (1, 5, 6, 3), (3, 3), 4, 1, "same")
            twice(name, (1, 9, 8, 4), (3, 3), 33, 1, "valid")
            continue
        conv(name, (2, 7, 6, 3) if name == "tiny" else (1, 7, 6, 3), (3, 3), 5, 1, "valid")
        conv(name, (1, 5, 5, 2), (2, 2), 3, 1, "same")       # pad bottom/right only
        conv(name, (1, 8, 7, 3), (3, 3), 4, (2, 1), "valid")
        dense_case(name, 3, 7, 5)
        dense_case(name, 10, 3, 1)
        if name != "flat":
            conv(name, (1, 6, 5, 5), (3, 3), 6, 2, "same")
        if name == "tiny":                                   # the slow ones, once
            conv(name, (1, 4, 5, 3), (5, 5), 5, 1, "same")   # kernel > input
            twice(name, (2, 7, 6, 3), (3, 3), 5, 1, "valid")
    print("RESULT:" + json.dumps({"results": results, "runs": runs}))
""")


@pytest.fixture(scope="module")
def dw_run():
    return _run(DW_SCRIPT)


def test_dw_matches_the_reference_at_every_tile_configuration(dw_run):
    results = dw_run["results"]
    assert len(results) == 2 + 7 + 6 + 5
    failed = [r for r in results if not r["passed"]]
    assert not failed, "\n".join(f"{r['config']} {r['case']}: {r['message']}" for r in failed)
    # both paths ran: one chunk (stage 1 writes dw and db) and several (stage 2 sums)
    for config in ("real", "tiny", "odd", "flat"):
        chunks = {r["chunks"] for r in results if r["config"] == config}
        assert max(chunks) > 1, (config, chunks)
    assert min(r["chunks"] for r in results) == 1


def test_dw_is_bitwise_deterministic_run_to_run(dw_run):
    runs = dw_run["runs"]
    assert len(runs) == 2
    assert all(r["chunks"] > 1 for r in runs), runs      # the two-stage path
    assert all(r["same"] for r in runs), runs


ERRORS_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    from numba import cuda
    from fastconv.kernels.cuda import conv2d, dense, fused
    from fastconv.kernels import reference as R

    def err(fn, *args, **kw):
        try:
            fn(*args, **kw)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "no error"

    x = np.zeros((2, 5, 5, 3), np.float32)
    w = np.zeros((3, 3, 3, 4), np.float32)
    b = np.zeros(4, np.float32)
    dx_, dw_, db_ = cuda.to_device(x), cuda.to_device(w), cuda.to_device(b)
    dev = lambda a: cuda.to_device(np.ascontiguousarray(a))
    out = {
        # the reference's own messages, from the shared checks
        "channels": [err(conv2d.conv2d_forward, dx_, dev(w[:, :, :2]), db_),
                     err(R.conv2d_forward, x, w[:, :, :2], b)],
        "bias": [err(conv2d.conv2d_forward, dx_, dw_, dev(b[:3])),
                 err(R.conv2d_forward, x, w, b[:3])],
        # a fused op raises what the reference's composition raises (the unfused op's name)
        "fused_bias": [err(fused.conv2d_relu_maxpool_forward, dx_, dw_, dev(b[:3])),
                       err(R.conv2d_relu_maxpool_forward, x, w, b[:3])],
        "padding": [err(conv2d.conv2d_forward, dx_, dw_, db_, padding="full"),
                    err(R.conv2d_forward, x, w, b, padding="full")],
        "dy": [err(conv2d.conv2d_backward, dx_, dw_, cuda.to_device(np.zeros((2, 3, 3, 5),
                                                                             np.float32))),
               err(R.conv2d_backward, x, w, np.zeros((2, 3, 3, 5), np.float32))],
        "dense": [err(dense.dense_forward, dev(x[:, 0, 0]), dev(w[0, 0]),
                      cuda.to_device(np.zeros(5, np.float32))),
                  err(R.dense_forward, x[:, 0, 0], w[0, 0], np.zeros(5, np.float32))],
        # what only a device array can get wrong
        "float64": err(conv2d.conv2d_forward, cuda.to_device(x.astype(np.float64)), dw_, db_),
        "strided": err(dense.dense_forward, dev(x[:, 0, 0]).T, dev(w[0, 0]), db_),
        "out_shape": err(conv2d.conv2d_forward, dx_, dw_, db_,
                         out=cuda.device_array((2, 3, 3, 3), np.float32)),
        "out_tuple": err(conv2d.conv2d_backward, dx_, dw_, cuda.device_array((2, 3, 3, 4),
                                                                           np.float32), out=dw_),
        "argmax_dtype": err(fused.conv2d_relu_maxpool_backward, dx_, dw_,
                            cuda.device_array((2, 1, 1, 4), np.float32),
                            cuda.device_array((2, 1, 1, 4), np.float32),
                            cuda.device_array((2, 1, 1, 4), np.float32)),
    }
    # host arrays are copied in, a host out= buffer is filled (the cuda package's policy)
    rng = np.random.default_rng(1)
    xh = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    wh = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    host_out = np.zeros((2, 3, 3, 4), np.float32)
    got = conv2d.conv2d_forward(xh, cuda.to_device(wh), b, out=host_out)
    out["host"] = [got is host_out,
                   float(np.abs(host_out - R.conv2d_forward(xh, wh, b)).max())]
    print("RESULT:" + json.dumps(out))
""")


def test_bad_arguments_raise_the_reference_messages_and_host_arrays_are_copied_in():
    out = _run(ERRORS_SCRIPT, timeout=300)
    for key in ("channels", "bias", "padding", "dy", "dense"):
        cuda_msg, ref_msg = out[key]
        assert cuda_msg == ref_msg, key
        assert cuda_msg != "no error", key
    assert out["fused_bias"][0] == out["fused_bias"][1] == (
        "ValueError: conv2d_forward: b must have shape (4,), got (3,)")
    assert out["host"][0] is True and out["host"][1] < 1e-5
    assert out["float64"] == "TypeError: conv2d_forward: x must be float32, got float64"
    assert out["strided"] == ("ValueError: dense_forward: x must be a C-contiguous device "
                              "array")
    assert out["out_shape"] == ("ValueError: conv2d_forward: out must be float32 of shape "
                                "(2, 3, 3, 4), got float32 of shape (2, 3, 3, 3)")
    assert out["out_tuple"].startswith("TypeError: conv2d_backward: out must be a tuple of 3")
    assert out["argmax_dtype"] == ("TypeError: maxpool2d_backward: argmax must be an int32 "
                                   "ndarray, got float32")


def test_conv_kernels_keep_their_occupancy_on_sm90():
    """The register-blocked forward and dx kernels: no spills, <= 128 registers and 25%
    theoretical occupancy on sm_90 at the block sizes the wrappers launch (ptxas -v via the
    cuda report, no GPU needed); their 32 independent FMAs per column hide latency that
    warps would otherwise. conv2d_dw_tile is held to its launch bounds instead:
    tests/test_cuda_ptx.py::test_dw_tile_fits_its_launch_bounds."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("NUMBA_ENABLE_CUDASIM=1 is set: the simulator has no compiler")
    report = pytest.importorskip("fastconv.testing.ptx_report",
                                 reason="the cuda report module (cuda-ops) is not merged yet")
    problem = report.toolchain_problem()
    if problem:
        message = f"CUDA toolchain missing, occupancy NOT checked: {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from fastconv.kernels.cuda import conv2d
    rows = {spec.name: report.measure(spec, "sm_90") for spec in conv2d.KERNELS
            if spec.name in ("conv2d_fwd_tile", "conv2d_dx_tile")}
    assert len(rows) == 2
    for name, row in rows.items():
        assert row["spill_stores"] == row["spill_loads"] == 0, (name, row)
        assert row["occupancy"] >= 0.25, (name, row)
        assert row["registers"] <= 128, (name, row)

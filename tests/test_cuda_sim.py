"""The cuda backend against the reference under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1).

The simulator must be enabled before numba.cuda is imported, so the checks run
once in a subprocess (this file run as a script) and the tests here read its
JSON. In the subprocess:
  * launch sizes are patched down (_launch: 32 threads per block, at most 3
    blocks), so tiny inputs still span several blocks, leave ragged last
    blocks, and make every grid-stride loop go round more than once;
  * every kernel of every module's KERNELS is wrapped by a recorder that types
    each launch's arguments the way numba would and checks they are a declared
    KernelSpec signature: the signatures tests/test_cuda_ptx.py compiles are
    the ones the wrappers really launch;
  * every op sample of fastconv.kernels.opinfo ("quick") that the cuda package
    exports, plus the larger-than-a-block cases below, runs against the
    reference (rtol 1e-4, atol 1e-5 in float32) through kernels.get("cuda");
  * a few device-array behaviours (out= identity, the loss as a float, labels
    on the device, bad device input) are checked directly.
What the simulator cannot show (typing, launch limits, races, coalescing) is
the job of tests/test_cuda_ptx.py and review; see docs/cuda.md.
"""
import json
import os
import time

import numpy as np
import pytest

PATCHED_LAUNCH = dict(ELEMENTWISE=32, ROW=32, POOL=32, REDUCE=32, GPOOL=32, GPOOL_C=8,
                      BN=32, BN_C=8, BN_CHUNKS=3, BN_ROWS=2, MAX_BLOCKS=3)
RTOL, ATOL = 1e-4, 1e-5


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def extra_samples(seed=7):
    """Cases beyond the op table: rows wider than a block, more rows than blocks, sizes
    that leave every block ragged, labels of both shapes. Deterministic in `seed`."""
    from fastconv.kernels import reference as R
    from fastconv.kernels.opinfo import Sample

    rng = np.random.default_rng(seed)
    x = _f32(rng.standard_normal(1001))
    dy = _f32(rng.standard_normal(1001))
    yield Sample("relu_forward", (x,), {}, "n=1001")
    yield Sample("relu_backward", (dy, R.relu_forward(x)), {}, "n=1001")
    yield Sample("sigmoid_forward", (x * 9,), {}, "n=1001")
    yield Sample("sigmoid_backward", (dy, R.sigmoid_forward(x)), {}, "n=1001")
    yield Sample("rescale_forward", (x.reshape(7, 11, 13), 1.0 / 255), dict(offset=-0.5),
                 "(7, 11, 13)")
    yield Sample("rescale_backward", (dy, -3.0), {}, "n=1001")
    for n, k in ((3, 77), (8, 3)):
        z = _f32(rng.standard_normal((n, k)) * 3)
        yield Sample("softmax_forward", (z,), {}, f"{n}x{k}")
        yield Sample("softmax_backward", (_f32(rng.standard_normal((n, k))),
                                          R.softmax_forward(z)), {}, f"{n}x{k}")
    x2 = _f32(rng.standard_normal((5, 41)))
    yield Sample("dropout_forward", (x2, 0.3, np.random.default_rng(3)), {}, "5x41 rate 0.3")
    x4 = _f32(rng.standard_normal((2, 11, 13, 37)))
    for pool, stride, padding in ((3, 2, "same"), ((2, 3), None, "valid")):
        label = f"x(2, 11, 13, 37) pool {pool} stride {stride} {padding}"
        yield Sample("maxpool2d_forward", (x4,), dict(pool=pool, stride=stride, padding=padding),
                     label)
        y, arg = R.maxpool2d_forward(x4, pool, stride, padding)
        yield Sample("maxpool2d_backward", (_f32(rng.standard_normal(y.shape)), arg, x4.shape),
                     {}, label)
    z = _f32(rng.standard_normal(100) * 4)
    yield Sample("binary_crossentropy", (_f32(rng.random(100) > 0.5), z), {}, "N=100 (N,)")
    yield Sample("binary_crossentropy", (_f32(rng.random(70)), z[:70].reshape(70, 1)), {},
                 "N=70 soft labels (N,) vs (N, 1)")
    yield Sample("softmax_crossentropy", (rng.integers(0, 37, 70), _f32(rng.standard_normal(
        (70, 37)) * 3)), {}, "70x37")
    # per-sample weights over several grid-stride rounds (70 and 100 rows on 32 threads)
    wrng = np.random.default_rng(seed + 16)
    yield Sample("binary_crossentropy", (_f32(wrng.random(100) > 0.5), z),
                 dict(sample_weight=_f32(wrng.random(100) * 3)), "N=100 sample_weight")
    yield Sample("softmax_crossentropy", (wrng.integers(0, 37, 70), _f32(wrng.standard_normal(
        (70, 37)) * 3)), dict(sample_weight=_f32(wrng.random((70, 1)))),
        "70x37 sample_weight (N, 1)")
    yield Sample("binary_crossentropy", (_f32(wrng.random(100) > 0.5), z),
                 dict(label_smoothing=0.2), "N=100 label_smoothing 0.2")
    yield Sample("softmax_crossentropy", (wrng.integers(0, 37, 70), _f32(wrng.standard_normal(
        (70, 37)) * 3)), dict(label_smoothing=0.1, sample_weight=_f32(wrng.random(70))),
        "70x37 label_smoothing 0.1 sample_weight")
    # dense products long enough to be split (fastconv/kernels/cuda/dense.py: K >= 128 at
    # the real tiles): the forward over IN, dx over OUT, dw/db over the batch
    for n, d_in, d_out in ((2, 300, 5), (2, 5, 130), (130, 3, 2)):
        xd, wd = _f32(rng.standard_normal((n, d_in))), _f32(rng.standard_normal((d_in, d_out)))
        label = f"{n}x{d_in} -> {d_out} split"
        yield Sample("dense_forward", (xd, wd, _f32(rng.standard_normal(d_out))), {}, label)
        yield Sample("dense_backward", (xd, wd, _f32(rng.standard_normal((n, d_out)))),
                     dict(need_dx=True), label)
    # a conv weight gradient over enough pixels (272 = 9 steps of 32 at the real dw tiles)
    # that launch_dw splits it in two chunks, so conv2d_dw_sum runs too
    xc, wc = _f32(rng.standard_normal((1, 17, 16, 2))), _f32(rng.standard_normal((1, 1, 2, 3)))
    yield Sample("conv2d_backward", (xc, wc, _f32(rng.standard_normal((1, 17, 16, 3)))),
                 dict(stride=1, padding="valid", need_dx=False), "x(1, 17, 16, 2) 1x1 dw split")
    # merge ops past one grid's reach (3 blocks of 32 at the patched launch sizes), so
    # every grid-stride loop goes round; three inputs, odd channel counts, batch 1
    xs = [_f32(rng.standard_normal((2, 3, 5, c))) for c in (33, 1, 7)]
    label = "3 x (2, 3, 5, {33, 1, 7})"
    yield Sample("concat_forward", (xs,), {}, label)
    yield Sample("concat_backward", (_f32(rng.standard_normal((2, 3, 5, 41))), (33, 1, 7)), {},
                 label)
    same = [_f32(rng.standard_normal((1, 7, 11, 13))) for _ in range(3)]
    yield Sample("add_forward", (same,), {}, "3 x (1, 7, 11, 13)")
    yield Sample("accumulate_grad", (same[0], same[1]), {}, "(1, 7, 11, 13)")
    # global pooling at the patched block shapes (tc = min(8, pow2 >= C), tp = 32 / tc):
    # C = 33 spans 5 channel tiles (the last ragged), C = 1 has 32 pixel lanes, C = 3 and
    # C = 8 fill a tile exactly or not; more pixels than lanes; 5 images on a grid of 3
    # rows (the image loop goes round); ties and a constant channel (first maximum wins)
    for shape in ((1, 9, 16, 33), (5, 3, 7, 1), (2, 1, 1, 3), (4, 6, 5, 8)):
        x = _f32(rng.standard_normal(shape))
        x.reshape(-1)[::3] = 0.25
        x[..., -1] = 1.5
        n, h, w, c = shape
        label = f"x{shape}"
        yield Sample("global_avgpool2d_forward", (x,), {}, label)
        yield Sample("global_avgpool2d_backward", (_f32(rng.standard_normal((n, c))), shape),
                     {}, label)
        yield Sample("global_maxpool2d_forward", (x,), {}, label)
        yield Sample("global_maxpool2d_backward", (_f32(rng.standard_normal((n, c))),
                                                   R.global_maxpool2d_forward(x)[1], shape),
                     {}, label)
    # average pooling past the patched grid (3 blocks of 32: every grid-stride loop goes
    # round), 37 channels, 'same' windows overhanging by up to 2 pixels, overlapping
    # windows (stride < pool) for the gather backward, a (2, 3) stride
    for pool, stride, padding in ((3, 2, "same"), ((2, 3), None, "valid"), (4, (2, 3), "same")):
        label = f"x(2, 11, 13, 37) pool {pool} stride {stride} {padding}"
        kw = dict(pool=pool, stride=stride, padding=padding)
        yield Sample("avgpool2d_forward", (x4,), kw, label)
        y = R.avgpool2d_forward(x4, **kw)
        yield Sample("avgpool2d_backward", (_f32(rng.standard_normal(y.shape)), x4.shape), kw,
                     label)
    # batch normalization at the patched block shapes (tc = min(8, pow2 >= C), tp = 32 / tc
    # row lanes, at most 3 row chunks of >= 2 rows per lane): C = 37 spans 5 channel tiles
    # (the last ragged), C = 5 one ragged tile; M = 315 rows over 3 chunks (each lane goes
    # round), M = 144 at batch 1, M = 1 (variance 0), (N, C) with M = 70 (3 chunks, the last
    # short) and M = 3; elementwise passes of more than 3 blocks of 32; a mean far from 0
    for shape in ((5, 7, 9, 5), (1, 9, 16, 37), (1, 37), (70, 37), (3, 5)):
        x = _f32(rng.standard_normal(shape) * 2.0 + 3.0)
        c = shape[-1]
        label = f"x{shape}"
        gamma, beta = _f32(rng.standard_normal(c)), _f32(rng.standard_normal(c))
        yield Sample("batchnorm_train_forward", (x, gamma, beta), dict(epsilon=1e-3), label)
        _, mean, var = R.batchnorm_train_forward(x, gamma, beta, 1e-3)
        dy = _f32(rng.standard_normal(shape))
        for need_dx in (True, False):
            yield Sample("batchnorm_backward", (dy, x, gamma, mean, var),
                         dict(epsilon=1e-2, need_dx=need_dx), f"{label} need_dx={need_dx}")
        moving_mean, moving_var = _f32(rng.standard_normal(c)), _f32(rng.random(c) + 0.1)
        yield Sample("batchnorm_infer_forward", (x, gamma, beta, moving_mean, moving_var),
                     dict(epsilon=1e-3), label)
        yield Sample("batchnorm_moving_update", (moving_mean, moving_var, mean, var),
                     dict(momentum=0.9), label)
        # the fused BatchNormalization -> ReLU (bn_relu_apply, bn_relu_grad_part,
        # bn_relu_grad_x), a channel all clipped
        beta = beta.copy()
        beta[-1] = -50.0
        yield Sample("batchnorm_relu_train_forward", (x, gamma, beta), dict(epsilon=1e-3),
                     label)
        y, mean, var = R.batchnorm_relu_train_forward(x, gamma, beta, 1e-3)
        for need_dx in (True, False):
            yield Sample("batchnorm_relu_backward", (dy, y, x, gamma, mean, var),
                         dict(epsilon=1e-2, need_dx=need_dx), f"{label} need_dx={need_dx}")
    # batchnorm_fold (bn_fold): a kernel of 3 * 3 * 37 * 5 = 1665 floats, more than the
    # patched grid's 3 blocks of 32 threads (the grid-stride loop goes round), F = 5
    kernel = _f32(rng.standard_normal((3, 3, 37, 5)))
    vecs = [_f32(rng.standard_normal(5)) for _ in range(4)] + [_f32(rng.random(5) + 0.1)]
    yield Sample("batchnorm_fold", (kernel, *vecs), dict(epsilon=1e-3), "kernel(3, 3, 37, 5)")
    p, g, s1, s2 = (_f32(rng.standard_normal(1001)) for _ in range(4))
    s1, s2 = np.abs(s1), np.abs(s2)
    yield Sample("adam_update", (p, g, s1, s2), dict(t=1, lr=1e-2), "n=1001 t=1")
    yield Sample("rmsprop_update", (p, g, s1), dict(lr=1e-2, rho=0.8), "n=1001")
    yield Sample("sgd_update", (p, g, s1), dict(lr=0.1, momentum=0.5, nesterov=True), "n=1001")
    # depthwise conv: more output pixels (3 * 6 * 5 = 90) than the dw chunks (64), so chunks
    # hold one or two pixels (ragged); C*M = 12 with M = 2, stride 2 'same' (padding at the
    # bottom/right only); and M = 3 on 'valid' with a (2, 3) kernel and stride (1, 2)
    for shape, k, m, stride, padding in (((3, 11, 9, 6), (3, 3), 2, 2, "same"),
                                         ((1, 6, 9, 5), (2, 3), 3, (1, 2), "valid")):
        xd = _f32(rng.standard_normal(shape))
        wd = _f32(rng.standard_normal(k + (shape[3], m)))
        bd = _f32(rng.standard_normal(shape[3] * m))
        label = f"x{shape} w{wd.shape} s{stride} {padding}"
        yield Sample("depthwise_conv2d_forward", (xd, wd, bd),
                     dict(stride=stride, padding=padding), label)
        yd = R.depthwise_conv2d_forward(xd, wd, bd, stride, padding)
        yield Sample("depthwise_conv2d_backward", (xd, wd, _f32(rng.standard_normal(yd.shape))),
                     dict(stride=stride, padding=padding, need_dx=True), label)


# Convolution-shaped samples of the table cost the simulator about 1 s per 10k
# multiply-adds (a Python thread per CUDA thread); the larger ones are left to
# tests/test_cuda_conv_sim.py, which tests those kernels in depth, so that every
# simulator test together stays near two minutes on one core.
CONV_OPS = ("conv2d_", "dense_")
MAX_CONV_MACS = 20_000


def _conv_macs(sample):
    x, w = sample.args[0], sample.args[1]
    if x.ndim == 2:                                   # dense: (N, in) @ (in, out)
        return x.shape[0] * w.shape[0] * w.shape[1]
    stride = sample.kwargs.get("stride", 1)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    kh, kw, cin, cout = w.shape
    oh, ow = -(-x.shape[1] // sh), -(-x.shape[2] // sw)   # 'same' sizes bound 'valid' ones
    return x.shape[0] * oh * ow * kh * kw * cin * cout


def ops_of(C):
    """The ops of the table the cuda package `C` exports: the contract, the fused ops,
    and any optional op (kernels.OPTIONAL, empty today) it has so far."""
    from fastconv import kernels
    return {op for op in kernels.CONTRACT + kernels.FUSED + kernels.OPTIONAL if hasattr(C, op)}


def cases(ops):
    """(key, Sample) for every sample of an op in `ops`: the op table (convolutions up to
    MAX_CONV_MACS), then the extras."""
    from fastconv.kernels.opinfo import samples
    found = []
    for source, sample_iter in (("table", samples("quick")), ("extra", extra_samples())):
        for s in sample_iter:
            if s.op not in ops:
                continue
            if s.op.startswith(CONV_OPS) and _conv_macs(s) > MAX_CONV_MACS:
                continue
            found.append((f"{source}:{s.op}:{s.label}", s))
    return found


# -- the subprocess ---------------------------------------------------------------------

def _numba_type(value):
    """The numba type a launch gives `value` (device arrays as numba types them)."""
    import numba
    from numba.core import types
    if hasattr(value, "shape") and hasattr(value, "dtype") and not np.isscalar(value):
        contiguous = value.is_c_contiguous() if hasattr(value, "is_c_contiguous") \
            else value.flags.c_contiguous
        return types.Array(numba.from_dtype(value.dtype), len(value.shape),
                           "C" if contiguous else "A")
    return numba.typeof(value)


class _Recorder:
    """Stands in for a kernel in its module: records the types of every launch."""

    def __init__(self, where, kernel, allowed, log):
        self.where, self.kernel, self.allowed, self.log = where, kernel, allowed, log

    def __getitem__(self, config):
        launch = self.kernel[config]

        def run(*args):
            sig = tuple(_numba_type(a) for a in args)
            self.log.append((self.where, sig, sig in self.allowed))
            return launch(*args)
        return run


def _install_recorders(modules, log):
    from fastconv.kernels.cuda._spec import KernelSpec  # noqa: F401  (the interface)
    specs = {}
    for mname, module in modules.items():
        by_kernel = {}
        for spec in module.KERNELS:
            by_kernel.setdefault(id(spec.kernel), []).append(spec)
        for attr, obj in list(vars(module).items()):
            if id(obj) in by_kernel:
                group = by_kernel[id(obj)]
                allowed = {tuple(s.signature) for s in group}
                setattr(module, attr, _Recorder(f"{mname}.{attr}", obj, allowed, log))
                for s in group:
                    specs[(f"{mname}.{attr}", tuple(s.signature))] = f"{mname}:{s.name}"
    return specs


def _device_checks(C, R):
    """Device-array behaviours, each returning None when right or what went wrong."""
    from numba import cuda
    rng = np.random.default_rng(5)
    checks = {}

    def check(name):
        def deco(fn):
            try:
                problem = fn()
            except Exception as exc:  # report, do not stop the other checks
                problem = f"{type(exc).__name__}: {exc}"
            checks[name] = problem
            return fn
        return deco

    @check("out= device buffer is filled and returned")
    def _():
        x = _f32(rng.standard_normal((4, 9)))
        buf = C.empty((4, 9))
        got = C.relu_forward(C.to_device(x), out=buf)
        if got is not buf:
            return "relu_forward did not return its out= buffer"
        if not np.array_equal(buf.copy_to_host(), R.relu_forward(x)):
            return "relu_forward out= holds the wrong values"

    @check("loss is a float, dlogits lands in out[1], int32 labels on the device")
    def _():
        z = _f32(rng.standard_normal((6, 4)))
        labels = np.array([0, 3, 1, 2, 2, 0], np.int32)
        d = C.empty((6, 4))
        loss, got = C.softmax_crossentropy(cuda.to_device(labels), C.to_device(z), out=(None, d))
        want, dwant = R.softmax_crossentropy(labels, z)
        if type(loss) is not float or got is not d:
            return f"returned {type(loss).__name__} and {type(got).__name__}"
        if not np.isclose(loss, want, rtol=RTOL) or not np.allclose(d.copy_to_host(), dwant,
                                                                    rtol=RTOL, atol=ATOL):
            return f"loss {loss} vs {want}"
        yb = cuda.to_device(_f32([[1], [0], [1]]))
        loss, _ = C.binary_crossentropy(yb, C.to_device(_f32([[2.0], [-1.0], [0.5]])))
        want, _ = R.binary_crossentropy(_f32([[1], [0], [1]]), _f32([[2.0], [-1.0], [0.5]]))
        if type(loss) is not float or not np.isclose(loss, want, rtol=RTOL):
            return f"binary loss {loss!r} vs {want}"

    @check("device labels out of range raise")
    def _():
        z = C.to_device(_f32(rng.standard_normal((3, 4))))
        try:
            C.softmax_crossentropy(cuda.to_device(np.array([0, 4, 1], np.int32)), z)
        except ValueError as exc:
            if "class index out of range [0, 4)" in str(exc):
                return None
            return f"wrong message: {exc}"
        return "no error"

    @check("a float64 device array gets the reference's dtype message")
    def _():
        x64 = np.zeros((2, 3))
        try:
            R.relu_forward(x64)
        except TypeError as exc:
            want = str(exc)
        try:
            C.relu_forward(cuda.to_device(x64))
        except TypeError as exc:
            return None if str(exc) == want else f"{exc} != {want}"
        return "no error"

    @check("a wrong-shaped out= device buffer gets the reference's message")
    def _():
        x = _f32(rng.standard_normal((2, 3)))
        try:
            R.sigmoid_forward(x, out=np.empty((3, 2), np.float32))
        except ValueError as exc:
            want = str(exc)
        try:
            C.sigmoid_forward(C.to_device(x), out=C.empty((3, 2)))
        except ValueError as exc:
            return None if str(exc) == want else f"{exc} != {want}"
        return "no error"

    @check("optimizer updates host arrays in place too")
    def _():
        p, g, ms = (_f32(rng.random(50)) for _ in range(3))
        rp, rms = p.copy(), ms.copy()
        C.rmsprop_update(p, g, ms, 0.01)
        R.rmsprop_update(rp, g, rms, 0.01)
        if not (np.allclose(p, rp, rtol=RTOL, atol=ATOL)
                and np.allclose(ms, rms, rtol=RTOL, atol=ATOL)):
            return "host p/ms not updated like the reference"

    @check("device argmax outside [0, H*W) is skipped, not written")
    def _():
        dy = C.to_device(_f32(np.ones((1, 2, 2, 1))))
        arg = cuda.to_device(np.array([0, 99, -1, 15], np.int32).reshape(1, 2, 2, 1))
        dx = C.maxpool2d_backward(dy, arg, (1, 4, 4, 1)).copy_to_host().ravel()
        want = np.zeros(16, np.float32)
        want[[0, 15]] = 1
        if not np.array_equal(dx, want):
            return f"dx {dx}"

    @check("global max pooling: NaN and -inf follow the reference's running-max rule")
    def _():
        # channel 0: NaN at pixel 0 -> (NaN, 0); 1: a later NaN never wins; 2: all -inf
        # -> (-inf, 0); 3: all NaN but pixel 0 -> pixel 0; 4: the max in the last lane
        x = _f32(rng.standard_normal((2, 5, 7, 5)))
        x[:, 0, 0, 0] = np.nan
        x[:, 2, 3, 1] = np.nan
        x[..., 2] = -np.inf
        x[..., 3] = np.nan
        x[:, 0, 0, 3] = -2.0
        x[:, 4, 6, 4] = 9.0
        y, arg = C.global_maxpool2d_forward(C.to_device(x))
        wy, warg = R.global_maxpool2d_forward(x)
        y, arg = y.copy_to_host(), arg.copy_to_host()
        if not (np.array_equal(y, wy, equal_nan=True) and np.array_equal(arg, warg)):
            return f"y {y} arg {arg}, want {wy} {warg}"

    @check("merge ops on device arrays: accumulate_grad in place, out= returned")
    def _():
        a, b = _f32(rng.standard_normal((3, 4, 4, 5))), _f32(rng.standard_normal((3, 4, 4, 5)))
        da = C.to_device(a)
        if C.accumulate_grad(da, C.to_device(b)) is not None:
            return "accumulate_grad returned something"
        if not np.array_equal(da.copy_to_host(), a + b):
            return "accumulate_grad did not add in place"
        buf = C.empty((3, 4, 4, 10))
        got = C.concat_forward([C.to_device(a), C.to_device(b)], out=buf)
        if got is not buf or not np.array_equal(buf.copy_to_host(),
                                                np.concatenate([a, b], -1)):
            return "concat_forward out= not filled and returned"
        parts = (C.empty((3, 4, 4, 5)), None)
        g = C.concat_backward(buf, (5, 5), out=parts)
        if g[0] is not parts[0] or not np.array_equal(g[1].copy_to_host(), b):
            return "concat_backward out= not filled and returned"

    @check("device argmax of global max pooling outside [0, H*W) leaves zeros")
    def _():
        dy = C.to_device(_f32([[1.0, 2.0, 3.0]]))
        arg = cuda.to_device(np.array([[3, 4, -1]], np.int32))
        dx = C.global_maxpool2d_backward(dy, arg, (1, 2, 2, 3)).copy_to_host()
        want = np.zeros((1, 2, 2, 3), np.float32)
        want[0, 1, 1, 0] = 1.0
        if not np.array_equal(dx, want):
            return f"dx {dx.ravel()}"

    @check("memory helpers: to_device copies, zeros, to_host of tuples and lists")
    def _():
        a = _f32(rng.standard_normal((3, 2)))
        a0 = a.copy()
        d = C.to_device(a)
        a[0, 0] = 99.0                      # the device copy must not alias the host array
        d2 = C.to_device(d)                 # nor a device copy the device array
        C.relu_forward(C.to_device(_f32(np.zeros((3, 2)))), out=d2)
        if not np.array_equal(d.copy_to_host(), a0) or d2.copy_to_host().any():
            return "to_device aliases its argument"
        if not np.array_equal(C.to_host(C.zeros((2, 5))), np.zeros((2, 5), np.float32)):
            return "zeros is not zero"
        got = C.to_host((d, [d, 3.5], None))
        if not (isinstance(got, tuple) and isinstance(got[1], list)
                and isinstance(got[0], np.ndarray) and got[1][1] == 3.5 and got[2] is None):
            return f"to_host returned {got!r}"
        C.synchronize()
        if C.empty((4,), np.int32).dtype != np.int32:
            return "empty ignores dtype"

    @check("the training step's own kernels launch with their declared signatures")
    def _():
        # The device-side step (seeded dropout, the loss/accuracy accumulator, the guarded
        # updates): their values are checked against NumPy in tests/test_cuda_step.py; here
        # each is launched once so the recorder types its arguments.
        from fastconv.kernels.cuda import activations as A, losses as L, optimizers as O
        x = _f32(rng.standard_normal((3, 5)))
        y, mask = A.dropout_forward_seeded(cuda.to_device(x), 0.5, 7,
                                           out=(cuda.device_array((3, 5), np.float32),
                                                cuda.device_array((3, 5), np.float32)))
        if not np.array_equal(mask.copy_to_host(), A.dropout_mask_ref((3, 5), 0.5, 7)):
            return "seeded dropout mask differs from dropout_mask_ref"
        stats = cuda.to_device(np.zeros(L.STATS, np.float32))
        L.reset_stats(stats)
        z = _f32(rng.standard_normal((4, 1)))
        L.loss_and_stats("binary", cuda.to_device(_f32(rng.random((4, 1)) > 0.5)),
                         cuda.to_device(z), cuda.device_array((4, 1), np.float32), stats)
        z3 = _f32(rng.standard_normal((4, 3)))
        L.loss_and_stats("sparse", cuda.to_device(rng.integers(0, 3, 4).astype(np.int32)),
                         cuda.to_device(z3), cuda.device_array((4, 3), np.float32), stats)
        # weighted, as fit's step runs it: the weights a device array uploaded with the batch
        wts = _f32([0.5, 2.0, 0.0, 1.0])
        labels3 = rng.integers(0, 3, 4).astype(np.int32)
        d3 = cuda.device_array((4, 3), np.float32)
        L.reset_stats(stats)
        L.loss_and_stats("sparse", cuda.to_device(labels3), cuda.to_device(z3), d3, stats,
                         cuda.to_device(wts))
        want, dwant = R.softmax_crossentropy(labels3, z3, sample_weight=wts)
        host = L.read_stats(stats, np.zeros(L.STATS, np.float32))
        if not np.isclose(host[L.LOSS_SUM] / host[L.SEEN], want, rtol=RTOL) or \
                not np.allclose(d3.copy_to_host(), dwant, rtol=RTOL, atol=ATOL):
            return f"weighted device loss {host[L.LOSS_SUM] / host[L.SEEN]} vs {want}"
        # the regularizers' penalty added to the step's loss on the device
        before = L.read_stats(stats, np.zeros(L.STATS, np.float32)).copy()
        pen = cuda.device_array(1, np.float32)
        wreg = _f32(rng.standard_normal(40))
        O.regularize(cuda.to_device(wreg), None, 0.01, 0.1, pen)
        L.add_penalty(stats, pen, 4)
        after = L.read_stats(stats, np.zeros(L.STATS, np.float32))
        want_pen = 0.01 * np.abs(wreg).sum() + 0.1 * (wreg.astype(np.float64) ** 2).sum()
        got_pen = (after[L.LOSS_SUM] - after[L.LOSS_COMP] - before[L.LOSS_SUM]
                   + before[L.LOSS_COMP]) / 4
        if not np.isclose(got_pen, want_pen, rtol=1e-4):
            return f"penalty added {got_pen} vs {want_pen}"
        yb = cuda.to_device(_f32(rng.random((4, 1)) > 0.5))
        L.loss_and_stats("binary", yb, cuda.to_device(z), cuda.device_array((4, 1), np.float32),
                         stats, cuda.to_device(wts))
        loss, _ = C.binary_crossentropy(yb, cuda.to_device(z),
                                        sample_weight=cuda.to_device(wts.reshape(4, 1)))
        want, _ = R.binary_crossentropy(yb.copy_to_host(), z, sample_weight=wts)
        if not np.isclose(loss, want, rtol=RTOL):
            return f"binary loss with device sample_weight {loss} vs {want}"
        p, g, s1, s2, snap = (cuda.to_device(_f32(np.abs(rng.standard_normal(9))))
                              for _ in range(5))
        guard = (stats, snap)
        O.sgd_update(p, g, None, 0.1, guard=guard)
        O.sgd_update(p, g, s1, 0.1, 0.9, True, guard=guard)
        O.rmsprop_update(p, g, s1, 0.01, guard=guard)
        O.adam_update(p, g, s1, s2, 3, 0.01, guard=guard)

    @check("batchnorm on device arrays: out= filled and returned, the guarded moving update")
    def _():
        from fastconv.kernels.cuda import losses as L
        x = _f32(rng.standard_normal((3, 4, 5, 6)) + 2.0)
        g, b = _f32(rng.standard_normal(6)), _f32(rng.standard_normal(6))
        bufs = (C.empty((3, 4, 5, 6)), C.empty((6,)), C.empty((6,)))
        got = C.batchnorm_train_forward(C.to_device(x), C.to_device(g), C.to_device(b),
                                        out=bufs)
        want = R.batchnorm_train_forward(x, g, b)
        if any(a is not o for a, o in zip(got, bufs)):
            return "batchnorm_train_forward did not return its out= buffers"
        if not all(np.allclose(o.copy_to_host(), w, rtol=RTOL, atol=ATOL)
                   for o, w in zip(bufs, want)):
            return "batchnorm_train_forward out= holds the wrong values"
        dx = C.empty((3, 4, 5, 6))
        got = C.batchnorm_backward(C.to_device(x), C.to_device(x), C.to_device(g), bufs[1],
                                   bufs[2], out=(dx, None, None))
        if got[0] is not dx:
            return "batchnorm_backward did not return its out= dx"
        mm, mv = C.to_device(_f32(np.zeros(6))), C.to_device(_f32(np.ones(6)))
        stats = cuda.to_device(np.zeros(L.STATS, np.float32))
        C.batchnorm_moving_update(mm, mv, bufs[1], bufs[2], 0.5, guard=stats)
        if not np.allclose(mm.copy_to_host(), want[1] * 0.5, rtol=RTOL, atol=ATOL):
            return "the guarded moving update did not run on a finite step"
        bad = np.zeros(L.STATS, np.float32)
        bad[L.BAD] = 1.0
        before = mm.copy_to_host()
        C.batchnorm_moving_update(mm, mv, bufs[1], bufs[2], 0.5, guard=cuda.to_device(bad))
        if not np.array_equal(mm.copy_to_host(), before):
            return "the guarded moving update ran after a non-finite loss"

    return checks


def run_in_simulator():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        raise SystemExit("run with NUMBA_ENABLE_CUDASIM=1")
    from fastconv import kernels
    from fastconv.kernels import reference as R
    from fastconv.kernels.cuda import _launch
    from fastconv.testing import ptx_report as report
    from fastconv.testing import compare_to_reference

    for name, value in PATCHED_LAUNCH.items():
        setattr(_launch, name, value)
    log = []
    specs = _install_recorders(report.kernel_modules(), log)
    C = kernels.get("cuda")  # the simulator stands in for the device
    results = {}
    for key, s in cases(ops_of(C)):
        t0 = time.perf_counter()
        try:
            r = compare_to_reference(C, s.op, *s.args, rtol=RTOL, atol=ATOL, **s.kwargs)
            results[key] = dict(passed=r.passed, message=r.message, max_abs=r.max_abs)
        except Exception as exc:
            results[key] = dict(passed=False, message=f"{type(exc).__name__}: {exc}",
                                max_abs=None)
        results[key]["seconds"] = round(time.perf_counter() - t0, 3)
    checks = _device_checks(C, R)
    launched = {(where, sig) for where, sig, _ in log}
    print("RESULT:" + json.dumps(dict(
        results=results,
        checks=checks,
        mismatches=sorted({f"{where} launched with {sig}" for where, sig, ok in log if not ok}),
        unlaunched=sorted(name for key, name in specs.items() if key not in launched),
        n_launches=len(log))))


if __name__ == "__main__":
    run_in_simulator()


# -- the tests (parent process) ---------------------------------------------------------

def _cuda_ops():
    try:
        import fastconv.kernels.cuda as C
    except ImportError as exc:
        return None, str(exc)
    return ops_of(C), None


OPS, IMPORT_PROBLEM = _cuda_ops()
CASES = [key for key, _ in cases(OPS)] if OPS else []


@pytest.fixture(scope="module")
def sim():
    if OPS is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"fastconv.kernels.cuda does not import: {IMPORT_PROBLEM}")
        pytest.skip(f"fastconv.kernels.cuda does not import: {IMPORT_PROBLEM}")
    from .simulator import run          # not at the top: this file also runs as the child
    return run(os.path.abspath(__file__), timeout=600)


@pytest.mark.parametrize("case", CASES)
def test_cuda_op_matches_reference_in_simulator(sim, case):
    result = sim["results"][case]
    assert result["passed"], result["message"]


def test_launches_use_the_declared_signatures(sim):
    assert sim["n_launches"] > 0
    assert sim["mismatches"] == [], "launched with a signature no KernelSpec declares (so " \
        "tests/test_cuda_ptx.py never compiles it):\n" + "\n".join(sim["mismatches"])


def test_every_declared_kernel_is_launched(sim):
    assert sim["unlaunched"] == [], ("KernelSpecs no simulator case launches (add a case, or "
                                     "drop the spec): " + ", ".join(sim["unlaunched"]))


@pytest.mark.parametrize("check", [
    "out= device buffer is filled and returned",
    "loss is a float, dlogits lands in out[1], int32 labels on the device",
    "device labels out of range raise",
    "a float64 device array gets the reference's dtype message",
    "a wrong-shaped out= device buffer gets the reference's message",
    "optimizer updates host arrays in place too",
    "the training step's own kernels launch with their declared signatures",
    "device argmax outside [0, H*W) is skipped, not written",
    "memory helpers: to_device copies, zeros, to_host of tuples and lists",
    "global max pooling: NaN and -inf follow the reference's running-max rule",
    "merge ops on device arrays: accumulate_grad in place, out= returned",
    "device argmax of global max pooling outside [0, H*W) leaves zeros",
    "batchnorm on device arrays: out= filled and returned, the guarded moving update",
])
def test_device_behaviour(sim, check):
    assert check in sim["checks"], f"the subprocess did not run {check!r}"
    assert sim["checks"][check] is None, sim["checks"][check]


# -- the dense kernels at every tile configuration ---------------------------------------
# fastconv/kernels/cuda/dense.py's split-K GEMM at its real tiles (a split and a direct
# product of each kind) and at tiny tiles (16-thread blocks of 8 x 8 outputs, 4 reduction
# steps per stage, splits into chunks of 8+), where small inputs give several blocks in
# every grid dimension with ragged edges and ragged last chunks; forward and backward
# (need_dx both ways) against the reference. The seed's 6400 -> 64 at batch 3 runs its
# forward only, at 8 x 16 tiles split in two (~30 s: the simulator runs about 40k
# multiply-adds a second, so its backward would take minutes); its backward's kernels
# and launch paths are the ones the smaller cases check.

DENSE_SCRIPT = """
import json, sys
import numpy as np
from fastconv.kernels import reference as R
from fastconv.kernels.cuda import dense
from fastconv.testing import compare_to_reference
sys.path.insert(0, sys.argv[1])
from test_cuda_sim import RTOL, ATOL

class K:
    NAME = "cuda-dense"
    dense_forward = staticmethod(dense.dense_forward)
    dense_backward = staticmethod(dense.dense_backward)
    @staticmethod
    def to_device(a):
        from numba import cuda
        return cuda.to_device(np.ascontiguousarray(a))
    @staticmethod
    def to_host(v):
        if isinstance(v, (tuple, list)):
            return type(v)(K.to_host(a) for a in v)
        return v.copy_to_host() if hasattr(v, "copy_to_host") else v

rng = np.random.default_rng(11)
f32 = lambda a: np.ascontiguousarray(a, np.float32)
results = {}

def case(tiles, n, d_in, d_out, backward=True):
    dense.set_tiles(**tiles)
    x = f32(rng.standard_normal((n, d_in)))
    w = f32(rng.standard_normal((d_in, d_out)) * 0.1)
    b = f32(rng.standard_normal(d_out))
    dy = f32(rng.standard_normal((n, d_out)))
    splits = dict(fwd=dense.split(n, d_out, d_in)[0], dw=dense.split(d_in + 1, d_out, n)[0],
                  dx=dense.split(n, d_in, d_out)[0])
    runs = [("dense_forward", (x, w, b), {})]
    if backward:
        runs += [("dense_backward", (x, w, dy), dict(need_dx=nd)) for nd in (True, False)]
    for op, args, kw in runs:
        r = compare_to_reference(K, op, *args, rtol=RTOL, atol=ATOL, **kw)
        key = f"{tiles.get('bm', 'real')} {op} {n}x{d_in}->{d_out} {kw}"
        results[key] = dict(passed=r.passed, message=r.message[:500], splits=splits)

REAL = {}
TINY = dict(bm=8, bn=8, bk=4, tm=2, tn=2, target_blocks=12, min_chunk=8)
MID = dict(bm=8, bn=16, bk=16, tm=2, tn=4, target_blocks=8, min_chunk=64)
for shape in ((1, 7, 3), (2, 300, 5), (2, 5, 130), (130, 3, 2)):
    case(REAL, *shape)
for shape in ((1, 7, 3), (5, 13, 7), (4, 100, 1), (19, 37, 21), (40, 9, 10), (6, 11, 40)):
    case(TINY, *shape)
case(MID, 3, 6400, 64, backward=False)
print("RESULT:" + json.dumps(results))
"""


@pytest.fixture(scope="module")
def dense_sim():
    if OPS is None:
        pytest.skip(f"fastconv.kernels.cuda does not import: {IMPORT_PROBLEM}")
    from .simulator import TESTS, run
    return run(DENSE_SCRIPT, TESTS, timeout=900)


def test_dense_kernels_match_the_reference_at_every_tile_configuration(dense_sim):
    assert len(dense_sim) == 31
    failed = {k: r["message"] for k, r in dense_sim.items() if not r["passed"]}
    assert failed == {}, failed
    # the cases really split every product somewhere, and leave some unsplit
    splits = [r["splits"] for r in dense_sim.values()]
    for kind in ("fwd", "dw", "dx"):
        assert any(s[kind] > 1 for s in splits) and any(s[kind] == 1 for s in splits), kind


def test_dense_split_at_the_seed_shapes():
    """The real tiles spread 6400 -> 64 over the GPU at any batch (132 SMs), and leave
    products with enough output tiles unsplit (no partials traffic)."""
    from fastconv.kernels.cuda import dense
    assert (dense.BM, dense.BN, dense.BK, dense.THREADS) == (32, 64, 16, 128)
    grid = lambda m, n, k: dense._mem.blocks(m, 32) * dense._mem.blocks(n, 64) \
        * dense.split(m, n, k)[0]
    assert dense.split(32, 64, 6400) == (100, 64)          # forward, batch 32: 100 blocks
    assert grid(256, 64, 6400) == 248                      # batch 256: 8 row tiles x 31
    assert grid(1, 64, 6400) == 100                        # batch 1 too
    assert dense.split(6401, 64, 32) == (1, 32)            # dw+db: 201 tiles, no split
    assert dense.split(32, 6400, 64) == (1, 64)            # dx: 100 tiles, no split

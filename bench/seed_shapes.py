"""The seed model's layer shapes at batch 32 and their FLOP counts (napkin math).

A multiply-add counts as 2 FLOPs. Pooling and elementwise ops are memory-bound:
their rows report bytes moved instead.
"""
import os

from fastconv.kernels._validate import as_pair, window_geometry

BATCH = 32

# name: (input NHWC, kernel (KH, KW), filters, stride, padding)
CONVS = {
    "conv1 150x150x3->32": ((BATCH, 150, 150, 3), (3, 3), 32, 1, "valid"),
    "conv2 49x49x32->32": ((BATCH, 49, 49, 32), (3, 3), 32, 1, "valid"),
    "conv3 23x23x32->64": ((BATCH, 23, 23, 32), (3, 3), 64, 1, "valid"),
}
# name: (input NHWC, pool)
POOLS = {
    "pool1 148->49 (3)": ((BATCH, 148, 148, 32), 3),
    "pool2 47->23 (2)": ((BATCH, 47, 47, 32), 2),
    "pool3 21->10 (2)": ((BATCH, 21, 21, 64), 2),
}
DENSES = {
    "dense1 6400->64": (BATCH, 6400, 64),
    "dense2 64->1": (BATCH, 64, 1),
}


def conv_out(shape, k, stride, padding):
    """(OH, OW) of a conv with kernel k over the NHWC `shape` (the kernels' formula)."""
    oh, ow, _, _ = window_geometry("conv_out", shape[1:3], k, as_pair("conv_out", "stride", stride),
                                   padding)
    return oh, ow


def conv_flops(shape, k, f, stride=1, padding="valid"):
    """FLOPs of one conv forward; each backward product (dx, dw) costs the same."""
    oh, ow = conv_out(shape, k, stride, padding)
    return 2 * shape[0] * oh * ow * k[0] * k[1] * shape[3] * f


def dense_flops(n, d_in, d_out):
    return 2 * n * d_in * d_out


def machine_peak_gflops():
    """fp32 peak: cores x FLOP/cycle x GHz. Defaults to this project's CI machine
    (2 Zen 3 cores, 2 FMA units x 8 lanes x 2 = 32 FLOP/cycle, ~2.45 GHz); override
    with FASTCONV_PEAK_GFLOPS."""
    if "FASTCONV_PEAK_GFLOPS" in os.environ:
        return float(os.environ["FASTCONV_PEAK_GFLOPS"])
    return (os.cpu_count() or 2) * 32 * 2.45

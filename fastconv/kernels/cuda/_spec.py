"""What each CUDA kernel module declares, so the checks and the report find every kernel.

Every module in fastconv/kernels/cuda/ that defines `@cuda.jit` kernels exports

    KERNELS = [KernelSpec("conv2d_forward_tile", conv2d_forward_tile, SIG, threads=256), ...]

with one entry per (kernel, signature) its wrappers really launch. The test
suite compiles each entry with `numba.cuda.compile_ptx` for sm_90 and sm_80,
runs `ptxas -v` on the PTX (no spills allowed), and `python -m
fastconv.kernels.cuda.report` prints registers, shared memory, spills and
occupancy per entry.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class KernelSpec:
    name: str          # the name in the report: the kernel, plus a variant if it has several
    kernel: object     # the @cuda.jit dispatcher (compile_ptx gets kernel.py_func)
    signature: tuple   # numba types, exactly as the wrapper launches it (float32 C arrays, int32/int64 scalars)
    threads: int       # threads per block the wrapper launches with (for occupancy)

"""Registers, shared memory, spills, occupancy and FMA share of every CUDA kernel.

    python -m fastconv.kernels.cuda.report [--arch sm_90] [--json]

The entry point only: the machinery (compiling each KernelSpec, ptxas, the LTO build,
occupancy, the FMA share of the hottest loop) is fastconv/testing/ptx_report.py, which
the tests import. The names below are re-exported for code that imported them from here;
patch them in fastconv.testing.ptx_report, where main() looks them up.
"""
import sys

from fastconv.testing.ptx_report import (  # noqa: F401
    all_specs, compile_spec, fma_share, hottest_loop, kernel_modules, main, measure,
    occupancy, parse_ptxas, toolchain_problem)

if __name__ == "__main__":
    sys.exit(main())

"""Registers, shared memory, spills and theoretical occupancy of every CUDA kernel.

    python -m fastconv.kernels.cuda.report [--arch sm_90] [--json]

For every KernelSpec of every module in fastconv/kernels/cuda (see _spec.py):
compile it with numba.cuda.compile_ptx for the architecture's compute
capability with the signature its wrapper launches, run `ptxas -v` on the PTX
and print what ptxas reports, plus the occupancy that resource use gives at the
wrapper's block size. Needs NVVM (the nvidia-nvvm wheel) and ptxas (the
nvidia-cuda-nvcc wheel, or a CUDA toolkit on PATH); no GPU.

Occupancy follows NVIDIA's occupancy calculator for sm_90 (H100): 65536
32-bit registers, 228 KiB shared memory (227 KiB usable by one block, 1 KiB
reserved per block by the runtime, 128-byte allocation unit), 2048 threads
(64 warps) and 32 blocks per SM; registers are allocated per warp in units of
256 and warps per SM in groups of 4 (one per SM sub-partition).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import glob
import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import types


@dataclasses.dataclass(frozen=True)
class SMLimits:
    """Per-SM resources of one architecture (defaults: sm_90)."""
    regs_per_sm: int = 65536
    max_regs_per_thread: int = 255
    max_regs_per_block: int = 65536
    reg_unit: int = 256             # registers are allocated per warp in units of 256
    warp_unit: int = 4              # warps per SM are granted in groups of 4 (sub-partitions)
    smem_per_sm: int = 228 * 1024
    smem_per_block: int = 227 * 1024
    smem_reserved_per_block: int = 1024
    smem_unit: int = 128
    max_threads_per_sm: int = 2048
    max_threads_per_block: int = 1024
    max_blocks_per_sm: int = 32


SM90 = SMLimits()
SM80 = SMLimits(smem_per_sm=164 * 1024, smem_per_block=163 * 1024)
LIMITS = {"sm_90": SM90, "sm_80": SM80}


def _ceil_to(x, unit):
    return -(-x // unit) * unit


def occupancy(threads, regs, smem_bytes, limits=SM90):
    """Theoretical occupancy: (active blocks per SM, active warps per SM / max warps, limiter).

    threads per block, regs per thread (from ptxas), static shared memory per block in
    bytes. A block that cannot launch at all (too many threads, registers or shared
    memory) gives (0, 0.0, reason).
    """
    max_warps = limits.max_threads_per_sm // 32
    warps = -(-threads // 32)
    if threads < 1 or threads > limits.max_threads_per_block:
        return 0, 0.0, f"{threads} threads per block"
    if regs > limits.max_regs_per_thread:
        return 0, 0.0, f"{regs} registers per thread"
    regs_per_warp = _ceil_to(max(regs, 1) * 32, limits.reg_unit)
    if regs_per_warp * warps > limits.max_regs_per_block:
        return 0, 0.0, "registers per block"
    smem = _ceil_to(smem_bytes, limits.smem_unit)
    if smem > limits.smem_per_block:
        return 0, 0.0, "shared memory per block"
    warps_by_regs = (limits.regs_per_sm // regs_per_warp) // limits.warp_unit * limits.warp_unit
    by = {
        "blocks": limits.max_blocks_per_sm,
        "threads": max_warps // warps,
        "registers": warps_by_regs // warps,
        "shared memory": limits.smem_per_sm // (smem + limits.smem_reserved_per_block),
    }
    limiter = min(by, key=lambda k: (by[k], k != "threads"))
    blocks = by[limiter]
    return blocks, blocks * warps / max_warps, limiter


# -- the toolchain ----------------------------------------------------------------------

def find_ptxas():
    """Path of a ptxas new enough for NVVM's PTX: the nvidia-cuda-nvcc wheel's first, then
    PATH. None if there is none."""
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    roots.update(p for p in sys.path if p.endswith("site-packages"))
    for root in sorted(roots):
        for path in sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "bin", "ptxas")),
                           reverse=True):
            if os.access(path, os.X_OK):
                return path
    return shutil.which("ptxas")


def toolchain_problem():
    """None when compile_ptx and ptxas both work here, else what is missing."""
    try:
        from numba import cuda, float32

        def probe(a):
            a[0] = a[0] + float32(1)
        cuda.compile_ptx(probe, (float32[::1],), cc=(9, 0))
    except Exception as exc:  # no numba-cuda, no NVVM, a broken install: all the same here
        return f"numba.cuda.compile_ptx does not work ({type(exc).__name__}: {exc})"
    if find_ptxas() is None:
        return ("no ptxas: install the nvidia-cuda-nvcc wheel (the test extra has it) or put "
                "a CUDA toolkit's bin/ on PATH")
    return None


_FUNC = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_USED = re.compile(r"Used (\d+) registers(?:, used (\d+) barriers)?"
                   r"(?:, (\d+) bytes smem)?")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                    r"(\d+) bytes spill loads")


def parse_ptxas(text):
    """{entry name: {registers, barriers, smem, stack, spill_stores, spill_loads}} from
    `ptxas -v` output (every entry function it compiled)."""
    entries, current = {}, None
    for line in text.splitlines():
        m = _FUNC.search(line)
        if m:
            current = entries.setdefault(m.group(1), dict(
                registers=0, barriers=0, smem=0, stack=0, spill_stores=0, spill_loads=0))
            continue
        if current is None:
            continue
        m = _SPILL.search(line)
        if m and "Function properties" not in line:
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)),
                           spill_loads=int(m.group(3)))
            continue
        m = _USED.search(line)
        if m:
            current.update(registers=int(m.group(1)), barriers=int(m.group(2) or 0),
                           smem=int(m.group(3) or 0))
    return entries


def ptxas_info(ptx, arch="sm_90", ptxas=None):
    """Run `ptxas -v -arch=<arch>` on the PTX text; returns (parsed entries, raw output).
    Raises RuntimeError with ptxas's message if it rejects the PTX."""
    ptxas = ptxas or find_ptxas()
    if ptxas is None:
        raise RuntimeError(toolchain_problem() or "no ptxas")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run([ptxas, "-v", f"-arch={arch}", src, "-o",
                               os.path.join(tmp, "k.cubin")],
                              capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas -arch={arch} failed:\n{text}")
    return parse_ptxas(text), text


@contextlib.contextmanager
def _device_functions_for(cc):
    """Let compile_ptx compile kernels that call @cuda.jit(device=True) functions on a
    machine without a driver. numba-cuda 0.30's device-function dispatcher asks the
    current device for its compute capability (dispatcher.py, compile_device) even
    inside compile_ptx; here it is told the target's. The kernel's PTX is still
    generated for `cc` by compile_ptx itself; a real GPU never takes this path."""
    from numba.cuda import dispatcher
    real = getattr(dispatcher, "get_current_device", None)
    if real is None:        # a numba-cuda that no longer asks: nothing to stand in for
        yield
        return
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = real


@functools.lru_cache(maxsize=None)
def compile_spec(spec, arch="sm_90"):
    """The PTX of one KernelSpec for `arch` ('sm_90' -> cc (9, 0)); cached per process."""
    from numba import cuda
    cc = (int(arch[3:-1]), int(arch[-1]))
    with _device_functions_for(cc):
        ptx, _ = cuda.compile_ptx(spec.kernel.py_func, spec.signature, cc=cc)
    return ptx


def kernel_modules():
    """Every module of fastconv.kernels.cuda that exports KERNELS, by name."""
    import fastconv.kernels.cuda as package
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in ("report",):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if hasattr(module, "KERNELS"):
            found[info.name] = module
    return found


def all_specs():
    """[(module name, KernelSpec)] over every kernel module."""
    return [(name, spec) for name, module in sorted(kernel_modules().items())
            for spec in module.KERNELS]


@functools.lru_cache(maxsize=None)
def _ptxas_entries(spec, arch):
    return ptxas_info(compile_spec(spec, arch), arch)[0]


def measure(spec, arch="sm_90"):
    """One report row: resources from ptxas and the occupancy at spec.threads."""
    try:
        entries = _ptxas_entries(spec, arch)
    except Exception as exc:
        raise RuntimeError(f"{spec.name} ({arch}): {type(exc).__name__}: {exc}") from exc
    if len(entries) != 1:
        raise RuntimeError(f"{spec.name}: expected one entry function in the PTX, ptxas "
                           f"reported {len(entries)}")
    info = next(iter(entries.values()))
    blocks, occ, limiter = occupancy(spec.threads, info["registers"], info["smem"],
                                     LIMITS.get(arch, SM90))
    return dict(kernel=spec.name, threads=spec.threads, **info, blocks_per_sm=blocks,
                occupancy=occ, limiter=limiter)


def table(rows, arch):
    head = (f"| module | kernel | threads/block | registers/thread | smem/block (B) | "
            f"spill st/ld (B) | blocks/SM | occupancy {arch} | limited by |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['module']} | {r['kernel']} | {r['threads']} | {r['registers']} | "
            f"{r['smem']} | {r['spill_stores']}/{r['spill_loads']} | {r['blocks_per_sm']} | "
            f"{r['occupancy']:.0%} | {r['limiter']} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastconv.kernels.cuda.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="sm_90", choices=sorted(LIMITS))
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    problem = toolchain_problem()
    if problem:
        print(f"cannot build the report: {problem}", file=sys.stderr)
        return 2
    rows = [dict(module=module, **measure(spec, args.arch)) for module, spec in all_specs()]
    print(json.dumps(rows, indent=1) if args.json else table(rows, args.arch))
    return 0


if __name__ == "__main__":
    sys.exit(main())

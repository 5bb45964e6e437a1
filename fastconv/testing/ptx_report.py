"""The CUDA kernel report: registers, shared memory, spills, occupancy and FMA share.

    python -m fastconv.kernels.cuda.report [--arch sm_90] [--json]

(fastconv/kernels/cuda/report.py is the entry point; the machinery is here, with the
other checking tools, so that the kernel package holds kernels only.)

For every KernelSpec of every module in fastconv/kernels/cuda (see its _spec.py):
  * the PTX: numba.cuda.compile_ptx for the architecture's compute capability with the
    signature its wrapper launches. The FMA share of its hottest loop (fma_share) and
    the tests' float64 check read this PTX.
  * the build that really runs. numba-cuda (0.30) builds a kernel with link-time
    optimisation whenever nvJitLink is present (decorators.jit: lto defaults to
    _have_nvjitlink()): NVVM emits LTO-IR for the device's arch (sm_90a on an
    H100/H200: codegen._ensure_cc appends "a" from cc 9.0) and nvJitLink optimises and
    assembles it. The report does the same without a GPU (numba.cuda.compile(...,
    output="ltoir") and cuda.core's Linker with verbose output) and takes registers,
    spills and occupancy from that build. Where nvJitLink is missing numba-cuda loads
    the plain PTX, and so does the report: then both columns come from `ptxas -v` on
    the compile_ptx PTX. The build column says which.
Needs NVVM (the nvidia-nvvm wheel) and ptxas (the nvidia-cuda-nvcc wheel, or a CUDA
toolkit on PATH); nvJitLink (nvidia-nvjitlink) for the LTO build; no GPU.

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
        ptx, _ = cuda.compile_ptx(spec.kernel.py_func, spec.signature, cc=cc,
                                  **_launch_bounds(spec))
    return ptx


def _launch_bounds(spec):
    """The kernel's own launch_bounds (e.g. @cuda.jit(launch_bounds=(128, 6))) as compile
    keywords, so the report builds it as numba-cuda does; {} when it has none."""
    bounds = getattr(spec.kernel, "targetoptions", {}).get("launch_bounds")
    return {"launch_bounds": bounds} if bounds else {}


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


# -- the FMA share of the hottest loop -------------------------------------------------
# One definition for every kernel (issue 19): split the PTX into basic blocks at labels
# and after branches; the hottest loop is the block with the most fma.rn.f32 that ends
# in a branch back to its own label (a single-block loop); its FMA share is its
# fma.rn.f32 count over all of its instructions (directives, labels, comments and
# braces are not instructions).

_LABEL = re.compile(r"^\s*(\$?[A-Za-z_][\w$]*)\s*:")
_BRANCH = re.compile(r"^(?:@!?%\w+\s+)?bra(?:\.uni)?\s+(\$?[\w$]+)\s*;")
_PREDICATE = re.compile(r"^@!?%\w+\s+")


@dataclasses.dataclass(frozen=True)
class Loop:
    """A single-block loop of a PTX listing: its label, fma.rn.f32 count and instruction
    count (share = fma / instructions)."""
    label: str
    fma: int
    instructions: int

    @property
    def share(self):
        return self.fma / self.instructions


def _instructions(ptx):
    """(kind, text) per meaningful line: ("label", name) or ("instr", instruction without
    its trailing ';'). Comments, directives (.reg, .loc, .pragma, ...), braces and
    blank lines are dropped; a line may hold a label and an instruction."""
    for raw in ptx.splitlines():
        line = raw.split("//", 1)[0].strip()
        while line:
            m = _LABEL.match(line)
            if m and not line.startswith("."):
                yield "label", m.group(1)
                line = line[m.end():].strip()
                continue
            break
        if not line or line.startswith(".") or line in ("{", "}") or not line.endswith(";"):
            if line == "}":
                yield "end", None
            continue
        yield "instr", line


def basic_blocks(ptx):
    """[(labels, instructions)] of the PTX: a block starts at a label (or after a branch or
    a function's end) and ends after a branch or before the next label."""
    blocks, labels, instrs = [], [], []

    def close():
        if labels or instrs:
            blocks.append((tuple(labels), tuple(instrs)))
        labels.clear()
        instrs.clear()

    for kind, text in _instructions(ptx):
        if kind == "label":
            if instrs:
                close()
            labels.append(text)
        elif kind == "end":
            close()
        else:
            instrs.append(text)
            if _BRANCH.match(text):
                close()
    close()
    return blocks


def hottest_loop(ptx):
    """The Loop with the most fma.rn.f32 among the blocks that end in a branch to their
    own label (the first such block on a tie); None if no loop block holds an FMA."""
    best = None
    for labels, instrs in basic_blocks(ptx):
        if not instrs:
            continue
        m = _BRANCH.match(instrs[-1])
        if not m or m.group(1) not in labels:
            continue
        fma = sum(1 for i in instrs if _PREDICATE.sub("", i).split(None, 1)[0] == "fma.rn.f32")
        if fma and (best is None or fma > best.fma):
            best = Loop(labels[0], fma, len(instrs))
    return best


def fma_share(ptx):
    """fma.rn.f32 / instructions of the hottest loop of the PTX (see hottest_loop), or
    None when it has no loop with an FMA."""
    loop = hottest_loop(ptx)
    return None if loop is None else loop.share


# -- the build that runs: LTO through nvJitLink ------------------------------------------

def lto_problem():
    """None when the report can link kernels with nvJitLink as numba-cuda does, else why
    not (then numba-cuda itself loads the plain PTX too)."""
    try:
        from numba.cuda.cudadrv.driver import _have_nvjitlink
        from cuda.core import Linker, LinkerOptions, ObjectCode  # noqa: F401
    except Exception as exc:
        return f"no nvJitLink binding ({type(exc).__name__}: {exc})"
    if not _have_nvjitlink():
        return "nvJitLink is missing or older than 12.3"
    return None


def device_cc(arch):
    """The compute capability numba-cuda builds for on a device of `arch`: (9, 0, 'a')
    for sm_90 (codegen._ensure_cc adds 'a' from cc 9.0), (8, 0) for sm_80."""
    major, minor = int(arch[3:-1]), int(arch[-1])
    return (major, minor, "a") if (major, minor) >= (9, 0) else (major, minor)


def lto_target(arch):
    """The arch string nvJitLink links for: 'sm_90a' for sm_90, 'sm_80' for sm_80."""
    cc = device_cc(arch)
    return f"sm_{cc[0]}{cc[1]}{cc[2] if len(cc) > 2 else ''}"


@functools.lru_cache(maxsize=None)
def lto_info(spec, arch="sm_90"):
    """ptxas's entries ({name: registers, ..., see parse_ptxas}) and the raw log of the LTO
    build of one KernelSpec: numba.cuda.compile(..., output="ltoir") for device_cc(arch),
    linked to a cubin by nvJitLink (cuda.core's Linker) with verbose output. A kernel that
    links extra files (`link=`; none in fastconv) would need them added here."""
    from cuda.core import Linker, LinkerOptions, ObjectCode
    from numba import cuda
    cc = device_cc(arch)
    with _device_functions_for(cc[:2]):
        ltoir, _ = cuda.compile(spec.kernel.py_func, spec.signature, device=False,
                                abi="numba", cc=cc, output="ltoir", **_launch_bounds(spec))
    linker = Linker(ObjectCode.from_ltoir(ltoir, name=spec.name),
                    options=LinkerOptions(arch=lto_target(arch), link_time_optimization=True,
                                          verbose=True))
    try:
        linker.link("cubin")
        text = linker.get_info_log()
    finally:
        linker.close()
    return parse_ptxas(text), text


@functools.lru_cache(maxsize=None)
def _ptxas_entries(spec, arch):
    return ptxas_info(compile_spec(spec, arch), arch)[0]


def _one_entry(spec, entries, what):
    if len(entries) != 1:
        raise RuntimeError(f"{spec.name}: expected one entry function in the {what}, ptxas "
                           f"reported {len(entries)}")
    return next(iter(entries.values()))


def measure(spec, arch="sm_90", lto=None):
    """One report row for a KernelSpec.

    registers, barriers, smem, stack, spill_stores, spill_loads, blocks_per_sm, occupancy,
    limiter: the build that runs (`build`: "lto" through nvJitLink for device_cc(arch),
    the way numba-cuda builds when nvJitLink is present, else "ptx"); lto=False forces
    the plain build, lto=True requires nvJitLink. ptx_registers, ptx_spill_stores,
    ptx_spill_loads, ptx_stack: ptxas -v on the compile_ptx PTX. fma_share, loop_fma,
    loop_instructions, loop_label: the hottest loop of that PTX (fma_share; None
    without a loop that holds an FMA).
    """
    if lto is None:
        lto = lto_problem() is None
    try:
        ptx = compile_spec(spec, arch)
        plain = _one_entry(spec, _ptxas_entries(spec, arch), "PTX")
        built = _one_entry(spec, lto_info(spec, arch)[0], "LTO build") if lto else plain
    except Exception as exc:
        raise RuntimeError(f"{spec.name} ({arch}): {type(exc).__name__}: {exc}") from exc
    blocks, occ, limiter = occupancy(spec.threads, built["registers"], built["smem"],
                                     LIMITS.get(arch, SM90))
    loop = hottest_loop(ptx)
    return dict(kernel=spec.name, threads=spec.threads, build="lto" if lto else "ptx",
                **built, blocks_per_sm=blocks, occupancy=occ, limiter=limiter,
                ptx_registers=plain["registers"], ptx_spill_stores=plain["spill_stores"],
                ptx_spill_loads=plain["spill_loads"], ptx_stack=plain["stack"],
                fma_share=None if loop is None else loop.share,
                loop_fma=None if loop is None else loop.fma,
                loop_instructions=None if loop is None else loop.instructions,
                loop_label=None if loop is None else loop.label)


def _share(r):
    if r["fma_share"] is None:
        return "-"
    return f"{r['fma_share']:.2f} ({r['loop_fma']}/{r['loop_instructions']})"


def build_note(rows, arch):
    """One line saying which build the registers come from."""
    if rows and all(r["build"] == "lto" for r in rows):
        return (f"registers, spills and occupancy: the LTO build numba-cuda runs "
                f"(NVVM LTO-IR linked by nvJitLink for {lto_target(arch)}); "
                f"'compile_ptx' column: ptxas -v on the plain compile_ptx PTX; FMA share: "
                f"hottest single-block loop of that PTX (fma.rn.f32/instructions)")
    return (f"registers, spills and occupancy: ptxas -v on the plain compile_ptx PTX for "
            f"{arch} (no nvJitLink here: {lto_problem()}); numba-cuda builds with LTO where "
            f"nvJitLink is present, whose registers may differ; FMA share: hottest "
            f"single-block loop of that PTX (fma.rn.f32/instructions)")


def table(rows, arch):
    head = (f"| module | kernel | threads/block | registers/thread | registers (compile_ptx) | "
            f"smem/block (B) | spill st/ld (B) | blocks/SM | occupancy {arch} | limited by | "
            f"FMA share (fma/instr) |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['module']} | {r['kernel']} | {r['threads']} | {r['registers']} | "
            f"{r['ptx_registers']} | {r['smem']} | {r['spill_stores']}/{r['spill_loads']} | "
            f"{r['blocks_per_sm']} | {r['occupancy']:.0%} | {r['limiter']} | {_share(r)} |")
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
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(build_note(rows, args.arch) + "\n\n" + table(rows, args.arch))
    return 0


if __name__ == "__main__":
    sys.exit(main())

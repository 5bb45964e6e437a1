"""Every CUDA kernel compiles for real GPUs, without spills; the report's arithmetic.

For each KernelSpec of each module in fastconv/kernels/cuda (see _spec.py):
numba.cuda.compile_ptx for cc (9, 0) and (8, 0) with the signature the wrapper
launches (tests/test_cuda_sim.py proves the wrappers launch exactly these),
then `ptxas -v` for sm_90 / sm_80: it must accept the PTX, report 0 bytes of
spill stores and loads, and leave a block that can launch. This catches what
the simulator cannot: nopython typing, float64 creeping in, resource limits.

A missing toolchain (numba-cuda, NVVM or ptxas) fails when CI=true and skips
with the reason otherwise. No GPU is needed.
"""
import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

IN_CI = os.environ.get("CI") == "true"
ARCHS = ("sm_90", "sm_80")
CUDA_DIR = pathlib.Path(__file__).resolve().parent.parent / "fastconv" / "kernels" / "cuda"


def _toolchain():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "NUMBA_ENABLE_CUDASIM=1 is set: the simulator has no compiler"
    try:
        from fastconv.testing import ptx_report as report
    except ImportError as exc:
        return f"fastconv.kernels.cuda does not import: {exc}"
    return report.toolchain_problem()


PROBLEM = _toolchain()


def _specs():
    if PROBLEM:
        return []
    from fastconv.testing import ptx_report as report
    return report.all_specs()


SPECS = _specs()


def _need_toolchain():
    if PROBLEM:
        message = f"CUDA toolchain missing, PTX/ptxas checks NOT run: {PROBLEM}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def test_toolchain_present():
    """Fails in CI (CI=true) without NVVM and ptxas; elsewhere a loud skip."""
    _need_toolchain()
    assert SPECS, "no KernelSpec found in fastconv/kernels/cuda"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("spec", SPECS, ids=[f"{m}.{s.name}" for m, s in SPECS])
def test_kernel_compiles_without_spills(spec, arch):
    from fastconv.testing import ptx_report as report
    module, spec = spec
    row = report.measure(spec, arch)
    # both builds: the LTO one numba-cuda runs where nvJitLink is present, and plain PTX
    for prefix in ("", "ptx_"):
        assert row[prefix + "spill_stores"] == 0 and row[prefix + "spill_loads"] == 0, \
            f"{module}.{spec.name} spills on {arch} ({prefix or row['build']} build): {row}"
        assert row[prefix + "stack"] == 0, \
            f"{module}.{spec.name} uses a local stack frame on {arch}: {row}"
    assert row["blocks_per_sm"] >= 1, \
        f"{module}.{spec.name}: a block of {spec.threads} threads cannot launch on {arch}: {row}"


def test_no_float64_in_the_ptx():
    """Python float literals and float64 arguments compile to f64 instructions."""
    _need_toolchain()
    from fastconv.testing import ptx_report as report
    offenders = []
    for module, spec in SPECS:
        ptx = report.compile_spec(spec, "sm_90")
        if ".f64" in ptx:
            offenders.append(f"{module}.{spec.name}")
    assert offenders == [], f"float64 arithmetic in: {', '.join(offenders)}"


def _kernels_defined_in(path):
    """Names of module-level functions decorated with a non-device @cuda.jit."""
    names = []
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for dec in node.decorator_list:
            call = dec if isinstance(dec, ast.Call) else None
            target = call.func if call else dec
            if ast.unparse(target) not in ("cuda.jit", "numba.cuda.jit", "jit"):
                continue
            device = call is not None and any(
                kw.arg == "device" and ast.unparse(kw.value) == "True" for kw in call.keywords)
            if not device:
                names.append(node.name)
    return names


def test_every_kernel_is_declared_in_KERNELS():
    """A @cuda.jit kernel missing from its module's KERNELS would escape the PTX checks."""
    import importlib
    missing = []
    for path in sorted(CUDA_DIR.glob("*.py")):
        defined = _kernels_defined_in(path)
        if not defined:
            continue
        module = importlib.import_module(f"fastconv.kernels.cuda.{path.stem}")
        declared = {id(s.kernel) for s in getattr(module, "KERNELS", [])}
        missing += [f"{path.name}:{name}" for name in defined
                    if id(getattr(module, name)) not in declared]
    assert missing == [], f"kernels not listed in their module's KERNELS: {missing}"


def test_kernel_finder_sees_decorator_forms(tmp_path):
    src = tmp_path / "k.py"
    src.write_text("from numba import cuda\n"
                   "@cuda.jit\ndef a(x):\n    pass\n"
                   "@cuda.jit(device=True)\ndef b(x):\n    return x\n"
                   "@cuda.jit('void(float32[::1])')\ndef c(x):\n    pass\n"
                   "def d(x):\n    pass\n")
    assert _kernels_defined_in(src) == ["a", "c"]


# -- the report's arithmetic, against hand-computed cases --------------------------------

@pytest.mark.parametrize("threads, regs, smem, blocks, occ, limiter", [
    # 32 regs: 1024 regs/warp -> 64 warps by registers; 8 warps/block -> 8 blocks (threads)
    (256, 32, 0, 8, 1.0, "threads"),
    # 64 regs: 2048 regs/warp -> 32 warps -> 4 blocks of 8 warps = 32/64
    (256, 64, 0, 4, 0.5, "registers"),
    # 41 regs -> 1312 rounded up to 1536/warp; 65536/1536 = 42 -> 40 warps (groups of 4)
    # -> 10 blocks of 4 warps = 40/64
    (128, 41, 512, 10, 40 / 64, "registers"),
    # 48 KiB smem: (49152 + 1024 reserved) -> floor(233472 / 50176) = 4 blocks of 4 warps
    (128, 32, 48 * 1024, 4, 16 / 64, "shared memory"),
    # 1 warp blocks: the 32 blocks/SM limit leaves half the warps idle
    (32, 16, 0, 32, 0.5, "blocks"),
    # 255 regs: 8160 -> 8192/warp -> 8 warps; a block of 256 threads needs 8 warps -> 1 block
    (256, 255, 0, 1, 8 / 64, "registers"),
    # 48 threads round up to 2 warps; 32 blocks -> 64 warps = full (a tie reads "threads")
    (48, 20, 0, 32, 1.0, "threads"),
])
def test_occupancy_hand_computed(threads, regs, smem, blocks, occ, limiter):
    from fastconv.testing.ptx_report import occupancy
    got_blocks, got_occ, got_limiter = occupancy(threads, regs, smem)
    assert (got_blocks, got_limiter) == (blocks, limiter)
    assert got_occ == pytest.approx(occ)


@pytest.mark.parametrize("threads, regs, smem, reason", [
    (1024, 72, 0, "registers per block"),      # 72*32 = 2304/warp * 32 warps > 65536
    (128, 32, 228 * 1024, "shared memory per block"),
    (2048, 16, 0, "2048 threads per block"),
    (128, 256, 0, "256 registers per thread"),
])
def test_occupancy_of_blocks_that_cannot_launch(threads, regs, smem, reason):
    from fastconv.testing.ptx_report import occupancy
    assert occupancy(threads, regs, smem) == (0, 0.0, reason)


def test_parse_ptxas_output():
    from fastconv.testing.ptx_report import parse_ptxas
    text = """ptxas info    : 8 bytes gmem
ptxas info    : Compiling entry function '_ZN5k1' for 'sm_90'
ptxas info    : Function properties for _ZN5k1
    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem, 380 bytes cmem[0]
ptxas info    : Compile time = 2.882 ms
ptxas info    : Compiling entry function '_ZN5k2' for 'sm_90'
ptxas info    : Function properties for _ZN5k2
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers
"""
    assert parse_ptxas(text) == {
        "_ZN5k1": dict(registers=40, barriers=1, smem=2048, stack=16, spill_stores=8,
                       spill_loads=4),
        "_ZN5k2": dict(registers=12, barriers=0, smem=0, stack=0, spill_stores=0,
                       spill_loads=0),
    }


# A hand-written listing: one straight-line block with 4 FMAs (no loop), a loop whose
# latch branches elsewhere, the hot loop $L__BB0_3 (3 fma.rn.f32 among 8 instructions;
# the .pragma, the comment and the label do not count) and a cooler loop with 1 FMA.
PTX_SNIPPET = """
.visible .entry k(.param .u64 k_param_0)
{
	.reg .f32 	%f<20>;
	.reg .pred 	%p<4>;
	fma.rn.f32 	%f1, %f2, %f3, %f1;
	fma.rn.f32 	%f1, %f2, %f3, %f1;
	fma.rn.f32 	%f1, %f2, %f3, %f1;
	fma.rn.f32 	%f1, %f2, %f3, %f1;
	@%p1 bra 	$L__BB0_5;
$L__BB0_2:
	fma.rn.f32 	%f4, %f2, %f3, %f4;
	fma.rn.f32 	%f4, %f2, %f3, %f4;
	@%p2 bra 	$L__BB0_5;
$L__BB0_3:
	.pragma "nounroll";
	// a comment with fma.rn.f32 in it
	ld.shared.v4.f32 	{%f5, %f6, %f7, %f8}, [%r1];
	fma.rn.f32 	%f9, %f5, %f6, %f9;
	fma.rn.f32 	%f10, %f7, %f8, %f10;
	add.s32 	%r1, %r1, 16;
	fma.rn.ftz.f32 	%f11, %f7, %f8, %f11;
	fma.rn.f32 	%f11, %f7, %f8, %f11;
	setp.lt.u32 	%p3, %r1, %r2;
	@%p3 bra 	$L__BB0_3;
$L__BB0_4:
	fma.rn.f32 	%f12, %f7, %f8, %f12;
	add.s32 	%r3, %r3, 1;
	@!%p3 bra.uni 	$L__BB0_4;
$L__BB0_5:
	ret;
}
"""


def test_fma_share_of_a_hand_written_loop():
    from fastconv.testing.ptx_report import basic_blocks, fma_share, hottest_loop
    loop = hottest_loop(PTX_SNIPPET)
    assert (loop.label, loop.fma, loop.instructions) == ("$L__BB0_3", 3, 8)
    assert fma_share(PTX_SNIPPET) == pytest.approx(3 / 8)
    labels = [b[0] for b in basic_blocks(PTX_SNIPPET)]
    assert labels == [(), ("$L__BB0_2",), ("$L__BB0_3",), ("$L__BB0_4",), ("$L__BB0_5",)]
    # without the hot loop's back-edge the 1-FMA loop is the hottest; with no loop, None
    no_hot = PTX_SNIPPET.replace("@%p3 bra \t$L__BB0_3;", "@%p3 bra \t$L__BB0_5;")
    assert fma_share(no_hot) == pytest.approx(1 / 3)
    assert fma_share(no_hot.replace("bra.uni \t$L__BB0_4", "bra.uni \t$L__BB0_5")) is None


def test_fma_share_of_a_compiled_kernel():
    """A dot-product loop unrolled 4 times by hand: the hottest loop is found in the real
    PTX and its counts agree with the listing between its label and its back-edge."""
    _need_toolchain()
    from numba import cuda, float32, int32
    from fastconv.testing.ptx_report import hottest_loop

    def dot4(a, b, out, n):
        acc = float32(0.0)
        k = int32(cuda.threadIdx.x) * 4
        while k + 4 <= n:
            acc += a[k] * b[k] + a[k + 1] * b[k + 1]
            acc += a[k + 2] * b[k + 2] + a[k + 3] * b[k + 3]
            k += 4 * 32
        out[cuda.threadIdx.x] = acc

    F1 = float32[::1]
    ptx, _ = cuda.compile_ptx(dot4, (F1, F1, F1, int32), cc=(9, 0))
    loop = hottest_loop(ptx)
    assert loop is not None and loop.fma >= 3, ptx
    body = ptx.split(loop.label + ":", 1)[1].split(f"bra \t{loop.label};", 1)[0]
    lines = [ln.strip() for ln in body.splitlines()]
    instrs = [ln for ln in lines if ln.endswith(";") and not ln.startswith((".", "//"))]
    assert loop.fma == sum(ln.startswith("fma.rn.f32") for ln in instrs)
    assert loop.instructions == len(instrs) + 1      # + the back-edge itself
    assert 0 < loop.share < 1


def test_report_command_prints_every_kernel(capsys):
    _need_toolchain()
    from fastconv.testing import ptx_report as report
    assert report.main([]) == 0
    out = capsys.readouterr().out
    assert "FMA share" in out and "registers (compile_ptx)" in out
    assert out.startswith("registers, spills and occupancy: ")
    for module, spec in SPECS:
        assert f"| {module} | {spec.name} | {spec.threads} |" in out
    assert report.main(["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["module"], r["kernel"]) for r in rows] == [(m, s.name) for m, s in SPECS]
    assert {"fma_share", "loop_fma", "ptx_registers", "build"} <= set(rows[0])


def test_report_entry_point_is_the_testing_module():
    """`python -m fastconv.kernels.cuda.report` keeps working after the move."""
    proc = subprocess.run([sys.executable, "-m", "fastconv.kernels.cuda.report", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--json" in proc.stdout, proc.stderr
    from fastconv.kernels.cuda import report
    from fastconv.testing import ptx_report
    assert report.main is ptx_report.main



# -- conv2d_dw_tile (issue 19): a register-blocked GEMM, not an issue-bound loop ---------

def _loop_instructions(ptx, loop):
    """The instructions of `loop` (a ptx_report.Loop) in the listing."""
    from fastconv.testing.ptx_report import basic_blocks
    return next(instrs for labels, instrs in basic_blocks(ptx) if loop.label in labels)


def _dw_spec(name="conv2d_dw_tile"):
    from fastconv.kernels.cuda import conv2d
    return next(s for s in conv2d.KERNELS if s.name == name)


@pytest.mark.parametrize("arch", ARCHS)
def test_dw_tile_hottest_loop_is_fma_bound(arch):
    """Issue 19's target for the conv GEMM kernels: FMA share >= 0.6 (the 1x4 thread tile
    had 16 FMAs in 117 instructions, 0.14), fed by 128-bit shared loads, no local memory."""
    _need_toolchain()
    from fastconv.testing import ptx_report as report
    ptx = report.compile_spec(_dw_spec(), arch)
    loop = report.hottest_loop(ptx)
    instrs = _loop_instructions(ptx, loop)
    assert loop.share >= 0.6, (loop, instrs)
    loads = [i for i in instrs if i.startswith("ld.shared")]
    assert loads and all(i.startswith("ld.shared.v4.f32") for i in loads), loads
    assert ".local" not in ptx


@pytest.mark.parametrize("arch", ARCHS)
def test_dw_tile_fits_its_launch_bounds(arch):
    """Built as it runs (with its launch_bounds), conv2d_dw_tile has no spills and fits
    DW_MIN_BLOCKS blocks of DW_NT threads per SM (6 x 4 warps: 37.5% occupancy)."""
    _need_toolchain()
    from numba import cuda
    from fastconv.kernels.cuda import conv2d
    from fastconv.testing import ptx_report as report
    spec = _dw_spec()
    bounds = (conv2d.DW_MAX_THREADS, conv2d.DW_MIN_BLOCKS)
    assert spec.threads <= bounds[0]
    ptx, _ = cuda.compile_ptx(spec.kernel.py_func, spec.signature,
                              cc=(int(arch[3:-1]), int(arch[-1])), launch_bounds=bounds)
    (info,) = report.ptxas_info(ptx, arch)[0].values()
    assert info["spill_stores"] == info["spill_loads"] == info["stack"] == 0, info
    blocks, _, _ = report.occupancy(spec.threads, info["registers"], info["smem"],
                                    report.LIMITS[arch])
    assert blocks >= bounds[1], info


# -- static checks for what neither the simulator nor ptxas reports ----------------------
# The simulator forgives an early return before cuda.syncthreads() and a barrier that
# only some threads reach (both undefined on hardware), and aliases two shared arrays
# declared on one source line. These are checked on the source of every @cuda.jit
# function (kernels and device functions) in fastconv/kernels/cuda.

_SYNC_ATTRS = {"syncthreads", "syncthreads_count", "syncthreads_and", "syncthreads_or"}
_THREAD_VARYING = {"threadIdx", "grid", "laneid"}


def _cuda_functions(tree):
    """(FunctionDef, is_kernel) for each module-level @cuda.jit function."""
    found = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for dec in node.decorator_list:
            call = dec if isinstance(dec, ast.Call) else None
            if ast.unparse(call.func if call else dec) in ("cuda.jit", "numba.cuda.jit", "jit"):
                device = call is not None and any(
                    kw.arg == "device" and ast.unparse(kw.value) == "True"
                    for kw in call.keywords)
                found.append((node, not device))
    return found


def _called_names(node):
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            f = sub.func
            if isinstance(f, ast.Attribute):
                yield f.attr
            elif isinstance(f, ast.Name):
                yield f.id


def _syncing_names(trees):
    """Names of @cuda.jit functions that reach a barrier, directly or through others."""
    funcs = {fn.name: fn for tree in trees for fn, _ in _cuda_functions(tree)}
    syncing = set()
    changed = True
    while changed:
        changed = False
        for name, fn in funcs.items():
            if name not in syncing and any(c in _SYNC_ATTRS or c in syncing
                                           for c in _called_names(fn)):
                syncing.add(name)
                changed = True
    return syncing


def _mentions(node, names):
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id in names:
            return True
        if isinstance(sub, ast.Attribute) and sub.attr in _THREAD_VARYING:
            return True
    return False


def _thread_varying_names(fn):
    """Local names whose value can differ between the threads of a block."""
    tainted = set()
    changed = True
    while changed:
        changed = False
        for sub in ast.walk(fn):
            targets, value = [], None
            if isinstance(sub, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                value = sub.value
            elif isinstance(sub, ast.For):
                targets, value = [sub.target], sub.iter
            if value is None or not _mentions(value, tainted):
                continue
            for t in targets:
                # names bound by the assignment (a, or a, b = ...), not the indices of a
                # subscripted store (y[i] = ... binds nothing)
                bound = t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t]
                for n in bound:
                    if isinstance(n, ast.Name) and n.id not in tainted:
                        tainted.add(n.id)
                        changed = True
    return tainted


def _barrier_problems(source):
    """What is wrong with the barriers and shared arrays in `source` (a module's text)."""
    tree = ast.parse(source)
    syncing = _syncing_names([tree] + [ast.parse(p.read_text())
                                       for p in sorted(CUDA_DIR.glob("*.py"))])
    problems = []
    for fn, is_kernel in _cuda_functions(tree):
        lines = [sub.lineno for sub in ast.walk(fn) if isinstance(sub, ast.Call)
                 and ast.unparse(sub.func).endswith("shared.array")]
        problems += [f"{fn.name}: two cuda.shared.array calls on line {n} (the simulator "
                     f"aliases them)" for n in sorted(set(lines)) if lines.count(n) > 1]
        if fn.name not in syncing:
            continue
        last = fn.body[-1]
        for sub in ast.walk(fn):
            if isinstance(sub, ast.Return) and (is_kernel or sub is not last):
                problems.append(f"{fn.name}: return on line {sub.lineno} in a function that "
                                f"synchronises (threads that leave miss the barrier)")
        varying = _thread_varying_names(fn)
        for sub in ast.walk(fn):
            if isinstance(sub, (ast.If, ast.While)):
                cond = sub.test
            elif isinstance(sub, ast.For):
                cond = sub.iter
            else:
                continue
            body = sub.body + sub.orelse
            if _mentions(cond, varying) and any(
                    c in _SYNC_ATTRS or c in syncing
                    for stmt in body for c in _called_names(stmt)):
                problems.append(f"{fn.name}: barrier under thread-dependent control flow "
                                f"(line {sub.lineno}: {ast.unparse(cond)})")
    return problems


def test_barriers_are_reached_by_every_thread_and_shared_arrays_are_distinct():
    problems = []
    for path in sorted(CUDA_DIR.glob("*.py")):
        problems += [f"{path.name}: {p}" for p in _barrier_problems(path.read_text())]
    assert problems == [], "\n".join(problems)


def test_barrier_check_finds_the_hazards():
    bad = '''
from numba import cuda, float32

@cuda.jit
def early_exit(x):
    i = cuda.grid(1)
    if i >= x.size:
        return
    cuda.syncthreads()

@cuda.jit
def divergent(x):
    t = cuda.threadIdx.x
    k = t * 2
    if k < 8:
        cuda.syncthreads()
    for j in range(t, 10, 32):
        helper(x)

@cuda.jit(device=True)
def helper(x):
    cuda.syncthreads()
    return x[0]

@cuda.jit
def aliased(x):
    a = cuda.shared.array(4, float32); b = cuda.shared.array(4, float32)
    x[0] = a[0] + b[0]

@cuda.jit
def fine(x, n):
    sh = cuda.shared.array(32, float32)
    for r in range(cuda.blockIdx.x, n, cuda.gridDim.x):
        sh[cuda.threadIdx.x] = x[r]
        cuda.syncthreads()
    z = cuda.blockIdx.z
    t = cuda.threadIdx.x
    x[z * 32 + t] = sh[0]          # a store indexed by z leaves z block-uniform
    for m in range(z, n, 4):
        cuda.syncthreads()
'''
    problems = _barrier_problems(bad)
    assert any(p.startswith("early_exit: return") for p in problems)
    assert any(p.startswith("divergent: barrier") and "k < 8" in p for p in problems)
    assert any(p.startswith("divergent: barrier") and "range(t, 10, 32)" in p for p in problems)
    assert any(p.startswith("aliased: two cuda.shared.array") for p in problems)
    assert not any(p.startswith(("fine", "helper")) for p in problems), problems


def test_report_without_a_toolchain_says_why(monkeypatch, capsys):
    report = pytest.importorskip("fastconv.testing.ptx_report")
    monkeypatch.setattr(report, "toolchain_problem", lambda: "no ptxas (test)")
    assert report.main([]) == 2
    assert "cannot build the report: no ptxas (test)" in capsys.readouterr().err


# -- the FMA share of the hottest loop of the conv GEMM kernels (issue 19) -------------

@pytest.mark.parametrize("name", ["conv2d_fwd_tile", "conv2d_dx_tile"])
def test_conv_gemm_hottest_loop_is_mostly_fma(name):
    """Issue 19's target for the register-blocked conv GEMM kernels: >= 0.6 of the hottest
    loop's PTX instructions are fma.rn.f32, on sm_90 and sm_80."""
    _need_toolchain()
    from fastconv.kernels.cuda import conv2d
    from fastconv.testing import ptx_report as report
    [spec] = [s for s in conv2d.KERNELS if s.name == name]
    for arch in ARCHS:
        loop = report.hottest_loop(report.compile_spec(spec, arch))
        assert loop.fma >= 32 and loop.share >= 0.6, (name, arch, loop)

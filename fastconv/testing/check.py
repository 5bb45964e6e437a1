"""The engine of `fastconv check` and `fastconv.check()`: prove a backend's kernels
against the NumPy reference here. (It lives in fastconv.testing, not at
fastconv.check, so that importing it never replaces the function `fastconv.check`.)

For every op of the kernel contract (fused ops too, where the backend has
them) it draws fresh random inputs from the op table (fastconv.kernels.opinfo), runs
the backend and the reference, and reports per op the shapes, the errors, the
tolerance, pass/fail and the time of each side.

Tolerance: |backend - reference| <= atol + rtol * |reference| elementwise with
rtol 1e-4, atol 1e-5 at 'quick' shapes. At 'seed' shapes the weight gradients
are float32 sums of up to ~175,000 products, whose rounding grows with the
size of the values summed, so atol there is 1e-5 times the RMS of the
reference output (at least 1e-5). Integer outputs (argmax) must match exactly.
"""
from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np

from .. import kernels
from .._version import __version__
from ..kernels.opinfo import samples
from .compare import compare_to_reference

RTOL = 1e-4
ATOL = 1e-5
DEVICES = ("cpu", "cuda")


def _shape_text(args):
    parts = []
    for a in args:
        if isinstance(a, np.ndarray):
            parts.append("x".join(map(str, a.shape)) or "scalar")
        elif isinstance(a, tuple) and all(isinstance(v, int) for v in a):
            parts.append("x".join(map(str, a)))
    return " ".join(parts)


def _atol_for(sample, shapes):
    if shapes != "seed":
        return ATOL
    ref = getattr(kernels.get("reference"), sample.op)
    import copy
    out = ref(*copy.deepcopy(sample.args), **copy.deepcopy(sample.kwargs))
    leaves = out if isinstance(out, tuple) else (out,)
    rms = max((float(np.sqrt(np.mean(np.square(v, dtype=np.float64))))
               for v in leaves if isinstance(v, np.ndarray) and v.dtype.kind == "f"),
              default=1.0)
    return ATOL * max(1.0, rms)


def _check_backend(name, shapes, seed, progress):
    module = kernels.get(name)
    rows = []
    for sample in samples(shapes, seed):
        if not hasattr(module, sample.op):  # a fused or optional op the backend leaves out
            assert sample.op in kernels.FUSED + kernels.OPTIONAL, sample.op
            continue
        atol = _atol_for(sample, shapes)
        cmp = compare_to_reference(module, sample.op, *sample.args, rtol=RTOL, atol=atol,
                                   warmup=True, **sample.kwargs)
        row = {
            "device": name, "op": sample.op, "case": sample.label,
            "shapes": _shape_text(sample.args), "max_abs_error": cmp.max_abs,
            "rel_error": cmp.rel, "rtol": RTOL, "atol": atol, "passed": cmp.passed,
            "seconds_backend": cmp.seconds_backend,
            "seconds_reference": cmp.seconds_reference, "message": cmp.message,
        }
        rows.append(row)
        if progress:
            progress(row)
    return rows


def environment(devices=()):
    """Versions and hardware, for a bug report."""
    from importlib import metadata

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    import numba

    from .. import _vector_width
    env = {
        "fastconv": __version__, "python": sys.version.split()[0], "numpy": np.__version__,
        "numba": numba.__version__, "numba-cuda": version("numba-cuda"),
        "platform": platform.platform(), "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(), "numba_threads": numba.get_num_threads(),
        "numba_512_bit_vectors": _vector_width.ENABLED,
    }
    if "cuda" in devices:
        env["cuda"] = _cuda_info()
    return env


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cuda_info():
    try:
        from numba import cuda
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        info = {"device": name, "compute_capability": list(dev.compute_capability)}
        try:
            info["driver_version"] = ".".join(map(str, cuda.cudadrv.driver.driver.get_version()))
        except Exception as exc:  # the simulator has no driver
            info["driver_version"] = f"unknown ({exc.__class__.__name__})"
        return info
    except Exception as exc:
        return {"error": str(exc)}


def check(device="cpu", shapes="quick", seed=0, progress=None):
    """Check `device` ('cpu', 'cuda' or 'all') against the reference.

    Returns a report dict: {"passed", "results": [row per op and case],
    "skipped": {device: reason}, "environment": {...}, ...}. An explicitly
    requested device that cannot run here raises kernels.BackendUnavailable;
    'all' checks what is available and lists the rest under "skipped".
    """
    if device not in DEVICES + ("all",):
        raise ValueError(f"check: device must be 'cpu', 'cuda' or 'all', got {device!r}")
    if shapes not in ("quick", "seed"):
        raise ValueError(f"check: shapes must be 'quick' or 'seed', got {shapes!r}")
    wanted = DEVICES if device == "all" else (device,)
    results, skipped, checked = [], {}, []
    t0 = time.perf_counter()
    for name in wanted:
        try:
            kernels.get(name)
        except kernels.BackendUnavailable as exc:
            if device != "all":
                raise
            skipped[name] = str(exc)
            continue
        checked.append(name)
        results.extend(_check_backend(name, shapes, seed, progress))
    return {
        "passed": bool(results) and all(r["passed"] for r in results),
        "devices": checked, "skipped": skipped, "shapes": shapes, "seed": seed,
        "seconds": time.perf_counter() - t0, "results": results,
        "environment": environment(checked),
    }


def format_row(row):
    status = "ok" if row["passed"] else "FAIL"
    return (f"{row['device']:<5} {row['op']:<29} {row['case'][:44]:<44} "
            f"{row['max_abs_error']:>9.2e} {row['rel_error']:>9.2e} "
            f"{row['seconds_backend'] * 1e3:>9.2f} {row['seconds_reference'] * 1e3:>9.2f}  {status}")


HEADER = (f"{'dev':<5} {'op':<29} {'case':<44} {'max abs':>9} {'rel err':>9} "
          f"{'dev ms':>9} {'ref ms':>9}  result")

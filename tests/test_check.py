"""`fastconv check`: the installed proof of the kernels against the reference."""
import json

import pytest

from fastconv import kernels
from fastconv.cli import main

from .backends import available_backends

FOUND, MISSING = available_backends()
needs_cpu = pytest.mark.skipif("cpu" not in FOUND, reason=MISSING.get("cpu", ""))


@needs_cpu
def test_check_cpu_quick_passes_and_prints_every_op(capsys):
    assert main(["check", "--device", "cpu", "--shapes", "quick"]) == 0
    out = capsys.readouterr().out
    for op in kernels.CONTRACT:
        assert f"cpu   {op} " in out, op
    assert " 0 failed" in out


@needs_cpu
def test_a_broken_kernel_fails_with_its_name(capsys, monkeypatch):
    import numpy as np
    cpu = kernels.get("cpu")
    real = cpu.dense_backward

    def broken(*args, **kwargs):
        dx, dw, db = real(*args, **kwargs)
        return dx, dw, db + np.float32(0.01)
    monkeypatch.setattr(cpu, "dense_backward", broken)
    assert main(["check", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "FAIL cpu.dense_backward" in out and "out[2]" in out


@needs_cpu
def test_json_report_parses_and_has_the_environment(capsys):
    assert main(["check", "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    env = report["environment"]
    for key in ("fastconv", "numba", "numba-cuda", "numpy", "cpu", "numba_threads"):
        assert key in env
    row = report["results"][0]
    for key in ("op", "shapes", "max_abs_error", "rel_error", "rtol", "atol", "passed",
                "seconds_backend", "seconds_reference"):
        assert key in row
    assert report["passed"] is True


@pytest.mark.skipif("cuda" in FOUND, reason="a CUDA device is present")
def test_cuda_without_a_device_says_so(capsys):
    assert main(["check", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "cuda" in err and "cannot run here" in err


def test_all_lists_what_it_skipped(capsys):
    code = main(["check", "--device", "all"])
    out = capsys.readouterr().out
    for name, why in MISSING.items():
        if name != "reference":
            assert f"skipped {name}: {why}" in out
    assert code == (0 if "cpu" in FOUND or "cuda" in FOUND else 1)


@needs_cpu
def test_fastconv_check_is_the_function_on_every_call():
    """The check's module used to be `fastconv.check`: its first import replaced the
    function with the module, so a second `fastconv.check()` raised TypeError."""
    import importlib

    import fastconv
    reports = [fastconv.check("cpu"), fastconv.check("cpu")]
    importlib.import_module("fastconv.testing.check")
    reports.append(fastconv.check("cpu"))
    assert callable(fastconv.check)
    for report in reports:
        assert report["passed"] and report["results"]


def test_the_check_module_and_the_check_function_are_two_names():
    """fastconv.check is the function, fastconv.testing.check the engine's module. The
    testing package exports no function `check` for an import of the submodule to
    overwrite (or to hide the submodule behind), and importing the submodule leaves the
    function fastconv.check a function (the old bug turned it into a module)."""
    import importlib
    import inspect
    import types

    import fastconv
    import fastconv.testing
    assert "check" not in fastconv.testing.__all__
    engine = importlib.import_module("fastconv.testing.check")
    assert isinstance(fastconv.testing.check, types.ModuleType)
    assert fastconv.testing.check is engine
    assert inspect.isfunction(engine.check)
    assert inspect.isfunction(fastconv.check) and fastconv.check.__module__ == "fastconv"

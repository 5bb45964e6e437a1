"""`fastconv bench`: the short benchmark runs and reports (timings are never asserted)."""
import json

import pytest

from fastconv import kernels
from fastconv.cli.bench import FUSED_OPS, UNFUSED_OPS, model_ops
from fastconv.cli import main

from .backends import available_backends

FOUND, MISSING = available_backends()


def test_bench_reference_model_step(capsys):
    assert main(["bench", "--device", "reference", "--batch-size", "1", "--steps", "1",
                 "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["kernels"] == []                 # nothing to compare the reference with
    (row,) = report["model"]
    assert row["device"] == "reference" and row["batch"] == 1
    assert row["train_images_per_s"] == pytest.approx(1 / row["train_step_s"])
    assert "train img/s" in captured.err            # the table goes to stderr with --json


def test_bench_times_the_ops_the_model_runs():
    assert model_ops(kernels.get("reference"))[:2] == FUSED_OPS

    class Unfused:
        pass
    for op in UNFUSED_OPS:
        setattr(Unfused, op, None)
    assert model_ops(Unfused)[:4] == UNFUSED_OPS


@pytest.mark.skipif("cpu" not in FOUND, reason=MISSING.get("cpu", ""))
def test_bench_cpu_kernel_table(capsys, monkeypatch):
    from fastconv.kernels import opinfo
    quick = opinfo.samples
    # the op table's small shapes: the seed shapes make the reference side take ~30 s
    monkeypatch.setattr(opinfo, "samples", lambda shapes, seed: quick("quick", seed))
    assert main(["bench", "--device", "cpu", "--skip-reference", "--batch-size", "2",
                 "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "cpu vs reference" not in out            # --skip-reference
    for op in model_ops(kernels.get("cpu")):
        assert op in out, op
    rows = [line.split() for line in out.splitlines() if line.startswith(model_ops(
        kernels.get("cpu")))]
    assert rows and all(float(r[-1]) < 1e-4 for r in rows)      # normwise relative error

"""bench/gpu_check.sh, the first-GPU-run script (issue 19), checked without a GPU.

A GPU machine receives the checkout, so the script lives in bench/; it reads a few
internals of fastconv (the plan's steps and their buffers, the report's kernel list, the
test files it selects, the `fastconv check --json` fields, the ops its sanitizer case
calls). Here: it parses (bash -n), its embedded Python parses, every file and internal it
names exists, and its Python runs against the reference engine where it can (the step
FLOP count over a real plan; the sanitizer case with the reference in cuda's place).
"""
import ast
import pathlib
import re
import shutil
import subprocess
import types

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _text():
    return SCRIPT.read_text()


def _heredoc(name):
    """The body of the `cat >"$WORK/<name>" <<'EOF'` block."""
    m = re.search(r'cat >"\$WORK/' + re.escape(name) + r"\" <<'EOF'\n(.*?)\nEOF\n", _text(), re.S)
    assert m, f"bench/gpu_check.sh has no heredoc for {name}"
    return m.group(1)


def _python_blocks():
    """Every <<'EOF' block of the script (all are Python)."""
    return re.findall(r"<<'EOF'[^\n]*\n(.*?)\nEOF\n", _text(), re.S)


def test_script_exists_and_parses():
    assert SCRIPT.is_file()
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash here")
    proc = subprocess.run([bash, "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_embedded_python_parses():
    blocks = _python_blocks()
    assert len(blocks) == 4, len(blocks)      # env probe, check summary, bench, sanitizer case
    for block in blocks:
        ast.parse(block)


def test_the_test_files_it_selects_exist():
    m = re.search(r"PT_FILES=\((.*?)\)", _text(), re.S)
    files = m.group(1).split()
    assert files and all((ROOT / f).is_file() for f in files), files


def test_the_check_report_has_the_fields_it_reads():
    from fastconv.testing import check
    src = pathlib.Path(check.__file__).read_text()
    summary = _python_blocks()[1]
    for key in set(re.findall(r'r\["(\w+)"\]', summary)) | {"passed", "seconds", "results",
                                                            "environment"}:
        assert f'"{key}"' in src, key


def _bench_module():
    mod = types.ModuleType("bench_seed_gpu")
    exec(compile(_heredoc("bench_seed_gpu.py"), "bench_seed_gpu.py", "exec"), mod.__dict__)
    return mod


def test_bench_reads_the_plan_as_it_is():
    """The bench's internals on a small seed-shaped model on the reference engine: the
    plan, its steps and buffers, the train step, the inference plan, the FLOP count."""
    import fastconv
    bench = _bench_module()
    n = 2
    model = fastconv.small_convnet(input_shape=(40, 40, 3), device="reference", seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((n, 40, 40, 3), dtype=np.float32)
    y = (rng.random(n) > 0.5).astype(np.float32)
    model.train_on_batch(x, y)
    plan = model._plan("train", n)
    plan.load_slice(x, model._prep_labels(y, n), 0, n)
    loss, _ = model._train_step(plan)
    assert np.isfinite(loss)
    assert "conv2d_relu_maxpool" in plan.kinds and "DropoutStep" in plan.kinds, plan.kinds
    kinds = {id(s): k for k, s in zip(plan.kinds, plan.steps)}
    assert all(id(s) in kinds for s in plan.backward_steps)
    assert callable(plan.compute_loss) and callable(model.optimizer.apply)
    flops = [bench.step_flops(s) for s in plan.steps]
    conv = [f for s, f in zip(plan.steps, flops) if type(s).__name__ == "ConvStep"]
    assert len(conv) == 3 and all(fw > 0 and bw > 0 for fw, bw in conv), flops
    # the first conv (no dx): forward 2 * N * (38 * 38 pixels under the 3x3 pools: 36 * 36)
    # * 27 * 32, backward (dw only) 2 * N * 38 * 38 * 27 * 32
    assert conv[0] == (2 * n * 36 * 36 * 27 * 32, 2 * n * 38 * 38 * 27 * 32)
    iplan = model._plan("infer", n)
    iplan.load_slice(x, None, 0, n)
    iplan.forward()
    assert np.asarray(iplan.predict_out()).shape[0] == n
    train_f, fwd_f = bench.flops_per_image()
    assert 0 < fwd_f < train_f


def test_the_kernels_it_inspects_exist():
    pytest.importorskip("numba.cuda")
    from fastconv.kernels.cuda import report
    names = {spec.name for _, spec in report.all_specs()}
    wanted = set(re.findall(r'"(conv2d_\w+_(?:tile|sum))"', _heredoc("bench_seed_gpu.py")))
    assert wanted and wanted <= names, wanted - names
    assert callable(report.occupancy)


def test_sanitizer_case_runs_on_the_reference(monkeypatch):
    """The sanitizer case's op calls, with the reference engine standing in for cuda
    (same names, arguments and results; only the device is missing)."""
    from fastconv import kernels
    ref = kernels.get("reference")
    stand_in = types.SimpleNamespace(**{k: getattr(ref, k) for k in dir(ref)
                                        if not k.startswith("__")})
    stand_in.synchronize = lambda: None
    monkeypatch.setattr(kernels, "get", lambda name: stand_in)
    exec(compile(_heredoc("sanitize_case.py"), "sanitize_case.py", "exec"), {})

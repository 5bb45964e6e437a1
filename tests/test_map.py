"""docs/map.md stays true: every op of the contract has a row, its file defines it in
every backend, the op table has its entry, and the tests and benchmarks named beside it
exist and name the op."""
import functools
import re
from pathlib import Path

import pytest

from fastconv import kernels
from fastconv.kernels import opinfo

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "fastconv" / "kernels"


def _names(cell):
    return re.findall(r"`([^`]+)`", cell)


def _rows():
    """{op: (file, [test files], [bench files])} from the map's table."""
    rows = {}
    for line in (ROOT / "docs" / "map.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        op, file, tests, benches = cells
        assert op.strip("`") not in rows, f"docs/map.md lists {op} twice"
        rows[op.strip("`")] = (file.strip("`"), _names(tests), _names(benches))
    return rows


ROWS = _rows()
OPS = kernels.CONTRACT + kernels.FUSED + kernels.OPTIONAL


def test_every_contract_op_has_one_row_and_no_row_is_stale():
    assert sorted(ROWS) == sorted(OPS)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_the_ops_file_defines_it_in_every_backend(op, backend):
    path = KERNELS / backend / ROWS[op][0]
    if op in kernels.OPTIONAL and not path.is_file():
        pytest.skip(f"{backend} has no {op} yet (an optional op)")
    assert path.is_file(), f"docs/map.md: {op} in {path.relative_to(ROOT)}, which does not exist"
    assert re.search(rf"^def {op}\(", path.read_text(), re.M), \
        f"{path.relative_to(ROOT)} does not define {op}"


@functools.lru_cache(maxsize=None)
def _table_ops(kind):
    if kind == "errors":
        return {e.sample.op for e in opinfo.error_inputs()}
    return {s.op for s in opinfo.samples(kind)}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("kind", ["quick", "seed", "errors"])
def test_the_op_table_has_samples_and_error_inputs(op, kind):
    if kind == "seed" and op in (kernels.GLOBALPOOL + kernels.RESCALE + kernels.BATCHNORM
                                 + kernels.FUSED_KINDS["batchnorm_relu"]):
        pytest.skip("the seed model has no global pooling, rescaling or batchnorm")
    assert op in _table_ops(kind), f"kernels/opinfo.py has no {kind} entry for {op}"


@pytest.mark.parametrize("op", OPS)
def test_the_named_tests_and_benchmarks_exist_and_name_the_op(op):
    _, tests, benches = ROWS[op]
    for folder, files in (("tests", tests + ["test_opinfo.py"]),
                          ("bench", benches + ["test_ops.py"])):
        for name in files:
            path = ROOT / folder / name
            assert path.is_file(), f"docs/map.md names {folder}/{name}, which does not exist"
            if name not in ("test_opinfo.py", "test_ops.py"):  # these take every op from the table
                assert re.search(rf"\b{op}\b", path.read_text()), f"{folder}/{name} never names {op}"

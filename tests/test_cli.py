import subprocess
import sys

import fastconv
from fastconv.cli import main


def test_version_and_help(capsys):
    out = subprocess.run([sys.executable, "-m", "fastconv", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"fastconv {fastconv.__version__}"
    assert main([]) == 0
    assert "selftest" in capsys.readouterr().out


def test_selftest_passes_and_fails_loudly(capsys):
    assert main(["selftest"]) == 0
    out = capsys.readouterr().out
    from fastconv.testing.gradcheck import CASES
    # every gradient case of the op table runs: the count follows the table
    assert f"{len(CASES)} passed, 0 failed" in out and len(CASES) >= 19
    assert main(["selftest", "--rtol", "1e-14"]) == 1   # too tight for roundoff: must fail
    assert "FAIL" in capsys.readouterr().out

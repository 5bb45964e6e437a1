"""Errors of the command line: one line on stderr naming the problem, a non-zero exit
code, and a traceback only with --debug. Also `summary` and argument handling."""
import os
import subprocess
import sys

import numpy as np
import pytest

from fastconv import kernels
from fastconv.cli import main


def _one_line(err, command):
    assert err.startswith(f"fastconv {command}: error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_summary_of_the_seed_model(capsys):
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "(None, 49, 49, 32)" in out and "Total params: 438,369" in out


def test_unknown_flag_and_missing_argument_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochz", "3"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --epochz" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["predict", "model.fcm"])
    assert exc.value.code == 2
    assert "IMAGE_OR_FOLDER" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--device", "tpu"])
    assert exc.value.code == 2
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


def test_model_file_errors(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "missing.fcm")]) == 1
    err = _one_line(capsys.readouterr().err, "summary")
    assert f"model file not found: {tmp_path / 'missing.fcm'}" in err
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    for argv in (["summary", str(notes)],
                 ["predict", str(notes), str(notes), "--device", "reference"],
                 ["evaluate", str(notes), str(tmp_path), "--device", "reference"]):
        assert main(argv) == 1
        err = _one_line(capsys.readouterr().err, argv[0])
        assert f"{notes}: not a fastconv model file" in err
    arr = tmp_path / "array.npz"
    np.savez(arr, a=np.zeros(3))
    assert main(["summary", str(arr)]) == 1
    assert "no 'fastconv_meta' entry" in _one_line(capsys.readouterr().err, "summary")
    assert main(["summary", str(tmp_path)]) == 1
    assert "is a folder" in _one_line(capsys.readouterr().err, "summary")


def test_cuda_without_a_gpu_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    monkeypatch.setattr(kernels, "cuda_unavailable_reason",
                        lambda: "no CUDA driver or no CUDA device found")
    for argv in (["train", "--device", "cuda"], ["bench", "--device", "cuda"],
                 ["predict", "m.fcm", "x.png", "--device", "cuda"],
                 ["evaluate", "m.fcm", "data", "--device", "cuda"]):
        assert main(argv) == 1
        err = _one_line(capsys.readouterr().err, argv[0])
        assert "--device cuda: backend 'cuda' cannot run here: no CUDA driver" in err


def test_debug_shows_the_traceback(tmp_path, capsys):
    missing = str(tmp_path / "missing.fcm")
    from fastconv.cli._common import CLIError
    with pytest.raises(CLIError, match="model file not found"):
        main(["--debug", "summary", missing])
    with pytest.raises(CLIError, match="model file not found"):
        main(["summary", missing, "--debug"])
    proc = subprocess.run([sys.executable, "-m", "fastconv", "summary", missing, "--debug"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "fastconv", "summary", missing],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"fastconv summary: error: model file not found: {missing}\n"


def test_an_unexpected_error_is_still_one_line_with_a_hint(monkeypatch, capsys):
    from fastconv.cli import tools as cli_tools

    def broken(args):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(cli_tools, "cmd_summary", broken)
    assert main(["summary"]) == 1
    err = _one_line(capsys.readouterr().err, "summary")
    assert "ZeroDivisionError: division by zero (run with --debug for the traceback)" in err


def test_class_names_flag_is_checked(capsys):
    for bad in ("cats", "cats,cats", "cats,,dogs"):
        assert main(["summary", "--class-names", bad, "m.h5"]) == 1
        assert "--class-names must list two or more distinct names" in \
            _one_line(capsys.readouterr().err, "summary")


def test_convert_never_destroys_its_input_nor_replaces_a_file_unasked(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    src = tmp_path / "w.h5"
    with h5py.File(src, "w") as f:
        f.attrs["layer_names"] = [b"dense_1"]
    before = src.read_bytes()
    (tmp_path / "link.h5").symlink_to(src)
    for out in (src, tmp_path / "link.h5", tmp_path / "." / "w.h5"):
        for extra in ([], ["--overwrite"]):         # never, even when asked
            assert main(["convert", str(src), str(out), *extra]) == 1
            err = _one_line(capsys.readouterr().err, "convert")
            assert "is the input file" in err and "itself" in err
    assert src.read_bytes() == before
    existing = tmp_path / "m.fcm"
    existing.write_bytes(b"an earlier model")
    assert main(["convert", str(src), str(existing)]) == 1
    err = _one_line(capsys.readouterr().err, "convert")
    assert f"{existing} already exists" in err and "--overwrite" in err
    assert existing.read_bytes() == b"an earlier model"
    os.mkfifo(tmp_path / "pipe.fcm")
    assert main(["convert", str(src), str(tmp_path / "pipe.fcm"), "--overwrite"]) == 1
    assert "it is a FIFO" in _one_line(capsys.readouterr().err, "convert")
    # with --overwrite an existing regular OUT is replaced (the seed's own .h5, if here)
    seed = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "seed",
                        "first_try.h5")
    if os.path.isfile(seed):
        assert main(["convert", seed, str(existing), "--overwrite"]) == 0
        assert existing.read_bytes()[:4] == b"PK\x03\x04"

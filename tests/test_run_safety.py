"""Saving never destroys what it should not: only regular files are replaced, temps of
killed saves are cleaned up, the umask is honoured without os.umask(), and a failed
write names its file (issue 12, items 6, 7 and 15)."""
import errno
import os
import stat
import subprocess
import sys

import pytest

from fastconv._files import NotRegularFileError, atomic_replace


def _never_called(f):
    raise AssertionError("write() was called: the target should have been refused first")


def test_atomic_replace_refuses_a_fifo_a_folder_and_a_device_before_writing(tmp_path):
    fifo = tmp_path / "pipe.fcm"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFileError, match=r"pipe\.fcm: it is a FIFO"):
        atomic_replace(fifo, _never_called)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    folder = tmp_path / "folder.fcm"
    folder.mkdir()
    with pytest.raises(NotRegularFileError, match=r"folder\.fcm: it is a folder"):
        atomic_replace(folder, _never_called)
    assert folder.is_dir()
    with pytest.raises(NotRegularFileError, match="names a folder"):
        atomic_replace(str(tmp_path) + os.sep, _never_called)
    # a device: refused before anything is written (only read-only checks of /dev/null)
    if os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode):
        with pytest.raises(NotRegularFileError, match="/dev/null: it is a character device"):
            atomic_replace("/dev/null", _never_called)
        assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.fcm", "pipe.fcm"]


def test_a_symlink_is_written_through_to_its_regular_target(tmp_path):
    real = tmp_path / "runs" / "best.json"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "best.json"
    link.symlink_to(real)
    atomic_replace(link, lambda f: f.write(b"new"))
    assert link.is_symlink() and real.read_bytes() == b"new"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "to_fifo").symlink_to(fifo)
    with pytest.raises(NotRegularFileError, match="the target of the link"):
        atomic_replace(tmp_path / "to_fifo", _never_called)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_save_removes_temps_of_killed_saves_of_that_target_only(tmp_path):
    dead = _dead_pid()
    mine = tmp_path / f".state.json.{dead}-0a1b.tmp"               # a killed save
    live = tmp_path / f".state.json.{os.getpid()}-0a1b.tmp"        # a live writer's
    other = tmp_path / f".other.json.{dead}-0a1b.tmp"              # another target's
    legacy = tmp_path / ".state.json.k3j_x9qa.tmp"                 # no pid: not ours
    for p in (mine, live, other, legacy):
        p.write_bytes(b"partial")
    atomic_replace(tmp_path / "state.json", lambda f: f.write(b"{}"))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([live.name, other.name, legacy.name, "state.json"])


def test_the_temp_file_gets_the_umask_without_calling_os_umask(tmp_path, monkeypatch):
    def no_umask(mask):
        raise AssertionError("os.umask() changes the mask of every thread")
    old = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", no_umask)
        atomic_replace(tmp_path / "a.json", lambda f: f.write(b"{}"))
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o640


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_a_failed_write_names_the_file_and_the_cause(tmp_path, code):
    target = tmp_path / "model.fcm"
    target.write_bytes(b"previous")

    def fail(f):
        f.write(b"half")
        raise OSError(code, os.strerror(code))
    with pytest.raises(OSError) as info:
        atomic_replace(target, fail)
    assert info.value.errno == code
    assert f"cannot write {target}: {os.strerror(code)}" in str(info.value)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.fcm"]


def test_kill_9_at_random_moments_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    """bench/kill_resume.py with 3 kills (the bench runs 50): every resume succeeds and
    the final weights and validation losses equal an uninterrupted run's bitwise."""
    import importlib.util
    pytest.importorskip("fastconv.data")
    path = os.path.join(os.path.dirname(__file__), "..", "bench", "kill_resume.py")
    spec = importlib.util.spec_from_file_location("kill_resume", path)
    kill_resume = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kill_resume)
    assert kill_resume.kill_resume(str(tmp_path), kills=3, epochs=40, max_delay=0.5, seed=12,
                                   log=lambda s: None) == 3
    assert not [p for p in os.listdir(tmp_path / "run") if p.endswith(".tmp")
                and ".ckpt." in p]          # the next saves removed the killed ones' temps


def test_model_checkpoint_refuses_a_folder_before_the_first_epoch(tmp_path):
    import numpy as np
    from fastconv import callbacks as C
    from fastconv.models import Sequential
    from fastconv import layers as L
    model = Sequential([L.Dense(1, activation="sigmoid", input_shape=(3,))], device="reference",
                       seed=0)
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    (tmp_path / "best.npz").mkdir()
    epochs = []

    class Count(C.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            epochs.append(epoch)
    ck = C.ModelCheckpoint(str(tmp_path / "best.npz"))
    with pytest.raises(NotRegularFileError, match="it is a folder"):
        model.fit(np.zeros((4, 3), np.float32), np.zeros(4, np.float32), epochs=1, verbose=0,
                  callbacks=[ck, Count()])
    assert epochs == []

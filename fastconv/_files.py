"""Atomic file writing: a save replaces its target in one rename, or leaves it as it was.

atomic_replace(path, write) writes through a temporary file next to the target,
`.<name>.<pid>-<hex>.tmp`, fsyncs it and os.replace()s it over the target, so a reader
(or a killed save) only ever sees the old file or the new one. save_target(path) is the
check every save runs first: only a regular file (or nothing) is replaced, a symlink is
written through. Used by model files (fastconv.models.saving), ModelCheckpoint and the
CLI's run-state files.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import stat


class NotRegularFileError(OSError):
    """A save target that exists and is not a regular file (a folder, a device, a FIFO,
    a socket): atomic saving never replaces one."""


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"))


def save_target(path):
    """The file a save of `path` replaces: `path` itself, or, when `path` is a symlink,
    the file it finally points to (a save writes through a link: the link stays and its
    target gets the new contents). Raises NotRegularFileError when that exists and is
    not a regular file, and FileNotFoundError when its folder does not exist. Nothing
    is written; callers check every output with it before starting work."""
    path = os.fspath(path)
    if not os.path.basename(path):
        raise NotRegularFileError(f"{path}: names a folder, not a file to save to")
    target = os.path.realpath(path) if os.path.islink(path) else os.path.abspath(path)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        kind = next((k for test, k in _KINDS if test(mode)), "not a regular file")
        via = f" (the target of the link {path})" if target != os.path.abspath(path) else ""
        raise NotRegularFileError(f"refusing to save to {target}{via}: it is {kind}, and "
                                  f"saving only ever replaces a regular file")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path}: folder {folder} does not exist")
    return target


_TEMP = ".{name}.{pid}-{token}.tmp"


def _temp_pattern(name):
    return re.compile(r"\." + re.escape(name) + r"\.(\d+)-[0-9a-f]+\.tmp\Z")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # it runs, as another user
        return True
    except (OverflowError, ValueError):
        return False
    return True


def remove_stale_temps(target):
    """Remove the temporary files that killed saves of `target` left in its folder.
    Only names of this target's own pattern, `.<name>.<pid>-<hex>.tmp`, that are
    regular files and whose <pid> is not a running process are removed: a concurrent
    writer's live temp (its pid runs, this process's included) is left alone. Temps of
    other targets, and the `.<name>.<random>.tmp` names older fastconv versions wrote
    (no pid in them), are never touched. Returns the paths removed."""
    folder, name = os.path.split(target)
    pattern, removed = _temp_pattern(name), []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry)
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        full = os.path.join(folder, entry)
        try:
            if stat.S_ISREG(os.lstat(full).st_mode):
                os.unlink(full)
                removed.append(full)
        except OSError:     # gone already (another save cleaned it), or not ours to remove
            pass
    return removed


def _open_temp(target):
    """(fd, path) of a new temporary file next to `target`, created with O_EXCL and mode
    0o666 so that the kernel applies the umask (as for any new file): no os.umask()
    juggling, which would race with other threads creating files."""
    folder, name = os.path.split(target)
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(folder, _TEMP.format(name=name, pid=os.getpid(),
                                                token=secrets.token_hex(4)))
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue



def atomic_replace(path, write):
    """Call write(binary file) on a temporary file next to `path`, fsync it, then
    os.replace it over `path`: readers see the old file or the new one, never half.

    Only a regular file (or nothing) is ever replaced: a folder, device, FIFO or socket
    at `path` raises NotRegularFileError before anything is written; a symlink is
    written through (see save_target). Temps left by killed saves of the same target
    are removed first (see remove_stale_temps). An OSError while writing (a full or
    read-only disk, no permission) is raised again with the target's name in it."""
    path = os.fspath(path)
    target = save_target(path)
    remove_stale_temps(target)
    try:
        fd, tmp = _open_temp(target)
    except OSError as exc:
        raise _naming(exc, path, "cannot create a temporary file next to") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, NotRegularFileError):
            raise _naming(exc, path, "cannot write") from exc
        raise
    try:  # make the rename itself durable
        dfd = os.open(os.path.dirname(target), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _naming(exc, path, doing):
    """`exc` again (same type and errno) with a message naming `path`: ENOSPC and EIO
    name no file on their own."""
    if exc.errno is None or path in str(exc):
        return exc
    why = exc.strerror or str(exc)
    hint = {errno.ENOSPC: " (the disk is full)", errno.EROFS: " (a read-only file system)",
            errno.EACCES: " (no permission to write there)",
            errno.EDQUOT: " (disk quota exceeded)"}.get(exc.errno, "")
    return type(exc)(exc.errno, f"{doing} {path}: {why}{hint}")


__all__ = ["atomic_replace", "save_target", "remove_stale_temps", "NotRegularFileError"]

"""`fastconv train` under mpirun/srun (fastconv.distributed): which communicator the run
uses, rank 0 alone printing (the others' stdout goes to /dev/null; errors stay on
stderr), and a rank that fails stopping every rank with its message (MPI Abort after
reporting), never a hang."""
from __future__ import annotations

import contextlib
import os
import sys

from ._common import CLIError


def communicator(args):
    """The run's MPI communicator, or None for a single-process run: --distributed, or
    an mpirun/mpiexec/srun environment of more than one rank."""
    from ..distributed import DistributedError, launched_by_mpi, world
    if not (args.distributed or launched_by_mpi()):
        return None
    try:
        return world()
    except DistributedError as exc:
        raise CLIError(f"{'--distributed' if args.distributed else 'started by mpirun'}: "
                       f"{exc}") from None


def run(args, train):
    """train(args, comm) on every rank of the run (comm None: one process)."""
    comm = communicator(args)
    if comm is None or comm.Get_size() == 1:
        return train(args, comm)
    from ..distributed import code_of, describe, report_and_abort
    rank = comm.Get_rank()
    try:
        with open(os.devnull, "w") as null, \
                (contextlib.redirect_stdout(null) if rank else contextlib.nullcontext()):
            rc = train(args, comm)
    except BaseException as exc:          # noqa: BLE001 - every rank must stop
        from .._text import printable
        text = printable(" ".join(str(exc).split())) if isinstance(exc, CLIError) \
            else printable(describe(exc))
        report_and_abort(comm, text, code_of(exc))
        raise
    if rc:
        sys.stdout.flush()
        sys.stderr.flush()
        comm.Abort(rc)
    return rc

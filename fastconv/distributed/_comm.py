"""The MPI side of fastconv.distributed: whether this process is one of several ranks,
the communicator (mpi4py imported here, only when asked), the error, and stopping every
rank when one fails."""
from __future__ import annotations

import os
import sys

# variables the common launchers set in every rank's environment
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE",
                   "MPI_LOCALNRANKS")


class DistributedError(RuntimeError):
    """Distributed training cannot run as asked (no mpi4py, a device it lacks, ...)."""


def launched_by_mpi(environ=None):
    """True when this process is one of several ranks started by mpirun/mpiexec/srun
    (a size variable of MPICH/Hydra, Open MPI, PMIx or MVAPICH says more than 1)."""
    env = os.environ if environ is None else environ
    for name in _SIZE_VARIABLES:
        try:
            if int(env.get(name, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def world(comm=None):
    """The communicator: `comm`, else mpi4py's COMM_WORLD (mpi4py imported here)."""
    if comm is not None and comm is not True:
        return comm
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(
            f"distributed training needs mpi4py and an MPI library: pip install "
            f"'fastconv[mpi]' (mpi4py and the mpich wheel); import failed: {exc}") from None
    return MPI.COMM_WORLD


def shard(total, rank, size):
    """(first, stop) of rank's rows in a global batch of `total` rows: contiguous, in
    rank order, sizes differing by at most one, their union the whole batch."""
    return total * rank // size, total * (rank + 1) // size


def describe(exc):
    """One line for the failure `exc` of a rank: 'Type: message', Ctrl-C as such."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def code_of(exc):
    """The exit code of the abort: 130 for Ctrl-C (as `fastconv train`), else 1."""
    return 130 if isinstance(exc, KeyboardInterrupt) else 1


def report_and_abort(comm, message, code=1):
    """Print `message` on stderr naming the rank, then MPI Abort: every rank stops (a
    rank that fails must not leave the others waiting in a collective)."""
    rank, size = comm.Get_rank(), comm.Get_size()
    print(f"fastconv: rank {rank} of {size} failed: {message}; stopping all {size} ranks",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    comm.Abort(code)

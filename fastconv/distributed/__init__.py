"""Data-parallel training over MPI (mpi4py, imported only when used).

    mpirun -n 4 python train.py        # model.fit(x, y, batch_size=64, distributed=True)
    mpirun -n 4 fastconv train DATA    # the command detects mpirun itself

One process per rank. Each rank takes its slice of every global batch (batch_size is
the global batch: rank r of N gets its rows [B*r//N, B*(r+1)//N) of the single-process
batch, in the single-process shuffled order), computes the gradients of its slice, and
one in-place float32 Allreduce per step over one contiguous buffer sums them (each
rank's weighted by its share of the batch), together with the step's loss sum and
correct count; every rank then applies the same update, so weights and optimizer state
stay identical with nothing else exchanged. The weights, the seed and the generators'
states are broadcast from rank 0 when fit starts. Dropout and augmentation draw the
global batch's random numbers on every rank from the same stream and use their slice,
so N ranks reproduce one process up to the order of the gradient sum. See
docs/distributed.md.
"""
from __future__ import annotations

import os

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


def fit(model, distributed, fit_fn, args):
    """model.fit(..., distributed=...) (models.training): fit_fn(**args) on every rank
    with the step, the batches and the start of training made data-parallel."""
    from ._trainer import DistributedFit
    return DistributedFit(model, world(distributed)).run(fit_fn, args)


def abort(comm, message, code=1):
    """Report `message` (on stderr, naming the rank) and abort every rank of comm: a rank
    that fails must not leave the others waiting in a collective."""
    from ._trainer import report_and_abort
    report_and_abort(comm, message, code)

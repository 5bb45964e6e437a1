"""The GPU side of fastconv.distributed: one GPU per rank, chosen by its local rank, and
the exchange of the flat gradient buffer when it lives on the device.

    local rank   OMPI_COMM_WORLD_LOCAL_RANK (Open MPI), MPI_LOCALRANKID (MPICH/Hydra),
                 SLURM_LOCALID (srun), else the rank in a COMM_TYPE_SHARED split of the
                 communicator (the ranks on this node)
    the GPU      local rank modulo the GPUs this process sees (select_gpu; one GPU per
                 rank when the launcher gives each its own, CUDA_VISIBLE_DEVICES)
    exchange     NCCL when a binding imports (cupy.cuda.nccl, else nccl4py's nccl.core):
                 the buffer allreduced in place on the device through its
                 __cuda_array_interface__ pointer, on the default stream the kernels run
                 on; else staged through pinned host memory and MPI: device -> pinned
                 copy, Allreduce in place, pinned -> device. Either way the buffer's
                 last floats (the step's statistics and metric counts, kept on the host)
                 travel with it: one collective per step.
"""
from __future__ import annotations

import importlib
import os
import sys

import numpy as np

from ._comm import DistributedError

LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID")
NCCL_MODULES = ("cupy.cuda.nccl", "nccl.core")      # tried in this order


def _mpi():
    from mpi4py import MPI
    return MPI


def local_rank(comm, environ=None):
    """This rank's index among the ranks on its node: a launcher's variable, else the
    rank in comm.Split_type(COMM_TYPE_SHARED) (collective: every rank must ask)."""
    env = os.environ if environ is None else environ
    for name in LOCAL_RANK_VARIABLES:
        try:
            return int(env[name])
        except (KeyError, ValueError):
            continue
    node = comm.Split_type(_mpi().COMM_TYPE_SHARED)
    try:
        return node.Get_rank()
    finally:
        node.Free()


def gpu_count():
    from numba import cuda
    return len(cuda.gpus)


def wanted_gpu(comm, environ=None, count=None):
    """The index of this rank's GPU: its local rank modulo the GPUs it sees."""
    n = gpu_count() if count is None else count
    if n < 1:
        raise DistributedError("distributed training on cuda: this rank sees no GPU "
                               "(CUDA_VISIBLE_DEVICES empty, or no driver)")
    return local_rank(comm, environ) % n


def current_gpu():
    from numba import cuda
    return getattr(cuda.get_current_device(), "id", 0)     # the simulator has no id


def select_gpu(comm=None, environ=None):
    """Make this rank's GPU (wanted_gpu) the current one and return its index. Call it
    before a model is built on cuda: its weights live on the GPU that was current then.
    `fastconv train` under mpirun does."""
    from numba import cuda
    from ._comm import world
    index = wanted_gpu(world(comm), environ)
    cuda.select_device(index)
    return index


def check_gpu(comm, what, environ=None):
    """Refuse a rank whose current GPU is not its local rank's (the model was built
    before select_gpu, so two ranks of a node would share GPU 0 and leave others idle)."""
    want, have = wanted_gpu(comm, environ), current_gpu()
    if want != have:
        raise DistributedError(
            f"{what}: rank {comm.Get_rank()} runs on GPU {have} but its local rank asks "
            f"for GPU {want}; call fastconv.distributed.select_gpu() before building the "
            f"model on cuda (fastconv train does this itself)")
    return have


def find_nccl(importer=importlib.import_module):
    """(module name, module) of the first NCCL binding that imports, else None (a
    binding whose library fails to load counts as absent)."""
    for name in NCCL_MODULES:
        try:
            return name, importer(name)
        except Exception:               # noqa: BLE001 - ImportError, OSError, ...
            continue
    return None


def _pointer(buf):
    return int(buf.__cuda_array_interface__["data"][0])


class HostStaged:
    """The device buffer allreduced through pinned host memory and MPI."""

    def __init__(self, comm, size):
        self.comm, self.size = comm, size
        self.host = None                # the pinned buffer, allocated at the first step
        self.name = "pinned host memory and MPI (no NCCL binding imports)"

    def allreduce(self, device_buf, tail):
        """Sum device_buf (float32 (size,)) over the ranks in place; its last tail.size
        floats are replaced by the host array `tail` first and read back into it."""
        if self.host is None:
            from numba import cuda
            self.host = cuda.pinned_array(self.size, np.float32)
        t = tail.size
        device_buf.copy_to_host(self.host)
        self.host[self.host.size - t:] = tail
        MPI = _mpi()
        self.comm.Allreduce(MPI.IN_PLACE, self.host, op=MPI.SUM)
        device_buf.copy_to_device(self.host)
        tail[:] = self.host[self.host.size - t:]


class Nccl:
    """The device buffer allreduced in place by NCCL (one communicator per fit, its
    unique id broadcast from rank 0 over MPI)."""

    def __init__(self, comm, module_name, module):
        self.module_name, self.nccl = module_name, module
        rank, size = comm.Get_rank(), comm.Get_size()
        uid = comm.bcast(module.get_unique_id() if rank == 0 else None, root=0)
        if module_name == "cupy.cuda.nccl":
            self.comm = module.NcclCommunicator(size, uid, rank)
        else:                                           # nccl4py
            self.comm = module.Communicator.init(size, rank, uid)
        self.name = f"NCCL ({module_name})"

    def allreduce(self, device_buf, tail):
        t = tail.size
        n = device_buf.size
        device_buf[n - t:].copy_to_device(tail)
        if self.module_name == "cupy.cuda.nccl":
            ptr = _pointer(device_buf)
            self.comm.allReduce(ptr, ptr, n, self.nccl.NCCL_FLOAT32, self.nccl.NCCL_SUM, 0)
        else:
            op = getattr(self.nccl, "SUM", None)
            if op is None:
                op = self.nccl.NcclRedOp.SUM
            self.comm.allreduce(device_buf, device_buf, op, stream=0)
        device_buf[n - t:].copy_to_host(tail)           # waits for the reduction


def exchange(comm, size, importer=importlib.import_module, log=None):
    """The exchange of a device buffer of `size` floats: Nccl when a binding imports,
    else HostStaged. Rank 0 says which on stderr (`log`), once per fit."""
    found = find_nccl(importer)
    # every rank must take the same path (one in NCCL, another in MPI would hang)
    if comm.allreduce(0 if found is None else 1, op=_mpi().MIN) == 0:
        found = None
    ex = Nccl(comm, *found) if found is not None else HostStaged(comm, size)
    if comm.Get_rank() == 0:
        text = (f"fastconv.distributed: {comm.Get_size()} ranks on cuda, gradients "
                f"allreduced with {ex.name}")
        (log or (lambda s: print(s, file=sys.stderr, flush=True)))(text)
    return ex

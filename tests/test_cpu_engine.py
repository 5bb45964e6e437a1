"""The whole cpu engine through the model layer: the seed architecture
(small_convnet) at a small input trains like the reference, step for step, and
a training step is bitwise the same with 1 and 2 Numba threads.

At 32x32x3 the seed network keeps every layer (conv 3x3 > relu > pool 3 > conv >
relu > pool 2 > conv > relu > pool 2 > dense 64 > relu > dropout > dense 1 >
sigmoid) with a 1x1x64 map before Flatten, so a step takes milliseconds.
"""
import numba
import numpy as np
import pytest

import fastconv
from fastconv import kernels

INPUT = (32, 32, 3)


def _cpu_or_skip():
    try:
        kernels.get("cpu")
    except kernels.BackendUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def batch():
    rng = np.random.default_rng(5)
    x = rng.random((6,) + INPUT, dtype=np.float32)
    y = (rng.random(6) > 0.5).astype(np.float32)
    return x, y


@pytest.fixture
def threads():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


def _model(device):
    return fastconv.small_convnet(input_shape=INPUT, device=device, seed=11)


def test_seed_architecture_uses_the_fused_cpu_kernels():
    _cpu_or_skip()
    assert _model("cpu").plan_summary()[:3] == ["conv2d_relu_maxpool"] * 3


def test_training_steps_match_the_reference(batch):
    """Three RMSprop steps (dropout active, same generator on both): the same losses,
    predictions and weights as the reference engine, within float32 tolerances."""
    _cpu_or_skip()
    x, y = batch
    cpu, ref = _model("cpu"), _model("reference")
    for a, b in zip(cpu.get_weights(), ref.get_weights()):
        assert np.array_equal(a, b)
    for step in range(3):
        loss_cpu, acc_cpu = cpu.train_on_batch(x, y)
        loss_ref, acc_ref = ref.train_on_batch(x, y)
        assert loss_cpu == pytest.approx(loss_ref, rel=1e-4, abs=1e-6), step
        assert acc_cpu == acc_ref
    for k, (a, b) in enumerate(zip(cpu.get_weights(), ref.get_weights())):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5, err_msg=f"weight array {k}")
    np.testing.assert_allclose(cpu.predict_on_batch(x), ref.predict_on_batch(x),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
def test_training_is_bitwise_identical_with_one_and_two_threads(batch, threads):
    _cpu_or_skip()
    x, y = batch
    runs = []
    for n_threads in (1, 2, 1):
        numba.set_num_threads(n_threads)
        model = _model("cpu")
        losses = [model.train_on_batch(x, y)[0] for _ in range(3)]
        runs.append((losses, model.get_weights(), model.predict_on_batch(x)))
    for losses, weights, pred in runs[1:]:
        assert losses == runs[0][0]
        assert all(np.array_equal(a, b) for a, b in zip(weights, runs[0][1]))
        assert np.array_equal(pred, runs[0][2])

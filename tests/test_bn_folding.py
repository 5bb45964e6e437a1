"""BatchNormalization folded into the conv before it in the cpu backend's inference plan
(models._plan.FoldedBN): conv -> BN -> relu (-> maxpool) runs as one fused conv step,
SeparableConv2D -> BN folds into the pointwise conv, and the predictions equal the
reference's unfolded composition (rtol 1e-5 + atol 1e-6: only float32 rounding of the
folded weights differs), also after training and set_weights move the weights."""
import numpy as np
import pytest

import fastconv
from fastconv import layers as L


def _randomize_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape) if n in ("gamma", "moving_variance")
                               else rng.normal(0, 0.5, w.shape)
                               for n, w in zip(layer.weight_names, layer.get_weights())])


def _net(device, seed=0):
    inp = fastconv.Input((13, 12, 3))
    x = L.Conv2D(8, 3, padding="same")(inp)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.MaxPooling2D(2)(x)                        # conv -> BN -> relu -> pool: one step
    y = L.SeparableConv2D(8, 3, padding="same", use_bias=False)(x)
    y = L.BatchNormalization(scale=False)(y)        # folded into the pointwise conv
    y = L.Activation("relu")(y)
    z = L.Conv2D(8, 1)(x)
    z2 = L.BatchNormalization(center=False)(z)      # z is read twice: no fold
    x = L.Add()([y, z2, z])
    x = L.BatchNormalization()(x)                   # after an Add: stays a step
    out = L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(x))
    model = fastconv.Model(inp, out, device=device, seed=seed)
    _randomize_bn(model, np.random.default_rng(seed))
    return model


def test_the_cpu_inference_plan_folds_and_fuses():
    model = _net("cpu")
    x = np.random.default_rng(1).normal(0, 1, (2, 13, 12, 3)).astype(np.float32)
    model.predict(x, batch_size=2)
    kinds = model._plan("infer", 2).kinds
    assert kinds.count("BatchNormStep") == 2                  # the twice-read z, after Add
    assert kinds[0] == "conv2d_relu_maxpool"
    ref = _net("reference")
    np.testing.assert_allclose(model.predict(x), ref.predict(x), rtol=1e-5, atol=1e-6)


def test_folding_follows_the_weights_after_training_and_set_weights():
    cpu, ref = _net("cpu", seed=3), _net("reference", seed=3)
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (4, 13, 12, 3)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    before = cpu.predict(x)
    for m in (cpu, ref):
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        m.train_on_batch(x, y)                  # moves the weights and moving statistics
    after = cpu.predict(x)
    assert not np.allclose(after, before, rtol=0, atol=1e-7)
    np.testing.assert_allclose(after, ref.predict(x), rtol=1e-4, atol=1e-6)
    weights = [w * 1.1 for w in cpu.get_weights()]
    cpu.set_weights(weights)
    ref.set_weights(weights)
    np.testing.assert_allclose(cpu.predict(x), ref.predict(x), rtol=1e-4, atol=1e-6)


def test_training_plan_keeps_batchnorm_steps():
    model = _net("cpu")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.zeros((2, 13, 12, 3), np.float32)
    model.train_on_batch(x, np.zeros(2, np.int64))
    assert model._plan("train", 2).kinds.count("BatchNormStep") == 4


@pytest.mark.parametrize("seed", [0, 1])
def test_keras_io_xception_small_folds_to_the_reference(seed):
    cpu = fastconv.models.keras_io_xception((24, 24, 3), width=1 / 32, seed=seed)
    ref = fastconv.models.keras_io_xception((24, 24, 3), width=1 / 32, seed=seed,
                                            device="reference")
    _randomize_bn(cpu, np.random.default_rng(seed))
    ref.set_weights(cpu.get_weights())
    x = np.random.default_rng(seed).uniform(0, 255, (3, 24, 24, 3)).astype(np.float32)
    np.testing.assert_allclose(cpu.predict(x), ref.predict(x), rtol=1e-5, atol=1e-6)
    assert "BatchNormStep" not in cpu._plan("infer", 3).kinds


def test_training_fuses_batchnorm_relu_and_trains_as_the_unfused_plan(monkeypatch):
    """Training: a BatchNormalization read only by a relu runs the fused pair
    (batchnorm_relu_train_forward / batchnorm_relu_backward) in its BatchNormStep; one
    step moves the weights and moving statistics as the unfused BN + relu steps do (the
    cpu pair is its composition bit for bit, so only the plan could differ)."""
    from fastconv import kernels
    from fastconv.models import _plan
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (4, 13, 12, 3)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    runs, acts = [], []
    for fused in (True, False):
        if not fused:
            real = kernels.fuses
            monkeypatch.setattr(_plan.kernels, "fuses",
                                lambda K, kind: kind != "batchnorm_relu" and real(K, kind))
        model = _net("cpu", seed=5)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        model.train_on_batch(x, y)
        plan = model._plan("train", 4)
        relu = [s.relu for s in plan.steps if isinstance(s, _plan.BatchNormStep)]
        # the two BN -> relu pairs fuse; the twice-read z's BN and the one after Add do not
        assert relu == ([True, True, False, False] if fused else [False] * 4), relu
        acts.append(plan.kinds.count("ActStep"))
        runs.append(model.get_weights())
    assert acts[1] == acts[0] + 2
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_each_forward_refolds_with_batchnorm_fold(monkeypatch):
    """The fold is the backend's batchnorm_fold op, run once per folded step per forward
    into the step's own buffers (out=, so nothing is allocated per call)."""
    from fastconv.kernels import cpu
    model = _net("cpu")
    x = np.random.default_rng(2).normal(0, 1, (2, 13, 12, 3)).astype(np.float32)
    model.predict(x, batch_size=2)
    calls, real = [], cpu.batchnorm_fold

    def spy(*args, out=None, **kwargs):
        calls.append(out)
        return real(*args, out=out, **kwargs)
    monkeypatch.setattr(cpu, "batchnorm_fold", spy)
    model.predict(x, batch_size=2)
    model.predict(x, batch_size=2)
    assert len(calls) == 2 * 2 and all(out is not None for out in calls)   # 2 folds x 2
    assert calls[0][0] is calls[2][0] and calls[1][1] is calls[3][1]


CUDA_FOLD = """
import fastconv
from fastconv import layers as L
from tests.test_bn_folding import _randomize_bn

def net(device):
    inp = fastconv.Input((6, 5, 3))
    x = L.MaxPooling2D(2, padding="same")(L.Activation("relu")(L.BatchNormalization()(
        L.Conv2D(4, 3, padding="same")(inp))))
    y = L.Activation("relu")(L.BatchNormalization(scale=False)(
        L.SeparableConv2D(5, 3, padding="same", use_bias=False)(x)))
    y = L.BatchNormalization(center=False)(L.Conv2D(5, 1)(y))         # no relu after it
    out = L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(y))
    return fastconv.Model(inp, out, device=device, seed=1)

rng = np.random.default_rng(0)
ref, cu = net("reference"), net("cuda")
_randomize_bn(ref, rng)
cu.set_weights(ref.get_weights())
x = rng.normal(0, 1, (2, 6, 5, 3)).astype(np.float32)
first, ref_first = cu.predict(x).tolist(), ref.predict(x).tolist()
kinds = cu._plan("infer", 2).kinds
folds = [s.fold is not None for s in cu._plan("infer", 2).steps if hasattr(s, "fold")]
w = [v * 1.1 for v in ref.get_weights()]                 # the next forward refolds
ref.set_weights(w)
cu.set_weights(w)
print("RESULT:" + json.dumps({"first": first, "ref_first": ref_first, "kinds": kinds,
                              "folds": folds, "after": cu.predict(x).tolist(),
                              "ref_after": ref.predict(x).tolist()}))
"""


def test_cuda_inference_plan_folds_under_the_simulator():
    """cuda folds too (batchnorm_fold's device kernel, bn_fold): conv -> BN -> relu ->
    pool is one conv2d_relu_maxpool step, SeparableConv2D -> BN -> relu a sepconv_relu,
    a 1x1 conv -> BN a plain conv; the predictions equal the reference's unfolded
    composition (rtol 1e-5, atol 1e-6), before and after set_weights moves the weights."""
    from . import simulator
    before = simulator.run(simulator.CUDA_PRELUDE + CUDA_FOLD)
    assert before["kinds"][:3] == ["conv2d_relu_maxpool", "SeparableStep", "conv"], \
        before["kinds"]
    assert "BatchNormStep" not in before["kinds"] and before["folds"] == [True] * 3
    np.testing.assert_allclose(before["first"], before["ref_first"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(before["after"], before["ref_after"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(before["after"], before["first"], rtol=0, atol=1e-6)

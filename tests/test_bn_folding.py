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

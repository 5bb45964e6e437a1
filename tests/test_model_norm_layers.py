"""Rescaling, GlobalAveragePooling2D, GlobalMaxPooling2D and BatchNormalization in a
Sequential model: Keras arguments, shapes, parameter counts (trainable and not),
config and file round trips, training mode in fit and inference mode in
evaluate/predict, the moving statistics' Keras update, the cpu plan against the
reference's, a fit that learns, and a clear refusal on a backend without the ops."""
import json
import types

import numpy as np
import pytest

import fastconv
from fastconv import Sequential, kernels
from fastconv import layers as L
from fastconv import optimizers as O

from . import simulator
from .model_helpers import discs_and_squares


def small_net(device="reference", seed=0, pool="avg", input_shape=(12, 12, 1)):
    """Rescaling, conv, BN, relu, maxpool, conv-relu, global pool, dense, BN, relu, dense."""
    gp = L.GlobalAveragePooling2D() if pool == "avg" else L.GlobalMaxPooling2D()
    return Sequential([
        L.Input(input_shape), L.Rescaling(0.5, offset=0.25),
        L.Conv2D(6, 3), L.BatchNormalization(), L.Activation("relu"), L.MaxPooling2D(2),
        L.Conv2D(5, 3, activation="relu"), gp,
        L.Dense(7), L.BatchNormalization(momentum=0.9, epsilon=1e-2), L.Activation("relu"),
        L.Dense(1, activation="sigmoid"),
    ], device=device, seed=seed)


# -- layers ------------------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: L.Rescaling("1/255"), r"Rescaling: `scale` must be a finite number .*received "
                                   r"scale='1/255'"),
    (lambda: L.Rescaling(1.0, offset=float("inf")), r"received offset=inf"),
    (lambda: L.GlobalAveragePooling2D(keepdims=True), r"GlobalAveragePooling2D: only "
                                                      r"keepdims=False .*received keepdims=True"),
    (lambda: L.GlobalMaxPooling2D(data_format="channels_first"),
     r"received data_format='channels_first'"),
    (lambda: L.BatchNormalization(momentum=1.5), r"BatchNormalization: `momentum` must be a "
                                                 r"number in \[0, 1\], received momentum=1\.5"),
    (lambda: L.BatchNormalization(epsilon=0), r"`epsilon` must be a number > 0, received "
                                              r"epsilon=0"),
    (lambda: L.BatchNormalization(center="yes"), r"received center='yes'"),
    (lambda: L.BatchNormalization(axis=1.5), r"received axis=1\.5"),
    (lambda: L.BatchNormalization(gamma_initializer="zeros"),
     r"`gamma_initializer` must be 'ones' .*received gamma_initializer='zeros'"),
])
def test_arguments_are_validated_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("layer", [
    L.Rescaling(1 / 255, offset=-0.5, name="r", input_shape=(4, 4, 3)),
    L.GlobalAveragePooling2D(name="gap"), L.GlobalMaxPooling2D(),
    L.BatchNormalization(momentum=0.9, epsilon=1e-5, center=False, name="bn"),
])
def test_config_round_trips_through_serialize_and_json(layer):
    spec = L.serialize(layer)
    assert spec["class_name"] in L.LAYERS
    again = L.deserialize(json.loads(json.dumps(spec)))
    assert type(again) is type(layer) and again.get_config() == layer.get_config()


def test_shapes_and_keras_weight_order():
    assert L.GlobalAveragePooling2D().compute_output_shape((None, 5, 7, 9)) == (None, 9)
    assert L.GlobalMaxPooling2D().compute_output_shape((None, 1, 1, 3)) == (None, 3)
    assert L.Rescaling(2.0).compute_output_shape((None, 5, 3)) == (None, 5, 3)
    with pytest.raises(L.LayerError, match=r"expects a 4-D input .*received input shape "
                                           r"\(None, 12\)"):
        L.GlobalAveragePooling2D().compute_output_shape((None, 12))
    with pytest.raises(L.LayerError, match=r"only the channel axis \(-1 or 3\) is supported, "
                                           r"received axis=1"):
        L.BatchNormalization(axis=1).compute_output_shape((None, 4, 4, 2))
    bn = L.BatchNormalization(axis=3)
    bn.build((None, 4, 4, 5))
    assert bn.weight_names == ("gamma", "beta", "moving_mean", "moving_variance")
    assert [w.tolist() for w in bn.get_weights()] == [[1.0] * 5, [0.0] * 5, [0.0] * 5,
                                                      [1.0] * 5]
    assert bn.count_params() == 20 and bn.count_trainable_params() == 10
    nb = L.BatchNormalization(scale=False)
    nb.build((None, 3))
    assert nb.weight_names == ("beta", "moving_mean", "moving_variance")
    assert nb.count_trainable_params() == 3


def test_summary_counts_moving_statistics_as_non_trainable():
    model = small_net()
    lines = []
    model.summary(print_fn=lines.append)
    # conv 60 + bn 24 + conv 275 + dense 42 + bn 28 + dense 8 = 437, of which 12 + 14 moving
    assert "Total params: 437" in lines
    assert "Trainable params: 411" in lines and "Non-trainable params: 26" in lines
    row = next(l for l in lines if l.startswith("batch_normalization_1"))
    assert "(None, 10, 10, 6)" in row and row.rstrip().endswith("24")
    assert any(l.startswith("global_average_pooling2d_1") and "(None, 5)" in l for l in lines)
    assert any(l.startswith("rescaling_1") and l.rstrip().endswith(" 0") for l in lines)


# -- training and inference modes -------------------------------------------------------

def test_fit_uses_batch_statistics_and_updates_the_moving_ones_as_keras():
    """One SGD step on Input -> BN -> Dense(1, sigmoid): the moving statistics become
    moving * momentum + batch * (1 - momentum) (batch variance biased), and predict
    normalizes with them."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((8, 3)) * [1.0, 2.0, 0.5] + [1.0, -2.0, 4.0]).astype(np.float32)
    y = (rng.random(8) > 0.5).astype(np.float32)
    model = Sequential([L.Input((3,)), L.BatchNormalization(momentum=0.8),
                        L.Dense(1, activation="sigmoid")], device="reference", seed=0)
    model.compile(O.SGD(0.1), "binary_crossentropy")
    model.train_on_batch(x, y)
    gamma, beta, mm, mv = model.layers[0].get_weights()
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mm, 0.2 * x64.mean(0), rtol=1e-6)
    np.testing.assert_allclose(mv, 0.8 + 0.2 * x64.var(0), rtol=1e-6)
    assert not np.allclose(gamma, 1.0) and not np.allclose(beta, 0.0)   # they trained
    kernel, bias = model.layers[1].get_weights()
    z = ((x64 - mm) / np.sqrt(mv.astype(np.float64) + 1e-3) * gamma + beta) @ kernel + bias
    np.testing.assert_allclose(model.predict(x), 1 / (1 + np.exp(-z)), rtol=1e-5)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_a_non_finite_loss_leaves_the_moving_statistics_alone():
    model = Sequential([L.Input((2,)), L.BatchNormalization(),
                        L.Dense(1, activation="sigmoid")], device="reference", seed=0)
    model.compile(O.SGD(0.1), "binary_crossentropy")
    before = model.get_weights()
    x = np.array([[1.0, np.inf], [2.0, 0.0]], np.float32)
    loss = model.train_on_batch(x, np.array([0.0, 1.0], np.float32))
    assert not np.isfinite(loss)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_batchnorm_without_scale_and_center_still_learns_its_statistics():
    model = Sequential([L.Input((4, 4, 2)), L.BatchNormalization(scale=False, center=False),
                        L.GlobalMaxPooling2D(), L.Dense(1, activation="sigmoid")],
                       device="reference", seed=0)
    model.compile(O.SGD(0.1), "binary_crossentropy")
    x = np.random.default_rng(0).standard_normal((3, 4, 4, 2)).astype(np.float32) + 5
    model.train_on_batch(x, np.array([0.0, 1.0, 1.0], np.float32))
    mm, mv = model.layers[0].get_weights()
    np.testing.assert_allclose(mm, 0.01 * x.reshape(-1, 2).astype(np.float64).mean(0),
                               rtol=1e-5)
    assert model.count_trainable_params() == 3


# -- cpu against the reference, learning, files -----------------------------------------

@pytest.mark.parametrize("pool", ["avg", "max"])
def test_cpu_plan_matches_the_reference_forward_and_one_training_step(pool):
    """Same weights on both backends: predictions (inference mode), then one SGD step in
    training mode: the loss, every trainable weight and the moving statistics.
    Tolerances: float32 kernels against the float64 reference, rtol 1e-4 / atol 1e-5."""
    rng = np.random.default_rng(1)
    x, y = discs_and_squares(6, rng, size=12)
    ref, cpu = small_net("reference", 4, pool), small_net("cpu", 4, pool)
    cpu.set_weights(ref.get_weights())
    np.testing.assert_allclose(cpu.predict(x), ref.predict(x), rtol=1e-4, atol=1e-5)
    for m in (ref, cpu):
        m.compile(O.SGD(0.5), "binary_crossentropy")
    la, lb = ref.train_on_batch(x, y), cpu.train_on_batch(x, y)
    assert abs(la - lb) < 1e-5
    for layer_r, layer_c in zip(ref.layers, cpu.layers):
        for name, a, b in zip(layer_r.weight_names, layer_r.get_weights(),
                              layer_c.get_weights()):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5,
                                       err_msg=f"{layer_r.name} {name}")
    start = small_net("reference", 4, pool).get_weights()
    moved = sum(not np.array_equal(a, w) for a, w in zip(ref.get_weights(), start))
    # all 16 arrays but (perhaps) the two biases feeding a BatchNormalization, whose
    # gradient is 0 up to rounding (the batch mean removes them)
    assert len(start) == 16 and moved >= 14, moved


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_a_tiny_fit_reduces_the_loss(device):
    rng = np.random.default_rng(0)
    x, y = discs_and_squares(48, rng, size=12)
    model = small_net(device, seed=1)
    model.compile(O.Adam(0.02), "binary_crossentropy", ["accuracy"])
    history = model.fit(x, y, batch_size=12, epochs=6, verbose=0, shuffle=False)
    loss = history.history["loss"]
    assert loss[-1] < 0.8 * loss[0], loss


def test_save_and_load_keep_the_moving_statistics(tmp_path):
    rng = np.random.default_rng(0)
    x, y = discs_and_squares(16, rng, size=12)
    model = small_net("reference", seed=2)
    model.compile(O.Adam(0.01), "binary_crossentropy")
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    path = tmp_path / "bn.npz"
    model.save(path)
    loaded = fastconv.load_model(path, device="reference")
    assert loaded.get_config() == model.get_config()
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    # the optimizer state covers the trainable weights only, so training resumes
    assert model.train_on_batch(x[:8], y[:8]) == loaded.train_on_batch(x[:8], y[:8])
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


# -- a backend without the ops -----------------------------------------------------------

def test_a_backend_without_an_op_is_refused_at_plan_time_naming_the_layer():
    cpu = kernels.get("cpu")
    fake = types.ModuleType("fake")
    for name in dir(cpu):
        if not name.startswith("batchnorm_"):
            setattr(fake, name, getattr(cpu, name))
    fake.NAME = "fake"
    model = small_net("cpu")
    model._bind(fake, "cpu")
    x = np.zeros((2, 12, 12, 1), np.float32)
    with pytest.raises(kernels.BackendUnavailable,
                       match=r"layer 'batch_normalization_1' \(BatchNormalization\) cannot run "
                             r"on backend 'fake': it lacks the op batchnorm_infer_forward"):
        model.predict(x)
    model.compile("sgd", "binary_crossentropy")
    with pytest.raises(kernels.BackendUnavailable, match=r"it lacks the ops "
                                                         r"batchnorm_infer_forward, "
                                                         r"batchnorm_train_forward"):
        model.train_on_batch(x, np.zeros(2, np.float32))


CUDA_SIM_SCRIPT = simulator.CUDA_PRELUDE + """
from fastconv import Sequential
from fastconv import layers as L
from fastconv import optimizers as O
rng = np.random.default_rng(0)
x = rng.random((4, 6, 6, 1), np.float32) * 255
y = np.array([0, 1, 1, 0], np.float32)
out = {}
for device in ("reference", "cuda"):
    m = Sequential([L.Input((6, 6, 1)), L.Rescaling(1 / 255, offset=-0.5), L.Conv2D(3, 3),
                    L.Activation("relu"), L.Rescaling(2.0, offset=0.1), L.Flatten(),
                    L.Dense(1, activation="sigmoid")], device=device, seed=0)
    m.compile(O.SGD(0.5), "binary_crossentropy")
    losses = [m.train_on_batch(x, y) for _ in range(2)]
    out[device] = {"losses": losses, "w": [w.tolist() for w in m.get_weights()],
                   "pred": m.predict(x).tolist()}
# BatchNormalization after a conv (NHWC, C = 3) and after a dense layer ((N, C), C = 5):
# train_on_batch (the host step), then fit (cuda's device-side step, with the moving update
# guarded on the device), the second time with a NaN in the second batch (the step that
# stops training must leave the moving statistics as the reference leaves them)
xb = rng.random((8, 6, 6, 2), np.float32)
yb = np.array([0, 1, 1, 0, 1, 0, 0, 1], np.float32)
bad = xb.copy()
bad[5, 2, 3, 1] = np.nan
for device in ("reference", "cuda"):
    m = Sequential([L.Input((6, 6, 2)), L.Conv2D(3, 3), L.BatchNormalization(),
                    L.Activation("relu"), L.Flatten(), L.Dense(5),
                    L.BatchNormalization(momentum=0.9, epsilon=1e-2), L.Activation("relu"),
                    L.Dense(1, activation="sigmoid")], device=device, seed=0)
    m.compile(O.SGD(0.1), "binary_crossentropy")
    r = {"pred0": m.predict(xb).tolist(), "losses": [m.train_on_batch(xb, yb)]}
    r["w1"] = [w.tolist() for w in m.get_weights()]
    h = m.fit(xb, yb, batch_size=4, epochs=1, shuffle=False, verbose=0)
    r["losses"] += h.history["loss"]
    r["w2"] = [w.tolist() for w in m.get_weights()]
    r["pred"] = m.predict(xb).tolist()
    r["eval"] = m.evaluate(xb, yb, verbose=0)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(bad, yb, batch_size=4, epochs=1, shuffle=False, verbose=0)
    r["w3"] = [w.tolist() for w in m.get_weights()]
    out["bn_" + device] = r
print("RESULT:" + json.dumps(out))
"""


def test_rescaling_and_batchnorm_on_cuda_under_the_simulator():
    """Rescaling (forward, and backward where a trained layer is before it) and
    BatchNormalization (NHWC and (N, C); training mode in train_on_batch and in fit's
    device-side step, inference mode in predict and evaluate; a NaN batch leaving the
    moving statistics alone) through the cuda plan under the simulator against the
    reference: rtol 1e-4 on losses and predictions, 1e-3 on the weights and moving
    statistics (as tests/test_model_cuda_sim.py)."""
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    r = simulator.run(CUDA_SIM_SCRIPT, timeout=600)
    ref, dev = r["reference"], r["cuda"]
    np.testing.assert_allclose(dev["losses"], ref["losses"], rtol=1e-4, atol=1e-6)
    for a, b in zip(dev["w"], ref["w"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(dev["pred"], ref["pred"], rtol=1e-4, atol=1e-5)
    ref, dev = r["bn_reference"], r["bn_cuda"]
    for key in ("pred0", "losses", "pred", "eval"):
        np.testing.assert_allclose(dev[key], ref[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for key in ("w1", "w2", "w3"):
        assert len(dev[key]) == len(ref[key]) == 14      # conv 2, BN 4, dense 2, BN 4, dense 2
        for k, (a, b) in enumerate(zip(dev[key], ref[key])):
            np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-3, atol=1e-5,
                                       err_msg=f"{key}[{k}]")
    # the steps really moved the moving statistics (the second BN's moving mean), and the
    # NaN batch's fit changed nothing but what its first (finite) batch did
    assert not np.allclose(ref["w1"][10], ref["w2"][10])
    assert not np.allclose(ref["w2"][10], ref["w3"][10])
    assert np.isfinite(np.array(dev["w3"][10])).all() and np.isfinite(dev["w3"][11]).all()

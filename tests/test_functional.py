"""The Functional API (fastconv.Input, layer calls, Add, Concatenate, fastconv.Model):
graph gradients against finite differences, residual models training on reference and
cpu alike, a Functional chain training bitwise as its Sequential, fusion only where a
conv's output has one reader, save/load, the summary's Connected to column, errors."""
import math

import numpy as np
import pytest

import fastconv
from fastconv import layers as L
from fastconv.models import Functional
from fastconv.optimizers import SGD, Adam

from . import simulator
from .model_helpers import discs_and_squares, residual_net, tiny_convnet
from .test_model_training import _backend_or_skip, _loss_and_grads


def _merge_net(seed=3):
    """Every way a gradient meets another: a tensor read by a conv and an Add (summed
    into the conv's input gradient), Add([t, t]) and a tensor read by two Adds (no owned
    buffer: summed with add_forward), a Concatenate (concat_forward, concat_backward), a
    strided 1x1 shortcut. No ReLU: the
    loss is smooth, so finite differences check the graph's wiring tightly (ReLU's
    gradients are test_model_training's)."""
    inp = fastconv.Input((6, 6, 2))
    a = L.Conv2D(3, 3, padding="same")(inp)
    b = L.Conv2D(3, 3, padding="same")(a)
    c = L.Add()([b, a])                                   # a: read by a conv and an Add
    d = L.Add()([c, c])                                   # c: read twice by one Add
    e = L.Add()([d, c])                                   # ... and by a second Add
    f = L.Concatenate()([e, L.Conv2D(2, 1, strides=1)(inp)])
    g = L.Conv2D(4, 1, strides=2)(f)
    out = L.Dense(1, activation="sigmoid")(L.Flatten()(g))
    return fastconv.Model(inp, out, device="reference", seed=seed)


def test_graph_gradients_match_finite_differences():
    """Directional derivative of the loss along random weight directions (the check
    test_model_training runs for Sequential; rel 2e-2 with h = 1e-2 in float32)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 6, 6, 2)).astype(np.float32)
    y = (rng.random(5) > 0.5).astype(np.float32)
    model = _merge_net()
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    _, grads = _loss_and_grads(model, x, y)
    w0 = model.get_weights()
    for trial in range(3):
        d = [rng.standard_normal(w.shape) for w in w0]
        norm = math.sqrt(sum(float((v * v).sum()) for v in d))
        d = [v / norm for v in d]
        h = 1e-2
        losses = []
        for sign in (1, -1):
            model.set_weights([w + sign * h * v for w, v in zip(w0, d)])
            losses.append(_loss_and_grads(model, x, y)[0])
        numeric = (losses[0] - losses[1]) / (2 * h)
        analytic = sum(float((g * v).sum()) for g, v in zip(grads, d))
        assert analytic == pytest.approx(numeric, rel=2e-2, abs=1e-4), trial
    # per weight array too: a wrong summed gradient could hide in a random direction
    for k, w in enumerate(w0):
        v = [np.zeros_like(u) for u in w0]
        v[k] = rng.standard_normal(w.shape)
        v[k] /= np.linalg.norm(v[k])
        losses = []
        for sign in (1, -1):
            model.set_weights([u + sign * 1e-2 * e for u, e in zip(w0, v)])
            losses.append(_loss_and_grads(model, x, y)[0])
        numeric = (losses[0] - losses[1]) / 2e-2
        assert float((grads[k] * v[k]).sum()) == pytest.approx(numeric, rel=2e-2, abs=1e-4), k
    model.set_weights(w0)


def test_gradient_sums_use_accumulate_and_add():
    """A tensor read by a conv and an Add sums into the conv's input gradient with
    accumulate_grad; one read only through views (Adds) sums with add_forward."""
    from fastconv.models._plan import GradSumStep
    model = _merge_net()
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    plan = model._plan("train", 2)
    sums = [s for s in plan.backward_steps if isinstance(s, GradSumStep)]
    # a (conv + Add: accumulate into the conv's dx), c (three views: add_forward),
    # inp is not differentiated
    assert sorted(s.sum is None for s in sums) == [False, True]


def _curve(device, x, y, batchnorm=False):
    """Loss curve and weights of residual_net under SGD with momentum (see
    test_model_training._curve: float32 differences stay proportional to gradients)."""
    model = residual_net(device=device, seed=11, input_shape=(12, 12, 3), batchnorm=batchnorm)
    model.compile(optimizer=SGD(learning_rate=0.05, momentum=0.9), loss="binary_crossentropy",
                  metrics=["accuracy"])
    losses = [model.train_on_batch(x[k:k + 8], y[k:k + 8])[0] for k in range(0, 32, 8)]
    h = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    return losses + h.history["loss"], model.get_weights()


@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
def test_residual_net_on_cpu_follows_the_reference(batchnorm):
    """The tolerances of test_model_training.test_backend_loss_curve_matches_reference."""
    _backend_or_skip("cpu")
    rng = np.random.default_rng(4)
    x = rng.random((32, 12, 12, 3), np.float32)
    y = (rng.random(32) > 0.5).astype(np.float32)
    ref_curve, ref_w = _curve("reference", x, y, batchnorm)
    cpu_curve, cpu_w = _curve("cpu", x, y, batchnorm)
    np.testing.assert_allclose(cpu_curve, ref_curve, rtol=2e-4, atol=1e-5)
    for a, b in zip(cpu_w, ref_w):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_residual_net_learns(device):
    _backend_or_skip(device)
    rng = np.random.default_rng(7)
    x, y = discs_and_squares(96, rng, size=12, noise=0.1)
    model = residual_net(device=device, seed=2, input_shape=(12, 12, 1), filters=4)
    model.compile(optimizer=Adam(learning_rate=0.01), loss="binary_crossentropy",
                  metrics=["accuracy"])
    h = model.fit(x, y, batch_size=16, epochs=8, verbose=0)
    # measured on reference: 0.68 -> 0.05, accuracy 1.0
    assert h.history["loss"][-1] < 0.3 * h.history["loss"][0], h.history["loss"]
    assert h.history["accuracy"][-1] > 0.9, h.history["accuracy"]


def _chain(device, seed, dropout):
    """tiny_convnet's layers as a Functional chain."""
    inp = fastconv.Input((12, 12, 1))
    x = L.Conv2D(8, 3, activation="relu")(inp)
    x = L.MaxPooling2D(2)(x)
    x = L.Conv2D(12, 3)(x)
    x = L.Activation("relu")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    x = L.Dense(16, activation="relu")(x)
    x = L.Dropout(dropout)(x)
    x = L.Dense(1)(x)
    out = L.Activation("sigmoid")(x)
    return fastconv.Model(inp, out, device=device, seed=seed)


def test_functional_chain_trains_bitwise_as_its_sequential_on_cpu():
    _backend_or_skip("cpu")
    rng = np.random.default_rng(5)
    x, y = discs_and_squares(48, rng, size=12)
    runs = []
    for make in (lambda: tiny_convnet(device="cpu", seed=9, input_shape=(12, 12, 1)),
                 lambda: _chain("cpu", 9, 0.25)):
        model = make()
        model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        h = model.fit(x, y, batch_size=16, epochs=2, verbose=0)   # shuffles, drops out
        runs.append((h.history, model.get_weights(), model.predict(x), model.plan_summary()))
    assert runs[0][0] == runs[1][0]
    assert len(runs[0][1]) == len(runs[1][1]) == 8
    for a, b in zip(runs[0][1], runs[1][1]):
        assert np.array_equal(a, b)
    assert np.array_equal(runs[0][2], runs[1][2])
    assert runs[0][3] == runs[1][3]


def test_fusion_only_where_the_conv_output_has_one_reader():
    inp = fastconv.Input((8, 8, 2))
    a = L.Conv2D(3, 3, padding="same")(inp)                 # read by relu and by the Add
    r = L.Activation("relu")(a)
    b = L.MaxPooling2D(2)(L.Conv2D(3, 3, padding="same", activation="relu")(inp))
    c = L.MaxPooling2D(2)(L.Add()([r, a]))
    out = L.Dense(1, activation="sigmoid")(L.Flatten()(L.Concatenate()([b, c])))
    model = fastconv.Model(inp, out, device="reference", seed=0)
    assert model.plan_summary(training=False) == [      # depth first: b's branch first
        "conv2d_relu_maxpool", "conv", "relu", "add", "pool", "concat", "flatten", "dense",
        "sigmoid"]


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x, y = discs_and_squares(32, rng, size=12)
    model = residual_net(seed=4, input_shape=(12, 12, 1), dropout=0.25)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "res.fcm"
    model.save(path)
    back = fastconv.load_model(path, device="reference")
    assert isinstance(back, Functional)
    assert back.get_config() == model.get_config()
    assert [l.name for l in back.layers] == [l.name for l in model.layers]
    assert np.array_equal(back.predict(x), model.predict(x))
    h1 = model.fit(x, y, batch_size=16, epochs=1, verbose=0)     # optimizer state, rngs
    h2 = back.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert h1.history == h2.history
    for a, b in zip(model.get_weights(), back.get_weights()):
        assert np.array_equal(a, b)


def test_planned_weights_match_the_built_model():
    model = residual_net(seed=0)
    assert Functional.planned_weights(model.get_config()) == model.weight_specs()


SUMMARY = """\
__________________________________________________________________________________________________
Layer (type)                    Output Shape         Param #     Connected to                     
==================================================================================================
image (InputLayer)              (None, 8, 8, 2)      0                                            
__________________________________________________________________________________________________
conv2d_1 (Conv2D)               (None, 8, 8, 2)      38          image[0][0]                      
__________________________________________________________________________________________________
add_1 (Add)                     (None, 8, 8, 2)      0           conv2d_1[0][0]                   
                                                                 image[0][0]                      
__________________________________________________________________________________________________
flatten_1 (Flatten)             (None, 128)          0           add_1[0][0]                      
__________________________________________________________________________________________________
dense_1 (Dense)                 (None, 1)            129         flatten_1[0][0]                  
==================================================================================================
Total params: 167
Trainable params: 167
Non-trainable params: 0
__________________________________________________________________________________________________"""


def test_summary_has_a_connected_to_column():
    inp = fastconv.Input((8, 8, 2), name="image")
    x = L.Add()([L.Conv2D(2, 3, padding="same")(inp), inp])
    model = fastconv.Model(inp, L.Dense(1, activation="sigmoid")(L.Flatten()(x)), seed=0,
                           device="reference")
    lines = []
    model.summary(print_fn=lines.append)
    assert "\n".join(lines) == SUMMARY


# ----------------------------------------------------------------------------- errors

def test_add_and_concatenate_shape_errors_name_the_shapes():
    a, b = fastconv.Input((4, 4, 2)), fastconv.Input((4, 4, 3))
    with pytest.raises(ValueError, match=r"one shape.*\(None, 4, 4, 2\), \(None, 4, 4, 3\)"):
        L.Add()([a, b])
    c = fastconv.Input((5, 4, 3))
    with pytest.raises(ValueError, match=r"except on the concatenation axis.*\(None, 5, 4, 3\)"):
        L.Concatenate()([a, c])
    with pytest.raises(ValueError, match=r"only the last axis.*axis=1"):
        L.Concatenate(axis=1)([a, b])
    with pytest.raises(ValueError, match="at least 2 inputs, received 1"):
        L.Add()([a])
    with pytest.raises(TypeError, match="list of KerasTensors"):
        L.Add()(a)
    with pytest.raises(ValueError, match="`axis` must be an int, received axis='x'"):
        L.Concatenate(axis="x")


def test_layer_call_errors():
    a = fastconv.Input((4, 4, 2))
    conv = L.Conv2D(2, 3)
    conv(a)
    with pytest.raises(ValueError, match="already called.*second layer"):
        conv(a)
    with pytest.raises(TypeError, match="must be called on a KerasTensor.*ndarray"):
        L.Flatten()(np.zeros((1, 4, 4, 2), np.float32))
    with pytest.raises(TypeError, match="KerasTensor"):
        np.asarray(a)
    dense = L.Dense(2)
    with pytest.raises(ValueError, match=r"expects a 2-D input"):
        dense(a)
    seq = tiny_convnet(input_shape=(12, 12, 1))
    with pytest.raises(ValueError, match="already built"):
        seq.layers[0](fastconv.Input((12, 12, 1)))
    called = L.Dense(1)
    called(L.Flatten()(a))
    with pytest.raises(ValueError, match="Functional graph"):
        fastconv.Sequential([L.Input((4,)), called])


def test_model_graph_errors():
    a, b = fastconv.Input((4, 4, 2), name="a"), fastconv.Input((4, 4, 2), name="b")
    s = L.Add()([a, b])
    with pytest.raises(ValueError, match=r"depends on input 'b' of shape \(None, 4, 4, 2\).*"
                                         r"not in `inputs`"):
        fastconv.Model(a, s)
    with pytest.raises(ValueError, match="one input tensor for now, received 2"):
        fastconv.Model([a, b], s)
    c = fastconv.Input((4, 4, 2))
    out = L.Flatten()(c)
    fastconv.Model(c, out)
    with pytest.raises(ValueError, match="already built.*another model"):
        fastconv.Model(c, out)
    with pytest.raises(TypeError, match="must be a KerasTensor"):
        fastconv.Model(c, "out")
    d = fastconv.Input((4, 4, 2))
    with pytest.raises(ValueError, match=r"depends on input 'input' of shape \(None, 3\)"):
        fastconv.Model(d, fastconv.Input((3,)))
    flat = L.Flatten()
    y = L.Dense(1)(flat(d))
    flat._inbound = (y,)            # forged: layer calls cannot make a cycle
    with pytest.raises(ValueError, match="cycle through layer 'dense'"):
        fastconv.Model(d, y)
    bad = Functional.get_config(residual_net(seed=0))
    bad["layers"][2]["inbound_layers"] = ["nope"]
    with pytest.raises(ValueError, match="not all earlier layers"):
        Functional.from_config(bad)


def test_merge_layers_in_a_sequential_are_refused():
    with pytest.raises(L.LayerError, match="call it on a list"):
        fastconv.Sequential([L.Input((4, 4, 2)), L.Add()])


@pytest.mark.parametrize("make,shares", [
    (lambda: residual_net(seed=1, input_shape=(12, 12, 1)), True),
    (lambda: _merge_net(seed=1), True),
    # every step's output has its own shape (fused conv-relu-pool): nothing to share
    (lambda: tiny_convnet(seed=1, input_shape=(12, 12, 1), dropout=0.0), False)],
    ids=["residual", "merges", "sequential"])
def test_inference_shares_buffers_and_computes_what_training_does(make, shares):
    """The inference plan reuses buffers whose lifetimes are over (Plan._share_buffers);
    its logits are bitwise the training plan's forward (which keeps every buffer)."""
    model = make()
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    shape = model.input_shape[1:]
    x = np.random.default_rng(0).standard_normal((4,) + shape).astype(np.float32)
    y = np.zeros(4, np.float32)
    infer, train = model._plan("infer", 4), model._plan("train", 4)
    ids = [id(s.y) for s in infer.steps if not s.alias]
    assert (infer.shared_buffers > 0) == shares == (len(set(ids)) < len(ids))
    for plan in (infer, train):
        plan.load_slice(x, model._prep_labels(y, 4), 0, 4)
        plan.forward()
    assert np.array_equal(np.asarray(infer.logits), np.asarray(train.logits))
    assert infer.logits is not train.logits


CUDA_SIM_SCRIPT = simulator.CUDA_PRELUDE + """
from fastconv.optimizers import SGD
from tests.model_helpers import residual_net
rng = np.random.default_rng(0)
x = rng.random((8, 6, 6, 1), np.float32)
y = (rng.random(8) > 0.5).astype(np.float32)
out = {}
for bn in (False, True):
    for device in ("reference", "cuda"):
        m = residual_net(device=device, seed=3, input_shape=(6, 6, 1), filters=2,
                         batchnorm=bn)
        m.compile(optimizer=SGD(0.05, momentum=0.9), loss="binary_crossentropy",
                  metrics=["accuracy"])
        losses = [m.train_on_batch(x[k:k + 4], y[k:k + 4])[0] for k in (0, 4)]
        h = m.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
        out[device + ("_bn" if bn else "")] = {
            "losses": losses + h.history["loss"], "pred": m.predict(x).tolist(),
            "weights": [w.tolist() for w in m.get_weights()]}
print("RESULT:" + json.dumps(out))
"""


def test_residual_net_on_cuda_under_the_simulator_follows_the_reference():
    """The graph plan on device arrays (cuda's staged input re-pointed per batch, merges,
    accumulate_grad, the device-side fit step), without and with a BatchNormalization
    after the first conv (its moving statistics among the weights); tolerances of
    test_model_cuda_sim."""
    result = simulator.run(CUDA_SIM_SCRIPT, timeout=900)
    for suffix in ("", "_bn"):
        ref, dev = result["reference" + suffix], result["cuda" + suffix]
        np.testing.assert_allclose(dev["losses"], ref["losses"], rtol=2e-4, atol=1e-5)
        assert len(dev["weights"]) == len(ref["weights"])
        for a, b in zip(dev["weights"], ref["weights"]):
            np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(dev["pred"], ref["pred"], rtol=1e-3, atol=1e-4)
    assert len(result["cuda_bn"]["weights"]) == len(result["cuda"]["weights"]) + 4

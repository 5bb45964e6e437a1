"""DepthwiseConv2D and SeparableConv2D as layers of Sequential and Functional models:
Keras 3 arguments and their errors, shapes, weight order and parameter counts, config
and file round trips, the reference plan's gradients against finite differences, the cpu
plan against the reference at several shapes (odd sizes, batch 1, channel counts that
are not multiples of anything, strides 1 and 2, valid/same, depth multipliers 1-3, with
and without bias), a refusal on a backend without the ops, the cuda plan under the
simulator, and the keras.io Xception of the zoo (its parameter count is Keras's)."""
import json
import math
import types

import numpy as np
import pytest

import fastconv
from fastconv import Sequential, kernels
from fastconv import layers as L
from fastconv import optimizers as O
from fastconv.models import keras_io_xception

from .model_helpers import discs_and_squares
from .simulator import CUDA_PRELUDE
from .test_model_training import _loss_and_grads


def sep_net(device="reference", seed=0, input_shape=(9, 9, 3), filters=5, strides=2,
            padding="same", m=2, use_bias=True, act="relu"):
    """SeparableConv2D > DepthwiseConv2D > GlobalAveragePooling2D > Dense sigmoid."""
    return Sequential([
        L.Input(input_shape),
        L.SeparableConv2D(filters, 3, strides=strides, padding=padding, depth_multiplier=m,
                          activation=act, use_bias=use_bias),
        L.DepthwiseConv2D((3, 2), strides=(1, strides), padding=padding, depth_multiplier=m,
                          use_bias=use_bias, activation=act),
        L.GlobalAveragePooling2D(),
        L.Dense(1, activation="sigmoid"),
    ], device=device, seed=seed)


def graph_net(device="reference", seed=0, input_shape=(8, 8, 3)):
    """The keras.io Xception block with separable convs (its residual Add) in a graph."""
    inp = fastconv.Input(input_shape)
    x = L.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inp)
    y = L.SeparableConv2D(6, 3, padding="same", activation="relu")(x)
    y = L.SeparableConv2D(6, 3, padding="same", depth_multiplier=2)(y)
    y = L.MaxPooling2D(3, strides=2, padding="same")(y)
    x = L.Add()([y, L.Conv2D(6, 1, strides=2, padding="same")(x)])
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=3)(x)
    out = L.Dense(1, activation="sigmoid")(L.GlobalAveragePooling2D()(x))
    return fastconv.Model(inp, out, device=device, seed=seed)


# -- layers ------------------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: L.SeparableConv2D(0, 3), r"SeparableConv2D: `filters` must be a positive "
                                      r"integer, received filters=0"),
    (lambda: L.SeparableConv2D(4, 3, depth_multiplier=0),
     r"SeparableConv2D: `depth_multiplier` must be a positive integer, received "
     r"depth_multiplier=0"),
    (lambda: L.DepthwiseConv2D((3, 3, 3)), r"DepthwiseConv2D: `kernel_size` must be an int "
                                           r"or a tuple of 2 ints, received"),
    (lambda: L.DepthwiseConv2D(3, padding="full"), r"DepthwiseConv2D: `padding` must be "
                                                   r"'valid' or 'same', received "
                                                   r"padding='full'"),
    (lambda: L.DepthwiseConv2D(3, strides=0), r"`strides` must be >= 1, received strides=0"),
    (lambda: L.DepthwiseConv2D(3, use_bias="yes"), r"DepthwiseConv2D: `use_bias` must be True "
                                                   r"or False, received use_bias='yes'"),
    (lambda: L.SeparableConv2D(4, 3, dilation_rate=2), r"SeparableConv2D: only "
                                                       r"dilation_rate=1 is supported"),
    (lambda: L.SeparableConv2D(4, 3, activation="tanh"), r"SeparableConv2D: unknown "
                                                         r"activation 'tanh'"),
    (lambda: L.SeparableConv2D(4, 3, pointwise_initializer="ones"),
     r"`pointwise_initializer` must be one of .*received pointwise_initializer='ones'"),
    (lambda: L.DepthwiseConv2D(3, data_format="channels_first"),
     r"received data_format='channels_first'"),
])
def test_arguments_are_validated_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("layer", [
    L.DepthwiseConv2D((3, 2), strides=2, padding="same", depth_multiplier=3,
                      activation="relu", use_bias=False, name="dw", input_shape=(8, 8, 3)),
    L.SeparableConv2D(7, 3, strides=(2, 1), depth_multiplier=2, name="sep",
                      depthwise_initializer="he_uniform"),
])
def test_config_round_trips_through_serialize_and_json(layer):
    spec = L.serialize(layer)
    assert spec["class_name"] in L.LAYERS
    again = L.deserialize(json.loads(json.dumps(spec)))
    assert type(again) is type(layer) and again.get_config() == layer.get_config()


def test_keras_names_defaults_shapes_and_weight_order():
    dw = L.DepthwiseConv2D(3, depth_multiplier=2)
    assert (dw.strides, dw.padding, dw.activation, dw.use_bias) == ((1, 1), "valid", "linear",
                                                                    True)
    assert dw.build((None, 9, 8, 3)) == (None, 7, 6, 6)
    assert dw.weight_names == ("depthwise_kernel", "bias")
    assert dw.weight_shapes() == [(3, 3, 3, 2), (6,)] == dw.weight_shapes_for((None, 9, 8, 3))
    assert dw.count_params() == 60
    sep = L.SeparableConv2D(5, 3, strides=2, padding="same", depth_multiplier=2)
    assert sep.build((None, 9, 9, 3)) == (None, 5, 5, 5)
    assert sep.weight_names == ("depthwise_kernel", "pointwise_kernel", "bias")
    assert sep.weight_shapes() == [(3, 3, 3, 2), (1, 1, 6, 5), (5,)]
    assert sep.count_params() == 54 + 30 + 5 == sep.count_trainable_params()
    nob = L.SeparableConv2D(4, 3, use_bias=False)
    nob.build((None, 5, 5, 2))
    assert nob.weight_names == ("depthwise_kernel", "pointwise_kernel")
    assert nob.count_params() == 18 + 8
    assert L.DepthwiseConv2D.prefix == "depthwise_conv2d"
    assert L.SeparableConv2D.prefix == "separable_conv2d"
    with pytest.raises(L.LayerError, match=r"DepthwiseConv2D layer 'None' expects a 4-D input"):
        L.DepthwiseConv2D(3).build((None, 8, 3))
    with pytest.raises(L.LayerError, match=r"SeparableConv2D layer .*kernel.*\(None, 2, 2, 3\)"):
        L.SeparableConv2D(3, 3).build((None, 2, 2, 3))


def test_glorot_uniform_with_keras_fans():
    """Keras's fans for a (KH, KW, C, M) kernel: KH*KW*C in, KH*KW*M out; pointwise
    (1, 1, C*M, F): C*M in, F out. Values inside the limit and spread up to it."""
    sep = L.SeparableConv2D(40, 5, depth_multiplier=3)
    sep.build((None, 9, 9, 30), rng=np.random.default_rng(0))
    dk, pk, b = sep.get_weights()
    for w, limit in ((dk, math.sqrt(6 / (25 * 30 + 25 * 3))), (pk, math.sqrt(6 / (90 + 40)))):
        assert w.dtype == np.float32
        assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit
    assert not b.any()


def test_summary_counts_and_auto_names():
    model = sep_net()
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "separable_conv2d_1 (Separabl" in text and "depthwise_conv2d_1 (Depthwis" in text
    # sep: 3*3*3*2 + 6*5 + 5 = 89; depthwise (3, 2) over 5 channels, M 2: 60 + 10 = 70
    assert model.count_params() == 89 + 70 + 11
    assert "Total params: 170" in text


# -- planned: gradients, cpu against the reference, files, backends ----------------------

def test_gradients_match_finite_differences():
    """Directional derivatives of the loss along each weight array on the reference plan
    (no ReLU, so the loss is smooth; rel 2e-2 with h = 1e-2 in float32)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 7, 2)).astype(np.float32)
    y = np.array([0, 1, 1], np.float32)
    model = sep_net(input_shape=(7, 7, 2), filters=3, act=None, seed=2)
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    _, grads = _loss_and_grads(model, x, y)
    w0 = model.get_weights()
    for k, w in enumerate(w0):
        v = [np.zeros_like(u) for u in w0]
        v[k] = rng.standard_normal(w.shape)
        v[k] /= np.linalg.norm(v[k])
        losses = []
        for sign in (1, -1):
            model.set_weights([u + sign * 1e-2 * e for u, e in zip(w0, v)])
            losses.append(_loss_and_grads(model, x, y)[0])
        numeric = (losses[0] - losses[1]) / 2e-2
        assert float((grads[k] * v[k]).sum()) == pytest.approx(numeric, rel=2e-2, abs=1e-5), k


def _compare(make, x, y):
    """Same weights on reference and cpu: predictions, then one SGD step (loss and every
    weight). float32 kernels against the float64 reference: rtol 1e-4, atol 1e-5."""
    ref, cpu = make("reference"), make("cpu")
    cpu.set_weights(ref.get_weights())
    np.testing.assert_allclose(cpu.predict(x), ref.predict(x), rtol=1e-4, atol=1e-5)
    start = ref.get_weights()
    for m in (ref, cpu):
        m.compile(O.SGD(0.5), "binary_crossentropy")
    la, lb = ref.train_on_batch(x, y), cpu.train_on_batch(x, y)
    assert abs(la - lb) < 1e-5
    names = [f"{layer.name}.{w}" for layer in ref.layers for w in layer.weight_names]
    for name, a, b, s in zip(names, ref.get_weights(), cpu.get_weights(), start):
        assert not np.array_equal(a, s), f"{name} did not move"
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("n, shape, filters, strides, padding, m, use_bias", [
    (4, (9, 9, 3), 5, 2, "same", 2, True),
    (1, (7, 10, 5), 3, 1, "valid", 1, True),
    (3, (11, 6, 1), 7, 2, "valid", 3, False),
    (2, (5, 5, 7), 2, 1, "same", 2, False),
])
def test_cpu_plan_matches_the_reference(n, shape, filters, strides, padding, m, use_bias):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.float32)
    _compare(lambda d: sep_net(d, 3, shape, filters, strides, padding, m, use_bias), x, y)


def test_functional_graph_on_cpu_matches_the_reference():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 8, 8, 3)).astype(np.float32)
    _compare(lambda d: graph_net(d, seed=1), x, np.array([1, 0, 1], np.float32))


def test_separable_workspaces_share_one_scratch_buffer():
    """The SeparableConv2D steps of a plan take their one-step workspaces from one flat
    buffer of the largest size: mid in inference, dmid in training (mid itself is kept
    there: backward reads it)."""
    from fastconv.models._plan import SeparableStep
    model = graph_net("cpu")                    # workspaces (2, 4, 4, 4) and (2, 4, 4, 12)
    model.compile("sgd", "binary_crossentropy")
    infer = [s for s in model._plan("infer", 2).steps if isinstance(s, SeparableStep)]
    train = [s for s in model._plan("train", 2).steps if isinstance(s, SeparableStep)]
    assert [s.mid.shape for s in infer] == [(2, 4, 4, 4), (2, 4, 4, 12)]
    assert np.shares_memory(infer[0].mid, infer[1].mid)
    assert infer[0].mid.base.shape == (2 * 4 * 4 * 12,)
    assert np.shares_memory(train[0].dmid, train[1].dmid)
    assert not np.shares_memory(train[0].mid, train[1].mid)
    assert not any(np.shares_memory(s.mid, s.dmid) for s in train)


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_a_tiny_fit_reduces_the_loss(device):
    rng = np.random.default_rng(0)
    x, y = discs_and_squares(32, rng, size=12)
    model = sep_net(device, seed=1, input_shape=(12, 12, 1), filters=6)
    model.compile(O.Adam(0.03), "binary_crossentropy", ["accuracy"])
    loss = model.fit(x, y, batch_size=8, epochs=8, verbose=0, shuffle=False).history["loss"]
    assert loss[-1] < 0.8 * loss[0], loss


@pytest.mark.parametrize("make", [sep_net, graph_net], ids=["sequential", "functional"])
def test_save_and_load_round_trip(tmp_path, make):
    model = make("reference", seed=4)
    model.compile(O.Adam(0.01), "binary_crossentropy")
    shape = model.input_shape[1:]
    x = np.random.default_rng(0).standard_normal((4,) + shape).astype(np.float32)
    y = np.array([0, 1, 0, 1], np.float32)
    model.train_on_batch(x, y)
    path = tmp_path / "sep.fcm"
    model.save(path)
    loaded = fastconv.load_model(path, device="reference")
    assert loaded.get_config() == model.get_config()
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert model.train_on_batch(x, y) == loaded.train_on_batch(x, y)


def _cpu_without(drop, name):
    """The cpu backend as a module called `name` without the ops for which drop(op)."""
    cpu = kernels.get("cpu")
    fake = types.ModuleType(name)
    for op in dir(cpu):
        if not drop(op):
            setattr(fake, op, getattr(cpu, op))
    fake.NAME = name
    return fake


def test_a_backend_without_the_depthwise_ops_is_refused_naming_the_layer():
    model = sep_net("cpu")
    model._bind(_cpu_without(lambda name: name.startswith("depthwise_"), "fake"), "cpu")
    with pytest.raises(kernels.BackendUnavailable,
                       match=r"layer 'separable_conv2d_1' \(SeparableConv2D\) cannot run on "
                             r"backend 'fake': it lacks the op depthwise_conv2d_forward"):
        model.predict(np.zeros((2, 9, 9, 3), np.float32))




def test_separable_relu_fuses_into_the_pointwise_conv_and_computes_the_same():
    """On a backend with conv2d_relu the SeparableConv2D's relu runs in its pointwise conv
    (sepconv_relu); without it, as separate steps. Same weights, same predictions and the
    same SGD step (float32 both ways: rtol 1e-5)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 9, 9, 3)).astype(np.float32)
    y = np.array([1, 0, 1], np.float32)
    fused, plain = sep_net("cpu", seed=5), sep_net("cpu", seed=5)
    plain._bind(_cpu_without(lambda op: op in kernels.FUSED, "unfused"), "cpu")
    assert fused.plan_summary()[:3] == ["sepconv_relu", "depthwise", "relu"]
    assert plain.plan_summary()[:4] == ["sepconv", "relu", "depthwise", "relu"]
    np.testing.assert_allclose(fused.predict(x), plain.predict(x), rtol=1e-5, atol=1e-6)
    for m in (fused, plain):
        m.compile(O.SGD(0.5), "binary_crossentropy")
    assert abs(fused.train_on_batch(x, y) - plain.train_on_batch(x, y)) < 1e-6
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # a relu that a second layer also reads is not fused (the graph keeps the tensor)
    inp = fastconv.Input((6, 6, 2))
    t = L.SeparableConv2D(3, 3, padding="same", activation="relu")(inp)
    out = L.Dense(1, activation="sigmoid")(L.GlobalAveragePooling2D()(L.Add()([t, t])))
    assert fastconv.Model(inp, out, device="cpu").plan_summary()[:2] == ["sepconv_relu",
                                                                         "add"]
    inp = fastconv.Input((6, 6, 2))
    t = L.SeparableConv2D(3, 3, padding="same")(inp)
    u = L.Activation("relu")(t)
    out = L.Dense(1, activation="sigmoid")(L.GlobalAveragePooling2D()(L.Add()([t, u])))
    assert fastconv.Model(inp, out, device="cpu").plan_summary()[:2] == ["sepconv", "relu"]


CUDA_SIM_SCRIPT = CUDA_PRELUDE + """
from fastconv.optimizers import SGD
from tests.test_model_separable import sep_net
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 6, 6, 2)).astype(np.float32)
y = np.array([0, 1, 1, 0], np.float32)
out = {}
for device in ("reference", "cuda"):
    m = sep_net(device, seed=3, input_shape=(6, 6, 2), filters=3, use_bias=True)
    m.compile(optimizer=SGD(0.1), loss="binary_crossentropy")
    losses = [float(m.train_on_batch(x, y)) for _ in range(2)]
    out[device] = {"losses": losses, "pred": m.predict(x).tolist(),
                   "weights": [w.tolist() for w in m.get_weights()]}
print("RESULT:" + json.dumps(out))
"""


def test_cuda_plan_under_the_simulator_follows_the_reference():
    """Both layers on device arrays (the zero-bias constant, the separable workspace, the
    staged input): two SGD steps and predict, tolerances of test_model_cuda_sim."""
    from .simulator import run
    result = run(CUDA_SIM_SCRIPT, timeout=900)
    ref, dev = result["reference"], result["cuda"]
    np.testing.assert_allclose(dev["losses"], ref["losses"], rtol=2e-4, atol=1e-5)
    for a, b in zip(dev["weights"], ref["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(dev["pred"], ref["pred"], rtol=1e-3, atol=1e-4)


# -- the zoo -----------------------------------------------------------------------------

def test_keras_io_xception_has_the_keras_parameter_count():
    """Keras 3's model of the keras.io example: 2,731,065 parameters, 2,722,777 trainable
    (counted with Keras 3.15 on JAX); layer for layer as the example."""
    model = keras_io_xception(compile=False)
    assert model.input_shape == (None, 180, 180, 3) and model.output_shape == (None, 1)
    assert model.count_params() == 2_731_065
    assert model.count_trainable_params() == 2_722_777
    lines = []
    model.summary(print_fn=lines.append)
    assert "Total params: 2,731,065" in "\n".join(lines)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("SeparableConv2D") == 7 and kinds.count("BatchNormalization") == 8
    assert kinds.count("Add") == 3 and kinds.count("Conv2D") == 4
    assert kinds[:2] == ["InputLayer", "Rescaling"] and kinds[-3:] == [
        "GlobalAveragePooling2D", "Dropout", "Dense"]
    assert model.layers[-1].activation == "sigmoid" and model.layers[-2].rate == 0.25


def test_keras_io_xception_width_classes_and_errors():
    small = keras_io_xception((32, 32, 3), width=1 / 32, compile=False)
    assert small.count_params() == 4361            # Keras's count (make_xception.py)
    multi = keras_io_xception((16, 16, 1), num_classes=5, width=1 / 64, seed=0)
    assert multi.output_shape == (None, 5) and multi.layers[-1].activation == "softmax"
    assert multi._loss.name == "sparse_categorical_crossentropy"
    for bad, match in ((dict(width=0), r"width must be a number > 0, received 0"),
                       (dict(num_classes=1), r"num_classes must be an integer >= 2")):
        with pytest.raises(ValueError, match=match):
            keras_io_xception((16, 16, 3), **bad)


def test_tiny_keras_io_xception_trains_on_cpu():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (8, 24, 24, 3)).astype(np.float32)
    y = (np.arange(8) % 2).astype(np.float32)
    model = keras_io_xception((24, 24, 3), width=1 / 32, device="cpu", seed=0)
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.predict(x).shape == (8, 1)

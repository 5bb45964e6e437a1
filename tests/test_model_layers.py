"""Layers: Keras argument validation (messages show the received value), shapes,
get_config round trips, initialisers, and optimizers' Keras names and defaults."""
import numpy as np
import pytest

import fastconv
from fastconv import layers as L
from fastconv import optimizers as O


@pytest.mark.parametrize("make, match", [
    (lambda: L.Conv2D(0, 3), r"Conv2D: `filters` must be a positive integer, received filters=0"),
    (lambda: L.Conv2D(2.5, 3), r"received filters=2\.5"),
    (lambda: L.Conv2D(8, (3, 0)), r"`kernel_size` must be >= 1, received kernel_size=\(3, 0\)"),
    (lambda: L.Conv2D(8, "3"), r"kernel_size` must be an int or a tuple of 2 ints, received "
                               r"kernel_size='3'"),
    (lambda: L.Conv2D(8, 3, padding="full"), r"`padding` must be 'valid' or 'same', "
                                             r"received padding='full'"),
    (lambda: L.Conv2D(8, 3, activation="tanh"), r"unknown activation 'tanh'; choose one of "
                                                r"relu, sigmoid, softmax, linear"),
    (lambda: L.Conv2D(8, 3, input_shape=(5, 5)), r"`input_shape` must have 3 entries, "
                                                  r"received input_shape=\(5, 5\)"),
    (lambda: L.Conv2D(8, 3, data_format="channels_first"), r"received "
                                                           r"data_format='channels_first'"),
    (lambda: L.MaxPooling2D(0), r"`pool_size` must be >= 1, received pool_size=0"),
    (lambda: L.MaxPooling2D(2, strides=(1, 2, 3)), r"received strides=\(1, 2, 3\)"),
    (lambda: L.Dense(-1), r"Dense: `units` must be a positive integer, received units=-1"),
    (lambda: L.Dense(True), r"received units=True"),
    (lambda: L.Dropout(1.0), r"Dropout: `rate` must be a float in \[0, 1\), received rate=1\.0"),
    (lambda: L.Dropout("half"), r"received rate='half'"),
    (lambda: L.Activation("swish"), r"unknown activation 'swish'"),
    (lambda: L.Activation(None), r"received activation=None"),
    (lambda: L.Input((0, 3)), r"Input: `shape` must be a tuple of positive ints"),
    (lambda: L.Dense(3, name=""), r"`name` must be a non-empty string"),
    (lambda: L.Dense(3, kernel_initializer="orthogonal"), r"received "
                                                          r"kernel_initializer='orthogonal'"),
])
def test_layer_arguments_are_validated_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("layer", [
    L.Conv2D(7, (2, 3), strides=(2, 1), padding="same", activation="relu", name="c",
             input_shape=(9, 8, 3), kernel_initializer="he_uniform"),
    L.MaxPooling2D((3, 2), strides=1, padding="same"),
    L.Activation("softmax"),
    L.Flatten(),
    L.Dense(5, activation="sigmoid", input_shape=(12,)),
    L.Dropout(0.3, seed=4),
    L.InputLayer((4, 4, 2), name="inp"),
])
def test_get_config_round_trips(layer):
    spec = L.serialize(layer)
    again = L.deserialize(spec)
    assert type(again) is type(layer) and again.get_config() == layer.get_config()
    import json
    assert L.deserialize(json.loads(json.dumps(spec))).get_config() == layer.get_config()


def test_output_shapes_follow_keras_geometry():
    assert L.Conv2D(4, 3).compute_output_shape((None, 10, 9, 2)) == (None, 8, 7, 4)
    assert L.Conv2D(4, 3, strides=2, padding="same").compute_output_shape(
        (None, 10, 9, 2)) == (None, 5, 5, 4)
    assert L.MaxPooling2D(3).compute_output_shape((None, 148, 148, 32)) == (None, 49, 49, 32)
    assert L.MaxPooling2D(2, padding="same").compute_output_shape(
        (None, 21, 21, 64)) == (None, 11, 11, 64)
    assert L.Flatten().compute_output_shape((None, 10, 10, 64)) == (None, 6400)


def test_standalone_build_uses_the_global_seed():
    fastconv.set_seed(5)
    a = L.Dense(4)
    a.build((None, 3))
    fastconv.set_seed(5)
    b = L.Dense(4)
    b.build((None, 3))
    np.testing.assert_array_equal(a.get_weights()[0], b.get_weights()[0])
    assert a.count_params() == 16
    with pytest.raises(ValueError, match="set_seed: seed must be an int >= 0, received "
                                         "seed=-1"):
        fastconv.set_seed(-1)


def test_glorot_uniform_statistics():
    rng = np.random.default_rng(0)
    layer = L.Dense(400)
    layer.build((None, 600), rng=rng)
    k = layer.get_weights()[0]
    limit = np.sqrt(6 / 1000)
    assert k.dtype == np.float32 and np.abs(k).max() <= limit
    assert np.var(k) == pytest.approx(limit ** 2 / 3, rel=0.02)


def test_optimizers_have_keras_names_and_defaults():
    rms = O.get("rmsprop")
    assert isinstance(rms, O.RMSprop)
    assert (rms.learning_rate, rms.rho, rms.epsilon) == (0.001, 0.9, 1e-7)
    adam = O.get("Adam")
    assert (adam.learning_rate, adam.beta_1, adam.beta_2, adam.epsilon) == (0.001, 0.9, 0.999,
                                                                             1e-7)
    sgd = O.get("sgd")
    assert (sgd.learning_rate, sgd.momentum, sgd.nesterov) == (0.01, 0.0, False)
    assert O.RMSprop(lr=1e-4).learning_rate == 1e-4          # Keras 2's alias
    assert O.get(O.serialize(O.SGD(0.1, momentum=0.9, nesterov=True))).get_config() == {
        "learning_rate": 0.1, "momentum": 0.9, "nesterov": True}
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'"):
        O.get("adagrad")
    with pytest.raises(ValueError, match=r"RMSprop: `learning_rate` must be in \[0\.0, inf\), "
                                         r"received learning_rate=-1"):
        O.RMSprop(-1)
    with pytest.raises(ValueError, match=r"Adam: `beta_1` must be in \[0\.0, 1\.0\), received "
                                         r"beta_1=1\.5"):
        O.Adam(beta_1=1.5)


@pytest.mark.parametrize("opt", [O.SGD(0.1), O.SGD(0.1, momentum=0.9),
                                 O.SGD(0.1, momentum=0.9, nesterov=True), O.RMSprop(0.01),
                                 O.Adam(0.01)])
def test_model_updates_are_the_kernel_formulas(opt):
    """Two train_on_batch steps equal the reference update applied to the model's grads."""
    from fastconv.kernels import reference as R
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = (rng.random(6) > 0.5).astype(np.float32)
    model = fastconv.Sequential([L.Dense(3, activation="relu", input_shape=(4,)),
                                 L.Dense(1, activation="sigmoid")], device="reference", seed=0)
    model.compile(optimizer=opt, loss="binary_crossentropy")
    params = model.get_weights()
    state = [[np.zeros_like(p) for _ in opt.state_names] for p in params]
    for t in (1, 2):
        # gradients by hand on the reference ops
        w1, b1, w2, b2 = params
        h = R.relu_forward(R.dense_forward(x, w1, b1))
        z = R.dense_forward(h, w2, b2)
        _, dz = R.binary_crossentropy(y, z)
        dh, dw2, db2 = R.dense_backward(h, w2, dz)
        _, dw1, db1 = R.dense_backward(x, w1, R.relu_backward(dh, h), need_dx=False)
        for p, g, s in zip(params, (dw1, db1, dw2, db2), state):
            if isinstance(opt, O.SGD):
                R.sgd_update(p, g, s[0] if s else None, opt.learning_rate, opt.momentum,
                             opt.nesterov)
            elif isinstance(opt, O.RMSprop):
                R.rmsprop_update(p, g, s[0], opt.learning_rate, opt.rho, opt.epsilon)
            else:
                R.adam_update(p, g, s[0], s[1], t, opt.learning_rate, opt.beta_1, opt.beta_2,
                              opt.epsilon)
        model.train_on_batch(x, y)
        for a, b in zip(model.get_weights(), params):
            np.testing.assert_array_equal(a, b)
    assert opt.iterations == 2

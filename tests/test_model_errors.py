"""Bad input to the model: each a clear error naming the layer or model and the
expected vs actual value."""
import numpy as np
import pytest

import fastconv
from fastconv import layers as L
from fastconv.layers import LayerError

from .model_helpers import tiny_convnet


@pytest.fixture
def model():
    m = tiny_convnet(seed=0, input_shape=(12, 12, 3))
    m.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
    return m


def test_wrong_input_shape_to_fit_and_predict(model):
    x = np.zeros((4, 12, 12, 1), np.float32)
    y = np.zeros(4)
    msg = (r"sequential: x has shape \(4, 12, 12, 1\) but layer 'conv2d_1' \(Conv2D\) expects "
           r"input shape \(None, 12, 12, 3\)")
    with pytest.raises(ValueError, match=msg):
        model.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match=msg):
        model.predict(x)
    with pytest.raises(ValueError, match=r"x has shape \(4, 12, 12\) but"):
        model.predict(np.zeros((4, 12, 12), np.float32))
    with pytest.raises(ValueError, match=r"x has shape \(4, 12, 12, 1\) but"):
        model.evaluate(x, y)
    with pytest.raises(ValueError, match=r"x of batch 0 has shape \(2, 10, 12, 3\)"):
        model.fit([(np.zeros((2, 10, 12, 3)), np.zeros(2))], verbose=0)
    with pytest.raises(TypeError, match="x must hold numbers, received dtype <U1"):
        model.predict(np.full((1, 12, 12, 3), "a"))


def test_labels_of_the_wrong_shape(model):
    x = np.zeros((4, 12, 12, 3), np.float32)
    with pytest.raises(ValueError, match=r"labels y have shape \(4, 2\) but the model's output "
                                         r"is \(None, 1\) with loss binary_crossentropy: "
                                         r"expected \(4,\) or \(4, 1\)"):
        model.fit(x, np.zeros((4, 2)), verbose=0)
    with pytest.raises(ValueError, match=r"x has 4 samples but labels y have shape \(3,\)"):
        model.train_on_batch(x, np.zeros(3))
    with pytest.raises(ValueError, match=r"binary labels y must lie in \[0, 1\]"):
        model.fit(x, np.array([0, 1, 2, 1]), verbose=0)
    with pytest.raises(ValueError, match=r"labels y are required"):
        model.fit(x, verbose=0)
    soft = tiny_convnet(seed=0, input_shape=(12, 12, 3), classes=3)
    soft.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\), received min 0, max 3"):
        soft.fit(x, np.array([0, 1, 2, 3]), verbose=0)
    with pytest.raises(ValueError, match=r"expected class indices \(4,\) or \(4, 1\)"):
        soft.fit(x, np.zeros((4, 3)), verbose=0)
    soft.compile(optimizer="adam", loss="categorical_crossentropy")
    with pytest.raises(ValueError, match=r"expected one-hot \(4, 3\)"):
        soft.fit(x, np.array([0, 1, 2, 1]), verbose=0)


def test_unknown_optimizer_loss_activation_and_metric_names(model):
    with pytest.raises(ValueError, match=r"unknown optimizer 'adagrad'; use one of 'sgd', "
                                         r"'rmsprop', 'adam'"):
        model.compile(optimizer="adagrad", loss="binary_crossentropy")
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'; use one of "
                                         r"binary_crossentropy"):
        model.compile(optimizer="sgd", loss="hinge")
    with pytest.raises(ValueError, match=r"unknown metric 'f1_score'"):
        model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["f1_score"])
    with pytest.raises(ValueError, match=r"Dense: unknown activation 'gelu'"):
        L.Dense(3, activation="gelu")


def test_dense_before_flatten_on_a_4d_input():
    with pytest.raises(LayerError, match=r"Dense layer 'dense_1' expects a 2-D input \(batch, "
                                         r"features\), received input shape "
                                         r"\(None, 10, 10, 64\); add a Flatten\(\) layer"):
        fastconv.Sequential([L.Conv2D(64, 3, input_shape=(12, 12, 3)), L.Dense(10)],
                            device="reference")


def test_layer_shape_errors_name_the_layer():
    with pytest.raises(LayerError, match=r"Conv2D layer 'conv2d_1' expects a 4-D input \(batch, "
                                         r"height, width, channels\), received input shape "
                                         r"\(None, 64\)"):
        fastconv.Sequential([L.Input((64,)), L.Conv2D(8, 3)], device="reference")
    with pytest.raises(LayerError, match=r"MaxPooling2D layer 'max_pooling2d_1': pool height 3 "
                                         r"is larger than the input height 2 with "
                                         r"padding='valid' \(input shape \(None, 2, 2, 8\)\)"):
        fastconv.Sequential([L.Conv2D(8, 3, input_shape=(4, 4, 1)), L.MaxPooling2D(3)],
                            device="reference")
    with pytest.raises(LayerError, match=r"Activation layer 'activation_1' expects a 2-D input "
                                         r"\(batch, classes\) for softmax"):
        fastconv.Sequential([L.Input((4, 4, 1)), L.Activation("softmax")], device="reference")


def test_loss_needs_a_matching_head():
    m = fastconv.Sequential([L.Dense(1, input_shape=(3,))], device="reference")
    with pytest.raises(ValueError, match=r"loss binary_crossentropy needs the model to end in "
                                         r"a sigmoid activation .* its last layer is "
                                         r"'dense_1' \(Dense, activation='linear'\)"):
        m.compile(optimizer="sgd", loss="binary_crossentropy")
    m = fastconv.Sequential([L.Dense(2, activation="sigmoid", input_shape=(3,))],
                            device="reference")
    with pytest.raises(ValueError, match=r"binary_crossentropy needs 1 output unit, the model "
                                         r"outputs \(None, 2\)"):
        m.compile(optimizer="sgd", loss="binary_crossentropy")


def test_devices_and_usage_errors(model):
    with pytest.raises(ValueError, match=r"Sequential: unknown device 'tpu'; choose one of "
                                         r"reference, cpu, cuda"):
        fastconv.Sequential(device="tpu")
    with pytest.raises(ValueError, match=r"unknown device 'gpu'"):
        model.to("gpu")
    uncompiled = tiny_convnet(seed=0)
    with pytest.raises(RuntimeError, match=r"call compile\(optimizer, loss\) before fit"):
        uncompiled.fit(np.zeros((2, 16, 16, 1)), np.zeros(2), verbose=0)
    with pytest.raises(ValueError, match=r"cannot summarise before the model is built"):
        fastconv.Sequential([L.Dense(2)], device="reference").summary()
    with pytest.raises(ValueError, match=r"`batch_size` must be an int >= 1, received "
                                         r"batch_size=0"):
        model.fit(np.zeros((2, 12, 12, 3)), np.zeros(2), batch_size=0, verbose=0)
    with pytest.raises(ValueError, match=r"validation_split must be in \[0, 1\)"):
        model.fit(np.zeros((2, 12, 12, 3)), np.zeros(2), validation_split=1.5, verbose=0)
    with pytest.raises(TypeError, match=r"add\(\) takes a fastconv layer, received int"):
        model.add(3)
    with pytest.raises(ValueError, match=r"set_weights expects 8 arrays"):
        model.set_weights([np.zeros(3)])
    with pytest.raises(ValueError, match=r"layer 'conv2d_1' \(Conv2D\): kernel must have shape "
                                         r"\(3, 3, 3, 8\), received \(3, 3, 1, 8\)"):
        model.set_weights([np.zeros((3, 3, 1, 8))] + model.get_weights()[1:])


def test_unavailable_backend_says_why_at_first_use():
    m = tiny_convnet(device="cpu", seed=0)    # construction never needs the backend
    assert m.count_params() > 0
    try:
        fastconv.kernels.get("cpu")
    except fastconv.kernels.BackendUnavailable:
        with pytest.raises(fastconv.kernels.BackendUnavailable, match="backend 'cpu'"):
            m.predict(np.zeros((1, 16, 16, 1), np.float32))

"""ONNX export (fastconv.models.onnx_export, model.export_onnx, `fastconv export`):
the file passes onnx.checker, and ONNX Runtime's predictions on fresh inputs equal
fastconv's (atol 1e-5 on sigmoid/softmax outputs in [0, 1]; rtol 1e-4 + atol 1e-5 on
raw 4-D outputs, float32 sums in another order). onnx and onnxruntime are test oracles
only: exporting writes the protocol buffer itself."""
import os

import numpy as np
import pytest

import fastconv
from fastconv import layers as L
from fastconv.cli import main as cli
from fastconv.models.onnx_export import ExportError, model_to_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _check_and_run(data, x, name="input"):
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [name]
    return sess.run(None, {name: x})[0]


def _randomize_bn(model, rng):
    """Moving statistics and gamma/beta away from their initial values, so an export
    that ignored them (or swapped two) would not match."""
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            ws = [rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
                  if n in ("gamma", "moving_variance")
                  else rng.normal(0, 0.3, w.shape).astype(np.float32)
                  for n, w in zip(layer.weight_names, layer.get_weights())]
            layer.set_weights(ws)


def _graph_model(seed=0, classes=4):
    """Rescaling, strided 'same' conv, BatchNormalization on 4-D and 2-D, a residual
    Add, 'same' pooling with stride 2, both global poolings joined by Concatenate,
    Dropout and a softmax head: every kind the exporter translates but flatten."""
    inp = fastconv.Input((17, 19, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = L.Conv2D(8, 3, strides=2, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    y = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = L.Add()([x, y])
    x = L.MaxPooling2D(3, strides=2, padding="same")(x)
    x = L.Concatenate()([L.GlobalAveragePooling2D()(x), L.GlobalMaxPooling2D()(x)])
    x = L.Dense(6)(x)
    x = L.BatchNormalization(center=False)(x)
    x = L.Activation("relu")(x)
    x = L.Dropout(0.3)(x)
    out = L.Dense(classes, activation="softmax")(x)
    model = fastconv.Model(inp, out, device="cpu", seed=seed)
    _randomize_bn(model, np.random.default_rng(seed))
    return model


@pytest.mark.parametrize("classes", [2, 3])
def test_seed_model_matches_onnx_runtime(classes):
    """The seed network (Flatten then Dense: the Dense rows permuted, no Transpose)."""
    model = fastconv.models.small_convnet(input_shape=(40, 46, 3), seed=1, num_classes=classes)
    x = np.random.default_rng(0).uniform(0, 1, (5, 40, 46, 3)).astype(np.float32)
    data = model_to_onnx(model)
    ops = [n.op_type for n in onnx.load_from_string(data).graph.node]
    assert ops.count("Transpose") == 1 and "Dropout" not in ops
    got = _check_and_run(data, x)
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=0, atol=1e-5)


def test_graph_model_matches_onnx_runtime():
    model = _graph_model()
    x = np.random.default_rng(1).uniform(0, 255, (3, 17, 19, 3)).astype(np.float32)
    got = _check_and_run(model_to_onnx(model), x)
    want = model.predict(x, verbose=0)
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_average_pooling_and_augmentation():
    """AveragePooling2D 'same' with overhanging windows (the count excludes the padding)
    and augmentation layers (identities in inference, left out of the graph)."""
    model = fastconv.Sequential([
        L.RandomFlip(input_shape=(11, 10, 3)), L.RandomRotation(0.1),
        L.Conv2D(4, 3, padding="same"), L.AveragePooling2D(3, strides=2, padding="same"),
        L.AveragePooling2D((2, 3), strides=(1, 2)), L.Flatten(),
        L.Dense(2, activation="softmax")], device="cpu", seed=6)
    x = np.random.default_rng(6).normal(0, 1, (3, 11, 10, 3)).astype(np.float32)
    data = model_to_onnx(model)
    ops = [n.op_type for n in onnx.load_from_string(data).graph.node]
    assert ops == ["Transpose", "Conv", "AveragePool", "AveragePool", "Flatten", "Gemm",
                   "Softmax", "Identity"]
    np.testing.assert_allclose(_check_and_run(data, x), model.predict(x, verbose=0),
                               rtol=0, atol=1e-5)


def test_separable_and_depthwise():
    """DepthwiseConv2D (depth_multiplier 2, strides 2, 'same', no bias) and
    SeparableConv2D (relu) as grouped Convs, then the small keras.io xception."""
    model = fastconv.Sequential([
        L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, use_bias=False,
                          input_shape=(9, 8, 3)),
        L.DepthwiseConv2D((2, 3), depth_multiplier=1),
        L.SeparableConv2D(5, 3, padding="same", depth_multiplier=3, activation="relu"),
        L.GlobalAveragePooling2D(), L.Dense(3, activation="softmax")], device="cpu", seed=7)
    x = np.random.default_rng(7).normal(0, 1, (2, 9, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(_check_and_run(model_to_onnx(model), x),
                               model.predict(x, verbose=0), rtol=0, atol=1e-5)
    xc = fastconv.models.keras_io_xception((32, 32, 3), width=1 / 16, seed=8)
    _randomize_bn(xc, np.random.default_rng(8))
    x = np.random.default_rng(8).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(_check_and_run(model_to_onnx(xc), x), xc.predict(x, verbose=0),
                               rtol=0, atol=1e-5)


def test_flatten_read_by_other_layers_transposes():
    """A Flatten whose output a BatchNormalization reads: channels-last order by a
    Transpose (permuting the Dense rows would not be enough)."""
    model = fastconv.Sequential([
        L.Conv2D(4, 3, input_shape=(7, 6, 2)), L.Flatten(), L.BatchNormalization(),
        L.Dense(3, activation="softmax")], device="cpu", seed=2)
    _randomize_bn(model, np.random.default_rng(2))
    x = np.random.default_rng(2).normal(0, 1, (4, 7, 6, 2)).astype(np.float32)
    data = model_to_onnx(model)
    assert [n.op_type for n in onnx.load_from_string(data).graph.node].count("Transpose") == 2
    np.testing.assert_allclose(_check_and_run(data, x), model.predict(x, verbose=0),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("nchw", [False, True])
def test_image_output_fixed_batch_and_nchw(nchw):
    """A fully convolutional model (4-D output, back to NHWC unless nchw), batch fixed."""
    model = fastconv.Sequential([
        L.Conv2D(5, (3, 2), strides=(2, 1), padding="same", input_shape=(9, 8, 3),
                 activation="relu"),
        L.MaxPooling2D((2, 3), strides=(1, 2), padding="same"), L.Conv2D(3, 1)],
        device="cpu", seed=4)
    x = np.random.default_rng(4).normal(0, 1, (2, 9, 8, 3)).astype(np.float32)
    data = model_to_onnx(model, batch=2, nchw=nchw, opset=13)
    proto = onnx.load_from_string(data)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ([2, 3, 9, 8] if nchw else [2, 9, 8, 3])
    want = model.predict(x, verbose=0)
    got = _check_and_run(data, x.transpose(0, 3, 1, 2).copy() if nchw else x)
    if nchw:
        got = got.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_dynamic_batch_runs_any_size(tmp_path):
    model = _graph_model(seed=5, classes=2)
    path = tmp_path / "m.onnx"
    assert model.export_onnx(path) == path
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    for n in (1, 7):
        x = rng.uniform(0, 255, (n, 17, 19, 3)).astype(np.float32)
        np.testing.assert_allclose(sess.run(None, {"input": x})[0], model.predict(x, verbose=0),
                                   rtol=0, atol=1e-5)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="before the model is built"):
        model_to_onnx(fastconv.Sequential([L.Dense(2)]))
    model = fastconv.models.small_convnet(input_shape=(40, 40, 3), seed=0, compile=False)
    for bad in (12, 22, 17.0, True, "17"):
        with pytest.raises(ExportError, match="opset must be an int from 13 to 21"):
            model_to_onnx(model, opset=bad)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ExportError, match="batch must be None"):
            model_to_onnx(model, batch=bad)
    folder = tmp_path / "out.onnx"
    folder.mkdir()
    with pytest.raises(OSError, match="it is a folder"):
        model.export_onnx(folder)
    assert folder.is_dir()


def test_cli_export(tmp_path, capsys):
    model = fastconv.models.small_convnet(input_shape=(40, 40, 3), seed=3)
    model.save(tmp_path / "m.fcm")
    out = tmp_path / "m.onnx"
    assert cli(["export", str(tmp_path / "m.fcm"), str(out), "--batch", "3"]) == 0
    assert "opset 17" in capsys.readouterr().out
    x = np.random.default_rng(3).uniform(0, 1, (3, 40, 40, 3)).astype(np.float32)
    got = _check_and_run(out.read_bytes(), x)
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=0, atol=1e-5)
    before = out.read_bytes()
    assert cli(["export", str(tmp_path / "m.fcm"), str(out)]) == 1      # no silent overwrite
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert cli(["export", str(tmp_path / "m.fcm"), str(out), "--overwrite", "--opset",
                "9"]) == 1
    assert "opset must be an int from 13 to 21" in capsys.readouterr().err
    assert os.path.getsize(out) == len(before)

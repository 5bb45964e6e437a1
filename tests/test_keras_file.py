"""Keras 3 .keras files (fastconv.models.keras_file, keras_config): files written by
Keras 3 itself (tests/keras_files, made by make_files.py there) load without Keras and
predict what Keras predicted (1e-5 on sigmoid/softmax outputs); the optimizer state
loads too (one more step moves the weights as Keras's step did, 1e-6); fastconv ->
.keras -> fastconv is bitwise; bad files are refused with the layer, class and argument
named. When Keras is installed, fastconv's files also load in Keras itself."""
import io
import json
import os
import zipfile

import numpy as np
import pytest

import fastconv
from fastconv import layers as L
from fastconv.models.keras_file import KerasFileError, snake_case, weight_keys
from fastconv.models.keras_weights import KerasWeightsError

pytest.importorskip("h5py")
HERE = os.path.join(os.path.dirname(__file__), "keras_files")


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(HERE, "expected.npz")) as f:
        return dict(f)


def test_snake_case_and_keys_as_keras():
    assert [snake_case(c) for c in ("Conv2D", "MaxPooling2D", "BatchNormalization",
                                    "GlobalAveragePooling2D", "InputLayer", "Dense")] == [
        "conv2d", "max_pooling2d", "batch_normalization", "global_average_pooling2d",
        "input_layer", "dense"]
    assert weight_keys(["Conv2D", "Dense", "Conv2D", "Conv2D"]) == [
        "conv2d", "dense", "conv2d_1", "conv2d_2"]


def test_keras_sequential_file_predicts_and_trains_as_keras(expected):
    model = fastconv.load_model(os.path.join(HERE, "seq.keras"))
    assert type(model).__name__ == "Sequential" and model.compiled
    assert model.loss == "binary_crossentropy" and model.metrics == ["accuracy"]
    assert type(model.optimizer).__name__ == "RMSprop"
    assert model.optimizer.learning_rate == pytest.approx(1e-3)
    x, y = expected["x"], expected["y"]
    np.testing.assert_allclose(model.predict(x, verbose=0), expected["seq_pred"], rtol=0,
                               atol=1e-5)
    model.train_on_batch(x, y)      # continues from the file's RMSprop state
    after = [expected[f"seq_after_{k}"] for k in range(len(model.get_weights()))]
    for got, want in zip(model.get_weights(), after):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_keras_functional_file_predicts_as_keras(expected):
    model = fastconv.load_model(os.path.join(HERE, "fun.keras"), device="cpu")
    assert type(model).__name__ == "Functional"
    assert model.loss == "sparse_categorical_crossentropy"
    assert type(model.optimizer).__name__ == "Adam"
    np.testing.assert_allclose(model.predict(expected["x2"], verbose=0), expected["fun_pred"],
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("which", ["seq", "fun"])
def test_round_trip_is_bitwise(tmp_path, expected, which):
    model = fastconv.load_model(os.path.join(HERE, f"{which}.keras"))
    if which == "seq":
        model.train_on_batch(expected["x"], expected["y"])
    path = tmp_path / "m.keras"
    model.save(path)
    back = fastconv.load_model(path)
    assert back.get_config() == model.get_config()
    assert all(np.array_equal(a, b) for a, b in zip(back.get_weights(), model.get_weights()))
    assert back.loss == model.loss and back.optimizer.get_config() == model.optimizer.get_config()
    if which == "seq":      # the optimizer state too: the next step is bitwise the same
        model.train_on_batch(expected["x"], expected["y"])
        back.train_on_batch(expected["x"], expected["y"])
        assert all(np.array_equal(a, b) for a, b in zip(back.get_weights(), model.get_weights()))


def test_fastconv_models_save_as_keras(tmp_path):
    """Models made in fastconv (the seed network, a graph) round-trip through .keras."""
    for model in (fastconv.models.small_convnet(input_shape=(40, 40, 3), seed=1),
                  fastconv.Model(*_graph(), seed=2)):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        assert zipfile.ZipFile(path).namelist() == ["metadata.json", "config.json",
                                                    "model.weights.h5"]
        back = fastconv.load_model(path)
        x = np.random.default_rng(0).uniform(0, 1, (2,) + model.input_shape[1:]).astype(
            np.float32)
        assert np.array_equal(back.predict(x, verbose=0), model.predict(x, verbose=0))


def _graph():
    inp = fastconv.Input((8, 8, 2))
    a = L.Conv2D(3, 3, padding="same", activation="relu")(inp)
    b = L.BatchNormalization()(L.Conv2D(3, 1)(a))
    c = L.Concatenate()([L.Add()([a, b]), a])
    return inp, L.Dense(2, activation="softmax")(L.GlobalAveragePooling2D()(c))


def test_keras_loads_fastconv_files(tmp_path):
    """Keras 3 itself (an optional oracle, skipped where it is not installed)."""
    keras = pytest.importorskip("keras")
    model = fastconv.Model(*_graph(), seed=3)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    path = tmp_path / "g.keras"
    model.save(path)
    x = np.random.default_rng(1).uniform(0, 1, (3, 8, 8, 2)).astype(np.float32)
    theirs = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(theirs.predict(x, verbose=0)),
                               model.predict(x, verbose=0), rtol=0, atol=1e-5)
    model = fastconv.load_model(os.path.join(HERE, "new_layers.keras"))   # the newer layers
    model.save(tmp_path / "new.keras")
    x = np.random.default_rng(2).uniform(0, 255, (2, 16, 15, 3)).astype(np.float32)
    theirs = keras.saving.load_model(tmp_path / "new.keras")
    np.testing.assert_allclose(np.asarray(theirs.predict(x, verbose=0)),
                               model.predict(x, verbose=0), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- bad files

def _rewrite(src, dst, config=None, drop=(), add=(), weights=None):
    """A copy of the .keras file `src` with its config edited, members dropped or added."""
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    if config is not None:
        members["config.json"] = json.dumps(config(json.loads(members["config.json"]))).encode()
    if weights is not None:
        members["model.weights.h5"] = weights(members["model.weights.h5"])
    for n in drop:
        members.pop(n)
    members.update(dict(add))
    with zipfile.ZipFile(dst, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    return dst


def _edit_layer(index, **changes):
    def edit(config):
        config["config"]["layers"][index]["config"].update(changes)
        return config
    return edit


def _retype(index, class_name):
    def edit(config):
        config["config"]["layers"][index]["class_name"] = class_name
        return config
    return edit


@pytest.mark.parametrize("edit, message", [
    (_edit_layer(1, dilation_rate=[2, 2]),
     r"layer 'conv2d' \(Conv2D\): argument dilation_rate=\[2, 2\] is not supported"),
    (_edit_layer(1, use_bias=False), r"layer 'conv2d' \(Conv2D\): argument use_bias=False"),
    (_edit_layer(5, activity_regularizer={"class_name": "L2"}), r"'dense' \(Dense\): argument "
                                                                r"activity_regularizer"),
    (_edit_layer(5, kernel_regularizer={"class_name": "OrthogonalRegularizer"}),
     r"'dense' \(Dense\): kernel_regularizer .* is not one of Keras's L1, L2, L1L2"),
    (_edit_layer(1, activation="tanh"), r"unknown activation 'tanh'"),
    (_edit_layer(1, trainable=False), r"trainable=False"),
    (_edit_layer(3, frobnicate=1), r"argument frobnicate=1 is not supported by fastconv"),
    (_retype(2, "AveragePooling3D"), r"layer 'max_pooling2d' \(AveragePooling3D\): not a "
                                     r"layer fastconv supports"),
    (_retype(2, "Lambda"), r"Lambda layers hold code"),
])
def test_unsupported_configs_name_layer_and_argument(tmp_path, edit, message):
    bad = _rewrite(os.path.join(HERE, "seq.keras"), tmp_path / "bad.keras", config=edit)
    with pytest.raises((KerasFileError, ValueError), match=message):
        fastconv.load_model(bad)


def test_keras_regularizers_are_read_and_written(tmp_path):
    """A Keras 3 L2 kernel regularizer comes in as fastconv's and goes back out as
    Keras's entry (fastconv/models/keras_config.py)."""
    path = _rewrite(os.path.join(HERE, "seq.keras"), tmp_path / "reg.keras",
                    config=_edit_layer(5, kernel_regularizer={
                        "module": "keras.regularizers", "class_name": "L2",
                        "config": {"l2": 0.03}, "registered_name": None}))
    model = fastconv.load_model(path, device="reference")
    dense = next(layer for layer in model.layers if getattr(layer, "kernel_regularizer", None))
    assert dense.kernel_regularizer == fastconv.regularizers.L2(0.03)
    from fastconv.models import keras_config
    entry = next(e for e in keras_config.to_keras(model)["config"]["layers"]
                 if e["config"]["name"] == dense.name)
    assert entry["config"]["kernel_regularizer"] == {
        "module": "keras.regularizers", "class_name": "L2", "config": {"l2": 0.03},
        "registered_name": None}


def test_custom_object_refused(tmp_path):
    def custom(config):
        config["config"]["layers"][1]["registered_name"] = "my_package>MyConv"
        return config
    bad = _rewrite(os.path.join(HERE, "seq.keras"), tmp_path / "bad.keras", config=custom)
    with pytest.raises(KerasFileError, match="registered as 'my_package>MyConv'"):
        fastconv.load_model(bad)


def test_bad_members_refused(tmp_path):
    src = os.path.join(HERE, "seq.keras")
    cases = [
        (dict(drop=["model.weights.h5"]), "lacks model.weights.h5"),
        (dict(add=[("evil.py", b"import os")]), "unknown member 'evil.py'"),
        (dict(config=lambda c: "not a dict"), "config.json must hold a model dict"),
        (dict(weights=lambda b: b[:200]), "not a readable HDF5 file"),
    ]
    for k, (kw, message) in enumerate(cases):
        bad = _rewrite(src, tmp_path / f"bad{k}.keras", **kw)
        with pytest.raises(KerasFileError, match=message):
            fastconv.load_model(bad)
    raw = tmp_path / "raw.keras"
    with zipfile.ZipFile(src) as zf, zipfile.ZipFile(raw, "w") as out:
        for n in zf.namelist():
            out.writestr(n, b"x" if n == "config.json" else zf.read(n))
    with pytest.raises(KerasFileError, match="config.json is not valid JSON"):
        fastconv.load_model(raw)


def _h5_edit(data, fn):
    import h5py
    buf = io.BytesIO(data)
    with h5py.File(buf, "r+") as f:
        fn(f)
    return buf.getvalue()


def test_bad_weights_refused(tmp_path):
    src = os.path.join(HERE, "seq.keras")

    def reshape(f):
        del f["layers/dense/vars/0"]
        f["layers/dense/vars"].create_dataset("0", data=np.zeros((7, 6), np.float32))

    def nan(f):
        f["layers/dense/vars/1"][0] = np.nan

    def extra(f):
        f["layers"].create_group("conv2d_9").create_group("vars")

    def missing(f):
        del f["layers/dense_1/vars/1"]

    cases = [(reshape, r"layer 'dense' kernel has shape \(7, 6\), the config makes it "
                       r"\(30, 6\)"),
             (nan, r"non-finite"),
             (extra, r"layers the config does not have: conv2d_9"),
             (missing, r"layer 'dense_1' \(weights group layers/dense_1\) holds variables "
                       r"\['0'\], the config makes it 2")]
    for k, (fn, message) in enumerate(cases):
        bad = _rewrite(src, tmp_path / f"w{k}.keras", weights=lambda b, fn=fn: _h5_edit(b, fn))
        with pytest.raises(KerasWeightsError, match=message):
            fastconv.load_model(bad)


def test_declared_size_checked_before_inflating(tmp_path):
    """A member that declares more than the config's weights can need is refused from
    the zip's directory, before a byte is inflated."""
    src = os.path.join(HERE, "seq.keras")
    big = tmp_path / "big.keras"
    with zipfile.ZipFile(src) as zf, zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as out:
        for n in zf.namelist():
            data = zf.read(n)
            out.writestr(n, data + b"\0" * (50 << 20) if n == "model.weights.h5" else data)
    with pytest.raises(KerasFileError, match="more than the .* it can legitimately need"):
        fastconv.load_model(big)


def test_cli_converts_both_ways_and_predicts(tmp_path, capsys):
    from fastconv.cli import main
    src = os.path.join(HERE, "seq.keras")
    fcm, back = tmp_path / "m.fcm", tmp_path / "back.keras"
    assert main(["convert", src, str(fcm), "--class-names", "cats,dogs"]) == 0
    assert "fastconv model file" in capsys.readouterr().out
    assert main(["convert", str(fcm), str(back)]) == 0
    assert "Keras 3 .keras file" in capsys.readouterr().out
    model = fastconv.load_model(back)
    assert model.class_names == ["cats", "dogs"]
    assert main(["convert", str(fcm), str(back)]) == 1       # no silent overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["summary", str(back)]) == 0
    assert "classes: 0 = cats, 1 = dogs" in capsys.readouterr().out


# --------------------------------------------------------------------------- Keras 2 .h5

def test_keras2_full_model_files_predict_as_keras2():
    """Keras 2 `model.save("m.h5")` files (tests/keras_files/make_keras2_files.py, tf_keras
    2.21): architecture from model_config, weights by layer name, compile settings."""
    with np.load(os.path.join(HERE, "keras2_expected.npz")) as f:
        want = dict(f)
    seq = fastconv.load_model(os.path.join(HERE, "seq2.h5"))
    assert type(seq).__name__ == "Sequential" and seq.compiled
    assert seq.loss == "binary_crossentropy" and seq.metrics == ["accuracy"]
    np.testing.assert_allclose(seq.predict(want["x"], verbose=0), want["seq_pred"], rtol=0,
                               atol=1e-5)
    fun = fastconv.load_model(os.path.join(HERE, "fun2.h5"), compile=False)
    assert type(fun).__name__ == "Functional" and not fun.compiled
    np.testing.assert_allclose(fun.predict(want["x2"], verbose=0), want["fun_pred"], rtol=0,
                               atol=1e-5)


def test_keras2_full_model_converts_to_keras3(tmp_path, capsys):
    from fastconv.cli import main
    out = tmp_path / "seq.keras"
    assert main(["convert", os.path.join(HERE, "seq2.h5"), str(out)]) == 0
    assert "assumed" not in capsys.readouterr().out      # the file's own architecture
    a = fastconv.load_model(os.path.join(HERE, "seq2.h5"))
    b = fastconv.load_model(out)
    assert a.get_config()["layers"] == b.get_config()["layers"]
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_keras2_bad_files_refused(tmp_path):
    import h5py
    import shutil
    bad = tmp_path / "bad.h5"
    shutil.copy(os.path.join(HERE, "seq2.h5"), bad)
    with h5py.File(bad, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config["config"]["layers"][1]["config"]["groups"] = 2
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(KerasFileError, match=r"layer 'conv2d' \(Conv2D\): argument groups=2"):
        fastconv.load_model(bad)
    shutil.copy(os.path.join(HERE, "seq2.h5"), bad)
    with h5py.File(bad, "r+") as f:
        del f["model_weights/dense/dense/kernel:0"]
        f["model_weights/dense/dense"].create_dataset("kernel:0", data=np.zeros((3, 6)))
    with pytest.raises(KerasFileError, match=r"layer 'dense' holds weights of shapes "
                                             r"\[\(3, 6\), \(6,\)\], the config makes them "
                                             r"\[\(30, 6\), \(6,\)\]"):
        fastconv.load_model(bad)


def test_keras_file_with_the_new_layers(expected, tmp_path):
    """Augmentation layers, SeparableConv2D, DepthwiseConv2D (no bias), AveragePooling2D
    'same' from a file Keras 3 wrote: Keras's predictions (1e-5), and back through .keras."""
    model = fastconv.load_model(os.path.join(HERE, "new_layers.keras"))
    assert not model.compiled
    assert [type(l).__name__ for l in model.layers][:4] == [
        "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation"]
    np.testing.assert_allclose(model.predict(expected["x3"], verbose=0), expected["new_pred"],
                               rtol=0, atol=1e-5)
    model.save(tmp_path / "again.keras")
    back = fastconv.load_model(tmp_path / "again.keras")
    assert back.get_config() == model.get_config()
    assert all(np.array_equal(a, b) for a, b in zip(back.get_weights(), model.get_weights()))


def test_keras_seed_network_file(expected):
    """The seed network as Keras 3 saves it (at 40x40x3: the 150x150 file would be 1.7 MB)
    is fastconv's small_convnet layer for layer, compiled as the seed."""
    model = fastconv.load_model(os.path.join(HERE, "seed.keras"))
    ours = fastconv.small_convnet(input_shape=(40, 40, 3), compile=False)
    assert [type(l).__name__ for l in model.layers] == [type(l).__name__ for l in ours.layers]
    assert [s for _, _, s in model.weight_specs()] == [s for _, _, s in ours.weight_specs()]
    assert model.loss == "binary_crossentropy" and model.optimizer.learning_rate == \
        pytest.approx(1e-4)
    np.testing.assert_allclose(model.predict(expected["x4"], verbose=0), expected["seed_pred"],
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("which", ["seq", "fun", "new_layers"])
def test_keras2_h5_written_by_fastconv_round_trips(tmp_path, which):
    """model.save("m.h5") writes a Keras 2 full-model file (checked by hand to load in
    tf_keras 2.21 and Keras 3.15 with fastconv's predictions, 1e-7): back in fastconv
    the architecture, weights and compile settings are the same."""
    model = fastconv.load_model(os.path.join(HERE, f"{which}.keras"))
    model.class_names = ["a", "b", "c"][:max(2, model.output_shape[-1])]
    path = tmp_path / "m.h5"
    model.save(path)
    back = fastconv.load_model(path)
    assert back.get_config() == model.get_config()
    assert all(np.array_equal(a, b) for a, b in zip(back.get_weights(), model.get_weights()))
    assert back.compiled == model.compiled and back.class_names == model.class_names
    if model.compiled:
        assert back.loss == model.loss
        assert back.optimizer.get_config() == model.optimizer.get_config()


def test_keras_loads_fastconv_keras2_h5(tmp_path):
    """Keras 3 (an optional oracle) reads fastconv's .h5 as a legacy Keras file."""
    keras = pytest.importorskip("keras")
    model = fastconv.load_model(os.path.join(HERE, "fun.keras"))
    model.save(tmp_path / "fun.h5")
    x = np.random.default_rng(4).uniform(0, 255, (2, 9, 10, 3)).astype(np.float32)
    theirs = keras.models.load_model(tmp_path / "fun.h5")
    np.testing.assert_allclose(np.asarray(theirs.predict(x, verbose=0)),
                               model.predict(x, verbose=0), rtol=0, atol=1e-5)

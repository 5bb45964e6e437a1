"""AveragePooling2D in a model: Keras arguments, shapes, config and file round trips,
summary, the cpu plan against the reference's (inference and one training step), a fit
that learns, no allocation per training step, and a clear refusal on a backend without
the ops. The ops themselves: tests/test_avgpool.py and the op table."""
import types
import tracemalloc

import numpy as np
import pytest

import fastconv
from fastconv import Sequential, kernels
from fastconv import layers as L
from fastconv import optimizers as O

from .model_helpers import discs_and_squares


def avg_net(device="reference", seed=0, input_shape=(12, 12, 1)):
    """conv-relu, AveragePooling2D 'same' (overhanging windows), conv, AveragePooling2D
    valid with strides (1, 2), flatten, dense."""
    return Sequential([
        L.Input(input_shape),
        L.Conv2D(5, 3, activation="relu"),
        L.AveragePooling2D(3, strides=2, padding="same"),
        L.Conv2D(4, 2),
        L.AveragePooling2D(2, strides=(1, 2)),
        L.Flatten(),
        L.Dense(1, activation="sigmoid"),
    ], device=device, seed=seed)


@pytest.mark.parametrize("make, match", [
    (lambda: L.AveragePooling2D(0), r"AveragePooling2D: `pool_size` must be >= 1, received "
                                    r"pool_size=0"),
    (lambda: L.AveragePooling2D(2, strides=(1, 2, 3)), r"AveragePooling2D: .*received "
                                                       r"strides=\(1, 2, 3\)"),
    (lambda: L.AveragePooling2D(2, padding="full"), r"AveragePooling2D: `padding` must be "
                                                    r"'valid' or 'same', received "
                                                    r"padding='full'"),
    (lambda: L.AveragePooling2D(data_format="channels_first"), r"received "
                                                               r"data_format='channels_first'"),
])
def test_arguments_are_validated_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_shapes_defaults_and_config_round_trip():
    layer = L.AveragePooling2D()
    assert (layer.pool_size, layer.strides, layer.padding) == ((2, 2), (2, 2), "valid")
    names = [l.name for l in avg_net().layers if isinstance(l, L.AveragePooling2D)]
    assert len(names) == 2 and all(n.startswith("average_pooling2d") for n in names)
    assert L.AveragePooling2D(3, 2, "same").compute_output_shape((None, 7, 8, 5)) == \
        (None, 4, 4, 5)
    assert L.AveragePooling2D((2, 3), (1, 2)).compute_output_shape((None, 7, 8, 5)) == \
        (None, 6, 3, 5)
    layer = L.AveragePooling2D((3, 2), strides=1, padding="same", name="ap")
    again = L.deserialize(L.serialize(layer))
    assert type(again) is L.AveragePooling2D and again.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="pool"):
        L.AveragePooling2D(5).compute_output_shape((None, 4, 4, 1))


def test_summary_lists_the_layer_without_parameters():
    lines = []
    avg_net().summary(print_fn=lines.append)
    rows = [r for r in lines if r.startswith("average_pooling2d")]
    assert len(rows) == 2 and all("(Average" in r for r in rows)   # Keras truncates the type
    assert "(None, 5, 5, 5)" in rows[0] and rows[0].rstrip().endswith(" 0")
    assert "(None, 3, 2, 4)" in rows[1] and rows[1].rstrip().endswith(" 0")
    assert "Total params: 159" in lines


def test_cpu_plan_matches_the_reference_forward_and_one_training_step():
    """Same weights on both backends: predictions, then one SGD step's loss and weights.
    float32 kernels against the float64 reference: rtol 1e-4 / atol 1e-5."""
    rng = np.random.default_rng(1)
    x, y = discs_and_squares(6, rng, size=12)
    ref, cpu = avg_net("reference", 4), avg_net("cpu", 4)
    cpu.set_weights(ref.get_weights())
    np.testing.assert_allclose(cpu.predict(x), ref.predict(x), rtol=1e-4, atol=1e-5)
    for m in (ref, cpu):
        m.compile(O.SGD(0.5), "binary_crossentropy")
    assert abs(ref.train_on_batch(x, y) - cpu.train_on_batch(x, y)) < 1e-5
    start = avg_net("reference", 4).get_weights()
    for a, b, w0 in zip(ref.get_weights(), cpu.get_weights(), start):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
        assert not np.array_equal(a, w0)          # the gradient reached every weight


def test_predict_equals_the_ops_composed_by_hand():
    """The layer is avgpool2d_forward with its pool, strides and padding."""
    from fastconv.kernels import reference as R
    x = np.random.default_rng(2).standard_normal((2, 7, 9, 3)).astype(np.float32)
    model = Sequential([L.Input((7, 9, 3)), L.AveragePooling2D(3, 2, "same"), L.Flatten()],
                       device="cpu")
    want = R.avgpool2d_forward(x, 3, 2, "same").reshape(2, -1)
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-5, atol=1e-6)   # float32 sums


def test_a_tiny_fit_reduces_the_loss():
    """A target average pooling can see: is the top half brighter than the bottom?"""
    rng = np.random.default_rng(0)
    x = rng.random((32, 12, 12, 1)).astype(np.float32)
    y = (x[:, :6].mean(axis=(1, 2, 3)) > x[:, 6:].mean(axis=(1, 2, 3))).astype(np.float32)
    model = avg_net("cpu", seed=1)
    model.compile(O.Adam(0.02), "binary_crossentropy")
    loss = model.fit(x, y, batch_size=8, epochs=14, verbose=0, shuffle=False).history["loss"]
    assert loss[-1] < 0.7 * loss[0], loss


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x, y = discs_and_squares(16, rng, size=12)
    model = avg_net("cpu", seed=2)
    model.compile(O.Adam(0.01), "binary_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "avg.fcm"
    model.save(path)
    loaded = fastconv.load_model(path, device="cpu")
    assert loaded.get_config() == model.get_config()
    assert [type(l).__name__ for l in loaded.layers].count("AveragePooling2D") == 2
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_steady_state_training_step_allocates_no_buffers():
    from .test_model_alloc import MAX_NET_OBJECT_BYTES, MAX_TRANSIENT_BYTES, _measure
    rng = np.random.default_rng(0)
    x, y = discs_and_squares(256, rng, size=12)
    model = avg_net("cpu", seed=0)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    tracemalloc.start()
    try:
        peaks, nets, numpy_net = _measure(model, x, y, batch_size=64)
    finally:
        tracemalloc.stop()
    assert max(peaks) < MAX_TRANSIENT_BYTES, f"per-step peak traced bytes {peaks}"
    assert numpy_net == 0, f"NumPy buffers kept over the steady-state steps: {numpy_net} B"
    assert max(nets) < MAX_NET_OBJECT_BYTES, f"per-step net traced bytes {nets}"


def test_a_backend_without_the_ops_is_refused_at_plan_time_naming_the_layer():
    cpu = kernels.get("cpu")
    fake = types.ModuleType("fake")
    for name in dir(cpu):
        if not name.startswith("avgpool2d_"):
            setattr(fake, name, getattr(cpu, name))
    fake.NAME = "fake"
    model = avg_net("cpu")
    model._bind(fake, "cpu")
    with pytest.raises(kernels.BackendUnavailable, match=r"layer 'average_pooling2d\w*' "
                       r"\(AveragePooling2D\) cannot run on backend 'fake': it lacks the op "
                       r"avgpool2d_forward"):
        model.predict(np.zeros((1, 12, 12, 1), np.float32))


# -- Keras 3 as the oracle (tests/keras_vectors/make_avgpool_model.py) -----------------

KERAS_MODEL = __import__("pathlib").Path(__file__).resolve().parent / "keras_vectors" / \
    "avgpool_model.npz"


def keras_model(device, augment):
    """make_avgpool_model.build(augment), layer for layer."""
    return Sequential([L.Input((9, 9, 2))]
                      + ([L.RandomFlip(), L.RandomRotation(0.2)] if augment else [])
                      + [L.Conv2D(3, 3, padding="same", activation="relu"),
                         L.AveragePooling2D(3, strides=2, padding="same"),
                         L.Conv2D(2, 2), L.AveragePooling2D((2, 3), strides=(1, 2)),
                         L.Flatten(), L.Dense(1, activation="sigmoid")],
                      device=device, seed=0)


def _keras_run():
    with np.load(KERAS_MODEL) as f:
        run = {k: f[k] for k in f.files}
    count = sum(1 for k in run if k[0] == "w" and k[1:].isdigit())
    return run, [run[f"w{k}"] for k in range(count)], [run[f"a{k}"] for k in range(count)]


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_same_weights_give_keras_predictions_augmentation_layers_included(device):
    """Inference: Keras's predict, where RandomFlip and RandomRotation pass x through.
    rtol 1e-5, atol 1e-6."""
    run, weights, _ = _keras_run()
    model = keras_model(device, augment=True)
    model.set_weights(weights)
    np.testing.assert_allclose(model.predict(run["x"]), run["pred"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_one_training_step_moves_the_weights_as_keras(device):
    """One SGD(0.1) step: the loss to 1e-5 and every weight's change to 1e-4 of that
    array's largest change plus 1e-6 (the gradient through both poolings, 'same'
    windows overhanging the edge included)."""
    run, before, after = _keras_run()
    model = keras_model(device, augment=False)
    model.set_weights(before)
    model.compile(O.SGD(learning_rate=0.1), "binary_crossentropy")
    loss = model.train_on_batch(run["x"], run["y"])
    assert abs(loss - float(run["loss"])) < 1e-5
    for b, mine, keras in zip(before, model.get_weights(), after):
        want = keras.astype(np.float64) - b
        assert np.abs(want).max() > 1e-4
        np.testing.assert_allclose(mine.astype(np.float64) - b, want, rtol=0,
                                   atol=1e-4 * np.abs(want).max() + 1e-6)


CUDA_SIM_SCRIPT = """
import json, sys
import numpy as np
from fastconv import Sequential, kernels
from fastconv import layers as L
from fastconv import optimizers as O
try:
    kernels.get("cuda")
except Exception as exc:
    print("RESULT:" + json.dumps(dict(skip=str(exc))))
    raise SystemExit(0)
rng = np.random.default_rng(0)
x = rng.random((3, 7, 8, 2)).astype(np.float32)
y = np.array([0, 1, 1], np.float32)
got = {}
for dev in ("cpu", "cuda"):
    m = Sequential([L.Input((7, 8, 2)), L.AveragePooling2D(3, strides=2, padding="same"),
                    L.Conv2D(2, 2), L.AveragePooling2D((2, 1), strides=1), L.Flatten(),
                    L.Dense(1, activation="sigmoid")], device=dev, seed=1)
    pred = m.predict(x)
    m.compile(O.SGD(0.5), "binary_crossentropy")
    loss = m.train_on_batch(x, y)
    got[dev] = (pred, loss, m.get_weights())
print("RESULT:" + json.dumps(dict(
    predict=float(np.abs(got["cpu"][0] - got["cuda"][0]).max()),
    loss=abs(got["cpu"][1] - got["cuda"][1]),
    weights=max(float(np.abs(a - b).max()) for a, b in zip(got["cpu"][2], got["cuda"][2])))))
"""


def test_the_cuda_plan_matches_cpu_under_the_simulator():
    """AveragePooling2D steps on cuda (the simulator): inference and one training step
    give cpu's predictions, loss and weights (1e-5)."""
    try:
        import fastconv.kernels.cuda  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"fastconv.kernels.cuda does not import: {exc}")
    from .simulator import run
    got = run(CUDA_SIM_SCRIPT, timeout=600)
    if "skip" in got:
        pytest.skip(got["skip"])
    assert got["predict"] < 1e-5 and got["loss"] < 1e-5 and got["weights"] < 1e-5, got

"""The augmentation layers (Keras 3 RandomFlip, RandomRotation, RandomZoom,
RandomTranslation): geometry against Keras 3 itself (tests/keras_vectors/augment.npz)
and by hand (flips exact, a quarter turn), seeded reproducibility, identity in predict
and evaluate, one warp per image for consecutive layers, the refusal of a model that
would need a gradient through one, arguments, config and file round trips, and no
allocation per training step."""
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import Sequential
from fastconv import layers as L
from fastconv import optimizers as O
from fastconv.layers import augmentation as A
from fastconv.models import _plan

KERAS = Path(__file__).resolve().parent / "keras_vectors" / "augment.npz"
N_KERAS = 8


def _run(layers, x, seed=0):
    """augment_batch with one generator per layer, seeded seed, seed + 1, ..."""
    for k, layer in enumerate(layers):
        layer.name = layer.name or f"aug{k}"
    out = np.empty_like(x)
    rngs = [np.random.default_rng(seed + k) for k in range(len(layers))]
    return A.augment_batch(layers, rngs, x, out, np.empty((2, 3)))


@pytest.mark.parametrize("case", range(N_KERAS))
def test_geometry_matches_keras(case):
    """Fixed draws (factor lower == upper): the output is Keras 3's (JAX backend) to
    atol 1e-5: rotations (a quarter turn, 36 and -25 degrees, constant and wrap fills),
    zooms in and out, with and without width_factor, translations."""
    d = np.load(KERAS)
    layer = getattr(L, str(d[f"layer{case}"]))(**json.loads(str(d[f"config{case}"])))
    got = _run([layer], d[f"x{case}"])
    np.testing.assert_allclose(got, d[f"y{case}"], rtol=1e-5, atol=1e-5)


def test_the_keras_vectors_hold_every_case():
    d = np.load(KERAS)
    assert {str(d[f"layer{k}"]) for k in range(N_KERAS)} == {
        "RandomRotation", "RandomZoom", "RandomTranslation"}
    assert f"x{N_KERAS}" not in d


@pytest.mark.parametrize("mode, allowed", [
    ("horizontal", ("id", "h")), ("vertical", ("id", "v")),
    ("horizontal_and_vertical", ("id", "h", "v", "hv"))])
def test_flips_are_exact_and_each_kind_occurs(mode, allowed):
    x = np.random.default_rng(0).standard_normal((40, 5, 6, 3)).astype(np.float32)
    out = _run([L.RandomFlip(mode)], x)
    kinds = {"id": lambda a: a, "h": lambda a: a[:, ::-1], "v": lambda a: a[::-1],
             "hv": lambda a: a[::-1, ::-1]}
    seen = set()
    for img, got in zip(x, out):
        match = [k for k, f in kinds.items() if np.array_equal(got, f(img))]
        assert match and match[0] in allowed, match
        seen.add(match[0])
    assert seen == set(allowed)


def test_a_quarter_turn_is_a_rotation_of_the_pixel_grid():
    """factor 0.25 (90 degrees, counter-clockwise) on a square image: np.rot90, to
    rounding (cos(pi/2) is 6e-17, not 0)."""
    x = np.random.default_rng(1).standard_normal((2, 6, 6, 2)).astype(np.float32)
    out = _run([L.RandomRotation((0.25, 0.25))], x)
    np.testing.assert_allclose(out, np.rot90(x, 1, axes=(1, 2)), atol=1e-5)
    out = _run([L.RandomRotation((-0.5, -0.5))], x)
    np.testing.assert_allclose(out, x[:, ::-1, ::-1], atol=1e-5)


def test_consecutive_layers_compose_into_one_warp():
    """Flip then zoom: one warp with the composed map equals flipping (exact) and then
    zooming; the plan groups them into one step when they fill alike, two otherwise."""
    x = np.random.default_rng(2).standard_normal((6, 7, 8, 1)).astype(np.float32)
    flip, zoom = L.RandomFlip("horizontal"), L.RandomZoom((0.2, 0.2))
    both = _run([flip, zoom], x, seed=5)
    flipped = _run([L.RandomFlip("horizontal")], x, seed=5)       # same draws: seed 5
    np.testing.assert_allclose(both, _run([L.RandomZoom((0.2, 0.2))], flipped, seed=6),
                               atol=1e-5)
    model = Sequential([L.Input((7, 8, 1)), L.RandomFlip(), L.RandomRotation(0.1),
                        L.RandomZoom(0.1), L.RandomTranslation(0.1, 0.1, fill_mode="wrap"),
                        L.Flatten(), L.Dense(1, activation="sigmoid")])
    ops, _ = model._logical_ops()
    assert _plan.describe(ops, fastconv.kernels.get("reference")) == [
        "augment", "augment", "flatten", "dense"]


def augmented_net(device="cpu", seed=0, first=None):
    first = first or []
    return Sequential([L.Input((8, 8, 1))] + first + [
        L.Rescaling(0.5), L.RandomFlip(), L.RandomRotation(0.1), L.RandomZoom(0.2),
        L.RandomTranslation(0.1, 0.2), L.Conv2D(3, 3, activation="relu"), L.Flatten(),
        L.Dense(1, activation="sigmoid")], device=device, seed=seed)


def _data(n=16):
    rng = np.random.default_rng(0)
    x = rng.random((n, 8, 8, 1)).astype(np.float32)
    return x, (x[:, :4].mean(axis=(1, 2, 3)) > 0.5).astype(np.float32)


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_training_is_reproducible_from_the_seed_and_augments(device):
    x, y = _data()
    runs = []
    for seed in (3, 3, 4):
        model = augmented_net(device, seed=seed)
        model.compile(O.SGD(0.1), "binary_crossentropy")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        runs.append(model.get_weights())
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a, b)
    model = augmented_net(device, seed=3)
    model.compile(O.SGD(0.1), "binary_crossentropy")
    model.train_on_batch(x[:8], y[:8])
    plan = model._plans[("train", 8)]
    step = next(s for s in plan.steps if isinstance(s, _plan.AugmentStep))
    assert len(step.layers) == 4                                 # one warp per image
    assert not np.allclose(np.asarray(step.y), np.asarray(step.x))  # training augments


def test_a_layer_seed_fixes_its_draws_whatever_the_model_seed():
    x, _ = _data(4)
    outs = []
    for model_seed in (1, 2):
        model = Sequential([L.Input((8, 8, 1)), L.RandomRotation(0.2, seed=11), L.Flatten(),
                            L.Dense(1, activation="sigmoid")], device="cpu", seed=model_seed)
        model.compile("sgd", "binary_crossentropy")
        model.train_on_batch(x, np.zeros(4, np.float32))
        outs.append(np.array(model._plans[("train", 4)].steps[0].y))
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_predict_and_evaluate_are_the_identity(device):
    x, y = _data(6)
    model = Sequential([L.Input((8, 8, 1)), L.RandomFlip(), L.RandomRotation(0.3),
                        L.RandomZoom(0.3), L.RandomTranslation(0.2, 0.2), L.Flatten()],
                       device=device)
    np.testing.assert_array_equal(model.predict(x), x.reshape(6, -1))
    a = augmented_net(device, seed=2)
    plain = Sequential([L.Input((8, 8, 1)), L.Rescaling(0.5),
                        L.Conv2D(3, 3, activation="relu"), L.Flatten(),
                        L.Dense(1, activation="sigmoid")], device=device)
    plain.set_weights(a.get_weights())
    np.testing.assert_array_equal(a.predict(x), plain.predict(x))
    for m in (a, plain):
        m.compile("sgd", "binary_crossentropy")
    assert a.evaluate(x, y, verbose=0) == plain.evaluate(x, y, verbose=0)


def test_a_model_that_needs_a_gradient_through_one_is_refused_when_it_trains():
    """Conv2D before RandomFlip: fit refuses with the layer's name; predict (identity)
    still works. Weightless layers before it (Rescaling) are fine (tested above)."""
    model = Sequential([L.Input((8, 8, 1)), L.Conv2D(2, 3), L.RandomFlip(name="flip"),
                        L.Flatten(), L.Dense(1, activation="sigmoid")], device="cpu")
    x, y = _data(4)
    assert model.predict(x).shape == (4, 1)
    model.compile("sgd", "binary_crossentropy")
    with pytest.raises(L.LayerError, match=r"layer 'flip' \(RandomFlip\) has a layer with "
                                           r"weights before it: fastconv passes no gradient "
                                           r"through augmentation layers"):
        model.fit(x, y, epochs=1, verbose=0)


def test_a_functional_model_with_augmentation_at_the_input_trains():
    inputs = fastconv.Input((8, 8, 1))
    h = L.RandomFlip(seed=1)(inputs)
    h = L.Conv2D(2, 3, activation="relu")(h)
    outputs = L.Dense(1, activation="sigmoid")(L.Flatten()(h))
    model = fastconv.Model(inputs, outputs)
    model.compile(O.SGD(0.1), "binary_crossentropy")
    x, y = _data(8)
    before = model.get_weights()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("make, match", [
    (lambda: L.RandomFlip("diagonal"), r"RandomFlip: `mode` must be one of horizontal, "
                                       r"vertical, horizontal_and_vertical, received "
                                       r"mode='diagonal'"),
    (lambda: L.RandomRotation("a lot"), r"RandomRotation: `factor` must be a number or a "
                                        r"pair \(lower, upper\), received factor='a lot'"),
    (lambda: L.RandomRotation((0.2, 0.1)), r"`factor` cannot have an upper bound lesser "
                                           r"than the lower bound"),
    (lambda: L.RandomRotation(0.1, fill_mode="mirror"), r"`fill_mode` must be one of "
                                                        r"reflect, wrap, constant, nearest"),
    (lambda: L.RandomRotation(0.1, interpolation="nearest"), r"`interpolation` must be one "
                                                             r"of bilinear"),
    (lambda: L.RandomRotation(0.1, fill_value=float("nan")), r"`fill_value` must be a finite"),
    (lambda: L.RandomZoom((-1.5, 0.2)), r"RandomZoom: `height_factor` must have values "
                                        r"larger than -1"),
    (lambda: L.RandomTranslation(1.2, 0.1), r"RandomTranslation: `height_factor` must have "
                                            r"values between \[-1, 1\]"),
    (lambda: L.RandomFlip(seed=-1), r"RandomFlip: seed must be None or an int >= 0"),
    (lambda: L.RandomZoom(0.1, data_format="channels_first"), r"received "
                                                              r"data_format='channels_first'"),
])
def test_arguments_are_validated_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_keras_defaults_shapes_and_config_round_trips(tmp_path):
    r = L.RandomRotation(0.1)
    assert (r.factor, r.fill_mode, r.interpolation, r.fill_value, r.seed) == \
        ((-0.1, 0.1), "reflect", "bilinear", 0.0, None)
    assert L.RandomZoom(0.2).width_factor is None
    assert L.RandomFlip().mode == "horizontal_and_vertical"
    assert L.RandomTranslation(0.1, 0.2).compute_output_shape((None, 5, 6, 3)) == \
        (None, 5, 6, 3)
    with pytest.raises(L.LayerError, match="expects a 4-D input"):
        L.RandomFlip().compute_output_shape((None, 12))
    for layer in (L.RandomFlip("vertical", seed=3), L.RandomRotation((-0.2, 0.1), "wrap"),
                  L.RandomZoom(0.2, (-0.1, 0.3), fill_mode="constant", fill_value=0.5),
                  L.RandomTranslation(0.1, (0.0, 0.2), seed=9, name="t")):
        spec = json.loads(json.dumps(L.serialize(layer)))
        again = L.deserialize(spec)
        assert type(again) is type(layer) and again.get_config() == layer.get_config()
    model = augmented_net("cpu", seed=1)
    lines = []
    model.summary(print_fn=lines.append)
    assert any(line.startswith("random_rotation") for line in lines)
    path = tmp_path / "aug.fcm"
    model.save(path)
    loaded = fastconv.load_model(path, device="cpu")
    assert loaded.get_config() == model.get_config()
    x, _ = _data(3)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_steady_state_training_step_allocates_no_buffers():
    from .test_model_alloc import MAX_NET_OBJECT_BYTES, MAX_TRANSIENT_BYTES, _measure
    rng = np.random.default_rng(0)
    x = rng.random((256, 8, 8, 1)).astype(np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0.5).astype(np.float32)
    model = augmented_net("cpu", seed=0)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    tracemalloc.start()
    try:
        peaks, nets, numpy_net = _measure(model, x, y, batch_size=64)
    finally:
        tracemalloc.stop()
    assert max(peaks) < MAX_TRANSIENT_BYTES, f"per-step peak traced bytes {peaks}"
    assert numpy_net == 0, f"NumPy buffers kept over the steady-state steps: {numpy_net} B"
    assert max(nets) < MAX_NET_OBJECT_BYTES, f"per-step net traced bytes {nets}"


CUDA_SIM_SCRIPT = """
import json
import numpy as np
from fastconv import Sequential, kernels
from fastconv import layers as L
from fastconv.models import _plan
try:
    kernels.get("cuda")
except Exception as exc:
    print("RESULT:" + json.dumps(dict(skip=str(exc))))
    raise SystemExit(0)
x = np.random.default_rng(0).random((4, 5, 6, 1)).astype(np.float32)
y = np.array([0, 1, 0, 1], np.float32)
outs = []
for dev in ("cpu", "cuda"):
    m = Sequential([L.Input((5, 6, 1)), L.RandomFlip(seed=3), L.RandomRotation(0.1, seed=4),
                    L.Flatten(), L.Dense(1, activation="sigmoid")], device=dev, seed=1)
    m.compile("sgd", "binary_crossentropy")
    m.train_on_batch(x, y)
    step = next(s for s in m._plans[("train", 4)].steps if isinstance(s, _plan.AugmentStep))
    aug = step.y if isinstance(step.y, np.ndarray) else step.y.copy_to_host()
    outs.append((aug, m.get_weights(), m.predict(x)))
print("RESULT:" + json.dumps(dict(
    augmented=float(np.abs(outs[0][0] - outs[1][0]).max()),
    changed=bool(not np.allclose(outs[1][0], x)),
    weights=max(float(np.abs(a - b).max()) for a, b in zip(outs[0][1], outs[1][1])),
    predict=float(np.abs(outs[0][2] - outs[1][2]).max()))))
"""


def test_cuda_augments_on_the_host_like_cpu_under_the_simulator():
    """cuda: x is copied to the step's host buffers, warped and copied back; the same
    seeds give cpu's images (1e-6), the step's weights and predictions (1e-5)."""
    try:
        import fastconv.kernels.cuda  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"fastconv.kernels.cuda does not import: {exc}")
    from .simulator import run
    got = run(CUDA_SIM_SCRIPT, timeout=600)
    if "skip" in got:
        pytest.skip(got["skip"])
    assert got["changed"]
    assert got["augmented"] < 1e-6 and got["weights"] < 1e-5 and got["predict"] < 1e-5, got

"""small_convnet() reproduces the seed model: summary line for line, params, shapes, plan."""
import pytest

import fastconv
from fastconv import kernels
from fastconv import layers as L

# The seed's Keras 2 summary (docs/contract.md's table), verbatim, trailing spaces included:
# Keras 2 cuts "max_pooling2d_1 (MaxPooling2D)" at the 29-character column.
SEED_SUMMARY = """\
_________________________________________________________________
Layer (type)                 Output Shape              Param #   
=================================================================
conv2d_1 (Conv2D)            (None, 148, 148, 32)      896       
_________________________________________________________________
activation_1 (Activation)    (None, 148, 148, 32)      0         
_________________________________________________________________
max_pooling2d_1 (MaxPooling2 (None, 49, 49, 32)        0         
_________________________________________________________________
conv2d_2 (Conv2D)            (None, 47, 47, 32)        9248      
_________________________________________________________________
activation_2 (Activation)    (None, 47, 47, 32)        0         
_________________________________________________________________
max_pooling2d_2 (MaxPooling2 (None, 23, 23, 32)        0         
_________________________________________________________________
conv2d_3 (Conv2D)            (None, 21, 21, 64)        18496     
_________________________________________________________________
activation_3 (Activation)    (None, 21, 21, 64)        0         
_________________________________________________________________
max_pooling2d_3 (MaxPooling2 (None, 10, 10, 64)        0         
_________________________________________________________________
flatten_1 (Flatten)          (None, 6400)              0         
_________________________________________________________________
dense_1 (Dense)              (None, 64)                409664    
_________________________________________________________________
activation_4 (Activation)    (None, 64)                0         
_________________________________________________________________
dropout_1 (Dropout)          (None, 64)                0         
_________________________________________________________________
dense_2 (Dense)              (None, 1)                 65        
_________________________________________________________________
activation_5 (Activation)    (None, 1)                 0         
=================================================================
Total params: 438,369
Trainable params: 438,369
Non-trainable params: 0
_________________________________________________________________"""

# docs/contract.md's table: (layer type, output shape, params)
DESIGN_TABLE = [
    ("Conv2D", (None, 148, 148, 32), 896),
    ("Activation", (None, 148, 148, 32), 0),
    ("MaxPooling2D", (None, 49, 49, 32), 0),
    ("Conv2D", (None, 47, 47, 32), 9248),
    ("Activation", (None, 47, 47, 32), 0),
    ("MaxPooling2D", (None, 23, 23, 32), 0),
    ("Conv2D", (None, 21, 21, 64), 18496),
    ("Activation", (None, 21, 21, 64), 0),
    ("MaxPooling2D", (None, 10, 10, 64), 0),
    ("Flatten", (None, 6400), 0),
    ("Dense", (None, 64), 409664),
    ("Activation", (None, 64), 0),
    ("Dropout", (None, 64), 0),
    ("Dense", (None, 1), 65),
    ("Activation", (None, 1), 0),
]


def test_small_convnet_summary_matches_the_seed_line_for_line():
    lines = []
    fastconv.small_convnet(device="reference").summary(print_fn=lines.append)
    expected = SEED_SUMMARY.split("\n")
    assert len(lines) == len(expected)
    for k, (got, want) in enumerate(zip(lines, expected)):
        assert got == want, f"line {k}: {got!r} != {want!r}"


def test_small_convnet_layers_match_the_design_table():
    model = fastconv.small_convnet(device="reference")
    got = [(type(l).__name__, l.output_shape, l.count_params()) for l in model.layers]
    assert got == DESIGN_TABLE
    assert model.count_params() == 438369
    assert model.input_shape == (None, 150, 150, 3)
    assert model.loss == "binary_crossentropy" and model.metrics == ["accuracy"]
    assert isinstance(model.optimizer, fastconv.optimizers.RMSprop)
    assert model.optimizer.learning_rate == pytest.approx(1e-4)
    assert [w.shape for w in model.get_weights()] == [
        (3, 3, 3, 32), (32,), (3, 3, 32, 32), (32,), (3, 3, 32, 64), (64,),
        (6400, 64), (64,), (64, 1), (1,)]


def test_small_convnet_plans_fused_conv_relu_pool_and_folds_the_sigmoid():
    model = fastconv.small_convnet(device="reference")
    assert model.plan_summary() == [
        "conv2d_relu_maxpool", "conv2d_relu_maxpool", "conv2d_relu_maxpool", "flatten",
        "dense", "relu", "dropout", "dense", "sigmoid (folded into the loss)"]


def test_summary_respects_line_length_and_default_print(capsys):
    model = fastconv.Sequential([L.Input((4,)), L.Dense(3, name="a_very_long_dense_layer_name")],
                                device="reference")
    model.summary()
    out = capsys.readouterr().out.splitlines()
    assert out[3].startswith("a_very_long_dense_layer_name")
    assert out[-4:-1] == ["Total params: 15", "Trainable params: 15", "Non-trainable params: 0"]
    lines = []
    model.summary(line_length=80, print_fn=lines.append)
    assert lines[0] == "_" * 80 and all(len(l) == 80 for l in lines[1:4])


def test_auto_names_are_per_model_and_unique():
    a = fastconv.small_convnet(device="reference", compile=False)
    b = fastconv.small_convnet(device="reference", compile=False)
    assert [l.name for l in a.layers] == [l.name for l in b.layers]
    m = fastconv.Sequential([L.Input((3,)), L.Dense(2, name="dense_1"), L.Dense(2)],
                            device="reference")
    assert [l.name for l in m.layers] == ["dense_1", "dense_2"]
    with pytest.raises(ValueError, match="unique names; 'dense_1' is already used"):
        m.add(L.Dense(2, name="dense_1"))


def test_unfused_backend_plans_separate_steps():
    """A backend without the fused ops gets the unfused composition."""
    import types
    ref = kernels.get("reference")
    bare = types.SimpleNamespace(**{n: getattr(ref, n) for n in kernels.CONTRACT},
                                 empty=ref.empty, zeros=ref.zeros, to_device=ref.to_device,
                                 to_host=ref.to_host, NAME="bare")
    from fastconv.models._plan import describe, logical_ops
    ops, head = logical_ops(fastconv.small_convnet(device="reference").layers)
    assert head.act == "sigmoid"
    assert describe(ops, bare)[:4] == ["conv", "relu", "pool", "conv"]


def test_small_convnet_trains_a_few_steps_on_the_reference():
    """The seed architecture end to end (input 40x40x3 to stay fast): loss finite,
    every weight moves, predictions are probabilities."""
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.random((8, 40, 40, 3), np.float32)
    y = (rng.random(8) > 0.5).astype(np.float32)
    model = fastconv.small_convnet(input_shape=(40, 40, 3), device="reference", seed=0)
    before = model.get_weights()
    h = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert all(np.isfinite(v) for v in h.history["loss"])
    after = model.get_weights()
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))
    p = model.predict(x)
    assert p.shape == (8, 1) and np.all((p > 0) & (p < 1))

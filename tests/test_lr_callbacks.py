"""LearningRateScheduler and ReduceLROnPlateau on a tiny model (cpu backend) with a
scripted monitor sequence: the exact epochs where the rate drops, the rate in the
history ("learning_rate", as Keras 3 logs it) and the progress line, the rate really
reaching the update, and their argument checks."""
import numpy as np
import pytest

import fastconv
from fastconv import callbacks as C
from fastconv import layers as L
from fastconv.optimizers import SGD, schedules


def _model(lr=0.1, device="cpu"):
    model = fastconv.Sequential([L.Dense(3, activation="relu", input_shape=(4,)),
                                 L.Dense(1, activation="sigmoid")], device=device, seed=0)
    model.compile(optimizer=SGD(learning_rate=lr), loss="binary_crossentropy")
    return model


def _data():
    rng = np.random.default_rng(2)
    return (rng.standard_normal((8, 4)).astype(np.float32),
            (rng.random(8) > 0.5).astype(np.float32))


class Script(C.Callback):
    """Writes a scripted value of `key` into each epoch's logs (placed before the callback
    that reads it) and records the optimizer's rate during each epoch."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values, self.rates = key, list(values), []

    def on_epoch_begin(self, epoch, logs=None):
        self.rates.append(self.model.optimizer.learning_rate)

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


def test_reduce_lr_on_plateau_drops_at_the_scripted_epochs():
    # patience 2, factor 0.5, cooldown 1, min_lr 0.02, lr 0.1; worked by hand from Keras 3:
    # epoch 3 (0.95, 0.96 after best 0.9) -> 0.05; cooldown eats epoch 4's wait, epoch 5
    # -> 0.025; 0.5 at epoch 6 is a new best; epochs 7, 8 -> max(0.0125, 0.02) = 0.02.
    monitor = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    x, y = _data()
    model = _model(0.1)
    script = Script("val_loss", monitor)
    plateau = C.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.02,
                                  min_delta=0.0)
    h = model.fit(x, y, batch_size=4, epochs=12, verbose=0, callbacks=[script, plateau])
    want = [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.025, 0.02, 0.02, 0.02]
    assert h.history["learning_rate"] == pytest.approx(want, rel=1e-12)
    assert script.rates == pytest.approx(want, rel=1e-12)   # the rate each epoch trained at
    assert model.optimizer.learning_rate == pytest.approx(0.02)


def test_reduce_lr_on_plateau_min_delta_mode_max_and_patience_zero_defaults():
    x, y = _data()
    model = _model(1.0)
    acc = [0.5, 0.50005, 0.6, 0.6, 0.7]     # "acc" in the name: auto is max; 5e-5 < min_delta
    script = Script("val_accuracy", acc)
    plateau = C.ReduceLROnPlateau(monitor="val_accuracy", patience=1)
    assert (plateau.factor, plateau.min_delta, plateau.cooldown, plateau.min_lr) == (
        0.1, 1e-4, 0, 0.0)
    assert C.ReduceLROnPlateau().patience == 10 and C.ReduceLROnPlateau().monitor == "val_loss"
    h = model.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[script, plateau])
    assert h.history["learning_rate"] == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


def test_reduce_lr_on_plateau_refuses_a_schedule_before_training():
    x, y = _data()
    model = _model()
    model.compile(optimizer=SGD(learning_rate=schedules.ExponentialDecay(0.1, 2, 0.5)),
                  loss="binary_crossentropy")
    w0 = model.get_weights()
    with pytest.raises(TypeError, match=r"ReduceLROnPlateau: the optimizer's learning_rate is "
                                        r"a schedule \(ExponentialDecay"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[C.ReduceLROnPlateau()])
    for a, b in zip(w0, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_learning_rate_scheduler_sets_each_epoch_and_logs_it(capsys):
    x, y = _data()
    model = _model(0.1)
    sched = C.LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else lr * 0.5,
                                    verbose=1)
    h = model.fit(x, y, batch_size=4, epochs=4, verbose=2, callbacks=[sched])
    assert h.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    out = capsys.readouterr().out
    assert "Epoch 3: LearningRateScheduler setting learning rate to 0.05." in out
    assert "learning_rate: 0.0250" in out              # the epoch's progress line
    # one-argument schedules (Keras 2 style) are called with the epoch only
    h = _model(0.1).fit(x, y, epochs=3, verbose=0,
                        callbacks=[C.LearningRateScheduler(lambda e: 1e-4 * (e + 1))])
    assert h.history["learning_rate"] == pytest.approx([1e-4, 2e-4, 3e-4])


def test_learning_rate_scheduler_rate_reaches_the_update():
    """A zero rate leaves the weights as they were; the same fit at 0.1 moves them."""
    x, y = _data()
    frozen = _model(0.1)
    w0 = frozen.get_weights()
    frozen.fit(x, y, epochs=2, verbose=0, callbacks=[C.LearningRateScheduler(lambda e: 0.0)])
    for a, b in zip(w0, frozen.get_weights()):
        np.testing.assert_array_equal(a, b)
    moved = _model(0.1)
    moved.fit(x, y, epochs=2, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(w0, moved.get_weights()))


def test_small_rates_print_in_keras_exponent_form(capsys):
    x, y = _data()
    _model(1e-5).fit(x, y, epochs=1, verbose=2,
                     callbacks=[C.LearningRateScheduler(lambda e, lr: lr)])
    assert "learning_rate: 1.0000e-05" in capsys.readouterr().out


@pytest.mark.parametrize("make,err,message", [
    (lambda: C.LearningRateScheduler(0.1), ValueError, r"`schedule` must be a function"),
    (lambda: C.ReduceLROnPlateau(factor=1.0), ValueError, r"does not support a factor >= "
                                                          r"1\.0.*received factor=1\.0"),
    (lambda: C.ReduceLROnPlateau(patience=-1), ValueError, r"`patience` must be an int >= 0, "
                                                           r"received patience=-1"),
    (lambda: C.ReduceLROnPlateau(min_lr=-1e-3), ValueError, r"`min_lr` must be a finite "
                                                            r"number >= 0, received min_lr"),
    (lambda: C.ReduceLROnPlateau(mode="up"), ValueError, r"received mode='up'"),
])
def test_bad_arguments(make, err, message):
    with pytest.raises(err, match=message):
        make()


def test_learning_rate_scheduler_refuses_a_non_float_result():
    x, y = _data()
    with pytest.raises(ValueError, match=r"the output of the `schedule` function must be a "
                                         r"finite float >= 0, received 1 for epoch 0"):
        _model().fit(x, y, epochs=1, verbose=0,
                     callbacks=[C.LearningRateScheduler(lambda e: 1)])

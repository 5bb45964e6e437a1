"""EarlyStopping with Keras 3's semantics on a tiny model (cpu backend) and a scripted
monitor: restore_best_weights at the end of training whether or not it stopped early,
start_from_epoch, baseline (with min_delta), and the argument checks."""
import numpy as np
import pytest

import fastconv
from fastconv import callbacks as C
from fastconv import layers as L
from fastconv.optimizers import SGD


def _model():
    model = fastconv.Sequential([L.Dense(3, activation="relu", input_shape=(4,)),
                                 L.Dense(1, activation="sigmoid")], device="cpu", seed=0)
    model.compile(optimizer=SGD(learning_rate=0.5), loss="binary_crossentropy")
    return model


def _data():
    rng = np.random.default_rng(3)
    return (rng.standard_normal((8, 4)).astype(np.float32),
            (rng.random(8) > 0.5).astype(np.float32))


class Script(C.Callback):
    """Puts a scripted val_loss into each epoch's logs and keeps each epoch's weights."""

    def __init__(self, values):
        super().__init__()
        self.values, self.weights = list(values), []

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.values[epoch]
        self.weights.append(self.model.get_weights())


def _run(values, epochs=None, **kwargs):
    x, y = _data()
    model = _model()
    script = Script(values)
    stop = C.EarlyStopping(**kwargs)
    h = model.fit(x, y, batch_size=4, epochs=epochs or len(values), verbose=0,
                  callbacks=[script, stop])
    return model, script, stop, h


def _same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b))


def test_restores_the_best_weights_without_stopping_early():
    model, script, stop, h = _run([1.0, 0.5, 0.7, 0.8], patience=10,
                                  restore_best_weights=True)
    assert len(h.history["loss"]) == 4 and stop.stopped_epoch == 0
    assert stop.best_epoch == 1 and stop.best == 0.5
    assert _same(model.get_weights(), script.weights[1])
    assert not _same(script.weights[1], script.weights[3])   # the restore changed something


def test_without_restore_the_last_weights_stay():
    model, script, _, _ = _run([1.0, 0.5, 0.7, 0.8], patience=10)
    assert _same(model.get_weights(), script.weights[3])


def test_stops_after_patience_and_restores(capsys):
    model, script, stop, h = _run([1.0, 0.5, 0.7, 0.8, 0.9, 0.95], patience=2,
                                  restore_best_weights=True, verbose=1)
    assert stop.stopped_epoch == 3 and len(h.history["loss"]) == 4
    assert _same(model.get_weights(), script.weights[1])
    out = capsys.readouterr().out
    assert "Epoch 4: early stopping" in out
    assert "Restoring model weights from the end of the best epoch: 2." in out


def test_start_from_epoch_ignores_the_first_epochs():
    # epochs 0 and 1 have the lowest values but are not looked at
    model, script, stop, h = _run([0.1, 0.2, 0.9, 0.8, 0.85, 0.86, 0.87], patience=1,
                                  start_from_epoch=2, restore_best_weights=True)
    assert stop.stopped_epoch == 4 and len(h.history["loss"]) == 5
    assert stop.best_epoch == 3
    assert _same(model.get_weights(), script.weights[3])


def test_baseline_keeps_counting_until_it_is_beaten():
    values = [0.9, 0.95, 0.97, 0.6, 0.61]
    _, _, plain, h = _run(values, patience=2)
    assert plain.stopped_epoch == 2 and len(h.history["loss"]) == 3
    # 0.9 is a best but does not beat the baseline, so wait is not reset: stop one earlier
    _, _, based, h = _run(values, patience=2, baseline=0.5)
    assert based.stopped_epoch == 1 and len(h.history["loss"]) == 2
    # an improvement that beats the baseline resets wait
    _, _, beaten, h = _run([0.9, 0.4, 0.45, 0.46, 0.47], patience=2, baseline=0.5)
    assert beaten.stopped_epoch == 3
    # min_delta applies to the baseline too (Keras 3): 0.45 is not 0.1 below 0.5
    # (each epoch improves by more than min_delta, so none is a stopping epoch)
    _, _, delta, h = _run([0.9, 0.75, 0.6, 0.45], patience=2, baseline=0.5, min_delta=0.1)
    assert delta.stopped_epoch == 0 and len(h.history["loss"]) == 4
    assert delta.best == 0.45 and delta.wait == 4


@pytest.mark.parametrize("kwargs,message", [
    (dict(patience=-1), r"`patience` must be an int >= 0, received patience=-1"),
    (dict(start_from_epoch=-2), r"`start_from_epoch` must be an int >= 0, received "
                                r"start_from_epoch=-2"),
    (dict(baseline="low"), r"`baseline` must be None or a finite number, received "
                           r"baseline='low'"),
    (dict(min_delta=float("nan")), r"`min_delta` must be a finite number, received "
                                   r"min_delta=nan"),
    (dict(restore_best_weights="yes"), r"`restore_best_weights` must be True or False"),
    (dict(mode="lower"), r"received mode='lower'"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        C.EarlyStopping(**kwargs)

"""Keras-style callbacks: History, ModelCheckpoint, EarlyStopping, TerminateOnNaN,
LearningRateScheduler, ReduceLROnPlateau.

A callback sees the training loop through on_train_begin/end,
on_epoch_begin/end(epoch, logs) and on_train_batch_begin/end(batch, logs);
`logs` holds Keras's keys (loss, accuracy, val_loss, val_accuracy). Setting
`model.stop_training = True` ends fit after the current batch.

fit() always adds a History (returned) and, unless one is given, a
TerminateOnNaN: a NaN or infinite loss stops training with a message and puts
back the weights of the last step whose loss was finite.
"""
from __future__ import annotations

import inspect
import math
import warnings

import numpy as np

from ._args import is_int, is_number


class Callback:
    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = dict(params)

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass


class History(Callback):
    """Records each epoch's logs: history.history == {"loss": [...], "accuracy": [...], ...}."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _mode(cls, monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{cls}: `mode` must be 'auto', 'min' or 'max', received mode={mode!r}")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or monitor.startswith("fmeasure")) else "min"
    return mode


def _improved(mode, value, best, min_delta=0.0):
    if best is None:
        return True
    if mode == "min":
        return value < best - min_delta
    return value > best + min_delta


class ModelCheckpoint(Callback):
    """Save the model (or only its weights) at the end of every epoch, or only when the
    monitored value improves (save_best_only=True). `filepath` may hold Keras's format
    fields, e.g. "ckpt-{epoch:02d}-{val_loss:.3f}.npz". Saves are atomic."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto"):
        super().__init__()
        if not isinstance(filepath, (str, bytes)) and not hasattr(filepath, "__fspath__"):
            raise ValueError(f"ModelCheckpoint: `filepath` must be a path, received "
                             f"filepath={filepath!r}")
        if not isinstance(monitor, str):
            raise ValueError(f"ModelCheckpoint: `monitor` must be a string, received "
                             f"monitor={monitor!r}")
        self.filepath = str(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = _mode("ModelCheckpoint", monitor, mode)
        self.best = None

    def on_train_begin(self, logs=None):
        """A filepath without format fields is checked before the first epoch: a folder,
        device or FIFO there (saving replaces only regular files) or a missing folder
        raises now, not after an epoch of training."""
        if "{" not in self.filepath:
            from ._files import save_target
            save_target(self.filepath)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                warnings.warn(f"ModelCheckpoint: can save best model only with {self.monitor} "
                              f"available, skipping (logs have {', '.join(logs)})",
                              RuntimeWarning, stacklevel=2)
                return
            if not math.isfinite(value) or not _improved(self.mode, value, self.best):
                if self.verbose:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from "
                          f"{self.best:.5f}")
                return
            if self.verbose:
                prev = "inf" if self.best is None else f"{self.best:.5f}"
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {prev} to "
                      f"{value:.5f}, saving model to {path}")
            self.best = value
        elif self.verbose:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        self._save(path)

    def _save(self, filepath):
        """Write the model (or only its weights) to `filepath`. A subclass may override
        it to wrap the write (`fastconv train` holds Ctrl-C back around it)."""
        if self.save_weights_only:
            self.model.save_weights(filepath)
        else:
            self.model.save(filepath)


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than min_delta for `patience`
    epochs (Keras 3 semantics).

    improved: value < best - min_delta ("min"; "auto" is "max" when "acc" is in the
    monitor's name) or value > best + min_delta ("max"), best starting unset. Epochs
    before `start_from_epoch` (0-based) are not looked at. Each epoch looked at counts
    wait += 1; an improvement sets best and resets wait to 0 only if it also improves
    on `baseline` (by min_delta, when a baseline is given), and no stop is made on an
    improving epoch; otherwise training stops once wait >= patience (never at epoch 0).
    restore_best_weights=True: the best epoch's weights (the first epoch looked at's,
    if none improved) are put back at the end of training, whether or not it stopped
    early, as Keras 3.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        if not isinstance(monitor, str):
            raise ValueError(f"EarlyStopping: `monitor` must be a string, received "
                             f"monitor={monitor!r}")
        if not is_int(patience) or patience < 0:
            raise ValueError(f"EarlyStopping: `patience` must be an int >= 0, received "
                             f"patience={patience!r}")
        if not is_number(min_delta) or not math.isfinite(min_delta):
            raise ValueError(f"EarlyStopping: `min_delta` must be a finite number, received "
                             f"min_delta={min_delta!r}")
        if baseline is not None and (not is_number(baseline) or not math.isfinite(baseline)):
            raise ValueError(f"EarlyStopping: `baseline` must be None or a finite number, "
                             f"received baseline={baseline!r}")
        if not is_int(start_from_epoch) or start_from_epoch < 0:
            raise ValueError(f"EarlyStopping: `start_from_epoch` must be an int >= 0, "
                             f"received start_from_epoch={start_from_epoch!r}")
        if not isinstance(restore_best_weights, bool):
            raise ValueError(f"EarlyStopping: `restore_best_weights` must be True or False, "
                             f"received restore_best_weights={restore_best_weights!r}")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = _mode("EarlyStopping", monitor, mode)
        self.baseline = None if baseline is None else float(baseline)
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = int(start_from_epoch)

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(f"EarlyStopping: monitor {self.monitor!r} is not in the logs "
                          f"(available: {', '.join(logs or {})})", RuntimeWarning, stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if math.isfinite(value) and _improved(self.mode, value, self.best, self.min_delta):
            self.best = value
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or _improved(self.mode, value, self.baseline,
                                                  self.min_delta):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


def _settable_rate(cls, model):
    """The model's optimizer, refused (TypeError, as Keras 3's learning_rate setter) when
    its learning_rate is a schedule, which a callback cannot set."""
    opt = getattr(model, "optimizer", None)
    if opt is None:
        raise RuntimeError(f"{cls}: the model has no optimizer; compile it first")
    if getattr(opt, "schedule", None) is not None:
        raise TypeError(f"{cls}: the optimizer's learning_rate is a schedule "
                        f"({opt.schedule!r}), which {cls} cannot change; give the optimizer "
                        f"a float learning_rate to use {cls}, or drop the callback")
    return opt


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of every epoch (Keras 3):
    lr = schedule(epoch, current_lr) (or schedule(epoch) for a one-argument function),
    epoch 0-based; the result must be a float. Each epoch's logs get "learning_rate"
    (the rate the epoch trained with)."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise ValueError(f"LearningRateScheduler: `schedule` must be a function "
                             f"(epoch, lr) -> lr, received schedule={schedule!r}")
        self.schedule = schedule
        self.verbose = verbose
        try:
            params = inspect.signature(schedule).parameters.values()
            positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY,
                                                          p.POSITIONAL_OR_KEYWORD)]
            self._two_args = len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL
                                                         for p in params)
        except (TypeError, ValueError):     # a builtin without a signature: Keras's order
            self._two_args = True

    def on_train_begin(self, logs=None):
        _settable_rate("LearningRateScheduler", self.model)

    def on_epoch_begin(self, epoch, logs=None):
        opt = _settable_rate("LearningRateScheduler", self.model)
        lr = (self.schedule(epoch, float(opt.learning_rate)) if self._two_args
              else self.schedule(epoch))
        if not isinstance(lr, (float, np.float32, np.float64)) or not math.isfinite(lr) \
                or lr < 0:
            raise ValueError(f"LearningRateScheduler: the output of the `schedule` function "
                             f"must be a finite float >= 0, received {lr!r} for epoch {epoch}")
        opt.learning_rate = float(lr)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                  f"{float(lr)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by `factor` when `monitor` has not improved for
    `patience` epochs (Keras 3 semantics):

    improved: value < best - min_delta (mode "min"; "auto" is "min" unless "acc" is in
    the monitor's name) or value > best + min_delta ("max"), best starting at +-inf.
    At each epoch end: in cooldown, the counter drops by one and wait = 0; then an
    improvement sets best and wait = 0; otherwise, out of cooldown, wait += 1 and at
    wait >= patience, if lr > min_lr (compared in float32), lr = max(lr * factor,
    min_lr), cooldown starts (cooldown epochs) and wait = 0. The epoch's logs get
    "learning_rate", the rate the epoch trained with (before any reduction).
    An optimizer whose learning_rate is a schedule is refused (TypeError) at the start
    of training, where Keras raises at the first reduction.
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        super().__init__()
        c = "ReduceLROnPlateau"
        if not isinstance(monitor, str):
            raise ValueError(f"{c}: `monitor` must be a string, received monitor={monitor!r}")
        if not is_number(factor) or not 0 <= factor < 1.0:
            raise ValueError(f"{c}: does not support a factor >= 1.0 (or < 0); `factor` must "
                             f"be in [0, 1), received factor={factor!r}")
        for arg, v in (("patience", patience), ("cooldown", cooldown)):
            if not is_int(v) or v < 0:
                raise ValueError(f"{c}: `{arg}` must be an int >= 0, received {arg}={v!r}")
        for arg, v in (("min_delta", min_delta), ("min_lr", min_lr)):
            if not is_number(v) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{c}: `{arg}` must be a finite number >= 0, received "
                                 f"{arg}={v!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"{c}: `mode` must be 'auto', 'min' or 'max', received "
                             f"mode={mode!r}")
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = int(patience)
        self.verbose = verbose
        # Keras's own rule: only "acc" in the name makes "auto" maximise
        self.mode = mode if mode != "auto" else ("max" if "acc" in monitor else "min")
        self.min_delta = float(min_delta)
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.cooldown_counter = 0
        self.wait = 0

    def _improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def in_cooldown(self):
        return self.cooldown_counter > 0

    def on_train_begin(self, logs=None):
        _settable_rate("ReduceLROnPlateau", self.model)
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        opt = self.model.optimizer
        logs["learning_rate"] = float(opt.learning_rate)
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(f"ReduceLROnPlateau: learning rate reduction is conditioned on "
                          f"metric {self.monitor!r}, which is not available (available: "
                          f"{', '.join(logs)})", RuntimeWarning, stacklevel=2)
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value):
            self.best = value
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old = float(opt.learning_rate)
                if old > np.float32(self.min_lr):
                    new = max(old * self.factor, self.min_lr)
                    opt.learning_rate = new
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning "
                              f"rate to {new}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class NonFiniteLossWarning(RuntimeWarning):
    """Training stopped because the loss became NaN or infinite."""


class TerminateOnNaN(Callback):
    """Stop training when the loss becomes NaN or infinite.

    The model checks every step's loss before it applies the update; on a
    non-finite loss it skips the update, stops, and (restore_weights=True)
    puts back the weights of the last step whose loss was finite (kept in
    buffers allocated once per fit). The message is issued as a
    NonFiniteLossWarning and kept in `.message`.
    """

    def __init__(self, restore_weights=True):
        super().__init__()
        self.restore_weights = bool(restore_weights)
        self.message = None

    def on_train_begin(self, logs=None):
        self.message = None

    def on_nonfinite_loss(self, epoch, batch, loss, restored):
        what = "the weights of the last step with a finite loss were restored" if restored \
            else "the weights were left as they were"
        self.message = (f"loss became {loss} at epoch {epoch + 1}, batch {batch + 1}: "
                        f"training stopped and {what}")
        warnings.warn(f"{self.model.name}: {self.message}", NonFiniteLossWarning, stacklevel=3)
        self.model.stop_training = True


class CallbackList:
    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for c in self.callbacks:
            c.set_model(model)
            c.set_params(params)

    def __getattr__(self, name):
        if not name.startswith("on_"):
            raise AttributeError(name)

        def call(*args, **kwargs):
            for c in self.callbacks:
                getattr(c, name)(*args, **kwargs)
        return call


__all__ = ["Callback", "History", "ModelCheckpoint", "EarlyStopping", "TerminateOnNaN",
           "NonFiniteLossWarning", "LearningRateScheduler", "ReduceLROnPlateau"]

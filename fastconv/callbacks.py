"""Keras-style callbacks: History, ModelCheckpoint, EarlyStopping, TerminateOnNaN.

A callback sees the training loop through on_train_begin/end,
on_epoch_begin/end(epoch, logs) and on_train_batch_begin/end(batch, logs);
`logs` holds Keras's keys (loss, accuracy, val_loss, val_accuracy). Setting
`model.stop_training = True` ends fit after the current batch.

fit() always adds a History (returned) and, unless one is given, a
TerminateOnNaN: a NaN or infinite loss stops training with a message and puts
back the weights of the last step whose loss was finite.
"""
from __future__ import annotations

import math
import warnings

from ._args import is_int


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
    epochs. With restore_best_weights=True the weights of the best epoch are put
    back at the end of training (Keras 3 behaviour)."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        if not isinstance(monitor, str):
            raise ValueError(f"EarlyStopping: `monitor` must be a string, received "
                             f"monitor={monitor!r}")
        if not is_int(patience) or patience < 0:
            raise ValueError(f"EarlyStopping: `patience` must be an int >= 0, received "
                             f"patience={patience!r}")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = _mode("EarlyStopping", monitor, mode)
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
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
            if self.baseline is None or _improved(self.mode, value, self.baseline):
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
           "NonFiniteLossWarning"]

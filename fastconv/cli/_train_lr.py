"""The learning rate of a `fastconv train` run: --lr-schedule, --warmup-epochs,
--reduce-lr-on-plateau and --weight-decay, built from the run's settings.

    constant     lr for every step
    cosine       CosineDecay(lr, decay_steps = (epochs - warmup) * steps per epoch):
                 from lr down to 0 at the last step
    exponential  ExponentialDecay(lr, decay_steps = epochs * steps per epoch,
                 decay_rate = 0.1): lr / 10 at the last step, smoothly
    --warmup-epochs N (constant, cosine): a linear ramp from 0 to lr over the first N
                 epochs' steps, Keras 3's CosineDecay warmup (warmup_target = lr,
                 initial_learning_rate = 0); constant is CosineDecay with alpha = 1
    --reduce-lr-on-plateau: ReduceLROnPlateau(monitor="val_loss") with Keras's defaults
                 (factor 0.1, patience 10, min_delta 1e-4); constant rate only
    --weight-decay W: the optimizer's decoupled weight decay (Keras 3 weight_decay)

The schedule is the optimizer's (saved in the checkpoint with it), so --resume
continues it exactly; ReduceLROnPlateau's counters are saved in the training state.
"""
from __future__ import annotations

import math

from ._common import CLIError
from ..callbacks import EarlyStopping, ReduceLROnPlateau
from ..optimizers import schedules

SCHEDULES = ("constant", "cosine", "exponential")
# Settings of the learning rate, with the value a checkpoint written before them had.
LR_SETTINGS = {"lr_schedule": "constant", "warmup_epochs": 0, "reduce_lr_on_plateau": False,
               "weight_decay": 0.0}
EXPONENTIAL_END = 0.1      # exponential: the rate at the last step, as a fraction of lr


def check_lr_settings(s):
    """CLIError for a combination that cannot run (s: the resolved settings)."""
    if s["lr_schedule"] not in SCHEDULES:
        raise CLIError(f"--lr-schedule must be one of {', '.join(SCHEDULES)}, received "
                       f"{s['lr_schedule']}")
    if s["warmup_epochs"] < 0 or s["warmup_epochs"] >= s["epochs"] and s["warmup_epochs"]:
        raise CLIError(f"--warmup-epochs must be >= 0 and less than --epochs "
                       f"{s['epochs']}, received {s['warmup_epochs']}")
    if s["warmup_epochs"] and s["lr_schedule"] == "exponential":
        raise CLIError("--warmup-epochs works with --lr-schedule constant or cosine (Keras's "
                       "ExponentialDecay has no warmup)")
    if s["reduce_lr_on_plateau"] and (s["lr_schedule"] != "constant" or s["warmup_epochs"]):
        raise CLIError("--reduce-lr-on-plateau needs a constant learning rate (no "
                       "--lr-schedule, no --warmup-epochs): ReduceLROnPlateau cannot change "
                       "a scheduled rate")
    if not (s["weight_decay"] >= 0 and math.isfinite(s["weight_decay"])):
        raise CLIError(f"--weight-decay must be a number >= 0, received {s['weight_decay']}")


def scheduled(s):
    """True when the rate follows a schedule over the run's --epochs (which then cannot
    be extended on --resume: the schedule was laid out for the old length)."""
    return s["lr_schedule"] != "constant" or s["warmup_epochs"] > 0


def learning_rate(s, steps_per_epoch):
    """The optimizer's learning_rate: a float, or a schedule over the run's steps."""
    lr, warm = s["lr"], s["warmup_epochs"] * steps_per_epoch
    decay_steps = max(1, (s["epochs"] - s["warmup_epochs"]) * steps_per_epoch)
    if s["lr_schedule"] == "cosine":
        if not warm:
            return schedules.CosineDecay(lr, decay_steps)
        return schedules.CosineDecay(0.0, decay_steps, warmup_target=lr, warmup_steps=warm)
    if s["lr_schedule"] == "exponential":
        return schedules.ExponentialDecay(lr, decay_steps, EXPONENTIAL_END)
    if warm:
        return schedules.CosineDecay(0.0, decay_steps, alpha=1.0, warmup_target=lr,
                                     warmup_steps=warm)
    return lr


def optimizer_config(s, steps_per_epoch):
    """The {"class_name", "config"} of the run's optimizer."""
    lr = learning_rate(s, steps_per_epoch)
    config = {"learning_rate": schedules.serialize(lr) if not isinstance(lr, float) else lr}
    if s["weight_decay"]:
        config["weight_decay"] = s["weight_decay"]
    return {"class_name": s["optimizer"], "config": config}


class RunPlateau(ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters survive --resume: `state` (from the training
    state) is put back after on_train_begin's reset; get_state() is what is saved."""

    def __init__(self, state=None):
        super().__init__(monitor="val_loss")
        self._resumed = state

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resumed:
            best = self._resumed["best"]
            self.best = math.inf if best is None else best
            self.wait = self._resumed["wait"]
            self.cooldown_counter = self._resumed["cooldown_counter"]

    def get_state(self):
        return {"best": self.best if math.isfinite(self.best) else None, "wait": self.wait,
                "cooldown_counter": self.cooldown_counter}


class RunEarlyStopping(EarlyStopping):
    """--early-stopping PATIENCE: EarlyStopping(monitor="val_loss", patience,
    restore_best_weights=True) whose counters survive --resume: `state` (from the
    training state) is put back after on_train_begin's reset, and the best epoch's
    weights come from `best_weights()` (the run's --out file, the best model by val_loss,
    which is the same epoch) so the restore at the end is the uninterrupted run's."""

    def __init__(self, patience, state=None, best_weights=None):
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=True)
        self._resumed = state
        self._best_weights = best_weights

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        r = self._resumed
        if r:
            self.wait, self.best_epoch = r["wait"], r["best_epoch"]
            self.best = r["best"]
            self.stopped_epoch = r["stopped_epoch"]
            if r["looked"] and self._best_weights is not None:
                self.best_weights = self._best_weights()

    def get_state(self):
        best = self.best
        return {"best": best if best is not None and math.isfinite(best) else None,
                "wait": self.wait, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch, "looked": self.best_weights is not None}


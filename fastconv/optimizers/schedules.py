"""Learning-rate schedules with Keras 3's names, arguments, defaults and formulas.

    ExponentialDecay(initial_learning_rate, decay_steps, decay_rate, staircase=False)
    PiecewiseConstantDecay(boundaries, values)
    InverseTimeDecay(initial_learning_rate, decay_steps, decay_rate, staircase=False)
    CosineDecay(initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None,
                warmup_steps=0)

A schedule is a callable `schedule(step) -> float`, step the optimizer's
`iterations` before the update it rates (0 for the first step, as Keras). Pass one
as `learning_rate=` to any optimizer: the optimizer evaluates it on the host once
per step, in float64, and hands the rate to the backend's update kernel as a
scalar argument (on cuda a kernel parameter: no device array, nothing read back).
Keras evaluates in float32 on the device; the kernels take the rate in float32
(cuda) or float64 (reference, cpu), so the two agree to float32 rounding.

get_config()/from_config() round-trip every schedule; serialize()/deserialize()
give and take {"class_name": ..., "config": ...}, the form models/saving.py stores
inside the optimizer's config.
"""
from __future__ import annotations

import math

from .._args import is_int, is_number


def _number(cls, arg, value, low=None, positive=False):
    """A finite float from `value`, refused naming the argument and the value."""
    if not is_number(value) or not math.isfinite(float(value)):
        raise ValueError(f"{cls}: `{arg}` must be a finite number, received {arg}={value!r}")
    v = float(value)
    if positive and v <= 0:
        raise ValueError(f"{cls}: `{arg}` must be > 0, received {arg}={value!r}")
    if low is not None and v < low:
        raise ValueError(f"{cls}: `{arg}` must be >= {low}, received {arg}={value!r}")
    return v


def _step(cls, step):
    if not is_number(step) or not math.isfinite(float(step)) or float(step) < 0:
        raise ValueError(f"{cls}: the step must be a finite number >= 0, received "
                         f"step={step!r}")
    return float(step)


def _bool(cls, arg, value):
    if not isinstance(value, bool):
        raise ValueError(f"{cls}: `{arg}` must be True or False, received {arg}={value!r}")
    return value


class LearningRateSchedule:
    """Base class: subclasses define __call__(step) -> float and get_config()."""

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.__class__.__name__}({args})"


class ExponentialDecay(LearningRateSchedule):
    """lr(step) = initial_learning_rate * decay_rate ** (step / decay_steps), the exponent
    floor(step / decay_steps) when staircase=True (Keras 3)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 name="ExponentialDecay"):
        c = "ExponentialDecay"
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _number(c, "decay_steps", decay_steps, positive=True)
        self.decay_rate = _number(c, "decay_rate", decay_rate)
        self.staircase = _bool(c, "staircase", staircase)
        self.name = name

    def __call__(self, step):
        p = _step("ExponentialDecay", step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase, "name": self.name}


class PiecewiseConstantDecay(LearningRateSchedule):
    """lr(step) = values[0] for step <= boundaries[0], values[i] for
    boundaries[i-1] < step <= boundaries[i], values[-1] for step > boundaries[-1]
    (Keras 3). len(values) == len(boundaries) + 1; boundaries increasing."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        c = "PiecewiseConstantDecay"
        if not isinstance(boundaries, (list, tuple)) or not boundaries:
            raise ValueError(f"{c}: `boundaries` must be a non-empty list of numbers, "
                             f"received boundaries={boundaries!r}")
        if not isinstance(values, (list, tuple)) or len(values) != len(boundaries) + 1:
            raise ValueError(f"{c}: `values` must be a list with len(boundaries) + 1 = "
                             f"{len(boundaries) + 1} numbers, received values={values!r}")
        self.boundaries = [_number(c, "boundaries", b) for b in boundaries]
        if any(b1 <= b0 for b0, b1 in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"{c}: `boundaries` must be strictly increasing, received "
                             f"boundaries={boundaries!r}")
        self.values = [_number(c, "values", v) for v in values]
        self.name = name

    def __call__(self, step):
        s = _step("PiecewiseConstantDecay", step)
        for b, v in zip(self.boundaries, self.values):
            if s <= b:
                return v
        return self.values[-1]

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values),
                "name": self.name}


class InverseTimeDecay(LearningRateSchedule):
    """lr(step) = initial_learning_rate / (1 + decay_rate * step / decay_steps), with
    floor(step / decay_steps) when staircase=True (Keras 3)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 name="InverseTimeDecay"):
        c = "InverseTimeDecay"
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _number(c, "decay_steps", decay_steps, positive=True)
        self.decay_rate = _number(c, "decay_rate", decay_rate, low=0.0)
        self.staircase = _bool(c, "staircase", staircase)
        self.name = name

    def __call__(self, step):
        p = _step("InverseTimeDecay", step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate / (1.0 + self.decay_rate * p)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase, "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Cosine decay with optional linear warmup (Keras 3).

    Without warmup_target: s = min(step, decay_steps),
        lr = initial_learning_rate * ((1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)) + alpha).
    With warmup_target: s = min(step, warmup_steps + decay_steps);
        s < warmup_steps:  lr = initial_learning_rate
                               + (warmup_target - initial_learning_rate) * s / warmup_steps
        otherwise:         the decay above from warmup_target, at s - warmup_steps.
    alpha: the floor as a fraction of the rate decayed from.
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay",
                 warmup_target=None, warmup_steps=0):
        c = "CosineDecay"
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _number(c, "decay_steps", decay_steps, positive=True)
        self.alpha = _number(c, "alpha", alpha)
        self.warmup_target = None if warmup_target is None else _number(
            c, "warmup_target", warmup_target)
        if not is_int(warmup_steps) or warmup_steps < 0:
            raise ValueError(f"{c}: `warmup_steps` must be an int >= 0, received "
                             f"warmup_steps={warmup_steps!r}")
        self.warmup_steps = int(warmup_steps)
        self.name = name

    def _decay(self, s, decay_from):
        cosine = 0.5 * (1.0 + math.cos(math.pi * s / self.decay_steps))
        return decay_from * ((1.0 - self.alpha) * cosine + self.alpha)

    def __call__(self, step):
        s = _step("CosineDecay", step)
        if self.warmup_target is None:
            return self._decay(min(s, self.decay_steps), self.initial_learning_rate)
        s = min(s, self.decay_steps + self.warmup_steps)
        if s < self.warmup_steps:
            delta = self.warmup_target - self.initial_learning_rate
            return delta * (s / self.warmup_steps) + self.initial_learning_rate
        return self._decay(s - self.warmup_steps, self.warmup_target)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha, "name": self.name,
                "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}


SCHEDULES = {c.__name__: c for c in (ExponentialDecay, PiecewiseConstantDecay,
                                     InverseTimeDecay, CosineDecay)}


def serialize(schedule):
    return {"class_name": schedule.__class__.__name__, "config": schedule.get_config()}


def deserialize(config):
    """A schedule from serialize()'s {"class_name", "config"} dict."""
    if isinstance(config, dict) and config.get("class_name") in SCHEDULES:
        return SCHEDULES[config["class_name"]].from_config(dict(config.get("config", {})))
    raise ValueError(f"unknown learning-rate schedule {config!r}; expected "
                     f"{{'class_name': one of {', '.join(SCHEDULES)}, 'config': {{...}}}}")


__all__ = ["LearningRateSchedule", "ExponentialDecay", "PiecewiseConstantDecay",
           "InverseTimeDecay", "CosineDecay", "serialize", "deserialize"]

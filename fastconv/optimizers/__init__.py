"""Optimizers with Keras's names, arguments and defaults (Keras 3 update formulas).

    SGD(learning_rate=0.01, momentum=0.0, nesterov=False)
    RMSprop(learning_rate=0.001, rho=0.9, epsilon=1e-7)
    Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)

`learning_rate` is a float or a schedule of fastconv.optimizers.schedules
(ExponentialDecay, PiecewiseConstantDecay, InverseTimeDecay, CosineDecay): the
rate of each step is evaluated on the host at the step count and passed to the
update kernel as a scalar. `lr=` is accepted as Keras 2's alias of `learning_rate` (the seed recipe says
RMSprop(lr=1e-4)). The update itself is the backend's kernel
(`sgd_update`, `rmsprop_update`, `adam_update`, in place); the optimizer owns
the state arrays, allocated once on the model's backend, and the step count.
"""
from __future__ import annotations

import math

import numpy as np

from .._args import is_number
from .._memory import to_numpy, upload
from . import schedules
from .schedules import LearningRateSchedule


def _number(cls, arg, value, low=0.0, high=None, open_low=False):
    if not is_number(value):
        raise ValueError(f"{cls}: `{arg}` must be a number, received {arg}={value!r}")
    v = float(value)
    bad = (not math.isfinite(v) or v < low or (open_low and v == low)
           or (high is not None and v >= high))
    if bad:
        rng = f"({low}, " if open_low else f"[{low}, "
        rng += f"{high})" if high is not None else "inf)"
        raise ValueError(f"{cls}: `{arg}` must be in {rng}, received {arg}={value!r}")
    return v


class Optimizer:
    """Base class: holds hyperparameters, the step count and per-parameter state."""

    name = "optimizer"
    state_names = ()

    def __init__(self, learning_rate, lr=None):
        if lr is not None:
            learning_rate = lr
        self._learning_rate = None
        self.learning_rate = learning_rate
        self.iterations = 0
        self._state = None      # list (per parameter) of state arrays on the backend
        self._K = None

    @property
    def learning_rate(self):
        """The rate of the next step: the constant, or the schedule at `iterations`
        (a float either way, as Keras 3's optimizer.learning_rate)."""
        if isinstance(self._learning_rate, LearningRateSchedule):
            return float(self._learning_rate(self.iterations))
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        """A number or a LearningRateSchedule; a number over a schedule raises, as Keras 3
        (callbacks such as ReduceLROnPlateau so refuse a scheduled optimizer)."""
        cls = self.__class__.__name__
        if isinstance(value, dict) and "class_name" in value:
            value = schedules.deserialize(value)
        if isinstance(value, LearningRateSchedule):
            self._learning_rate = value
            return
        if isinstance(self._learning_rate, LearningRateSchedule):
            raise TypeError(f"{cls}: this optimizer was created with a LearningRateSchedule "
                            f"({self._learning_rate!r}) as its `learning_rate`, so its "
                            f"learning rate is not settable (received {value!r}); create the "
                            f"optimizer with a float `learning_rate` to set it")
        self._learning_rate = _number(cls, "learning_rate", value)

    @property
    def schedule(self):
        """The LearningRateSchedule the optimizer was given, or None for a constant rate."""
        lr = self._learning_rate
        return lr if isinstance(lr, LearningRateSchedule) else None

    @property
    def lr(self):
        return self.learning_rate

    @lr.setter
    def lr(self, value):
        self.learning_rate = value

    # -- state
    @property
    def built(self):
        return self._state is not None

    def build(self, K, params):
        """Allocate zero state arrays on backend K for each parameter."""
        self._K = K
        self._state = [[K.zeros(tuple(p.shape)) for _ in self.state_names] for p in params]

    def to(self, K):
        """Move the state arrays to backend K (after the model moved)."""
        if self._state is not None and K is not self._K:
            old = self._K
            self._state = [[K.to_device(to_numpy(old, s)) for s in group]
                           for group in self._state]
        self._K = K

    def get_state(self):
        """Host copies of the state arrays, flat, parameter-major."""
        if self._state is None:
            return []
        return [to_numpy(self._K, s) for group in self._state for s in group]

    def set_state(self, arrays, K, params, iterations):
        """Restore state saved by get_state() for `params` on backend K."""
        self.build(K, params)
        arrays = list(arrays)
        want = len(params) * len(self.state_names)
        if len(arrays) != want:
            raise ValueError(f"{self.__class__.__name__}: expected {want} state arrays for "
                             f"{len(params)} parameters, received {len(arrays)}")
        k = 0
        for group in self._state:
            for s in group:
                if tuple(arrays[k].shape) != tuple(s.shape):
                    raise ValueError(f"{self.__class__.__name__}: state array {k} must have "
                                     f"shape {tuple(s.shape)}, received {arrays[k].shape}")
                upload(arrays[k], s)
                k += 1
        self.iterations = int(iterations)

    # -- update
    def apply(self, K, params, grads):
        """One step: update every parameter in place from its gradient. The rate is
        evaluated once, on the host, at the step count before the update (a schedule's
        step 0 rates the first update, as Keras) and passed to the kernels as a scalar."""
        lr = self.learning_rate
        self.iterations += 1
        for p, g, state in zip(params, grads, self._state):
            self._update(K, p, g, state, lr)

    def _update(self, K, p, g, state, lr):
        raise NotImplementedError

    # -- config
    def _lr_config(self):
        """learning_rate as get_config stores it: the float, or the schedule serialized."""
        s = self.schedule
        return schedules.serialize(s) if s is not None else self._learning_rate

    def get_config(self):
        return {"learning_rate": self._lr_config()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.__class__.__name__}({args})"


class SGD(Optimizer):
    """Keras SGD: v = m*v - lr*g; p += v (or m*v - lr*g with nesterov); p -= lr*g when m = 0."""

    name = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, lr=None):
        super().__init__(learning_rate, lr)
        self.momentum = _number("SGD", "momentum", momentum, high=1.0 + 1e-12)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"SGD: `nesterov` must be True or False, received nesterov={nesterov!r}")
        self.nesterov = bool(nesterov)
        self.state_names = ("velocity",) if self.momentum > 0 else ()

    def _update(self, K, p, g, state, lr):
        K.sgd_update(p, g, state[0] if state else None, lr, self.momentum, self.nesterov)

    def get_config(self):
        return {"learning_rate": self._lr_config(), "momentum": self.momentum,
                "nesterov": self.nesterov}


class RMSprop(Optimizer):
    """Keras RMSprop: ms = rho*ms + (1 - rho)*g^2; p -= lr*g / sqrt(ms + eps)."""

    name = "rmsprop"
    state_names = ("rms",)

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-7, lr=None):
        super().__init__(learning_rate, lr)
        self.rho = _number("RMSprop", "rho", rho, high=1.0)
        self.epsilon = _number("RMSprop", "epsilon", epsilon)

    def _update(self, K, p, g, state, lr):
        K.rmsprop_update(p, g, state[0], lr, self.rho, self.epsilon)

    def get_config(self):
        return {"learning_rate": self._lr_config(), "rho": self.rho, "epsilon": self.epsilon}


class Adam(Optimizer):
    """Keras Adam with Keras's epsilon-hat placement (see the backends' adam_update)."""

    name = "adam"
    state_names = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, lr=None):
        super().__init__(learning_rate, lr)
        self.beta_1 = _number("Adam", "beta_1", beta_1, high=1.0)
        self.beta_2 = _number("Adam", "beta_2", beta_2, high=1.0)
        self.epsilon = _number("Adam", "epsilon", epsilon)

    def _update(self, K, p, g, state, lr):
        K.adam_update(p, g, state[0], state[1], self.iterations, lr, self.beta_1, self.beta_2,
                      self.epsilon)

    def get_config(self):
        return {"learning_rate": self._lr_config(), "beta_1": self.beta_1,
                "beta_2": self.beta_2, "epsilon": self.epsilon}


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}


def get(identifier):
    """An optimizer from a name ('sgd', 'rmsprop', 'adam', with Keras defaults), a
    {"class_name", "config"} dict, or an Optimizer (returned as is)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in OPTIMIZERS:
        return OPTIMIZERS[identifier.lower()]()
    if isinstance(identifier, dict) and "class_name" in identifier:
        name = str(identifier["class_name"]).lower()
        if name in OPTIMIZERS:
            return OPTIMIZERS[name].from_config(identifier.get("config", {}))
    raise ValueError(f"unknown optimizer {identifier!r}; use one of 'sgd', 'rmsprop', 'adam' "
                     f"or an optimizer object such as fastconv.optimizers.RMSprop(learning_rate=1e-4)")


def serialize(optimizer):
    return {"class_name": optimizer.__class__.__name__, "config": optimizer.get_config()}


__all__ = ["schedules", "LearningRateSchedule", "Optimizer", "SGD", "RMSprop", "Adam", "get", "serialize"]

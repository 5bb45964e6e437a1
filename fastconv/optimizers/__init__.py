"""Optimizers with Keras's names, arguments and defaults (Keras 3 update formulas).

    SGD(learning_rate=0.01, momentum=0.0, nesterov=False)
    RMSprop(learning_rate=0.001, rho=0.9, epsilon=1e-7)
    Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    AdamW(learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
  and on each Keras 3's weight_decay, clipnorm, clipvalue, global_clipnorm (Optimizer).

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


def _optional(cls, arg, value):
    """None, or a number >= 0 (0 switches the option off, as Keras's `if clipnorm`)."""
    if value is None:
        return None
    v = _number(cls, arg, value)
    return v if v > 0 else None


class Optimizer:
    """Base class: holds hyperparameters, the step count and per-parameter state.

    Every optimizer takes Keras 3's base arguments too:
      weight_decay: decoupled decay before the update, p -= lr * weight_decay * p (on
        every parameter, biases included, as Keras without exclude_from_weight_decay);
      clipnorm: each gradient g *= clipnorm / max(||g||, clipnorm);
      global_clipnorm: every gradient g *= global_clipnorm / max(N, global_clipnorm),
        N = sqrt(sum over all gradients of ||g||^2);
      clipvalue: g = clip(g, -clipvalue, clipvalue).
    At most one of the three clips. A step is, in Keras 3's order: clip the gradients,
    decay the weights, then the update, all at the step's rate lr.
    """

    name = "optimizer"
    state_names = ()

    def __init__(self, learning_rate, lr=None, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None):
        cls = self.__class__.__name__
        if lr is not None:
            learning_rate = lr
        self._learning_rate = None
        self.learning_rate = learning_rate
        self.weight_decay = _optional(cls, "weight_decay", weight_decay)
        clips = dict(clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm)
        if sum(v is not None for v in clips.values()) > 1:
            raise ValueError(f"{cls}: only one of `clipnorm`, `clipvalue` and "
                             f"`global_clipnorm` can be set, received " +
                             ", ".join(f"{k}={v!r}" for k, v in clips.items()))
        self.clipnorm = _optional(cls, "clipnorm", clipnorm)
        self.clipvalue = _optional(cls, "clipvalue", clipvalue)
        self.global_clipnorm = _optional(cls, "global_clipnorm", global_clipnorm)
        self.iterations = 0
        self._state = None      # list (per parameter) of state arrays on the backend
        self._sumsq = []        # (1,) arrays on the backend: the clip norms' sums of squares
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
        """Allocate zero state arrays on backend K for each parameter (and the clip
        norms' (1,) sums of squares: one per parameter for clipnorm, one in all for
        global_clipnorm; scratch, not state: never saved)."""
        self._K = K
        self._state = [[K.zeros(tuple(p.shape)) for _ in self.state_names] for p in params]
        self._build_scratch(K, len(params))

    def _build_scratch(self, K, n_params):
        n = n_params if self.clipnorm else (1 if self.global_clipnorm else 0)
        self._sumsq = [K.zeros((1,)) for _ in range(n)]

    def to(self, K):
        """Move the state arrays to backend K (after the model moved)."""
        if self._state is not None and K is not self._K:
            old = self._K
            self._state = [[K.to_device(to_numpy(old, s)) for s in group]
                           for group in self._state]
            self._build_scratch(K, len(self._state))
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
        self._clip(K, grads)
        for p, g, state in zip(params, grads, self._state):
            if self.weight_decay:
                # p -= (lr * wd) * p: the plain SGD kernel with p as its own gradient (an
                # elementwise read-then-write of each element, so the alias is safe)
                K.sgd_update(p, p, None, lr * self.weight_decay)
            self._update(K, p, g, state, lr)

    def _clip(self, K, grads):
        """Keras 3's _clip_gradients, in place on the gradient buffers; the norms stay on
        the backend (sum_squares into a (1,) array that clip_by_norm reads)."""
        if self.clipnorm:
            for g, acc in zip(grads, self._sumsq):
                K.sum_squares(g, acc)
                K.clip_by_norm(g, acc, self.clipnorm)
        elif self.global_clipnorm:
            acc = self._sumsq[0]
            for i, g in enumerate(grads):
                K.sum_squares(g, acc, accumulate=i > 0)
            for g in grads:
                K.clip_by_norm(g, acc, self.global_clipnorm)
        elif self.clipvalue:
            for g in grads:
                K.clip_by_value(g, self.clipvalue)

    def _update(self, K, p, g, state, lr):
        raise NotImplementedError

    # -- config
    def _lr_config(self):
        """learning_rate as get_config stores it: the float, or the schedule serialized."""
        s = self.schedule
        return schedules.serialize(s) if s is not None else self._learning_rate

    def _base_config(self):
        """Keras's base arguments that are set (unset ones are left out, so configs and
        saved files of optimizers without them stay as they were)."""
        names = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def get_config(self):
        return {"learning_rate": self._lr_config(), **self._base_config()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.__class__.__name__}({args})"


class SGD(Optimizer):
    """Keras SGD: v = m*v - lr*g; p += v (or m*v - lr*g with nesterov); p -= lr*g when m = 0."""

    name = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, lr=None,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None):
        super().__init__(learning_rate, lr, weight_decay, clipnorm, clipvalue, global_clipnorm)
        self.momentum = _number("SGD", "momentum", momentum, high=1.0 + 1e-12)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"SGD: `nesterov` must be True or False, received nesterov={nesterov!r}")
        self.nesterov = bool(nesterov)
        self.state_names = ("velocity",) if self.momentum > 0 else ()

    def _update(self, K, p, g, state, lr):
        K.sgd_update(p, g, state[0] if state else None, lr, self.momentum, self.nesterov)

    def get_config(self):
        return {"learning_rate": self._lr_config(), "momentum": self.momentum,
                "nesterov": self.nesterov, **self._base_config()}


class RMSprop(Optimizer):
    """Keras RMSprop: ms = rho*ms + (1 - rho)*g^2; p -= lr*g / sqrt(ms + eps)."""

    name = "rmsprop"
    state_names = ("rms",)

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-7, lr=None,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None):
        super().__init__(learning_rate, lr, weight_decay, clipnorm, clipvalue, global_clipnorm)
        self.rho = _number("RMSprop", "rho", rho, high=1.0)
        self.epsilon = _number("RMSprop", "epsilon", epsilon)

    def _update(self, K, p, g, state, lr):
        K.rmsprop_update(p, g, state[0], lr, self.rho, self.epsilon)

    def get_config(self):
        return {"learning_rate": self._lr_config(), "rho": self.rho, "epsilon": self.epsilon,
                **self._base_config()}


class Adam(Optimizer):
    """Keras Adam with Keras's epsilon-hat placement (see the backends' adam_update)."""

    name = "adam"
    state_names = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, lr=None,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None):
        super().__init__(learning_rate, lr, weight_decay, clipnorm, clipvalue, global_clipnorm)
        self.beta_1 = _number("Adam", "beta_1", beta_1, high=1.0)
        self.beta_2 = _number("Adam", "beta_2", beta_2, high=1.0)
        self.epsilon = _number("Adam", "epsilon", epsilon)

    def _update(self, K, p, g, state, lr):
        K.adam_update(p, g, state[0], state[1], self.iterations, lr, self.beta_1, self.beta_2,
                      self.epsilon)

    def get_config(self):
        return {"learning_rate": self._lr_config(), "beta_1": self.beta_1,
                "beta_2": self.beta_2, "epsilon": self.epsilon, **self._base_config()}


class AdamW(Adam):
    """Keras 3 AdamW: Adam with decoupled weight decay (default 0.004) applied before
    each Adam step, p -= lr * weight_decay * p (the base Optimizer's weight decay)."""

    name = "adamw"

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, lr=None, clipnorm=None, clipvalue=None, global_clipnorm=None):
        if weight_decay is None:
            raise ValueError(f"AdamW: `weight_decay` must be a float, received "
                             f"weight_decay={weight_decay!r}")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, lr, weight_decay, clipnorm,
                         clipvalue, global_clipnorm)

    def get_config(self):
        config = super().get_config()
        config.setdefault("weight_decay", 0.0)     # AdamW(weight_decay=0) round-trips
        return config


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def get(identifier):
    """An optimizer from a name ('sgd', 'rmsprop', 'adam', 'adamw', with Keras defaults), a
    {"class_name", "config"} dict, or an Optimizer (returned as is)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in OPTIMIZERS:
        return OPTIMIZERS[identifier.lower()]()
    if isinstance(identifier, dict) and "class_name" in identifier:
        name = str(identifier["class_name"]).lower()
        if name in OPTIMIZERS:
            return OPTIMIZERS[name].from_config(identifier.get("config", {}))
    raise ValueError(f"unknown optimizer {identifier!r}; use one of 'sgd', 'rmsprop', 'adam', 'adamw' "
                     f"or an optimizer object such as fastconv.optimizers.RMSprop(learning_rate=1e-4)")


def serialize(optimizer):
    return {"class_name": optimizer.__class__.__name__, "config": optimizer.get_config()}


__all__ = ["schedules", "LearningRateSchedule", "Optimizer", "SGD", "RMSprop", "Adam", "AdamW", "get", "serialize"]

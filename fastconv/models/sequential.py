"""Sequential: a Keras-style stack of layers that trains on cpu, cuda or reference.

    model = Sequential([Conv2D(32, 3, input_shape=(150, 150, 3)), Activation("relu"), ...],
                       device="cpu", seed=0)
    model.compile(optimizer=RMSprop(learning_rate=1e-4), loss="binary_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=50, validation_split=0.2)

The model owns its weights (on its device), their gradient buffers, the
optimizer state and one execution plan per (mode, batch size) with every
activation and workspace buffer (see fastconv.models._plan). Kernels come from
fastconv.kernels.get(device), resolved on first use, so a model can be built,
summarised and saved on a machine without that backend.
"""
from __future__ import annotations

import functools
import itertools
import math
import sys
import threading
import time
import warnings
from collections import OrderedDict

import numpy as np

from .. import _random, kernels
from .. import callbacks as cbks
from .. import layers as L
from .. import losses as losses_mod
from .. import optimizers as optimizers_mod
from .._memory import copy as _copy
from ._plan import Plan, describe, logical_ops

DEVICES = kernels.BACKENDS
METRICS = ("accuracy", "acc")
_MAX_PLANS = 6


def _locked(method):
    """Run `method` holding the model's lock (re-entrant: fit's callbacks may predict)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return run


def _all_finite(x):
    """True when float32 `x` holds no NaN or inf, allocating nothing in the common case.
    NaN and inf propagate through a float32 sum (SIMD, ~2x faster than a float64 one),
    so a finite sum proves every value finite; a non-finite sum (NaN or inf in x, or
    large finite values overflowing) is confirmed exactly."""
    if math.isfinite(float(np.add.reduce(x.reshape(-1)))):
        return True
    return bool(np.isfinite(x).all())


def _check_device(owner, device):
    if device not in DEVICES:
        raise ValueError(f"{owner}: unknown device {device!r}; choose one of "
                         f"{', '.join(DEVICES)}")
    return device


class Sequential:
    """A linear stack of layers (Keras's Sequential).

    Sequential(layers=None, name=None, device="cpu", seed=None). `seed` (or a
    prior fastconv.set_seed) makes initialisation, shuffling and dropout
    reproducible; layers are auto-named per model as in a fresh Keras 2 session
    (conv2d_1, activation_1, ...).

    Threads: one model may be used from several Python threads. Its plans (batch
    buffers) and weights are shared, so a model serialises its public entry points
    (fit, evaluate, predict, train_on_batch and what calls them, get/set_weights,
    compile, to, save, load_weights) with one re-entrant lock: concurrent calls take
    turns and each gives bitwise the serial result. Different models run truly in
    parallel (the cpu kernels release the GIL and keep their scratch per thread). A
    callback of fit that waits for another thread using the same model deadlocks.
    """

    _warned_nonfinite = False    # set on the instance by the first non-finite input

    def __init__(self, layers=None, name=None, device="cpu", seed=None):
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"Sequential: `name` must be a non-empty string, received "
                             f"name={name!r}")
        self.name = name or "sequential"
        self._lock = threading.RLock()        # see "Threads" above
        self._device = _check_device("Sequential", device)
        seed = _random.check_seed("Sequential", seed)
        self.seed = _random.draw_seed() if seed is None else seed
        self._init_rng, self._shuffle_rng, self._dropout_rng = _random.streams(self.seed)
        self._layer_rngs = {}
        self.layers = []
        self.input_shape = None
        self._K = None
        self._plans = OrderedDict()
        self._grads = {}
        self.optimizer = None
        self._loss = None
        self.loss = None
        self.metrics = []
        self.compiled = False
        self.stop_training = False
        self.history = None
        self._pending_optimizer_state = None    # (arrays, iterations) from load_model
        if layers is not None:
            if isinstance(layers, L.Layer):
                layers = [layers]
            for layer in layers:
                self.add(layer)

    # ------------------------------------------------------------------ structure
    @property
    def device(self):
        return self._device

    @property
    def built(self):
        return self.input_shape is not None and all(layer.built for layer in self.layers)

    @property
    def output_shape(self):
        if not self.built:
            return None
        return self.layers[-1].output_shape if self.layers else self.input_shape

    def add(self, layer):
        """Append a layer; it is built now when the input shape is known."""
        if not isinstance(layer, L.Layer):
            raise TypeError(f"{self.name}: add() takes a fastconv layer, received "
                            f"{type(layer).__name__} {layer!r:.80}")
        if isinstance(layer, L.InputLayer):
            if self.layers or self.input_shape is not None:
                raise ValueError(f"{self.name}: Input() can only be the first layer")
            self._name_layer(layer)
            self.input_shape = (None,) + layer.shape
            return
        if any(existing is layer for existing in self.layers):
            raise ValueError(f"{self.name}: layer '{layer.name}' was already added")
        if layer.input_shape_arg is not None:
            shape = (None,) + layer.input_shape_arg
            if not self.layers and self.input_shape is None:
                self.input_shape = shape
            elif self.output_shape != shape and self.built:
                raise ValueError(
                    f"{self.name}: layer '{layer.name or layer.prefix}' declares "
                    f"input_shape {layer.input_shape_arg} but the previous layer outputs "
                    f"{self.output_shape}")
        self._name_layer(layer)
        if self.built:
            if not layer.built:
                layer.build(self.output_shape, rng=self._init_rng)
            elif tuple(layer.input_shape) != tuple(self.output_shape):
                raise L.LayerError(
                    f"{layer.__class__.__name__} layer '{layer.name}' was built for input "
                    f"shape {layer.input_shape} but the model's output here is "
                    f"{self.output_shape}")
        self.layers.append(layer)
        if self.input_shape is not None and not self.built:
            self.build(self.input_shape)
        if self._K is not None and layer._weights:
            self._move_layer(layer, self._K)
        self._invalidate()

    def _name_layer(self, layer):
        taken = {l.name for l in self.layers}
        if layer.name is None:
            k = 1 + sum(1 for l in self.layers if l.prefix == layer.prefix)
            while f"{layer.prefix}_{k}" in taken:
                k += 1
            layer.name = f"{layer.prefix}_{k}"
        elif layer.name in taken:
            raise ValueError(f"{self.name}: all layers must have unique names; "
                             f"'{layer.name}' is already used")

    def pop(self):
        if not self.layers:
            raise TypeError(f"{self.name}: there are no layers to pop")
        layer = self.layers.pop()
        self._grads.pop(layer.name, None)
        self._invalidate()
        return layer

    def build(self, input_shape):
        """Build every layer for `input_shape` (None for the batch, e.g. (None, 150, 150, 3))."""
        input_shape = tuple(input_shape)
        if not input_shape or input_shape[0] is not None:
            input_shape = (None,) + tuple(input_shape)
        if self.input_shape is not None and tuple(self.input_shape) != input_shape:
            raise ValueError(f"{self.name}: was built for input shape {self.input_shape}, "
                             f"cannot build for {input_shape}")
        self.input_shape = input_shape
        shape = input_shape
        for layer in self.layers:
            if not layer.built:
                layer.build(shape, rng=self._init_rng)
                if self._K is not None and layer._weights:
                    self._move_layer(layer, self._K)
            elif tuple(layer.input_shape) != tuple(shape):
                raise L.LayerError(
                    f"{layer.__class__.__name__} layer '{layer.name}' was built for input "
                    f"shape {layer.input_shape} but receives {shape}")
            shape = layer.output_shape
        self._invalidate()

    def _require_built(self, what):
        if not self.built:
            raise ValueError(
                f"{self.name}: cannot {what} before the model is built; give the first "
                f"layer an input_shape, start with Input(shape), or call build(input_shape)")

    # ------------------------------------------------------------------ device
    def _backend(self):
        if self._K is None:
            K = kernels.get(self._device)
            for layer in self.layers:
                self._move_layer(layer, K)
            self._K = K
            if self.optimizer is not None:
                self.optimizer.to(K)
        return self._K

    def _move_layer(self, layer, K):
        host = layer.get_weights()
        layer._weights = [K.to_device(np.ascontiguousarray(w, np.float32)) for w in host]
        layer._K = K

    @_locked
    def to(self, device):
        """Move weights, optimizer state and future buffers to `device`; returns self."""
        device = _check_device(f"{self.name}.to", device)
        self._bind(kernels.get(device), device)
        return self

    def _bind(self, K, device):
        """Run on backend module K (anything exporting kernels.CONTRACT plus
        empty/zeros/to_device/to_host): move weights and optimizer state there and
        drop the plans, whose buffers lived on the old backend."""
        for layer in self.layers:
            self._move_layer(layer, K)
        if self.optimizer is not None:
            self.optimizer.to(K)
        self._K = K
        self._device = device
        self._grads = {}
        self._invalidate()

    def _invalidate(self):
        self._plans.clear()

    def _grads_of(self, layer, K):
        if layer.name not in self._grads:
            self._grads[layer.name] = tuple(K.empty(tuple(w.shape)) for w in layer._weights)
        return self._grads[layer.name]

    def _dropout_rng_of(self, layer):
        if layer.seed is None:
            return self._dropout_rng
        if layer.name not in self._layer_rngs:
            self._layer_rngs[layer.name] = np.random.default_rng(layer.seed)
        return self._layer_rngs[layer.name]

    def _rng_states(self):
        """JSON-able states of the init, shuffle and dropout generators (saved in files)."""
        return [rng.bit_generator.state for rng in
                (self._init_rng, self._shuffle_rng, self._dropout_rng)]

    def _set_rng_states(self, seed, states):
        self.seed = _random.check_seed(self.name, seed)
        rngs = _random.streams(self.seed)
        for rng, state in zip(rngs, states):
            rng.bit_generator.state = state
        self._init_rng, self._shuffle_rng, self._dropout_rng = rngs
        self._invalidate()

    def _params(self):
        return [w for layer in self.layers for w in layer._weights]

    def _grad_list(self, K):
        return [g for layer in self.layers if layer._weights for g in self._grads_of(layer, K)]

    def _plan(self, mode, n):
        key = (mode, n)
        plan = self._plans.get(key)
        if plan is None:
            K = self._backend()
            plan = Plan(self, K, n, training=mode == "train")
            if plan.training:
                plan.params = self._params()
                plan.grads = self._grad_list(K)
            self._plans[key] = plan
            while len(self._plans) > _MAX_PLANS:       # least recently used goes first
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return plan

    def plan_summary(self, training=True):
        """The kernel steps a plan runs on this device, e.g. ['conv2d_relu_maxpool', ...]."""
        self._require_built("plan")
        ops, head = logical_ops(self.layers)
        steps = describe(ops, self._backend())
        if head is not None:
            steps.append(f"{head.act} (folded into the loss)" if training else head.act)
        return steps

    # ------------------------------------------------------------------ weights
    def count_params(self):
        self._require_built("count parameters")
        return sum(layer.count_params() for layer in self.layers)

    @_locked
    def get_weights(self):
        """Host NumPy copies of all weights, layer by layer (kernel, bias), as Keras."""
        return [w for layer in self.layers for w in layer.get_weights()]

    @_locked
    def set_weights(self, weights):
        self._require_built("set weights")
        weights = list(weights)
        want = sum(len(layer._weights) for layer in self.layers)
        if len(weights) != want:
            raise ValueError(f"{self.name}: set_weights expects {want} arrays (kernel and bias "
                             f"of each Conv2D/Dense), received {len(weights)}")
        k = 0
        for layer in self.layers:      # every array checked before any is assigned
            for wname, w in zip(layer.weight_names, weights[k:k + len(layer._weights)]):
                w = np.asarray(w)
                if w.dtype.kind == "f" and not np.isfinite(w).all():
                    raise ValueError(
                        f"{self.name}: set_weights: layer '{layer.name}' "
                        f"({layer.__class__.__name__}) {wname} holds NaN or inf values; "
                        f"a model with them predicts NaN")
            k += len(layer._weights)
        k = 0
        for layer in self.layers:
            m = len(layer._weights)
            if m:
                layer.set_weights(weights[k:k + m])
                k += m

    # ------------------------------------------------------------------ compile
    @_locked
    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """optimizer: 'rmsprop' | 'sgd' | 'adam' or an optimizer object; loss:
        'binary_crossentropy' | 'sparse_categorical_crossentropy' |
        'categorical_crossentropy'; metrics: None or ['accuracy']."""
        if loss is None:
            raise ValueError(f"{self.name}.compile: `loss` is required, e.g. "
                             f"loss='binary_crossentropy'")
        opt = optimizers_mod.get(optimizer)
        spec = losses_mod.get(loss)
        if metrics is None:
            metrics = []
        if isinstance(metrics, str):
            metrics = [metrics]
        for m in metrics:
            if m not in METRICS:
                raise ValueError(f"{self.name}.compile: unknown metric {m!r}; fastconv "
                                 f"supports 'accuracy'")
        self.optimizer = opt
        self._pending_optimizer_state = None
        if self._K is not None:
            opt.to(self._K)
        self._loss = spec
        self.loss = spec.name
        self.metrics = list(metrics)
        self.compiled = True
        if self.built:
            self._check_head()
        self._invalidate()

    def _check_head(self):
        ops, head = logical_ops(self.layers)
        spec = self._loss
        out = self.output_shape
        if head is None or head.act != spec.head:
            last = self.layers[-1]
            got = f"'{last.name}' ({last.__class__.__name__}" + (
                f", activation={last.activation!r})" if hasattr(last, "activation") else ")")
            raise ValueError(
                f"{self.name}: loss {spec.name} needs the model to end in a {spec.head} "
                f"activation (e.g. Dense(units, activation='{spec.head}')), but its last "
                f"layer is {got}")
        if len(out) != 2:
            raise ValueError(f"{self.name}: loss {spec.name} needs a 2-D output (batch, units), "
                             f"the model outputs {out}")
        if spec.labels == "binary" and out[1] != 1:
            raise ValueError(f"{self.name}: loss binary_crossentropy needs 1 output unit, the "
                             f"model outputs {out}")

    def _require_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"{self.name}: call compile(optimizer, loss) before {what}")
        self._require_built(what)
        self._check_head()

    # ------------------------------------------------------------------ data
    def _check_x(self, x, what="x", finite=False):
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except Exception:
                raise TypeError(f"{self.name}: {what} must be a numpy array, received "
                                f"{type(x).__name__}") from None
        if x.dtype.kind not in "fiub":
            raise TypeError(f"{self.name}: {what} must hold numbers, received dtype {x.dtype}")
        if not self.built and self.layers:
            self.build((None,) + x.shape[1:])
        want = tuple(self.input_shape[1:])
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
            first = self.layers[0] if self.layers else None
            who = (f"layer '{first.name}' ({first.__class__.__name__})" if first
                   else "the model")
            raise ValueError(
                f"{self.name}: {what} has shape {x.shape} but {who} expects input shape "
                f"{self.input_shape}, i.e. {what} of shape (N,) + {want}")
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float32)
        # predict only: fit and evaluate see a non-finite input as a NaN loss (fit's guard
        # stops there), and the check would cost a pass over every training batch
        if finite and not self._warned_nonfinite and not _all_finite(x):
            self._warned_nonfinite = True
            warnings.warn(f"{self.name}: {what} holds NaN or inf values; the outputs computed "
                          f"from them are NaN or meaningless (warned once per model)",
                          RuntimeWarning, stacklevel=3)
        return x

    def _prep_labels(self, y, n, what="y"):
        """Labels in the loss kernel's format: float32 (N, 1) for binary, int32 (N,) else."""
        spec = self._loss
        out = self.output_shape
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{self.name}: labels {what} must be numeric, received dtype "
                            f"{y.dtype}")
        if y.shape[:1] != (n,):
            raise ValueError(f"{self.name}: x has {n} samples but labels {what} have shape "
                             f"{y.shape}")
        if spec.labels == "binary":
            if y.shape not in ((n,), (n, 1)):
                raise ValueError(
                    f"{self.name}: labels {what} have shape {y.shape} but the model's output "
                    f"is {out} with loss binary_crossentropy: expected ({n},) or ({n}, 1)")
            y = y.reshape(n, 1).astype(np.float32)
            if not np.all(np.isfinite(y)) or y.min(initial=0) < 0 or y.max(initial=0) > 1:
                raise ValueError(f"{self.name}: binary labels {what} must lie in [0, 1]")
            return y
        k = out[1]
        if spec.labels == "onehot":
            if y.shape != (n, k):
                raise ValueError(
                    f"{self.name}: labels {what} have shape {y.shape} but the model's output is "
                    f"{out} with loss categorical_crossentropy: expected one-hot ({n}, {k})")
            if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)):
                raise ValueError(f"{self.name}: categorical_crossentropy labels {what} must be "
                                 f"one-hot rows (soft labels are not supported)")
            return np.ascontiguousarray(np.argmax(y, axis=1).astype(np.int32))
        if y.shape not in ((n,), (n, 1)):
            raise ValueError(
                f"{self.name}: labels {what} have shape {y.shape} but the model's output is "
                f"{out} with loss sparse_categorical_crossentropy: expected class indices "
                f"({n},) or ({n}, 1)")
        y = y.reshape(n)
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise ValueError(f"{self.name}: labels {what} must be integer class indices")
        if n and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"{self.name}: labels {what} must be class indices in [0, {k}), "
                             f"received min {y.min()}, max {y.max()}")
        return y.astype(np.int32)

    def _batches(self, data, batch_size, shuffle, training, steps=None, labels=True):
        """Yield (plan, n) with the plan's input (and label) buffers filled.

        data: ('arrays', x, y) or ('iter', iterable)."""
        mode = "train" if training else "infer"
        if data[0] == "arrays":
            _, x, y = data
            total = x.shape[0]
            perm = self._shuffle_rng.permutation(total) if shuffle else None
            for start in range(0, total, batch_size):
                stop = min(start + batch_size, total)
                plan = self._plan(mode, stop - start)
                if perm is None:
                    plan.load_slice(x, y, start, stop)
                else:
                    plan.load_take(x, y, perm[start:stop])
                yield plan, stop - start
            return
        iterable = data[1]
        if steps is not None:      # a one-shot generator continues where it stopped
            iterable = itertools.islice(iterable, steps)
        for k, batch in enumerate(iterable):
            if isinstance(batch, (tuple, list)) and len(batch) >= 2:
                xb, yb = batch[0], batch[1]
            elif isinstance(batch, (tuple, list)) and len(batch) == 1:
                xb, yb = batch[0], None
            else:
                xb, yb = batch, None
            xb = self._check_x(xb, f"x of batch {k}", finite=not labels)
            n = xb.shape[0]
            if n == 0:
                continue
            need_y = labels and self._loss is not None
            if need_y and yb is None:
                raise ValueError(f"{self.name}: batch {k} has no labels; training needs "
                                 f"(x, y) batches")
            yp = self._prep_labels(yb, n, f"y of batch {k}") if need_y else None
            plan = self._plan(mode, n)
            plan.load_slice(xb, yp, 0, n)
            yield plan, n

    def _adapt(self, x, y, what):
        """('arrays', x, y) or ('iter', iterable) from fit/evaluate's arguments."""
        if isinstance(x, np.ndarray) or (isinstance(x, (list, tuple)) and y is not None):
            x = self._check_x(x, finite=what == "predict")
            if y is None:
                if what == "predict":
                    return ("arrays", x, None)
                raise ValueError(f"{self.name}.{what}: labels y are required with array x")
            return ("arrays", x, self._prep_labels(y, x.shape[0]))
        if y is not None:
            raise ValueError(f"{self.name}.{what}: y must be None when x is an iterable of "
                             f"(x, y) batches")
        if not hasattr(x, "__iter__"):
            raise TypeError(f"{self.name}.{what}: x must be a numpy array or an iterable of "
                            f"(x, y) batches, received {type(x).__name__}")
        return ("iter", x)

    # ------------------------------------------------------------------ steps
    def _train_step(self, plan, guard_snaps=None):
        """One optimisation step on the batch already in plan's buffers.

        Returns (loss, correct). A non-finite loss skips the update (correct is None)."""
        plan.forward()
        loss = plan.compute_loss()
        if not math.isfinite(loss):
            return loss, None
        correct = plan.correct() if self.metrics else 0
        if guard_snaps is not None:
            for p, s in zip(plan.params, guard_snaps):
                _copy(p, s)
        plan.backward()
        self.optimizer.apply(plan.K, plan.params, plan.grads)
        return loss, correct

    def _ensure_optimizer(self):
        K = self._backend()
        if not self.optimizer.built:
            if self._pending_optimizer_state is not None:
                arrays, iterations = self._pending_optimizer_state
                self.optimizer.set_state(arrays, K, self._params(), iterations)
                self._pending_optimizer_state = None
            else:
                self.optimizer.build(K, self._params())

    @_locked
    def train_on_batch(self, x, y, return_dict=False):
        """One step on (x, y); returns loss, or [loss, accuracy] with metrics. A NaN/inf
        loss is returned but not applied."""
        if not self.compiled:
            raise RuntimeError(f"{self.name}: call compile(optimizer, loss) before "
                               f"train_on_batch")
        x = self._check_x(x)                     # builds the model from x if needed
        self._require_compiled("train_on_batch")
        y = self._prep_labels(y, x.shape[0])
        self._ensure_optimizer()
        plan = self._plan("train", x.shape[0])
        plan.load_slice(x, y, 0, x.shape[0])
        loss, correct = self._train_step(plan)
        logs = {"loss": loss}
        for m in self.metrics:
            logs[m] = float("nan") if correct is None else correct / x.shape[0]
        return self._result(logs, return_dict)

    def _result(self, logs, return_dict):
        if return_dict:
            return logs
        if len(logs) == 1:
            return logs["loss"]
        return list(logs.values())

    # ------------------------------------------------------------------ fit
    @_locked
    def fit(self, x=None, y=None, batch_size=32, epochs=1, verbose=1, callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0,
            steps_per_epoch=None):
        """Train; returns a History whose .history has loss, accuracy, val_loss, val_accuracy.

        x, y: arrays, or x an iterable of (x, y) batches (e.g. a data pipeline with
        __iter__/__len__), re-iterated each epoch. validation_split takes the last
        fraction of array data (before shuffling), as Keras.
        """
        self._require_compiled_or_build(x)
        batch_size = self._check_positive("batch_size", batch_size)
        epochs = self._check_positive("epochs", epochs, allow_zero=True)
        if not isinstance(validation_split, (int, float)) or not 0 <= validation_split < 1:
            raise ValueError(f"{self.name}.fit: validation_split must be in [0, 1), received "
                             f"validation_split={validation_split!r}")
        data = self._adapt(x, y, "fit")
        if validation_split:
            if data[0] != "arrays":
                raise ValueError(f"{self.name}.fit: validation_split needs array x and y; "
                                 f"pass validation_data with an iterable")
            split = int(data[1].shape[0] * (1.0 - validation_split))
            if split == 0 or split == data[1].shape[0]:
                raise ValueError(f"{self.name}.fit: validation_split={validation_split} leaves "
                                 f"no training or no validation samples of {data[1].shape[0]}")
            val = ("arrays", data[1][split:], data[2][split:])
            data = ("arrays", data[1][:split], data[2][:split])
        elif validation_data is not None:
            if isinstance(validation_data, tuple) and len(validation_data) == 3:
                raise ValueError(f"{self.name}.fit: validation_data=(x, y, sample_weight): "
                                 f"sample weights are not supported; pass (x, y)")
            if isinstance(validation_data, tuple) and len(validation_data) == 2 \
                    and isinstance(validation_data[0], np.ndarray):
                val = self._adapt(validation_data[0], validation_data[1], "fit")
            else:
                val = self._adapt(validation_data, None, "fit")
        else:
            val = None
        if data[0] == "arrays":
            steps = math.ceil(data[1].shape[0] / batch_size)
        else:
            steps = steps_per_epoch if steps_per_epoch is not None else (
                len(data[1]) if hasattr(data[1], "__len__") else None)
        self._ensure_optimizer()

        callbacks = list(callbacks or [])
        for c in callbacks:
            if not isinstance(c, cbks.Callback):
                raise TypeError(f"{self.name}.fit: callbacks must be fastconv.callbacks."
                                f"Callback objects, received {type(c).__name__}")
        history = cbks.History()
        guard = next((c for c in callbacks if isinstance(c, cbks.TerminateOnNaN)), None)
        if guard is None:
            guard = cbks.TerminateOnNaN()
            callbacks.append(guard)
        callbacks.append(history)
        params = {"epochs": epochs, "steps": steps, "verbose": verbose,
                  "batch_size": batch_size}
        cb = cbks.CallbackList(callbacks, self, params)
        snaps = None
        if guard.restore_weights:
            K = self._backend()
            snaps = [K.empty(tuple(p.shape)) for p in self._params()]
            for p, s in zip(self._params(), snaps):
                _copy(p, s)

        self.stop_training = False
        self.history = history
        cb.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            if verbose:
                print(f"Epoch {epoch + 1}/{epochs}", flush=True)
            cb.on_epoch_begin(epoch)
            t0 = time.perf_counter()
            bar = self._bar(steps, verbose)
            loss_sum, correct_sum, seen = 0.0, 0, 0
            nonfinite = None
            for b, (plan, n) in enumerate(self._batches(data, batch_size, shuffle, True,
                                                        steps_per_epoch)):
                cb.on_train_batch_begin(b)
                loss, correct = self._train_step(plan, snaps)
                if correct is None:
                    nonfinite = (b, loss)
                    loss_sum += loss * n
                    seen += n
                    restored = snaps is not None
                    if restored:
                        for p, s in zip(self._params(), snaps):
                            _copy(s, p)
                    guard.on_nonfinite_loss(epoch, b, loss, restored)
                    break
                loss_sum += loss * n
                correct_sum += correct
                seen += n
                batch_logs = {"loss": loss_sum / seen}
                for m in self.metrics:
                    batch_logs[m] = correct_sum / seen
                cb.on_train_batch_end(b, batch_logs)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(batch_logs, refresh=False)
                if self.stop_training:
                    break
            if bar is not None:
                bar.close()
            if seen == 0:
                raise ValueError(
                    f"{self.name}.fit: the training data yielded no samples in epoch "
                    f"{epoch + 1} (a one-shot generator is exhausted after one pass: pass a "
                    f"re-iterable object, or steps_per_epoch)")
            logs = {"loss": loss_sum / seen}
            for m in self.metrics:
                logs[m] = correct_sum / seen if nonfinite is None else float("nan")
            if val is not None:
                vlogs = self._evaluate_data(val, batch_size)
                for k, v in vlogs.items():
                    logs[f"val_{k}"] = v
            cb.on_epoch_end(epoch, logs)
            if verbose:
                took = time.perf_counter() - t0
                print(f"{seen}/{seen} - {took:.0f}s - " +
                      " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
            if self.stop_training:
                break
        cb.on_train_end()
        return history

    def _require_compiled_or_build(self, x):
        if not self.compiled:
            raise RuntimeError(f"{self.name}: call compile(optimizer, loss) before fit")
        if not self.built and isinstance(x, np.ndarray) and self.layers:
            self.build((None,) + x.shape[1:])
        self._require_built("fit")
        self._check_head()

    def _check_positive(self, arg, value, allow_zero=False):
        low = 0 if allow_zero else 1
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{self.name}: `{arg}` must be an int >= {low}, received "
                             f"{arg}={value!r}")
        return int(value)

    @staticmethod
    def _bar(steps, verbose):
        if verbose != 1:
            return None
        from tqdm import tqdm
        return tqdm(total=steps, unit="batch", file=sys.stdout, leave=False,
                    dynamic_ncols=True)

    # ------------------------------------------------------------------ evaluate / predict
    def _evaluate_data(self, data, batch_size):
        loss_sum, correct_sum, seen = 0.0, 0, 0
        for plan, n in self._batches(data, batch_size, False, False):
            plan.forward()
            loss_sum += plan.compute_loss() * n
            if self.metrics:
                correct_sum += plan.correct()
            seen += n
        if seen == 0:
            raise ValueError(f"{self.name}: the evaluation data yielded no samples")
        logs = {"loss": loss_sum / seen}
        for m in self.metrics:
            logs[m] = correct_sum / seen
        return logs

    @_locked
    def evaluate(self, x=None, y=None, batch_size=32, verbose=0, return_dict=False):
        """Loss (and accuracy) in inference mode (no dropout): loss, [loss, acc] or a dict."""
        self._require_compiled_or_build(x)
        batch_size = self._check_positive("batch_size", batch_size)
        logs = self._evaluate_data(self._adapt(x, y, "evaluate"), batch_size)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        return self._result(logs, return_dict)

    def test_on_batch(self, x, y, return_dict=False):
        return self.evaluate(x, y, batch_size=max(1, len(x)), return_dict=return_dict)

    @_locked
    def predict(self, x, batch_size=32, verbose=0):
        """Model outputs (after the final sigmoid/softmax) as a float32 NumPy array."""
        if not self.built and isinstance(x, np.ndarray) and self.layers:
            self.build((None,) + x.shape[1:])
        self._require_built("predict")
        batch_size = self._check_positive("batch_size", batch_size)
        data = self._adapt(x, None, "predict")
        if data[0] == "arrays":
            xa = data[1]
            result = np.empty((xa.shape[0],) + tuple(self.output_shape[1:]), np.float32)
            start = 0
            for plan, n in self._batches(("arrays", xa, None), batch_size, False, False):
                plan.forward()
                result[start:start + n] = plan.predict_out()
                start += n
            return result
        outs = []
        for plan, n in self._batches(data, batch_size, False, False, labels=False):
            plan.forward()
            outs.append(np.array(plan.predict_out(), copy=True))
        if not outs:
            return np.empty((0,) + tuple(self.output_shape[1:]), np.float32)
        return np.concatenate(outs)

    def predict_on_batch(self, x):
        return self.predict(x, batch_size=max(1, len(x)))

    def __call__(self, x):
        return self.predict(x)

    # ------------------------------------------------------------------ summary / config
    def summary(self, line_length=None, positions=None, print_fn=None):
        """Print the Keras 2 summary table (Layer (type), Output Shape, Param #)."""
        self._require_built("summarise")
        print_fn = print_fn or print
        line_length = line_length or 65
        positions = positions or [0.45, 0.85, 1.0]
        if positions[-1] <= 1:
            positions = [int(line_length * p) for p in positions]

        def row(fields):
            line = ""
            for i, field in enumerate(fields):
                if i > 0:
                    line = line[:-1] + " "
                line += str(field)
                line = line[:positions[i]]
                line += " " * (positions[i] - len(line))
            print_fn(line)

        print_fn("_" * line_length)
        row(["Layer (type)", "Output Shape", "Param #"])
        print_fn("=" * line_length)
        for i, layer in enumerate(self.layers):
            row([f"{layer.name} ({layer.__class__.__name__})", layer.output_shape,
                 layer.count_params()])
            print_fn(("=" if i == len(self.layers) - 1 else "_") * line_length)
        total = self.count_params()
        print_fn(f"Total params: {total:,}")
        print_fn(f"Trainable params: {total:,}")
        print_fn("Non-trainable params: 0")
        print_fn("_" * line_length)

    def get_config(self):
        config = {"name": self.name, "layers": [L.serialize(layer) for layer in self.layers]}
        if self.input_shape is not None:
            config["input_shape"] = list(self.input_shape[1:])
        return config

    @classmethod
    def from_config(cls, config, device="cpu", seed=None):
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(f"a Sequential config must be a dict with a 'layers' list, "
                             f"received {config!r:.120}")
        model = cls(name=config.get("name"), device=device, seed=seed)
        if config.get("input_shape") is not None:
            model.add(L.Input(tuple(config["input_shape"])))
        for spec in config["layers"]:
            model.add(L.deserialize(spec))
        return model

    @_locked
    def save(self, filepath, include_optimizer=True):
        """Write the architecture, weights and (optionally) optimizer state to one
        .npz file, atomically. Load with fastconv.load_model."""
        from . import saving
        saving.save_model(self, filepath, include_optimizer=include_optimizer)

    @_locked
    def save_weights(self, filepath):
        from . import saving
        saving.save_weights(self, filepath)

    @_locked
    def load_weights(self, filepath):
        from . import saving
        saving.load_weights(self, filepath)

    def __repr__(self):
        return (f"<Sequential name={self.name!r} device={self.device!r} "
                f"layers={len(self.layers)}>")

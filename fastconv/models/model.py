"""Model: what any fastconv model is, whichever way its layers connect.

A model owns its layers and their weights (on its device), the weights' gradient
buffers, the optimizer state, three random streams (init, shuffle, dropout) and one
execution plan per (mode, batch size) with every activation and workspace buffer
(see fastconv.models._plan). Kernels come from fastconv.kernels.get(device),
resolved on first use, so a model can be built, summarised and saved on a machine
without that backend. Training (compile, fit, evaluate, predict) is training.Trainer;
how the layers connect is the subclass's (sequential.Sequential: a linear stack).
"""
from __future__ import annotations

import functools
import threading
from collections import OrderedDict

import numpy as np

from .. import _random, kernels
from ._plan import Plan, describe, logical_ops
from .summary import print_summary

DEVICES = kernels.BACKENDS
_MAX_PLANS = 6
_FILE_CLASSES = {}      # class_name in a model file -> the Model subclass that loads it


def locked(method):
    """Run `method` holding the model's lock (re-entrant: fit's callbacks may predict)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return run


def loadable(cls):
    """Class decorator: model files whose class_name is cls.__name__ load as cls
    (through cls.from_config and cls.planned_weights; see models.saving)."""
    _FILE_CLASSES[cls.__name__] = cls
    return cls


def model_class(name):
    """The Model subclass that loads files of class_name `name`, or None."""
    return _FILE_CLASSES.get(name) if isinstance(name, str) else None


def loadable_names():
    """The class names that model files may hold, e.g. ['Sequential']."""
    return sorted(_FILE_CLASSES)


def _check_device(owner, device):
    if device not in DEVICES:
        raise ValueError(f"{owner}: unknown device {device!r}; choose one of "
                         f"{', '.join(DEVICES)}")
    return device


class Model:
    """The base of fastconv's models: layers, device, weights and their order, plans.

    A subclass says how the layers connect: it provides output_shape, build(input_shape),
    get_config(), from_config(config, device, seed) and planned_weights(config) (see
    models.saving), and adds its layers to self.layers in the order their weights are
    listed (get_weights, set_weights and model files use that order).

    Model files (models.saving, models.keras_weights) use only public attributes and
    methods: layers, name, seed, compiled, loss, metrics, optimizer, get_config,
    compile, set_weights, require_built, weight_specs, trainable_weight_specs,
    rng_states / set_rng_states and optimizer_state / restore_optimizer_state (the "model
    files" section below).

    Threads: one model may be used from several Python threads. Its plans (batch
    buffers) and weights are shared, so a model serialises its public entry points
    (fit, evaluate, predict, train_on_batch and what calls them, get/set_weights,
    compile, to, save, load_weights) with one re-entrant lock (the @locked methods):
    concurrent calls take turns and each gives bitwise the serial result. Different
    models run truly in parallel (the cpu kernels release the GIL and keep their
    scratch per thread). A callback of fit that waits for another thread using the same
    model deadlocks.
    """

    _kind = "Model"              # the class that constructor errors name
    default_name = "model"       # the model's name when none is given
    _warned_nonfinite = False    # set on the instance by the first non-finite input

    def __init__(self, name=None, device="cpu", seed=None):
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"{self._kind}: `name` must be a non-empty string, received "
                             f"name={name!r}")
        self.name = name or self.default_name
        self._lock = threading.RLock()        # see "Threads" above
        self._device = _check_device(self._kind, device)
        seed = _random.check_seed(self._kind, seed)
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

    # ------------------------------------------------------------------ structure
    @property
    def device(self):
        return self._device

    @property
    def built(self):
        return self.input_shape is not None and all(layer.built for layer in self.layers)

    def require_built(self, what):
        if not self.built:
            raise ValueError(
                f"{self.name}: cannot {what} before the model is built; give the first "
                f"layer an input_shape, start with Input(shape), or call build(input_shape)")

    def _name_layer(self, layer):
        """Give an unnamed layer the next free Keras auto-name (conv2d_1, ...); refuse a
        name another layer of this model has."""
        taken = {l.name for l in self.layers}
        if layer.name is None:
            k = 1 + sum(1 for l in self.layers if l.prefix == layer.prefix)
            while f"{layer.prefix}_{k}" in taken:
                k += 1
            layer.name = f"{layer.prefix}_{k}"
        elif layer.name in taken:
            raise ValueError(f"{self.name}: all layers must have unique names; "
                             f"'{layer.name}' is already used")

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

    @locked
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
        """The gradient buffers of the layer's trainable weights (its first
        trainable_weight_count(): a BatchNormalization's moving statistics have none)."""
        if layer.name not in self._grads:
            self._grads[layer.name] = tuple(K.empty(tuple(w.shape)) for w in
                                            layer._weights[:layer.trainable_weight_count()])
        return self._grads[layer.name]

    def _dropout_rng_of(self, layer):
        if layer.seed is None:
            return self._dropout_rng
        if layer.name not in self._layer_rngs:
            self._layer_rngs[layer.name] = np.random.default_rng(layer.seed)
        return self._layer_rngs[layer.name]

    def _params(self):
        """The trainable weights, in get_weights() order (what the optimizer updates)."""
        return [w for layer in self.layers
                for w in layer._weights[:layer.trainable_weight_count()]]

    def _grad_list(self, K):
        return [g for layer in self.layers if layer._weights for g in self._grads_of(layer, K)]

    def _logical_ops(self):
        """(ops, head) of the layers as the plan runs them (_plan.logical_ops); a model
        whose layers are not a chain passes how they connect."""
        return logical_ops(self.layers)

    def _plan(self, mode, n, shard=None):
        """The plan of batch size n; shard (total, first): n rows of a global batch of
        `total` starting at row `first` (fastconv.distributed), None: the whole batch."""
        key = (mode, n) if shard is None else (mode, n, shard)
        plan = self._plans.get(key)
        if plan is None:
            K = self._backend()
            plan = Plan(self, K, n, training=mode == "train", shard=shard)
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
        self.require_built("plan")
        ops, head = self._logical_ops()
        steps = describe(ops, self._backend(), training)
        if head is not None:
            steps.append(f"{head.act} (folded into the loss)" if training else head.act)
        return steps

    # ------------------------------------------------------------------ weights
    def count_params(self):
        self.require_built("count parameters")
        return sum(layer.count_params() for layer in self.layers)

    def count_trainable_params(self):
        self.require_built("count parameters")
        return sum(layer.count_trainable_params() for layer in self.layers)

    @locked
    def get_weights(self):
        """Host NumPy copies of all weights, layer by layer (kernel, bias), as Keras."""
        return [w for layer in self.layers for w in layer.get_weights()]

    @locked
    def set_weights(self, weights):
        self.require_built("set weights")
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

    # ------------------------------------------------------------------ model files
    def weight_specs(self):
        """[(layer name, weight name, shape)] of every weight in get_weights() order,
        copying nothing (a model file's weight list is checked against it)."""
        return [(layer.name, wname, shape) for layer in self.layers
                for wname, shape in zip(layer.weight_names, layer.weight_shapes())]

    def trainable_weight_specs(self):
        """weight_specs() of the trainable weights only (the optimizer keeps state for
        these: a file's optimizer state is counted against them)."""
        return [(layer.name, wname, shape) for layer in self.layers
                for wname, shape in list(zip(layer.weight_names, layer.weight_shapes()))[
                    :layer.trainable_weight_count()]]

    def rng_states(self):
        """JSON-able states of the init, shuffle and dropout generators (saved in files)."""
        return [rng.bit_generator.state for rng in
                (self._init_rng, self._shuffle_rng, self._dropout_rng)]

    def set_rng_states(self, seed, states):
        """Continue the generators from `states` (rng_states() of a model of `seed`)."""
        self.seed = _random.check_seed(self.name, seed)
        rngs = _random.streams(self.seed)
        for rng, state in zip(rngs, states):
            rng.bit_generator.state = state
        self._init_rng, self._shuffle_rng, self._dropout_rng = rngs
        self._invalidate()

    def optimizer_state(self):
        """(iterations, host arrays) of the optimizer state a save writes: the built
        optimizer's, else the one a loaded file holds for the next fit; or None."""
        if self.optimizer is not None and self.optimizer.built:
            return self.optimizer.iterations, self.optimizer.get_state()
        if self._pending_optimizer_state is not None:
            arrays, iterations = self._pending_optimizer_state
            return iterations, arrays
        return None

    def restore_optimizer_state(self, arrays, iterations):
        """Optimizer state read from a file (after compile): the optimizer takes it when
        it is built, at the next fit or train_on_batch; a new compile drops it."""
        self._pending_optimizer_state = (arrays, iterations)

    # ------------------------------------------------------------------ plan
    def _check_head(self):
        """The compiled loss needs the plan's head (a final sigmoid/softmax, folded into
        the loss) and a (batch, units) output; compile and fit check it."""
        ops, head = self._logical_ops()
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

    # ------------------------------------------------------------------ summary
    def summary(self, line_length=None, positions=None, print_fn=None):
        """Print the Keras 2 summary table (Layer (type), Output Shape, Param #)."""
        print_summary(self, line_length, positions, print_fn)

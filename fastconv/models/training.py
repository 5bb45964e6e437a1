"""Trainer: compile, fit, evaluate, predict and the per-batch calls, for any model.

    model.compile(optimizer=RMSprop(learning_rate=1e-4), loss="binary_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=50, validation_split=0.2)

A mixin of models.model.Model subclasses (class Sequential(Trainer, Model)). It runs
the model through its plan interface only: _plan(mode, n) (a Plan with load_slice,
load_take, forward, compute_loss, correct, backward, predict_out, params, grads, K),
_params(), _check_head(), build()/built/output_shape and the batch helpers of
models.batches, so a model whose layers form a graph reuses it unchanged.
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from .. import callbacks as cbks
from .. import losses as losses_mod
from .. import optimizers as optimizers_mod
from ..layers import regularizers as regularizers_mod
from .._memory import copy as _copy
from . import batches, metrics as metrics_mod, weighting
from ._plan import device_kit
from .model import locked

METRICS = metrics_mod.NAMES


class _GuardedUpdates:
    """The backend as the optimizer sees it in fit's cuda step: the same update ops, each
    launched guarded by the device's step statistics (skipped on the device once a step's
    loss is not finite) and saving the parameter's old value into its snapshot buffer in
    the same pass (kernels/cuda/optimizers.py), so no host check and no parameter copy."""

    def __init__(self, opt_mod, stats, params, snaps):
        self._ops, self._stats = opt_mod, stats
        self._snap = {id(p): s for p, s in zip(params, snaps)} if snaps is not None else {}
        self._saved = set()     # ids of parameters whose snapshot this step already took

    def _guard(self, p):
        """The guard of p's next update. The optimizer's weight decay (sgd_update with p as
        its own gradient) runs just before p's update: it takes the snapshot (the weights
        before the step) and p's update that follows must not take it again."""
        if id(p) in self._saved:
            self._saved.discard(id(p))
            return (self._stats, None)
        return (self._stats, self._snap.get(id(p)))

    def sgd_update(self, p, g, v_, lr, momentum=0.0, nesterov=False):
        guard = self._guard(p)
        if g is p:
            self._saved.add(id(p))
        self._ops.sgd_update(p, g, v_, lr, momentum, nesterov, guard=guard)

    # gradient clipping works on the gradients only: nothing to guard (a step whose loss
    # was not finite skips its updates anyway)
    def sum_squares(self, x, acc, accumulate=False):
        self._ops.sum_squares(x, acc, accumulate)

    def clip_by_norm(self, g, sumsq, clipnorm):
        self._ops.clip_by_norm(g, sumsq, clipnorm)

    def clip_by_value(self, g, clipvalue):
        self._ops.clip_by_value(g, clipvalue)

    def rmsprop_update(self, p, g, ms, lr, rho=0.9, eps=1e-7):
        self._ops.rmsprop_update(p, g, ms, lr, rho, eps, guard=self._guard(p))

    def adam_update(self, p, g, m, v_, t, lr, beta1=0.9, beta2=0.999, eps=1e-7):
        self._ops.adam_update(p, g, m, v_, t, lr, beta1, beta2, eps, guard=self._guard(p))


def _shown(key, value):
    """A log value as the epoch line prints it: 4 decimals, and the learning rate (which
    callbacks add) as Keras's progress bar prints small numbers, 4 significant digits."""
    if key == "learning_rate" and abs(value) <= 1e-3:
        return f"{value:.4e}"
    return f"{value:.4f}"


def _overrides(callbacks, name):
    """True when some callback defines its own `name` hook (not the no-op base one)."""
    base = getattr(cbks.Callback, name)
    return any(getattr(type(c), name, base) is not base for c in callbacks)


class Trainer:
    """compile/fit/evaluate/predict/train_on_batch/test_on_batch/predict_on_batch (Keras's
    Model API) on the model's plans; every public entry point holds the model's lock."""

    # the batch helpers, as methods of the model (see models.batches)
    _check_x = batches.check_x
    _prep_labels = batches.prep_labels
    _batches = batches.batches
    _adapt = batches.adapt
    _check_positive = batches.check_positive

    # ------------------------------------------------------------------ compile
    @locked
    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """optimizer: 'rmsprop' | 'sgd' | 'adam' or an optimizer object; loss:
        'binary_crossentropy' | 'sparse_categorical_crossentropy' |
        'categorical_crossentropy' or a fastconv.losses object; metrics: None or a list of
        'accuracy', 'binary_accuracy', 'precision', 'recall', 'auc',
        'top_k_categorical_accuracy', 'sparse_top_k_categorical_accuracy' (Keras 3's
        defaults; streamed over an epoch, fastconv/models/metrics.py)."""
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
                                 f"supports {', '.join(repr(n) for n in METRICS)}")
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

    def _require_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"{self.name}: call compile(optimizer, loss) before {what}")
        self.require_built(what)
        self._check_head()

    # ------------------------------------------------------------------ steps
    def _train_step(self, plan, guard_snaps=None):
        """One optimisation step on the batch already in plan's buffers.

        Returns (loss, correct). A non-finite loss skips the update (correct is None)."""
        plan.forward()
        loss = plan.compute_loss()
        if getattr(self, "_distributed", None) is not None:    # fastconv.distributed
            return self._distributed.step(plan, loss, guard_snaps)
        if not math.isfinite(loss):
            return loss, None
        correct = plan.correct() if self.metrics else 0
        self._update_streams(plan, getattr(self, "_streams", None))
        if guard_snaps is not None:
            for p, s in zip(plan.params, guard_snaps):
                _copy(p, s)
        plan.backward()
        regs = self._regularized()
        if regs:
            loss += self._regularize(plan.K, plan.params, plan.grads, regs)
        self.optimizer.apply(plan.K, plan.params, plan.grads)
        return loss, correct

    # ------------------------------------------------------------------ metrics
    def _update_streams(self, plan, streams):
        """Add the batch in plan (its last forward) to the streamed metrics, if any."""
        if streams:
            logits = plan.host_logits()
            head = plan.head.act if plan.head is not None else None
            for s in streams.values():
                s.update(plan.labels_host, logits, head)

    def _metric_logs(self, accuracy, streams):
        """{metric: value} in compile order: accuracy as given, the streamed ones'
        results."""
        return {m: accuracy if m in metrics_mod.ACCURACY else streams[m].result()
                for m in self.metrics}

    # ------------------------------------------------------------------ regularizers
    def _regularized(self):
        """[(index into _params(), l1, l2)] of the weights with a regularizer (Conv2D's and
        Dense's kernel_regularizer / bias_regularizer)."""
        out, k = [], 0
        for layer in self.layers:
            n = len(layer._weights[:layer.trainable_weight_count()]) if layer._weights else 0
            for i, reg in regularizers_mod.of_layer(layer):
                if i < n:
                    out.append((k + i, reg.l1, reg.l2))
            k += n
        return out

    def _penalty_acc(self, K):
        """This model's (1,) float32 accumulator of the penalty on backend K (the model's
        lock keeps threads apart; a new one after the model moves to another device)."""
        held = getattr(self, "_reg_acc", None)
        if held is None or held[0] is not K:
            held = self._reg_acc = (K, K.zeros((1,)))
        return held[1]

    def _regularize(self, K, params, grads, regs, read=True):
        """Keras 3's penalty of the regularized weights (before this step's update) into
        the accumulator, and its gradient added to grads (grads None: the penalty only).
        Returns the penalty as a float when read (a host copy on cuda), else None."""
        acc = self._penalty_acc(K)
        for j, (k, l1, l2) in enumerate(regs):
            K.regularize(params[k], None if grads is None else grads[k], l1, l2, acc,
                         accumulate=j > 0)
        if not read:
            return None
        return float(acc[0]) if isinstance(acc, np.ndarray) else float(K.to_host(acc)[0])

    def _ensure_optimizer(self):
        K = self._backend()
        if not self.optimizer.built:
            if self._pending_optimizer_state is not None:
                arrays, iterations = self._pending_optimizer_state
                self.optimizer.set_state(arrays, K, self._params(), iterations)
                self._pending_optimizer_state = None
            else:
                self.optimizer.build(K, self._params())

    @locked
    def train_on_batch(self, x, y, sample_weight=None, class_weight=None, return_dict=False):
        """One step on (x, y); returns loss, or [loss, accuracy] with metrics. A NaN/inf
        loss is returned but not applied. sample_weight / class_weight as fit's (the loss
        sum(w * l) / N)."""
        if not self.compiled:
            raise RuntimeError(f"{self.name}: call compile(optimizer, loss) before "
                               f"train_on_batch")
        x = self._check_x(x)                     # builds the model from x if needed
        self._require_compiled("train_on_batch")
        y = self._prep_labels(y, x.shape[0])
        w = self._fit_weights(y, sample_weight, class_weight, "train_on_batch")
        self._ensure_optimizer()
        plan = self._plan("train", x.shape[0])
        plan.load_slice(x, y, 0, x.shape[0], w)
        self._streams = metrics_mod.make(self.metrics)
        loss, correct = self._train_step(plan)
        logs = {"loss": loss}
        values = self._metric_logs(None if correct is None else correct / x.shape[0],
                                   self._streams)
        for m in self.metrics:
            logs[m] = float("nan") if correct is None else values[m]
        return self._result(logs, return_dict)

    def _fit_weights(self, y, sample_weight, class_weight, what):
        """The float32 (N,) sample weights of prepared labels y from sample_weight or
        class_weight (models.weighting), or None."""
        weighting.combine(self, sample_weight, class_weight, what)
        if class_weight is not None:
            vec = weighting.class_weight_vector(self, class_weight,
                                                weighting.classes_of(self, y))
            return weighting.sample_weights_from_classes(self, vec, y)
        return weighting.check_sample_weight(self, sample_weight, y.shape[0])

    def _result(self, logs, return_dict):
        if return_dict:
            return logs
        if len(logs) == 1:
            return logs["loss"]
        return list(logs.values())

    # ------------------------------------------------------------------ fit
    @locked
    def fit(self, x=None, y=None, batch_size=32, epochs=1, verbose=1, callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, distributed=False):
        """Train; returns a History whose .history has loss, accuracy, val_loss, val_accuracy.

        x, y: arrays, or x an iterable of (x, y) or (x, y, sample_weight) batches (e.g. a
        data pipeline with __iter__/__len__), re-iterated each epoch. validation_split
        takes the last fraction of array data (and of sample_weight; before shuffling),
        as Keras.

        sample_weight (N,) (arrays) or class_weight ({class: weight}, or "balanced":
        n_samples / (n_classes * count_c) over the classes in y, or in x.labels for a
        dataset) weight each sample's training loss as Keras 3 does, with its default
        reduction sum_over_batch_size: a batch's loss is sum_i(w_i * l_i) / N, N the
        batch size (not the weights' sum), and the epoch's loss the batch-size-weighted
        mean of those. Not both (as Keras). The validation loss is unweighted unless
        validation_data is (x, y, sample_weight); "accuracy" is never weighted (Keras's
        compiled metrics; see fastconv/models/weighting.py).
        distributed: True (MPI.COMM_WORLD) or an mpi4py communicator: data-parallel
        training under mpirun, batch_size being the global batch (fastconv.distributed).
        """
        args = dict(x=x, y=y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                    callbacks=callbacks, validation_split=validation_split,
                    validation_data=validation_data, shuffle=shuffle,
                    class_weight=class_weight, sample_weight=sample_weight,
                    initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch)
        if distributed is False or distributed is None:
            return self._fit(**args)
        from ..distributed import fit as distributed_fit
        return distributed_fit(self, distributed, self._fit, args)

    def _fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split,
             validation_data, shuffle, class_weight, sample_weight, initial_epoch,
             steps_per_epoch):
        self._require_compiled_or_build(x)
        batch_size = self._check_positive("batch_size", batch_size)
        epochs = self._check_positive("epochs", epochs, allow_zero=True)
        if not isinstance(validation_split, (int, float)) or not 0 <= validation_split < 1:
            raise ValueError(f"{self.name}.fit: validation_split must be in [0, 1), received "
                             f"validation_split={validation_split!r}")
        weighting.combine(self, sample_weight, class_weight)
        data = self._adapt(x, y, "fit", sample_weight)
        if class_weight is not None:
            if data[0] == "arrays":
                vec = weighting.class_weight_vector(
                    self, class_weight, weighting.classes_of(self, data[2]))
                data = data[:3] + (weighting.sample_weights_from_classes(self, vec, data[2]),)
            else:
                labels = getattr(data[1], "labels", None) if class_weight == "balanced" \
                    else None
                vec = weighting.class_weight_vector(self, class_weight, labels)
                data = ("iter", data[1], vec)
        if validation_split:
            if data[0] != "arrays":
                raise ValueError(f"{self.name}.fit: validation_split needs array x and y; "
                                 f"pass validation_data with an iterable")
            split = int(data[1].shape[0] * (1.0 - validation_split))
            if split == 0 or split == data[1].shape[0]:
                raise ValueError(f"{self.name}.fit: validation_split={validation_split} leaves "
                                 f"no training or no validation samples of {data[1].shape[0]}")
            w = data[3]
            # Keras splits sample_weight with x and y; class weights apply to training only
            val = ("arrays", data[1][split:], data[2][split:],
                   None if w is None or class_weight is not None else w[split:])
            data = ("arrays", data[1][:split], data[2][:split],
                    None if w is None else w[:split])
        elif validation_data is not None:
            if isinstance(validation_data, tuple) and len(validation_data) in (2, 3) \
                    and isinstance(validation_data[0], np.ndarray):
                val = self._adapt(validation_data[0], validation_data[1], "fit",
                                  validation_data[2] if len(validation_data) == 3 else None)
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
            self._streams = metrics_mod.make(self.metrics)
            # under MPI (fastconv.distributed) every step reads its loss anyway (the
            # exchange waits for it): the host loop, whose step it replaces, also on cuda
            kit = device_kit(self._backend()) if getattr(self, "_distributed", None) \
                is None else None
            if kit is not None:
                loss_sum, correct_sum, seen, nonfinite = self._fit_epoch_device(
                    kit, data, batch_size, shuffle, steps_per_epoch, cb, bar, guard, snaps,
                    epoch, _overrides(callbacks, "on_train_batch_end"))
            for b, (plan, n) in enumerate(() if kit is not None else
                                          self._batches(data, batch_size, shuffle, True,
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
                batch_logs.update(self._metric_logs(correct_sum / seen, self._streams))
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
            values = self._metric_logs(correct_sum / seen, self._streams)
            for m in self.metrics:
                logs[m] = values[m] if nonfinite is None else float("nan")
            if val is not None:
                vlogs = self._evaluate_data(val, batch_size)
                for k, v in vlogs.items():
                    logs[f"val_{k}"] = v
            cb.on_epoch_end(epoch, logs)
            if verbose:
                took = time.perf_counter() - t0
                print(f"{seen}/{seen} - {took:.0f}s - " +
                      " - ".join(f"{k}: {_shown(k, v)}" for k, v in logs.items()), flush=True)
            if self.stop_training:
                break
        cb.on_train_end()
        return history

    def _fit_epoch_device(self, kit, data, batch_size, shuffle, steps_per_epoch, cb, bar,
                          guard, snaps, epoch, batch_logs_wanted):
        """One fit epoch on cuda with no host read per step: each step's loss and correct
        count are accumulated on the device (losses.loss_and_stats) and the updates are
        guarded there (_GuardedUpdates); the host reads the accumulator (one small copy) at
        the end of the epoch, after each step when a callback wants batch logs
        (on_train_batch_end), and at most about once a second for the progress bar (which
        so shows the loss less often than on the host backends). A non-finite loss is seen
        at the next read: the steps after it ran with their updates skipped on the device
        (their losses are not counted), so the weights, the optimizer state and the
        optimizer's step count are those of stopping at it, as on the host backends.
        Returns (loss_sum, correct_sum, seen, nonfinite) as fit's host loop has them."""
        L = kit.losses
        stats = L.step_stats_buffer()
        L.reset_stats(stats)
        host = getattr(self, "_stats_host", None)
        if host is None:
            host = self._stats_host = np.zeros(L.STATS, np.float32)
        params = self._params()
        K = _GuardedUpdates(kit.optimizers, stats, params, snaps)
        iterations0 = self.optimizer.iterations
        nonfinite = None
        refresh = time.perf_counter() + 1.0
        for b, (plan, n) in enumerate(self._batches(data, batch_size, shuffle, True,
                                                    steps_per_epoch)):
            cb.on_train_batch_begin(b)
            self._device_step(plan, stats, K)
            self._update_streams(plan, self._streams)   # one small copy, only if compiled
            show = bar is not None and time.perf_counter() >= refresh
            if batch_logs_wanted or show:
                L.read_stats(stats, host)
                if host[L.BAD]:
                    nonfinite = self._device_nonfinite(host, iterations0, params, snaps,
                                                       guard, epoch)
                    break
                batch_logs = self._device_logs(host)
                if batch_logs_wanted:
                    cb.on_train_batch_end(b, batch_logs)
                if show:
                    bar.set_postfix(batch_logs, refresh=False)
                    refresh = time.perf_counter() + 1.0
            if bar is not None:
                bar.update(1)
            if self.stop_training:
                break
        if nonfinite is None:
            L.read_stats(stats, host)
            if host[L.BAD]:
                nonfinite = self._device_nonfinite(host, iterations0, params, snaps, guard,
                                                   epoch)
        return (float(host[L.LOSS_SUM]) - float(host[L.LOSS_COMP]), int(host[L.CORRECT]),
                int(host[L.SEEN]), nonfinite)

    def _device_step(self, plan, stats, updates):
        """One cuda training step on the batch in plan's buffers, queued on the device with
        nothing read back: forward, the loss and its statistics into `stats`, backward,
        and the guarded optimizer updates (`updates`, a _GuardedUpdates); the moving
        statistics' update is guarded by `stats` too."""
        plan.forward()
        plan.device_loss(stats)
        plan.backward(stats)
        regs = self._regularized()
        if regs:        # the penalty's gradient, and the penalty into the step's loss
            self._regularize(plan.K, plan.params, plan.grads, regs, read=False)
            plan.kit.losses.add_penalty(stats, self._penalty_acc(plan.K), plan.n)
        self.optimizer.apply(updates, plan.params, plan.grads)

    def _device_logs(self, host):
        from ..kernels.cuda import losses as L
        seen = float(host[L.SEEN])
        logs = {"loss": (float(host[L.LOSS_SUM]) - float(host[L.LOSS_COMP])) / seen}
        logs.update(self._metric_logs(int(host[L.CORRECT]) / seen, self._streams))
        return logs

    def _device_nonfinite(self, host, iterations0, params, snaps, guard, epoch):
        """A non-finite loss found in the device accumulator: undo the host's count of the
        updates the device skipped, restore the snapshot (the weights the last finite step
        started from, saved by its guarded update) and tell the guard."""
        from ..kernels.cuda import losses as L
        b, loss = int(host[L.BAD_STEP]), float(host[L.BAD_LOSS])
        self.optimizer.iterations = iterations0 + b
        restored = snaps is not None
        if restored:
            for p, s in zip(params, snaps):
                _copy(s, p)
        guard.on_nonfinite_loss(epoch, b, loss, restored)
        return (b, loss)

    def _require_compiled_or_build(self, x):
        if not self.compiled:
            raise RuntimeError(f"{self.name}: call compile(optimizer, loss) before fit")
        if not self.built and isinstance(x, np.ndarray) and self.layers:
            self.build((None,) + x.shape[1:])
        self.require_built("fit")
        self._check_head()

    @staticmethod
    def _bar(steps, verbose):
        if verbose != 1:
            return None
        from tqdm import tqdm
        return tqdm(total=steps, unit="batch", file=sys.stdout, leave=False,
                    dynamic_ncols=True)

    # ------------------------------------------------------------------ evaluate / predict
    def _evaluate_data(self, data, batch_size):
        """The loss (with the regularizers' penalty, as Keras 3's evaluate) and metrics."""
        loss_sum, correct_sum, seen = 0.0, 0, 0
        regs = self._regularized()
        penalty = self._regularize(self._backend(), self._params(), None, regs) if regs \
            else 0.0
        streams = metrics_mod.make(self.metrics)   # its own: fit's validation keeps fit's
        dist = getattr(self, "_distributed", None)  # fastconv.distributed: this rank's rows
        for plan, n in (self._batches(data, batch_size, False, False) if dist is None
                        else dist.eval_batches(data, batch_size)):
            plan.forward()
            loss_sum += (plan.compute_loss() + penalty) * n
            if self.metrics:
                correct_sum += plan.correct()
            self._update_streams(plan, streams)
            seen += n
        if dist is not None:                        # the ranks' sums added up
            loss_sum, correct_sum, seen = dist.reduce_eval(loss_sum, correct_sum, seen,
                                                           streams)
        if seen == 0:
            raise ValueError(f"{self.name}: the evaluation data yielded no samples")
        logs = {"loss": loss_sum / seen}
        logs.update(self._metric_logs(correct_sum / seen, streams))
        return logs

    @locked
    def evaluate(self, x=None, y=None, batch_size=32, verbose=0, sample_weight=None,
                 return_dict=False, distributed=False):
        """Loss (and accuracy) in inference mode (no dropout): loss, [loss, acc] or a dict.
        sample_weight (N,) weights each sample's loss as fit's (sum(w * l) / N per batch);
        an iterable x may yield (x, y, sample_weight) batches. distributed: True
        (MPI.COMM_WORLD) or an mpi4py communicator: each rank evaluates its slice of
        every batch and the sums are added up (fastconv.distributed; every rank returns
        the whole data's values, rank 0's weights broadcast first)."""
        self._require_compiled_or_build(x)
        batch_size = self._check_positive("batch_size", batch_size)
        if distributed is not False and distributed is not None:
            from ..distributed import evaluate as distributed_evaluate
            logs = distributed_evaluate(self, distributed, lambda: self._evaluate_data(
                self._adapt(x, y, "evaluate", sample_weight), batch_size))
        else:
            logs = self._evaluate_data(self._adapt(x, y, "evaluate", sample_weight),
                                       batch_size)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        return self._result(logs, return_dict)

    def test_on_batch(self, x, y, sample_weight=None, return_dict=False):
        return self.evaluate(x, y, batch_size=max(1, len(x)), sample_weight=sample_weight,
                             return_dict=return_dict)

    @locked
    def predict(self, x, batch_size=32, verbose=0):
        """Model outputs (after the final sigmoid/softmax) as a float32 NumPy array."""
        if not self.built and isinstance(x, np.ndarray) and self.layers:
            self.build((None,) + x.shape[1:])
        self.require_built("predict")
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

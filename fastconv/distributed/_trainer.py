"""The data-parallel fit of fastconv.distributed: one object per fit call that
model.fit(..., distributed=...) installs on the model (models.training calls its step
and, through model._batches, its batches) and removes at the end.

The exchange buffer (float32, one per fit):
    [ gradients of every trainable weight, each at a 16-float aligned offset | padding
      | BatchNormalization moving statistics | the streamed metrics' counts of the step
      (metrics.state_of: precision's tp/fp/fn, auc's 4 x 200 histograms, ...) | loss sum,
      correct count, non-finite flag, batch size, step number, rows ]  (batch size and
      step: every rank must be at the same step; after its last batch of an epoch a rank
      exchanges the buffer zeroed, batch size 0. rows: the slices' rows, fewer than the
      batch when a data set decoding by rank left out unreadable images; the gradient
      and loss are then rescaled to the mean over the rows trained)
A step's metric counts are at most its batch's element count, exact in float32 below
2**24 (16.7 M: a global batch of 16,000 images of 1,000 classes); they are added into
the model's int64 streams after the exchange, so every rank logs the global batch's
values, step by step, as one process does. Regularizer penalties need no exchange: the
weights are the same on every rank, so each adds the same penalty and its gradient to
the averaged gradients after the exchange.
The model's gradient buffers (model._grads) are views of its first part, so backward
writes them in place; one Allreduce(IN_PLACE, SUM) per step exchanges the whole buffer.
"""
from __future__ import annotations

import math

import numpy as np

from ..layers.normalization import BatchNormalization
from ..models import batches as plain
from ..models import metrics as metrics_mod
from ..models import weighting
from .._memory import copy as _copy
from .._memory import upload
from ..models._plan import device_kit
from ._comm import DistributedError, code_of, describe, report_and_abort, shard

ALIGN = 16          # floats: each gradient starts on a 64-byte boundary
STATS = 6           # loss sum, correct count, non-finite flag, batch size, step number,
                    # rows trained (the batch size less unreadable images)


def _mpi():
    from mpi4py import MPI
    return MPI


class DistributedFit:
    """The state of one data-parallel fit on communicator `comm`."""

    def __init__(self, model, comm):
        self.model, self.comm = model, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.buffer = None
        self.steps = 0             # training steps of this fit so far

    # ------------------------------------------------------------------ fit
    def run(self, fit_fn, args):
        m = self.model
        try:
            m._require_compiled_or_build(args["x"])
            self._check_setup(args)
            self._broadcast_start()
            self._flat_buffer()
            args = dict(args, verbose=args["verbose"] if self.rank == 0 else 0)
            m._distributed, m._batches = self, self.batches   # shadows Trainer._batches
            try:
                return fit_fn(**args)
            finally:
                m._distributed = None
                del m._batches
        except BaseException as exc:        # Ctrl-C too: no rank may be left waiting
            if self.size > 1:
                report_and_abort(self.comm, describe(exc), code_of(exc))
            raise

    def evaluate(self, evaluate_fn):
        """evaluate_fn() with this rank's slices (eval_batches) summed across ranks
        (reduce_eval); a rank that fails stops every rank."""
        m = self.model
        if getattr(m, "_distributed", None) is not None:   # inside a distributed fit
            return evaluate_fn()
        try:
            self._check_device("evaluate")
            self._broadcast_weights()
            m._distributed = self
            try:
                return evaluate_fn()
            finally:
                m._distributed = None
        except BaseException as exc:
            if self.size > 1:
                report_and_abort(self.comm, describe(exc), code_of(exc))
            raise

    def _check_device(self, what):
        """On cuda: this rank on its local rank's GPU (_device.check_gpu); self.device
        True when the model's buffers live on a device."""
        m = self.model
        self.device = device_kit(m._backend()) is not None
        if self.device:
            from ._device import check_gpu
            check_gpu(self.comm, f"{m.name}.{what}(distributed=...)")

    def _check_setup(self, args):
        m = self.model
        self._check_device("fit")
        x, b = args["x"], args["batch_size"]
        if isinstance(x, np.ndarray) and isinstance(b, int) and 0 < b < self.size:
            raise DistributedError(
                f"{m.name}.fit(distributed=...): batch_size={b} is the global batch and "
                f"must hold at least one sample per rank ({self.size} ranks)")

    def _broadcast_start(self):
        """Rank 0's seed, generator states and weights on every rank."""
        m, comm = self.model, self.comm
        seed, states = comm.bcast((m.seed, m.rng_states()) if self.rank == 0 else None,
                                  root=0)
        m.set_rng_states(seed, states)
        self._broadcast_weights()

    def _broadcast_weights(self):
        """Rank 0's weights on every rank (device weights through a host copy)."""
        K = self.model._backend()
        for layer in self.model.layers:
            for w in layer._weights:
                if isinstance(w, np.ndarray):
                    self.comm.Bcast(w, root=0)
                else:
                    host = np.ascontiguousarray(K.to_host(w))
                    self.comm.Bcast(host, root=0)
                    upload(host, w)

    def _flat_buffer(self):
        """The exchange buffer, the model's gradient buffers made views of it."""
        m = self.model
        layers = [l for l in m.layers if l._weights]
        shapes = [(l, [tuple(w.shape) for w in l._weights[:l.trainable_weight_count()]])
                  for l in layers]
        self.moving = [w for l in layers if isinstance(l, BatchNormalization)
                       for w in l._weights[l.trainable_weight_count():]]
        offset, places = 0, []
        for _, ss in shapes:
            for s in ss:
                places.append((offset, s))
                offset += -(-int(np.prod(s)) // ALIGN) * ALIGN
        self.grads_end = offset
        self.moving_end = offset + sum(int(w.size) for w in self.moving)
        self.local_streams = metrics_mod.make(m.metrics)     # this rank's slice, per step
        self.metrics_end = self.moving_end + metrics_mod.state_of(self.local_streams).size
        size = self.metrics_end + STATS
        K = m._backend()
        # on a device the buffer is one device array; its tail (counts and statistics)
        # is written and read on the host, in `tail`, and travels with it (_device)
        buf = K.zeros((size,)) if self.device else np.zeros(size, np.float32)
        views = iter(buf[o:o + int(np.prod(s))].reshape(s) for o, s in places)
        m._grads = {l.name: tuple(next(views) for _ in ss) for l, ss in shapes}
        m._invalidate()                  # the plans are rebuilt on these buffers
        self.buffer = buf
        self.grads = buf[:self.grads_end]
        self.tail = np.zeros(size - self.moving_end, np.float32) if self.device \
            else buf[self.moving_end:]
        self.counts = self.tail[:self.metrics_end - self.moving_end]
        self.stats = self.tail[self.metrics_end - self.moving_end:]
        self.zeros = np.zeros(size, np.float32) if self.device else None
        self.exchanger = None
        if self.device and self.size > 1:
            from ._device import exchange
            self.exchanger = exchange(self.comm, size)

    # the device-agnostic pieces of a step
    def _scale(self, a, factor, out=None):
        """out = a * factor (float32), on the host or the device."""
        out = a if out is None else out
        if isinstance(a, np.ndarray):
            np.multiply(a, np.float32(factor), out=out)
        else:
            self.model._backend().rescale_forward(a, float(factor), 0.0, out=out)

    def _exchange(self):
        """The one collective of a step: the whole buffer summed over the ranks."""
        if not self.device:
            MPI = _mpi()
            self.comm.Allreduce(MPI.IN_PLACE, self.buffer, op=MPI.SUM)
        elif self.exchanger is not None:
            self.exchanger.allreduce(self.buffer, self.tail)

    # ------------------------------------------------------------------ per step
    def step(self, plan, loss, snaps):
        """models.training._train_step under MPI, after plan.forward() and the local
        loss: the local gradients and statistics, one Allreduce, the update. Returns
        (loss, correct) of the global batch; correct None when its loss is not finite
        (then no rank updates)."""
        m = self.model
        total, _ = plan.shard
        n = plan.n
        finite = math.isfinite(loss)
        correct = plan.correct() if (m.metrics and finite) else 0
        if self.local_streams:
            for st in self.local_streams.values():
                st.reset()
            if finite:
                m._update_streams(plan, self.local_streams)
            self.counts[:] = metrics_mod.state_of(self.local_streams)
        if snaps is not None:
            for p, s in zip(plan.params, snaps):
                _copy(p, s)
        plan.backward()
        # each rank's mean gradient weighted by its share: the sum is the global mean
        if n != total:
            self._scale(self.grads, n / total)
        at = self.grads_end
        for w in self.moving:
            _copy(w.reshape(w.size), self.buffer[at:at + w.size])
            at += w.size
        self.stats[0] = loss * n if finite else 0.0
        self.stats[1] = correct
        self.stats[2] = 0.0 if finite else 1.0
        self.stats[3], self.stats[4], self.stats[5] = total, self.steps, n
        self._exchange()
        if self.moving:
            at = self.grads_end
            for w in self.moving:
                self._scale(self.buffer[at:at + w.size], 1.0 / self.size, w.reshape(w.size))
                at += w.size
        self._check_in_step(total)
        self.steps += 1
        rows = int(self.stats[5])
        if rows != total:           # unreadable images left out: the mean over the rest
            self._scale(self.grads, total / rows)
        if self.stats[2] or not math.isfinite(float(self.stats[0])):
            return (loss if not finite else float("nan")), None
        streams = getattr(m, "_streams", None)
        if streams:
            metrics_mod.add_states(streams, self.counts.astype(np.float64))
        loss = float(self.stats[0]) / rows
        regs = m._regularized()
        if regs:        # the same weights on every rank: the same penalty and gradient
            loss += m._regularize(plan.K, plan.params, plan.grads, regs)
        m.optimizer.apply(plan.K, plan.params, plan.grads)
        return loss, int(self.stats[1])

    def _check_in_step(self, total):
        """Every rank at the same step of the same global batch: the sums of the batch
        sizes and step numbers are size x this rank's (ranks reading different data, say
        an image one rank cannot read, would otherwise exchange unrelated gradients)."""
        if self.stats[3] != np.float32(total * self.size) or \
                self.stats[4] != np.float32(self.steps * self.size):
            raise DistributedError(
                f"{self.model.name}.fit(distributed=...): the ranks are out of step: rank "
                f"{self.rank} is at step {self.steps} with a global batch of {total}, "
                f"another rank at another step, batch or the end of its epoch; every "
                f"rank must read the same data")

    def _check_epoch_end(self):
        """After a rank's last training batch of an epoch: one more exchange of the
        buffer, zeroed, batch size 0 marking the end, so that a rank with a batch left
        (it sees the marker in its step) and the ranks that ended (they see its batch)
        all stop with a message rather than wait for each other."""
        if self.device:
            upload(self.zeros, self.buffer)
            self.tail.fill(0)
        else:
            self.buffer.fill(0)
        self.stats[4] = self.steps
        self._exchange()
        if self.stats[3] != 0 or self.stats[4] != np.float32(self.steps * self.size):
            raise DistributedError(
                f"{self.model.name}.fit(distributed=...): the ranks are out of step: rank "
                f"{self.rank} ended the epoch after step {self.steps}, another rank had a "
                f"batch left; every rank must read the same data")

    # ------------------------------------------------------------------ batches
    def batches(self, data, batch_size, shuffle, training, steps=None, labels=True):
        """model._batches during the fit: training batches sharded (yielding (plan,
        global batch size), so fit's logs count the global batch), the rest (a predict
        in a callback) whole on every rank; validation and evaluate go through
        eval_batches."""
        m = self.model
        if not training:
            yield from plain.batches(m, data, batch_size, shuffle, training, steps, labels)
            return
        if data[0] == "arrays":
            x, y = data[1], data[2]
            w = data[3] if len(data) > 3 else None      # sample weights (N,) or None
            total = x.shape[0]
            perm = m._shuffle_rng.permutation(total) if shuffle else None
            for start in range(0, total, batch_size):
                stop = min(start + batch_size, total)
                plan = self._plan(stop - start, "the last batch")
                lo, hi = start + plan.shard[1], start + plan.shard[1] + plan.n
                if perm is None:
                    plan.load_slice(x, y, lo, hi, w)
                else:
                    plan.load_take(x, y, perm[lo:hi], w)
                yield plan, stop - start
            self._check_epoch_end()
            return
        for k, (xb, yb, wb, total, first) in enumerate(self._slices(data, steps)):
            if total < self.size:
                self._plan(total, f"batch {k}")          # the error naming the batch
            if xb.shape[0] == 0:
                raise DistributedError(
                    f"{m.name}.fit(distributed=...): every image of rank {self.rank}'s "
                    f"slice of batch {k} (from row {first} of {total}) is unreadable, "
                    f"leaving it nothing to train on; remove the unreadable files")
            plan = self.model._plan("train", xb.shape[0], (total, first))
            plan.load_slice(xb, yb, 0, xb.shape[0], wb)
            yield plan, total
        self._check_epoch_end()
        self._share_unreadable(data)

    def _share_unreadable(self, data):
        """A data set that decodes by rank (shard_batches): every rank learns the files
        the others found unreadable, so all leave out the same files next epoch."""
        if data[0] != "arrays" and hasattr(data[1], "add_unreadable"):
            for found in self.comm.allgather(data[1].unreadable()):
                data[1].add_unreadable(found)

    def _plan(self, total, which):
        if total < self.size:
            raise DistributedError(
                f"{self.model.name}.fit(distributed=...): {which} holds {total} samples, "
                f"fewer than the {self.size} ranks (each needs one); choose a batch size "
                f"or a sample count that leaves every batch at least {self.size}")
        first, stop = shard(total, self.rank, self.size)
        return self.model._plan("train", stop - first, (total, first))

    def _slices(self, data, steps):
        """This rank's slice of each of the iterable's global batches as (x, labels,
        sample weights or None, the global batch's size, the slice's first row), checked
        and weighted as models.batches does (class weights: data[2]). A data set with
        shard_batches (ImageDataset) decodes only the slice; of any other iterable every
        rank takes the whole batch and keeps its rows."""
        m = self.model
        iterable = data[1]
        class_vec = data[2] if len(data) > 2 else None
        sharded = hasattr(iterable, "shard_batches")
        if sharded:
            iterable = iterable.shard_batches(self.rank, self.size)
        if steps is not None:
            import itertools
            iterable = itertools.islice(iterable, steps)
        for k, batch in enumerate(iterable):
            if sharded:
                xb, yb, total, first = batch
                wb = None
            else:
                if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                    raise ValueError(f"{m.name}: batch {k} has no labels; training needs "
                                     f"(x, y) batches")
                xb, yb = batch[0], batch[1]
                wb = batch[2] if len(batch) >= 3 else None
            xb = m._check_x(xb, f"x of batch {k}")
            n = xb.shape[0]
            if not sharded:
                if n == 0:
                    continue
                total = n
                first, stop = shard(n, self.rank, self.size)
                yp = m._prep_labels(yb, n, f"y of batch {k}")
                if wb is not None:
                    wb = weighting.check_sample_weight(m, wb, n, f"sample_weight of batch {k}")
                    wb = wb[first:stop]
                xb, yp, n = xb[first:stop], yp[first:stop], stop - first
            else:
                yp = m._prep_labels(yb, n, f"y of batch {k}")
            if class_vec is not None:
                if wb is not None:
                    raise ValueError(f"{m.name}: batch {k} has sample weights and fit has "
                                     f"class_weight; pass one of them, not both (as Keras)")
                wb = weighting.sample_weights_from_classes(m, class_vec, yp)
            yield xb, yp, wb, total, first

    # ------------------------------------------------------------------ evaluation
    def eval_batches(self, data, batch_size):
        """(plan, n) of this rank's slice of every global evaluation batch (rows
        shard(B, rank, size) of each; a rank whose slice of a small last batch is empty
        skips it): models.training._evaluate_data sums them, then reduce_eval."""
        m = self.model
        if data[0] == "arrays":
            x, y = data[1], data[2]
            w = data[3] if len(data) > 3 else None
            total = x.shape[0]
            for start in range(0, total, batch_size):
                stop = min(start + batch_size, total)
                lo, hi = shard(stop - start, self.rank, self.size)
                if hi > lo:
                    plan = m._plan("infer", hi - lo)
                    plan.load_slice(x, y, start + lo, start + hi, w)
                    yield plan, hi - lo
            return
        for xb, yb, wb, _, _ in self._slices(data, None):
            if xb.shape[0]:
                plan = m._plan("infer", xb.shape[0])
                plan.load_slice(xb, yb, 0, xb.shape[0], wb)
                yield plan, xb.shape[0]
        self._share_unreadable(data)

    def reduce_eval(self, loss_sum, correct_sum, seen, streams):
        """The ranks' sums of an evaluation added up (one float64 Allreduce: the loss
        sum, the correct and sample counts, the streamed metrics' counts, in compile
        order): (loss_sum, correct_sum, seen), `streams` holding the whole data's
        counts."""
        vec = np.concatenate([[loss_sum, correct_sum, seen],
                              metrics_mod.state_of(streams)]).astype(np.float64)
        MPI = _mpi()
        self.comm.Allreduce(MPI.IN_PLACE, vec, op=MPI.SUM)
        for st in streams.values():
            st.reset()
        metrics_mod.add_states(streams, vec[3:])
        return float(vec[0]), int(round(vec[1])), int(round(vec[2]))

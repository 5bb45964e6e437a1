"""One rank of the distributed tests (tests/test_distributed.py), run by mpirun or alone:
    python tests/distributed_worker.py OUT [--fail-rank R] [--batch B] [--device D]
trains tests.model_helpers.tiny_convnet (a RandomFlip in front, dropout 0.25) for two
epochs on 30 discs-and-squares images with model.fit(..., distributed=True) (alone: not
distributed) and writes OUT/rank<r>.npz (weights, loss and accuracy history).
--fail-rank R: rank R raises in its third training step (from a callback).
--short-rank R: rank R is given 16 training samples instead of 24 (ranks out of step).
--tiny (with --device cuda under the simulator): build_tiny's model on 8x8 images;
--samples N: train on N samples (default 24); --dropout R (default 0.25).
--full: what distributed fit refused before: metrics precision/recall/auc/binary_accuracy
streamed, an L2 kernel regularizer, training on an iterable of (x, y, sample_weight)
batches, validation of 7 samples in batches of 4 (the last one split 1 + 2), then
model.evaluate(..., distributed=True) of an iterable and of weighted arrays; OUT/rank<r>.npz
then holds every history key and the evaluations too."""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastconv import callbacks as C                                    # noqa: E402
from fastconv import layers as L                                       # noqa: E402
from fastconv.models.sequential import Sequential                      # noqa: E402
from tests.model_helpers import discs_and_squares, tiny_convnet        # noqa: E402


FULL_METRICS = ["accuracy", "precision", "recall", "auc", "binary_accuracy"]


def build(device, full=False, dropout=0.25):
    net = tiny_convnet(device=device, seed=7, filters=(4, 6), units=8, dropout=dropout)
    if full:
        from fastconv.layers import regularizers
        net.layers[6].kernel_regularizer = regularizers.l2(1e-3)      # the Dense(8)
    model = Sequential([L.RandomFlip("horizontal", input_shape=(16, 16, 1))]
                       + net.layers, device=device, seed=7)
    model.compile(optimizer="adam", loss="binary_crossentropy",
                  metrics=FULL_METRICS if full else ["accuracy"])
    return model


class Weighted:
    """A re-iterable data set of (x, y, sample_weight) batches of 6 (the last 4)."""

    def __init__(self, x, y, w, batch):
        self.x, self.y, self.w, self.batch = x, y, w, batch

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __iter__(self):
        for s in range(0, len(self.x), self.batch):
            yield self.x[s:s + self.batch], self.y[s:s + self.batch], \
                self.w[s:s + self.batch]


def full(a, rank):
    x, y = discs_and_squares(37, np.random.default_rng(5))
    w = np.linspace(0.5, 1.5, 37).astype(np.float32)
    model = build(a.device, full=True)
    dist = not a.alone
    h = model.fit(Weighted(x[:22], y[:22], w[:22], 6), epochs=2, verbose=0,
                  validation_data=(x[22:29], y[22:29]), batch_size=4, distributed=dist)
    ev = model.evaluate(Weighted(x[22:], y[22:], w[22:], 5), return_dict=True,
                        distributed=dist)
    ew = model.evaluate(x[22:], y[22:], sample_weight=w[22:], batch_size=4,
                        return_dict=True, distributed=dist)
    out = {f"h_{k}": np.array(v) for k, v in h.history.items()}
    out.update({f"ev_{k}": np.array(v) for k, v in ev.items()})
    out.update({f"ew_{k}": np.array(v) for k, v in ew.items()})
    np.savez(os.path.join(a.out, f"rank{rank}.npz"), *model.get_weights(), **out)


def build_tiny(device):
    """For the CUDA simulator (seconds per step even so): RandomFlip, Flatten,
    Dropout(0.3), Dense(4) + relu, Dense(1) + sigmoid on 8x8 images."""
    model = Sequential([L.RandomFlip("horizontal", input_shape=(8, 8, 1)), L.Flatten(),
                        L.Dropout(0.3), L.Dense(4, activation="relu"), L.Dense(1),
                        L.Activation("sigmoid")], device=device, seed=7)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


class FailAt(C.Callback):
    def __init__(self, rank, at):
        super().__init__()
        self.rank, self.at = rank, at

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.at and self.rank is not None:
            raise RuntimeError(f"deliberate failure in batch {batch}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--alone", action="store_true")
    p.add_argument("--fail-rank", type=int)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--short-rank", type=int, help="this rank trains on 8 fewer samples")
    p.add_argument("--full", action="store_true")
    p.add_argument("--dropout", type=float, default=0.25)
    p.add_argument("--tiny", action="store_true", help="build_tiny's model, 8x8 images")
    p.add_argument("--samples", type=int, default=24, help="training samples")
    a = p.parse_args()
    rank = 0
    if not a.alone:
        from mpi4py import MPI
        rank = MPI.COMM_WORLD.Get_rank()
    if a.device == "cuda" and not a.alone:
        from fastconv import distributed
        distributed.select_gpu()                   # before the model is built
    if a.full:
        return full(a, rank)
    x, y = discs_and_squares(30, np.random.default_rng(3))
    if a.tiny:
        x = np.ascontiguousarray(x[:, ::2, ::2])               # 8x8
    model = build_tiny(a.device) if a.tiny else build(a.device, dropout=a.dropout)
    cbs = [FailAt(rank if rank == a.fail_rank else None, 2)]
    n = a.samples - 8 if rank == a.short_rank else a.samples
    h = model.fit(x[:n], y[:n], batch_size=a.batch, epochs=2, verbose=0, callbacks=cbs,
                  validation_data=(x[24:], y[24:]), distributed=not a.alone)
    np.savez(os.path.join(a.out, f"rank{rank}.npz"),
             *model.get_weights(), loss=np.array(h.history["loss"]),
             accuracy=np.array(h.history["accuracy"]),
             val_loss=np.array(h.history["val_loss"]))


if __name__ == "__main__":
    main()

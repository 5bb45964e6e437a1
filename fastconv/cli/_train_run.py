"""The state of one `fastconv train` run: where its files go, the checkpoint and the
training state inside it, reading that state back for --resume (and checking that the
checkpoint is the model it describes), the per-epoch callback that saves the best
model, the checkpoint and history.json, and the history plot.

The files and what a kill or Ctrl-C leaves of them: see the train module's docstring.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time

from ._common import CLIError, deferred_sigint, write_json_atomic
from ..callbacks import Callback, ModelCheckpoint
from .._files import atomic_replace

SETTINGS = ("epochs", "batch_size", "lr", "optimizer", "image_size", "augment",
            "validation_split", "seed")
# May differ on --resume: they change neither the data nor the arithmetic of a step
# (epochs only extends the run).
RESUMABLE = ("epochs",)
STATE_FORMAT = "fastconv-train-state"


# --------------------------------------------------------------------------- state

def paths_for(out):
    out = os.fspath(out)
    folder = os.path.dirname(os.path.abspath(out))
    return {"out": out, "ckpt": out + ".ckpt", "state": out + ".ckpt.json",
            "history": os.path.join(folder, "history.json"),
            "plot": os.path.join(folder, "history.png")}


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state(paths):
    """The training state of --resume. The checkpoint holds it in its own metadata (one
    file, one rename: always in step with the weights); a checkpoint written before
    that has it in the separate state file, checked against the checkpoint's SHA-256."""
    from ..models.file_format import ModelFileError, read_file
    if not os.path.isfile(paths["ckpt"]):
        raise CLIError(f"--resume: no checkpoint to continue ({paths['ckpt']} is written "
                       f"by a train run with --out {paths['out']}); train without --resume "
                       f"first")
    try:
        _, meta, (zf, _) = read_file(paths["ckpt"])
        zf.close()                          # only the metadata is wanted here
    except ModelFileError as exc:
        raise CLIError(f"--resume: {exc}") from None
    if "train_state" in meta:
        state, source = meta["train_state"], paths["ckpt"]
    else:
        state, source = _read_state_file(paths), paths["state"]
    if not _is_state(state):
        raise CLIError(f"--resume: {source} holds no valid fastconv training state")
    return state


def _is_state(state):
    try:
        return state.get("format") == STATE_FORMAT and all(k in state["settings"]
                                                           for k in SETTINGS)
    except (AttributeError, KeyError, TypeError):
        return False


def _read_state_file(paths):
    """The state file beside a checkpoint of an older fastconv (no state inside)."""
    if not os.path.isfile(paths["state"]):
        raise CLIError(f"--resume: {paths['ckpt']} holds no training state and "
                       f"{paths['state']} is missing; train without --resume")
    try:
        with open(paths["state"]) as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        state = None
    if not _is_state(state):
        raise CLIError(f"--resume: {paths['state']} is not a fastconv training state file")
    if state.get("checkpoint_sha256") != _sha256(paths["ckpt"]):
        raise CLIError(f"--resume: {paths['ckpt']} does not match {paths['state']} (written "
                       f"by different runs, or modified); cannot continue exactly")
    return state


def check_architecture(model, settings, path, num_classes=2):
    """A checkpoint must hold the run's model (--model, --width, --color-mode) at the run's
    image size: checked before anything starts, so that a foreign one never begins
    "resuming"."""
    from ..data.reading import CHANNELS
    from ._train_models import MODEL_SETTINGS, build, describe
    settings = {**MODEL_SETTINGS, **settings}     # a state from before --model
    s = settings["image_size"]
    c = CHANNELS[settings["color_mode"]]
    want = build(settings, num_classes)

    def layout(m):
        return ([(type(layer).__name__, tuple(layer.output_shape)) for layer in m.layers],
                [tuple(w.shape) for w in m.get_weights()])
    if layout(model) != layout(want):
        raise CLIError(f"--resume: {path} holds a model of another architecture (input "
                       f"{'x'.join(map(str, model.input_shape[1:]))}, "
                       f"{model.count_params():,} params, {len(model.layers)} layers), not "
                       f"{describe(settings)} at {s}x{s}x{c} ({want.count_params():,} "
                       f"params) that its training state describes")


class _Counted:
    """An ImageDataset that counts the images it has yielded this epoch (for images/s)."""

    def __init__(self, ds):
        self.ds, self.seen = ds, 0

    def __len__(self):
        return len(self.ds)

    def __iter__(self):
        self.seen = 0
        for x, y in self.ds:
            self.seen += x.shape[0]
            yield x, y

    # under MPI (fastconv.distributed): the rank decodes its slice; the count is the
    # global batches' images (unreadable ones included)
    def shard_batches(self, rank, size):
        self.seen = 0
        for x, y, files, first in self.ds.shard_batches(rank, size):
            self.seen += files
            yield x, y, files, first

    def unreadable(self):
        return self.ds.unreadable()

    def add_unreadable(self, found):
        self.ds.add_unreadable(found)


# --------------------------------------------------------------------------- callbacks

class BestModel(ModelCheckpoint):
    """--out: the best model by val_loss (ModelCheckpoint, save_best_only), and what the
    run adds to it: saved only after an epoch whose logs are all finite (as the
    checkpoint is), with Ctrl-C held back while it is written, and the best epoch kept
    in the run (the checkpoint and history.json record it; --resume continues from it).
    Called by EpochEnd inside its own held block, so that the best model, the checkpoint
    and history.json of an epoch are written together."""

    def __init__(self, run):
        # braces in --out are characters of the file name, not Keras format fields
        literal = run.paths["out"].replace("{", "{{").replace("}", "}}")
        super().__init__(literal, monitor="val_loss", save_best_only=True, mode="min")
        self.run = run
        self.best = run.best_val_loss if math.isfinite(run.best_val_loss) else None
        self.epoch, self.saved = None, False
        self.set_model(run.model)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch, self.saved = epoch, False
        if all(math.isfinite(v) for v in logs.values()):
            super().on_epoch_end(epoch, logs)

    def _save(self, filepath):
        with deferred_sigint():
            self.run.best_val_loss, self.run.best_epoch = self.best, self.epoch + 1
            if self.run.writer:         # under MPI rank 0 alone writes
                super()._save(filepath)
        self.saved = True


class EpochEnd(Callback):
    """Progress bar, one-line epoch summary, best model, checkpoint and history."""

    def __init__(self, run):
        super().__init__()
        self.run = run
        self.bar = None
        self.best = BestModel(run)

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()
        self.t_train = None
        r = self.run
        if r.show_bar:
            from tqdm import tqdm
            self.bar = tqdm(total=r.train.ds.num_images, unit="img", leave=False,
                            desc=f"epoch {epoch + 1}/{r.settings['epochs']}",
                            file=sys.stderr, dynamic_ncols=True,
                            disable=None)       # None: no bar when stderr is not a terminal

    def on_train_batch_end(self, batch, logs=None):
        self.t_train = time.perf_counter() - self.t0
        if self.bar is not None:
            self.bar.update(self.run.train.seen - self.bar.n)
            post = {"loss": f"{logs['loss']:.4f}"}
            if "accuracy" in logs:
                post["acc"] = f"{logs['accuracy']:.4f}"
            self.bar.set_postfix(post, refresh=False)

    def close_bar(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_epoch_end(self, epoch, logs=None):
        self.close_bar()
        r = self.run
        took = time.perf_counter() - self.t0
        rate = r.train.seen / self.t_train if self.t_train else float("nan")
        # the rate as Keras 3 logs it: optimizer.learning_rate at the epoch's end (before
        # a ReduceLROnPlateau reduction, which adds it itself)
        logs.setdefault("learning_rate", float(r.model.optimizer.learning_rate))
        for k, v in logs.items():      # JSON has no NaN: a non-finite value is null
            r.history.setdefault(k, []).append(float(v) if math.isfinite(v) else None)
        r.history.setdefault("epoch", []).append(epoch + 1)
        r.history.setdefault("images_per_second", []).append(
            rate if math.isfinite(rate) else None)
        # Seconds the training loop sat waiting for the loader threads this epoch: the
        # pipeline is meant to stay ahead of the step, and this shows whether it did.
        wait = r.train.ds.last_epoch_wait_seconds
        r.history.setdefault("data_wait_seconds", []).append(wait)
        finite = all(math.isfinite(v) for v in logs.values())
        with deferred_sigint():
            self.best.on_epoch_end(epoch, logs)      # --out, when val_loss improved
            if finite:
                r.save_checkpoint(epoch + 1)
            r.write_history()
        saved = f"  saved best to {r.paths['out']}" if self.best.saved else ""
        skipped = len(r.train.ds.skipped) + len(r.val.skipped)
        print(f"epoch {epoch + 1}/{r.settings['epochs']}  "
              + "  ".join(f"{k} {v:.4g}" if k == "learning_rate" else f"{k} {v:.4f}"
                          for k, v in logs.items())
              + f"  {rate:.0f} img/s  {took:.1f}s  data wait {wait:.2f}s  skipped {skipped}"
              + saved, flush=True)


class TrainRun:
    """One `fastconv train`: settings, data, model and the files it writes."""

    def __init__(self, settings, root, paths, model, train, val, state=None, show_bar=True,
                 plateau=None, writer=True, early=None):
        self.settings, self.root, self.paths = settings, root, paths
        self.writer = writer        # False on the ranks > 0 of an MPI run: nothing written
        self.plateau = plateau      # the run's ReduceLROnPlateau (its counters are saved)
        self.early = early          # the run's EarlyStopping (its counters too)
        self.model, self.train, self.val = model, _Counted(train), val
        self.show_bar = show_bar
        self.history = dict(state["history"]) if state else {}
        best = state["best_val_loss"] if state else None     # None (or inf): no best yet
        self.best_val_loss = math.inf if best is None else best
        self.best_epoch = state["best_epoch"] if state else None
        self.epochs_done = state["epochs_done"] if state else 0
        self.plotted = False

    def save_checkpoint(self, epochs_done):
        """The checkpoint: model, optimizer, generators and the training state in one
        file (one atomic rename, so a kill leaves the old one or the new one, whole).
        The state file beside it is a readable copy; --resume reads the checkpoint."""
        from ..models.saving import save_model
        if not self.writer:
            self.epochs_done = epochs_done
            return
        state = {"format": STATE_FORMAT, "version": 1, "epochs_done": epochs_done,
                 "settings": self.settings, "data": self.root,
                 "class_names": list(self.model.class_names),
                 "best_val_loss": self.best_val_loss if self.best_epoch else None,
                 "best_epoch": self.best_epoch, "history": self.history}
        if self.plateau is not None:
            state["reduce_lr"] = self.plateau.get_state()
        if self.early is not None and hasattr(self.early, "wait"):
            state["early_stopping"] = self.early.get_state()
        save_model(self.model, self.paths["ckpt"], train_state=state)
        write_json_atomic(self.paths["state"],
                          dict(state, checkpoint_sha256=_sha256(self.paths["ckpt"])))
        self.epochs_done = epochs_done

    def write_history(self):
        if not self.writer:
            return
        write_json_atomic(self.paths["history"], {
            "settings": self.settings, "data": self.root,
            "class_names": list(self.model.class_names), "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss if self.best_epoch else None,
            "history": self.history})
        self.plotted = plot_history(self.history, self.paths["plot"])


def plot_history(history, path):
    """history.png with loss and accuracy curves; nothing without matplotlib
    (pip install 'fastconv[plot]')."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = history.get("epoch", [])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for k, style in ((key, "-o"), (f"val_{key}", "-s")):
            if k in history:
                values = [math.nan if v is None else v for v in history[k]]
                ax.plot(epochs, values, style, label=k)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    try:        # atomic, and only ever over a regular file, like every other output
        atomic_replace(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)
    return True

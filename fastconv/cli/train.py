"""`fastconv train [DATA]`: train the seed small convnet (or --model keras-io-xception) on
a folder of images.

Files it writes, next to --out (default model.fcm):
  model.fcm             the best model so far by validation loss (atomic save)
  model.fcm.ckpt        the model, optimizer and generator state after the last
                        completed epoch with the training state (settings, epochs
                        done, best val_loss, history) in its metadata: one file, one
                        rename, so a kill never leaves them out of step; --resume
                        continues from it exactly where the run stopped
  model.fcm.ckpt.json   a readable copy of that training state
  history.json          loss, accuracy, val_loss, val_accuracy per epoch
  history.png           the same as curves, when matplotlib is installed

Ctrl-C stops after the current step: the checkpoint of the last completed epoch
is on disk (it is written at the end of every epoch, with Ctrl-C held back while
it is written), so `--resume` repeats the interrupted epoch and the result is the
same as an uninterrupted run.

This module holds the command: its settings, the data folders and the parser; the
run's files, checkpoint, --resume and per-epoch saving are in _train_run, the models it
trains (--model, their recipes) in _train_models.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from . import _train_mpi
from ._common import DEVICES, RESCALE, CLIError, check_outputs, plain_failures, require_device
from ._train_lr import (LR_SETTINGS, RunEarlyStopping, RunPlateau, check_lr_settings,
                        optimizer_config, scheduled)
from ._train_models import (AUGMENTATION, MODEL_NAMES, MODEL_SETTINGS, RECIPES, build,
                            check_model_settings, describe)
from ._train_run import (RESUMABLE, SETTINGS, EpochEnd, TrainRun, check_architecture,
                         paths_for, read_state)
from .._text import printable
from ..data.demo import DEMO, demo_flags, demo_root
from ..data.reading import CHANNELS, COLOR_MODES

# Settings with a default that a checkpoint from before them lacks (as the learning-rate
# and model settings): class weighting, label smoothing and early stopping.
FIT_SETTINGS = {"class_weight": "none", "label_smoothing": 0.0, "early_stopping": None}


# --------------------------------------------------------------------------- data

def split_folders(root):
    """(train folder, validation folder or None) of DATA."""
    if not os.path.exists(root):
        raise CLIError(f"data folder not found: {root}")
    if not os.path.isdir(root):
        raise CLIError(f"{root} is not a folder (DATA holds train/ and validation/ "
                       f"sub-folders, or one folder per class)")
    train = os.path.join(root, "train")
    val = next((os.path.join(root, v) for v in ("validation", "val")
                if os.path.isdir(os.path.join(root, v))), None)
    if os.path.isdir(train):
        return train, val
    if val is not None:
        raise CLIError(f"{root} has {os.path.basename(val)}/ but no train/ sub-folder")
    return root, None


def open_datasets(root, s, workers=None, cache=False):
    """(train, validation) ImageDatasets; validation is never augmented or shuffled."""
    from .. import data
    from ..data.dataset import class_folders
    train_dir, val_dir = split_folders(root)
    size = (s["image_size"], s["image_size"])
    try:    # two classes keep the seed's sigmoid head; more train a softmax head
        classes = class_folders(train_dir)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if len(classes) < 2:
        raise CLIError(f"{train_dir} needs at least 2 class folders, found {len(classes)}"
                       + (f": {printable(', '.join(classes))}" if classes else ""))
    binary = len(classes) == 2
    # label smoothing of more than two classes: Keras's CategoricalCrossentropy, which
    # takes one-hot labels (its SparseCategoricalCrossentropy has no label_smoothing)
    common = dict(image_size=size, batch_size=s["batch_size"],
                  label_mode="binary" if binary else
                  "categorical" if s.get("label_smoothing") else "int",
                  rescale=RESCALE, workers=workers, cache=cache, color_mode=s["color_mode"])
    aug = data.Augmentation(**AUGMENTATION[s.get("model", "small-convnet")]) \
        if s["augment"] else None
    try:
        if val_dir is not None:
            train = data.image_dataset_from_directory(train_dir, shuffle=True, seed=s["seed"],
                                                      augmentation=aug, **common)
            val = data.image_dataset_from_directory(val_dir, shuffle=False,
                                                    class_names=train.class_names, **common)
        else:
            split = dict(validation_split=s["validation_split"], seed=s["seed"])
            train = data.image_dataset_from_directory(train_dir, subset="training",
                                                      shuffle=True, augmentation=aug,
                                                      **split, **common)
            val = data.image_dataset_from_directory(train_dir, subset="validation",
                                                    shuffle=False, **split, **common)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if val.num_images == 0:
        raise CLIError(f"{val_dir or train_dir}: no validation images")
    require_readable(train, train_dir, "training")
    require_readable(val, val_dir or train_dir, "validation")
    return train, val


def require_readable(ds, folder, which):
    """Decode `ds`'s images in order until one reads (one decode for a sound set), so
    that a set of which no image can be read is an error now, naming the folder and the
    count, and not after an epoch of training (or as an empty epoch)."""
    from ..data import ImageReadError
    from ..data.reading import decode_image
    for path in ds.file_paths:
        try:
            decode_image(path, ds.image_size, ds.color_mode)
            return
        except ImageReadError:
            continue
    raise CLIError(f"{folder}: none of the {ds.num_images} {which} images can be read "
                   f"(damaged, or not images); nothing to train on")


# --------------------------------------------------------------------------- settings

def _model_of(args, stored):
    """--model, else (on --resume) the stored one, else small-convnet."""
    if args.model is not None:
        return args.model
    return (stored or {}).get("model", MODEL_SETTINGS["model"])


def resolve_settings(args, demo, stored=None):
    """The run's settings: explicit flags, else (on --resume) the stored ones, else the
    demo or seed-recipe defaults. On --resume an explicit flag that changes a stored
    setting (other than --epochs) is an error: the run could not be continued exactly."""
    model = _model_of(args, stored)
    if model not in MODEL_NAMES:
        raise CLIError(f"--model must be one of {', '.join(MODEL_NAMES)}, received {model!r}")
    extra = {**LR_SETTINGS, **MODEL_SETTINGS, **FIT_SETTINGS}
    defaults = {**extra, **(DEMO if demo else RECIPES[model])}
    defaults["model"] = model
    if stored is not None:      # a checkpoint from before the learning-rate/model/fit settings
        stored = {**extra, **stored}
    s = {}
    for key in SETTINGS + tuple(extra):
        given = getattr(args, key)
        if stored is not None:
            if given is not None and given != stored[key] and (
                    key not in RESUMABLE or (key == "epochs" and scheduled(stored))):
                why = (" (its learning-rate schedule was laid out over that many epochs)"
                       if key == "epochs" else "")
                raise CLIError(f"--resume: the checkpoint was trained with --"
                               f"{key.replace('_', '-')} {stored[key]}, not {given}{why}; "
                               f"drop the flag to continue it, or train afresh without "
                               f"--resume")
            s[key] = given if given is not None else stored[key]
        else:
            s[key] = given if given is not None else defaults[key]
    for key in ("epochs", "batch_size", "image_size"):
        if s[key] < 1:
            raise CLIError(f"--{key.replace('_', '-')} must be at least 1, received {s[key]}")
    check_model_settings(s, args.width is not None)
    if not (s["lr"] > 0 and math.isfinite(s["lr"])):
        raise CLIError(f"--lr must be a positive number, received {s['lr']}")
    if not 0 < s["validation_split"] < 1:
        raise CLIError(f"--validation-split must lie between 0 and 1, received "
                       f"{s['validation_split']}")
    if s["seed"] < 0:
        raise CLIError(f"--seed must be >= 0, received {s['seed']}")
    check_lr_settings(s)
    if s["early_stopping"] is not None and s["early_stopping"] < 0:
        raise CLIError(f"--early-stopping must be a patience >= 0 (epochs), received "
                       f"{s['early_stopping']}")
    if not 0 <= s["label_smoothing"] <= 1:
        raise CLIError(f"--label-smoothing must lie between 0 and 1, received "
                       f"{s['label_smoothing']}")
    return s


def _loss(k, label_smoothing):
    """The run's loss: binary for two classes, else sparse categorical; with label
    smoothing Keras's BinaryCrossentropy / CategoricalCrossentropy (one-hot labels)."""
    from .. import losses
    if not label_smoothing:
        return "binary_crossentropy" if k == 2 else "sparse_categorical_crossentropy"
    cls = losses.BinaryCrossentropy if k == 2 else losses.CategoricalCrossentropy
    return cls(label_smoothing=label_smoothing)


# --------------------------------------------------------------------------- command

def cmd_train(args):
    return _train_mpi.run(args, _train_plain)


def _train_plain(args, comm):
    with plain_failures("while training", memory_hint="; a smaller --batch-size or "
                                                      "--image-size needs less"):
        return _train(args, comm)


def _train(args, comm=None):
    from .. import optimizers
    from ..models.file_format import ModelFileError
    from ..models.saving import load_model
    require_device(args.device)
    if comm is not None and args.device == "cuda":      # one GPU per rank, by local rank
        from ..distributed import select_gpu
        select_gpu(comm)
    paths = paths_for(args.out)
    # Every file the run writes is checked before anything is: only regular files are
    # replaced, and those of an earlier run only when asked (--overwrite, --resume).
    outputs = [paths[k] for k in ("out", "ckpt", "state", "history", "plot")]
    writer = comm is None or comm.Get_rank() == 0      # under MPI rank 0 alone writes
    if writer:
        check_outputs(outputs, "--out", overwrite=True)
    state = read_state(paths) if args.resume else None
    if state is not None:
        demo = state["data"] is None
        root_arg = args.data if args.data is not None else state["data"]
        if args.data is not None and state["data"] is not None and \
                os.path.abspath(args.data) != os.path.abspath(state["data"]):
            raise CLIError(f"--resume: the checkpoint was trained on {state['data']}, not "
                           f"{args.data}")
    else:
        demo, root_arg = args.data is None, args.data
    settings = resolve_settings(args, demo, state["settings"] if state else None)
    stopped = (state or {}).get("early_stopping", {}).get("stopped_epoch", 0)
    if stopped:
        raise CLIError(f"--resume: the run stopped early after epoch {stopped + 1} "
                       f"(--early-stopping {settings['early_stopping']}: val_loss had not "
                       f"improved for that many epochs); train afresh to train longer")
    if state is not None and state["epochs_done"] >= settings["epochs"]:
        raise CLIError(f"--resume: {paths['ckpt']} has already trained "
                       f"{state['epochs_done']} epochs; pass --epochs N with N > "
                       f"{state['epochs_done']} to train longer")
    if not demo:
        split_folders(os.fspath(root_arg))  # a wrong DATA is named first, whatever --out holds
    if state is None and writer:
        check_outputs(outputs, "--out", overwrite=args.overwrite,
                      hint="pass --overwrite to replace them, --resume to continue that run, "
                           "or choose another --out folder")
    if state is not None:           # checked before the data is read or anything written
        try:    # the weights' own checks (checksums, sizes, finiteness) run here
            model = load_model(paths["ckpt"], device=args.device)
        except ModelFileError as exc:
            raise CLIError(f"--resume: {exc}") from None
        check_architecture(model, settings, paths["ckpt"], len(state["class_names"]))
    root = demo_root() if demo else os.fspath(root_arg)
    train, val = open_datasets(root, settings, workers=args.workers,
                               cache=args.cache or demo)
    if state is not None:
        if list(train.class_names) != list(state["class_names"]):
            raise CLIError(f"--resume: the checkpoint's classes are "
                           f"{printable(', '.join(state['class_names']))}, the data's are "
                           f"{printable(', '.join(train.class_names))}")
    else:
        k = train.num_classes
        model = build(settings, k, device=args.device)
        steps = len(train)               # batches per epoch, the schedule's unit
        model.compile(optimizer=optimizers.get(optimizer_config(settings, steps)),
                      loss=_loss(k, settings["label_smoothing"]), metrics=["accuracy"])
    model.class_names = list(train.class_names)
    plateau = RunPlateau(state.get("reduce_lr") if state else None) \
        if settings["reduce_lr_on_plateau"] else None
    early = None
    if settings["early_stopping"] is not None:
        def best_weights():     # the --out file: the best epoch by val_loss so far
            if not os.path.isfile(paths["out"]):
                return None
            return load_model(paths["out"], device="reference", compile=False).get_weights()
        early = RunEarlyStopping(settings["early_stopping"],
                                 state.get("early_stopping") if state else None,
                                 best_weights)
    run = TrainRun(settings, None if demo else root, paths, model, train, val, state,
                   show_bar=not args.no_progress and writer, plateau=plateau,
                   writer=writer, early=early)
    # The data pipeline shuffles and augments epoch k from (seed, k): start where the
    # checkpoint stopped so a resumed run sees the same batches as an uninterrupted one.
    train.epoch = run.epochs_done
    if state is None:
        run.save_checkpoint(0)        # so that Ctrl-C in the first epoch can be resumed

    names = [printable(n) for n in train.class_names]      # folder names, printed as text
    what = "the demo data set" if demo else printable(root)
    print(f"{'resuming' if state else 'training'} {describe(settings)} "
          f"({model.count_params():,} params, {settings['image_size']}x"
          f"{settings['image_size']}x{CHANNELS[settings['color_mode']]}, "
          f"{settings['color_mode']}) on {what}")
    print(f"  {train.num_images} training images, {val.num_images} validation images; "
          "classes " + ", ".join(f"{i} = {n}" for i, n in enumerate(names))
          + ("" if len(names) == 2 else " (softmax head)"))
    print(f"  device {args.device}, epochs {settings['epochs']}"
          + (f" (continuing after epoch {run.epochs_done})" if state else "")
          + f", batch {settings['batch_size']}, {settings['optimizer']} lr "
            f"{settings['lr']:g}, augmentation {'on' if settings['augment'] else 'off'}, "
            f"seed {settings['seed']}", flush=True)
    extras = ([f"lr schedule {settings['lr_schedule']}"] if settings["lr_schedule"] !=
              "constant" else []) + \
        ([f"warmup {settings['warmup_epochs']} epochs"] if settings["warmup_epochs"] else []) \
        + (["reduce lr on plateau"] if plateau else []) + \
        ([f"weight decay {settings['weight_decay']:g}"] if settings["weight_decay"] else []) \
        + ([f"label smoothing {settings['label_smoothing']:g}"]
           if settings["label_smoothing"] else []) \
        + ([f"early stopping patience {settings['early_stopping']}"] if early else [])
    if extras:
        print("  " + ", ".join(extras), flush=True)

    class_weight = None
    if settings["class_weight"] == "balanced":
        # from the folder scan (the same on --resume): n_images / (n_classes * count_c)
        from ..models.weighting import balanced_class_weight
        vec = balanced_class_weight(train.labels, train.num_classes)
        class_weight = {c: float(w) for c, w in enumerate(vec)}
        print("  class weights (balanced): " + ", ".join(
            f"{names[c]} {w:.4g}" for c, w in class_weight.items()), flush=True)

    epoch_end = EpochEnd(run)
    try:
        model.fit(run.train, epochs=settings["epochs"], initial_epoch=run.epochs_done,
                   validation_data=val, verbose=0, distributed=comm if comm else False,
                   class_weight=class_weight,
                   callbacks=([plateau] if plateau else []) + ([early] if early else [])
                   + [epoch_end])
    except KeyboardInterrupt:
        epoch_end.close_bar()
        print(f"\ninterrupted: {paths['ckpt']} holds the model after epoch {run.epochs_done}"
              f"; continue with: fastconv train"
              + ("" if demo else f" {root}") + f" --out {paths['out']} --resume",
              file=sys.stderr, flush=True)
        return 130
    if early is not None and early.stopped_epoch:
        print(f"early stopping: val_loss had not improved for {settings['early_stopping']} "
              f"epochs; stopped after epoch {early.stopped_epoch + 1} of "
              f"{settings['epochs']}")
    hist = run.history
    last_loss = hist["loss"][-1] if hist.get("loss") else None
    if last_loss is None:
        kept = (f"the best model (epoch {run.best_epoch}) is in {paths['out']}"
                if run.best_epoch else "no model was saved")
        print(f"training stopped: the loss became non-finite in epoch {hist['epoch'][-1]}; "
              f"{kept}", file=sys.stderr)
        return 1
    # The file the run leaves is the best epoch by val_loss: its accuracy is the result
    # (the last epoch's is shown too; it can dip below the best).
    best_acc = hist["val_accuracy"][hist["epoch"].index(run.best_epoch)]
    print(f"final validation accuracy: {best_acc:.4f} ({paths['out']}: epoch "
          f"{run.best_epoch}, the best by val_loss {run.best_val_loss:.4f}; the last "
          f"epoch, {hist['epoch'][-1]}, had {hist['val_accuracy'][-1]:.4f})")
    extra = " and history.png" if run.plotted else \
        " (pip install 'fastconv[plot]' for history.png)"
    print(f"history: {paths['history']}{extra}")
    return 0


def add_parser(sub, common):
    p = sub.add_parser(
        "train", parents=[common], help="train the seed small convnet (or the keras.io "
                                        "Xception) on a folder of images (the built-in demo "
                                        "data set when none is given)",
        description="Train the seed small convnet (--model keras-io-xception: the keras.io "
                    "'Image classification from scratch' network). DATA holds train/ and "
                    "validation/ (or "
                    "val/) sub-folders of class folders, or class folders that are split by "
                    "--validation-split. Without DATA, trains on the built-in demo data set "
                    f"with the demo defaults ({demo_flags()}); with DATA the defaults are "
                    "the seed recipe (50 epochs, batch 16, RMSprop lr 1e-4, 150x150, "
                    "augmentation shear 0.2, zoom 0.2, horizontal flip).")
    p.add_argument("data", nargs="?", metavar="DATA", help="the image folder (default: demo)")
    p.add_argument("--model", choices=MODEL_NAMES,
                   help="small-convnet (the seed model, default) or keras-io-xception (the "
                        "keras.io example; with DATA its recipe: 180x180, 25 epochs, batch "
                        "128, Adam 3e-4, flip + rotation 36 degrees)")
    p.add_argument("--width", type=float, metavar="W",
                   help="keras-io-xception only: scale every filter count by W (round, at "
                        "least 1; default 1.0, the example's 2,731,065 params)")
    p.add_argument("--epochs", type=int, help="epochs to train (seed recipe 50)")
    p.add_argument("--batch-size", type=int, help="images per step (seed recipe 16)")
    p.add_argument("--lr", type=float, help="learning rate (seed recipe 1e-4)")
    p.add_argument("--optimizer", choices=["rmsprop", "adam", "sgd"],
                   help="optimizer, Keras defaults apart from the learning rate (rmsprop)")
    p.add_argument("--lr-schedule", choices=["constant", "cosine", "exponential"],
                   help="learning rate over the run: constant (default), cosine (to 0 at "
                        "the end), exponential (to lr/10 at the end)")
    p.add_argument("--warmup-epochs", type=int, metavar="N",
                   help="ramp the learning rate linearly from 0 over the first N epochs "
                        "(constant or cosine; default 0)")
    p.add_argument("--reduce-lr-on-plateau", action=argparse.BooleanOptionalAction,
                   default=None, help="divide the learning rate by 10 after 10 epochs "
                                      "without a val_loss improvement (Keras defaults)")
    p.add_argument("--weight-decay", type=float, metavar="W",
                   help="decoupled weight decay of the optimizer, p -= lr*W*p per step "
                        "(Keras 3 weight_decay; default 0)")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                   help="stop when val_loss has not improved for PATIENCE epochs (Keras's "
                        "EarlyStopping, restore_best_weights=True; default: off)")
    p.add_argument("--label-smoothing", type=float, metavar="LS",
                   help="Keras's label_smoothing of the cross-entropy in [0, 1]: targets "
                        "y*(1-LS) + LS/2 (two classes) or y*(1-LS) + LS/K (default 0)")
    p.add_argument("--class-weight", choices=["none", "balanced"],
                   help="weigh each image's training loss by its class: balanced = "
                        "images / (classes * images of the class), for unbalanced folders "
                        "(default none)")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="where to train (default cpu)")
    p.add_argument("--image-size", type=int, metavar="PX",
                   help="images are resized to PX x PX (seed recipe 150)")
    p.add_argument("--color-mode", choices=COLOR_MODES,
                   help="read images as rgb (3 channels, the default) or grayscale (1 "
                        "channel: the model then takes PX x PX x 1)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   help="the seed's augmentation: shear 0.2, zoom 0.2, horizontal flip "
                        "(default on)")
    p.add_argument("--validation-split", type=float, metavar="F",
                   help="fraction held out for validation when DATA has no validation/ "
                        "folder (default 0.2)")
    p.add_argument("--out", default="model.fcm",
                   help="the best model by validation loss (default model.fcm); the "
                        "checkpoint and history.json are written beside it")
    p.add_argument("--seed", type=int, help="seed of initialisation, shuffling, "
                                            "augmentation and dropout (default 0)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run whose checkpoint is beside --out")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the model, checkpoint and history.json of an earlier run "
                        "beside --out (without it, train refuses to replace them)")
    p.add_argument("--workers", type=int, help="image decoding threads (default: the data "
                                               "pipeline's choice)")
    p.add_argument("--cache", action="store_true",
                   help="keep decoded images in memory after the first epoch (small data "
                        "sets; always on for the demo)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training over MPI (needs fastconv[mpi]); implied "
                        "when started by mpirun/mpiexec/srun with more than one rank "
                        "(see docs/distributed.md)")
    p.set_defaults(func=cmd_train)

"""`fastconv predict MODEL IMAGE_OR_FOLDER...`: class and probability per image.

Preprocessing is the seed's: RGB (or grayscale, for a model of 1-channel input or with
--color-mode grayscale), resized to the model's input size with
fastconv.data.load_image (nearest neighbour, as Keras's load_img), scaled by
1/255. Unreadable images (undecodable, not a regular file, more pixels than the
data pipeline's cap) and folders that cannot be listed are reported one line each
on stderr and the others are still predicted; the exit code is then 1. File and
class names are printed escaped (_text.printable) in text output.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from ._common import (DEVICES, RESCALE, CLIError, open_model, parse_class_names,
                      require_device)
from .._text import printable
from ..data.reading import COLOR_MODES

BATCH = 32
TOP = 3         # classes shown per image for a softmax head (more than two classes)


def list_images(items, on_error=None):
    """Files named on the command line as given; folders walked recursively for files
    with an image extension, in sorted order. A name that does not exist is an error.
    A folder that cannot be listed goes to on_error(path, reason) (when given)."""
    from ..data.reading import IMAGE_EXTENSIONS, is_image_file
    files = []
    for item in items:
        item = os.fspath(item)
        if os.path.isdir(item):
            found, unlisted = [], []

            def onerror(exc, unlisted=unlisted):
                where = exc.filename if exc.filename is not None else item
                reason = f"cannot list this folder ({type(exc).__name__}: " \
                         f"{exc.strerror or exc})"
                unlisted.append(where)
                if on_error is not None:
                    on_error(where, reason)

            for root, dirs, names in os.walk(item, onerror=onerror):
                dirs.sort()
                found.extend(os.path.join(root, n) for n in names if is_image_file(n))
            if not found and not unlisted:
                raise CLIError(f"{printable(item)}: no image files in this folder (looked "
                               f"for {', '.join(IMAGE_EXTENSIONS)})")
            files.extend(sorted(found))
        elif os.path.exists(item):
            files.append(item)
        else:
            raise CLIError(f"image or folder not found: {printable(item)}")
    return files


def interpret(probs, class_names):
    """(class index, probability of that class, probabilities of every class) per row of
    the model's output: one sigmoid unit is P(class 1), K softmax units are K classes."""
    probs = np.asarray(probs, np.float64)
    if probs.shape[1] == 1:
        p1 = probs[:, 0]
        full = np.stack([1.0 - p1, p1], axis=1)
    else:
        full = probs
    idx = np.argmax(full, axis=1)
    return [(int(k), float(row[k]), {n: float(v) for n, v in zip(class_names, row)})
            for k, row in zip(idx, full)]


def predict_files(opened, files, on_error, color_mode="rgb"):
    """Yield (path, class index, probability, per-class dict) for each readable file;
    unreadable ones go to on_error(path, reason)."""
    from .. import data
    model, names = opened.model, opened.class_names
    batch, paths = [], []

    def flush():
        probs = model.predict(np.stack(batch), batch_size=len(batch))
        for path, result in zip(paths, interpret(probs, names)):
            yield (path,) + result
        batch.clear()
        paths.clear()

    for path in files:
        try:
            x = data.load_image(path, image_size=opened.image_size, color_mode=color_mode)
        except data.ImageReadError as exc:
            on_error(path, exc.reason)
            continue
        batch.append(x * np.float32(RESCALE))
        paths.append(path)
        if len(batch) == BATCH:
            yield from flush()
    if batch:
        yield from flush()


def cmd_predict(args):
    require_device(args.device)
    opened = open_model(args.model, args.device, parse_class_names(args.class_names))
    names = opened.class_names
    color_mode = opened.color_mode(args.color_mode)
    errors = []

    def on_error(path, reason):
        errors.append({"path": path, "error": reason})
        print(f"fastconv predict: cannot read {printable(path)}: {printable(reason)}",
              file=sys.stderr)

    files = list_images(args.images, on_error)
    unlisted = len(errors)
    if opened.note and not args.json:
        print(f"note: {printable(opened.note)}")
    results = []
    top = min(TOP, len(names)) if len(names) > 2 else 0     # softmax heads: the top classes
    width = max([len(printable(f)) for f in files] + [len("image")])
    if not args.json:
        print(f"{'image':<{width}}  {'class':<12} probability"
              + (f"  top {top}" if top else ""))
    for path, k, p, per_class in predict_files(opened, files, on_error, color_mode):
        best = sorted(per_class.items(), key=lambda kv: -kv[1])[:top]
        results.append({"path": path, "class": names[k], "class_index": k,
                        "probability": p, "probabilities": per_class,
                        **({"top": [{"class": n, "probability": v} for n, v in best]}
                           if top else {})})
        if not args.json:
            shown = "  " + ", ".join(f"{printable(n)} {v:.4f}" for n, v in best) if top else ""
            print(f"{printable(path):<{width}}  {printable(names[k]):<12} {p:.4f}{shown}",
                  flush=True)
    if args.json:
        report = {"model": opened.path, "model_type": "keras_h5" if opened.keras else "fastconv",
                  "class_names": names, "predictions": results, "errors": errors,
                  "preprocessing": f"{'RGB' if color_mode == 'rgb' else 'grayscale'}, "
                                   f"resized to {opened.image_size[0]}x"
                                   f"{opened.image_size[1]} (nearest), scaled by 1/255"}
        if opened.keras:
            report["assumed_architecture"] = "seed small convnet"
            report["note"] = opened.note
        json.dump(report, sys.stdout, indent=2)
        print()
    if errors:
        folders = f" ({unlisted} folder{'s' * (unlisted != 1)} could not be listed)" \
            if unlisted else ""
        print(f"fastconv predict: {len(errors) - unlisted} of {len(files)} images could not "
              f"be read{folders}", file=sys.stderr)
        return 1
    return 0


def add_parser(sub, common):
    p = sub.add_parser(
        "predict", parents=[common],
        help="class name and probability of each image",
        description="Predict the class of each image. MODEL is a fastconv model file, or a "
                    "Keras .h5 weights file of the seed small convnet (that architecture is "
                    "then assumed). Images are read as the seed did: RGB, resized to the "
                    "model's input size (nearest neighbour), scaled by 1/255.")
    p.add_argument("model", metavar="MODEL", help="model.fcm, or a Keras .h5 weights file")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files, or folders searched recursively for images")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="where to run (default cpu)")
    p.add_argument("--class-names", metavar="A,B",
                   help="class names in label order, comma-separated (default: stored in "
                        "the model file; cats,dogs for a Keras .h5 file)")
    p.add_argument("--color-mode", choices=COLOR_MODES,
                   help="read images as rgb or grayscale (default: what the model's input "
                        "channels say, 3 or 1)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=cmd_predict)

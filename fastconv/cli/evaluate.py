"""`fastconv evaluate MODEL DATA`: loss, accuracy, confusion matrix, per-class accuracy.

DATA is a folder of class folders, or a training folder with a validation/
(or val/) sub-folder, which is then the one evaluated. Classes are matched by
name to the model's class names, so the label order is the model's.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from ._common import (DEVICES, RESCALE, CLIError, open_model, parse_class_names,
                      require_device)
from .predict import interpret
from ..data.reading import COLOR_MODES
from .._text import printable


def evaluation_folder(path):
    """The folder whose class sub-folders are evaluated."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CLIError(f"data folder not found: {printable(path)}")
    if not os.path.isdir(path):
        raise CLIError(f"{printable(path)} is not a folder (DATA holds one sub-folder per "
                       f"class)")
    for name in ("validation", "val"):
        if os.path.isdir(os.path.join(path, name)):
            return os.path.join(path, name)
    return path


def confusion(labels, predicted, k):
    """k x k counts: rows the true class, columns the predicted class."""
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (labels, predicted), 1)
    return m


def precision_recall(matrix, c):
    """(precision, recall) of class c from the confusion matrix (rows true, columns
    predicted): TP / predicted-as-c and TP / truly-c (Keras's Precision and Recall of
    that class one-vs-rest); None where the denominator is 0 (Keras reports 0 there)."""
    tp = float(matrix[c, c])
    predicted, actual = float(matrix[:, c].sum()), float(matrix[c].sum())
    return (tp / predicted if predicted else None), (tp / actual if actual else None)


def evaluate(opened, folder, batch_size, workers=None, color_mode=None):
    """Loss and accuracy as model.evaluate computes them (the loss kernel on the
    logits), and the confusion matrix from the same batches' predictions."""
    from .. import data
    model = opened.model
    if not model.compiled:
        units = model.output_shape[-1]
        model.compile(loss="binary_crossentropy" if units == 1
                      else "sparse_categorical_crossentropy", metrics=["accuracy"])
    binary = model.output_shape[-1] == 1
    color_mode = opened.color_mode(color_mode)
    try:
        ds = data.image_dataset_from_directory(
            folder, image_size=opened.image_size, batch_size=batch_size, shuffle=False,
            label_mode="binary" if binary else
            "categorical" if model._loss.labels == "onehot" else "int",   # the model's loss
            class_names=opened.class_names,
            rescale=RESCALE, workers=workers, color_mode=color_mode)
    except ValueError as exc:
        raise CLIError(f"{exc} (the model's classes are "
                       f"{printable(', '.join(opened.class_names))})") from None
    loss_sum, seen = 0.0, 0
    labels, predicted = [], []
    for x, y in ds:
        n = x.shape[0]
        logs = model.evaluate(x, y, batch_size=n, return_dict=True)
        loss_sum += logs["loss"] * n
        seen += n
        y = np.asarray(y)
        labels.append((np.argmax(y, axis=1) if y.ndim == 2 and y.shape[1] > 1
                       else y.reshape(n)).astype(np.int64))
        predicted.extend(k for k, _, _ in interpret(model.predict(x, batch_size=n),
                                                    opened.class_names))
    if seen == 0:
        raise CLIError(f"{printable(folder)}: no readable images to evaluate")
    labels = np.concatenate(labels)
    predicted = np.asarray(predicted, np.int64)
    k = len(opened.class_names)
    matrix = confusion(labels, predicted, k)
    per_class = {}
    for c, name in enumerate(opened.class_names):
        total = int(matrix[c].sum())
        precision, recall = precision_recall(matrix, c)
        per_class[name] = {"correct": int(matrix[c, c]), "images": total,
                           "predicted": int(matrix[:, c].sum()),
                           "accuracy": matrix[c, c] / total if total else None,
                           "precision": precision, "recall": recall}
    return {"model": opened.path, "data": folder, "images": int(seen),
            "skipped": [{"path": p, "error": r} for p, r in ds.skipped],
            "loss": loss_sum / seen, "accuracy": float(np.mean(labels == predicted)),
            "class_names": list(opened.class_names), "confusion_matrix": matrix.tolist(),
            "per_class": per_class}


def print_report(r):
    """The report as text; file and class names escaped (printable), so a name from a
    model file cannot move the cursor, colour the terminal or forge a line."""
    names = [printable(n) for n in r["class_names"]]
    skipped = f", {len(r['skipped'])} unreadable skipped" if r["skipped"] else ""
    print(f"{printable(r['data'])}: {r['images']} images{skipped}")
    print(f"loss {r['loss']:.4f}  accuracy {r['accuracy']:.4f}")
    w = max(8, max(len(n) for n in names) + 2)
    print("confusion matrix (rows: true class, columns: predicted class)")
    print(" " * w + "".join(f"{n:>{w}}" for n in names))
    for name, row in zip(names, r["confusion_matrix"]):
        print(f"{name:<{w}}" + "".join(f"{v:>{w}}" for v in row))
    print("per-class accuracy")
    for name, key in zip(names, r["class_names"]):
        c = r["per_class"][key]
        acc = "-" if c["accuracy"] is None else f"{c['accuracy']:.4f}"
        print(f"  {name:<{w}} {acc}  ({c['correct']}/{c['images']})")
    print("per-class precision and recall (one class against the rest)")
    for name, key in zip(names, r["class_names"]):
        c = r["per_class"][key]
        shown = ["-" if v is None else f"{v:.4f}" for v in (c["precision"], c["recall"])]
        print(f"  {name:<{w}} precision {shown[0]} ({c['correct']}/{c['predicted']})  "
              f"recall {shown[1]} ({c['correct']}/{c['images']})")


def cmd_evaluate(args):
    require_device(args.device)
    opened = open_model(args.model, args.device, parse_class_names(args.class_names))
    folder = evaluation_folder(args.data)
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, received {args.batch_size}")
    if opened.note:
        print(f"note: {printable(opened.note)}", file=sys.stderr if args.json else sys.stdout)
    report = evaluate(opened, folder, args.batch_size, args.workers, args.color_mode)
    for s in report["skipped"]:
        print(f"fastconv evaluate: skipped {printable(s['path'])}: {printable(s['error'])}",
              file=sys.stderr)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_report(report)
    return 0


def add_parser(sub, common):
    p = sub.add_parser("evaluate", parents=[common],
                       help="loss, accuracy, confusion matrix and per-class accuracy, "
                            "precision and recall of a model on a folder of class folders")
    p.add_argument("model", metavar="MODEL", help="model.fcm, or a Keras .h5 weights file")
    p.add_argument("data", metavar="DATA",
                   help="a folder of class folders, or one with a validation/ (or val/) "
                        "sub-folder, which is then evaluated")
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None,
                   help="image decoding threads (default: the data pipeline's choice)")
    p.add_argument("--class-names", metavar="A,B",
                   help="class names in label order (default: stored in the model file; "
                        "cats,dogs for a Keras .h5 file)")
    p.add_argument("--color-mode", choices=COLOR_MODES,
                   help="read images as rgb or grayscale (default: what the model's input "
                        "channels say, 3 or 1)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=cmd_evaluate)

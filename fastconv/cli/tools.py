"""`fastconv summary`, `fastconv convert`, `fastconv export` and `fastconv demo-data`."""
from __future__ import annotations

import os

from ._common import (CLIError, KERAS_DEFAULT_CLASSES, check_outputs, open_model,
                          parse_class_names, plain_failures)


def cmd_summary(args):
    """The Keras summary table of a model file, or of the seed model when none is given."""
    if args.model is None:
        from ..models import small_convnet
        model = small_convnet(device="reference", compile=False)
        print("The seed small convnet (fastconv.small_convnet()), input 150x150x3:")
        model.summary()
        return 0
    opened = open_model(args.model, "reference", parse_class_names(args.class_names))
    if opened.note:
        print(f"note: {opened.note}")
    opened.model.summary()
    print(f"Input: {'x'.join(map(str, opened.model.input_shape[1:]))}; classes: "
          + ", ".join(f"{k} = {n}" for k, n in enumerate(opened.class_names)))
    if opened.model.compiled:
        opt = opened.model.optimizer
        print(f"Compiled: loss {opened.model.loss}, optimizer {type(opt).__name__} "
              f"(learning rate {opt.learning_rate:g})")
    return 0


def cmd_convert(args):
    """A model file (fastconv .fcm, Keras 3 .keras, or a Keras .h5 weights file of the seed
    architecture) -> a fastconv model file, or a .keras file when OUT ends in .keras."""
    src, dst = os.fspath(args.model), os.fspath(args.out)
    if not os.path.isfile(src):
        raise CLIError(f"model file not found: {src}")
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise CLIError(f"OUT {dst} is the input file {src} itself; writing it would destroy "
                       f"it: choose another OUT")
    check_outputs([dst], "OUT", overwrite=args.overwrite,
                  hint="pass --overwrite to replace it")
    names = parse_class_names(args.class_names)
    with plain_failures(f"while converting {src}"):
        opened = open_model(src, "reference", names)
        opened.model.class_names = opened.class_names
        opened.model.save(dst)
    if opened.note:
        print(f"note: {opened.note}")
    model = opened.model
    kind = ("Keras 3 .keras file" if dst.endswith(".keras") else
            "Keras 2 full-model .h5 file" if dst.endswith(".h5") else "fastconv model file")
    compiled = (f"; compiled with {model.loss}, {type(model.optimizer).__name__} (learning "
                f"rate {model.optimizer.learning_rate:g})" if model.compiled else
                "; not compiled")
    print(f"wrote {dst} ({kind}): {model.count_params():,} parameters, classes "
          + ", ".join(f"{k} = {n}" for k, n in enumerate(opened.class_names)) + compiled)
    return 0


def cmd_export(args):
    """A model file -> an ONNX file of the model in inference mode."""
    src, dst = os.fspath(args.model), os.fspath(args.out)
    if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
        raise CLIError(f"OUT {dst} is the model file {src} itself: choose another OUT")
    check_outputs([dst], "OUT", overwrite=args.overwrite,
                  hint="pass --overwrite to replace it")
    opened = open_model(src, "reference", parse_class_names(args.class_names))
    if opened.note:
        print(f"note: {opened.note}")
    model = opened.model
    model.export_onnx(dst, opset=args.opset, batch=args.batch, nchw=args.nchw)
    layout = "NCHW" if args.nchw else "NHWC"
    batch = "any batch size" if args.batch is None else f"batch {args.batch}"
    print(f"wrote {dst}: ONNX opset {args.opset}, input 'input' {layout} "
          f"{'x'.join(map(str, model.input_shape[1:]))} ({batch}), output 'output'; classes "
          + ", ".join(f"{k} = {n}" for k, n in enumerate(opened.class_names)))
    return 0


def cmd_demo_data(args):
    """Write the built-in demo data set as image files under OUT."""
    from .. import data
    from ..data.demo import DEMO, demo_flags
    out = os.fspath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"{out} exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out) and not args.force:
        raise CLIError(f"{out} is not empty; choose a new folder (or pass --force to write "
                       f"into it)")
    for key in ("train_per_class", "validation_per_class", "image_size"):
        if getattr(args, key) is None:
            setattr(args, key, DEMO[key])
        elif getattr(args, key) < 1:
            raise CLIError(f"--{key.replace('_', '-')} must be at least 1, received "
                           f"{getattr(args, key)}")
    data.write_demo_data(out, train_per_class=args.train_per_class,
                         validation_per_class=args.validation_per_class,
                         image_size=args.image_size, seed=args.seed)
    classes = ", ".join(data.DEMO_CLASSES)
    print(f"wrote the demo data set to {out}: train/ ({args.train_per_class} per class) and "
          f"validation/ ({args.validation_per_class} per class), classes {classes}, "
          f"{args.image_size}x{args.image_size} pixels, seed {args.seed}")
    print(f"train on it with the demo defaults: fastconv train {out} {demo_flags()}")
    return 0


def add_parsers(sub, common):
    p = sub.add_parser("summary", parents=[common],
                       help="print the Keras summary table of a model (the seed model when "
                            "no file is given)")
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a fastconv model file or a Keras .h5 weights file of the seed model")
    p.add_argument("--class-names", metavar="A,B", help="class names, comma-separated")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("convert", parents=[common],
                       help="convert between model files: fastconv .fcm, Keras 3 .keras, and "
                            "(to read) a Keras .h5 weights file of the seed architecture")
    p.add_argument("model", metavar="MODEL",
                   help="e.g. first_try.h5, model.keras or model.fcm")
    p.add_argument("out", metavar="OUT",
                   help="the file to write: a Keras 3 file when it ends in .keras, a Keras 2 "
                        "full-model file when it ends in .h5, else a fastconv model file "
                        "(e.g. model.fcm)")
    p.add_argument("--class-names", metavar="A,B",
                   help=f"class names stored in the file, in label order (default "
                        f"{','.join(KERAS_DEFAULT_CLASSES)}: class 1 = the second class folder "
                        f"in sorted order)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", parents=[common],
                       help="write a model as an ONNX file (inference mode) for ONNX Runtime, "
                            "OpenVINO or TensorRT")
    p.add_argument("model", metavar="MODEL",
                   help="a fastconv model file or a Keras .h5 weights file of the seed model")
    p.add_argument("out", metavar="OUT", help="the ONNX file to write, e.g. model.onnx")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 13 to 21 (default 17)")
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="a fixed batch size (default: dynamic)")
    p.add_argument("--nchw", action="store_true",
                   help="take NCHW input (default NHWC, as fastconv and Keras)")
    p.add_argument("--class-names", metavar="A,B", help="class names, comma-separated")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo-data", parents=[common],
                       help="write the built-in demo data set as image files")
    p.add_argument("out", metavar="OUT", help="folder to create (train/ and validation/ inside)")
    p.add_argument("--train-per-class", type=int, default=None, metavar="N")
    p.add_argument("--validation-per-class", type=int, default=None, metavar="N")
    p.add_argument("--image-size", type=int, default=None, metavar="PX")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="write into a folder that is not empty")
    p.set_defaults(func=cmd_demo_data)

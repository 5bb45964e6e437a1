"""The `fastconv` command line: main() and the argument parser; each command lives in
its own module of this package (train, evaluate, predict, tools, bench, check)."""
from __future__ import annotations

import argparse
import sys
import warnings

from .._version import __version__
from .._interrupt import interrupt_in
from .._text import printable


def build_parser():
    from . import bench, check, evaluate, predict, tools, train
    parser = argparse.ArgumentParser(
        prog="fastconv",
        description="Train and run small convolutional image classifiers on Numba kernels.")
    parser.add_argument("--version", action="version", version=f"fastconv {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")
    # Every subcommand accepts --debug too; SUPPRESS keeps it from resetting the flag
    # when it was given before the command name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train.add_parser(sub, common)
    evaluate.add_parser(sub, common)
    predict.add_parser(sub, common)
    tools.add_parsers(sub, common)
    bench.add_parser(sub, common)
    check.add_parsers(sub, common)
    return parser


def _expected_errors():
    """Errors whose message says what is wrong: printed as one line, no traceback."""
    from ._common import CLIError
    from ..kernels import BackendUnavailable
    from ..models.keras_weights import KerasWeightsError
    from ..models.file_format import ModelFileError
    from ..models.onnx_export import ExportError
    return (CLIError, ModelFileError, KerasWeightsError, ExportError, BackendUnavailable,
            FileNotFoundError, ImportError)


def _one_line_warning(command):
    """Warnings (an unreadable image skipped, a NaN loss) as one line each on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        text = printable(" ".join(str(message).split()))
        print(f"fastconv {command}: warning: {text}", file=file or sys.stderr, flush=True)
    return show


def main(argv=None):
    """Run the command line; returns the exit code: 0 ok, 1 error, 2 usage, 130 Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command)
            return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"fastconv {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if interrupt_in(exc) is not None:     # a Numba kernel's SystemError around Ctrl-C
            if args.debug:
                raise
            print(f"fastconv {args.command}: interrupted", file=sys.stderr)
            return 130
        if args.debug:
            raise
        # file and class names inside messages are printed escaped (no terminal control)
        text = printable(" ".join(str(exc).split())) or type(exc).__name__
        if not isinstance(exc, _expected_errors()):
            # a bug or an unforeseen failure: still one line, with how to see more
            text = f"{type(exc).__name__}: {text} (run with --debug for the traceback)"
        print(f"fastconv {args.command}: error: {text}", file=sys.stderr)
        return 1


"""The `fastconv` command line."""
from __future__ import annotations

import argparse
import sys
import time
import warnings

from . import __version__
from ._interrupt import interrupt_in
from ._text import printable


def _cmd_selftest(args):
    """Check every reference backward op and loss against finite differences."""
    from .gradcheck import CASES, run_case
    from .testing import MismatchError

    failed = 0
    print(f"{'case':<58} {'rel. error':>10}  result")
    t0 = time.perf_counter()
    for name in CASES:
        try:
            err = run_case(name, seed=args.seed, rtol=args.rtol)
            print(f"{name:<58} {err:>10.2e}  ok")
        except MismatchError as exc:
            failed += 1
            print(f"{name:<58} {'':>10}  FAIL: {exc}")
    took = time.perf_counter() - t0
    print(f"{len(CASES) - failed} passed, {failed} failed "
          f"(float64 central differences, normwise rtol {args.rtol:g}, {took:.1f} s)")
    return 1 if failed else 0


def _cmd_check(args):
    """Check the kernels of a backend against the NumPy reference on this machine."""
    import json

    from . import kernels
    from ._check import HEADER, check, format_row

    stream = sys.stderr if args.json else sys.stdout
    printed = []

    def progress(row):
        if not printed:
            print(HEADER, file=stream)
        printed.append(row)
        print(format_row(row), file=stream, flush=True)

    try:
        report = check(args.device, args.shapes, args.seed, progress=progress)
    except kernels.BackendUnavailable as exc:
        print(f"fastconv check: {exc}", file=sys.stderr)
        return 2
    for name, why in report["skipped"].items():
        print(f"skipped {name}: {why}", file=stream)
    failed = [r for r in report["results"] if not r["passed"]]
    for row in failed:
        print(f"FAIL {row['device']}.{row['op']} [{row['case']}]: {row['message']}", file=stream)
    print(f"{len(report['results']) - len(failed)} passed, {len(failed)} failed "
          f"({', '.join(report['devices']) or 'no device'}, {args.shapes} shapes, "
          f"rtol {report['results'][0]['rtol'] if report['results'] else '-'}, "
          f"{report['seconds']:.1f} s)", file=stream)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    return 0 if report["passed"] else 1


def build_parser():
    from . import _cli_bench, _cli_evaluate, _cli_predict, _cli_tools, _cli_train
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
    _cli_train.add_parser(sub, common)
    _cli_evaluate.add_parser(sub, common)
    _cli_predict.add_parser(sub, common)
    _cli_tools.add_parsers(sub, common)
    _cli_bench.add_parser(sub, common)
    p = sub.add_parser("selftest", parents=[common], help="check the NumPy reference's gradients against "
                                        "finite differences")
    p.add_argument("--seed", type=int, default=0, help="random seed of the inputs (default 0)")
    p.add_argument("--rtol", type=float, default=1e-6,
                   help="normwise relative tolerance (default 1e-6)")
    p.set_defaults(func=_cmd_selftest)

    p = sub.add_parser("check", parents=[common], help="check the fast kernels against the NumPy reference "
                                     "on this machine (run this first when in doubt)")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="cpu",
                   help="backend to check (default cpu; all = every backend that loads)")
    p.add_argument("--shapes", choices=["quick", "seed"], default="quick",
                   help="quick: small odd shapes, seconds; seed: the seed model's layers "
                        "at batch 8")
    p.add_argument("--seed", type=int, default=0, help="random seed of the inputs")
    p.add_argument("--json", action="store_true",
                   help="print a machine-readable report on stdout (the table goes to stderr)")
    p.set_defaults(func=_cmd_check)
    return parser


def _expected_errors():
    """Errors whose message says what is wrong: printed as one line, no traceback."""
    from ._cli_common import CLIError
    from .kernels import BackendUnavailable
    from .models.keras_weights import KerasWeightsError
    from .models.file_format import ModelFileError
    return (CLIError, ModelFileError, KerasWeightsError, BackendUnavailable,
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


if __name__ == "__main__":
    sys.exit(main())

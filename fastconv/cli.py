"""The `fastconv` command line."""
from __future__ import annotations

import argparse
import sys
import time

from . import __version__


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


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastconv",
        description="Train and run small convolutional image classifiers on Numba kernels.")
    parser.add_argument("--version", action="version", version=f"fastconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("selftest", help="check the NumPy reference's gradients against "
                                        "finite differences")
    p.add_argument("--seed", type=int, default=0, help="random seed of the inputs (default 0)")
    p.add_argument("--rtol", type=float, default=1e-6,
                   help="normwise relative tolerance (default 1e-6)")
    p.set_defaults(func=_cmd_selftest)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

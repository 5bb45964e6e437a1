"""`fastconv check` and `fastconv selftest`: the kernels of a backend against the NumPy
reference on this machine, and the reference's gradients against finite differences."""
from __future__ import annotations

import sys
import time

from .. import kernels
from ._common import DEVICES


def cmd_selftest(args):
    """Check every reference backward op and loss against finite differences."""
    from ..testing.gradcheck import CASES, run_case
    from ..testing import MismatchError

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


def cmd_check(args):
    """Check the kernels of a backend against the NumPy reference on this machine."""
    import json

    from ..testing.check import HEADER, check, format_row

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


def add_parsers(sub, common):
    p = sub.add_parser("selftest", parents=[common], help="check the NumPy reference's gradients against "
                                        "finite differences")
    p.add_argument("--seed", type=int, default=0, help="random seed of the inputs (default 0)")
    p.add_argument("--rtol", type=float, default=1e-6,
                   help="normwise relative tolerance (default 1e-6)")
    p.set_defaults(func=cmd_selftest)

    p = sub.add_parser("check", parents=[common], help="check the fast kernels against the NumPy reference "
                                     "on this machine (run this first when in doubt)")
    # every backend but the reference, which is what they are checked against
    p.add_argument("--device", choices=[d for d in DEVICES if d != "reference"] + ["all"],
                   default="cpu",
                   help="backend to check (default cpu; all = every backend that loads)")
    p.add_argument("--shapes", choices=["quick", "seed"], default="quick",
                   help="quick: small odd shapes, seconds; seed: the seed model's layers "
                        "at batch 8")
    p.add_argument("--seed", type=int, default=0, help="random seed of the inputs")
    p.add_argument("--json", action="store_true",
                   help="print a machine-readable report on stdout (the table goes to stderr)")
    p.set_defaults(func=cmd_check)

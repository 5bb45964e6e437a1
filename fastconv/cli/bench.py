"""`fastconv bench`: a short benchmark (well under a minute on 2 cores).

1. The main kernels at the seed model's layer shapes (fastconv.kernels.opinfo 'seed'
   shapes, batch 8) on the chosen device against the NumPy reference: one timed
   call each after a warm-up call, with the normwise relative error (the pass/fail
   proof at these shapes is `fastconv check --shapes seed`).
2. The seed model (150x150x3) through the model layer: training steps
   (train_on_batch, RMSprop) and inference, in images per second, on the device
   and on the reference.

The full benchmarks (pytest-benchmark, many repeats, PyTorch as the peer) live
in bench/; this is the quick look on a new machine. Timings of single calls are
noisy: compare ratios from one run.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from .. import kernels
from ._common import DEVICES, CLIError, require_device

# The seed model's conv+relu+pool as one fused step (kernels.FUSED_KINDS), and
# the ops that run in its place on a backend without it.
FUSED_OPS = kernels.FUSED_KINDS["conv2d_relu_maxpool"]
UNFUSED_OPS = ("conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward")
DENSE_OPS = ("dense_forward", "dense_backward")
SEED_INPUT = (150, 150, 3)


def model_ops(K):
    """The kernels a training step of the seed model runs on backend K: the fused
    conv+relu+pool where the model layer's plan fuses it on K, else the unfused ops."""
    from ..models import small_convnet
    from ..models._plan import describe, logical_ops
    ops, _ = logical_ops(small_convnet(device="reference", compile=False).layers)
    fused = "conv2d_relu_maxpool" in describe(ops, K)
    return (FUSED_OPS if fused else UNFUSED_OPS) + DENSE_OPS


def _as_the_model_runs_it(sample):
    """Backward cases with the model's need_dx: the first layer needs no input gradient
    (and the reference's input gradient of a 3-channel conv is its slowest op)."""
    if "need_dx" not in sample.kwargs:
        return True
    first = tuple(sample.args[0].shape[1:]) == SEED_INPUT
    return sample.kwargs["need_dx"] != first


def bench_kernels(device, progress):
    from ..testing.check import ATOL, RTOL
    from ..kernels.opinfo import samples
    from ..testing import compare_to_reference
    K = kernels.get(device)
    ops = model_ops(K)
    rows = []
    for sample in samples("seed", 0):
        if sample.op not in ops or not _as_the_model_runs_it(sample):
            continue
        cmp = compare_to_reference(K, sample.op, *sample.args, rtol=RTOL, atol=ATOL,
                                   warmup=True, **sample.kwargs)
        row = {"op": sample.op, "case": sample.label, "device_ms": cmp.seconds_backend * 1e3,
               "reference_ms": cmp.seconds_reference * 1e3,
               "speedup": cmp.seconds_reference / max(cmp.seconds_backend, 1e-12),
               "rel_error": cmp.rel}
        rows.append(row)
        progress(row)
    return rows


def bench_model(device, batch, steps, seed=0):
    """Images per second of training steps and of inference of the seed model."""
    from ..models import small_convnet
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 150, 150, 3), dtype=np.float32)
    y = (rng.random(batch) < 0.5).astype(np.float32)
    model = small_convnet(device=device, seed=seed)
    t0 = time.perf_counter()
    if device != "reference":       # NumPy compiles nothing: its warm-up would double the
        model.train_on_batch(x, y)  # slowest part; cpu/cuda compile and plan buffers here
        model.predict(x, batch_size=batch)
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    train = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    for _ in range(steps):
        model.predict(x, batch_size=batch)
    infer = (time.perf_counter() - t0) / steps
    return {"device": device, "batch": batch, "steps": steps, "warmup_s": warmup,
            "train_step_s": train, "train_images_per_s": batch / train,
            "inference_batch_s": infer, "inference_images_per_s": batch / infer}


def cmd_bench(args):
    require_device(args.device)
    if args.batch_size < 1 or args.steps < 1:
        raise CLIError("--batch-size and --steps must be at least 1")
    out = sys.stderr if args.json else sys.stdout
    report = {"device": args.device, "kernels": [], "model": []}
    if args.device != "reference" and not args.skip_kernels:
        print(f"kernels at the seed model's shapes (batch 8), {args.device} vs the NumPy "
              f"reference, one call each after a warm-up:", file=out)
        print(f"{'op':<30} {'case':<40} {args.device + ' ms':>10} {'ref ms':>10} "
              f"{'speedup':>8} {'rel err':>9}", file=out)

        def progress(r):
            print(f"{r['op']:<30} {r['case'][:40]:<40} {r['device_ms']:>10.2f} "
                  f"{r['reference_ms']:>10.2f} {r['speedup']:>7.1f}x {r['rel_error']:>9.1e}",
                  file=out, flush=True)
        report["kernels"] = bench_kernels(args.device, progress)
    devices = [args.device] + (["reference"] if args.device != "reference"
                               and not args.skip_reference else [])
    print(f"\nthe seed model (150x150x3), batch {args.batch_size}, {args.steps} steps"
          + (" after a warm-up step" if args.device != "reference" else "")
          + (" (the reference: 1 step, no warm-up)" if len(devices) == 2 else "") + ":",
          file=out)
    print(f"{'device':<10} {'train img/s':>12} {'infer img/s':>12} {'step s':>9} "
          f"{'warm-up s':>10}", file=out)
    for device in devices:
        steps = args.steps if device == args.device else 1
        r = bench_model(device, args.batch_size, steps)
        report["model"].append(r)
        print(f"{device:<10} {r['train_images_per_s']:>12.1f} "
              f"{r['inference_images_per_s']:>12.1f} {r['train_step_s']:>9.3f} "
              f"{r['warmup_s']:>10.1f}", file=out, flush=True)
    if len(report["model"]) == 2:
        a, b = report["model"]
        print(f"{args.device} vs reference: training {a['train_images_per_s'] / b['train_images_per_s']:.1f}x, "
              f"inference {a['inference_images_per_s'] / b['inference_images_per_s']:.1f}x",
              file=out)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    return 0


def add_parser(sub, common):
    p = sub.add_parser("bench", parents=[common],
                       help="short benchmark: the main kernels and the seed model's training "
                            "step on a device vs the NumPy reference")
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.add_argument("--batch-size", type=int, default=16, help="batch of the model steps "
                                                              "(default 16, the seed's)")
    p.add_argument("--steps", type=int, default=3, help="timed steps on the device")
    p.add_argument("--skip-kernels", action="store_true", help="only the model steps")
    p.add_argument("--skip-reference", action="store_true",
                   help="do not time the reference model step (the slow part)")
    p.add_argument("--json", action="store_true",
                   help="machine-readable report on stdout (the tables go to stderr)")
    p.set_defaults(func=cmd_bench)

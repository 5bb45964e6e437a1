"""The seed model's training step (batch 32, RMSprop) and inference, in images/s:
fastconv on cpu (through the model layer: small_convnet + train_on_batch /
predict_on_batch), the NumPy reference, and PyTorch (NCHW and channels_last)
as the peer to beat, all at batch 32 on the same machine in one run.

    python bench/seed_step.py                 # the table (about 2 minutes)
    python bench/seed_step.py --steps 20 --no-reference --json seed.json
    python bench/seed_step.py --profile       # where a fastconv cpu step spends its time
    NUMBA_NUM_THREADS=1 python bench/seed_step.py --profile --model xception --batch 8 \
        --steps 2 --rounds 2                  # the keras.io xception, CPU ms per step

Each engine runs in its own subprocess, started twice: with the C library's
malloc as installed and with the glibc settings that keep large buffers
mapped (TUNED_MALLOC; they must be set when a process starts). PyTorch
allocates its activations every step, so the tuned run is its best; fastconv
reuses its buffers and should not care. Ratios are against PyTorch's best
layout under the same malloc setting, and against its best overall. Each
figure is the best of --steps timed calls after one warm-up call, over --rounds
rounds that visit every engine in turn: on a shared machine the minimum is the
most repeatable estimate of what the code costs, and interleaving gives every
engine the same chance at a quiet moment.

PyTorch is a benchmark peer only (`pip install torch==2.13.0`): fastconv never
imports it, and its rows are left out when it is absent.
`pytest bench/test_seed_step.py --benchmark-only` times the same runners in
process (as installed) with pytest-benchmark.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from bench import seed_shapes as S  # noqa: E402

BATCH = S.BATCH
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "2000000000",
                "MALLOC_TRIM_THRESHOLD_": "2000000000",
                "MALLOC_TOP_PAD_": "536870912"}
ENGINES = ("fastconv-cpu", "reference", "torch-nchw", "torch-channels_last")


def flops_per_image():
    """(training step, forward) FLOPs per image of the seed model, from its shapes.

    A training step is the forward pass, every layer's weight gradient (each costs
    a forward's FLOPs) and every input gradient except the first conv's.
    """
    convs = [S.conv_flops(*cfg) for cfg in S.CONVS.values()]
    denses = [S.dense_flops(*cfg) for cfg in S.DENSES.values()]
    forward = sum(convs) + sum(denses)
    train = forward + forward + (forward - convs[0])
    return train / BATCH, forward / BATCH


def seed_batch(n=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 150, 150, 3), dtype=np.float32)            # NHWC pixels in [0, 1)
    y = (rng.random(n) > 0.5).astype(np.float32)
    return x, y


class FastconvRunner:
    """small_convnet on `device`, driven through the model layer as a user would."""

    def __init__(self, device="cpu", n=BATCH):
        import fastconv
        self.model = fastconv.small_convnet(device=device, seed=0)
        self.x, self.y = seed_batch(n)

    def train(self):
        return self.model.train_on_batch(self.x, self.y)

    def infer(self):
        return self.model.predict_on_batch(self.x)


class TorchRunner:
    """The seed network in PyTorch: same layers, RMSprop(lr 1e-4, rho 0.9), BCE on logits."""

    def __init__(self, layout="nchw", n=BATCH, threads=None):
        import torch
        from torch import nn
        torch.set_num_threads(threads or os.cpu_count() or 1)
        torch.manual_seed(0)
        self.torch = torch
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(3),
            nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(6400, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 1))
        x, y = seed_batch(n)
        self.x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()   # (N, 3, 150, 150)
        if layout == "channels_last":
            self.net = self.net.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.from_numpy(y).reshape(n, 1)
        self.opt = torch.optim.RMSprop(self.net.parameters(), lr=1e-4, alpha=0.9, eps=1e-7)
        self.loss = nn.BCEWithLogitsLoss()

    def train(self):
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.net(self.x), self.y)
        loss.backward()
        self.opt.step()
        return float(loss)

    def infer(self):
        self.net.eval()
        with self.torch.inference_mode():
            return self.torch.sigmoid(self.net(self.x))


def make_runner(engine, n=BATCH):
    if engine == "fastconv-cpu":
        return FastconvRunner("cpu", n)
    if engine == "reference":
        return FastconvRunner("reference", n)
    if engine.startswith("torch-"):
        return TorchRunner(engine[len("torch-"):], n)
    raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")


def time_calls(fn, steps, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def worker(engine, steps):
    """Time one engine in this process; print one JSON line."""
    runner = make_runner(engine)
    result = {"engine": engine,
              "malloc": "tuned" if "MALLOC_TOP_PAD_" in os.environ else "as installed"}
    warmup = 0 if engine == "reference" else 1        # nothing to compile or page in there
    result["train_s"] = time_calls(runner.train, steps, warmup)
    result["infer_s"] = time_calls(runner.infer, steps, warmup)
    print(json.dumps(result))


def _cpu_time(fn, steps):
    """CPU seconds (time.process_time: this process, all its threads) of each of
    `steps` calls of fn. On a shared, loaded machine wall time measures the
    neighbours; one thread's CPU time measures the code."""
    times = []
    for _ in range(steps):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return times


def _profile_parts(model, n):
    """[(name, fn)] of every kernel step of the training plan at batch n, then the
    inference plan's forward steps [(name, fn)]."""
    plan = model._plan("train", n)
    names = {id(s): k for k, s in zip(plan.kinds, plan.steps)}
    parts = [(f"forward  {k}#{i}", s.forward) for i, (k, s) in
             enumerate(zip(plan.kinds, plan.steps))]
    index = {id(s): i for i, s in enumerate(plan.steps)}
    parts.append(("loss", plan.compute_loss))
    parts += [(f"backward {names.get(id(s), type(s).__name__)}#{index.get(id(s), '-')}",
               s.backward) for s in plan.backward_steps]
    parts.append(("optimizer", lambda: model.optimizer.apply(plan.K, plan.params, plan.grads)))
    iplan = model._plan("infer", n)
    infer = [(f"forward  {k}#{i}", s.forward) for i, (k, s) in
             enumerate(zip(iplan.kinds, iplan.steps))]
    return parts, infer


def profile(steps, model_name="seed", n=BATCH, width=1.0, size=180, rounds=1):
    """Per kernel step of a fastconv cpu training step and inference at batch n: the
    best of `steps` calls x `rounds` interleaved rounds, in CPU ms (process_time; run
    with NUMBA_NUM_THREADS=1 for one thread's time)."""
    if model_name == "xception":
        import fastconv
        model = fastconv.models.keras_io_xception((size, size, 3), width=width, seed=0)
        rng = np.random.default_rng(0)
        x = (255 * rng.random((n, size, size, 3))).astype(np.float32)
        y = (rng.random(n) > 0.5).astype(np.float32)
        what = f"keras.io xception width {width:g} at {size}x{size}"
    else:
        runner = FastconvRunner("cpu", n)
        model, x, y = runner.model, runner.x, runner.y
        what = "the seed model"
    model.train_on_batch(x, y)
    model.predict_on_batch(x)
    parts, infer = _profile_parts(model, n)
    infer = [(name + " (infer)", fn) for name, fn in infer]
    best = {}
    whole = [("TRAIN", lambda: model.train_on_batch(x, y)),
             ("INFER", lambda: model.predict_on_batch(x))]
    for _ in range(rounds):                      # interleaved: every part, every round
        for name, fn in parts + infer + whole:
            fn()                                 # warm
            best[name] = min(min(_cpu_time(fn, steps)), best.get(name, float("inf")))
    for title, rows, key in (("training step", parts, "TRAIN"), ("inference", infer, "INFER")):
        total = sum(best[k] for k, _ in rows)
        print(f"fastconv cpu {title}, {what}, batch {n}: {best[key] * 1e3:.1f} CPU ms "
              f"({n / best[key]:.1f} img/CPU-s); kernel steps below sum to {total * 1e3:.1f} ms")
        for k, _ in sorted(rows, key=lambda r: -best[r[0]]):
            print(f"  {k:<44}{best[k] * 1e3:9.2f} ms {100 * best[k] / total:6.1f}%")


def torch_available():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def run_worker(engine, steps, tuned):
    env = {k: v for k, v in os.environ.items() if k not in TUNED_MALLOC}
    if tuned:
        env.update(TUNED_MALLOC)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--steps", str(steps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results):
    """The summary table as text, with images/s, GFLOP/s, % of peak and ratios."""
    train_flop, fwd_flop = flops_per_image()
    peak = S.machine_peak_gflops()
    rows = []
    for r in results:
        tr = BATCH / min(r["train_s"])
        inf = BATCH / min(r["infer_s"])
        rows.append(dict(r, train_ips=tr, infer_ips=inf))

    def best_torch(mode, malloc=None):
        vals = [r[mode] for r in rows if r["engine"].startswith("torch-")
                and (malloc is None or r["malloc"] == malloc)]
        return max(vals) if vals else None

    lines = [
        f"seed model, batch {BATCH}, {os.cpu_count()} cores; {train_flop / 1e6:.1f} MFLOP per image "
        f"per training step, {fwd_flop / 1e6:.1f} forward; fp32 peak {peak:.0f} GFLOP/s",
        f"{'engine':<22}{'malloc':<14}{'train img/s':>12}{'GFLOP/s':>9}{'% peak':>8}"
        f"{'x torch':>9}{'infer img/s':>13}{'GFLOP/s':>9}{'x torch':>9}",
    ]
    for r in rows:
        cells = []
        for mode, flop in (("train_ips", train_flop), ("infer_ips", fwd_flop)):
            gfs = r[mode] * flop / 1e9
            peer = best_torch(mode, r["malloc"])
            ratio = f"{r[mode] / peer:9.2f}" if peer else f"{'':>9}"
            pct = f"{100 * gfs / peak:7.1f}%" if mode == "train_ips" else ""
            cells.append((r[mode], gfs, pct, ratio))
        (t, tg, tp, trat), (i, ig, _, irat) = cells
        lines.append(f"{r['engine']:<22}{r['malloc']:<14}{t:12.1f}{tg:9.1f}{tp:>8}{trat}"
                     f"{i:13.1f}{ig:9.1f}{irat}")
    for mode, label in (("train_ips", "training"), ("infer_ips", "inference")):
        ours = [r[mode] for r in rows if r["engine"] == "fastconv-cpu"]
        peer = best_torch(mode)
        if ours and peer:
            lines.append(f"fastconv cpu {label}: {max(ours) / peer:.2f}x PyTorch's best "
                         f"({max(ours):.1f} vs {peer:.1f} img/s)")
    lines.append("x torch: against PyTorch's best layout under the same malloc setting")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per engine (best of)")
    ap.add_argument("--no-reference", action="store_true", help="skip the (slow) NumPy reference")
    ap.add_argument("--engines", default=None, help="comma-separated subset of " + ",".join(ENGINES))
    ap.add_argument("--json", default=None, help="also write the raw timings here")
    ap.add_argument("--rounds", type=int, default=2, help="rounds over all engines (best of)")
    ap.add_argument("--profile", action="store_true", help="time each step of a fastconv cpu step")
    ap.add_argument("--model", default="seed", choices=("seed", "xception"),
                    help="--profile: the seed model or keras.io's xception")
    ap.add_argument("--batch", type=int, default=BATCH, help="--profile: batch size")
    ap.add_argument("--width", type=float, default=1.0, help="--profile: xception width")
    ap.add_argument("--size", type=int, default=180, help="--profile: xception image size")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.steps)
        return 0
    if args.profile:
        profile(args.steps, args.model, args.batch, args.width, args.size, args.rounds)
        return 0
    engines = args.engines.split(",") if args.engines else list(ENGINES)
    if args.no_reference and "reference" in engines:
        engines.remove("reference")
    if not torch_available():
        print("torch is not installed: PyTorch rows left out (pip install torch==2.13.0)")
        engines = [e for e in engines if not e.startswith("torch-")]
    best = {}
    for _ in range(args.rounds):
        for tuned in (False, True):
            for engine in engines:
                if engine == "reference" and (tuned or (engine, False) in best):
                    continue              # minutes per step, once: malloc cannot matter there
                steps = 1 if engine == "reference" else args.steps
                r = run_worker(engine, steps, tuned)
                key = (engine, tuned)
                if key in best:
                    for k in ("train_s", "infer_s"):
                        best[key][k] = best[key][k] + r[k]
                else:
                    best[key] = r
                print(f"  measured {engine} ({r['malloc']})", file=sys.stderr)
    results = [best[(e, t)] for t in (False, True) for e in engines if (e, t) in best]
    print(table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

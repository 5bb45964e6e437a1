"""Compile time of the cpu engine: cold (empty Numba cache) and warm (cache=True
hits) import-plus-first-call, each in a fresh process.

    python bench/compile_time.py [--repeat 2] [--only model]

Two measurements per state:
  engine  import fastconv.kernels.cpu, then call every op in the op table
          (fastconv.kernels.opinfo, quick shapes) once with each kernel's serial build
          and once with its parallel build forced: every compiled signature the
          engine has for float32 inputs;
  model   import fastconv, build small_convnet(device="cpu") and run one
          train_on_batch and one predict_on_batch at batch 4: what a user waits
          for before the first step.
The model measurement also lists its costliest compiles (CPU seconds per kernel,
from Numba's compile events). Cold runs use a new temporary NUMBA_CACHE_DIR; warm runs reuse the one the cold
run filled. Wall seconds are what a user waits; the child's CPU seconds
(compilation is single-threaded) are the steadier figure on a busy machine.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = {
    "engine": r"""
import time
t0 = time.perf_counter()
import fastconv.kernels.cpu as C
from fastconv.kernels.cpu import _common
from fastconv.kernels.opinfo import samples
t_import = time.perf_counter() - t0
ops = 0
for threshold in (1 << 62, 0):                     # serial builds, then parallel builds
    _common.PARALLEL_MIN = threshold
    for s in samples("quick"):
        if hasattr(C, s.op):
            getattr(C, s.op)(*s.args, **s.kwargs)
            ops += 1
print(t_import, time.perf_counter() - t0, ops)
""",
    "model": r"""
import json, sys, time
t0 = time.perf_counter()
from numba.core import event

class Compiles(event.Listener):
    # CPU seconds of each outermost compile (a kernel's callees count in its time)
    def __init__(self):
        self.stack, self.seconds = [], []
    def on_start(self, ev):
        self.stack.append(time.process_time())
    def on_end(self, ev):
        c0 = self.stack.pop()
        if not self.stack:
            f = ev.data["dispatcher"].py_func
            self.seconds.append((time.process_time() - c0,
                                 f.__module__.rsplit(".", 1)[-1] + "." + f.__name__))

compiles = Compiles()
event.register("numba:compile", compiles)
import numpy as np
import fastconv
t_import = time.perf_counter() - t0
model = fastconv.small_convnet(device="cpu", seed=0)
rng = np.random.default_rng(0)
x = rng.random((4, 150, 150, 3), dtype=np.float32)
y = (rng.random(4) > 0.5).astype(np.float32)
model.train_on_batch(x, y)
model.predict_on_batch(x)
print(t_import, time.perf_counter() - t0, 2)
print(json.dumps(sorted(compiles.seconds, reverse=True)))
""",
}


def measure(what, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD[what]], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-2000:]}")
    lines = proc.stdout.splitlines()
    t_import, t_total, calls = lines[0].split()
    return dict(what=what, import_s=float(t_import), import_and_calls_s=float(t_total),
                calls=int(calls), process_s=wall, process_cpu_s=cpu,
                compiles=json.loads(lines[1]) if len(lines) > 1 else [])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=1, help="cold/warm pairs per measurement")
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", choices=sorted(CHILD), default=None,
                    help="one measurement (model: the first trained batch)")
    ap.add_argument("--top", type=int, default=12,
                    help="the model's costliest compiles to list (0: none)")
    args = ap.parse_args(argv)
    rows = []
    measurements = [args.only] if args.only else ["engine", "model"]
    sys.path.insert(0, ROOT)
    from fastconv import kernels
    try:
        kernels.get("cpu")
    except kernels.BackendUnavailable as exc:
        print(f"model: skipped ({exc})")
        measurements = [m for m in measurements if m != "model"]
    for what in measurements:
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="fastconv-numba-cache-") as cache:
                rows.append(dict(measure(what, cache), state="cold"))
                rows.append(dict(measure(what, cache), state="warm"))
    print(f"{'measurement':<13}{'cache':<7}{'import s':>10}{'import + first calls s':>24}"
          f"{'calls':>7}{'process CPU s':>15}")
    for r in rows:
        print(f"{r['what']:<13}{r['state']:<7}{r['import_s']:10.2f}"
              f"{r['import_and_calls_s']:24.2f}{r['calls']:7d}{r['process_cpu_s']:15.2f}")
    for r in rows:
        if r["compiles"] and r["state"] == "cold":
            total = sum(c for c, _ in r["compiles"])
            print(f"\n{r['what']} cold: {len(r['compiles'])} kernels compiled, "
                  f"{total:.1f} CPU s (each kernel's callees included in its time):")
            for c, name in r["compiles"][:args.top]:
                print(f"  {c:6.2f}  {name}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

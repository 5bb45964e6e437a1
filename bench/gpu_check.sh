#!/usr/bin/env bash
# bench/gpu_check.sh -- one-call check of fastconv's CUDA backend on a real GPU (written for the
# lent NVIDIA H200: sm_90, 132 SMs). Run it from the repository root of a fastconv checkout:
#
#     bash bench/gpu_check.sh      # ~6-7.5 minutes; hard stop at GPU_CHECK_LIMIT_S (450 s)
#
# (a copy of ../shared/gpu/check.sh kept in the repository, because a GPU machine receives the
# checkout only; it reads a few internals of fastconv, which tests/test_gpu_check_script.py
# checks against the code without a GPU: keep the two in step when the kernels change.)
#
# What it does, each step time-boxed so that one failing or slow step cannot eat the budget
# (later steps get whatever time is left; a step with < 15 s left is skipped and says so):
#   0. environment: nvidia-smi line, python/numba/numba-cuda/torch versions, nvJitLink,
#      `pip install -e . --no-deps` into the preinstalled python3 (no network there, so
#      --no-build-isolation and PIP_NO_INDEX; falls back to PYTHONPATH if pip fails);
#   1. `python3 -m fastconv check --device cuda --shapes seed --json` (every op at the seed
#      model's shapes, batch 8, against the float64 NumPy reference);
#   2. timings, one process per engine so a sticky CUDA error in one cannot poison the other:
#      PyTorch/cuDNN (fp32 and TF32, NCHW and channels_last) and fastconv (device="cuda"),
#      training step and inference at batch 32 and 256, a per-step device/host breakdown of
#      the fastconv step, registers/SASS of the conv kernels as the LTO build really made
#      them, and a bitwise run-to-run determinism check;
#   3. the pytest selection that runs on the real GPU (see the comment at that step);
#   4. compute-sanitizer racecheck + memcheck on a tiny ragged-tile case (the races and
#      out-of-bounds accesses the simulator cannot show).
# Everything lands in $OUT (at most 8 files come back from the device machine, so exactly 8
# are written); 00_summary.txt is the compact report and is printed last.
#
# Leaves the GPU's settings alone (no clocks, power, persistence, MIG or reset commands).

set -u -o pipefail

OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/gpu_check.XXXXXX)"
PY="${PYTHON:-python3}"
LIMIT="${GPU_CHECK_LIMIT_S:-450}"            # whole-script budget in seconds (< 8 minutes)
START=$SECONDS

SUMMARY="$OUT/00_summary.txt"
ENVLOG="$OUT/01_env.log"
PYTESTLOG="$OUT/02_pytest.log"
CHECKJSON="$OUT/03_check_seed.json"
CHECKLOG="$OUT/04_check_seed.log"
BENCHJSON="$OUT/05_bench.json"
BENCHLOG="$OUT/06_bench.log"
SANLOG="$OUT/07_sanitizer.log"
: >"$SUMMARY"; : >"$ENVLOG"; : >"$PYTESTLOG"; : >"$CHECKLOG"; : >"$BENCHLOG"; : >"$SANLOG"

export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export OUT BENCHJSON
unset NUMBA_ENABLE_CUDASIM CUDA_LAUNCH_BLOCKING CI    # real device, async launches, no CI=true
export PATH="$PATH:/usr/local/cuda/bin"              # nvdisasm (numba's inspect_sass), sanitizer

exec 3>&1                                    # the terminal: say() writes there even when a
                                             # step's stdout is redirected into a log or JSON
say() { echo "$*" >>"$SUMMARY"; echo "$*" >&3; }
elapsed() { echo $(( SECONDS - START )); }
# step_budget WANT: seconds this step may use (WANT, or what is left minus a 10 s reserve)
step_budget() {
    local want=$1 left=$(( LIMIT - (SECONDS - START) - 10 ))
    (( left < want )) && want=$left
    (( want < 15 )) && want=0
    echo "$want"
}
# timebox NAME WANT CMD...: run CMD under `timeout`, report rc/seconds in the summary
timebox() {
    local name=$1 want=$2; shift 2
    local t; t=$(step_budget "$want")
    if (( t == 0 )); then say "[$name] SKIPPED: out of time ($(elapsed) s used of $LIMIT)"; return 99; fi
    local t0=$SECONDS
    timeout --kill-after=5 "$t" "$@"
    local rc=$?
    local took=$(( SECONDS - t0 ))
    if (( rc == 124 || rc == 137 )); then say "[$name] TIMED OUT after ${took}s (limit ${t}s)"
    else say "[$name] rc=$rc in ${took}s"; fi
    return $rc
}

say "== fastconv GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), repo $(git rev-parse --short HEAD 2>/dev/null || echo '?') =="

# ---------------------------------------------------------------------------------------------
# 0. environment and install
# ---------------------------------------------------------------------------------------------
{
    echo "### nvidia-smi"; nvidia-smi 2>&1 | head -20
    echo "### query"; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu --format=csv 2>&1
    echo "### tools"; for t in nvdisasm cuobjdump compute-sanitizer ncu nvcc ptxas; do printf '%s: %s\n' "$t" "$(command -v $t || echo -)"; done
    echo "### python"; command -v "$PY"; "$PY" --version
} >>"$ENVLOG" 2>&1
say "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | head -1)"

# `pip install -e . --no-deps` as asked; the machine has no network, so pip must neither build in
# an isolated env (it would fetch setuptools) nor look at an index.
if timebox install 60 "$PY" -m pip install --no-deps --no-build-isolation -e . >>"$ENVLOG" 2>&1 \
        && "$PY" -c "import fastconv" >>"$ENVLOG" 2>&1; then
    say "install: pip install -e . ok"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    say "install: pip failed (see 01_env.log); using PYTHONPATH=$PWD"
fi

cat >"$WORK/env_probe.py" <<'EOF'
import importlib.metadata as md
vers = {}
for d in ("fastconv", "numba", "numba-cuda", "llvmlite", "numpy", "cuda-bindings", "cuda-core",
          "cuda-python", "nvidia-nvjitlink", "nvidia-cuda-nvrtc", "nvidia-nvvm", "cuda-toolkit",
          "torch", "pytest", "pytest-timeout", "pillow", "tqdm", "setuptools"):
    try:
        vers[d] = md.version(d)
    except md.PackageNotFoundError:
        vers[d] = "-"
print("versions:", " ".join(f"{k}={v}" for k, v in vers.items()))
try:
    from numba import cuda
    print("numba.cuda importable; is_available:", cuda.is_available())
    dev = cuda.get_current_device()
    print("device:", dev.name, "cc", dev.compute_capability, "SMs", dev.MULTIPROCESSOR_COUNT)
    try:
        from numba.cuda.cudadrv.driver import _have_nvjitlink
        print("nvjitlink (LTO default on):", _have_nvjitlink())
    except Exception as exc:
        print("nvjitlink probe failed:", exc)
    try:
        from numba.cuda.cudadrv import nvvm
        print("NVVM:", nvvm.NVVM().get_version())
    except Exception as exc:
        print("NVVM probe failed:", exc)
    print("driver CUDA:", cuda.cudadrv.driver.driver.get_version(), "runtime:", cuda.runtime.get_version())
    import fastconv
    print("fastconv", fastconv.__version__, "cuda_available():", fastconv.cuda_available())
except Exception as exc:
    print("numba.cuda PROBLEM:", type(exc).__name__, exc)
EOF
timebox env-probe 40 "$PY" "$WORK/env_probe.py" >>"$ENVLOG" 2>&1
grep -E "^(versions|numba.cuda|device|nvjitlink|NVVM|driver|fastconv|numba.cuda PROBLEM)" "$ENVLOG" \
    | sed 's/^/  /' | tee -a "$SUMMARY"

# ---------------------------------------------------------------------------------------------
# 1. every kernel at the seed shapes against the NumPy reference
# ---------------------------------------------------------------------------------------------
timebox check-seed 160 "$PY" -m fastconv check --device cuda --shapes seed --json \
    >"$CHECKJSON" 2>"$CHECKLOG"
"$PY" - "$CHECKJSON" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import json, sys
try:
    rep = json.load(open(sys.argv[1]))
except Exception as exc:
    print(f"  check: no JSON report ({type(exc).__name__}: {exc}); see 04_check_seed.log")
    sys.exit(0)
rows = rep.get("results", [])
bad = [r for r in rows if not r["passed"]]
print(f"  check seed: {'PASSED' if rep.get('passed') else 'FAILED'} {len(rows) - len(bad)}/{len(rows)} rows,"
      f" {rep.get('seconds', 0):.0f}s; env cuda: {rep.get('environment', {}).get('cuda')}")
worst = {}
for r in rows:
    w = worst.get(r["op"])
    if w is None or r["rel_error"] > w["rel_error"]:
        worst[r["op"]] = r
for op, r in sorted(worst.items()):
    print(f"    {op:<30} worst rel {r['rel_error']:.1e} max|d| {r['max_abs_error']:.1e}"
          f" dev {r['seconds_backend'] * 1e3:7.2f} ms  ref {r['seconds_reference'] * 1e3:8.1f} ms")
for r in bad:
    print(f"  FAIL {r['op']} [{r['case']}]: {r['message'][:300]}")
EOF

# ---------------------------------------------------------------------------------------------
# 2. timings: PyTorch/cuDNN and fastconv, batch 32 and 256 (one process per engine)
# ---------------------------------------------------------------------------------------------
cat >"$WORK/bench_seed_gpu.py" <<'EOF'
"""Seed model on the GPU: fastconv (device='cuda') vs PyTorch/cuDNN, batch 32 and 256.

    python3 bench_seed_gpu.py torch|fastconv|summary      (JSON merged into $BENCHJSON)

Every number is the median of timed calls after warm-up calls, with the device synchronised
before the clock is read. 'resident' means the batch already sits in the plan's device buffers
(what a data pipeline with device prefetch would give); train_on_batch/predict_on_batch copy
the host batch in every call, as a user's loop does.
"""
import json, os, re, statistics, sys, time, traceback
import numpy as np

PATH = os.environ.get("BENCHJSON", "/tmp/05_bench.json")
BUDGET = float(os.environ.get("BENCH_BUDGET_S", "120"))
BATCHES = [int(b) for b in os.environ.get("BENCH_BATCHES", "32,256").split(",")]
T0 = time.time()


def left():
    return BUDGET - (time.time() - T0)


def load():
    try:
        with open(PATH) as f:
            return json.load(f)
    except Exception:
        return {}


RES = load()


def save():
    with open(PATH, "w") as f:
        json.dump(RES, f, indent=1, default=str)


def err(where, exc):
    RES.setdefault("errors", []).append(f"{where}: {type(exc).__name__}: {exc}")
    print(f"ERROR {where}: {type(exc).__name__}: {exc}", flush=True)
    traceback.print_exc()
    save()


def flops_per_image():
    """(training step, forward) FLOPs per image, a multiply-add = 2 (bench/seed_step.py's count)."""
    convs = [2 * m * k * f for m, k, f in ((148 * 148, 27, 32), (47 * 47, 288, 32), (21 * 21, 288, 64))]
    fwd = sum(convs) + 2 * 6400 * 64 + 2 * 64
    return fwd + fwd + (fwd - convs[0]), fwd


def seed_batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 150, 150, 3), dtype=np.float32),
            (rng.random(n) > 0.5).astype(np.float32))


def timed(fn, sync, reps=12, warm=2, max_s=2.5):
    for _ in range(warm):
        fn()
        sync()
    ts, stop = [], time.perf_counter() + max_s
    while len(ts) < reps:
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
        if time.perf_counter() > stop and len(ts) >= 3:
            break
    return {"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts), "n": len(ts)}


# ------------------------------------------------------------------------------ PyTorch
def bench_torch():
    import torch
    from torch import nn
    dev = torch.device("cuda")
    RES.setdefault("meta", {}).update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                                      cudnn=torch.backends.cudnn.version(),
                                      torch_device=torch.cuda.get_device_name())
    torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize
    out = RES.setdefault("torch", {})

    def make(layout):
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(3),
            nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(6400, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 1)).to(dev)
        if layout == "channels_last":
            net = net.to(memory_format=torch.channels_last)
        return net

    for prec in ("fp32", "tf32"):
        # fp32: no tensor cores anywhere (fastconv's arithmetic); tf32: PyTorch's default for convs
        torch.backends.cudnn.allow_tf32 = prec == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = prec == "tf32"
        for layout in ("nchw", "channels_last"):
            for n in BATCHES:
                key = f"{prec}/{layout}/{n}"
                if left() < 6:
                    out[key] = "skipped: out of time"
                    continue
                try:
                    net = make(layout)
                    xh, yh = seed_batch(n)
                    x_cpu = torch.from_numpy(xh).permute(0, 3, 1, 2).contiguous()
                    x = x_cpu.to(dev)
                    if layout == "channels_last":
                        x = x.contiguous(memory_format=torch.channels_last)
                    y = torch.from_numpy(yh).reshape(n, 1).to(dev)
                    opt = torch.optim.RMSprop(net.parameters(), lr=1e-4, alpha=0.9, eps=1e-7)
                    lossf = nn.BCEWithLogitsLoss()

                    def train(xb=None):
                        net.train()
                        opt.zero_grad(set_to_none=True)
                        loss = lossf(net(x if xb is None else xb), y)
                        loss.backward()
                        opt.step()
                        return loss.item()           # one D2H per step, as fastconv's loss

                    def infer():
                        net.eval()
                        with torch.inference_mode():
                            return torch.sigmoid(net(x)).cpu()

                    r = {"train_step": timed(train, sync, warm=3), "infer": timed(infer, sync, warm=3)}
                    if prec == "fp32" and layout == "nchw":   # with the host batch copied in per step
                        r["train_step_h2d"] = timed(lambda: train(x_cpu.to(dev, non_blocking=False)),
                                                    sync)
                    out[key] = r
                    print(f"torch {key}: train {r['train_step']['median_ms']:.3f} ms, "
                          f"infer {r['infer']['median_ms']:.3f} ms", flush=True)
                except Exception as exc:
                    err(f"torch {key}", exc)
                save()


# ------------------------------------------------------------------------------ fastconv
def step_flops(step):
    """(forward FLOPs, backward FLOPs) of one plan step (seed model: 'valid', stride 1)."""
    kind = type(step).__name__
    if kind == "ConvStep":
        n, h, w, c = step.x.shape
        kh, kw, _, f = step.w.shape
        oh, ow = h - kh + 1, w - kw + 1
        if step.kind == "conv2d_relu_maxpool":
            ph, pw = step.pool_kw["pool"]
            _, pph, ppw, _ = step.y.shape
            cov = pph * ph * ppw * pw          # conv pixels under some window (stride == pool)
        else:
            cov = oh * ow
        k = kh * kw * c
        dx = 2 * n * h * w * kh * kw * f * c if step.dx is not None else 0
        return 2 * n * cov * k * f, 2 * n * oh * ow * k * f + dx
    if kind == "DenseStep":
        n, d_in = step.x.shape
        fl = 2 * n * d_in * step.w.shape[1]
        return fl, fl + (fl if step.dx is not None else 0)
    return 0, 0


def make_spin():
    from numba import cuda, uint32

    @cuda.jit
    def spin(n_us, out):            # keeps the stream busy while the host enqueues work
        i = 0
        while i < n_us:
            cuda.nanosleep(uint32(1000))
            i += 1
        out[0] = i
    return spin


def breakdown(model, plan, n, spin):
    """Per step of the training plan: host enqueue ms/call and gap-free device ms/call."""
    from numba import cuda
    buf = cuda.device_array(1, np.int64)
    kinds = {id(s): k for k, s in zip(plan.kinds, plan.steps)}
    parts = [(f"fwd {k}", s.forward, s) for k, s in zip(plan.kinds, plan.steps)]
    parts.append(("loss (+ D2H sync)", plan.compute_loss, None))
    parts += [(f"bwd {kinds[id(s)]}", s.backward, s) for s in plan.backward_steps]
    parts.append(("optimizer (10 launches)",
                  lambda: model.optimizer.apply(plan.K, plan.params, plan.grads), None))
    rows = []
    for name, fn, step in parts:
        reps = 5 if n >= 128 else 10
        fn()
        cuda.synchronize()
        t = time.perf_counter()
        fn()
        cuda.synchronize()
        one = time.perf_counter() - t                      # wall time of one call, idle device
        # Steps that synchronise inside (the loss copies its value out; dropout uploads its
        # host-drawn mask from pageable memory, which syncs the stream) cannot be queued behind
        # the spin kernel: for them host ~ device ~ wall, and that is the finding.
        syncs = name.startswith("loss") or name == "fwd DropoutStep"
        if not syncs:
            spin[1, 1](int(min(2e6, 3e6 * reps * one + 2000)), buf)   # ~µs; hides host gaps
        e0, e1 = cuda.event(timing=True), cuda.event(timing=True)
        e0.record()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        host = (time.perf_counter() - t) / reps
        e1.record()
        e1.synchronize()
        dev = cuda.event_elapsed_time(e0, e1) / reps
        fl = step_flops(step) if step is not None else (0, 0)
        fl = fl[0] if name.startswith("fwd") else fl[1] if name.startswith("bwd") else 0
        rows.append({"step": name, "syncs": syncs, "host_ms": 1e3 * host, "device_ms": dev,
                     "wall_1call_ms": 1e3 * one, "gflop": fl / 1e9,
                     "tflops": (fl / 1e12) / (dev / 1e3) if fl and dev > 0 else None})
    return rows


def kernel_facts():
    """Registers/smem/local memory of every compiled kernel (the LTO build that really runs),
    and SASS instruction mixes of the conv kernels."""
    from fastconv.kernels.cuda import report
    facts = {}
    for mod, spec in report.all_specs():
        k, f = spec.kernel, {}
        for what, getter in (("regs", "get_regs_per_thread"), ("smem", "get_shared_mem_per_block"),
                             ("local", "get_local_mem_per_thread")):
            try:
                f[what] = {str(s): v for s, v in getattr(k, getter)().items()}
            except Exception as exc:
                f[what] = f"n/a ({type(exc).__name__})"
        try:
            regs = list(f["regs"].values())[0] if isinstance(f["regs"], dict) and f["regs"] else None
            smem = list(f["smem"].values())[0] if isinstance(f["smem"], dict) and f["smem"] else 0
            if regs is not None:
                f["occupancy"] = report.occupancy(spec.threads, regs, smem)
        except Exception as exc:
            f["occupancy"] = f"n/a ({exc})"
        if spec.name in ("conv2d_fwd_tile", "conv2d_dx_tile", "conv2d_dw_tile", "conv2d_dw_sum"):
            try:
                for sig, sass in k.inspect_sass().items():
                    ops = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)", sass)
                    mix = {}
                    for op in ops:
                        key = op if op.startswith(("LDS", "STS", "LDG", "STG", "LDL", "STL")) \
                            else op.split(".")[0]
                        mix[key] = mix.get(key, 0) + 1
                    f["sass_total"] = len(ops)
                    f["sass_mix"] = dict(sorted(mix.items(), key=lambda kv: -kv[1])[:25])
                    if spec.name == "conv2d_fwd_tile":
                        print("=== SASS conv2d_fwd_tile", sig, "===\n" + sass[:200000], flush=True)
                    break
            except Exception as exc:
                f["sass"] = f"n/a ({type(exc).__name__}: {exc})"
        facts[f"{mod}.{spec.name}"] = f
    return facts


def bench_fastconv():
    import fastconv
    from numba import cuda
    sync = cuda.synchronize
    dev = cuda.get_current_device()
    RES.setdefault("meta", {}).update(numba_device=str(dev.name), cc=list(dev.compute_capability),
                                      sms=dev.MULTIPROCESSOR_COUNT)
    out = RES.setdefault("fastconv", {})
    spin = make_spin()
    for n in BATCHES:
        r = out.setdefault(str(n), {})
        if left() < 15:
            r["skipped"] = "out of time"
            continue
        try:
            x, y = seed_batch(n)
            model = fastconv.small_convnet(device="cuda", seed=0)
            t = time.perf_counter()
            model.train_on_batch(x, y)
            sync()
            r["first_train_call_s"] = time.perf_counter() - t      # numba compiles here
            r["train_on_batch"] = timed(lambda: model.train_on_batch(x, y), sync)
            plan = model._plan("train", n)
            plan.load_slice(x, model._prep_labels(y, n), 0, n)
            r["train_step_resident"] = timed(lambda: model._train_step(plan), sync)
            t = time.perf_counter()
            model.predict_on_batch(x)
            sync()
            r["first_predict_call_s"] = time.perf_counter() - t
            r["predict_on_batch"] = timed(lambda: model.predict_on_batch(x), sync)
            iplan = model._plan("infer", n)
            iplan.load_slice(x, None, 0, n)
            r["infer_resident"] = timed(lambda: (iplan.forward(), iplan.predict_out()), sync)
            r["forward_resident"] = timed(iplan.forward, sync)
            r["upload_x_pageable"] = timed(lambda: iplan.load_slice(x, None, 0, n), sync)
            save()
            print(f"fastconv {n}: train resident {r['train_step_resident']['median_ms']:.3f} ms,"
                  f" train_on_batch {r['train_on_batch']['median_ms']:.3f} ms, infer resident "
                  f"{r['infer_resident']['median_ms']:.3f} ms", flush=True)
            if left() > 10:
                r["breakdown"] = breakdown(model, plan, n, spin)
                for row in r["breakdown"]:
                    tf = f"{row['tflops']:.2f} TFLOP/s" if row["tflops"] else ""
                    print(f"  {n:>4} {row['step']:<36} host {row['host_ms']:8.3f} ms  device "
                          f"{row['device_ms']:8.3f} ms  {tf}", flush=True)
            save()
        except Exception as exc:
            err(f"fastconv batch {n}", exc)
    try:
        RES["kernels"] = kernel_facts()
    except Exception as exc:
        err("kernel facts", exc)
    save()
    if left() > 8:
        try:   # same seed, same data, 3 steps twice: the weights must agree bit for bit
            x, y = seed_batch(32)
            ws = []
            for _ in range(2):
                m = fastconv.small_convnet(device="cuda", seed=0)
                for _ in range(3):
                    m.train_on_batch(x, y)
                ws.append(m.get_weights())
            RES["bitwise_deterministic_3_steps"] = all(np.array_equal(a, b) for a, b in zip(*ws))
        except Exception as exc:
            err("determinism", exc)
    save()


# ------------------------------------------------------------------------------ summary
def summary():
    train_f, fwd_f = flops_per_image()
    lines = []
    fc, tc = RES.get("fastconv", {}), RES.get("torch", {})
    for n in BATCHES:
        f = fc.get(str(n), {})
        lines.append(f"  batch {n}: ms/step (img/s) [TFLOP/s at {train_f / 1e6:.0f} MFLOP/img train,"
                     f" {fwd_f / 1e6:.1f} fwd]")

        def cell(d, key, flop):
            v = d.get(key) if isinstance(d, dict) else None
            if not isinstance(v, dict):
                return f"{'-':>26}"
            ms = v["median_ms"]
            return f"{ms:8.3f} ({n / ms * 1e3:8.0f}) [{n * flop / (ms * 1e-3) / 1e12:5.2f}]"
        lines.append(f"    {'engine':<34}{'train':>26}{'infer':>26}")
        lines.append(f"    {'fastconv resident batch':<34}{cell(f, 'train_step_resident', train_f)}"
                     f"{cell(f, 'infer_resident', fwd_f)}")
        lines.append(f"    {'fastconv *_on_batch (host copy)':<34}{cell(f, 'train_on_batch', train_f)}"
                     f"{cell(f, 'predict_on_batch', fwd_f)}")
        best = {}
        for prec in ("fp32", "tf32"):
            for layout in ("nchw", "channels_last"):
                t = tc.get(f"{prec}/{layout}/{n}", {})
                lines.append(f"    {'torch ' + prec + ' ' + layout:<34}{cell(t, 'train_step', train_f)}"
                             f"{cell(t, 'infer', fwd_f)}")
                for mode, key in (("train", "train_step"), ("infer", "infer")):
                    if isinstance(t, dict) and isinstance(t.get(key), dict):
                        b = best.setdefault((prec, mode), t[key]["median_ms"])
                        best[(prec, mode)] = min(b, t[key]["median_ms"])
        for mode, key in (("train", "train_step_resident"), ("infer", "infer_resident")):
            if isinstance(f.get(key), dict):
                ours = f[key]["median_ms"]
                txt = ", ".join(f"{ours / best[(p, mode)]:.2f}x slower than torch best {p}"
                                for p in ("fp32", "tf32") if (p, mode) in best)
                lines.append(f"    fastconv {mode}: {txt or 'no torch number'}")
        if isinstance(f.get("breakdown"), list):
            top = sorted(f["breakdown"], key=lambda r: -max(r["device_ms"], r["host_ms"]))[:8]
            lines.append("    fastconv step breakdown (top 8 by max(host, device) ms/call):")
            for row in top:
                tf = f"{row['tflops']:.2f} TFLOP/s" if row["tflops"] else ""
                lines.append(f"      {row['step']:<36} dev {row['device_ms']:8.3f}  host "
                             f"{row['host_ms']:7.3f}  {tf}")
            lines.append(f"      sum: device {sum(r['device_ms'] for r in f['breakdown']):.3f} ms,"
                         f" host {sum(r['host_ms'] for r in f['breakdown']):.3f} ms")
        if "upload_x_pageable" in f:
            lines.append(f"    upload of one host batch (pageable): {f['upload_x_pageable']['median_ms']:.3f} ms")
    for name, k in sorted(RES.get("kernels", {}).items()):
        if "conv2d" in name or "dw_sum" in name:
            mix = k.get("sass_mix", {})
            occ = k.get("occupancy")
            lines.append(f"  {name}: regs {k.get('regs')} local {k.get('local')} occ {occ}")
            if mix:
                lines.append(f"    SASS {k.get('sass_total')} instr: " +
                             " ".join(f"{op}={c}" for op, c in list(mix.items())[:14]))
    if "bitwise_deterministic_3_steps" in RES:
        lines.append(f"  bitwise deterministic over 3 steps: {RES['bitwise_deterministic_3_steps']}")
    for e in RES.get("errors", [])[:10]:
        lines.append(f"  ERROR {e[:300]}")
    meta = RES.get("meta", {})
    lines.insert(0, f"  meta: {meta}")
    print("\n".join(lines))


if __name__ == "__main__":
    part = sys.argv[1] if len(sys.argv) > 1 else "summary"
    try:
        {"torch": bench_torch, "fastconv": bench_fastconv, "summary": summary}[part]()
    except Exception as exc:
        err(part, exc)
        sys.exit(1)
EOF

: >"$BENCHJSON"
nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader \
    >>"$BENCHLOG" 2>&1
export BENCH_BUDGET_S=55      # each part stops starting new measurements when this runs out
timebox bench-torch 65 "$PY" "$WORK/bench_seed_gpu.py" torch >>"$BENCHLOG" 2>&1
export BENCH_BUDGET_S=115
timebox bench-fastconv 130 "$PY" "$WORK/bench_seed_gpu.py" fastconv >>"$BENCHLOG" 2>&1
nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader \
    >>"$BENCHLOG" 2>&1
timeout 30 "$PY" "$WORK/bench_seed_gpu.py" summary 2>&1 | tee -a "$SUMMARY"

# ---------------------------------------------------------------------------------------------
# 3. the tests that run on the real GPU.
#    tests/test_cuda_sim.py, test_cuda_conv_sim.py and test_model_cuda_sim.py always re-run
#    themselves in a child with NUMBA_ENABLE_CUDASIM=1, so they never touch the GPU (minutes of
#    CPU: left out). test_cuda_ptx.py is compile-only (no GPU). What does use the device is the
#    backend-parametrized tests, whose backend list is whatever kernels.get() loads here:
#    test_opinfo.py (the quick op table against the reference, error inputs and out= buffers:
#    odd shapes, ragged blocks, stride 2, 'same', the merge and global pooling ops),
#    test_globalpool.py (global pooling by hand), test_depthwise.py (the depthwise channel
#    order by hand), test_model_training.py[cuda] (loss curve vs
#    reference), test_model_alloc.py[cuda]
#    (no per-step allocations; its 4 KiB peak threshold was tuned on cpu and numba's launch path
#    allocates Python objects per launch, so a failure there needs reading, not panic).
#    Only the cuda parametrizations are run (plus test_cuda_errors.py, which needs no GPU and takes
#    seconds): their node ids are collected and passed explicitly rather than with `-k cuda`,
#    whose match against parent-node names would depend on what the checkout directory is called.
#    test_check.py is left out: its `--device all` case would also compile and check the cpu engine.
# ---------------------------------------------------------------------------------------------
PT_FILES=(tests/test_opinfo.py tests/test_globalpool.py tests/test_depthwise.py tests/test_model_training.py
          tests/test_model_alloc.py tests/test_cuda_errors.py)
mapfile -t CUDA_TESTS < <(timeout 60 "$PY" -m pytest --collect-only -q -p no:cacheprovider \
    "${PT_FILES[@]}" 2>>"$PYTESTLOG" | grep -E '(\[[^]]*cuda\]$|^tests/test_cuda_errors\.py::)')
say "[pytest] ${#CUDA_TESTS[@]} tests selected (cuda parametrizations + test_cuda_errors.py)"
PT_TIMEOUT=()
"$PY" -c "import pytest_timeout" 2>/dev/null && PT_TIMEOUT=(--timeout=100)
if (( ${#CUDA_TESTS[@]} > 0 )); then
    timebox pytest 115 "$PY" -m pytest -q -rfE -p no:cacheprovider ${PT_TIMEOUT[@]+"${PT_TIMEOUT[@]}"} \
        "${CUDA_TESTS[@]}" >>"$PYTESTLOG" 2>&1
    { grep -E "^(FAILED|ERROR) " "$PYTESTLOG" | head -15; tail -n 1 "$PYTESTLOG"; } \
        | sed 's/^/  /' | tee -a "$SUMMARY"
else
    say "[pytest] nothing collected: see 02_pytest.log"
fi

# ---------------------------------------------------------------------------------------------
# 4. compute-sanitizer: shared-memory races (racecheck) and out-of-bounds accesses (memcheck) on
#    small ragged shapes with the real tiles: fused conv fwd+bwd (2 channel blocks, ragged pixel
#    blocks, 2 k-tiles of dw), a strided 'same' conv, dense, pool, losses, an optimizer update,
#    the merge ops, global pooling (odd channels: ragged channel tiles and pixel lanes), the
#    depthwise conv (M = 2, stride 2 'same': taps past the bottom/right edge) and batch
#    normalization (C = 37: a ragged channel tile; NHWC and (N, C), several row chunks).
# ---------------------------------------------------------------------------------------------
cat >"$WORK/sanitize_case.py" <<'EOF'
import numpy as np
from fastconv import kernels
K = kernels.get("cuda")
rng = np.random.default_rng(0)
f32 = lambda a: np.ascontiguousarray(a, np.float32)
x = K.to_device(f32(rng.standard_normal((2, 11, 13, 5))))
w = K.to_device(f32(rng.standard_normal((3, 3, 5, 33)) * 0.3))
b = K.to_device(f32(rng.standard_normal(33) * 0.1))
y, arg = K.conv2d_relu_maxpool_forward(x, w, b, pool=2)
dy = K.to_device(f32(rng.standard_normal(tuple(y.shape))))
K.conv2d_relu_maxpool_backward(x, w, dy, y, arg, need_dx=True)
y2 = K.conv2d_forward(x, w, b, stride=2, padding="same")
K.conv2d_backward(x, w, K.to_device(f32(rng.standard_normal(tuple(y2.shape)))), stride=2, padding="same")
xd = K.to_device(f32(rng.standard_normal((3, 70))))
wd = K.to_device(f32(rng.standard_normal((70, 65)) * 0.1))
bd = K.to_device(f32(rng.standard_normal(65)))
yd = K.dense_forward(xd, wd, bd)
K.dense_backward(xd, wd, K.to_device(f32(rng.standard_normal((3, 65)))))
p, pa = K.maxpool2d_forward(x, pool=3, stride=2, padding="same")
K.maxpool2d_backward(K.to_device(f32(rng.standard_normal(tuple(p.shape)))), pa, tuple(x.shape))
K.softmax_forward(K.to_device(f32(rng.standard_normal((3, 77)))))
loss, _ = K.binary_crossentropy(f32(rng.random((70, 1)) > 0.5), f32(rng.standard_normal((70, 1))))
g = K.to_device(f32(rng.standard_normal(1001)))
K.rmsprop_update(K.to_device(f32(rng.standard_normal(1001))), g, K.to_device(f32(np.abs(rng.standard_normal(1001)))), 1e-3)
xg = K.to_device(f32(rng.standard_normal((3, 9, 7, 37))))
K.global_avgpool2d_forward(xg)
K.global_avgpool2d_backward(K.to_device(f32(rng.standard_normal((3, 37)))), (3, 9, 7, 37))
gy, ga = K.global_maxpool2d_forward(xg)
K.global_maxpool2d_backward(K.to_device(f32(rng.standard_normal((3, 37)))), ga, (3, 9, 7, 37))
xm = K.concat_forward([xg, K.to_device(f32(rng.standard_normal((3, 9, 7, 5))))])
K.concat_backward(xm, (37, 5))
K.accumulate_grad(xg, K.add_forward([xg, xg, xg]))
wdw = K.to_device(f32(rng.standard_normal((3, 3, 37, 2))))
ydw = K.depthwise_conv2d_forward(xg, wdw, K.to_device(f32(rng.standard_normal(74))), stride=2, padding="same")
K.depthwise_conv2d_backward(xg, wdw, K.to_device(f32(rng.standard_normal(tuple(ydw.shape)))), stride=2, padding="same")
for xb in (xg, K.to_device(f32(rng.standard_normal((300, 37))))):
    gb, bb = K.to_device(f32(rng.standard_normal(37))), K.to_device(f32(rng.standard_normal(37)))
    yb, mb, vb = K.batchnorm_train_forward(xb, gb, bb)
    K.batchnorm_backward(K.to_device(f32(rng.standard_normal(tuple(xb.shape)))), xb, gb, mb, vb)
    K.batchnorm_infer_forward(xb, gb, bb, mb, vb)
    K.batchnorm_moving_update(K.to_device(f32(np.zeros(37))), K.to_device(f32(np.ones(37))), mb, vb)
K.synchronize()
print("SANITIZE_CASE_OK loss", loss)
EOF
SAN="$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)"
if [[ -n "$SAN" ]]; then
    for tool in racecheck memcheck; do
        timebox "sanitizer-$tool" 45 "$SAN" --tool "$tool" --print-limit 30 "$PY" \
            "$WORK/sanitize_case.py" >"$WORK/san_$tool.log" 2>&1
        { echo "### $tool"; cat "$WORK/san_$tool.log"; } >>"$SANLOG"
        { grep -E "ERROR SUMMARY|RACECHECK SUMMARY|SANITIZE_CASE_OK|Race reported|Invalid .* of size|Uninitialized" \
            "$WORK/san_$tool.log" | sort | uniq -c | sort -rn | head -n 5; } \
            | sed "s/^/  $tool: /" | tee -a "$SUMMARY"
    done
else
    say "[sanitizer] compute-sanitizer not found: skipped"
fi

# ---------------------------------------------------------------------------------------------
say "total: $(elapsed) s of a ${LIMIT} s budget; logs in $OUT: $(ls "$OUT" | tr '\n' ' ')"
rm -rf "$WORK"
echo; echo "################ summary ################"; cat "$SUMMARY"

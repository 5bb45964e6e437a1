"""fastconv against every CPU peer on the seed model, in one run: training step and
inference at batch 32 (images/s) and batch-1 latency (median ms).

    python bench/peers.py                        # all engines found, 3 rounds
    python bench/peers.py --engines fastconv-cpu,onnxruntime --rounds 5 --json peers.json

Engines (each timed in its own subprocess, rounds interleaved over the engines, the
best round kept; every process starts with the glibc malloc settings that keep large
buffers mapped, bench/seed_step.TUNED_MALLOC, the peers' best case):
    fastconv-cpu          small_convnet on the cpu backend (train_on_batch, predict_on_batch)
    torch-channels_last   PyTorch, the seed network channels-last (bench/seed_step.TorchRunner)
    tf-keras              TensorFlow + Keras 3 (oneDNN): train_on_batch, a tf.function forward
    onnxruntime           ONNX Runtime, the model exported by fastconv (model.export_onnx, NCHW
                          input: the layout it runs natively), all graph optimisations on
    openvino              OpenVINO on the same ONNX file, fp32 forced (INFERENCE_PRECISION_HINT
                          f32); the precision it would have picked by itself is printed
Peers are benchmark peers only, never fastconv dependencies; an engine whose package is
missing is left out with a note. Install them in a venv of their own beside fastconv:
    pip install -e . torch==2.13.0 tensorflow-cpu onnxruntime openvino

Peak: an sgemm (2048^3, float32) timed in its own process with NumPy's BLAS and, when
torch is there, torch.mm (MKL); the faster is the machine's measured peak, and the
GFLOP/s columns are against it. FLOPs per image: bench/seed_step.flops_per_image.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from bench import seed_step  # noqa: E402
from bench.seed_step import BATCH, FastconvRunner, TorchRunner, seed_batch, time_calls  # noqa: E402

ENGINES = ("fastconv-cpu", "torch-channels_last", "tf-keras", "onnxruntime", "openvino")
NEEDS = {"torch-channels_last": "torch", "tf-keras": "tensorflow", "onnxruntime": "onnxruntime",
         "openvino": "openvino"}
THREADS = os.cpu_count() or 1


class TFRunner:
    """The seed network in Keras 3 on TensorFlow: same layers and optimiser."""

    def __init__(self, n=BATCH):
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras
        from keras import layers
        keras.utils.set_random_seed(0)
        self.net = keras.Sequential([
            keras.Input((150, 150, 3)),
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(3),
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Flatten(), layers.Dense(64, activation="relu"), layers.Dropout(0.5),
            layers.Dense(1, activation="sigmoid")])
        self.net.compile(optimizer=keras.optimizers.RMSprop(1e-4), loss="binary_crossentropy")
        self.x, self.y = seed_batch(n)
        self.x1 = self.x[:1].copy()
        self.tx, self.tx1 = tf.constant(self.x), tf.constant(self.x1)
        self.forward = tf.function(lambda x: self.net(x, training=False), reduce_retracing=True)

    def train(self):
        return self.net.train_on_batch(self.x, self.y)

    def infer(self):
        return self.forward(self.tx).numpy()

    def infer1(self):
        return self.forward(self.tx1).numpy()


def _onnx_file(nchw):
    import fastconv
    model = fastconv.small_convnet(seed=0, compile=False)
    path = os.path.join(tempfile.mkdtemp(prefix="fastconv-peers-"), "seed.onnx")
    model.export_onnx(path, nchw=nchw)
    return path


class OrtRunner:
    def __init__(self, n=BATCH):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(_onnx_file(nchw=True), opts,
                                         providers=["CPUExecutionProvider"])
        x, _ = seed_batch(n)
        self.x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        self.x1 = self.x[:1].copy()

    def infer(self):
        return self.sess.run(None, {"input": self.x})[0]

    def infer1(self):
        return self.sess.run(None, {"input": self.x1})[0]


def _type_name(t):
    """'float32' for OpenVINO's <Type: 'float32'>."""
    name = getattr(t, "get_type_name", None)
    return name() if callable(name) else str(t)


class OpenVinoRunner:
    def __init__(self, n=BATCH):
        import openvino as ov
        core = ov.Core()
        path = _onnx_file(nchw=True)
        x, _ = seed_batch(n)
        self.x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        self.x1 = self.x[:1].copy()
        self.default_precision = _type_name(core.compile_model(core.read_model(path), "CPU")
                                            .get_property("INFERENCE_PRECISION_HINT"))
        f32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": THREADS}
        self.models = {}
        for batch, hint in ((n, "THROUGHPUT"), (1, "LATENCY")):
            m = core.read_model(path)
            m.reshape([batch, 3, 150, 150])
            compiled = core.compile_model(m, "CPU", dict(f32, PERFORMANCE_HINT=hint))
            self.models[batch] = compiled.create_infer_request()
        self.precision = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.n = n

    def infer(self):
        return self.models[self.n].infer({0: self.x})

    def infer1(self):
        return self.models[1].infer({0: self.x1})


class FastconvWithLatency(FastconvRunner):
    def __init__(self, n=BATCH):
        super().__init__("cpu", n)
        self.x1 = self.x[:1].copy()

    def infer1(self):
        return self.model.predict_on_batch(self.x1)


class TorchWithLatency(TorchRunner):
    def __init__(self, n=BATCH):
        super().__init__("channels_last", n, threads=THREADS)
        self.x1 = self.x[:1].contiguous(memory_format=self.torch.channels_last)

    def infer1(self):
        self.net.eval()
        with self.torch.inference_mode():
            return self.torch.sigmoid(self.net(self.x1))


RUNNERS = {"fastconv-cpu": FastconvWithLatency, "torch-channels_last": TorchWithLatency,
           "tf-keras": TFRunner, "onnxruntime": OrtRunner, "openvino": OpenVinoRunner}


def worker(engine, steps, latency_calls):
    runner = RUNNERS[engine]()
    result = {"engine": engine}
    if hasattr(runner, "train"):
        result["train_s"] = time_calls(runner.train, steps, warmup=2)
    result["infer_s"] = time_calls(runner.infer, steps, warmup=2)
    result["latency_s"] = time_calls(runner.infer1, latency_calls, warmup=5)
    for k in ("precision", "default_precision"):
        if hasattr(runner, k):
            result[k] = getattr(runner, k)
    print(json.dumps(result))


def peak_worker():
    """Best-of sgemm GFLOP/s: NumPy's BLAS, and torch.mm when torch is there."""
    n = 2048
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    flop = 2 * n ** 3
    out = {"numpy_sgemm": flop / min(time_calls(lambda: a @ a, 8, warmup=2)) / 1e9}
    try:
        import torch
        torch.set_num_threads(THREADS)
        t = torch.from_numpy(a)
        out["torch_sgemm"] = flop / min(time_calls(lambda: torch.mm(t, t), 8, warmup=2)) / 1e9
    except ImportError:
        pass
    print(json.dumps(out))


def _run(args):
    env = dict(os.environ, **seed_step.TUNED_MALLOC)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)] + args, env=env,
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available(engine):
    if engine not in NEEDS:
        return True
    try:
        __import__(NEEDS[engine])
        return True
    except ImportError:
        return False


def table(results, peak):
    train_flop, fwd_flop = seed_step.flops_per_image()
    peak_gf = max(peak.values())
    lines = [f"seed model, batch {BATCH}, {THREADS} threads; {train_flop / 1e6:.1f} MFLOP per "
             f"image per training step, {fwd_flop / 1e6:.1f} forward; measured sgemm peak "
             f"{peak_gf:.0f} GFLOP/s (" + ", ".join(f"{k} {v:.0f}" for k, v in peak.items())
             + ")",
             f"{'engine':<22}{'train img/s':>12}{'GFLOP/s':>9}{'%peak':>7}"
             f"{'infer img/s':>13}{'GFLOP/s':>9}{'%peak':>7}{'b1 median ms':>14}{'b1 p10':>8}"]
    for r in results:
        row = f"{r['engine']:<22}"
        if "train_s" in r:
            ips = BATCH / min(r["train_s"])
            row += f"{ips:12.1f}{ips * train_flop / 1e9:9.1f}{100 * ips * train_flop / 1e9 / peak_gf:6.1f}%"
        else:
            row += f"{'-':>12}{'':>9}{'':>7}"
        ips = BATCH / min(r["infer_s"])
        lat = np.asarray(r["latency_s"]) * 1e3
        row += (f"{ips:13.1f}{ips * fwd_flop / 1e9:9.1f}{100 * ips * fwd_flop / 1e9 / peak_gf:6.1f}%"
                f"{np.median(lat):14.3f}{np.percentile(lat, 10):8.3f}")
        if "precision" in r:
            row += f"  (precision {r['precision']}; its default {r['default_precision']})"
        lines.append(row)
    ours = next((r for r in results if r["engine"] == "fastconv-cpu"), None)
    if ours:
        for r in results:
            if r is ours:
                continue
            parts = []
            for key, label in (("train_s", "train"), ("infer_s", "infer")):
                if key in r:
                    parts.append(f"{label} {min(r[key]) / min(ours[key]):.2f}x")
            parts.append(f"batch-1 latency {np.median(r['latency_s']) / np.median(ours['latency_s']):.2f}x")
            lines.append(f"fastconv vs {r['engine']}: " + ", ".join(parts)
                         + " (>1: fastconv faster)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--steps", type=int, default=10, help="timed batch-32 calls (best of)")
    ap.add_argument("--latency-calls", type=int, default=200, help="timed batch-1 calls (median)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--peak-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peak_worker:
        peak_worker()
        return 0
    if args.worker:
        worker(args.worker, args.steps, args.latency_calls)
        return 0
    engines = []
    for e in args.engines.split(","):
        if e not in RUNNERS:
            ap.error(f"unknown engine {e!r}; choose from {', '.join(ENGINES)}")
        if available(e):
            engines.append(e)
        else:
            print(f"{e}: {NEEDS[e]} is not installed, left out", file=sys.stderr)
    peak = _run(["--peak-worker"])
    best = {}
    for k in range(args.rounds):
        for e in engines:
            r = _run(["--worker", e, "--steps", str(args.steps),
                      "--latency-calls", str(args.latency_calls)])
            if e in best:       # pool the rounds: min for throughput, median over all calls
                for key in ("train_s", "infer_s", "latency_s"):
                    if key in r:
                        best[e][key] += r[key]
            else:
                best[e] = r
            print(f"  round {k + 1}: {e}", file=sys.stderr)
    results = [best[e] for e in engines]
    print(table(results, peak))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"peak": peak, "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

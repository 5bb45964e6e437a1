"""fastconv against every CPU peer on one model, in one run: training step and
inference at batch 32 (images/s) and batch-1 latency (median ms).

    python bench/peers.py                        # the seed model, all engines found, 3 rounds
    python bench/peers.py --engines fastconv-cpu,onnxruntime --rounds 5 --json peers.json
    python bench/peers.py --model xception --image-size 180   # keras.io's xception (issue 15)

Models: `seed` (small_convnet, 150x150x3, RMSprop) and `xception` (keras_io_xception,
--image-size, default 180, --width 1.0, Adam 3e-4 as the keras.io example; the peers'
versions are written layer for layer below).

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
GFLOP/s columns are against it. FLOPs per image (model_flops): the forward's
multiply-adds x 2 of every conv, depthwise, separable and dense layer, read off the
fastconv model; a training step counts the forward three times less the first layer's
input gradient (bench/seed_step.flops_per_image's rule).
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
from bench.seed_step import BATCH, time_calls  # noqa: E402

ENGINES = ("fastconv-cpu", "torch-channels_last", "tf-keras", "onnxruntime", "openvino")
NEEDS = {"torch-channels_last": "torch", "tf-keras": "tensorflow", "onnxruntime": "onnxruntime",
         "openvino": "openvino"}
MODELS = ("seed", "xception")
THREADS = os.cpu_count() or 1


class Spec:
    """The benchmarked model: name, image size, xception width, batch."""

    def __init__(self, model="seed", image_size=None, width=1.0, batch=BATCH):
        self.model, self.width, self.batch = model, width, batch
        self.size = image_size or (150 if model == "seed" else 180)

    def args(self):
        return ["--model", self.model, "--image-size", str(self.size), "--width",
                str(self.width), "--batch", str(self.batch)]

    def data(self, n=None):
        rng = np.random.default_rng(0)
        n = n or self.batch
        x = rng.random((n, self.size, self.size, 3), dtype=np.float32)
        y = (rng.random(n) > 0.5).astype(np.float32)
        return x, y

    def fastconv_model(self, device="cpu", compile=True):
        import fastconv
        if self.model == "seed":
            return fastconv.small_convnet(input_shape=(self.size, self.size, 3), device=device,
                                          seed=0, compile=compile)
        return fastconv.models.keras_io_xception((self.size, self.size, 3), width=self.width,
                                                 rescale=1.0, device=device, seed=0,
                                                 compile=compile)


def model_flops(spec):
    """(training step, forward) FLOPs per image: 2 x the multiply-adds of every conv,
    depthwise, separable and dense layer of the fastconv model."""
    from fastconv import layers as L
    model = spec.fastconv_model(device="reference", compile=False)
    per_layer = []
    for layer in model.layers:
        if isinstance(layer, L.InputLayer):
            continue
        out = layer.output_shape
        if isinstance(layer, L.Dense):
            per_layer.append(2 * layer.input_shape[1] * layer.units)
        elif isinstance(layer, (L.Conv2D, L.DepthwiseConv2D)):
            kh, kw = layer.kernel_size
            c = layer.input_shape[3]
            pix = out[1] * out[2]
            if isinstance(layer, L.SeparableConv2D):
                m = layer.depth_multiplier
                per_layer.append(2 * pix * (kh * kw * c * m + c * m * layer.filters))
            elif isinstance(layer, L.DepthwiseConv2D):
                per_layer.append(2 * pix * kh * kw * c * layer.depth_multiplier)
            else:
                per_layer.append(2 * pix * kh * kw * c * layer.filters)
    forward = sum(per_layer)
    return 3 * forward - per_layer[0], forward


# ----------------------------------------------------------------------- engines

class FastconvRunner:
    def __init__(self, spec):
        self.model = spec.fastconv_model()
        self.x, self.y = spec.data()
        self.x1 = self.x[:1].copy()

    def train(self):
        return self.model.train_on_batch(self.x, self.y)

    def infer(self):
        return self.model.predict_on_batch(self.x)

    def infer1(self):
        return self.model.predict_on_batch(self.x1)


def _torch_xception(width):
    from torch import nn

    def f(n):
        return max(1, int(round(n * width)))

    def sep(c, o):
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                             nn.Conv2d(c, o, 1))

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.entry = nn.Sequential(nn.Conv2d(3, f(128), 3, stride=2, padding=1),
                                       bn(f(128)), nn.ReLU())
            self.blocks, self.shortcuts = nn.ModuleList(), nn.ModuleList()
            c = f(128)
            for size in (256, 512, 728):
                o = f(size)
                self.blocks.append(nn.Sequential(
                    nn.ReLU(), sep(c, o), bn(o), nn.ReLU(), sep(o, o), bn(o),
                    nn.MaxPool2d(3, stride=2, padding=1)))
                self.shortcuts.append(nn.Conv2d(c, o, 1, stride=2))
                c = o
            self.exit = nn.Sequential(sep(c, f(1024)), bn(f(1024)), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.25),
                                      nn.Linear(f(1024), 1))

        def forward(self, x):
            x = self.entry(x)
            for block, short in zip(self.blocks, self.shortcuts):
                x = block(x) + short(x)
            return self.exit(x)
    return Net()


class TorchRunner:
    """PyTorch, channels-last: the seed network (bench/seed_step.TorchRunner's layers,
    RMSprop) or the keras.io xception (Adam 3e-4); BCE on logits."""

    def __init__(self, spec):
        import torch
        from torch import nn
        torch.set_num_threads(THREADS)
        torch.manual_seed(0)
        self.torch = torch
        if spec.model == "seed":
            base = seed_step.TorchRunner("nchw", 1, threads=THREADS).net
            self.net = base
            opt = lambda p: torch.optim.RMSprop(p, lr=1e-4, alpha=0.9, eps=1e-7)  # noqa: E731
        else:
            self.net = _torch_xception(spec.width)
            opt = lambda p: torch.optim.Adam(p, lr=3e-4, eps=1e-7)  # noqa: E731
        self.net = self.net.to(memory_format=torch.channels_last)
        x, y = spec.data()
        cl = torch.channels_last
        self.x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=cl)
        self.x1 = self.x[:1].contiguous(memory_format=cl)
        self.y = torch.from_numpy(y).reshape(-1, 1)
        self.opt = opt(self.net.parameters())
        self.loss = nn.BCEWithLogitsLoss()

    def train(self):
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.net(self.x), self.y)
        loss.backward()
        self.opt.step()
        return float(loss)

    def _infer(self, x):
        self.net.eval()
        with self.torch.inference_mode():
            return self.torch.sigmoid(self.net(x))

    def infer(self):
        return self._infer(self.x)

    def infer1(self):
        return self._infer(self.x1)


def _keras_model(spec, keras, layers):
    if spec.model == "seed":
        return keras.Sequential([
            keras.Input((spec.size, spec.size, 3)),
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(3),
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Flatten(), layers.Dense(64, activation="relu"), layers.Dropout(0.5),
            layers.Dense(1, activation="sigmoid")])

    def f(n):
        return max(1, int(round(n * spec.width)))
    inputs = keras.Input((spec.size, spec.size, 3))       # keras.io's make_model
    x = layers.Conv2D(f(128), 3, strides=2, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    previous = x
    for size in (256, 512, 728):
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(f(size), 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(f(size), 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.Conv2D(f(size), 1, strides=2, padding="same")(previous)
        x = layers.add([x, residual])
        previous = x
    x = layers.SeparableConv2D(f(1024), 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.25)(x)
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid")(x))


class TFRunner:
    """Keras 3 on TensorFlow (oneDNN): train_on_batch, and a tf.function forward."""

    def __init__(self, spec):
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras
        from keras import layers
        keras.utils.set_random_seed(0)
        self.net = _keras_model(spec, keras, layers)
        opt = keras.optimizers.RMSprop(1e-4) if spec.model == "seed" else \
            keras.optimizers.Adam(3e-4)
        self.net.compile(optimizer=opt, loss="binary_crossentropy")
        self.x, self.y = spec.data()
        self.tx, self.tx1 = tf.constant(self.x), tf.constant(self.x[:1])
        self.forward = tf.function(lambda x: self.net(x, training=False), reduce_retracing=True)

    def train(self):
        return self.net.train_on_batch(self.x, self.y)

    def infer(self):
        return self.forward(self.tx).numpy()

    def infer1(self):
        return self.forward(self.tx1).numpy()


def _onnx_file(spec):
    """The fastconv model exported by fastconv (NCHW input: what both runtimes run
    natively, their best case)."""
    path = os.path.join(tempfile.mkdtemp(prefix="fastconv-peers-"), "model.onnx")
    spec.fastconv_model(compile=False).export_onnx(path, nchw=True)
    return path


def _nchw(spec):
    x, _ = spec.data()
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x, x[:1].copy()


class OrtRunner:
    def __init__(self, spec):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(_onnx_file(spec), opts,
                                         providers=["CPUExecutionProvider"])
        self.x, self.x1 = _nchw(spec)

    def infer(self):
        return self.sess.run(None, {"input": self.x})[0]

    def infer1(self):
        return self.sess.run(None, {"input": self.x1})[0]


def _type_name(t):
    """'f32' for OpenVINO's <Type: 'float32'>."""
    name = getattr(t, "get_type_name", None)
    return name() if callable(name) else str(t)


class OpenVinoRunner:
    def __init__(self, spec):
        import openvino as ov
        core = ov.Core()
        path = _onnx_file(spec)
        self.x, self.x1 = _nchw(spec)
        self.default_precision = _type_name(core.compile_model(core.read_model(path), "CPU")
                                            .get_property("INFERENCE_PRECISION_HINT"))
        f32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": THREADS}
        self.requests = {}
        for batch, hint in ((spec.batch, "THROUGHPUT"), (1, "LATENCY")):
            m = core.read_model(path)
            m.reshape([batch, 3, spec.size, spec.size])
            compiled = core.compile_model(m, "CPU", dict(f32, PERFORMANCE_HINT=hint))
            self.requests[batch] = compiled.create_infer_request()
        self.precision = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.batch = spec.batch

    def infer(self):
        return self.requests[self.batch].infer({0: self.x})

    def infer1(self):
        return self.requests[1].infer({0: self.x1})


RUNNERS = {"fastconv-cpu": FastconvRunner, "torch-channels_last": TorchRunner,
           "tf-keras": TFRunner, "onnxruntime": OrtRunner, "openvino": OpenVinoRunner}


def worker(engine, spec, steps, latency_calls):
    runner = RUNNERS[engine](spec)
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


def table(results, peak, spec):
    train_flop, fwd_flop = model_flops(spec)
    peak_gf = max(peak.values())
    b = spec.batch
    what = "the seed model" if spec.model == "seed" else f"keras.io xception width {spec.width:g}"
    lines = [f"{what}, {spec.size}x{spec.size}x3, batch {b}, {THREADS} threads; "
             f"{train_flop / 1e6:.1f} MFLOP per image per training step, {fwd_flop / 1e6:.1f} "
             f"forward; measured sgemm peak {peak_gf:.0f} GFLOP/s ("
             + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()) + ")",
             f"{'engine':<22}{'train img/s':>12}{'GFLOP/s':>9}{'%peak':>7}"
             f"{'infer img/s':>13}{'GFLOP/s':>9}{'%peak':>7}{'b1 median ms':>14}{'b1 p10':>8}"]
    for r in results:
        row = f"{r['engine']:<22}"
        if "train_s" in r:
            ips = b / min(r["train_s"])
            gf = ips * train_flop / 1e9
            row += f"{ips:12.1f}{gf:9.1f}{100 * gf / peak_gf:6.1f}%"
        else:
            row += f"{'-':>12}{'':>9}{'':>7}"
        ips = b / min(r["infer_s"])
        gf = ips * fwd_flop / 1e9
        lat = np.asarray(r["latency_s"]) * 1e3
        row += (f"{ips:13.1f}{gf:9.1f}{100 * gf / peak_gf:6.1f}%"
                f"{np.median(lat):14.3f}{np.percentile(lat, 10):8.3f}")
        if "precision" in r:
            row += f"  (precision {r['precision']}; its default {r['default_precision']})"
        lines.append(row)
    ours = next((r for r in results if r["engine"] == "fastconv-cpu"), None)
    if ours:
        for r in results:
            if r is ours:
                continue
            parts = [f"{label} {min(r[key]) / min(ours[key]):.2f}x"
                     for key, label in (("train_s", "train"), ("infer_s", "infer")) if key in r]
            parts.append(f"batch-1 latency "
                         f"{np.median(r['latency_s']) / np.median(ours['latency_s']):.2f}x")
            lines.append(f"fastconv vs {r['engine']}: " + ", ".join(parts)
                         + " (>1: fastconv faster)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--model", choices=MODELS, default="seed")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--width", type=float, default=1.0, help="xception width factor")
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--steps", type=int, default=10, help="timed batch calls (best of)")
    ap.add_argument("--latency-calls", type=int, default=200, help="timed batch-1 calls (median)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--peak-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    spec = Spec(args.model, args.image_size, args.width, args.batch)
    if args.peak_worker:
        peak_worker()
        return 0
    if args.worker:
        worker(args.worker, spec, args.steps, args.latency_calls)
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
            r = _run(["--worker", e, "--steps", str(args.steps), "--latency-calls",
                      str(args.latency_calls)] + spec.args())
            if e in best:       # pool the rounds: min for throughput, median over all calls
                for key in ("train_s", "infer_s", "latency_s"):
                    if key in r:
                        best[e][key] += r[key]
            else:
                best[e] = r
            print(f"  round {k + 1}: {e}", file=sys.stderr)
    results = [best[e] for e in engines]
    print(table(results, peak, spec))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"peak": peak, "spec": vars(spec), "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""BatchNormalization -> ReLU in training on the cpu backend at the keras.io xception's
largest BN shapes (batch 32): unfused (batchnorm_train_forward + relu_forward;
relu_backward + batchnorm_backward) against the fused pair (batchnorm_relu_*), one
thread, CPU time (time.process_time: the machine may be shared), interleaved rounds.

    NUMBA_NUM_THREADS=1 python bench/bn_relu.py [rounds]
"""
import sys, time
import numba
import numpy as np
from fastconv import kernels

numba.set_num_threads(1)
K = kernels.get("cpu")
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
for shape in ((32, 90, 90, 128), (32, 45, 45, 256)):
    rng = np.random.default_rng(0)
    c = shape[-1]
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    g = rng.standard_normal(c).astype(np.float32); b = rng.standard_normal(c).astype(np.float32)
    z, y, dz, dx = (np.empty(shape, np.float32) for _ in range(4))
    mean, var, dg, db = (np.empty(c, np.float32) for _ in range(4))

    def unfused_fwd():
        K.batchnorm_train_forward(x, g, b, out=(z, mean, var)); K.relu_forward(z, out=y)

    def unfused_bwd():
        K.relu_backward(dy, y, out=dz); K.batchnorm_backward(dz, x, g, mean, var, out=(dx, dg, db))

    def fused_fwd():
        K.batchnorm_relu_train_forward(x, g, b, out=(y, mean, var))

    def fused_bwd():
        K.batchnorm_relu_backward(dy, y, x, g, mean, var, out=(dx, dg, db))
    fns = dict(unfused_fwd=unfused_fwd, fused_fwd=fused_fwd, unfused_bwd=unfused_bwd,
               fused_bwd=fused_bwd)
    for f in fns.values():
        f()                                         # compile + warm
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t = time.process_time(); f(); times[k].append(time.process_time() - t)
    print(shape, {k: f"{1e3 * min(v):.1f}/{1e3 * np.median(v):.1f}" for k, v in times.items()},
          "ms min/median", flush=True)
    uf = min(times["unfused_fwd"]) + min(times["unfused_bwd"])
    fu = min(times["fused_fwd"]) + min(times["fused_bwd"])
    print(f"  fwd+bwd unfused {1e3*uf:.1f} ms, fused {1e3*fu:.1f} ms: {uf/fu:.2f}x", flush=True)

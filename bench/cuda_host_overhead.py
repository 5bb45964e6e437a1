"""Host (Python) time of the seed model's cuda training step with every kernel launch
stubbed to a no-op, per-call ops against pre-bound launches (issue 19).

    NUMBA_ENABLE_CUDASIM=1 python -m bench.cuda_host_overhead [--batch 32] [--rounds 7]

Runs under the CUDA simulator (no GPU needed; it sets NUMBA_ENABLE_CUDASIM itself when
run as a script): the plan's forward and backward run with FakeCUDAKernel.__call__
replaced by a counter, so what is timed is the Python around the launches: in
"per-call" mode each conv/dense step calls the public op (argument checks, out= checks,
views, grid and split, argument tuples); in "prebound" mode it replays the launch list
bound once per step (kernels/cuda/_bound.py). Interleaved rounds of process_time; the
median per step and per conv/dense launch is printed. The simulator's device arrays
are not numba's (a real DeviceNDArray.reshape costs more), and the launch itself
(numba's argument typing and the driver call) is stubbed out in both modes: on a GPU
the absolute numbers differ, the difference between the modes is what this shows.
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=30, help="training steps timed per round")
    args = ap.parse_args(argv)

    import numpy as np
    from numba.cuda.simulator import kernel as sim_kernel
    import fastconv

    model = fastconv.small_convnet(device="cuda", seed=0)
    plan = model._plan("train", args.batch)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch,) + tuple(model.input_shape[1:]), dtype=np.float32)
    y = (rng.random((args.batch, 1)) > 0.5).astype(np.float32)
    plan.load_slice(x, y, 0, args.batch)

    launches = [0]

    def stub(self, *a):
        if self._device or sim_kernel._kernel_context:
            return self.fn(*a)
        launches[0] += 1
    sim_kernel.FakeCUDAKernel.__call__ = stub

    bound = [s for s in plan.steps if hasattr(s, "call") and s.call.bindings is not None]
    bindings = {id(s): s.call.bindings for s in bound}

    def mode(prebound):
        for s in bound:
            s.call.bindings = bindings[id(s)] if prebound else None

    def step():
        plan.forward()
        plan.backward()

    per = {"per-call": [], "prebound": []}
    conv_dense = {"per-call": [], "prebound": []}
    counts = {}
    for name in per:                         # warm up: bind, fill the workspace cache
        mode(name == "prebound")
        step()
    for _ in range(args.rounds):
        for name in per:
            mode(name == "prebound")
            launches[0] = 0
            t0 = time.process_time()
            for _ in range(args.steps):
                step()
            per[name].append((time.process_time() - t0) / args.steps)
            counts[name] = launches[0] / args.steps
            t0 = time.process_time()
            for _ in range(args.steps):
                for s in bound:
                    s.forward()
                    s.backward()
            conv_dense[name].append((time.process_time() - t0) / args.steps)
    n_bound = sum(len(p.launches) for b in bindings.values() for p in b.programs.values())
    print(f"seed model, batch {args.batch}: {len(plan.steps)} plan steps, "
          f"{len(bound)} conv/dense steps ({n_bound} pre-bound launches), "
          f"{counts['prebound']:.0f} launches per training step (forward + backward)")
    for name in per:
        print(f"{name:9s} whole step {statistics.median(per[name]) * 1e3:7.3f} ms   "
              f"conv/dense steps only {statistics.median(conv_dense[name]) * 1e3:7.3f} ms  "
              f"({statistics.median(conv_dense[name]) * 1e6 / n_bound:5.1f} us per launch)"
              f"   rounds: {', '.join(f'{v * 1e3:.3f}' for v in per[name])}")


if __name__ == "__main__":
    main()

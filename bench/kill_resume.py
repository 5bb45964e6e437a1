"""kill -9 `fastconv train` at random moments, resume it each time, and check that the
run ends exactly as an uninterrupted one (issue 12, item 4).

    python bench/kill_resume.py --kills 50          # about a minute on 2 cores
    python bench/kill_resume.py --kills 5 --seed 3 --keep /tmp/kr

On a tiny data set (16 images of 32x32, the reference device, a fraction of a second
per epoch, so that a good share of the kills land in a save) it trains once
uninterrupted, then starts the same run afresh, SIGKILLs it after a random delay,
and repeats `--resume` + SIGKILL until --kills kills have been delivered; then it
resumes to the end. Every resume must succeed (exit 0, or be killed), and the final
model, checkpoint and validation losses must equal the uninterrupted run's bitwise.
tests/test_run_safety.py runs it with 3 kills.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

FLAGS = ["--image-size", "32", "--batch-size", "8", "--device", "reference", "--lr", "1e-3",
         "--no-augment", "--no-progress", "--seed", "1"]


class KillResumeFailure(AssertionError):
    """A resume was refused or failed, or the result differs from the uninterrupted run."""


def _train(data, out, epochs, *extra):
    return [sys.executable, "-m", "fastconv", "train", data, *FLAGS, "--epochs", str(epochs),
            "--out", out, *extra]


def _run_to_end(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stderr


def _start_and_kill(cmd, delay, wait_for_output):
    """Start `cmd`, SIGKILL it `delay` s later (counted from its first line of output
    when wait_for_output); (returncode, stderr, killed)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait_for_output:         # the fresh run has written its first checkpoint
        proc.stdout.readline()
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        proc.kill()
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err, killed


def _weights(path):
    import fastconv
    return fastconv.load_model(path, device="reference").get_weights()


def _same(a, b):
    import numpy as np
    wa, wb = _weights(a), _weights(b)
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


def kill_resume(workdir, kills, epochs=50, max_delay=0.8, seed=0, log=print):
    """Run the loop in `workdir`; returns the number of kills delivered. Raises
    KillResumeFailure when a resume fails or the end result differs."""
    from fastconv import data
    rng = random.Random(seed)
    root = os.path.join(workdir, "data")
    data.write_demo_data(root, train_per_class=8, validation_per_class=4, image_size=32,
                         seed=0)
    ref, run = os.path.join(workdir, "ref"), os.path.join(workdir, "run")
    os.mkdir(ref)
    os.mkdir(run)
    rc, err = _run_to_end(_train(root, os.path.join(ref, "m.fcm"), epochs))
    if rc != 0:
        raise KillResumeFailure(f"the uninterrupted run failed ({rc}): {err}")
    out = os.path.join(run, "m.fcm")
    rc, err, killed = _start_and_kill(_train(root, out, epochs), rng.uniform(0, max_delay),
                                      wait_for_output=True)
    delivered, finished = int(killed), not killed and rc == 0
    if not killed and rc != 0:
        raise KillResumeFailure(f"the first run failed ({rc}): {err}")
    while delivered < kills and not finished:
        rc, err, killed = _start_and_kill(_train(root, out, epochs, "--resume"),
                                          rng.uniform(0, max_delay), wait_for_output=False)
        if killed:
            delivered += 1
        elif rc == 0 or "has already trained" in err:  # done (killed just after its end)
            finished = True
        else:
            raise KillResumeFailure(f"resume after {delivered} kills failed ({rc}): {err}")
    if not finished:
        rc, err = _run_to_end(_train(root, out, epochs, "--resume"))
        if rc != 0 and "has already trained" not in err:
            raise KillResumeFailure(f"the last resume after {delivered} kills failed ({rc}): "
                                    f"{err}")
    for name in ("m.fcm", "m.fcm.ckpt"):
        if not _same(os.path.join(ref, name), os.path.join(run, name)):
            raise KillResumeFailure(f"after {delivered} kills {name} differs from the "
                                    f"uninterrupted run's")
    hist = [json.load(open(os.path.join(d, "history.json")))["history"] for d in (ref, run)]
    if hist[0]["val_loss"] != hist[1]["val_loss"]:
        raise KillResumeFailure(f"after {delivered} kills the history differs: "
                                f"{hist[0]['val_loss']} vs {hist[1]['val_loss']}")
    log(f"{delivered} kills, every resume succeeded, result bitwise equal to the "
        f"uninterrupted run")
    return delivered


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--epochs", type=int, default=0,
                   help="epochs of the run (default: enough for --kills)")
    p.add_argument("--max-delay", type=float, default=0.8,
                   help="a kill comes after a delay drawn from [0, this] seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", help="work in this (new) folder and keep it")
    args = p.parse_args(argv)
    epochs = args.epochs or 10 * args.kills + 20     # a resume gets through ~7 epochs
    if args.keep:
        os.makedirs(args.keep)
        work = args.keep
    else:
        work = tempfile.mkdtemp(prefix="kill-resume-")
    t0 = time.perf_counter()
    try:
        kill_resume(work, args.kills, epochs=epochs, max_delay=args.max_delay,
                    seed=args.seed)
    except KillResumeFailure as exc:
        print(f"FAIL: {exc} (files in {work})", file=sys.stderr)
        return 1
    print(f"{time.perf_counter() - t0:.1f} s")
    if not args.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

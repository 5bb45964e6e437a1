"""Pre-bound launches for the model plan's steps (issue 19: less host time per launch).

A public conv/dense op checks its arguments, makes views, works out its grid and split
and builds the argument tuples on every call. A plan step calls the same op on the same
buffers every step, so the step binds it once: `bind(name, *args, **kwargs)` runs the
op's `*_launches` function (the op's own checks and launch lists, not launched) and
keeps the result as a Program, a tuple of (kernel, (grid, block), argument tuple) that
replays with no checks, reshapes, grid or split computed. The Program holds the
buffers it was bound to; `Bindings` (one per plan step) re-binds when the step is
handed other buffers (the two upload slots of the first step, new weights) and keeps
the last few.
"""
from . import _launch, conv2d, dense, fused

# op name -> its launches function (the op's checks; returns (launches, result))
LAUNCHES = {
    "conv2d_forward": conv2d.conv2d_forward_launches,
    "conv2d_backward": conv2d.conv2d_backward_launches,
    "conv2d_relu_forward": fused.conv2d_relu_forward_launches,
    "conv2d_relu_backward": fused.conv2d_relu_backward_launches,
    "conv2d_relu_maxpool_forward": fused.conv2d_relu_maxpool_forward_launches,
    "conv2d_relu_maxpool_backward": fused.conv2d_relu_maxpool_backward_launches,
    "dense_forward": dense.dense_forward_launches,
    "dense_backward": dense.dense_backward_launches,
}
KEEP = 4        # programs kept per step (two upload slots, forward and backward each)


def _arrays(values):
    """The arrays among an op's arguments (out= tuples opened), in order."""
    found = []
    for v in values:
        if isinstance(v, (tuple, list)):
            found += _arrays(v)
        elif hasattr(v, "shape"):
            found.append(v)
    return found


class Program:
    """The launches of one op call on fixed buffers; calling it replays them."""

    __slots__ = ("launches", "buffers")

    def __init__(self, launches, buffers):
        self.launches = tuple(launches)
        self.buffers = buffers      # kept alive: the key compares their ids

    def __call__(self):
        _launch.run(self.launches)


def bind(name, *args, **kwargs):
    """A Program for K.<name>(*args, **kwargs) on device arrays (the op's checks run now)."""
    launches, _ = LAUNCHES[name](*args, **kwargs)
    return Program(launches, _arrays(args) + _arrays(kwargs.values()))


class Bindings:
    """One plan step's Programs, keyed by the op and the identity of its buffers."""

    __slots__ = ("programs",)

    def __init__(self):
        self.programs = {}

    def run(self, name, *args, **kwargs):
        """K.<name>(*args, **kwargs) as a pre-bound Program (bound on first use). The
        non-array arguments must be the same on every call with the same buffers (a plan
        step's stride, padding and need_dx are)."""
        key = (name,) + tuple(id(a) for a in _arrays(args)) + tuple(
            id(a) for a in _arrays(kwargs.values()))
        program = self.programs.get(key)
        if program is None:
            if len(self.programs) >= KEEP:
                self.programs.pop(next(iter(self.programs)))
            program = self.programs[key] = bind(name, *args, **kwargs)
        program()

"""The NumPy reference engine: the truth every other backend is checked against.

Written for clarity, computing in float64 internally and returning float32
(float64 inputs are accepted only inside `fastconv.kernels.float64_allowed()`,
for finite-difference checks). Ops return new arrays, or write into the
caller's buffers given as `out=` (see `_validate.deliver`); optimizer updates
work in place.
"""
import functools as _functools

from .. import _validate
from .._host import dropout_mask, empty, to_device, to_host, zeros  # noqa: F401
from . import activations as _activations
from . import batchnorm as _batchnorm
from . import conv2d as _conv2d
from . import dense as _dense
from . import depthwise as _depthwise
from . import fused as _fused
from . import globalpool as _globalpool
from . import losses as _losses
from . import merge as _merge
from . import pool as _pool
from . import rescale as _rescale
from .optimizers import (  # noqa: F401  (in place)
    adam_update, clip_by_norm, clip_by_value, regularize, rmsprop_update, sgd_update,
    sum_squares)

NAME = "reference"


def _with_out(fn):
    @_functools.wraps(fn)
    def op(*args, out=None, **kwargs):
        return _validate.deliver(fn.__name__, fn(*args, **kwargs), out)
    return op


for _module in (_activations, _batchnorm, _conv2d, _dense, _depthwise, _fused, _globalpool,
                _losses, _merge, _pool, _rescale):
    for _name in dir(_module):
        _fn = getattr(_module, _name)
        if (callable(_fn) and not _name.startswith("_")
                and getattr(_fn, "__module__", "") == _module.__name__):
            globals()[_name] = _with_out(_fn)

del _module, _name, _fn

from .batchnorm import batchnorm_moving_update  # noqa: E402,F401  (in place, no out=)
from .merge import accumulate_grad  # noqa: E402,F401  (in place, no out=)

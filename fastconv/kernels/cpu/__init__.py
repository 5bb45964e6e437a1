"""The Numba CPU-parallel engine: every op of the kernel contract (and the fused
conv layer ops) with the reference's names, arguments, errors and out=
convention, as `@njit(parallel=True, cache=True)` kernels over float32 NHWC
arrays. See docs/cpu.md for how it is built and how fast it is.

Each op writes the caller's `out=` buffers when given (no allocation for
C-contiguous buffers) or returns new arrays; optimizer updates work in place.
Results are bitwise identical with any number of Numba threads: no kernel
splits a sum across threads.
"""
from .._host import empty, to_device, to_host, zeros  # noqa: F401
from .activations import (  # noqa: F401
    dropout_backward, dropout_forward, relu_backward, relu_forward, sigmoid_backward,
    sigmoid_forward, softmax_backward, softmax_forward)
from .batchnorm import (  # noqa: F401
    batchnorm_backward, batchnorm_fold, batchnorm_infer_forward, batchnorm_moving_update,
    batchnorm_relu_backward, batchnorm_relu_train_forward, batchnorm_train_forward)
from .dense import dense_backward, dense_forward  # noqa: F401
from .globalpool import (  # noqa: F401
    global_avgpool2d_backward, global_avgpool2d_forward, global_maxpool2d_backward,
    global_maxpool2d_forward)
from .losses import binary_crossentropy, softmax_crossentropy  # noqa: F401
from .merge import accumulate_grad, add_forward, concat_backward, concat_forward  # noqa: F401
from .optimizers import (  # noqa: F401
    adam_update, clip_by_norm, clip_by_value, regularize, rmsprop_update, sgd_update,
    sum_squares)
from .pool import (  # noqa: F401
    avgpool2d_backward, avgpool2d_forward, maxpool2d_backward, maxpool2d_forward)
from .rescale import rescale_backward, rescale_forward  # noqa: F401

from .conv2d import conv2d_backward, conv2d_forward  # noqa: F401
from .depthwise import depthwise_conv2d_backward, depthwise_conv2d_forward  # noqa: F401
from .fused import (  # noqa: F401
    conv2d_relu_backward, conv2d_relu_forward, conv2d_relu_maxpool_backward,
    conv2d_relu_maxpool_forward)

NAME = "cpu"

# Ctrl-C inside a nogil kernel must reach the caller as KeyboardInterrupt, not as
# Numba's SystemError (fastconv/_interrupt.py): every public op is wrapped once here.
from .. import CONTRACT as _CONTRACT, FUSED as _FUSED, OPTIONAL as _OPTIONAL  # noqa: E402
from ..._interrupt import wrap_module_ops as _wrap_module_ops  # noqa: E402

_wrap_module_ops(globals(), _CONTRACT + _FUSED + _OPTIONAL)

"""The numba-cuda engine: every op of the kernel contract on an NVIDIA GPU.

Same names and meaning as fastconv.kernels.reference. Wrappers take numba
device arrays (host NumPy arrays are copied in, a convenience that costs a
copy per call), write into `out=` device buffers when given, choose grid and
block sizes and copy nothing back except the losses' scalar. The argument
checks and the out= convention are every backend's (fastconv/kernels/_validate.py;
_mem.py adds the device's part). empty/zeros/to_device/to_host/synchronize move
buffers for the model layer.

Importing this package needs numba-cuda but no GPU: kernels compile on first
launch. Use `fastconv.kernels.get("cuda")`, which refuses clearly without a
driver and device (unless NUMBA_ENABLE_CUDASIM=1, the simulator, for tests).
Each kernel module lists its kernels in KERNELS (see _spec.py) for the PTX
checks (tests/test_cuda_ptx.py) and `python -m fastconv.kernels.cuda.report`.
"""
from ._mem import empty, synchronize, to_device, to_host, zeros  # noqa: F401
from .activations import (  # noqa: F401
    dropout_backward, dropout_forward, relu_backward, relu_forward, sigmoid_backward,
    sigmoid_forward, softmax_backward, softmax_forward)
from .losses import binary_crossentropy, softmax_crossentropy  # noqa: F401
from .optimizers import (  # noqa: F401
    adam_update, clip_by_norm, clip_by_value, regularize, rmsprop_update, sgd_update,
    sum_squares)
from .pool import (  # noqa: F401
    avgpool2d_backward, avgpool2d_forward, maxpool2d_backward, maxpool2d_forward)
from .rescale import rescale_backward, rescale_forward  # noqa: F401
from .batchnorm import (  # noqa: F401
    batchnorm_backward, batchnorm_fold, batchnorm_infer_forward, batchnorm_moving_update,
    batchnorm_relu_backward, batchnorm_relu_train_forward, batchnorm_train_forward)
from .conv2d import conv2d_backward, conv2d_forward  # noqa: F401
from .depthwise import depthwise_conv2d_backward, depthwise_conv2d_forward  # noqa: F401
from .dense import dense_backward, dense_forward  # noqa: F401
from .fused import (  # noqa: F401
    conv2d_relu_backward, conv2d_relu_forward, conv2d_relu_maxpool_backward,
    conv2d_relu_maxpool_forward)
from .merge import accumulate_grad, add_forward, concat_backward, concat_forward  # noqa: F401
from .globalpool import (  # noqa: F401
    global_avgpool2d_backward, global_avgpool2d_forward, global_maxpool2d_backward,
    global_maxpool2d_forward)

NAME = "cuda"

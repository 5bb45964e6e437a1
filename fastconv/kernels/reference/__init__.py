"""The NumPy reference engine: the truth every other backend is checked against.

Written for clarity, computing in float64 internally and returning float32
(float64 inputs are accepted only inside `fastconv.kernels.float64_allowed()`,
for finite-difference checks). Ops return new arrays; optimizer updates work
in place.
"""
from .activations import (dropout_backward, dropout_forward, relu_backward, relu_forward,
                          sigmoid_backward, sigmoid_forward, softmax_backward, softmax_forward)
from .conv2d import conv2d_backward, conv2d_forward
from .dense import dense_backward, dense_forward
from .losses import binary_crossentropy, softmax_crossentropy
from .optimizers import adam_update, rmsprop_update, sgd_update
from .pool import maxpool2d_backward, maxpool2d_forward

NAME = "reference"

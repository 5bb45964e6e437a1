"""Kernel backends. One module per backend, the same op names in each.

    from fastconv import kernels
    K = kernels.get("cpu")          # or "reference", "cuda"
    y = K.conv2d_forward(x, w, b, stride=1, padding="same")

CONTRACT lists the ops every backend exports, with the reference's meaning
(see fastconv/kernels/reference and docs/contract.md): the seed model's ops, then the
groups that every backend has since gained (MERGE: add, concat; GLOBALPOOL: global
pooling; RESCALE: Rescaling; BATCHNORM: BatchNormalization; DEPTHWISE: depthwise
convolution; AVGPOOL: average pooling), which get() requires like the rest. FUSED_KINDS
lists the fused layer ops a backend may add, and fuses(backend, kind) whether it did;
OPTIONAL the ops not every backend exports yet (none today: a new op starts there until
all three have it).
"""
import importlib

from ._validate import float64_allowed

# The seed model's ops (the first contract).
SEED_OPS = (
    "conv2d_forward", "conv2d_backward",
    "maxpool2d_forward", "maxpool2d_backward",
    "dense_forward", "dense_backward",
    "relu_forward", "relu_backward",
    "sigmoid_forward", "sigmoid_backward",
    "softmax_forward", "softmax_backward",
    "dropout_forward", "dropout_backward",
    "binary_crossentropy", "softmax_crossentropy",
    "sgd_update", "rmsprop_update", "adam_update",
    "sum_squares", "clip_by_norm", "clip_by_value", "regularize",
)

# Fused layer ops (reference: the composition of the ops above), by the layer
# sequence they run as one step. A backend may leave a kind out; the model layer
# then composes the unfused ops. fuses() is the one test of whether it did.
FUSED_KINDS = {
    "conv2d_relu": ("conv2d_relu_forward", "conv2d_relu_backward"),
    "conv2d_relu_maxpool": ("conv2d_relu_maxpool_forward", "conv2d_relu_maxpool_backward"),
    # BatchNormalization -> ReLU in training (the plan folds BN into its conv in inference)
    "batchnorm_relu": ("batchnorm_relu_train_forward", "batchnorm_relu_backward"),
}
FUSED = tuple(name for names in FUSED_KINDS.values() for name in names)

# The ops added since, by group (names that tests and docs use); each is on every backend
# and part of CONTRACT. The merge ops of the Functional API (Keras Add, Concatenate):
MERGE = ("add_forward", "accumulate_grad", "concat_forward", "concat_backward")
# Keras GlobalAveragePooling2D / GlobalMaxPooling2D:
GLOBALPOOL = ("global_avgpool2d_forward", "global_avgpool2d_backward",
              "global_maxpool2d_forward", "global_maxpool2d_backward")
# Keras Rescaling (y = x * scale + offset) and BatchNormalization (training forward,
# backward, inference forward, the moving statistics' update, and its inference fold into
# the conv before it):
RESCALE = ("rescale_forward", "rescale_backward")
BATCHNORM = ("batchnorm_train_forward", "batchnorm_backward", "batchnorm_infer_forward",
             "batchnorm_moving_update", "batchnorm_fold")
# Keras DepthwiseConv2D (SeparableConv2D = this, then a 1x1 conv2d):
DEPTHWISE = ("depthwise_conv2d_forward", "depthwise_conv2d_backward")
# Keras AveragePooling2D (valid and same, the padding not counted).
AVGPOOL = ("avgpool2d_forward", "avgpool2d_backward")

CONTRACT = SEED_OPS + MERGE + GLOBALPOOL + RESCALE + BATCHNORM + DEPTHWISE + AVGPOOL

# Ops not every backend exports yet: kernels.get() does not ask for them, and the op
# table and tests skip a backend that lacks one. Empty since BatchNormalization reached
# cuda; a new op goes here until reference, cpu and cuda all have it, then joins CONTRACT.
OPTIONAL = ()

BACKENDS = ("reference", "cpu", "cuda")


class BackendUnavailable(RuntimeError):
    """A backend that exists but cannot run here; the message says why."""


def fuses(backend, kind):
    """True when the backend module `backend` exports both fused ops of `kind` (a key
    of FUSED_KINDS: 'conv2d_relu', 'conv2d_relu_maxpool' or 'batchnorm_relu'), so that
    layer sequence runs as one step."""
    return all(callable(getattr(backend, name, None)) for name in FUSED_KINDS[kind])


def _missing_ops(module):
    return [name for name in CONTRACT if not hasattr(module, name)]


def get(name):
    """The backend module called `name`: 'reference', 'cpu' or 'cuda'.

    Raises ValueError for an unknown name and BackendUnavailable (with the
    reason) for a backend that cannot load on this machine.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "cuda":
        _require_cuda()
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} cannot be imported: {exc}") from exc
    missing = _missing_ops(module)
    if missing:
        raise BackendUnavailable(
            f"backend {name!r} is not built yet: it lacks {', '.join(missing)}")
    return module


def cuda_unavailable_reason():
    """None when a real CUDA driver and device are usable, else why not."""
    try:
        from numba import cuda
    except ImportError as exc:  # numba-cuda not installed
        return f"numba-cuda is not installed ({exc}); install fastconv[cuda]"
    try:
        if cuda.is_available():
            return None
        return "no CUDA driver or no CUDA device found (numba.cuda.is_available() is False)"
    except Exception as exc:  # a broken driver raises rather than answering False
        return f"the CUDA driver failed to initialise: {exc}"


def _require_cuda():
    import os
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return  # the simulator stands in for a device (tests only)
    reason = cuda_unavailable_reason()
    if reason:
        raise BackendUnavailable(f"backend 'cuda' cannot run here: {reason}")

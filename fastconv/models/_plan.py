"""The execution plan of a Sequential model on one backend at one batch size.

Planning happens once per (mode, batch size):
  1. the layers become logical ops (a Conv2D/Dense with an activation is two ops);
  2. a final sigmoid/softmax is split off as the *head*: training and evaluation
     hand the logits before it to the loss kernel, prediction applies it;
  3. Conv2D -> ReLU -> MaxPooling2D and Conv2D -> ReLU become one fused step when the
     backend exports the fused ops (fastconv.kernels.fuses), else unfused steps (so do
     BatchNormalization -> ReLU in training; in inference on cpu BN folds into its conv);
  4. every step allocates its output, workspace (argmax, dropout mask) and, when
     training, input-gradient buffers once with the backend's empty(); Flatten and
     inference-time Dropout are views/aliases and cost nothing.
Each step then calls its kernels with out= buffers, so a steady-state step
allocates no arrays. Buffers, shape comments: N batch, H/W/C as in the layer.

On the cuda backend (device_kit) a plan also keeps the step's host traffic to one
copy: x and the labels are staged in pinned memory and uploaded together,
asynchronously, into one of two device slots (kernels/cuda/_mem.BatchStager; the
steps are re-pointed at the slot), dropout masks are drawn on the device from a seed
taken from the model's dropout generator, and fit accumulates the loss and accuracy
on the device (device_loss; see training.Trainer).
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from .. import layers as L
from ..layers import augmentation as A
from .._memory import download, upload


def device_kit(K):
    """The cuda engine's modules for the device-side step when K is the cuda backend, else
    None (reference, cpu and any other backend keep the host-side step, unchanged)."""
    if getattr(K, "NAME", None) != "cuda":
        return None
    import types
    from ..kernels.cuda import _bound, _mem, activations, losses, optimizers
    return types.SimpleNamespace(mem=_mem, activations=activations, losses=losses,
                                 optimizers=optimizers, bound=_bound)


class _Calls:
    """How a step calls its ops: K.<name>(...) on host backends; on cuda, pre-bound
    launch programs (kernels/cuda/_bound.py: the op's checks, views, grid and split once
    per set of buffers, then only the launches)."""

    __slots__ = ("K", "bindings")

    def __init__(self, K, prebind=True):
        kit = device_kit(K) if prebind else None
        self.K, self.bindings = K, kit.bound.Bindings() if kit is not None else None

    def __call__(self, name, *args, **kwargs):
        if self.bindings is None:
            getattr(self.K, name)(*args, **kwargs)
        else:
            self.bindings.run(name, *args, **kwargs)


class Op:
    """One logical operation: kind in conv, depthwise, sepconv, dense, pool, avgpool, act,
    flatten, dropout, global_avgpool, global_maxpool, rescale, batchnorm, add, concat,
    augment. inputs: the indices of the ops whose outputs it reads (-1: the model's
    input)."""

    __slots__ = ("kind", "layer", "act", "out_shape", "inputs")

    def __init__(self, kind, layer, act=None, out_shape=None, inputs=()):
        self.kind, self.layer, self.act = kind, layer, act
        self.out_shape = tuple(out_shape if out_shape is not None else layer.output_shape)
        self.inputs = tuple(inputs)

    def __repr__(self):
        return f"Op({self.kind}{'=' + self.act if self.act else ''}, {self.layer.name})"


_SIMPLE = ((L.MaxPooling2D, "pool"), (L.AveragePooling2D, "avgpool"),
           (L.Flatten, "flatten"),
           (L.GlobalAveragePooling2D, "global_avgpool"),
           (L.GlobalMaxPooling2D, "global_maxpool"), (L.Rescaling, "rescale"),
           (L.BatchNormalization, "batchnorm"), (L.Add, "add"), (L.Concatenate, "concat"),
           (A._Augmentation, "augment"))


def logical_ops(layers, inbound=None):
    """(ops, head): the model as ops in the layers' (topological) order, and its final
    sigmoid/softmax op (or None). inbound(layer) -> the layers it reads (a Functional
    graph; the InputLayer for the model input); None: a chain, each layer reads the one
    before (Sequential)."""
    ops = []
    out_of = {}                  # id(layer) -> the op index holding its output (-1: input)
    prev = -1
    for layer in layers:
        if isinstance(layer, L.InputLayer):
            out_of[id(layer)] = -1
            continue
        src = (prev,) if inbound is None else tuple(out_of[id(l)] for l in inbound(layer))

        def add(kind, act=None, inputs=None):
            ops.append(Op(kind, layer, act, inputs=src if inputs is None else inputs))
            return len(ops) - 1
        if isinstance(layer, (L.Conv2D, L.Dense, L.DepthwiseConv2D)):
            k = add("conv" if isinstance(layer, L.Conv2D) else "dense"
                    if isinstance(layer, L.Dense) else "sepconv"
                    if isinstance(layer, L.SeparableConv2D) else "depthwise")
            if layer.activation != "linear":
                k = add("act", layer.activation, inputs=(k,))
        elif isinstance(layer, L.Activation):
            k = add("act", layer.activation) if layer.activation != "linear" else src[0]
        elif isinstance(layer, L.Dropout):
            k = add("dropout") if layer.rate > 0 else src[0]
        else:
            kind = next((kind for cls, kind in _SIMPLE if isinstance(layer, cls)), None)
            if kind is None:
                raise TypeError(f"layer '{layer.name}' of type {type(layer).__name__} cannot "
                                f"be planned")
            k = add(kind)
        out_of[id(layer)] = prev = k
    head = None
    if ops and ops[-1].kind == "act" and ops[-1].act in ("sigmoid", "softmax"):
        head = ops.pop()
    return ops, head


# The ops a step kind calls beyond the seed model's (kernels.SEED_OPS): (forward,
# training-only). Every backend kernels.get() returns has them (kernels.CONTRACT); a
# module bound some other way may not, and require_ops refuses it at plan time.
LAYER_OPS = {
    "avgpool": (("avgpool2d_forward",), ("avgpool2d_backward",)),
    "global_avgpool": (("global_avgpool2d_forward",), ("global_avgpool2d_backward",)),
    "global_maxpool": (("global_maxpool2d_forward",), ("global_maxpool2d_backward",)),
    "rescale": (("rescale_forward",), ("rescale_backward",)),
    "batchnorm": (("batchnorm_infer_forward",),
                  ("batchnorm_train_forward", "batchnorm_backward", "batchnorm_moving_update")),
    "depthwise": (("depthwise_conv2d_forward",), ("depthwise_conv2d_backward",)),
    "sepconv": (("depthwise_conv2d_forward",), ("depthwise_conv2d_backward",)),
    "add": (("add_forward",), ()),
    "concat": (("concat_forward",), ("concat_backward",)),
}


def require_ops(ops, K, training):
    """Refuse, before any buffer is made, a model whose layers need an op backend K does
    not export (LAYER_OPS), naming the layer and the backend."""
    for op in ops:
        infer, train = LAYER_OPS.get(op.kind, ((), ()))
        missing = [name for name in infer + (train if training else ())
                   if not callable(getattr(K, name, None))]
        if missing:
            name = getattr(K, "NAME", str(K))
            raise kernels.BackendUnavailable(
                f"layer '{op.layer.name}' ({type(op.layer).__name__}) cannot run on backend "
                f"'{name}': it lacks the op{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} (not written for {name} yet); use device='cpu' or "
                f"'reference' for this model")


def describe(ops, K, training=False):
    """Human-readable step names after fusion (for tests and debugging)."""
    return [kind for kind, _, _ in _group(ops, K, bn_relu=training)]


def _group(ops, K, fold_bn=False, bn_relu=False):
    """[(step kind, [ops], input step indices (-1: the model input))] after fusion on
    backend K. conv -> relu (-> maxpool) fuse when they follow each other and each op's
    only consumer is the next (a tensor a second layer reads stays a step's output); a
    SeparableConv2D's relu fuses into its pointwise conv (conv2d_relu) on the same terms.
    fold_bn (inference on the cpu and cuda backends): a BatchNormalization that is the only reader
    of a Conv2D or SeparableConv2D folds into that conv's weights and bias (FoldedBN), so
    conv -> BN -> relu (-> maxpool) runs as one fused conv step; the group then holds the
    BN op after the conv. bn_relu (training): a BatchNormalization whose only reader is a
    relu fuses with it (batchnorm_relu, when K exports the pair) into one BatchNormStep."""
    consumers = [0] * len(ops)
    for op in ops:
        for i in op.inputs:
            if i >= 0:
                consumers[i] += 1

    def feeds(i, j):            # op j exists and reads only op i, op i's only consumer
        return j < len(ops) and ops[j].inputs == (i,) and consumers[i] == 1
    out, step_of, i = [], {-1: -1}, 0
    while i < len(ops):
        op = ops[i]
        group, kind = [op], (op.act if op.kind == "act" else op.kind)
        bn = (fold_bn and op.kind in ("conv", "sepconv") and feeds(i, i + 1)
              and ops[i + 1].kind == "batchnorm")
        e = i + 1 if bn else i          # the op whose output a fused relu would read
        if bn:
            group = ops[i:e + 1]
        if op.kind == "augment":
            # consecutive augmentation layers that fill alike: one warp per image
            j = i + 1
            while (feeds(j - 1, j) and ops[j].kind == "augment"
                   and A.fill_of([o.layer for o in ops[i:j + 1]]) is not None):
                j += 1
            group = ops[i:j]
        elif (op.kind == "conv" and feeds(e, e + 1) and ops[e + 1].kind == "act"
                and ops[e + 1].act == "relu"):
            if (feeds(e + 1, e + 2) and ops[e + 2].kind == "pool"
                    and kernels.fuses(K, "conv2d_relu_maxpool")):
                group, kind = ops[i:e + 3], "conv2d_relu_maxpool"
            elif kernels.fuses(K, "conv2d_relu"):
                group, kind = ops[i:e + 2], "conv2d_relu"
        elif (op.kind == "sepconv" and feeds(e, e + 1) and ops[e + 1].kind == "act"
              and ops[e + 1].act == "relu" and kernels.fuses(K, "conv2d_relu")):
            group, kind = ops[i:e + 2], "sepconv_relu"    # the pointwise conv + relu
        elif (bn_relu and op.kind == "batchnorm" and feeds(i, i + 1)
              and ops[i + 1].kind == "act" and ops[i + 1].act == "relu"
              and kernels.fuses(K, "batchnorm_relu")):
            group, kind = ops[i:i + 2], "batchnorm_relu"
        out.append((kind, group, tuple(step_of[j] for j in op.inputs)))
        i += len(group)
        step_of[i - 1] = len(out) - 1
    return out


class FoldedBN:
    """A BatchNormalization in inference folded into the conv before it: with s =
    gamma / sqrt(moving_variance + epsilon), kernel' = kernel * s (over the output
    channels, the last axis) and bias' = (bias - moving_mean) * s + beta, so that
    conv(x, kernel') + bias' is BN(conv(x, kernel) + bias). refresh() recomputes both
    from the layers' current weights with the backend's batchnorm_fold (on cuda one
    device launch) into buffers allocated here (a forward allocates nothing), so training
    or set_weights between predictions is seen; it costs one pass over the kernel, next
    to a forward's N * OH * OW passes."""

    def __init__(self, K, bn_layer, kernel, bias, channels):
        self.K, self.bn, self.kernel = K, bn_layer, kernel
        self.w = K.empty(tuple(kernel.shape))
        self.b = K.empty((channels,))
        const = {v: K.to_device(np.full(channels, v, np.float32)) for v in (0.0, 1.0)}
        self.bias = const[0.0] if bias is None else bias
        weights = dict(zip(bn_layer.weight_names, bn_layer._weights))
        self.args = (weights.get("gamma", const[1.0]), weights.get("beta", const[0.0]),
                     weights["moving_mean"], weights["moving_variance"])

    def refresh(self):
        self.K.batchnorm_fold(self.kernel, self.bias, *self.args, self.bn.epsilon,
                              out=(self.w, self.b))


# --------------------------------------------------------------------------- steps

class Step:
    """A planned step. forward() reads self.x and writes self.y; backward() reads
    self.dy and writes self.dx (None when no input gradient is needed) and the
    layer's gradient buffers."""

    layer = None            # the layer whose weights this step trains, if any
    alias = False           # y is x (or a view of it); dx is dy (or a view)
    grad_alias = False      # backward computes nothing: the input gradients are dy (views)

    def __init__(self, K, n, x, ops):
        self.K, self.n, self.x, self.ops = K, n, x, ops
        self.y = None
        self.dy = self.dx = None

    def out_shape(self):
        return (self.n,) + self.ops[-1].out_shape[1:]

    def bind_backward(self, dy, need_dx):
        self.dy = dy
        self.dx = self.K.empty(tuple(self.x.shape)) if need_dx else None
        return self.dx

    def bind_grads(self, dy, need):
        """Bind the output gradient dy; need[k]: whether input k needs a gradient. Returns
        [(gradient buffer of input k or None, owned)] where owned means a buffer this step
        alone writes (a second gradient of that tensor may be accumulated into it)."""
        dx = self.bind_backward(dy, need[0])
        return [(dx, not self.grad_alias)]

    def set_input(self, k, buf):
        """Read input k from buf (the cuda plan re-points the input readers per batch)."""
        self.x = buf

    def forward(self):
        raise NotImplementedError

    def backward(self):
        raise NotImplementedError


class ConvStep(Step):
    """conv2d (+ relu (+ maxpool)) in one call where fused."""

    def __init__(self, K, n, x, ops, kind, grads):
        super().__init__(K, n, x, ops)
        conv = ops[0].layer
        self.layer, self.kind = conv, kind
        self.w, self.b = conv._weights                        # (KH, KW, C, F), (F,)
        self.dw, self.db = grads
        self.conv_kw = {"stride": conv.strides, "padding": conv.padding}
        self.fold = None
        if len(ops) > 1 and ops[1].kind == "batchnorm":      # inference: _group(fold_bn)
            self.fold = FoldedBN(K, ops[1].layer, self.w, self.b, int(self.w.shape[3]))
            self.w, self.b = self.fold.w, self.fold.b
        self.y = K.empty(self.out_shape())                    # (N, OH, OW, F) or pooled
        self.argmax = None
        self.call = _Calls(K, prebind=self.fold is None)      # fold.w, fold.b: host arrays
        if kind == "conv2d_relu_maxpool":
            pool = ops[-1].layer
            self.pool_kw = {"pool": pool.pool_size, "pool_stride": pool.strides,
                            "pool_padding": pool.padding}
            self.argmax = K.empty(self.out_shape(), np.int32)  # (N, PH, PW, F) into (OH, OW)

    def forward(self):
        call, kind = self.call, self.kind
        if self.fold is not None:
            self.fold.refresh()
        if kind == "conv":
            call("conv2d_forward", self.x, self.w, self.b, out=self.y, **self.conv_kw)
        elif kind == "conv2d_relu":
            call("conv2d_relu_forward", self.x, self.w, self.b, out=self.y, **self.conv_kw)
        else:
            call("conv2d_relu_maxpool_forward", self.x, self.w, self.b,
                 out=(self.y, self.argmax), **self.conv_kw, **self.pool_kw)

    def backward(self):
        call, kind = self.call, self.kind
        out = (self.dx, self.dw, self.db)
        need_dx = self.dx is not None
        if kind == "conv":
            call("conv2d_backward", self.x, self.w, self.dy, need_dx=need_dx, out=out,
                 **self.conv_kw)
        elif kind == "conv2d_relu":
            call("conv2d_relu_backward", self.x, self.w, self.dy, self.y, need_dx=need_dx,
                 out=out, **self.conv_kw)
        else:
            call("conv2d_relu_maxpool_backward", self.x, self.w, self.dy, self.y, self.argmax,
                 need_dx=need_dx, out=out, **self.conv_kw)


class DenseStep(Step):
    def __init__(self, K, n, x, ops, grads):
        super().__init__(K, n, x, ops)
        self.layer = ops[0].layer
        self.w, self.b = self.layer._weights                  # (IN, OUT), (OUT,)
        self.dw, self.db = grads
        self.y = K.empty(self.out_shape())                    # (N, OUT)
        self.call = _Calls(K)

    def forward(self):
        self.call("dense_forward", self.x, self.w, self.b, out=self.y)

    def backward(self):
        self.call("dense_backward", self.x, self.w, self.dy, need_dx=self.dx is not None,
                  out=(self.dx, self.dw, self.db))


class DepthwiseStep(Step):
    """DepthwiseConv2D: depthwise_conv2d_forward/backward. Without use_bias the kernels get
    a constant zero bias (C*M,) and their bias gradient goes to a scratch buffer."""

    def __init__(self, K, n, x, ops, grads):
        super().__init__(K, n, x, ops)
        layer = self.layer = ops[0].layer
        self.kw = {"stride": layer.strides, "padding": layer.padding}
        weights = list(layer._weights)
        self.w = weights.pop(0)                               # (KH, KW, C, M)
        self.training = grads is not None
        grads = list(grads) if self.training else []
        self.dw = grads.pop(0) if self.training else None
        self._bias_and_grad(K, weights, grads, int(self.w.shape[2] * self.w.shape[3]))
        self.y = K.empty(self.out_shape())                    # (N, OH, OW, C*M)

    def _bias_and_grad(self, K, weights, grads, size):
        """self.b and self.db: the layer's bias and its gradient, or a zero constant and a
        scratch gradient (size,) without use_bias."""
        if weights:
            self.b = weights[0]
            self.db = grads[0] if self.training else None
        else:
            self.b = K.to_device(np.zeros(size, np.float32))
            self.db = K.empty((size,)) if self.training else None

    def forward(self):
        self.K.depthwise_conv2d_forward(self.x, self.w, self.b, out=self.y, **self.kw)

    def backward(self):
        self.K.depthwise_conv2d_backward(self.x, self.w, self.dy, need_dx=self.dx is not None,
                                         out=(self.dx, self.dw, self.db), **self.kw)


class SeparableStep(DepthwiseStep):
    """SeparableConv2D as Keras computes it: the depthwise convolution (strides, padding,
    no bias: a zero constant) into mid (N, OH, OW, C*M) (a view of the plan's shared
    scratch in inference, its own buffer in training, where backward reads it), then the
    pointwise 1x1 stride-1 conv2d with the layer's bias (when use_bias) into y
    (N, OH, OW, F), with the layer's relu fused into it (conv2d_relu_forward) when the
    plan grouped them (sepconv_relu).
    Backward: the pointwise conv2d(_relu)_backward (dmid: a view of the shared scratch),
    then the depthwise one (its bias gradient into scratch)."""

    def __init__(self, K, n, x, ops, grads, scratch):
        Step.__init__(self, K, n, x, ops)
        layer = self.layer = ops[0].layer
        self.kw = {"stride": layer.strides, "padding": layer.padding}
        weights = list(layer._weights)
        self.w, self.pw = weights.pop(0), weights.pop(0)      # (KH, KW, C, M), (1, 1, CM, F)
        self.relu = ops[-1].kind == "act"                     # sepconv_relu
        cm = int(self.pw.shape[2])
        self.training = grads is not None
        grads = list(grads) if self.training else []
        self.dw, self.dpw = (grads.pop(0), grads.pop(0)) if self.training else (None, None)
        self._bias_and_grad(K, weights, grads, int(self.pw.shape[3]))
        self.fold = None
        if len(ops) > 1 and ops[1].kind == "batchnorm":      # inference: _group(fold_bn)
            self.fold = FoldedBN(K, ops[1].layer, self.pw, self.b, int(self.pw.shape[3]))
            self.pw, self.b = self.fold.w, self.fold.b
        self.zero_b = K.to_device(np.zeros(cm, np.float32))   # (C*M,) the depthwise bias
        self.y = K.empty(self.out_shape())                    # (N, OH, OW, F)
        shape = self.out_shape()[:3] + (cm,)                  # (N, OH, OW, C*M)
        view = scratch[:int(np.prod(shape))].reshape(shape)
        if self.training:
            self.mid, self.dmid = K.empty(shape), view
            self.dzero_b = K.empty((cm,))                     # scratch
        else:
            self.mid = view

    def forward(self):
        K = self.K
        if self.fold is not None:
            self.fold.refresh()
        K.depthwise_conv2d_forward(self.x, self.w, self.zero_b, out=self.mid, **self.kw)
        pointwise = K.conv2d_relu_forward if self.relu else K.conv2d_forward
        pointwise(self.mid, self.pw, self.b, stride=1, padding="valid", out=self.y)

    def backward(self):
        K = self.K
        out = (self.dmid, self.dpw, self.db)
        if self.relu:
            K.conv2d_relu_backward(self.mid, self.pw, self.dy, self.y, stride=1,
                                   padding="valid", need_dx=True, out=out)
        else:
            K.conv2d_backward(self.mid, self.pw, self.dy, stride=1, padding="valid",
                              need_dx=True, out=out)
        K.depthwise_conv2d_backward(self.x, self.w, self.dmid, need_dx=self.dx is not None,
                                    out=(self.dx, self.dw, self.dzero_b), **self.kw)


class PoolStep(Step):
    def __init__(self, K, n, x, ops):
        super().__init__(K, n, x, ops)
        pool = ops[0].layer
        self.kw = {"pool": pool.pool_size, "stride": pool.strides, "padding": pool.padding}
        self.y = K.empty(self.out_shape())                    # (N, PH, PW, C)
        self.argmax = K.empty(self.out_shape(), np.int32)     # (N, PH, PW, C) into (H, W)
        self.x_shape = tuple(x.shape)

    def forward(self):
        self.K.maxpool2d_forward(self.x, out=(self.y, self.argmax), **self.kw)

    def backward(self):
        self.K.maxpool2d_backward(self.dy, self.argmax, self.x_shape, out=self.dx)


class AvgPoolStep(Step):
    """AveragePooling2D: x (N, H, W, C) -> y (N, PH, PW, C); no workspace (the backward
    needs only the geometry)."""

    def __init__(self, K, n, x, ops):
        super().__init__(K, n, x, ops)
        pool = ops[0].layer
        self.kw = {"pool": pool.pool_size, "stride": pool.strides, "padding": pool.padding}
        self.y = K.empty(self.out_shape())                    # (N, PH, PW, C)
        self.x_shape = tuple(x.shape)

    def forward(self):
        self.K.avgpool2d_forward(self.x, out=self.y, **self.kw)

    def backward(self):
        self.K.avgpool2d_backward(self.dy, self.x_shape, out=self.dx, **self.kw)


class ActStep(Step):
    def __init__(self, K, n, x, ops):
        super().__init__(K, n, x, ops)
        act = ops[0].act
        self.fwd = getattr(K, f"{act}_forward")
        self.bwd = getattr(K, f"{act}_backward")
        self.y = K.empty(tuple(x.shape))

    def forward(self):
        self.fwd(self.x, out=self.y)

    def backward(self):
        self.bwd(self.dy, self.y, out=self.dx)


class FlattenStep(Step):
    alias = grad_alias = True

    def __init__(self, K, n, x, ops):
        super().__init__(K, n, x, ops)
        self.y = x.reshape(self.out_shape())                  # a view: (N, H*W*C)

    def bind_backward(self, dy, need_dx):
        self.dy = dy
        self.dx = dy.reshape(tuple(self.x.shape)) if need_dx else None
        return self.dx

    def forward(self):
        pass

    def backward(self):
        pass


class DropoutStep(Step):
    """Training-time inverted dropout. The mask is drawn on the host into buffers
    allocated here (the same numbers as kernels.reference.dropout_mask for the same
    generator state), copied to the backend, and applied with dropout_backward
    (y = x * mask), so every host-side backend sees the same mask. On cuda the mask is
    drawn on the device instead (see __init__)."""

    def __init__(self, K, n, x, ops, rng, shard=None):
        super().__init__(K, n, x, ops)
        self.rate = ops[0].layer.rate
        self.rng = rng
        shape = tuple(x.shape)
        self.y = K.empty(shape)
        self.mask = K.empty(shape)                            # on the backend
        self.seeded = None
        kit = device_kit(K)
        if kit is not None:
            # cuda: the mask is drawn on the device from a 64-bit seed taken from the
            # model's dropout generator per step (reproducible run to run and across
            # save/resume, whose files keep the generator's state): no host draw, no
            # upload. These masks are not the cpu/reference backends' masks.
            self.seeded = kit.activations.dropout_forward_seeded
            # a rank's slice of a global batch (fastconv.distributed): the mask is drawn
            # for the whole batch (the hash of each element's place in it) and its rows
            # used, so the ranks' masks are the single-process one
            self.whole = None
            if shard is not None and shard[0] != n:
                total, first = shard
                whole = (total,) + shape[1:]
                self.whole = (K.zeros(whole), K.empty(whole), K.empty(whole))
                self.mask = self.whole[2][first:first + n]
            return
        # shard (total, first): this plan's batch is rows first..first+n of a global batch
        # of `total` (fastconv.distributed): the draws are the global batch's, this slice
        # of them used, so every rank draws what one process would and keeps its rows
        total, first = shard if shard is not None else (n, 0)
        self.u_all = np.empty((total,) + shape[1:], np.float64)    # uniform draws
        self.u = self.u_all[first:first + n]
        self.keep = np.empty(shape, np.bool_)
        self.mask_host = self.mask if isinstance(self.mask, np.ndarray) else np.empty(shape,
                                                                                    np.float32)
        # reference: (keep / (1 - rate)).astype(float32); kept entries all equal this value.
        # Writing it where keep is True avoids a bool->float cast (which buffers).
        self.kept = np.float32(1.0 / (1.0 - self.rate))

    def forward(self):
        if self.seeded is not None:
            seed = int(self.rng.integers(0, 2 ** 64, dtype=np.uint64))
            if self.whole is not None:
                zeros, y_all, mask_all = self.whole
                self.seeded(zeros, self.rate, seed, out=(y_all, mask_all))
                self.K.dropout_backward(self.x, self.mask, out=self.y)
                return
            self.seeded(self.x, self.rate, seed, out=(self.y, self.mask))
            return
        self.rng.random(out=self.u_all)
        np.greater_equal(self.u, self.rate, out=self.keep)
        self.mask_host.fill(0)
        np.copyto(self.mask_host, self.kept, where=self.keep)
        if self.mask_host is not self.mask:
            upload(self.mask_host, self.mask)
        self.K.dropout_backward(self.x, self.mask, out=self.y)

    def backward(self):
        self.K.dropout_backward(self.dy, self.mask, out=self.dx)


class AugmentStep(Step):
    """Training-time augmentation (RandomFlip, RandomRotation, RandomZoom,
    RandomTranslation; consecutive ones that fill alike in one step): each image warped
    once, on the host, by the composition of the layers' draws (layers.augmentation:
    augment_batch). On a device backend x is copied to host buffers allocated here and the
    result back. No gradient flows through it: a layer with weights before it refuses the
    training plan (bind_backward)."""

    def __init__(self, K, n, x, ops, rngs, shard=None):
        super().__init__(K, n, x, ops)
        self.layers = [op.layer for op in ops]
        self.rngs = rngs
        self.shard = shard          # (total, first): see DropoutStep
        shape = tuple(x.shape)
        self.y = K.empty(shape)                               # (N, H, W, C)
        self.matrix = np.empty((2, 3), np.float64)            # one image's map
        host = isinstance(self.y, np.ndarray)
        self.x_host = None if host else np.empty(shape, np.float32)
        self.y_host = self.y if host else np.empty(shape, np.float32)

    def bind_backward(self, dy, need_dx):
        if need_dx:
            layer = self.layers[0]
            raise L.LayerError(
                f"layer '{layer.name}' ({type(layer).__name__}) has a layer with weights "
                f"before it: fastconv passes no gradient through augmentation layers, so "
                f"they must come first (after the Input, a Rescaling or another "
                f"augmentation layer) in a model that trains")
        self.dy, self.dx = dy, None
        return None

    def forward(self):
        x = download(self.x, self.x_host) if self.x_host is not None else self.x
        total, first = self.shard if self.shard is not None else (x.shape[0], 0)
        A.augment_batch(self.layers, self.rngs, x, self.y_host, self.matrix, first, total)
        if self.y_host is not self.y:
            upload(self.y_host, self.y)

    def backward(self):
        pass


class GlobalPoolStep(Step):
    """Global average or max pooling: x (N, H, W, C) -> y (N, C)."""

    def __init__(self, K, n, x, ops):
        super().__init__(K, n, x, ops)
        self.is_max = ops[0].kind == "global_maxpool"
        self.x_shape = tuple(x.shape)
        self.y = K.empty(self.out_shape())                    # (N, C)
        self.argmax = K.empty(self.out_shape(), np.int32) if self.is_max else None

    def forward(self):
        if self.is_max:
            self.K.global_maxpool2d_forward(self.x, out=(self.y, self.argmax))
        else:
            self.K.global_avgpool2d_forward(self.x, out=self.y)

    def backward(self):
        if self.is_max:
            self.K.global_maxpool2d_backward(self.dy, self.argmax, self.x_shape, out=self.dx)
        else:
            self.K.global_avgpool2d_backward(self.dy, self.x_shape, out=self.dx)


class RescaleStep(Step):
    """y = x * scale + offset (Rescaling); dx = dy * scale."""

    def __init__(self, K, n, x, ops):
        super().__init__(K, n, x, ops)
        layer = ops[0].layer
        self.scale, self.offset = layer.scale, layer.offset
        self.y = K.empty(tuple(x.shape))

    def forward(self):
        self.K.rescale_forward(self.x, self.scale, self.offset, out=self.y)

    def backward(self):
        self.K.rescale_backward(self.dy, self.scale, out=self.dx)


class BatchNormStep(Step):
    """BatchNormalization over the channel axis. Training: the batch statistics (saved
    in mean/var (C,) for backward), and the moving statistics updated by
    update_moving(), which the plan calls after backward (so a step whose loss is not
    finite, which never runs backward, leaves them as they were). Inference: the moving
    statistics. A layer without scale/center gets a constant gamma of ones / beta of
    zeros here, and its unused gradient goes to a scratch buffer. Grouped with the relu
    that alone reads it (training, _group's batchnorm_relu), it runs the fused pair:
    y is the relu's output, and backward masks dy by y > 0 inside batchnorm's passes."""

    def __init__(self, K, n, x, ops, grads, training):
        super().__init__(K, n, x, ops)
        layer = ops[0].layer
        self.layer = layer if layer.trainable_weight_count() else None
        self.bn, self.training = layer, training
        self.relu = ops[-1].kind == "act"                   # batchnorm_relu (training)
        weights = list(layer._weights)
        c = tuple(x.shape)[-1]
        grads = list(grads) if training else []

        def const(value):
            return K.to_device(np.full(c, value, np.float32))
        self.gamma = weights.pop(0) if layer.scale else const(1.0)          # (C,)
        self.beta = weights.pop(0) if layer.center else const(0.0)          # (C,)
        self.moving_mean, self.moving_var = weights                         # (C,), (C,)
        self.y = K.empty(tuple(x.shape))
        if training:
            self.mean, self.var = K.empty((c,)), K.empty((c,))              # batch statistics
            self.dgamma = grads.pop(0) if layer.scale else K.empty((c,))
            self.dbeta = grads.pop(0) if layer.center else K.empty((c,))

    def forward(self):
        bn = self.bn
        if self.training:
            fwd = (self.K.batchnorm_relu_train_forward if self.relu
                   else self.K.batchnorm_train_forward)
            fwd(self.x, self.gamma, self.beta, bn.epsilon, out=(self.y, self.mean, self.var))
        else:
            self.K.batchnorm_infer_forward(self.x, self.gamma, self.beta, self.moving_mean,
                                           self.moving_var, bn.epsilon, out=self.y)

    def backward(self):
        kw = dict(need_dx=self.dx is not None, out=(self.dx, self.dgamma, self.dbeta))
        if self.relu:
            self.K.batchnorm_relu_backward(self.dy, self.y, self.x, self.gamma, self.mean,
                                           self.var, self.bn.epsilon, **kw)
        else:
            self.K.batchnorm_backward(self.dy, self.x, self.gamma, self.mean, self.var,
                                      self.bn.epsilon, **kw)

    def update_moving(self, guard=None):
        """The moving statistics' Keras update. guard (cuda's device-side step): the step
        accumulator, so the device skips the update once a step's loss is not finite."""
        if guard is None:
            self.K.batchnorm_moving_update(self.moving_mean, self.moving_var, self.mean,
                                           self.var, self.bn.momentum)
        else:
            self.K.batchnorm_moving_update(self.moving_mean, self.moving_var, self.mean,
                                           self.var, self.bn.momentum, guard=guard)


class AddStep(Step):
    """Add: y = x_0 + x_1 + ... (add_forward); every input's gradient is dy itself."""

    grad_alias = True

    def __init__(self, K, n, xs, ops):
        super().__init__(K, n, None, ops)
        self.xs = list(xs)
        self.y = K.empty(self.out_shape())

    def set_input(self, k, buf):
        self.xs[k] = buf

    def bind_grads(self, dy, need):
        self.dy = dy
        return [(dy if nd else None, False) for nd in need]

    def forward(self):
        self.K.add_forward(self.xs, out=self.y)

    def backward(self):
        pass


class ConcatStep(Step):
    """Concatenate over the channel axis (concat_forward); backward splits dy into one
    buffer per input (concat_backward writes them all, needed or not)."""

    def __init__(self, K, n, xs, ops):
        super().__init__(K, n, None, ops)
        self.xs = list(xs)
        self.channels = tuple(int(x.shape[-1]) for x in xs)
        self.y = K.empty(self.out_shape())                  # (..., sum C_k)

    def set_input(self, k, buf):
        self.xs[k] = buf

    def bind_grads(self, dy, need):
        self.dy = dy
        self.dxs = tuple(self.K.empty(tuple(x.shape)) for x in self.xs)
        return [(dx if nd else None, True) for dx, nd in zip(self.dxs, need)]

    def forward(self):
        self.K.concat_forward(self.xs, out=self.y)

    def backward(self):
        self.K.concat_backward(self.dy, self.channels, out=self.dxs)


class GradSumStep(Step):
    """The gradient of a tensor read by several steps: the others' gradients accumulated
    into one a step owns (accumulate_grad), or, when every one is a view of another
    buffer (Add's), summed into a buffer of its own (add_forward). Runs in backward,
    after every reader's backward and before the producer's."""

    def __init__(self, K, grads):
        self.K, self.ops = K, []
        owned = [g for g, own in grads if own]
        if owned:
            self.dst = owned[0]
            self.srcs = [g for g in (g for g, _ in grads) if g is not self.dst]
            self.sum = None
        else:
            self.dst = K.empty(tuple(grads[0][0].shape))
            self.srcs = [g for g, _ in grads]
            self.sum = self.srcs
        self.x = self.y = self.dy = self.dx = None

    def backward(self):
        if self.sum is not None:
            self.K.add_forward(self.sum, out=self.dst)
            return
        for src in self.srcs:
            self.K.accumulate_grad(self.dst, src)


def _label_spec(loss, n, out_shape):
    """(shape, dtype) of a batch's labels in the loss kernel's format: float32 (N, 1)
    like the logits for binary, int32 (N,) class indices else."""
    if loss.labels == "binary":
        return (n,) + tuple(out_shape[1:]), np.float32
    return (n,), np.int32


class Plan:
    """Steps and buffers for one mode ('train' or 'infer') and batch size n.

    x: the input buffer (N, H, W, C); logits: the last step's output; probs: the
    head's output (inference, when the model ends in sigmoid/softmax); labels and
    dlogits when the model is compiled.
    """

    def __init__(self, model, K, n, training, shard=None):
        self.K, self.n, self.training = K, n, training
        self.shard = shard
        ops, head = model._logical_ops()
        self.head = head
        in_shape = (n,) + tuple(model.input_shape[1:])
        self.kit = device_kit(K)
        self.stager = None
        if self.kit is not None:
            # x and the labels in one pinned, double-buffered upload (BatchStager)
            parts = [(in_shape, np.float32)]
            if model._loss is not None:
                parts.append(_label_spec(model._loss, n, model.output_shape))
                parts.append(((n,), np.float32))               # the sample weights
            self.stager = self.kit.mem.BatchStager(parts)
            views = self.stager.slots[0].dev_views
            self.x = views[0]
            self.x_host = self.stager.slots[0].host_views[0]
        else:
            self.x = K.empty(in_shape)
            self.x_host = self.x if isinstance(self.x, np.ndarray) else np.empty(in_shape,
                                                                                 np.float32)
        require_ops(ops, K, training)
        self.steps = []
        self.inputs = []            # per step: the steps whose outputs it reads (-1: x)
        ref = {-1: -1}              # group index -> the step holding its output (-1: x)
        # BatchNormalization folds into its conv in inference on the fast engines (cpu,
        # cuda: batchnorm_fold); the reference keeps the textbook composition (the oracle
        # the fast plans are tested against)
        fold = not training and getattr(K, "NAME", None) in ("cpu", "cuda")
        groups = _group(ops, K, fold_bn=fold, bn_relu=training)
        for g, (kind, group, inputs) in enumerate(groups):
            ins = tuple(ref[j] for j in inputs)
            if kind in ("dropout", "augment") and not training:
                ref[g] = ins[0]                                # identity at inference
                continue
            xs = [self.x if i < 0 else self.steps[i].y for i in ins]
            cur = xs[0]
            if kind in ("conv", "conv2d_relu", "conv2d_relu_maxpool"):
                step = ConvStep(K, n, cur, group, kind, model._grads_of(group[0].layer, K)
                                if training else (None, None))
            elif kind == "dense":
                step = DenseStep(K, n, cur, group, model._grads_of(group[0].layer, K)
                                 if training else (None, None))
            elif kind == "depthwise":
                step = DepthwiseStep(K, n, cur, group, model._grads_of(group[0].layer, K)
                                     if training else None)
            elif kind in ("sepconv", "sepconv_relu"):
                step = SeparableStep(K, n, cur, group, model._grads_of(group[0].layer, K)
                                     if training else None, self._separable_scratch(groups))
            elif kind == "pool":
                step = PoolStep(K, n, cur, group)
            elif kind == "avgpool":
                step = AvgPoolStep(K, n, cur, group)
            elif kind == "flatten":
                step = FlattenStep(K, n, cur, group)
            elif kind == "dropout":
                step = DropoutStep(K, n, cur, group, model._dropout_rng_of(group[0].layer),
                                   shard)
            elif kind == "augment":
                step = AugmentStep(K, n, cur, group,
                                   [model._dropout_rng_of(op.layer) for op in group], shard)
            elif kind in ("global_avgpool", "global_maxpool"):
                step = GlobalPoolStep(K, n, cur, group)
            elif kind == "rescale":
                step = RescaleStep(K, n, cur, group)
            elif kind in ("batchnorm", "batchnorm_relu"):
                step = BatchNormStep(K, n, cur, group, model._grads_of(group[0].layer, K)
                                     if training else (), training)
            elif kind == "add":
                step = AddStep(K, n, xs, group)
            elif kind == "concat":
                step = ConcatStep(K, n, xs, group)
            else:
                step = ActStep(K, n, cur, group)
            self.steps.append(step)
            self.inputs.append(ins)
            ref[g] = len(self.steps) - 1
        self.out_step = ref[len(groups) - 1] if groups else -1
        if not training:
            self._share_buffers()
        self.logits = self.x if self.out_step < 0 else self.steps[self.out_step].y  # (N, units)
        # what the cuda plan re-points per batch (_bind_input): (step, input slot, source
        # step or -1), the readers of x and of Flatten views of it, in step order
        self._rebind, viewing = [], {-1}
        for i, step in enumerate(self.steps):
            for k, j in enumerate(self.inputs[i]):
                if j in viewing:
                    self._rebind.append((step, k, j))
            if step.alias and self.inputs[i][0] in viewing:
                viewing.add(i)
        self.kinds = [type(s).__name__ if not isinstance(s, ConvStep) else s.kind
                      for s in self.steps]
        self.probs = None
        if head is not None and not training:
            self.head_fwd = getattr(K, f"{head.act}_forward")
            self.probs = K.empty(tuple(self.logits.shape))
        out = self.probs if self.probs is not None else self.logits
        self.out_host = out if isinstance(out, np.ndarray) else np.empty(tuple(out.shape),
                                                                       np.float32)
        self.logits_host = (self.logits if isinstance(self.logits, np.ndarray)
                            else np.empty(tuple(self.logits.shape), np.float32))
        self.loss = model._loss
        if self.loss is not None:
            self._plan_loss(K, n)
        self.backward_steps = []
        # steps whose layer updates its own state after backward (BatchNormalization's
        # moving statistics): every one, whether or not a gradient reaches it
        self.stat_steps = [s for s in self.steps if isinstance(s, BatchNormStep)] \
            if training else []
        if training:
            self._plan_backward()

    def _separable_scratch(self, groups):
        """One flat float32 buffer (the largest SeparableConv2D workspace of the plan,
        N*OH*OW*C*M) that every SeparableStep takes its scratch view from: mid in
        inference, dmid in training, each used within one step's forward or backward
        only. Made once, on the first call."""
        if getattr(self, "_sep_scratch", None) is None:
            sizes = [self.n * int(np.prod(group[0].out_shape[1:3]))
                     * int(group[0].layer._weights[1].shape[2])
                     for kind, group, _ in groups if kind in ("sepconv", "sepconv_relu")]
            self._sep_scratch = self.K.empty((max(sizes),))
        return self._sep_scratch

    def _share_buffers(self):
        """Inference: outputs whose lifetimes do not overlap share one buffer. Walking the
        steps in order, a step takes its output from the buffers (of its shape and dtype)
        whose last reader has run, never one of its own inputs; a Flatten view keeps its
        source alive while it is read. Training keeps every activation (backward reads
        them). The buffers the steps allocated and no longer hold are dropped here."""
        steps, root, last = self.steps, {-1: -1}, {}
        for i, step in enumerate(steps):
            root[i] = root[self.inputs[i][0]] if step.alias else i
            for j in self.inputs[i]:
                last[root[j]] = i
        last[root[self.out_step]] = len(steps)                 # the output outlives all
        free, shared = {}, 0
        for i, step in enumerate(steps):
            for k, j in enumerate(self.inputs[i]):
                step.set_input(k, self.x if j < 0 else steps[j].y)
            if step.alias:
                step.y = step.x.reshape(step.out_shape())
            else:
                pool = free.get((tuple(step.y.shape), str(step.y.dtype)))
                if pool:
                    step.y = pool.pop()
                    shared += 1
            for j in set(root[j] for j in self.inputs[i]):
                if j >= 0 and last[j] == i:
                    buf = steps[j].y
                    free.setdefault((tuple(buf.shape), str(buf.dtype)), []).append(buf)
        self.shared_buffers = shared

    def _plan_loss(self, K, n):
        shape = tuple(self.logits.shape)
        self.loss_fn = getattr(K, self.loss.kernel)
        self.dlogits = K.empty(shape)                           # (N, units)
        label_shape, label_dtype = _label_spec(self.loss, n, shape)
        if self.loss.labels == "binary":
            self.pred = np.empty(shape, np.bool_)
            self.truth = np.empty(shape, np.bool_)
        else:
            self.pred = np.empty((n,), np.intp)
            self.truth = None
        self.eq = np.empty(self.pred.shape, np.bool_)
        if self.stager is not None:                             # the staged slot's part
            self.labels = self.stager.slots[0].dev_views[1]
            self.labels_host = self.stager.slots[0].host_views[1]
            self.weights = self.stager.slots[0].dev_views[2]
        else:
            self.labels = K.empty(label_shape, label_dtype)
            self.labels_host = (self.labels if isinstance(self.labels, np.ndarray)
                                else np.empty(label_shape, label_dtype))
            self.weights = np.empty((n,), np.float32)           # (N,) sample weights
        # whether the batch loaded last carries sample weights (load_slice/load_take set
        # it each batch); without them the loss ops run unweighted, as before weights
        self.weighted = False
        self.loss_out = (None, self.dlogits)
        self.loss_kind = "binary" if self.loss.labels == "binary" else "sparse"

    def _plan_backward(self):
        """Bind every step's gradient buffers, last step first: a step needs backward when
        it or a step upstream of it trains a weight; a tensor read by several steps gets
        their gradients summed (GradSumStep) before its producer's backward."""
        steps = self.steps
        needs = []
        for i, step in enumerate(steps):
            needs.append(step.layer is not None or any(j >= 0 and needs[j]
                                                        for j in self.inputs[i]))
        if not any(needs):
            # nothing trains (possible: a BatchNormalization with scale and center off
            # is the only weighted layer); the moving statistics still need the
            # batch's, which forward computes
            return
        grads = [[] for _ in steps]                 # per step output: [(buffer, owned)]
        order = []
        for i in range(len(steps) - 1, -1, -1):
            if not needs[i]:
                continue
            if i == self.out_step:
                dy = self.dlogits
            elif len(grads[i]) == 1:
                dy = grads[i][0][0]
            elif grads[i]:
                if not callable(getattr(self.K, "accumulate_grad", None)):
                    raise kernels.BackendUnavailable(
                        f"backend '{getattr(self.K, 'NAME', self.K)}' lacks accumulate_grad, "
                        f"which a tensor read by two layers needs in training")
                total = GradSumStep(self.K, grads[i])
                order.append(total)
                dy = total.dst
            else:
                raise AssertionError(f"step {i} ({steps[i].ops}) does not reach the output")
            need = tuple(j >= 0 and needs[j] for j in self.inputs[i])
            for j, nd, got in zip(self.inputs[i], need, steps[i].bind_grads(dy, need)):
                if nd:
                    grads[j].append(got)
            if not steps[i].grad_alias:
                order.append(steps[i])
        self.backward_steps = order

    # -- loading a batch
    def _stage(self, fill_x, fill_y, y, fill_w=None):
        """cuda: fill the next staging slot's host views, upload them in one copy and
        point the plan at the slot's device views (x, and with a loss the labels and the
        sample weights, whose view is filled only when the batch has weights)."""
        views = self.stager.host_views()
        fill_x(views[0])
        if y is not None and len(views) > 1:
            fill_y(views[1])
            self.labels_host = views[1]
            if fill_w is not None:
                fill_w(views[2])
        dev = self.stager.upload()
        self.x_host = views[0]
        self._bind_input(dev[0])
        if len(dev) > 1:
            self.labels = dev[1]
            self.weights = dev[2]
        self.weighted = fill_w is not None and y is not None

    def _bind_input(self, x):
        """Re-point the steps that read the input (directly or through a Flatten view of
        it) at the device buffer x."""
        self.x = x
        for step, k, j in self._rebind:
            step.set_input(k, x if j < 0 else self.steps[j].y)
            if step.alias:
                step.y = step.x.reshape(step.out_shape())
        self.logits = x if self.out_step < 0 else self.steps[self.out_step].y

    def load_slice(self, x, y, start, stop, w=None):
        """Rows start:stop of x, y and (when given) the float32 (N,) sample weights w."""
        if self.stager is not None:
            self._stage(lambda h: np.copyto(h, x[start:stop]),
                        lambda h: np.copyto(h, y[start:stop]), y,
                        None if w is None else (lambda h: np.copyto(h, w[start:stop])))
            return
        np.copyto(self.x_host, x[start:stop])
        if self.x_host is not self.x:
            upload(self.x_host, self.x)
        if y is not None:
            np.copyto(self.labels_host, y[start:stop])
            if self.labels_host is not self.labels:
                upload(self.labels_host, self.labels)
            if w is not None:
                np.copyto(self.weights, w[start:stop])
        self.weighted = y is not None and w is not None

    def load_take(self, x, y, idx, w=None):
        """Rows idx of x, y and (when given) the sample weights w."""
        if self.stager is not None:
            self._stage(lambda h: np.take(x, idx, axis=0, out=h, mode="clip"),
                        lambda h: np.take(y, idx, axis=0, out=h, mode="clip"), y,
                        None if w is None else
                        (lambda h: np.take(w, idx, axis=0, out=h, mode="clip")))
            return
        np.take(x, idx, axis=0, out=self.x_host, mode="clip")  # 'clip': no hidden buffer
        if self.x_host is not self.x:
            upload(self.x_host, self.x)
        if y is not None:
            np.take(y, idx, axis=0, out=self.labels_host, mode="clip")
            if self.labels_host is not self.labels:
                upload(self.labels_host, self.labels)
            if w is not None:
                np.take(w, idx, axis=0, out=self.weights, mode="clip")
        self.weighted = y is not None and w is not None

    # -- running
    def forward(self):
        for step in self.steps:
            step.forward()

    def compute_loss(self):
        """The batch's loss (weighted by its sample weights when it has them: Keras 3's
        sum(w * l) / N; the targets smoothed by the loss's label_smoothing) and dlogits."""
        kw = {}
        if self.weighted:
            kw["sample_weight"] = self.weights
        if self.loss.label_smoothing:
            kw["label_smoothing"] = self.loss.label_smoothing
        loss, _ = self.loss_fn(self.labels, self.logits, out=self.loss_out, **kw)
        return loss

    def device_loss(self, stats):
        """cuda (fit): the loss kernel writes dlogits and folds the step's loss and correct
        count into the device accumulator `stats` (kernels/cuda/losses.py); nothing is
        read back."""
        self.kit.losses.loss_and_stats(self.loss_kind, self.labels, self.logits,
                                       self.dlogits, stats,
                                       self.weights if self.weighted else None,
                                       self.loss.label_smoothing)

    def host_logits(self):
        """The last forward's logits on the host (one copy from the device on cuda)."""
        return download(self.logits, self.logits_host)

    def correct(self):
        """How many predictions match the labels (Keras accuracy), on the host."""
        z = download(self.logits, self.logits_host)
        if self.truth is not None:                              # binary: sigmoid(z) > 0.5
            np.greater(z, 0, out=self.pred)
            np.greater(self.labels_host, 0.5, out=self.truth)
            np.equal(self.pred, self.truth, out=self.eq)
        else:
            np.argmax(z, axis=1, out=self.pred)
            np.equal(self.pred, self.labels_host, out=self.eq)
        return int(np.count_nonzero(self.eq))

    def backward(self, guard=None):
        """The gradients of every trainable weight, then the moving statistics of the
        training-mode BatchNormalization steps: run only for a step that is applied (the
        host step skips backward after a non-finite loss; cuda's device-side step runs it
        and passes guard, the device's step accumulator, which skips the update there)."""
        for step in self.backward_steps:
            step.backward()
        for step in self.stat_steps:
            step.update_moving(guard)

    def predict_out(self):
        """The model's output (probabilities when it ends in sigmoid/softmax), on the host."""
        if self.probs is not None:
            self.head_fwd(self.logits, out=self.probs)
            return download(self.probs, self.out_host)
        return download(self.logits, self.out_host)

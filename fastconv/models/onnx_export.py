"""model.export_onnx / `fastconv export`: a model as an ONNX graph, in inference mode.

The graph is the plan's own list of logical ops (models._plan.logical_ops: the layers
in topological order, activations split out, the final sigmoid/softmax as the head),
each written as the ONNX operator with Keras's meaning:

    conv      Conv (kernel (KH, KW, C, F) -> (F, C, KH, KW); "same" as explicit pads,
              the extra row/column at the bottom/right, as TensorFlow pads)
    depthwise Conv with group=C (kernel (KH, KW, C, M) -> (C*M, 1, KH, KW))
    sepconv   that depthwise Conv (no bias), then a 1x1 Conv with the bias
    dense     Gemm            pool            MaxPool (explicit pads)
    act       Relu / Sigmoid / Softmax(axis=1)
    avgpool   AveragePool (count_include_pad=0: Keras's 'same' counts real pixels only)
    dropout, augment (RandomFlip, ...)   nothing (inference)
    flatten   Flatten; when every reader is a Dense the kernel's rows are permuted
              instead, so the graph flattens channels-first and gives the same numbers
              as fastconv's channels-last flatten; otherwise Transpose to NHWC first
    global_avgpool / global_maxpool   GlobalAveragePool / GlobalMaxPool + Flatten
    rescale   Mul, Add        batchnorm  BatchNormalization (moving statistics)
    add       Sum             concat     Concat over channels

Inside the graph images are NCHW (every runtime's native layout); the input is NHWC
as fastconv takes it (a Transpose at the entry) unless nchw=True, and a 4-D output
goes back to NHWC. The batch dimension is symbolic ("N") unless batch is given.

The file is protocol-buffer bytes written by models._protobuf: exporting needs no
onnx package (the tests check the file with onnx.checker and ONNX Runtime). It is
written atomically (fastconv._files.atomic_replace), like model.save.
"""
from __future__ import annotations

import numpy as np

from .._files import atomic_replace
from .._version import __version__
from ..kernels._validate import window_geometry
from . import _protobuf as pb

OPSETS = range(13, 22)   # 13: Softmax over one axis; up to the opset of ONNX 1.16
DEFAULT_OPSET = 17
_IR_VERSION = {13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10}
_FLOAT = 1          # TensorProto.FLOAT
_ATTR_INT, _ATTR_INTS, _ATTR_FLOAT = 2, 7, 1    # AttributeProto.AttributeType


class ExportError(ValueError):
    """A model, or an export argument, that cannot be written as ONNX."""


# ----------------------------------------------------------------- message encoders

def _attr(name, value):
    """An AttributeProto: int, float, or a list of ints."""
    body = pb.string_field(1, name)
    if isinstance(value, (list, tuple)):
        return body + pb.int_field(20, _ATTR_INTS) + pb.ints_field(8, value)
    if isinstance(value, float):
        return body + pb.int_field(20, _ATTR_FLOAT) + pb.float_field(2, value)
    return body + pb.int_field(20, _ATTR_INT) + pb.int_field(3, value)


def _node(op_type, inputs, outputs, name, **attrs):
    body = b"".join(pb.string_field(1, i) for i in inputs)
    body += b"".join(pb.string_field(2, o) for o in outputs)
    body += pb.string_field(3, name) + pb.string_field(4, op_type)
    body += b"".join(pb.bytes_field(5, _attr(k, v)) for k, v in attrs.items())
    return body


def _tensor(name, array):
    a = np.ascontiguousarray(array, dtype="<f4")
    return (pb.ints_field(1, a.shape) + pb.int_field(2, _FLOAT) + pb.string_field(8, name)
            + pb.bytes_field(9, a.tobytes()))


def _value_info(name, dims):
    """A float tensor's ValueInfoProto; a dim is an int or a symbolic name."""
    shape = b"".join(pb.bytes_field(1, pb.string_field(2, d) if isinstance(d, str)
                                    else pb.int_field(1, d)) for d in dims)
    tensor_type = pb.int_field(1, _FLOAT) + pb.bytes_field(2, shape)
    return pb.string_field(1, name) + pb.bytes_field(2, pb.bytes_field(1, tensor_type))


# ----------------------------------------------------------------- the graph

class _Graph:
    """Nodes and initializers as they are written, with fresh names."""

    def __init__(self):
        self.nodes, self.inits, self._used = [], [], set()

    def name(self, base):
        name, k = base, 1
        while name in self._used:
            name, k = f"{base}_{k}", k + 1
        self._used.add(name)
        return name

    def const(self, base, array):
        name = self.name(base)
        self.inits.append(_tensor(name, array))
        return name

    def add(self, op_type, inputs, base, **attrs):
        out = self.name(base)
        self.nodes.append(_node(op_type, inputs, [out], out, **attrs))
        return out


def _pads(layer_name, hw, k, s, padding):
    """ONNX pads [top, left, bottom, right] of a window that fastconv places with
    window_geometry (top/left = total // 2, the rest at the bottom/right)."""
    oh, ow, pt, pl = window_geometry(layer_name, hw, k, s, padding)
    pb_ = max((oh - 1) * s[0] + k[0] - hw[0] - pt, 0) if padding == "same" else 0
    pr = max((ow - 1) * s[1] + k[1] - hw[1] - pl, 0) if padding == "same" else 0
    return [pt, pl, pb_, pr]


def _check_args(model, opset, batch):
    model.require_built("export to ONNX")
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or opset not in OPSETS:
        raise ExportError(f"export_onnx: opset must be an int from {OPSETS.start} to "
                          f"{OPSETS.stop - 1}, received opset={opset!r}")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer))
                              or batch < 1):
        raise ExportError(f"export_onnx: batch must be None (a dynamic batch dimension) or "
                          f"an int >= 1, received batch={batch!r}")


def _readers(ops):
    """reader lists per op index, looking through dropout and augmentation (identities
    in inference)."""
    readers = {i: [] for i in range(-1, len(ops))}
    for j, op in enumerate(ops):
        for i in op.inputs:
            readers[i].append(j)

    def through(i):
        out = []
        for j in readers[i]:
            out.extend(through(j) if ops[j].kind in ("dropout", "augment") else [j])
        return out
    return {i: through(i) for i in readers}


def model_to_onnx(model, opset=DEFAULT_OPSET, batch=None, nchw=False):
    """The ONNX ModelProto bytes of `model` (inference mode); see the module docstring."""
    _check_args(model, opset, batch)
    ops, head = model._logical_ops()
    readers = _readers(ops)
    g = _Graph()
    n_dim = "N" if batch is None else int(batch)
    in_shape = tuple(model.input_shape[1:])
    entry = g.name("input")
    if len(in_shape) == 3 and not nchw:
        in_dims = [n_dim, *in_shape]
        x0 = g.add("Transpose", [entry], "input_nchw", perm=[0, 3, 1, 2])
    else:
        in_dims = ([n_dim, in_shape[2], in_shape[0], in_shape[1]] if len(in_shape) == 3
                   else [n_dim, *in_shape])
        x0 = entry
    names = {-1: x0}            # op index -> the ONNX tensor holding its output
    shapes = {-1: (None,) + in_shape}   # the logical (NHWC) shape of that output
    row_perm = {}               # dense op index -> its kernel's row order (after a Flatten)
    for j, op in enumerate(ops):
        layer, base = op.layer, op.layer.name
        srcs = [names[i] for i in op.inputs]
        src_shape = shapes[op.inputs[0]]
        k = op.kind
        if k == "conv":
            kernel, bias = layer.get_weights()
            w = g.const(f"{base}/kernel", kernel.transpose(3, 2, 0, 1))
            b = g.const(f"{base}/bias", bias)
            out = g.add("Conv", [srcs[0], w, b], base, kernel_shape=list(layer.kernel_size),
                        strides=list(layer.strides), dilations=[1, 1],
                        pads=_pads(f"{type(layer).__name__} layer '{base}'", src_shape[1:3],
                                   layer.kernel_size, layer.strides, layer.padding))
        elif k in ("depthwise", "sepconv"):
            weights = dict(zip(layer.weight_names, layer.get_weights()))
            dk = weights["depthwise_kernel"]                    # (KH, KW, C, M)
            kh, kw, c, mult = dk.shape
            # group c of a grouped Conv makes output channels c*M .. c*M + M - 1: Keras's
            # depthwise order, so the kernel is (C*M, 1, KH, KW) with row c*M + m
            w = g.const(f"{base}/depthwise_kernel",
                        dk.transpose(2, 3, 0, 1).reshape(c * mult, 1, kh, kw))
            b = weights.get("bias") if k == "depthwise" else None
            inputs = [srcs[0], w] + ([g.const(f"{base}/bias", b)] if b is not None else [])
            out = g.add("Conv", inputs, base if k == "depthwise" else f"{base}/depthwise",
                        kernel_shape=[kh, kw], strides=list(layer.strides), group=c,
                        dilations=[1, 1],
                        pads=_pads(f"{type(layer).__name__} layer '{base}'", src_shape[1:3],
                                   layer.kernel_size, layer.strides, layer.padding))
            if k == "sepconv":
                pk = weights["pointwise_kernel"]                # (1, 1, C*M, F)
                inputs = [out, g.const(f"{base}/pointwise_kernel", pk.transpose(3, 2, 0, 1))]
                if "bias" in weights:
                    inputs.append(g.const(f"{base}/bias", weights["bias"]))
                out = g.add("Conv", inputs, base, kernel_shape=[1, 1])
        elif k == "dense":
            kernel, bias = layer.get_weights()
            if j in row_perm:
                kernel = kernel[row_perm[j]]
            w = g.const(f"{base}/kernel", kernel)
            b = g.const(f"{base}/bias", bias)
            out = g.add("Gemm", [srcs[0], w, b], base)
        elif k == "pool":
            out = g.add("MaxPool", srcs, base, kernel_shape=list(layer.pool_size),
                        strides=list(layer.strides),
                        pads=_pads(f"MaxPooling2D layer '{base}'", src_shape[1:3],
                                   layer.pool_size, layer.strides, layer.padding))
        elif k == "avgpool":    # count_include_pad=0: Keras's 'same' divides by real pixels
            out = g.add("AveragePool", srcs, base, kernel_shape=list(layer.pool_size),
                        strides=list(layer.strides), count_include_pad=0,
                        pads=_pads(f"AveragePooling2D layer '{base}'", src_shape[1:3],
                                   layer.pool_size, layer.strides, layer.padding))
        elif k == "act":
            out = _activation(g, op.act, srcs[0], f"{base}/{op.act}")
        elif k in ("dropout", "augment"):       # training only
            out = srcs[0]
        elif k == "flatten":
            out = _flatten(g, ops, readers[j], src_shape, srcs[0], base, row_perm)
        elif k in ("global_avgpool", "global_maxpool"):
            pooled = g.add("GlobalAveragePool" if k == "global_avgpool" else "GlobalMaxPool",
                           srcs, f"{base}/pool")
            out = g.add("Flatten", [pooled], base, axis=1)
        elif k == "rescale":
            scaled = g.add("Mul", [srcs[0], g.const(f"{base}/scale",
                                                    np.float32(layer.scale))], f"{base}/mul")
            out = g.add("Add", [scaled, g.const(f"{base}/offset", np.float32(layer.offset))],
                        base)
        elif k == "batchnorm":
            out = _batchnorm(g, layer, srcs[0], base)
        elif k == "add":
            out = g.add("Sum", srcs, base)
        elif k == "concat":
            out = g.add("Concat", srcs, base, axis=1)
        else:
            raise ExportError(f"export_onnx: layer '{base}' ({type(layer).__name__}) has no "
                              f"ONNX translation yet")
        names[j], shapes[j] = out, op.out_shape
    last = len(ops) - 1
    y = names[last]
    out_shape = shapes[last]
    if head is not None:
        y = _activation(g, head.act, y, f"{head.layer.name}/{head.act}")
    if len(out_shape) == 4 and not nchw:
        y = g.add("Transpose", [y], "output_nhwc", perm=[0, 2, 3, 1])
        out_dims = [n_dim, *out_shape[1:]]
    elif len(out_shape) == 4:
        out_dims = [n_dim, out_shape[3], out_shape[1], out_shape[2]]
    else:
        out_dims = [n_dim, *out_shape[1:]]
    y = g.add("Identity", [y], "output")
    graph = b"".join(pb.bytes_field(1, n) for n in g.nodes)
    graph += pb.string_field(2, model.name)
    graph += b"".join(pb.bytes_field(5, t) for t in g.inits)
    graph += pb.bytes_field(11, _value_info(entry, in_dims))
    graph += pb.bytes_field(12, _value_info(y, out_dims))
    opset_id = pb.string_field(1, "") + pb.int_field(2, opset)
    return (pb.int_field(1, _IR_VERSION[opset]) + pb.string_field(2, "fastconv")
            + pb.string_field(3, __version__) + pb.bytes_field(7, graph)
            + pb.bytes_field(8, opset_id))


def _activation(g, act, x, base):
    if act == "relu":
        return g.add("Relu", [x], base)
    if act == "sigmoid":
        return g.add("Sigmoid", [x], base)
    if act == "softmax":
        return g.add("Softmax", [x], base, axis=1)    # the channel axis, 2-D or NCHW
    raise ExportError(f"export_onnx: activation {act!r} has no ONNX translation")


def _flatten(g, ops, readers, src_shape, x, base, row_perm):
    """Flatten an NCHW tensor so that its features come in fastconv's (h, w, c) order:
    by permuting the rows of every Dense that reads it, or by a Transpose."""
    if len(src_shape) != 4:
        return g.add("Flatten", [x], base, axis=1)
    if readers and all(ops[r].kind == "dense" for r in readers):
        h, w, c = src_shape[1:]
        # row r of the channels-first flatten holds feature (c, h, w); its row in the
        # Keras kernel is (h * W + w) * C + c
        order = np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).ravel()
        for r in readers:
            row_perm[r] = order
        return g.add("Flatten", [x], base, axis=1)
    nhwc = g.add("Transpose", [x], f"{base}/nhwc", perm=[0, 2, 3, 1])
    return g.add("Flatten", [nhwc], base, axis=1)


def _batchnorm(g, layer, x, base):
    weights = dict(zip(layer.weight_names, layer.get_weights()))
    c = weights["moving_mean"].shape[0]
    gamma = weights.get("gamma", np.ones(c, np.float32))
    beta = weights.get("beta", np.zeros(c, np.float32))
    inputs = [x] + [g.const(f"{base}/{n}", v) for n, v in
                    (("gamma", gamma), ("beta", beta), ("moving_mean", weights["moving_mean"]),
                     ("moving_variance", weights["moving_variance"]))]
    return g.add("BatchNormalization", inputs, base, epsilon=float(layer.epsilon))


def export_onnx(model, filepath, opset=DEFAULT_OPSET, batch=None, nchw=False):
    """Write `model` as an ONNX file at `filepath` (atomically); returns filepath."""
    data = model_to_onnx(model, opset=opset, batch=batch, nchw=nchw)
    atomic_replace(filepath, lambda f: f.write(data))
    return filepath


__all__ = ["export_onnx", "model_to_onnx", "ExportError", "DEFAULT_OPSET", "OPSETS"]

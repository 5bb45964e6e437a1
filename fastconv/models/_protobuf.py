"""The few protocol-buffer encodings an ONNX file needs, so that exporting a model
needs no `onnx` package (it is only a test oracle).

A message is bytes: the concatenation of its fields, each a key (field number << 3 |
wire type) and a value. Wire types used: 0 varint (ints, enums, bools), 2 length-
delimited (strings, bytes, nested messages), 5 fixed 32-bit (float). Repeated scalar
fields are written one element per key (proto2's unpacked form, which every parser
reads). Reference: https://protobuf.dev/programming-guides/encoding/
"""
from __future__ import annotations

import struct


def _varint(n):
    """Base-128 varint of a non-negative int; negative int64s as their 64-bit two's
    complement (ten bytes), as protobuf writes them."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(field, wire):
    return _varint(field << 3 | wire)


def int_field(field, value):
    """An int64/int32/enum field."""
    return _key(field, 0) + _varint(int(value))


def float_field(field, value):
    return _key(field, 5) + struct.pack("<f", float(value))


def bytes_field(field, value):
    """A bytes field, or a nested message already encoded as bytes."""
    return _key(field, 2) + _varint(len(value)) + bytes(value)


def string_field(field, value):
    return bytes_field(field, value.encode("utf-8"))


def ints_field(field, values):
    return b"".join(int_field(field, v) for v in values)


def floats_field(field, values):
    return b"".join(float_field(field, v) for v in values)

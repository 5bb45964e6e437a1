"""The Keras 2 summary table of a model (model.summary()): Layer (type), Output Shape, Param #."""
from __future__ import annotations


def print_summary(model, line_length=None, positions=None, print_fn=None):
    """Print the Keras 2 summary table (Layer (type), Output Shape, Param #)."""
    model.require_built("summarise")
    print_fn = print_fn or print
    line_length = line_length or 65
    positions = positions or [0.45, 0.85, 1.0]
    if positions[-1] <= 1:
        positions = [int(line_length * p) for p in positions]

    def row(fields):
        line = ""
        for i, field in enumerate(fields):
            if i > 0:
                line = line[:-1] + " "
            line += str(field)
            line = line[:positions[i]]
            line += " " * (positions[i] - len(line))
        print_fn(line)

    print_fn("_" * line_length)
    row(["Layer (type)", "Output Shape", "Param #"])
    print_fn("=" * line_length)
    for i, layer in enumerate(model.layers):
        row([f"{layer.name} ({layer.__class__.__name__})", layer.output_shape,
             layer.count_params()])
        print_fn(("=" if i == len(model.layers) - 1 else "_") * line_length)
    total = model.count_params()
    trainable = model.count_trainable_params()
    print_fn(f"Total params: {total:,}")
    print_fn(f"Trainable params: {trainable:,}")
    print_fn(f"Non-trainable params: {total - trainable:,}")
    print_fn("_" * line_length)

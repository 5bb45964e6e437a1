"""The Keras 2 summary table of a model (model.summary()): Layer (type), Output Shape,
Param #, and for a Functional model Connected to (Keras's `layer[0][0]` per input, one a
line) at Keras's widths (98 columns, positions .33/.55/.67/1)."""
from __future__ import annotations


def print_summary(model, line_length=None, positions=None, print_fn=None):
    """Print the Keras 2 summary table (Layer (type), Output Shape, Param # and, for a
    graph model, Connected to)."""
    model.require_built("summarise")
    print_fn = print_fn or print
    graph = hasattr(model, "inbound_layers")
    line_length = line_length or (98 if graph else 65)
    positions = positions or ([0.33, 0.55, 0.67, 1.0] if graph else [0.45, 0.85, 1.0])
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
    row(["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if graph else []))
    print_fn("=" * line_length)
    for i, layer in enumerate(model.layers):
        fields = [f"{layer.name} ({layer.__class__.__name__})", layer.output_shape,
                  layer.count_params()]
        if graph:
            sources = [f"{l.name}[0][0]" for l in model.inbound_layers(layer)]
            row(fields + [sources[0] if sources else ""])
            for source in sources[1:]:
                row(["", "", "", source])
        else:
            row(fields)
        print_fn(("=" if i == len(model.layers) - 1 else "_") * line_length)
    total = model.count_params()
    trainable = model.count_trainable_params()
    print_fn(f"Total params: {total:,}")
    print_fn(f"Trainable params: {trainable:,}")
    print_fn(f"Non-trainable params: {total - trainable:,}")
    print_fn("_" * line_length)

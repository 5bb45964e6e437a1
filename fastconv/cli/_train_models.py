"""The models `fastconv train --model NAME` trains, and what each brings to a run: how to
build it for the run's settings, its recipe (the defaults with DATA), its augmentation,
its smallest input and how the run names it.

  small-convnet      the seed small convnet (docs/contract.md): the seed recipe, 150x150,
                     RMSprop 1e-4, the seed's shear/zoom/flip augmentation
  keras-io-xception  the keras.io "Image classification from scratch" network
                     (models.keras_io_xception): its recipe, 180x180, batch 128, 25 epochs,
                     Adam 3e-4, RandomFlip("horizontal") + RandomRotation(0.1) (rotation
                     +-36 degrees); --width scales its filters (1.0: 2,731,065 params)

Both take pixels scaled by 1/255 from the data pipeline (the scaling evaluate and predict
apply to every model): the xception's own Rescaling layer is built as Rescaling(1.0).
"""
from __future__ import annotations

import functools
import math

from ._common import CLIError

MODEL_NAMES = ("small-convnet", "keras-io-xception")
# Settings of the model (in the run's settings, the checkpoint and history.json); a
# checkpoint of an earlier fastconv has none: it trained these defaults.
MODEL_SETTINGS = {"model": "small-convnet", "width": 1.0,
                  "color_mode": "rgb"}     # the images' colour mode: the input's channels

SEED_RECIPE = {"epochs": 50, "batch_size": 16, "lr": 1e-4, "optimizer": "rmsprop",
               "image_size": 150, "augment": True, "validation_split": 0.2, "seed": 0}
XCEPTION_RECIPE = {"epochs": 25, "batch_size": 128, "lr": 3e-4, "optimizer": "adam",
                   "image_size": 180, "augment": True, "validation_split": 0.2, "seed": 0}
RECIPES = {"small-convnet": SEED_RECIPE, "keras-io-xception": XCEPTION_RECIPE}

AUGMENTATION = {"small-convnet": {"horizontal_flip": True, "shear_range": 0.2,
                                  "zoom_range": 0.2},
                "keras-io-xception": {"horizontal_flip": True, "rotation_range": 36.0}}


def build(settings, num_classes, device="reference", compile=False):
    """The run's model, uncompiled, seeded with the run's seed."""
    from ..data.reading import CHANNELS
    from ..models import keras_io_xception, small_convnet
    s = settings["image_size"]
    c = CHANNELS[settings.get("color_mode", "rgb")]
    if settings["model"] == "keras-io-xception":
        return keras_io_xception((s, s, c), num_classes=num_classes, width=settings["width"],
                                 rescale=1.0, device=device, seed=settings["seed"],
                                 compile=compile)
    return small_convnet(input_shape=(s, s, c), device=device, seed=settings["seed"],
                         compile=compile, num_classes=num_classes)


def describe(settings):
    if settings["model"] == "keras-io-xception":
        width = settings["width"]
        return "the keras.io Xception" + ("" if width == 1.0 else f" (width {width:g})")
    return "the seed small convnet"


@functools.lru_cache(maxsize=None)
def smallest_image_size(model="small-convnet", limit=4096):
    """The smallest PX for which PX x PX x 3 fits the model: derived from its layers (the
    model built at PX, at a tiny width for the xception: a layer whose window does not
    fit raises LayerError), not a constant. Valid convolutions and poolings only shrink,
    so the first PX that fits is the minimum (32 for the seed model; the xception pads
    'same' everywhere: 1)."""
    from ..layers import LayerError
    for px in range(1, limit + 1):
        try:
            build({"model": model, "image_size": px, "width": 1 / 128, "seed": 0}, 2)
        except LayerError:
            continue
        return px
    raise ValueError(f"no input size up to {limit} fits the {model} model")


def check_model_settings(s, width_given):
    """CLIError for a model setting that cannot run (s: the resolved settings)."""
    if s["model"] not in MODEL_NAMES:
        raise CLIError(f"--model must be one of {', '.join(MODEL_NAMES)}, received "
                       f"{s['model']!r}")
    if not (s["width"] > 0 and math.isfinite(s["width"])):
        raise CLIError(f"--width must be a positive number, received {s['width']}")
    if s["model"] != "keras-io-xception" and (width_given or s["width"] != 1.0):
        raise CLIError(f"--width scales --model keras-io-xception only; {s['model']} has "
                       f"one size (received --width {s['width']:g})")
    smallest = smallest_image_size(s["model"])
    if s["image_size"] < smallest:
        raise CLIError(f"--image-size {s['image_size']} is too small for {describe(s)}'s "
                       f"conv/pool stages (the smallest is {smallest})")

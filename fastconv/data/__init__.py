"""fastconv.data: image folders to training batches.

- load_image / ImageReadError: one file to a float32 RGB array (reading.py);
  set_max_image_pixels / get_max_image_pixels: the decoded-image pixel cap
- Augmentation: Keras ImageDataGenerator's geometric augmentation as one affine
  warp per image (augment.py, warp.py)
- image_dataset_from_directory / ImageDataset: class folders to (x, y) batches,
  decoded and augmented ahead on background threads (dataset.py, prefetch.py)
- write_demo_data / DEMO_CLASSES: the built-in synthetic data set (demo.py)
"""
from .augment import Augmentation
from .demo import DEMO_CLASSES, demo_images, write_demo_data
from .dataset import ImageDataset, image_dataset_from_directory
from .reading import (IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, ImageReadError, get_max_image_pixels,
                      load_image, set_max_image_pixels)
from .warp import affine_warp, affine_warp_reference

__all__ = ["Augmentation", "DEMO_CLASSES", "ImageDataset", "ImageReadError", "IMAGE_EXTENSIONS",
           "MAX_IMAGE_PIXELS", "get_max_image_pixels", "set_max_image_pixels",
           "affine_warp", "affine_warp_reference", "image_dataset_from_directory",
           "load_image", "demo_images", "write_demo_data"]

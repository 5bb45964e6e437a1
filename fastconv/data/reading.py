"""Reading one image file into a float32 RGB (or grayscale) array, the way the seed's
Keras loader did.

`load_image` decodes with Pillow, applies the EXIF orientation, converts every
Pillow mode to RGB (alpha composited on white, 16-bit grey scaled down, not
clipped) and resizes with nearest-neighbour sampling, Keras's `load_img`
default, so a model trained in Keras predicts the same on our inputs.
color_mode="grayscale" (Keras's name) gives one channel instead: 8-bit grey as it is,
16-bit grey scaled down, anything else through the RGB conversion above and then
Pillow's "L" (ITU-R 601-2 luma, L = R * 299/1000 + G * 587/1000 + B * 114/1000).
"""
from __future__ import annotations

import os
import stat

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .._args import is_int
from ..kernels._validate import as_pair

#: File extensions (lower case) that the directory loader treats as images; anything
#: else in a class folder (README.txt, .DS_Store, thumbs.db) is ignored.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

#: The resampling filter of every resize (Keras's load_img default).
RESIZE_FILTER = Image.Resampling.NEAREST

#: The default cap on the pixels (width x height) of one image, checked from the file's
#: header before anything is decoded: 50 megapixels (an 8-bit RGB image at the cap decodes
#: to ~150 MB). A larger image is refused (ImageReadError), so a tiny file declaring
#: 13000x13000 cannot take gigabytes. Change it with set_max_image_pixels(n) or the
#: environment variable FASTCONV_MAX_IMAGE_PIXELS. Pillow's own Image.MAX_IMAGE_PIXELS
#: (a warning above ~89 MP, an error above twice that) still applies on top.
MAX_IMAGE_PIXELS = 50_000_000
MAX_IMAGE_PIXELS_ENV = "FASTCONV_MAX_IMAGE_PIXELS"
_max_image_pixels = None        # set_max_image_pixels's value; None: environment or default

# Opening a FIFO blocks until a writer appears and opening a device may act on it:
# images are opened non-blocking, without becoming a controlling terminal.
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WIDE_GREY_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


class ImageReadError(ValueError):
    """An image file that cannot be decoded. `.path` names the file, `.reason` says why."""

    def __init__(self, path, reason):
        self.path = os.fspath(path)
        self.reason = str(reason)
        super().__init__(f"cannot read image {self.path!r}: {self.reason}")

    def __reduce__(self):       # picklable, e.g. across a process pool
        return (type(self), (self.path, self.reason))


def is_image_file(name):
    """True for a visible file whose extension is one of IMAGE_EXTENSIONS.

    Names starting with '.' are skipped too: macOS writes '._photo.jpg' resource
    forks next to real photos, and they are not images."""
    base = os.path.basename(name)
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def _check_pixels(name, n):
    if not is_int(n) or n < 1:
        raise ValueError(f"{name} must be an int >= 1 (pixels, width x height), "
                         f"received {n!r}")
    return int(n)


def get_max_image_pixels():
    """The pixel cap in force: set_max_image_pixels's value, else the environment
    variable FASTCONV_MAX_IMAGE_PIXELS, else MAX_IMAGE_PIXELS (50,000,000)."""
    if _max_image_pixels is not None:
        return _max_image_pixels
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not text:
        return MAX_IMAGE_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = None
    if value is None or value < 1:
        raise ValueError(f"{MAX_IMAGE_PIXELS_ENV} must be an int >= 1 (pixels, width x "
                         f"height), received {text!r}")
    return value


def set_max_image_pixels(n):
    """Cap the pixels (width x height) of an image that decode_image/load_image and the
    datasets accept; None restores the default (the environment variable or
    MAX_IMAGE_PIXELS). Returns the previous cap. Process-wide."""
    global _max_image_pixels
    n = None if n is None else _check_pixels("set_max_image_pixels: n", n)
    previous = get_max_image_pixels()
    _max_image_pixels = n
    return previous


def _file_kind(mode):
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return f"file type {stat.S_IFMT(mode):#o}"


def _open_regular(path):
    """(binary file object, size in bytes) of `path` (links followed), which must be a
    regular file: a FIFO, socket, device or folder raises ImageReadError without being
    read. The type is checked before opening (opening a device can act on it) and again
    on the open descriptor, since the path may have been replaced in between."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(path, f"not a regular file ({_file_kind(st.st_mode)})")
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageReadError(path, f"not a regular file ({_file_kind(st.st_mode)})")
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


COLOR_MODES = ("rgb", "grayscale")
CHANNELS = {"rgb": 3, "grayscale": 1}


def check_color_mode(op, color_mode):
    """color_mode 'rgb' or 'grayscale' (Keras's names); returns it."""
    if color_mode not in COLOR_MODES:
        raise ValueError(f"{op}: color_mode must be one of {COLOR_MODES}, received "
                         f"color_mode={color_mode!r}")
    return color_mode


def check_image_size(op, image_size):
    """(height, width) from an int or a pair of ints >= 1."""
    return as_pair(op, "image_size", image_size)


def _to_rgb(img):
    """A Pillow image of any mode as an 'RGB' image."""
    mode = img.mode
    if "transparency" in img.info and mode in ("P", "L", "RGB"):
        # A transparent palette index or colour key (PNG tRNS, GIF): decode to RGBA so
        # those pixels are composited on white instead of showing the keyed colour.
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode == "RGB":
        return img
    if mode in _WIDE_GREY_MODES:
        # Pillow's I;16 -> RGB conversion clips at 255 (a 16-bit scan turns white);
        # scale the 0..65535 range instead.
        return _wide_grey_to_l(img).convert("RGB")
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if a.size and np.nanmax(a) <= 1.0:      # float images are 0..1 by convention
            a = a * 255.0
        a = np.clip(np.nan_to_num(np.rint(a)), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")                   # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX


def _to_grey(img):
    """A Pillow image of any mode as an 'L' image (alpha composited on white first)."""
    if "transparency" not in img.info and img.mode == "L":
        return img
    if img.mode in _WIDE_GREY_MODES:
        return _wide_grey_to_l(img)
    return _to_rgb(img).convert("L")


def _wide_grey_to_l(img):
    a = np.asarray(img, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8), "L")


def decode_image(path, image_size=(150, 150), color_mode="rgb"):
    """The image at `path` as uint8 (H, W, 3) RGB, resized to image_size=(H, W); with
    color_mode="grayscale" uint8 (H, W, 1).

    This is load_image without the float conversion: the dataset caches these
    (4x smaller than float32). Raises ImageReadError when the file cannot be decoded,
    is not a regular file or has more pixels than get_max_image_pixels().
    """
    h, w = check_image_size("load_image", image_size)
    c = CHANNELS[check_color_mode("load_image", color_mode)]
    limit = get_max_image_pixels()
    size = None
    try:
        f, size = _open_regular(path)
        with f, Image.open(f) as img:
            # Image.open has read the header only: refuse a huge image before decoding.
            width, height = img.size
            if width * height > limit:
                raise ImageReadError(
                    path, f"{width}x{height} is {width * height:,} pixels, more than the "
                          f"limit of {limit:,} (raise it with fastconv.data."
                          f"set_max_image_pixels or {MAX_IMAGE_PIXELS_ENV})")
            img.seek(0)                       # GIF, APNG, TIFF: the first frame
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img) if c == 3 else _to_grey(img)
            if img.size != (w, h):
                img = img.resize((w, h), RESIZE_FILTER)
            out = np.asarray(img, dtype=np.uint8)
            if c == 1:
                out = out[:, :, None]
    except ImageReadError:
        raise
    except FileNotFoundError as exc:
        raise ImageReadError(path, f"no such file ({exc.strerror})") from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:                  # Pillow raises many types for bad data
        if isinstance(exc, UnidentifiedImageError) and size != 0:
            # Pillow names the file object it was given (our fd), not the path
            reason = "UnidentifiedImageError: not an image format Pillow can identify"
        elif size == 0:
            reason = "the file is empty (0 bytes)"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        raise ImageReadError(path, reason) from exc
    if out.shape != (h, w, c):
        raise ImageReadError(path, f"decoded to shape {out.shape}, expected {(h, w, c)}")
    return np.ascontiguousarray(out)


def load_image(path, image_size=(150, 150), color_mode="rgb"):
    """Read one image file as a float32 array (H, W, 3), RGB, values 0..255 (not rescaled);
    color_mode="grayscale": (H, W, 1), grey 0..255 (see the module docstring).

    - Formats: whatever Pillow decodes (JPEG, PNG, BMP, GIF, TIFF, WebP where Pillow
      was built with it); GIF/APNG/TIFF give their first frame.
    - EXIF orientation is applied (a phone photo comes out upright).
    - Modes: L, 1, P, CMYK, YCbCr... convert to RGB; LA, RGBA, PA and palette images
      with a transparent index are alpha-composited on white; 16-bit grey (I;16, I)
      is scaled by 1/257 rather than clipped.
    - Resize: to image_size=(height, width) with NEAREST sampling (Keras load_img's
      default, as the seed's ImageDataGenerator.flow_from_directory used), only when
      the size differs.

    Raises ImageReadError (a ValueError) naming the file for anything that cannot be
    decoded: a missing, empty, truncated or non-image file, anything that is not a
    regular file (a FIFO, socket or device is never read, so never blocks), or an image
    of more pixels than get_max_image_pixels() (checked from the header, before decoding).
    """
    return decode_image(path, image_size, color_mode).astype(np.float32)

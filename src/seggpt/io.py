"""Reading images and masks the way users have them, and writing results safely.

Images come as paths, PIL images or numpy arrays: grey, RGB, RGBA, palette and 16-bit files all become
(H, W, 3) uint8. Masks come as binary images, 2-D label maps, palette PNGs or RGB colour masks and all become a
2-D integer label map (0 = background). Every failure names the file and says what to do.

Image files are opened through one path (:func:`open_image`): the pixel count in the header is checked against
:data:`MAX_PIXELS` before any pixel is decoded (a clear ``ValueError``, where Pillow's own guard raised its
``DecompressionBombError``), and :func:`read_image_reduced` decodes large files at reduced scale (JPEG draft mode,
``Image.reduce``) when the model needs only a few hundred pixels of them.

Rules for masks (:func:`read_mask`), in order:
    - a palette ("P" mode) PNG: the palette indices are the labels; index 255 (the VOC "void" border) becomes 0;
    - a grey or bool mask whose values are only {0, 1}, {0, 255} or {0, 65535} (16-bit) is binary: foreground = 1;
    - a grey JPEG (lossy, so never exact labels) is thresholded at 128;
    - any other 2-D integer map is a label map, taken as is;
    - an RGB mask whose three channels are equal is read as grey;
    - an RGB colour mask: black is background; the colours of the ``transformers`` palette map back to their
      label (so this package's own colour outputs read back exactly); other colours are numbered 1, 2, ... in
      decreasing (R, G, B) order, which is the palette's own order;
    - an RGBA mask whose colour is constant but whose alpha varies (a cut-out) is read from its alpha.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from seggpt.coloring import build_palette

log = logging.getLogger(__name__)

ImageSource = str | os.PathLike | Image.Image | np.ndarray

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")

# The most pixels (width x height) an image file may have to be read; larger files are refused before decoding,
# with a message naming the file and the limit. Set it for the process (the CLI's --max-megapixels does) or pass
# ``max_pixels`` to a reader. 200 MP is a 14000 x 14000 image; :func:`read_image` holds about 7 bytes per pixel
# of it at once, :func:`read_image_reduced` (what the model reads) far less for a JPEG.
DEFAULT_MAX_PIXELS = 200_000_000
MAX_PIXELS = DEFAULT_MAX_PIXELS
# Reduced decoding keeps at least this many times the model's side, so the final (bicubic) resize still has
# pixels to average; images smaller than that are decoded whole, exactly as before.
REDUCE_MARGIN = 4
_PIL_GUARD = threading.Lock()  # Pillow's limit is process-wide: swap it for ours one open at a time


def describe(src: ImageSource) -> str:
    """A short name for an input, for error messages: the path, or the kind and shape of an in-memory image."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, Image.Image):
        return f"PIL image {src.mode} {src.width}x{src.height}"
    if isinstance(src, np.ndarray):
        return f"array {src.dtype} {tuple(src.shape)}"
    return type(src).__name__


def megapixels(n: int) -> str:
    """A pixel count for messages: "400 MP", "0.04 MP"."""
    return f"{n / 1e6:.3g} MP"


def check_pixels(width: int, height: int, name: str, max_pixels: int | None = None) -> None:
    """Refuse an image of ``width`` x ``height`` above the pixel limit (``max_pixels``, else :data:`MAX_PIXELS`).

    Raises:
        ValueError: naming the image, its size, the limit and what to do.
    """
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if width * height > limit:
        raise ValueError(
            f"{name} is {width}x{height} = {megapixels(width * height)}, over the limit of {megapixels(limit)} per "
            f"image; shrink it, or raise the limit (--max-megapixels {-(-width * height // 1_000_000)})"
        )


def open_image(src: str | os.PathLike | bytes, what: str = "image", max_pixels: int | None = None) -> Image.Image:
    """Open an image file (or its bytes) and check its size, decoding no pixel yet.

    Every reader of image files in the package comes through here, so a missing file, a folder, a file that is
    not an image (a text file named .png) and an image over the pixel limit each give one clear error.

    Args:
        src: a path, or the file's bytes (an upload).
        what: what the file is, for messages ("image", "mask", "example 2").
        max_pixels: the limit (width x height); None: :data:`MAX_PIXELS`.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a folder, a file Pillow cannot identify, or an image over the limit.
    """
    import io

    if isinstance(src, (bytes, bytearray)):
        name, fp = what, io.BytesIO(src)
        if not src:
            raise ValueError(f"{what} is empty (0 bytes)")
    else:
        path = Path(src).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{what} not found: {path}")
        if path.is_dir():
            raise ValueError(f"{what} {path} is a folder; pass an image file")
        name, fp = f"{what} {path}", path
    with _PIL_GUARD:
        # Pillow's own guard raises DecompressionBombError at twice its limit, and only warns below; ours replaces
        # it with one limit and one message.
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            img = Image.open(fp)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise ValueError(f"cannot read {name}: {e}. Is it a complete image file (PNG, JPEG, ...)?") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    check_pixels(*img.size, name, max_pixels)
    return img


def _decode(img: Image.Image, name: str) -> Image.Image:
    """Decode the pixels now: a truncated file fails here, with its name, not later in a resize."""
    try:
        img.load()
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ValueError(f"cannot read {name}: {e}. Is it a complete image file (PNG, JPEG, ...)?") from None
    return img


def _open(src: str | os.PathLike, what: str) -> Image.Image:
    return _decode(open_image(src, what), f"{what} {Path(src).expanduser()}")


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> numpy, keeping 16-bit and float values (``convert`` would clip them to 8 bits).

    8-bit images are copied a band of rows at a time into one writable array: ``np.asarray`` of a whole image
    goes through a bytes copy, then a read-only array that must be copied again, three times the pixels at once.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img).astype(np.int32)
    if img.mode not in ("RGB", "RGBA", "L", "LA") or img.width * img.height < 1 << 20:
        return np.array(img)
    bands = len(img.getbands())
    out = np.empty((img.height, img.width, bands) if bands > 1 else (img.height, img.width), np.uint8)
    step = max(1, (1 << 22) // img.width)
    for y in range(0, img.height, step):
        out[y : y + step] = np.asarray(img.crop((0, y, img.width, min(img.height, y + step))))
    return out


def _scale_to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    """Grey or colour pixel values of any numeric dtype -> uint8 in [0, 255]."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} holds NaN or infinite values")
        # Floats in [0, 1] are the usual convention (skimage, matplotlib); anything larger is taken as [0, 255].
        scale = 255.0 if a.size and a.max() <= 1.0 else 1.0
        return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        if a.size and a.min() < 0:
            raise ValueError(f"{name} has negative pixel values; images must be non-negative")
        top = int(a.max()) if a.size else 0
        if top <= 255:
            return a.astype(np.uint8)
        # 16-bit images (PNG, TIFF): 65535 is white. Wider integers are scaled by their own maximum.
        full = 65535 if top <= 65535 else top
        return np.rint(a.astype(np.float64) * (255.0 / full)).astype(np.uint8)
    raise ValueError(f"{name} has dtype {a.dtype}; pass uint8, uint16 or float pixels")


def read_image(src: ImageSource, max_pixels: int | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB.

    Args:
        src: a path, a PIL image or a numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); uint8, 16-bit
            integers (65535 = white), bool, or floats in [0, 1] (or [0, 255] if any value exceeds 1).
        max_pixels: the pixel limit for files (None: :data:`MAX_PIXELS`).

    Grey images are repeated over three channels, alpha is dropped, palette images are expanded, and files are
    turned upright by their EXIF orientation (what viewers show, and what masks are drawn on).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an unreadable, truncated, oddly shaped or too large image; the message names it.
    """
    name = describe(src)
    if isinstance(src, (str, os.PathLike)):
        src = _upright(_decode(open_image(src, "image", max_pixels), f"image {Path(src).expanduser()}"))
    if isinstance(src, Image.Image):
        if src.mode in ("RGB", "L", "I;16", "I;16B", "I;16L", "I", "F", "RGBA", "LA"):
            a = _pil_to_array(src)
        else:  # P, 1, CMYK, YCbCr, ...: PIL knows how to make them RGB
            a = _pil_to_array(src.convert("RGBA" if "transparency" in src.info else "RGB"))
    elif isinstance(src, np.ndarray):
        a = src
    else:
        raise ValueError(f"cannot read an image from a {type(src).__name__}; pass a path, a PIL image or an array")
    if a.ndim == 3 and a.shape[2] in (2, 4):
        a = a[..., :-1]  # drop alpha (LA -> L, RGBA -> RGB)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    out = np.ascontiguousarray(_scale_to_uint8(a, name))
    return out if out.flags.writeable else out.copy()  # PIL arrays are read-only; torch warns on those


_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_JPEG = ("JPEG", "MPO")  # MPO: the multi-picture JPEG many phones and cameras write


def read_image_reduced(
    src: ImageSource, min_side: int | Callable[[int, int], int], max_pixels: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image for a model that needs only ``min_side`` pixels a side: decoded at reduced scale when large.

    A JPEG file is decoded by its DCT at 1/2, 1/4 or 1/8 scale (Pillow's draft mode, little memory and time), and
    any file is then box-reduced by a whole factor (``Image.reduce``), both only as far as every side stays at least
    ``REDUCE_MARGIN * min_side``; smaller images, PIL images and arrays are read whole, as :func:`read_image` does.
    A 12000 x 12000 JPEG read for the 96-pixel embedded model costs a 500 x 500 array.

    Args:
        src: a path, a PIL image or an array (see :func:`read_image`).
        min_side: the largest side the model resizes the image to, or a function of the image's full size
            (H, W), upright, that returns it (for a model whose input takes each image's shape).
        max_pixels: the pixel limit for files (None: :data:`MAX_PIXELS`).

    Returns:
        (image (h, w, 3) uint8, at most the full size; the full size (H, W) as shown upright, which is where
        answers belong).
    """
    if not isinstance(src, (str, os.PathLike)):
        a = read_image(src)
        return a, (a.shape[0], a.shape[1])
    img = open_image(src, "image", max_pixels)
    width, height = img.size

    def keep_of(turned: bool) -> int:
        side = min_side(*((width, height) if turned else (height, width))) if callable(min_side) else min_side
        return max(1, REDUCE_MARGIN * int(side))

    if img.format in _JPEG:  # a JPEG's EXIF is read with its header, before any pixel
        keep = keep_of(img.getexif().get(0x0112, 1) in _TURNED)
        if min(width, height) >= 2 * keep:
            img.draft(img.mode, (keep, keep))  # the largest DCT scale keeping both sides >= keep
    img = _decode(img, f"image {Path(src).expanduser()}")
    turned = img.getexif().get(0x0112, 1) in _TURNED
    factor = min(img.size) // keep_of(turned)
    if factor >= 2 and img.mode in ("L", "RGB", "RGBA", "LA"):  # box averages of these are colours; of P, not
        img = img.reduce(factor)
    a = read_image(_upright(img))
    return a, ((width, height) if turned else (height, width))


def open_image_resized(src: ImageSource, size: tuple[int, int], max_pixels: int | None = None) -> Image.Image:
    """An image as a PIL RGB image of exactly ``size`` = (h, w) (shown upright): a JPEG file larger than that is
    decoded at the largest DCT scale that still covers it, then any image is resized (bilinear, antialiased).

    For previews of large images (an overlay at half size) without decoding them whole.
    """
    h, w = int(size[0]), int(size[1])
    if isinstance(src, (str, os.PathLike)):
        img = open_image(src, "image", max_pixels)
        if img.format in _JPEG:  # the draft scale asks for the stored orientation
            turned = img.getexif().get(0x0112, 1) in _TURNED
            img.draft(img.mode, (h, w) if turned else (w, h))
        img = _upright(_decode(img, f"image {Path(src).expanduser()}"))
    else:
        img = Image.fromarray(read_image(src))
    if img.mode != "RGB":
        img = Image.fromarray(read_image(img))  # 16-bit, palette, alpha: as read_image reads them
    return img if img.size == (w, h) else img.resize((w, h), Image.Resampling.BILINEAR)


def read_image_resized(src: ImageSource, size: tuple[int, int], max_pixels: int | None = None) -> np.ndarray:
    """:func:`open_image_resized` as an (h, w, 3) uint8 array."""
    return read_image(open_image_resized(src, size, max_pixels))


def _upright(img: Image.Image) -> Image.Image:
    """The image as viewers show it (EXIF orientation applied); itself, not a copy, when it needs no turn."""
    return ImageOps.exif_transpose(img) if img.getexif().get(0x0112, 1) != 1 else img


# Masks ----------------------------------------------------------------------------------------------------
def load_mask_array(src: ImageSource) -> tuple[np.ndarray, str]:
    """Read a mask without interpreting colours: (H, W) int64 labels, or (H, W, 3) uint8 colours.

    Returns:
        (array, kind) with kind "labels" (a 2-D map, already binarised where the rules say so) or "colours".
    """
    name = describe(src)
    lossy = False
    if isinstance(src, (str, os.PathLike)):
        lossy = Path(src).suffix.lower() in _LOSSY_SUFFIXES
        src = _open(src, "mask")
    palette_mode = False
    if isinstance(src, Image.Image):
        if src.mode == "P":
            palette_mode = True
            a = np.asarray(src).astype(np.int64)
        elif src.mode == "1":
            a = np.asarray(src).astype(np.int64)
        elif src.mode in ("L", "I;16", "I;16B", "I;16L", "I", "RGB", "RGBA", "LA", "F"):
            a = _pil_to_array(src)
        else:
            a = np.asarray(src.convert("RGB"))
    elif isinstance(src, np.ndarray):
        a = src
    else:
        raise ValueError(f"cannot read a mask from a {type(src).__name__}; pass a path, a PIL image or an array")

    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] == 2:  # grey + alpha: the grey carries the mask unless it is constant
        a = a[..., 1] if np.ptp(a[..., 0]) == 0 and np.ptp(a[..., 1]) > 0 else a[..., 0]
    if a.ndim == 3 and a.shape[2] == 4:
        rgb, alpha = a[..., :3], a[..., 3]
        a = alpha if (rgb == rgb.reshape(-1, 3)[0]).all() and np.ptp(alpha) > 0 else rgb
    if a.ndim == 3 and a.shape[2] == 3 and (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3) or 0 in a.shape[:2]:
        raise ValueError(f"mask {name}: expected (H, W) labels or an (H, W, 3) colour mask, got shape {a.shape}")

    if a.ndim == 3:
        if lossy:
            warnings.warn(
                f"mask {name} is a colour JPEG/WebP: compression blends colours into many new ones, each read as a "
                "label; save colour masks as PNG",
                UserWarning,
                stacklevel=3,
            )
        return np.array(_scale_to_uint8(a, f"mask {name}")), "colours"
    if a.dtype == bool:
        return a.astype(np.int64), "labels"
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"mask {name} holds NaN or infinite values")
        if a.size and a.min() >= 0 and a.max() <= 1:
            return (a >= 0.5).astype(np.int64), "labels"  # a soft mask / probability map
        if not np.array_equal(a, np.rint(a)):
            raise ValueError(f"mask {name} has fractional values outside [0, 1]; pass integer labels")
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"mask {name} has dtype {a.dtype}; pass integer labels, bool or a colour image")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"mask {name} has negative labels (min {a.min()}); labels must be >= 0, 0 = background")
    if palette_mode:
        a[a == 255] = 0  # VOC-style "void" border: neither object nor background; painting it black is safest
        return a, "labels"
    if lossy:
        return (a >= 128).astype(np.int64), "labels"
    values = set(np.unique(a).tolist())
    for white in (255, 65535):  # 8- and 16-bit binary masks
        if values <= {0, white}:
            return (a == white).astype(np.int64), "labels"
    return a, "labels"


def colours_to_labels(masks: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Number the colours of several RGB masks jointly, so one colour is one label in all of them.

    Args:
        masks: (H_i, W_i, 3) uint8 colour masks.

    Returns:
        (label maps (H_i, W_i) int64, colours (K + 1, 3) uint8 with row 0 black): ``colours[label]`` is the
        colour the label came from.
    """
    flat = [m.reshape(-1, 3) for m in masks]
    uniq = np.unique(np.concatenate(flat), axis=0) if flat else np.zeros((0, 3), np.uint8)
    fg = uniq[(uniq != 0).any(axis=1)]
    labels_of = _palette_labels(fg)
    if labels_of is None:
        # Decreasing (R, G, B): the transformers palette's own order, so a palette subset keeps its order.
        order = np.lexsort((-fg[:, 2].astype(int), -fg[:, 1].astype(int), -fg[:, 0].astype(int)))
        fg = fg[order]
        labels_of = np.arange(1, len(fg) + 1)
        if len(fg):
            log.info(
                "colour mask: %d colours numbered %s",
                len(fg),
                {tuple(c): int(i) for c, i in zip(fg, labels_of, strict=True)},
            )
    table = np.zeros((int(labels_of.max()) + 1 if len(fg) else 1, 3), np.uint8)
    table[labels_of] = fg
    # Colour -> label by a 24-bit key.
    key_of = {int(k): int(v) for k, v in zip(_keys(fg), labels_of, strict=True)}
    out = []
    for m in masks:
        keys = _keys(m.reshape(-1, 3))
        uk, inv = np.unique(keys, return_inverse=True)
        lut = np.array([key_of.get(int(k), 0) for k in uk], np.int64)
        out.append(lut[inv].reshape(m.shape[:2]))
    return out, table


def _keys(c: np.ndarray) -> np.ndarray:
    c = c.astype(np.int64)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def _palette_labels(colours: np.ndarray) -> np.ndarray | None:
    """Labels of colours that all belong to one ``transformers`` palette, else None."""
    if len(colours) == 0:
        return np.zeros(0, np.int64)
    c = colours.astype(np.int64)
    for base in range(2, 17):
        margin = 256 // base
        steps = 255 - c
        if (steps % margin).any() or (steps // margin >= base).any():
            continue
        d = steps // margin
        labels = d[:, 0] * base**2 + d[:, 1] * base + d[:, 2] + 1
        # The palette for n labels uses base int(n ** (1/3)) + 1: check against the real one.
        pal = build_palette(int(labels.max())).astype(np.int64)
        if (pal[labels] == c).all():
            return labels
    return None


def read_mask(src: ImageSource) -> np.ndarray:
    """Read a mask as an (H, W) int64 label map, 0 = background (see the module docstring for the rules).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: unreadable files, negative or fractional labels, odd shapes.
    """
    a, kind = load_mask_array(src)
    if kind == "labels":
        return a
    labels, _ = colours_to_labels([a])
    return labels[0]


# Writing ---------------------------------------------------------------------------------------------------
def _umask() -> int:
    """The process's umask, read without changing it where the OS allows (setting it is process-wide, so a
    thread creating a file during the round trip would get the wrong permissions)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o077)  # elsewhere: the round trip, with a restrictive value in between
    os.umask(umask)
    return umask


def publish(tmp: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move a finished temporary file onto ``dst`` in one step, with the permissions any new file would get.

    ``tempfile.mkstemp`` makes files private (0600); an output file should be readable like one ``open`` made.
    """
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, dst)


@contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """``with atomic_file(path) as tmp:`` write ``tmp`` (beside ``path``, same suffix); it becomes ``path`` when the
    block ends without an error, and is removed otherwise. For writers that stream a file in pieces.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    dst = Path(path)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True (--overwrite) to replace it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=f".tmp{dst.suffix}", dir=dst.parent)
    os.close(fd)
    try:
        yield tmp
        publish(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write_fn: Callable[[str], object], overwrite: bool = False) -> Path:
    """Write a file atomically: ``write_fn(tmp)`` writes a temporary file beside ``path``, then it is moved in.

    The temporary name keeps the suffix, so writers that pick the format from it (PIL) still work. A reader
    never sees a half-written file, and an interrupted write leaves the old file (if any) intact.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    with atomic_file(path, overwrite) as tmp:
        write_fn(tmp)
    return Path(path)


class PngWriter:
    """A PNG written a band of rows at a time, so that an image never has to be in memory whole.

    ``mode`` is "P" (8-bit palette indices, with ``palette``), "L" (8-bit grey), "I;16" (16-bit grey) or "RGB".
    Rows go through the PNG filter "none" and zlib at Pillow's default level, so files read back exactly as
    the arrays written::

        with PngWriter(f, width, height, "P", palette) as png:
            for rows in bands:  # (r, W) uint8
                png.write(rows)
    """

    _COLOUR_TYPE = {"P": (8, 3), "L": (8, 0), "I;16": (16, 0), "RGB": (8, 2)}

    def __init__(self, f, width: int, height: int, mode: str, palette: np.ndarray | None = None, level: int = 6):
        if mode not in self._COLOUR_TYPE:
            raise ValueError(f"PngWriter mode must be one of {sorted(self._COLOUR_TYPE)}, got {mode!r}")
        if mode == "P" and palette is None:
            raise ValueError("a palette PNG needs its palette")
        self.f, self.width, self.height, self.mode = f, int(width), int(height), mode
        self.rows = 0
        self._zip = zlib.compressobj(level)
        depth, colour = self._COLOUR_TYPE[mode]
        f.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", np.array([self.width, self.height], ">u4").tobytes() + bytes([depth, colour, 0, 0, 0]))
        if mode == "P":
            pal = np.zeros((256, 3), np.uint8)
            pal[: min(len(palette), 256)] = np.asarray(palette, np.uint8)[:256]
            self._chunk(b"PLTE", pal.tobytes())

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self.f.write(len(data).to_bytes(4, "big") + kind + data)
        self.f.write((zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF).to_bytes(4, "big"))

    def write(self, rows: np.ndarray) -> None:
        """The next rows: (r, W) for P, L and I;16, (r, W, 3) for RGB."""
        rows = np.asarray(rows)
        dtype = ">u2" if self.mode == "I;16" else np.uint8
        shape = (self.width, 3) if self.mode == "RGB" else (self.width,)
        if rows.shape[1:] != shape or self.rows + len(rows) > self.height:
            raise ValueError(f"rows of shape {rows.shape} do not continue a {self.width}x{self.height} PNG")
        data = np.ascontiguousarray(rows, dtype=dtype).reshape(len(rows), -1).view(np.uint8)
        raw = np.zeros((len(rows), 1 + data.shape[1]), np.uint8)  # column 0: the row's filter, "none"
        raw[:, 1:] = data
        data = self._zip.compress(raw.tobytes())
        if data:
            self._chunk(b"IDAT", data)
        self.rows += len(rows)

    def close(self) -> None:
        if self.rows != self.height:
            raise ValueError(f"PNG closed after {self.rows} of its {self.height} rows")
        self._chunk(b"IDAT", self._zip.flush())
        self._chunk(b"IEND", b"")

    def __enter__(self) -> PngWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()


def label_png_mode(top: int) -> str:
    """The PNG a label map whose largest label is ``top`` is saved as: "P" (palette) up to 255, else "I;16"."""
    if top > 65535:
        raise ValueError(f"labels up to {top} do not fit a PNG (at most 65535)")
    return "P" if top <= 255 else "I;16"


def save_label_png(labels: np.ndarray, path: str | os.PathLike, palette: np.ndarray, overwrite: bool = False) -> Path:
    """Save a label map as an indexed PNG whose palette shows the classes (viewers show colours, readers get
    labels). More than 256 labels do not fit a palette PNG: those are saved as 16-bit grey PNGs.

    Args:
        labels: (H, W) ints >= 0.
        palette: (K, 3) uint8 colours of labels 0..K-1.
    """
    labels = np.asarray(labels)
    mode = label_png_mode(int(labels.max()) if labels.size else 0)
    height, width = labels.shape
    step = max(1, (1 << 22) // max(width, 1))
    with atomic_file(path, overwrite) as tmp, open(tmp, "wb") as f, PngWriter(f, width, height, mode, palette) as png:
        for y in range(0, height, step):
            png.write(labels[y : y + step])
    return Path(path)


def save_rgb(array: np.ndarray, path: str | os.PathLike, overwrite: bool = False, quality: int = 90) -> Path:
    """Save an (H, W, 3) uint8 image; the format follows the suffix (PNG, JPEG, ...)."""
    return save_image(
        Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="RGB"), path, overwrite, quality
    )


def save_image(img: Image.Image, path: str | os.PathLike, overwrite: bool = False, quality: int = 90) -> Path:
    """Save a PIL image atomically; the format follows the suffix (PNG, JPEG, ...)."""
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image suffix; use .png or .jpg")
    kwargs = {"quality": quality} if fmt == "JPEG" else {}
    return atomic_write(path, lambda tmp: img.save(tmp, format=fmt, **kwargs), overwrite)


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files inside a folder (by suffix), sorted by path; hidden files and folders are skipped.

    Args:
        recursive: also every sub-folder's images, at any depth (symbolic links to folders are not followed).
    """
    d = Path(folder)
    if not recursive:
        return sorted(
            p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
    found = []
    for root, dirs, files in os.walk(d):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        found += [Path(root) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found, key=lambda p: p.relative_to(d).parts)

"""Reading images and masks the way users have them, and writing results safely.

Images come as paths, PIL images or numpy arrays: grey, RGB, RGBA, palette and 16-bit files all become
(H, W, 3) uint8. Masks come as binary images, 2-D label maps, palette PNGs or RGB colour masks and all become a
2-D integer label map (0 = background). Every failure names the file and says what to do.

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
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from seggpt.coloring import build_palette

log = logging.getLogger(__name__)

ImageSource = str | os.PathLike | Image.Image | np.ndarray

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")


def describe(src: ImageSource) -> str:
    """A short name for an input, for error messages: the path, or the kind and shape of an in-memory image."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, Image.Image):
        return f"PIL image {src.mode} {src.width}x{src.height}"
    if isinstance(src, np.ndarray):
        return f"array {src.dtype} {tuple(src.shape)}"
    return type(src).__name__


def _open(src: str | os.PathLike, what: str) -> Image.Image:
    path = Path(src).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; pass an image file")
    try:
        img = Image.open(path)
        img.load()  # decode now: a truncated file fails here, with its name, not later in a resize
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"cannot read {what} {path}: {e}. Is it a complete image file (PNG, JPEG, ...)?") from None
    return img


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> numpy, keeping 16-bit and float values (``convert`` would clip them to 8 bits)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img).astype(np.int32)
    return np.asarray(img)


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


def read_image(src: ImageSource) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB.

    Args:
        src: a path, a PIL image or a numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); uint8, 16-bit
            integers (65535 = white), bool, or floats in [0, 1] (or [0, 255] if any value exceeds 1).

    Grey images are repeated over three channels, alpha is dropped, palette images are expanded, and files are
    turned upright by their EXIF orientation (what viewers show, and what masks are drawn on).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an unreadable, truncated or oddly shaped image; the message names it.
    """
    name = describe(src)
    if isinstance(src, (str, os.PathLike)):
        src = ImageOps.exif_transpose(_open(src, "image"))
    if isinstance(src, Image.Image):
        if src.mode in ("RGB", "L", "I;16", "I;16B", "I;16L", "I", "F", "RGBA", "LA"):
            a = _pil_to_array(src)
        else:  # P, 1, CMYK, YCbCr, ...: PIL knows how to make them RGB
            a = np.asarray(src.convert("RGBA" if "transparency" in src.info else "RGB"))
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


def atomic_write(path: str | os.PathLike, write_fn: Callable[[str], object], overwrite: bool = False) -> Path:
    """Write a file atomically: ``write_fn(tmp)`` writes a temporary file beside ``path``, then it is moved in.

    The temporary name keeps the suffix, so writers that pick the format from it (PIL) still work. A reader
    never sees a half-written file, and an interrupted write leaves the old file (if any) intact.

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
        write_fn(tmp)
        publish(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dst


def save_label_png(labels: np.ndarray, path: str | os.PathLike, palette: np.ndarray, overwrite: bool = False) -> Path:
    """Save a label map as an indexed PNG whose palette shows the classes (viewers show colours, readers get
    labels). More than 256 labels do not fit a palette PNG: those are saved as 16-bit grey PNGs.

    Args:
        labels: (H, W) ints >= 0.
        palette: (K, 3) uint8 colours of labels 0..K-1.
    """
    labels = np.asarray(labels)
    top = int(labels.max()) if labels.size else 0
    if top <= 255:
        img = Image.fromarray(labels.astype(np.uint8), mode="P")
        pal = np.zeros((256, 3), np.uint8)
        pal[: min(len(palette), 256)] = palette[:256]
        img.putpalette(pal.reshape(-1).tolist())
    elif top <= 65535:
        img = Image.fromarray(labels.astype(np.uint16))
    else:
        raise ValueError(f"labels up to {top} do not fit a PNG (at most 65535)")
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"), overwrite)


def save_rgb(array: np.ndarray, path: str | os.PathLike, overwrite: bool = False, quality: int = 90) -> Path:
    """Save an (H, W, 3) uint8 image; the format follows the suffix (PNG, JPEG, ...)."""
    img = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="RGB")
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image suffix; use .png or .jpg")
    kwargs = {"quality": quality} if fmt == "JPEG" else {}
    return atomic_write(path, lambda tmp: img.save(tmp, format=fmt, **kwargs), overwrite)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside a folder (by suffix), sorted by name; hidden files are skipped."""
    d = Path(folder)
    return sorted(
        p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )

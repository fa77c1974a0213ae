"""Reading benchmark files, and errors that name the layout a dataset folder should have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class LayoutError(FileNotFoundError):
    """A dataset folder that does not have the published layout."""


def layout_error(what: str, layout: str) -> LayoutError:
    return LayoutError(f"{what}. Expected layout:\n{layout.rstrip()}")


def require_dir(path: Path | None, layout: str, what: str) -> Path:
    if path is None:
        raise layout_error(f"{what}: no data folder given (--data DIR)", layout)
    if not path.is_dir():
        raise layout_error(f"{what} folder {path} not found", layout)
    return path


def require_file(path: Path, layout: str, what: str) -> Path:
    if not path.is_file():
        raise layout_error(f"{what} {path} not found", layout)
    return path


def _opened(path: Path, what: str) -> Image.Image:
    """A benchmark file opened and decoded through :func:`seggpt.io.open_image` (the package's one reading path):
    a missing, corrupt, non-image or too large file is one ``ValueError`` / ``FileNotFoundError`` naming it."""
    from seggpt.io import open_image

    im = open_image(path, what)
    try:
        im.load()
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ValueError(f"cannot read {what} {path}: {e}; replace or remove the file") from None
    return im


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB (grey, palette, RGBA and 16-bit files converted)."""
    with _opened(path, "image") as im:
        if im.mode in ("I;16", "I;16B", "I"):
            a = np.asarray(im, np.float64)
            a = (a * (255.0 / max(float(a.max()), 1.0))).astype(np.uint8)
            return np.repeat(a[..., None], 3, axis=2)
        return np.asarray(im.convert("RGB"))


def read_raw_mask(path: Path) -> np.ndarray:
    """The stored values of a mask file: palette indices for 'P' PNGs, grey levels, or (H, W, 3) colours."""
    with _opened(path, "mask") as im:
        a = np.asarray(im)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if a.ndim == 3 and (a == a[..., :1]).all():
        a = a[..., 0]  # grey stored as RGB
    return a


def read_binary_mask(path: Path, threshold: int = 128) -> np.ndarray:
    """(H, W) uint8 {0, 1}: a mask binarised at ``threshold`` (grey levels, or the max over colour channels)."""
    a = read_raw_mask(path)
    if a.ndim == 3:
        a = a.max(axis=2)
    return (a >= threshold).astype(np.uint8)


def find_with_suffix(folder: Path, stem: str, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> Path | None:
    for s in suffixes:
        for cand in (folder / f"{stem}{s}", folder / f"{stem}{s.upper()}"):
            if cand.is_file():
                return cand
    return None


def list_images(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def natural_key(s: str) -> tuple:
    """Sort '2' before '10'."""
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


def split_file_stems(split_file: Path, known: set[str], folder: Path) -> list[str]:
    """The stems a split file names (one a line, its first word), in the file's order; each must be in ``known``,
    the stems found in ``folder`` (named in the error)."""
    if not Path(split_file).is_file():
        raise FileNotFoundError(f"--split-file {split_file} not found")
    wanted = [ln.split()[0] for ln in Path(split_file).read_text().splitlines() if ln.strip()]
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise ValueError(f"{split_file} names {len(unknown)} stem(s) not in {folder}: {unknown[:3]}")
    return wanted

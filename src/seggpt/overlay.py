"""Overlays: an answer drawn over its image so that a person sees it on any photo.

The model's palette (:func:`seggpt.coloring.build_palette`) is what the model paints and what label PNGs carry,
but as an overlay it fails: label 1 is white, invisible at half opacity on a white wall, a bright sky or a pale
face. Overlays use their own colours instead: saturated, far apart, with magenta first (rare in photographs of
skin, sky, foliage or walls), each region filled at half opacity and outlined by a thin contour in its full
colour, so that regions stay readable even where a fill colour resembles the photo.
"""

from __future__ import annotations

import colorsys

import numpy as np

OVERLAY_ALPHA = 0.5
# Labels 1..10; more labels take hues spread by the golden angle (fully saturated, alternately bright and deep).
_FIRST = np.array(
    [
        (255, 0, 255),  # magenta
        (0, 255, 0),  # green
        (255, 128, 0),  # orange
        (0, 96, 255),  # blue
        (255, 255, 0),  # yellow
        (0, 255, 255),  # cyan
        (255, 0, 0),  # red
        (128, 0, 255),  # violet
        (255, 0, 128),  # rose
        (128, 255, 0),  # lime
    ],
    np.uint8,
)


def overlay_colours(num_labels: int) -> np.ndarray:
    """Colours of labels 0..K for overlays: (K + 1, 3) uint8, row 0 (background, never drawn) black."""
    out = np.zeros((max(num_labels, 0) + 1, 3), np.uint8)
    first = min(num_labels, len(_FIRST))
    out[1 : first + 1] = _FIRST[:first]
    for k in range(len(_FIRST) + 1, num_labels + 1):
        hue = (0.1 + 0.381966 * k) % 1.0
        out[k] = np.round(np.array(colorsys.hsv_to_rgb(hue, 1.0, 1.0 if k % 2 else 0.75)) * 255)
    return out


def contour_width(height: int, width: int) -> int:
    """Contour thickness in pixels: 1 up to 1500 px a side, then about one pixel per 1000, so that the contour
    stays visible when a large image is viewed whole."""
    return max(1, round(max(height, width) / 1000))


def contours(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """(H, W) bool: labelled pixels (> 0) within ``width`` pixels (chessboard distance) of another label.

    Edges of the image are not contours (a region running off the picture is not outlined along the border).
    """
    from scipy import ndimage

    size = 2 * width + 1
    lo = ndimage.minimum_filter(labels, size=size, mode="nearest")
    hi = ndimage.maximum_filter(labels, size=size, mode="nearest")
    return (lo != hi) & (labels > 0)


def draw_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    alpha: float = OVERLAY_ALPHA,
    colours: np.ndarray | None = None,
    width: int | None = None,
    out: np.ndarray | None = None,
    above: int = 0,
) -> np.ndarray:
    """Fill each labelled region at ``alpha`` with its colour and outline it in its full colour.

    Works a band of rows at a time, so a large image needs little memory beyond itself (pass ``out=image`` to
    draw in place).

    Args:
        image: (H, W, 3) uint8.
        labels: (H, W) ints >= 0; 0 is left as it is.
        alpha: fill opacity in [0, 1].
        colours: (K + 1, 3) uint8 colours of labels 0..K (default :func:`overlay_colours`).
        width: contour thickness in pixels (default :func:`contour_width`; 0: no contour).
        out: where to write (may be ``image``); default a new array.
        above: for a band of a larger picture: ``labels`` starts this many rows above the band and may run on below
            it (the neighbouring rows decide where contours fall at the band's edges).

    Returns:
        (H, W, 3) uint8.
    """
    image, labels = np.asarray(image), np.asarray(labels)
    height, w = image.shape[:2]
    if image.ndim != 3 or image.shape[2] != 3 or labels.ndim != 2 or labels.shape[1] != w:
        raise ValueError(f"overlay: image {image.shape} and labels {labels.shape} must be (H, W, 3) and (H, W)")
    if not 0 <= above <= labels.shape[0] - height:
        raise ValueError(f"overlay: labels {labels.shape} do not cover the image's {height} rows from row {above}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
    top = int(labels.max()) if labels.size else 0
    colours = overlay_colours(top) if colours is None else np.asarray(colours, np.uint8)
    if top >= len(colours):
        raise ValueError(f"overlay: label {top} has no colour ({len(colours)} colours given)")
    width = contour_width(height, w) if width is None else width
    out = np.empty_like(image) if out is None else out
    step = max(1, (1 << 20) // max(w, 1))
    for y0 in range(0, height, step):
        y1 = min(height, y0 + step)
        # label rows of the band, and around it the rows that decide its contours
        a, b = max(0, above + y0 - width), min(labels.shape[0], above + y1 + width)
        lab = labels[above + y0 : above + y1]
        img = image[y0:y1].astype(np.float32)
        fg = lab > 0
        col = colours[lab].astype(np.float32)
        blend = np.where(fg[..., None], img * (1 - alpha) + col * alpha, img)
        if width > 0:
            edge = contours(labels[a:b], width)[above + y0 - a : above + y1 - a]
            blend[edge] = col[edge]
        out[y0:y1] = np.rint(blend).astype(np.uint8)
    return out

"""Frames in, annotations out: frame folders, video files (PyAV), arrays; DAVIS palette PNGs; overlay videos.

Frames are read lazily, one at a time, so a long video never sits in memory. Label maps are written as the
DAVIS benchmark stores its annotations: 8-bit palette PNGs whose pixel values are the object ids (0 =
background) and whose palette is the PASCAL VOC / DAVIS colour map, so any DAVIS tool reads them.

PyAV (``pip install 'seggpt[video]'``) is needed only for video files.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from seggpt.io import publish, read_image, save_label_png

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif", ".wmv", ".flv")
# Ids a palette PNG can hold.
MAX_DAVIS_ID = 255


# Palette ---------------------------------------------------------------------------------------------------
def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map: (256, 3) uint8, id 0 black, 1 dark red, 2 green, 3 olive, ...

    Colour of id i: the bits of i are dealt out in turn to R, G and B, from each channel's top bit down.
    """
    ids = np.arange(256)
    palette = np.zeros((256, 3), np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> (3 * shift + channel)) & 1
            palette[:, channel] |= bit << (7 - shift)
    return palette.astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5, palette: np.ndarray | None = None) -> np.ndarray:
    """Draw objects over a frame: (H, W, 3) uint8 and (H, W) ids -> (H, W, 3) uint8.

    Background pixels are left as they are; each object is filled at ``alpha`` and outlined in its overlay colour
    (:func:`seggpt.overlay.draw_overlay`: saturated colours, readable on any footage; the DAVIS palette, dark red
    first, is what the annotation PNGs carry), or in ``palette`` when given.
    """
    from seggpt.overlay import draw_overlay

    if image.shape[:2] != labels.shape:
        raise ValueError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
    return draw_overlay(image, labels, alpha, palette)


# DAVIS annotations -----------------------------------------------------------------------------------------
def write_davis_png(path: str | os.PathLike, labels: np.ndarray, overwrite: bool = False) -> Path:
    """Save a label map (H, W) of ids 0..255 as a DAVIS annotation: a palette ('P') PNG, pixel value = id."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a label map must be (H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > MAX_DAVIS_ID):
        raise ValueError(f"ids must lie in 0..{MAX_DAVIS_ID} for a palette PNG, got {labels.min()}..{labels.max()}")
    return save_label_png(labels, path, davis_palette(), overwrite=overwrite)


def read_davis_png(path: str | os.PathLike) -> np.ndarray:
    """Read a DAVIS annotation: a palette PNG -> (H, W) int64 ids (the palette indices)."""
    with Image.open(path) as img:
        if img.mode != "P":
            raise ValueError(f"{path} is a {img.mode!r} image, not a palette PNG as DAVIS annotations are")
        return np.asarray(img).astype(np.int64)


# Frame sources ---------------------------------------------------------------------------------------------
class FrameSource:
    """A sequence of frames read lazily: iterate for (H, W, 3) uint8 arrays.

    Attributes:
        names: one file stem per frame (the output PNG names), or None when unknown in advance (some videos).
        fps: frames per second of a video file, or None.
        description: where the frames come from, for messages.
    """

    def __init__(
        self,
        frames: Callable[[], Iterator[np.ndarray]],
        names: list[str] | None,
        fps: float | None = None,
        description: str = "frames",
    ) -> None:
        self._frames = frames
        self.names = names
        self.fps = fps
        self.description = description

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._frames()

    def __len__(self) -> int:
        if self.names is None:
            raise TypeError(f"the number of frames of {self.description} is not known before decoding")
        return len(self.names)

    def name(self, index: int) -> str:
        """The file stem for frame ``index`` (DAVIS style ``00000`` when the source has no names)."""
        if self.names is not None and index < len(self.names):
            return self.names[index]
        return f"{index:05d}"


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def open_frames(src: str | os.PathLike | np.ndarray | Sequence[Any] | FrameSource) -> FrameSource:
    """Frames from a folder of images, a video file, an array (T, H, W, 3), or a list of frames / paths.

    A folder's images are taken in natural sort order of their names (``2.jpg`` before ``10.jpg``).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: an empty folder, an unreadable video, or an array of the wrong shape.
    """
    if isinstance(src, FrameSource):
        return src
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise FileNotFoundError(f"no such folder or video file: {path}")
        if path.is_dir():
            return _folder_source(path)
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise ValueError(f"{path} is a single image; pass a folder of frames or a video file")
        return _video_source(path)  # any other file is tried as a video; unreadable ones raise ValueError
    if isinstance(src, np.ndarray):
        if src.ndim not in (3, 4):
            raise ValueError(f"an array of frames must be (T, H, W, 3) or (T, H, W), got shape {src.shape}")
        names = [f"{i:05d}" for i in range(len(src))]
        return FrameSource(lambda: (read_image(f) for f in src), names, description="array of frames")
    if isinstance(src, Iterable):
        items = list(src)
        names = [Path(f).stem if isinstance(f, (str, os.PathLike)) else f"{i:05d}" for i, f in enumerate(items)]
        return FrameSource(lambda: (read_image(f) for f in items), names, description="list of frames")
    raise ValueError(f"cannot read frames from a {type(src).__name__}; pass a folder, a video file or arrays")


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _folder_source(folder: Path) -> FrameSource:
    files = sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        ),
        key=lambda p: _natural_key(p.name),
    )
    if not files:
        raise ValueError(f"{folder} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        raise ValueError(f"{folder} holds several images with the same name stem; their outputs would collide")
    return FrameSource(lambda: (read_image(p) for p in files), stems, description=str(folder))


def _import_av() -> Any:
    try:
        import av
    except ImportError as e:
        raise ValueError(
            "reading or writing video files needs PyAV: pip install 'seggpt[video]' (or pass a folder of frames)"
        ) from e
    return av


def _video_source(path: Path) -> FrameSource:
    av = _import_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            count = int(stream.frames or 0)
    except av.FFmpegError as e:
        raise ValueError(f"cannot read {path} as a video: {e}") from e

    def frames() -> Iterator[np.ndarray]:
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as e:
            raise ValueError(f"cannot decode {path}: {e}") from e

    # The container's frame count is a header field; trust it only to name outputs, never to stop early.
    names = [f"{i:05d}" for i in range(count)] if count else None
    return FrameSource(frames, names, fps=fps, description=str(path))


# Video writing ---------------------------------------------------------------------------------------------
class VideoWriter:
    """Encode RGB frames to a video file with PyAV (H.264 for .mp4/.mkv/.mov, else MPEG-4 Part 2), atomically.

    Use as a context manager; odd frame sizes are padded by one pixel (the encoders need even sizes).
    """

    def __init__(self, path: str | os.PathLike, fps: float = 24.0, overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite=True (--overwrite) to replace it")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._av = _import_av()
        self.fps = fps
        self.overwrite = overwrite
        self._container = None
        self._stream = None
        self._tmp: str | None = None

    def __enter__(self) -> VideoWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix, dir=self.path.parent)
        os.close(fd)
        try:
            self._container = self._av.open(self._tmp, mode="w")
        except self._av.FFmpegError as e:
            os.unlink(self._tmp)
            raise ValueError(f"cannot write a video named {self.path} (unknown container?): {e}") from e
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 frame; all frames must share the first one's size."""
        h, w = frame.shape[:2]
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._stream is None:
            codec = "libx264" if self.path.suffix.lower() in (".mp4", ".mkv", ".mov") else "mpeg4"
            rate = Fraction(self.fps).limit_denominator(1001)
            self._stream = self._container.add_stream(codec, rate=rate)
            self._stream.width, self._stream.height = frame.shape[1], frame.shape[0]
            self._stream.pix_fmt = "yuv420p"
        elif (frame.shape[1], frame.shape[0]) != (self._stream.width, self._stream.height):
            raise ValueError("all frames of a video must have the same size")
        vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if self._stream is not None and exc_type is None:
                for packet in self._stream.encode():  # flush the encoder
                    self._container.mux(packet)
            self._container.close()
            if exc_type is None:
                if self.path.exists() and not self.overwrite:
                    raise FileExistsError(f"{self.path} appeared while writing; not replacing it")
                publish(self._tmp, self.path)
        finally:
            if self._tmp and os.path.exists(self._tmp):
                os.unlink(self._tmp)


def write_video(
    path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 24.0, overwrite: bool = False
) -> Path:
    """Encode (H, W, 3) uint8 frames into a video file (see :class:`VideoWriter`)."""
    with VideoWriter(path, fps=fps, overwrite=overwrite) as writer:
        for f in frames:
            writer.write(f)
    return Path(path)

"""The web app's server: one page, one JSON endpoint that segments, and downloads of the results.

Flask (a small, long-kept library with no heavy dependencies) serves a hand-written page from ``static/``. The
browser sends the examples, their masks (uploaded files or label maps painted on a canvas), the targets (images or
one video) and the settings in one multipart request; the server checks every file against the limits, runs the
predictor and keeps the results in memory for download.

Bad input never reaches the user as a stack trace: every user error becomes ``{"error": "..."}`` with status 400
(or 413 for oversized uploads) that the page shows in a red box.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import logging
import secrets
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
TASKS = ("semantic", "instance")
ENSEMBLES = ("auto", "feature", "spatial", "none")
# Overlay opacity of the predicted colours over the target (the label map itself is a separate download).
OVERLAY_ALPHA = 0.5
# Suffixes read as video targets; GIF and animated PNG/WebP need only Pillow, the others seggpt.io's reader.
VIDEO_SUFFIXES = (".gif", ".mp4", ".webm", ".mov", ".avi", ".mkv", ".apng")


@dataclass(frozen=True)
class Limits:
    """What one request may carry. The defaults suit a laptop; raise them with the ``seggpt app`` flags.

    Attributes:
        max_upload_mb: total size of one request (all files together), in MiB.
        max_pixels: pixels of any one image or video frame (width * height), checked before decoding.
        max_examples: example images in one request.
        max_targets: target images in one request.
        max_frames: frames of a video target.
    """

    max_upload_mb: float = 64.0
    max_pixels: int = 25_000_000
    max_examples: int = 8
    max_targets: int = 32
    max_frames: int = 300

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


class UserError(ValueError):
    """A problem with what the user sent; its message is shown in the page as it is."""

    status = 400


# Decoding uploads ----------------------------------------------------------------------------------------


def _open_checked(data: bytes, what: str, limits: Limits) -> Image.Image:
    """Open an upload, refusing non-images and oversized images before decoding any pixels, through the reading
    path of every command (:func:`seggpt.io.open_image`) with the app's limit and the app's words."""
    from seggpt.io import check_pixels, open_image

    if not data:
        raise UserError(f"{what} is empty (0 bytes): choose the file again")
    try:
        img = open_image(data, what, max_pixels=2**62)  # the size is checked below, in the app's words
    except ValueError:
        raise UserError(f"{what} is not an image Pillow can read (use PNG, JPEG, BMP, TIFF, WebP or GIF)") from None
    w, h = img.size
    try:
        check_pixels(w, h, what, limits.max_pixels)
    except ValueError:
        raise UserError(
            f"{what} is {w}x{h} = {w * h / 1e6:.1f} MP; the limit is {limits.max_pixels / 1e6:.1f} MP per image "
            "(resize it, or start the app with a larger --max-megapixels)"
        ) from None
    if w == 0 or h == 0:
        raise UserError(f"{what} has no pixels ({w}x{h})")
    return img


def _load(img: Image.Image, what: str) -> Image.Image:
    """Decode the pixels, turning Pillow's errors for truncated or corrupt files into a clear message."""
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{what} is damaged or truncated and cannot be decoded ({e}); upload the file again") from None
    return img


def read_upload_image(data: bytes, what: str, limits: Limits) -> np.ndarray:
    """An uploaded image -> (H, W, 3) uint8, with the limits and clear messages for bad files.

    Decoded by ``seggpt.io.read_image`` after the EXIF turn, exactly as the library reads an image file, so a
    result in the page equals the library's on the same file."""
    from seggpt.io import read_image

    img = _load(_open_checked(data, what, limits), what)
    try:
        # a writable copy: torch.from_numpy warns on the read-only arrays Pillow hands out
        return np.array(read_image(ImageOps.exif_transpose(img)))
    except ValueError as e:
        raise UserError(f"{what}: {e}") from None


def read_upload_mask(data: bytes, what: str, limits: Limits) -> Image.Image:
    """An uploaded mask, decoded but left as a Pillow image: the predictor reads binary, label, palette and colour
    masks itself, so they mean the same here as in the library."""
    return _load(_open_checked(data, what, limits), what)


def read_painted_mask(data: bytes, what: str, limits: Limits) -> np.ndarray:
    """A mask painted in the page: a PNG whose red channel holds the label of each pixel -> (H, W) int64."""
    img = _load(_open_checked(data, what, limits), what)
    arr = np.asarray(img.convert("RGBA"))
    return arr[..., 0].astype(np.int64)


def read_video(
    data: bytes, filename: str, what: str, limits: Limits, max_frames: int | None = None
) -> list[np.ndarray]:
    """A video upload -> list of (H, W, 3) uint8 frames. Animated GIF/PNG/WebP via Pillow; other containers via
    ``seggpt.video_io`` (PyAV, the ``video`` extra).

    Args:
        max_frames: stop after this many frames (the first frame alone: 1); None reads all, refusing videos longer
            than ``limits.max_frames``.
    """
    import os
    import tempfile

    def frames_of() -> Iterator[np.ndarray]:
        suffix = Path(filename).suffix.lower()
        if suffix in (".gif", ".png", ".apng", ".webp"):
            img = _open_checked(data, what, limits)
            for frame in ImageSequence.Iterator(img):
                yield np.asarray(frame.convert("RGB"), dtype=np.uint8).copy()
            return
        try:
            from seggpt.video_io import open_frames
        except ImportError:
            raise UserError(f"{what}: {suffix or 'these'} videos cannot be read here; upload an animated GIF") from None
        fd, tmp = tempfile.mkstemp(suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            yield from open_frames(tmp)
        finally:
            os.unlink(tmp)

    frames: list[np.ndarray] = []
    gen = frames_of()
    try:
        # Count while decoding: a container's frame count is only a header field.
        for fr in gen:
            if max_frames is not None and len(frames) >= max_frames:
                break
            if len(frames) >= limits.max_frames:
                raise UserError(f"{what} has more than {limits.max_frames} frames, the limit (--max-frames)")
            if fr.shape[0] * fr.shape[1] > limits.max_pixels:
                raise UserError(f"{what}: its frames are larger than the limit of {limits.max_pixels / 1e6:.1f} MP")
            frames.append(np.ascontiguousarray(fr, dtype=np.uint8))
    except UserError:
        raise
    except (ValueError, OSError, RuntimeError, SyntaxError, EOFError) as e:
        raise UserError(f"{what} could not be decoded as a video ({e}); try an MP4 or an animated GIF") from None
    finally:
        gen.close()
    return frames


# Encoding results -----------------------------------------------------------------------------------------


def png_bytes(array: np.ndarray) -> bytes:
    """(H, W) label map or (H, W, 3) uint8 image -> PNG bytes. Label maps are 8-bit when they fit, else 16-bit."""
    if array.ndim == 2:
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(f"labels must be in [0, 65535] for a PNG label map, got [{array.min()}, {array.max()}]")
        img = (
            Image.fromarray(array.astype(np.uint8), mode="L")
            if array.max(initial=0) < 256
            else Image.fromarray(array.astype(np.uint16))
        )
    else:
        img = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The regions filled at ``alpha`` and outlined in the overlay colours every command uses
    (:func:`seggpt.overlay.draw_overlay`): (H, W, 3) uint8."""
    from seggpt.overlay import draw_overlay

    return draw_overlay(np.asarray(image, np.uint8), np.asarray(labels), alpha)


def _safe_stem(name: str, index: int) -> str:
    stem = Path(name or f"target_{index}").stem
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:60] or f"target_{index}"
    return f"{index:03d}_{keep}"


class ResultStore:
    """The last few runs' files in memory, for download. Old runs are dropped first."""

    def __init__(self, max_runs: int = 8) -> None:
        self.max_runs = max_runs
        self._runs: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, files: dict[str, bytes]) -> str:
        run_id = secrets.token_hex(8)
        with self._lock:
            self._runs[run_id] = files
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
        return run_id

    def get(self, run_id: str) -> dict[str, bytes] | None:
        with self._lock:
            return self._runs.get(run_id)


# The segmentation service ---------------------------------------------------------------------------------


class Segmenter:
    """Holds one predictor; runs one request at a time (prompts and predictions share the predictor's cache).

    Args:
        model: None for the embedded model, a SegGPT, or a checkpoint path or Hugging Face hub id (any source
            ``load_model`` reads).
        device: "auto" (cuda, then mps, then cpu), "cpu", "cuda:1", ...
        dtype: of the model: a torch dtype, or "fp32", "bf16", "fp16".
        image_size, threshold, keep_aspect: as :class:`seggpt.predictor.SegGPTPredictor` takes them (None: the
            model's own).
    """

    def __init__(
        self,
        model: Any = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = torch.float32,
        image_size: int | None = None,
        threshold: float | None = None,
        keep_aspect: bool = False,
    ):
        from seggpt.checkpoint import default_image_size, default_threshold
        from seggpt.devices import resolve_device
        from seggpt.predictor import SegGPTPredictor

        device = resolve_device(device)
        from_source = isinstance(model, (str, Path, type(None)))
        # A model whose video size differs (the embedded model's EMBEDDED_VIDEO_IMAGE_SIZE) is loaded again at it
        # for the first video, by a video predictor of its own that turns that size to each video's orientation.
        # Predictors loaded from the source keep its recent frames for video, as `seggpt video` does
        # (checkpoint.default_video_context).
        own_video_size = (
            image_size is None and from_source and default_image_size(model, video=True) != default_image_size(model)
        )
        self._video_load = (model, device, dtype) if own_video_size else None
        self._video: Any = None  # that video predictor, once the first video comes
        if model is None:
            self.weights_name = "embedded seggpt_small"
        elif isinstance(model, (str, Path)):
            # A file's name; a hub id (no such local path) as given, BAAI/SegGPT rather than SegGPT.
            self.weights_name = Path(model).name if Path(model).exists() else str(model)
        else:
            self.weights_name = type(model).__name__
        self.predictor = SegGPTPredictor(
            model=model,
            device=device,
            dtype=dtype,
            image_size=image_size if from_source else None,
            threshold=threshold,
            keep_aspect=keep_aspect,
        )
        self.model = self.predictor.model
        self.device = str(device)
        # Video is read at the model's video threshold whichever predictor runs it, as `seggpt video` reads it.
        if threshold is None and from_source:
            threshold = default_threshold(model, video=True)
        self.video_threshold = self.predictor.threshold if threshold is None else threshold
        self._detail: Any = None  # the predictor that also paints at DETAIL_SCALES, once a request asks for it
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        cfg = self.model.config
        return {
            "weights": self.weights_name,
            "device": self.device,
            "image_size": list(cfg.image_size),
            "keep_aspect": self.predictor.keep_aspect,
            "embed_dim": cfg.embed_dim,
            "depth": cfg.depth,
            "parameters_m": round(sum(p.numel() for p in self.model.parameters()) / 1e6, 1),
            "threshold": self.predictor.threshold,
            "video_threshold": self.video_threshold,
        }

    def run_images(
        self,
        examples: list[np.ndarray],
        masks: list[Any],
        targets: list[np.ndarray],
        task: str,
        ensemble: str | None,
        num_labels: int | None,
        threshold: float | None = None,
        detail: bool = False,
    ) -> list[Any]:
        """Segment the targets like the examples; ``threshold`` for this request only (None: the predictor's).

        ``detail``: each target is also painted at the larger sizes of :data:`DETAIL_SCALES` and the answers are
        averaged (``seggpt segment --scales 1,1.5``: finer on photographs, about 4 times the time).
        """
        with self._lock:
            if detail and self._detail is None:  # views of this app's model: its modules, no second copy
                from seggpt.predictor import SegGPTPredictor

                p = self.predictor
                self._detail = SegGPTPredictor(
                    p.model,
                    device=p.device,
                    dtype=p.dtype,
                    threshold=p.threshold,
                    scales=DETAIL_SCALES,
                    keep_aspect=p.keep_aspect,
                )
            predictor = self._detail if detail else self.predictor
            with _threshold_for(predictor, threshold):
                predictor.set_prompts(examples, masks, task=task, ensemble=ensemble, num_labels=num_labels)
                return [predictor.predict(t) for t in targets]

    def run_video(
        self, frames: list[np.ndarray], first_mask: np.ndarray, task: str, threshold: float | None = None
    ) -> list[np.ndarray]:
        """Propagate the first frame's objects through the video -> one (H, W) label map per frame."""
        from seggpt.video import SegGPTVideoPredictor

        threshold = self.video_threshold if threshold is None else threshold
        with self._lock:
            if self._video_load is None:  # this app's predictor (and its model), at this request's threshold
                with _threshold_for(self.predictor, threshold):
                    vp = SegGPTVideoPredictor(predictor=self.predictor, task=task)
                    return [np.asarray(labels) for _, labels in vp.propagate(frames, first_masks=first_mask)]
            if self._video is None:
                model, device, dtype = self._video_load
                self._video = SegGPTVideoPredictor(model, device=device, dtype=dtype)
            self._video.task, self._video.threshold = task, threshold
            return [np.asarray(labels) for _, labels in self._video.propagate(frames, first_masks=first_mask)]


DETAIL_SCALES = (1.0, 1.5)  # "two sizes" on the page: the test-time views docs/embedded-model.md measured


@contextlib.contextmanager
def _threshold_for(predictor: Any, threshold: float | None):
    """The predictor decodes at ``threshold`` inside the block (None: unchanged), and at its own after it."""
    own = predictor.threshold
    if threshold is not None:
        predictor.threshold = threshold
    try:
        yield
    finally:
        predictor.threshold = own


def _parse_threshold(value: str | None) -> float | None:
    from seggpt.predictor import check_threshold

    if value is None or value.strip() in ("", "auto"):
        return None
    try:
        t = float(value)
    except ValueError:
        raise UserError(f"threshold must be a number between 0 and 1 or empty, got {value!r}") from None
    try:
        return check_threshold(t)  # the predictor's rule, said in the page's words
    except ValueError:
        raise UserError(
            f"threshold must be between 0 and 1 (exclusive), got {value}; empty uses the model's own"
        ) from None


def _parse_choice(value: str | None, allowed: tuple[str, ...], name: str, default: str) -> str:
    value = (value or default).strip().lower()
    if value not in allowed:
        raise UserError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _parse_num_labels(value: str | None) -> int | None:
    if value is None or value.strip() in ("", "auto"):
        return None
    try:
        n = int(value)
    except ValueError:
        raise UserError(f"number of labels must be a whole number or empty, got {value!r}") from None
    if not 1 <= n <= 1000:
        raise UserError(f"number of labels must be between 1 and 1000, got {n}")
    return n


def create_app(
    model: Any = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = torch.float32,
    limits: Limits | None = None,
    segmenter: Segmenter | None = None,
    image_size: int | None = None,
    threshold: float | None = None,
    keep_aspect: bool = False,
):
    """Build the Flask application.

    Args:
        model: None (the embedded model), a SegGPT, or a checkpoint path or Hugging Face hub id.
        device: for the model: "auto" (cuda, then mps, then cpu), "cpu", "cuda:1", ...
        dtype: of the model: a torch dtype, or "fp32", "bf16", "fp16".
        limits: upload limits (defaults: :class:`Limits`).
        segmenter: an existing :class:`Segmenter` to share (then ``model``, ``device``, ``dtype`` are ignored).
        image_size, threshold, keep_aspect: as :class:`seggpt.predictor.SegGPTPredictor` takes them (None: the
            model's own).

    Returns:
        a ``flask.Flask`` app; serve it with :func:`serve` or any WSGI server.
    """
    try:
        from flask import Flask, jsonify, request, send_file, send_from_directory
        from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
    except ImportError as e:  # the optional extra
        raise ImportError("the web app needs Flask: pip install 'seggpt[app]'") from e

    limits = limits or Limits()
    seg = segmenter or Segmenter(
        model, device=device, dtype=dtype, image_size=image_size, threshold=threshold, keep_aspect=keep_aspect
    )
    store = ResultStore()
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = limits.max_upload_bytes
    # Files above this size are spooled to disk by Werkzeug instead of held in memory.
    app.config["MAX_FORM_MEMORY_SIZE"] = limits.max_upload_bytes
    app.config["MAX_FORM_PARTS"] = 4 * (limits.max_examples + limits.max_targets) + 64
    app.extensions["seggpt"] = {"segmenter": seg, "store": store, "limits": limits}

    def error(message: str, status: int = 400):
        return jsonify({"error": message}), status

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(e):
        return error(
            f"the upload is larger than the limit of {limits.max_upload_mb:g} MB for one request "
            "(send fewer or smaller files, or start the app with a larger --max-upload-mb)",
            413,
        )

    @app.errorhandler(HTTPException)
    def _http(e):
        return error(f"{e.code} {e.name}: {e.description}", e.code or 500)

    @app.get("/")
    def index():
        return send_from_directory(STATIC_DIR, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name: str):
        return send_from_directory(STATIC_DIR, name)

    @app.get("/api/info")
    def info():
        return jsonify(
            {
                **seg.info(),
                "limits": {**asdict(limits), "max_upload_bytes": limits.max_upload_bytes},
                "tasks": list(TASKS),
                "ensembles": list(ENSEMBLES),
                "video": _video_available(),
            }
        )

    @app.post("/api/segment")
    def segment():
        t0 = time.perf_counter()
        try:
            payload = _segment(request, seg, limits)
        except UserError as e:
            return error(str(e), e.status)
        except HTTPException:  # too large, too many parts: the handlers above answer
            raise
        except (ValueError, FileNotFoundError) as e:  # the library's own checks: messages written for users
            log.info("rejected request: %s", e)
            return error(str(e))
        except Exception as e:  # a bug, not the user's fault: log it, say so briefly
            log.exception("segmentation failed")
            return error(f"internal error ({type(e).__name__}: {e}); see the server log", 500)
        files = payload.pop("files")
        run_id = store.add(files)
        for r in payload["results"]:
            r["files"] = {k: f"/api/result/{run_id}/{v}" for k, v in r["files"].items()}
        payload["prompts"] = [f"/api/result/{run_id}/{v}" for v in payload["prompts"]]
        payload["id"] = run_id
        payload["zip"] = f"/api/result/{run_id}/seggpt_results.zip"
        payload["seconds"] = round(time.perf_counter() - t0, 3)
        return jsonify(payload)

    @app.post("/api/first_frame")
    def first_frame():
        video = request.files.get("video")
        if video is None or not video.filename:
            return error("send a video file as 'video'")
        try:
            frames = read_video(video.read(), video.filename, f"the video ({video.filename})", limits, max_frames=1)
        except UserError as e:
            return error(str(e), e.status)
        if not frames:
            return error(f"the video ({video.filename}) has no frames")
        return send_file(io.BytesIO(png_bytes(frames[0])), mimetype="image/png", download_name="frame0.png")

    @app.get("/api/result/<run_id>/<name>")
    def result_file(run_id: str, name: str):
        files = store.get(run_id)
        if files is None:
            return error("these results are no longer kept (only the last runs are); run again", 404)
        if name == "seggpt_results.zip":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for k, v in files.items():
                    z.writestr(k, v)
            buf.seek(0)
            return send_file(buf, mimetype="application/zip", as_attachment=True, download_name=name)
        if name not in files:
            return error(f"no file {name!r} in these results", 404)
        mimetype = "image/gif" if name.endswith(".gif") else "image/png"
        return send_file(io.BytesIO(files[name]), mimetype=mimetype, download_name=name)

    return app


def _video_available() -> bool:
    try:
        import seggpt.video  # noqa: F401
    except ImportError:
        return False
    return True


def _segment(request, seg: Segmenter, limits: Limits) -> dict[str, Any]:
    """Read one request, run the model, and return the JSON payload plus the result files."""
    form, files = request.form, request.files
    task = _parse_choice(form.get("task"), TASKS, "task", "semantic")
    ensemble = _parse_choice(form.get("ensemble"), ENSEMBLES, "ensemble", "auto")
    num_labels = _parse_num_labels(form.get("num_labels"))
    threshold = _parse_threshold(form.get("threshold"))
    detail = (form.get("detail") or "") not in ("", "0", "false", "off")
    if detail and ensemble == "spatial":
        raise UserError("two sizes work with the feature ensemble or none, not the spatial one: pick another ensemble")

    # Examples come as example_<i> with an uploaded mask_<i> or a painted_<i> label map.
    indices = sorted(int(k.split("_", 1)[1]) for k in files if k.startswith("example_") and k[8:].isdigit())
    if not indices:
        raise UserError("add at least one example image with its mask")
    if len(indices) > limits.max_examples:
        raise UserError(f"{len(indices)} examples sent; the limit is {limits.max_examples} (--max-examples)")
    examples, masks = [], []
    for n, i in enumerate(indices, 1):
        f = files[f"example_{i}"]
        what = f"example {n} ({f.filename or 'unnamed'})"
        img = read_upload_image(f.read(), what, limits)
        if f"mask_{i}" in files and files[f"mask_{i}"].filename:
            m = files[f"mask_{i}"]
            mask = read_upload_mask(m.read(), f"the mask of example {n} ({m.filename})", limits)
            size = mask.size
        elif f"painted_{i}" in files:
            mask = read_painted_mask(files[f"painted_{i}"].read(), f"the painted mask of example {n}", limits)
            if not mask.any():
                raise UserError(f"the mask of example {n} is empty: paint the object, or upload a mask file")
            size = (mask.shape[1], mask.shape[0])
        else:
            raise UserError(f"example {n} ({f.filename}) has no mask: upload a mask file or paint one on the image")
        if size != (img.shape[1], img.shape[0]):
            raise UserError(
                f"the mask of example {n} is {size[0]}x{size[1]} but the image is {img.shape[1]}x{img.shape[0]}: "
                "a mask must have its image's size"
            )
        examples.append(img)
        masks.append(mask)

    video = files.get("video")
    targets = [f for f in files.getlist("target") if f.filename]
    if video is not None and video.filename:
        if targets:
            raise UserError("send either target images or one video, not both")
        if detail:
            raise UserError("two sizes are for target images; a video runs at one size: untick it")
        return _segment_video(video, examples, masks, task, limits, seg, threshold)
    if not targets:
        raise UserError("add at least one target image (or a video)")
    if len(targets) > limits.max_targets:
        raise UserError(f"{len(targets)} targets sent; the limit is {limits.max_targets} (--max-targets)")
    images = [read_upload_image(f.read(), f"target {n} ({f.filename})", limits) for n, f in enumerate(targets, 1)]
    preds = seg.run_images(
        examples, masks, images, task, None if ensemble == "auto" else ensemble, num_labels, threshold, detail
    )

    out_files: dict[str, bytes] = {}
    results = []
    for n, (f, image, pred) in enumerate(zip(targets, images, preds, strict=True), 1):
        results.append(_store_result(out_files, _safe_stem(f.filename, n), f.filename, image, pred.labels, pred.color))
    prompts = _store_prompts(out_files, masks)
    return {"task": task, "ensemble": ensemble, "results": results, "prompts": prompts, "files": out_files}


def _store_result(
    out_files: dict[str, bytes], stem: str, name: str, image: np.ndarray, labels: np.ndarray, color: np.ndarray
) -> dict[str, Any]:
    labels = np.asarray(labels)
    names = {"overlay": f"{stem}_overlay.png", "color": f"{stem}_color.png", "labels": f"{stem}_labels.png"}
    out_files[names["overlay"]] = png_bytes(overlay(image, labels))
    out_files[names["color"]] = png_bytes(np.asarray(color, dtype=np.uint8))
    out_files[names["labels"]] = png_bytes(labels)
    present = [int(v) for v in np.unique(labels)]
    return {
        "name": name,
        "width": int(labels.shape[1]),
        "height": int(labels.shape[0]),
        "labels": present,
        "foreground": round(float((labels > 0).mean()), 4),
        "files": names,
    }


def _store_prompts(out_files: dict[str, bytes], masks: list[Any]) -> list[str]:
    """Keep the painted masks as label maps too, so a user can reuse what they painted."""
    names = []
    for n, m in enumerate(masks, 1):
        if isinstance(m, np.ndarray):
            name = f"example_{n}_painted_mask.png"
            out_files[name] = png_bytes(m)
            names.append(name)
    return names


def _segment_video(
    video, examples, masks, task: str, limits: Limits, seg: Segmenter, threshold: float | None = None
) -> dict[str, Any]:
    """A video target: the first example's mask is the mask of frame 0, propagated through the frames."""
    if not _video_available():
        raise UserError("video targets need seggpt.video, which is not installed in this version; send images")
    frames = read_video(video.read(), video.filename, f"the video ({video.filename})", limits)
    if not frames:
        raise UserError(f"the video ({video.filename}) has no frames")
    first = masks[0]
    mask_size = first.size if isinstance(first, Image.Image) else (first.shape[1], first.shape[0])
    if mask_size != (frames[0].shape[1], frames[0].shape[0]):
        raise UserError(
            f"for a video, example 1 is the first frame: its mask is {mask_size[0]}x{mask_size[1]} but the frames "
            f"are {frames[0].shape[1]}x{frames[0].shape[0]} (use 'Use first frame as example')"
        )
    first_labels = first if isinstance(first, np.ndarray) else _mask_labels(first)
    label_maps = seg.run_video(frames, first_labels, task, threshold)
    from seggpt.coloring import build_palette, paint

    n_labels = max(int(max(lm.max(initial=0) for lm in label_maps)), int(first_labels.max(initial=0)), 1)
    palette = build_palette(n_labels)
    out_files: dict[str, bytes] = {}
    results, overlays = [], []
    stem = Path(video.filename).stem or "video"
    for i, (frame, lm) in enumerate(zip(frames, label_maps, strict=True)):
        color = paint(lm, palette)
        ov = overlay(frame, lm)
        overlays.append(Image.fromarray(ov))
        results.append(_store_result(out_files, _safe_stem(f"{stem}_frame{i:04d}", i), f"frame {i}", frame, lm, color))
    buf = io.BytesIO()
    overlays[0].save(buf, format="GIF", save_all=True, append_images=overlays[1:], duration=100, loop=0)
    out_files[f"{stem}_overlay.gif"] = buf.getvalue()
    for r in results:
        r["files"]["animation"] = f"{stem}_overlay.gif"
    prompts = _store_prompts(out_files, masks[:1])
    return {"task": task, "ensemble": "video", "results": results, "prompts": prompts, "files": out_files}


def _mask_labels(mask: Image.Image) -> np.ndarray:
    from seggpt.io import read_mask

    return np.asarray(read_mask(mask))


# Serving --------------------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(app, host: str = "127.0.0.1", port: int = 7860):
    """A threaded Werkzeug server bound to (host, port); port 0 picks a free port (``server.server_port``).

    Each connection carries one request (HTTP/1.0), and closing the server (as stopping ``serve_forever`` does)
    waits for the requests still running. A request thread left running at exit would be stopped by the
    interpreter inside torch, which aborts the whole process ("terminate called without an active exception").
    """
    import socket

    from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

    class OneRequestHandler(WSGIRequestHandler):
        # The thread ends with its request, so closing never waits on an idle keep-alive connection; a
        # connection that sends nothing is dropped after the timeout.
        protocol_version = "HTTP/1.0"
        timeout = 10

    class Server(ThreadedWSGIServer):
        daemon_threads = False  # socketserver.ThreadingMixIn joins them in server_close()
        block_on_close = True

        def server_close(self) -> None:
            running = [t for t in getattr(self, "_threads", ()) if t.is_alive()]
            if running:
                log.warning("waiting for %d running request(s) to finish", len(running))
            super().server_close()

    if port:
        # Werkzeug answers a taken port with sys.exit; check first so callers get an OSError they can report.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    return Server(host, port, app, handler=OneRequestHandler)


def serve(app, host: str = "127.0.0.1", port: int = 7860, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted. Localhost by default: the page runs a model on whatever it is sent."""
    if not is_loopback(host):
        log.warning("listening on %s: anyone who can reach this machine can use the app", host)
    server = make_server(app, host, port)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{server.server_port}/"
    if on_ready:
        on_ready(url)
    try:
        server.serve_forever()
    finally:
        server.server_close()

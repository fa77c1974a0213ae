"""Video object segmentation by propagation: annotated frames and recent predictions as a context ensemble.

SegGPT was never trained on video. It segments a video the way it segments anything: by example. Every frame
is a query whose examples are

* the annotated frames (the first mask, and any later annotation): kept for the whole video, so an object that
  leaves the picture and comes back is still described by its own colour and keeps its id;
* the last K frames with their own predictions: a deque of length K, so the context, and memory, never grow
  past (number of annotations + K) frames however long the video is.

All examples go through the model together as a feature ensemble (the query features are averaged over the
examples after every attention; paper Table 4b: 1 frame 70.0, 4 frames 74.7, 8 frames 75.6 J&F on DAVIS-17).

Objects are painted with one fixed palette for the whole video: the k-th object annotated gets colour k of
``build_palette(number of objects)`` (compact, so sparse ids such as {3, 17} still get well-separated colours),
and the model's answer decodes back to exact object ids. Examples are kept as id maps at model resolution and
painted when used: if a later annotation brings a new object, every example is repainted consistently.

    >>> vp = SegGPTVideoPredictor()  # the embedded model, 2 recent frames
    >>> for t, labels in vp.propagate("frames/", first_masks="00000.png"):
    ...     write_davis_png(f"out/{t:05d}.png", labels)
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from seggpt.coloring import build_palette, paint
from seggpt.io import read_image, read_mask
from seggpt.modeling import SegGPT
from seggpt.transforms import crosswise, normalize, resize_image, resize_mask, to_chw
from seggpt.video_io import MAX_DAVIS_ID, FrameSource, open_frames

log = logging.getLogger(__name__)

MaskSource = str | os.PathLike | Image.Image | np.ndarray | Mapping[int, np.ndarray]
AnnotationMode = Literal["merge", "replace"]


class FramePredictor(Protocol):
    """What propagation needs from an image predictor (``SegGPTPredictor`` provides it)."""

    def set_prompt_tensors(
        self,
        images: Tensor,
        masks: Tensor,
        task: str = "semantic",
        num_labels: int | None = None,
        ensemble: str | None = None,
    ) -> None: ...

    def predict(self, target: Any) -> Any: ...


@dataclass
class ContextFrame:
    """One example of the context, stored at model resolution (what the model needs, nothing more).

    Attributes:
        index: frame index in the video.
        image: (3, h, w) normalised frame, h x w = the model's ``image_size``.
        labels: (h, w) int64 object ids (nearest-resized).
        annotated: True for user annotations (kept for the whole video), False for predictions.
    """

    index: int
    image: Tensor
    labels: Tensor
    annotated: bool


def as_label_map(mask: MaskSource, what: str = "mask") -> np.ndarray:
    """An object-id map from the ways users hold masks -> (H, W) int64, 0 = background.

    Accepts a path / PIL image / array read by :func:`seggpt.io.read_mask` (DAVIS palette PNG, label map,
    binary mask, colour mask), a bool or integer array (H, W), a stack (N, H, W) of binary masks (ids 1..N),
    or a dict ``{object_id: binary mask (H, W)}``.
    """
    if isinstance(mask, Mapping):
        if not mask:
            raise ValueError(f"{what}: the dict of object masks is empty")
        shapes = {np.asarray(m).shape for m in mask.values()}
        if len(shapes) != 1:
            raise ValueError(f"{what}: the object masks differ in size: {sorted(shapes)}")
        out = np.zeros(shapes.pop(), np.int64)
        for obj_id, m in mask.items():
            if not 1 <= int(obj_id) <= MAX_DAVIS_ID:
                raise ValueError(f"{what}: object ids must lie in 1..{MAX_DAVIS_ID}, got {obj_id}")
            out[np.asarray(m).astype(bool)] = int(obj_id)
        return out
    if isinstance(mask, np.ndarray) and mask.ndim == 3 and mask.shape[2] not in (1, 3, 4):
        stack = mask.astype(bool)
        out = np.zeros(stack.shape[1:], np.int64)
        for k in range(len(stack)):
            out[stack[k]] = k + 1
        return out
    if isinstance(mask, np.ndarray) and mask.ndim == 2:
        if mask.dtype == bool:
            return mask.astype(np.int64)
        if np.issubdtype(mask.dtype, np.floating) and not np.all(mask == np.round(mask)):
            raise ValueError(f"{what}: a float label map must hold whole-number ids")
        out = mask.astype(np.int64)
    else:
        out = read_mask(mask)
    if out.size and out.min() < 0:
        raise ValueError(f"{what}: object ids must be >= 0 (0 = background), got {out.min()}")
    if out.size and out.max() > MAX_DAVIS_ID:
        raise ValueError(f"{what}: object ids must lie in 0..{MAX_DAVIS_ID}, got {out.max()}")
    return out


def merge_annotation(predicted: np.ndarray, annotation: np.ndarray) -> np.ndarray:
    """Apply a later-frame annotation to the frame's prediction -> (H, W) int64.

    The objects drawn in the annotation are taken exactly as drawn (a correction replaces the object's
    predicted pixels, a new id is added); the other objects keep their predicted pixels where the annotation
    leaves background.
    """
    drawn = [int(i) for i in np.unique(annotation) if i != 0]
    out = np.where(np.isin(predicted, drawn), 0, predicted)
    return np.where(annotation > 0, annotation, out).astype(np.int64)


class SegGPTVideoPredictor:
    """Propagate object masks through a video with SegGPT in context.

    Args:
        model: None (the embedded model), a :class:`SegGPT`, or a checkpoint path or Hugging Face hub id (see
            :func:`seggpt.load_model`). Ignored if ``predictor`` is given.
        device: where the model runs: "auto" (cuda, then mps, then cpu), "cpu", "cuda:1", ...
        dtype: model precision (a torch dtype, or "fp32", "bf16", "fp16"); None keeps a given model's dtype
            (float32 for a loaded one).
        context: K, the number of most recent predicted frames kept as examples (>= 0). None: the predictor's
            ``video_context`` (:func:`seggpt.checkpoint.default_video_context`: 2 for the embedded model, which
            does as well with 2 as with 8; the paper's best setting, 8, for other checkpoints and for a predictor
            without one). The annotated frames come on top of these.
        task: "instance" (the authors' choice for video: each colour is one object) or "semantic".
        annotation_mode: how a later annotation meets the prediction for its frame. "merge": the objects drawn
            in it are taken as drawn (a correction or a new object), the others keep their prediction;
            "replace": the annotation is the whole truth for that frame.
        predictor: an image predictor with ``set_prompt_tensors`` and ``predict`` (default: a
            ``SegGPTPredictor`` built from ``model``, ``device`` and ``dtype``).
        image_size: (h, w) the model runs at. A model this loads is loaded at it; a given ``predictor`` must
            run at it. None: the predictor's own, and for a model loaded from ``model`` (a path, a hub id or
            None) its video size turned to each video's orientation at its first frame (the embedded model:
            288x512 for landscape frames, 512x288 for portrait ones).
        threshold: how the painted answer is read (:class:`seggpt.predictor.SegGPTPredictor`; None: the model's
            video threshold). Only for a model this loads: give a ``predictor`` its own.
    """

    def __init__(
        self,
        model: SegGPT | str | os.PathLike | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        context: int | None = None,
        task: str = "instance",
        annotation_mode: AnnotationMode = "merge",
        predictor: FramePredictor | None = None,
        image_size: int | tuple[int, int] | None = None,
        threshold: float | None = None,
    ) -> None:
        if context is not None and (int(context) != context or context < 0):
            raise ValueError(f"context (K, the number of recent frames kept) must be an integer >= 0, got {context}")
        self.task = task  # checked by the setter, before a model loads
        if annotation_mode not in ("merge", "replace"):
            raise ValueError(f"annotation_mode must be 'merge' or 'replace', got {annotation_mode!r}")
        # A model this loads from a source runs at its video size (the embedded model: EMBEDDED_VIDEO_IMAGE_SIZE),
        # turned to each video's orientation at its first frame unless image_size is given.
        if image_size is not None and not isinstance(image_size, (tuple, list)):
            image_size = (int(image_size), int(image_size))
        self._source = None
        if predictor is None:
            from seggpt.predictor import SegGPTPredictor

            predictor = SegGPTPredictor(
                model=model, device=device, dtype=dtype, image_size=image_size, video=True, threshold=threshold
            )
            if image_size is None and not isinstance(model, torch.nn.Module):
                self._source = (model, device, dtype)
        elif threshold is not None:
            raise ValueError("threshold is for a model this loads; give the predictor you pass its own threshold")
        self.predictor = predictor
        if hasattr(predictor, "keep_targets"):  # each frame segmented prompts the next ones: embed it once
            predictor.keep_targets = True
        self.image_size = tuple(image_size) if image_size is not None else _model_image_size(predictor)
        self._by_size = {self.image_size: predictor}  # the loaded model at each orientation's size
        if context is None:
            from seggpt.checkpoint import PAPER_VIDEO_CONTEXT

            context = getattr(predictor, "video_context", PAPER_VIDEO_CONTEXT)
        self.context = int(context)
        self.annotation_mode = annotation_mode
        self.reset()

    # State ----------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the current video: context, pending annotations, palette."""
        self._annotated: dict[int, ContextFrame] = {}
        self._recent: deque[ContextFrame] = deque(maxlen=self.context)
        self._pending: dict[int, np.ndarray] = {}
        self._object_ids: list[int] = []  # in order of first annotation: object k + 1 is painted colour k + 1
        self._next_frame = 0
        self.frame_size: tuple[int, int] | None = None
        self.last_frame: np.ndarray | None = None

    @property
    def context_frames(self) -> list[ContextFrame]:
        """The examples the next frame will be segmented with: annotated frames, then the recent ones (oldest
        first). At most ``len(annotations) + K`` entries."""
        return [self._annotated[i] for i in sorted(self._annotated)] + list(self._recent)

    @property
    def num_objects(self) -> int:
        """How many objects have been annotated so far (the palette size)."""
        return len(self._object_ids)

    @property
    def task(self) -> str:
        """The task embedding the frames are segmented with: "instance" or "semantic"."""
        return self._task

    @task.setter
    def task(self, value: str) -> None:
        if value not in ("instance", "semantic"):
            raise ValueError(f"task must be 'instance' or 'semantic', got {value!r}")
        self._task = value

    @property
    def threshold(self) -> float | None:
        """How the running predictor reads its painted answers; setting it sets the predictor's, and a size
        turned to at a video's first frame keeps it."""
        return getattr(self.predictor, "threshold", None)

    @threshold.setter
    def threshold(self, value: float) -> None:
        from seggpt.predictor import check_threshold

        self.predictor.threshold = check_threshold(value)

    @property
    def object_ids(self) -> list[int]:
        """The annotated object ids, in the order of their colours."""
        return list(self._object_ids)

    def add_annotation(self, frame_index: int, mask: MaskSource) -> None:
        """Annotate a frame that has not been segmented yet: a new object, or a correction.

        Can be called before :meth:`propagate` or between the frames it yields (for any later frame). The
        annotation replaces (or, in "merge" mode, corrects) the prediction for that frame, and the frame then
        stays in the context for the rest of the video, like the first one.

        Raises:
            ValueError: the frame was already segmented, the mask is empty (in "merge" mode), or its size
                differs from the frames.
        """
        frame_index = int(frame_index)
        if frame_index < self._next_frame:
            raise ValueError(
                f"frame {frame_index} was already segmented (the next frame is {self._next_frame}); annotate a later "
                "frame, or call propagate again from the start"
            )
        labels = as_label_map(mask, what=f"annotation of frame {frame_index}")
        if not labels.any() and self.annotation_mode == "merge":
            raise ValueError(
                f"the annotation of frame {frame_index} has no object (every pixel is 0); draw at least one object"
            )
        if self.frame_size is not None:
            self._check_size(labels, f"the annotation of frame {frame_index}")
        self._pending[frame_index] = labels
        self._object_ids += [int(i) for i in np.unique(labels) if i != 0 and i not in self._object_ids]

    # Propagation ----------------------------------------------------------------------------------------
    def propagate(
        self,
        frames: str | os.PathLike | np.ndarray | Iterable[Any] | FrameSource,
        first_masks: MaskSource | None = None,
        annotations: Mapping[int, MaskSource] | None = None,
        start: int = 0,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Segment every frame; yields ``(frame_index, label_map)`` as each frame is done.

        Args:
            frames: a folder of images, a video file, an array (T, H, W, 3), or a list of frames / paths. They
                are read one at a time.
            first_masks: the objects on frame 0: a DAVIS palette PNG, a label map (H, W) with ids 1..N, a stack
                (N, H, W) of binary masks, or ``{object_id: mask}``.
            annotations: ``{frame_index: mask}`` for later frames (new objects or corrections), in the same forms;
                :meth:`add_annotation` adds more while the generator runs.
            start: segment from this frame on (re-prompting after a run: annotate frame ``start`` and redo only
                the rest). Earlier frames are read but neither segmented nor yielded; their annotations still
                join the context, taken as drawn.

        Yields:
            (frame_index, labels): labels (H, W) int64 at the frames' size, 0 = background, each object under
            its annotated id. Frames before the first annotation are all background.

        Raises:
            ValueError: an empty first mask, no annotation at all, an unreadable video (at the call); masks whose
                size differs from the frames (at the first frame).
            FileNotFoundError: a frame folder or video file that does not exist.
        """
        if int(start) != start or start < 0:
            raise ValueError(f"start must be a frame index >= 0, got {start}")
        self.reset()
        if first_masks is not None:
            labels = as_label_map(first_masks, what="first mask")
            if not labels.any():
                raise ValueError("the first mask has no object (every pixel is 0); draw at least one object")
            self.add_annotation(0, labels)
        for index, mask in (annotations or {}).items():
            self.add_annotation(index, mask)
        if not self._pending:
            raise ValueError("nothing to propagate: give first_masks or at least one annotation")
        # Everything above runs now, so bad input fails at the call; the frames are read as they are consumed.
        return self._run(open_frames(frames), int(start))

    def _run(self, source: FrameSource, start: int) -> Iterator[tuple[int, np.ndarray]]:
        for t, frame in enumerate(source):
            if t < start:
                self._skip(frame)
                continue
            yield t, self.step(frame)
        unused = sorted(i for i in self._pending if i >= self._next_frame)
        if unused:
            log.warning("annotations for frames %s were never used: the video has %d frames", unused, self._next_frame)

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> np.ndarray:
        """Segment the next frame (index ``self._next_frame``) and move the context on -> (H, W) int64 ids.

        :meth:`propagate` calls this for every frame; call it directly to feed frames one by one (for instance
        from a camera), after :meth:`reset` and :meth:`add_annotation` for frame 0.
        """
        t, frame, annotation = self._take(frame)
        have_context = bool(self._annotated or self._recent)
        if annotation is not None and (self.annotation_mode == "replace" or not have_context):
            labels = annotation
        elif have_context:
            labels = self._predict(frame)
            if annotation is not None:
                labels = merge_annotation(labels, annotation)
        else:
            labels = np.zeros(self.frame_size, np.int64)  # no object annotated yet: nothing to follow
        if annotation is not None or have_context:
            self._remember(t, frame, labels, annotated=annotation is not None)
        return labels

    def _skip(self, frame: np.ndarray) -> None:
        """Pass over the next frame without segmenting it; an annotation on it joins the context as drawn."""
        t, frame, annotation = self._take(frame)
        if annotation is not None:
            self._remember(t, frame, annotation, annotated=True)

    # Internals ------------------------------------------------------------------------------------------
    def _take(self, frame: np.ndarray) -> tuple[int, np.ndarray, np.ndarray | None]:
        """Read the next frame, check its size, and claim its annotation: (index, (H, W, 3) uint8, ids or None)."""
        frame = read_image(frame)
        if not frame.flags.writeable:  # read-only buffers (PIL, PyAV) make torch warn when wrapped
            frame = frame.copy()
        self.last_frame = frame  # the decoded frame, for callers that draw overlays without decoding twice
        t = self._next_frame
        if self.frame_size is None:
            self.frame_size = tuple(frame.shape[:2])
            if self._source is not None:
                self._turn_to(self.frame_size)
            _warn_if_turned(self.frame_size, self.image_size)
            for i, ann in self._pending.items():
                self._check_size(ann, "the first mask" if i == 0 else f"the annotation of frame {i}")
        elif tuple(frame.shape[:2]) != self.frame_size:
            h, w = self.frame_size
            raise ValueError(
                f"frame {t} is {frame.shape[1]}x{frame.shape[0]} but the earlier frames are {w}x{h}; "
                "all frames of a video must have one size"
            )
        self._next_frame = t + 1
        return t, frame, self._pending.pop(t, None)

    def _turn_to(self, frame_size: tuple[int, int]) -> None:
        """Run the loaded model at its video size for frames of ``frame_size`` (portrait for portrait frames),
        loading it again at that size the first time; the predictor's threshold is kept."""
        from seggpt.checkpoint import default_image_size
        from seggpt.predictor import SegGPTPredictor

        model, device, dtype = self._source
        size = default_image_size(model, video=True, frame_size=frame_size)
        if size is None or isinstance(size, int) or size == self.image_size:  # another checkpoint's, or square
            return
        if size not in self._by_size:
            self._by_size[size] = SegGPTPredictor(model=model, device=device, dtype=dtype, image_size=size, video=True)
            self._by_size[size].keep_targets = True
        self._by_size[size].threshold = self.predictor.threshold
        self.predictor, self.image_size = self._by_size[size], size

    def _check_size(self, labels: np.ndarray, what: str) -> None:
        if tuple(labels.shape) != self.frame_size:
            h, w = self.frame_size
            raise ValueError(
                f"{what} is {labels.shape[1]}x{labels.shape[0]} but the frames are {w}x{h}; "
                "a mask must have its frame's size"
            )

    def _remember(self, t: int, frame: np.ndarray, labels: np.ndarray, annotated: bool) -> None:
        # Only model-resolution tensors are kept: memory per example is independent of the video's resolution.
        image = normalize(resize_image(to_chw(frame), self.image_size))
        small = resize_mask(torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)), self.image_size)
        example = ContextFrame(index=t, image=image, labels=small, annotated=annotated)
        if annotated:
            self._annotated[t] = example
        else:
            self._recent.append(example)  # maxlen K: the oldest prediction drops out

    def _predict(self, frame: np.ndarray) -> np.ndarray:
        examples = self.context_frames
        n = max(len(self._object_ids), 1)
        palette = build_palette(n)
        slot_of = np.zeros(MAX_DAVIS_ID + 1, np.int64)  # object id -> colour index (0 for background)
        slot_of[self._object_ids] = np.arange(1, len(self._object_ids) + 1)
        id_of = np.array([0, *self._object_ids] + [0] * (n - len(self._object_ids)), np.int64)
        images = torch.stack([e.image for e in examples])
        masks = torch.stack([normalize(to_chw(paint(slot_of[e.labels.numpy()], palette))) for e in examples])
        self.predictor.set_prompt_tensors(images, masks, task=self.task, num_labels=n, ensemble="feature")
        prediction = self.predictor.predict(frame)
        labels = id_of[np.asarray(prediction.labels)]
        if labels.shape != self.frame_size:
            raise RuntimeError(f"the predictor answered {labels.shape} for a frame of {self.frame_size}")
        return labels


def _warn_if_turned(frame_size: tuple[int, int], image_size: tuple[int, int]) -> None:
    """Warn when the frames are portrait and the model's size landscape (or the other way): each frame would be
    squeezed to the other shape (the embedded model segments video at 288x512, for 16:9 landscape)."""
    (fh, fw), (h, w) = frame_size, image_size
    if crosswise(frame_size, image_size):
        log.warning(
            "the frames are %d wide and %d high but the model segments them %d wide and %d high, squeezed to the "
            "other shape; --image-size %dx%d (height x width; image_size=(%d, %d)) keeps theirs",
            fw, fh, w, h, w, h, w, h,
        )  # fmt: skip


def _model_image_size(predictor: Any) -> tuple[int, int]:
    """(h, w) of one image at model resolution, from the predictor's model config."""
    for owner in (predictor, getattr(predictor, "model", None)):
        config = getattr(owner, "config", None)
        if config is not None and hasattr(config, "image_size"):
            return tuple(config.image_size)
    raise ValueError("cannot tell the model's image size from this predictor; pass image_size=(h, w)")

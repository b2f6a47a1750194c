"""Segment Anything (SAM) as a task: payloads, prompt validation, RLE masks, the two runners.

The models themselves (published backbones, mini stand-ins, the builder, published accuracy) are
in :mod:`workloads.sam_models`.

Payloads
--------
task "segment":            {"image": ..., "prompts": {"points": [[x, y, label], ...],
                                                      "boxes": [[x1, y1, x2, y2], ...]}}
    One mask per box, in order, then one mask for the whole point set (all points together
    prompt one object; label 1 = foreground, 0 = background), if there are points.
task "segment-detections": {"image": ..., "detections": [{"box": [x1, y1, x2, y2], ...}, ...]}
    One mask per detection, in the detections' order; no detections → no masks.
Output, both tasks: {"masks": [{"rle": {"size": [h, w], "counts": [...]}, "score": float,
    "box": [x1, y1, x2, y2] | None, "area": int}, ...]}. Masks are at the original image size.
    The RLE is COCO's uncompressed form (column-major, starting with the count of zeros). "box" is
    the mask's tight box in pixel-edge coordinates (x2 = last column + 1), or None for an empty
    mask. "score" is SAM's predicted IoU.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ipa_energy.errors import PayloadError, SpecError
from ipa_energy.spec import VariantSpec
from workloads import images
from workloads.models import device_for, place
from workloads.payloads import Payload
from workloads.sam_models import DEFAULT_MAX_PROMPTS, build_sam

__all__ = [
    "RUNNERS", "DetectionSegmenter", "Segmenter", "build_runner", "parse_detections", "parse_prompts",
    "rle_decode", "rle_encode", "validate_payload",
]


def _max_prompts(variant: VariantSpec) -> int:
    return int(variant.build_args.get("max_prompts", DEFAULT_MAX_PROMPTS))


# --- RLE --------------------------------------------------------------------------------------


def rle_encode(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a 2-D mask: runs in column-major order, zeros first."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    h, w = m.shape
    flat = m.astype(bool).ravel(order="F")
    if flat.size == 0:
        return {"size": [h, w], "counts": []}
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size])))
    counts = ([0] if flat[0] else []) + runs.tolist()
    return {"size": [int(h), int(w)], "counts": [int(c) for c in counts]}


def rle_decode(rle: dict) -> np.ndarray:
    """The bool HxW mask of an uncompressed COCO RLE (inverse of `rle_encode`)."""
    h, w = (int(s) for s in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if (counts < 0).any() or counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, not {h}x{w}={h * w}")
    values = np.arange(counts.size) % 2 == 1
    return np.repeat(values, counts).reshape((h, w), order="F")


def _mask_entry(mask: np.ndarray, score: float) -> dict:
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    box = None if ys.size == 0 else [int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1]
    return {"rle": rle_encode(mask), "score": round(float(score), 6), "box": box, "area": int(mask.sum())}


# --- prompt validation -----------------------------------------------------------------------


def _number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _box(raw: Any, field: str, where: str) -> list[float]:
    if not isinstance(raw, (list, tuple)) or len(raw) != 4 or not all(_number(c) for c in raw):
        raise PayloadError(422, f"{field}: {where} must be [x1, y1, x2, y2] (4 finite numbers), got {raw!r}", field)
    x1, y1, x2, y2 = (float(c) for c in raw)
    if x2 < x1 or y2 < y1:
        raise PayloadError(422, f"{field}: {where} has x2 < x1 or y2 < y1: {raw!r}", field)
    return [x1, y1, x2, y2]


def _image_size(image: Any) -> tuple[int, int]:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"array {image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise PayloadError(422, f"image: expected uint8 HxWx3 pixels, got {got}", "image")
    if min(image.shape[:2]) < 1:
        raise PayloadError(422, "image: has no pixels", "image")
    return int(image.shape[0]), int(image.shape[1])


def parse_prompts(prompts: Any, max_prompts: int) -> tuple[list[list[float]], list[list[float]]]:
    """(points [[x, y, label]], boxes [[x1, y1, x2, y2]]) of a "segment" payload; PayloadError 422 if malformed."""
    field = "prompts"
    if not isinstance(prompts, dict):
        raise PayloadError(422, f"prompts: must be an object with 'points' and/or 'boxes', got {type(prompts).__name__}", field)
    unknown = set(prompts) - {"points", "boxes"}
    if unknown:
        raise PayloadError(422, f"prompts: unknown keys {sorted(unknown)}; expected 'points' and/or 'boxes'", field)
    raw_points, raw_boxes = prompts.get("points") or [], prompts.get("boxes") or []
    if not isinstance(raw_points, (list, tuple)) or not isinstance(raw_boxes, (list, tuple)):
        raise PayloadError(422, "prompts: 'points' and 'boxes' must be lists", field)
    if not raw_points and not raw_boxes:
        raise PayloadError(422, "prompts: give at least one point or box", field)
    if len(raw_points) > max_prompts or len(raw_boxes) > max_prompts:
        raise PayloadError(422, f"prompts: at most {max_prompts} points and {max_prompts} boxes", field)
    points = []
    for n, p in enumerate(raw_points):
        if not isinstance(p, (list, tuple)) or len(p) != 3 or not all(_number(c) for c in p):
            raise PayloadError(422, f"prompts: point {n} must be [x, y, label] (3 finite numbers), got {p!r}", field)
        if p[2] not in (0, 1):
            raise PayloadError(422, f"prompts: point {n} label must be 1 (foreground) or 0 (background), got {p[2]!r}", field)
        points.append([float(p[0]), float(p[1]), float(p[2])])
    boxes = [_box(b, field, f"box {n}") for n, b in enumerate(raw_boxes)]
    return points, boxes


def parse_detections(detections: Any, max_prompts: int) -> list[list[float]]:
    """The boxes of a "segment-detections" payload; PayloadError 422 if malformed."""
    field = "detections"
    if not isinstance(detections, (list, tuple)):
        raise PayloadError(422, f"detections: must be a list, got {type(detections).__name__}", field)
    if len(detections) > max_prompts:
        raise PayloadError(422, f"detections: at most {max_prompts} detections", field)
    boxes = []
    for n, det in enumerate(detections):
        if not isinstance(det, dict) or "box" not in det:
            raise PayloadError(422, f"detections: item {n} must be an object with a 'box'", field)
        boxes.append(_box(det["box"], field, f"item {n} box"))
    return boxes


def validate_payload(variant: VariantSpec, payload: Payload) -> None:
    """Check one payload's prompts without running the model (e.g. before it joins a batch)."""
    max_prompts = _max_prompts(variant)
    if variant.task == "segment":
        parse_prompts(payload.get("prompts"), max_prompts)
    else:
        parse_detections(payload.get("detections"), max_prompts)


def _clamp(xy: np.ndarray, h: int, w: int) -> np.ndarray:
    xy = xy.copy()
    xy[..., 0] = xy[..., 0].clip(0, w)
    xy[..., 1] = xy[..., 1].clip(0, h)
    return xy


# --- runners ---------------------------------------------------------------------------------


class _SamRunner:
    """Encode every image of a call in one image-encoder pass, then decode each image's prompts."""

    def __init__(self, variant: VariantSpec):
        from segment_anything.utils.transforms import ResizeLongestSide

        self.variant = variant
        self.model = place(build_sam(variant), variant)
        self.device = device_for(variant)
        self.size = self.model.image_encoder.img_size
        self.transform = ResizeLongestSide(self.size)
        self.max_prompts = _max_prompts(variant)

    def _prompts(self, payload: Payload) -> tuple[list[list[float]], list[list[float]]]:
        raise NotImplementedError

    def _encode(self, pixels: list[np.ndarray]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        batch, input_sizes = [], []
        for image in pixels:
            resized = self.transform.apply_image(image)  # HxWx3 uint8, longest side = img_size
            x = torch.as_tensor(np.ascontiguousarray(resized)).permute(2, 0, 1).float().to(self.device)
            input_sizes.append((int(x.shape[1]), int(x.shape[2])))
            batch.append(self.model.preprocess(x))  # normalise, pad to img_size x img_size
        return self.model.image_encoder(torch.stack(batch)), input_sizes

    def _decode(self, embedding: torch.Tensor, input_size: tuple[int, int], original: tuple[int, int],
                points: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None) -> list[dict]:
        sam = self.model
        sparse, dense = sam.prompt_encoder(
            points=None if points is None else (points, labels), boxes=boxes, masks=None
        )
        low_res, iou = sam.mask_decoder(
            image_embeddings=embedding.unsqueeze(0),
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        masks = sam.postprocess_masks(low_res, input_size=input_size, original_size=original) > sam.mask_threshold
        masks_np = masks[:, 0].cpu().numpy()
        return [_mask_entry(m, s) for m, s in zip(masks_np, iou[:, 0].tolist())]

    def __call__(self, batch: list[Payload]) -> list[Payload]:
        # Validate every payload before any model work, so a bad prompt costs nothing.
        pixels = [images.decode(p["image"]) for p in batch]
        sizes = [_image_size(im) for im in pixels]
        prompts = [self._prompts(p) for p in batch]
        todo = [n for n, (pts, bxs) in enumerate(prompts) if pts or bxs]
        out: list[Payload] = [{"masks": []} for _ in batch]
        if not todo:
            return out
        with torch.inference_mode():
            embeddings, input_sizes = self._encode([pixels[n] for n in todo])
            for embedding, input_size, n in zip(embeddings, input_sizes, todo):
                (h, w), (pts, bxs) = sizes[n], prompts[n]
                if bxs:  # one prompt per box: B x 4 in the model's input frame
                    corners = _clamp(np.asarray(bxs, dtype=np.float64).reshape(-1, 2, 2), h, w)
                    boxes = torch.as_tensor(self.transform.apply_boxes(corners.reshape(-1, 4), (h, w)), dtype=torch.float,
                                            device=self.device)
                    out[n]["masks"] += self._decode(embedding, input_size, (h, w), None, None, boxes)
                if pts:  # all points together are one prompt: 1 x N x 2 coordinates, 1 x N labels
                    arr = np.asarray(pts, dtype=np.float64)
                    coords = torch.as_tensor(self.transform.apply_coords(_clamp(arr[:, :2], h, w), (h, w)),
                                             dtype=torch.float, device=self.device)
                    labels = torch.as_tensor(arr[:, 2], dtype=torch.int, device=self.device)
                    out[n]["masks"] += self._decode(embedding, input_size, (h, w), coords[None], labels[None], None)
        return out


class Segmenter(_SamRunner):
    """Task "segment": masks for the request's point and box prompts (one per box, one for the points)."""

    def _prompts(self, payload: Payload) -> tuple[list[list[float]], list[list[float]]]:
        return parse_prompts(payload.get("prompts"), self.max_prompts)


class DetectionSegmenter(_SamRunner):
    """Task "segment-detections": one mask per upstream detection, its box as the prompt."""

    def _prompts(self, payload: Payload) -> tuple[list[list[float]], list[list[float]]]:
        return [], parse_detections(payload.get("detections"), self.max_prompts)


RUNNERS = {"segment": Segmenter, "segment-detections": DetectionSegmenter}


def build_runner(variant: VariantSpec) -> _SamRunner:
    """The runner of a SAM variant's task (:data:`RUNNERS`); SpecError for a task that is not SAM's."""
    if variant.task not in RUNNERS:
        raise SpecError(f"variant {variant.name!r}: task {variant.task!r} is not a SAM task")
    return RUNNERS[variant.task](variant)

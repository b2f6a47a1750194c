"""Segment Anything (SAM) as a workload: builders, variants and the two segmentation runners.

Published quality of the three SAM backbones (what `Accuracy` carries)
----------------------------------------------------------------------
One metric for all three backbones: COCO val2017 zero-shot instance segmentation, mask AP,
with SAM prompted by the boxes of a COCO-trained detector (single-mask output). The only table
found that lists ViT-B, ViT-L and ViT-H under one protocol is the "Box-as-Prompt Results" table of
https://github.com/RockeyCoss/Prompt-Segment-Anything (README, commit 0a74003), the
box-prompting harness that PTQ4SAM (CVPR 2024, arXiv 2405.03144) also builds on:

    detector (its box AP)            sam-vit-b  sam-vit-l  sam-vit-h
    FocalNet-L+DINO (63.2)             44.5       48.6       49.1    <- used here
    Swin-L+H-Deformable-DETR (58.0)    42.5       46.3       46.8    (same ordering)
    R50+H-Deformable-DETR (50.0)       38.2       41.5        --

How these compare with other published figures:
- SAM paper (Kirillov et al. 2023, arXiv 2304.02643), Table 5: ViT-H only, prompted with
  ViTDet-H boxes: COCO mask AP 46.5, LVIS v1 44.7. The paper has no ViT-B/ViT-L rows. Its
  Fig. 13 (right) plots 23-dataset single-point mIoU per backbone but gives no numbers
  (B << L < H, "only marginal gains" from L to H). See docs/accuracy-sources.md section 5.
- HQ-SAM (Ke et al. 2023, arXiv 2306.01567) compares SAM-B/L/H on COCO with FocalNet-DINO
  boxes, but its README shows that table only as an image (figs/sam_vs_hqsam_backbones.png).
  I could not read the numbers, so I did not use them.
These figures are third-party re-evaluations of Meta's released checkpoints, not Meta's own.
Mini variants carry the figure of the full checkpoint they stand for.

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
import os
from functools import partial
from typing import Any, Iterable

import numpy as np
import torch

from ipa_energy.errors import PayloadError, SpecError
from ipa_energy.spec import Accuracy, Resources, VariantSpec
from workloads import images

Payload = dict[str, Any]

ARCHITECTURE = "segment_anything:sam"
TASKS = ("segment", "segment-detections")

# build_args keys that steer the runner, not the model constructor.
RUNTIME_ARGS = ("max_prompts",)

ACCURACY_SOURCE = (
    "https://github.com/RockeyCoss/Prompt-Segment-Anything (README 'Box-as-Prompt Results', "
    "FocalNet-L+DINO rows, commit 0a74003); protocol as SAM paper arXiv 2304.02643 Table 5"
)
ACCURACY_METRIC = (
    "COCO val2017 zero-shot instance segmentation mask AP, boxes from FocalNet-L+DINO "
    "(63.2 box AP), single-mask output ({size})"
)

# Shared by the three published models (segment_anything/build_sam.py::_build_sam).
_COMMON = dict(
    patch_size=16,
    mlp_ratio=4.0,
    window_size=14,
    prompt_embed_dim=256,
    mask_in_chans=16,
    decoder_depth=2,
    decoder_mlp_dim=2048,
    decoder_num_heads=8,
    num_multimask_outputs=3,
    iou_head_depth=3,
    iou_head_hidden_dim=256,
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
)

# name: (checkpoint stem, encoder config as in build_sam_vit_{b,l,h}, COCO mask AP)
FULL = {
    "sam-vit-b": ("sam_vit_b_01ec64", "ViT-B", dict(img_size=1024, encoder_embed_dim=768, encoder_depth=12,
                  encoder_num_heads=12, encoder_global_attn_indexes=[2, 5, 8, 11]), 0.445),
    "sam-vit-l": ("sam_vit_l_0b3195", "ViT-L", dict(img_size=1024, encoder_embed_dim=1024, encoder_depth=24,
                  encoder_num_heads=16, encoder_global_attn_indexes=[5, 11, 17, 23]), 0.486),
    "sam-vit-h": ("sam_vit_h_4b8939", "ViT-H", dict(img_size=1024, encoder_embed_dim=1280, encoder_depth=32,
                  encoder_num_heads=16, encoder_global_attn_indexes=[7, 15, 23, 31]), 0.491),
}

# Mini stand-ins: the same classes with a narrower, shallower encoder on a 256 px input
# (16x16 embedding, 8x8 windows, 64-dim heads as in ViT-B/L, global attention in the last block
# of each half). The prompt encoder and mask decoder keep the published sizes. Measured here for
# one 320x320 image with one box prompt on one CPU thread (torch.set_num_threads(1)): about
# 60 / 90 / 170 ms for B / L / H. Encoder parameters: 4.1M / 8.4M / 20.5M (full: 89.7M / 308.3M /
# 637.0M).
MINI = {
    "sam-vit-b": dict(img_size=256, window_size=8, encoder_embed_dim=256, encoder_depth=4,
                      encoder_num_heads=4, encoder_global_attn_indexes=[1, 3]),
    "sam-vit-l": dict(img_size=256, window_size=8, encoder_embed_dim=320, encoder_depth=6,
                      encoder_num_heads=5, encoder_global_attn_indexes=[2, 5]),
    "sam-vit-h": dict(img_size=256, window_size=8, encoder_embed_dim=448, encoder_depth=8,
                      encoder_num_heads=7, encoder_global_attn_indexes=[3, 7]),
}

BUILD_KEYS = frozenset(_COMMON) | frozenset(FULL["sam-vit-b"][2]) | {"window_size"}


def sam_variants(tier: str, task: str = "segment") -> tuple[VariantSpec, ...]:
    """SAM ViT-B, ViT-L and ViT-H for `tier` ('full' or 'mini') and `task`, cheapest first."""
    if tier not in ("full", "mini"):
        raise SpecError(f"tier {tier!r} is not a SAM tier; available: ['full', 'mini']")
    if task not in TASKS:
        raise SpecError(f"task {task!r} is not a SAM task; available: {list(TASKS)}")
    out = []
    for name, (stem, backbone, encoder, ap) in FULL.items():
        args: dict[str, Any] = {**_COMMON, **encoder, "max_prompts": 64}
        if tier == "mini":
            args |= MINI[name]
        out.append(
            VariantSpec(
                # Prompted by detections the cost differs (one mask per box): its own name, own profiles.
                name=(name if task == "segment" else f"{name}-grounded") + ("" if tier == "full" else "-mini"),
                task=task,
                family="sam",
                architecture=ARCHITECTURE,
                build_args=args,
                accuracy=Accuracy(value=ap, metric=ACCURACY_METRIC.format(size=f"SAM {backbone}"), source=ACCURACY_SOURCE),
                tier=tier,
                stands_for=f"{stem} ({backbone}, 1024 px)" if tier == "mini" else None,
                resources=Resources(num_cpus=0.5) if tier == "mini" else Resources(num_cpus=1, num_gpus=0.5),
                max_batch_size=16 if tier == "mini" else 4,
            )
        )
    return tuple(out)


def build_sam(variant: VariantSpec) -> torch.nn.Module:
    """The variant's `segment_anything.Sam`, built as `build_sam._build_sam` builds it, in eval mode.

    Every architecture parameter comes from `variant.build_args`. Weights are random unless
    `variant.checkpoint` names a local file (a state dict, loaded tensors-only).
    """
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    if variant.architecture != ARCHITECTURE:
        raise SpecError(f"variant {variant.name!r}: unknown SAM architecture {variant.architecture!r}")
    a = {k: v for k, v in variant.build_args.items() if k not in RUNTIME_ARGS}
    missing, unknown = BUILD_KEYS - set(a), set(a) - BUILD_KEYS
    if missing or unknown:
        raise SpecError(f"variant {variant.name!r}: build_args missing {sorted(missing)}, unknown {sorted(unknown)}")
    if a["img_size"] % a["patch_size"]:
        raise SpecError(f"variant {variant.name!r}: img_size must be a multiple of patch_size")
    if any(not 0 <= i < a["encoder_depth"] for i in a["encoder_global_attn_indexes"]):
        raise SpecError(f"variant {variant.name!r}: encoder_global_attn_indexes must lie within encoder_depth")
    embedding = a["img_size"] // a["patch_size"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=a["encoder_depth"],
            embed_dim=a["encoder_embed_dim"],
            img_size=a["img_size"],
            mlp_ratio=a["mlp_ratio"],
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=a["encoder_num_heads"],
            patch_size=a["patch_size"],
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(a["encoder_global_attn_indexes"]),
            window_size=a["window_size"],
            out_chans=a["prompt_embed_dim"],
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=a["prompt_embed_dim"],
            image_embedding_size=(embedding, embedding),
            input_image_size=(a["img_size"], a["img_size"]),
            mask_in_chans=a["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=a["num_multimask_outputs"],
            transformer=TwoWayTransformer(
                depth=a["decoder_depth"],
                embedding_dim=a["prompt_embed_dim"],
                mlp_dim=a["decoder_mlp_dim"],
                num_heads=a["decoder_num_heads"],
            ),
            transformer_dim=a["prompt_embed_dim"],
            iou_head_depth=a["iou_head_depth"],
            iou_head_hidden_dim=a["iou_head_hidden_dim"],
        ),
        pixel_mean=list(a["pixel_mean"]),
        pixel_std=list(a["pixel_std"]),
    )
    sam.eval()
    if variant.checkpoint is not None:
        if not os.path.isfile(variant.checkpoint):
            raise SpecError(f"variant {variant.name!r}: checkpoint {variant.checkpoint!r} is not a local file")
        state = torch.load(variant.checkpoint, map_location="cpu", weights_only=True)
        sam.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    return sam


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
    max_prompts = int(variant.build_args.get("max_prompts", 64))
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
        from workloads.models import device_for, place

        self.model = place(build_sam(variant), variant)
        self.device = device_for(variant)
        self.size = self.model.image_encoder.img_size
        self.transform = ResizeLongestSide(self.size)
        self.max_prompts = int(variant.build_args.get("max_prompts", 64))

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
    if variant.task not in RUNNERS:
        raise SpecError(f"variant {variant.name!r}: task {variant.task!r} is not a SAM task")
    return RUNNERS[variant.task](variant)


def parameter_count(module: torch.nn.Module, parts: Iterable[str] = ()) -> int:
    """Parameters of `module` (or of its named children `parts`)."""
    mods = [getattr(module, p) for p in parts] or [module]
    return sum(p.numel() for m in mods for p in m.parameters())

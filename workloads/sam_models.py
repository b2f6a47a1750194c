"""Segment Anything (SAM) models: the three published backbones, their mini stand-ins, the builder.

Build ids: ``segment_anything:sam`` (:data:`ARCHITECTURE`), built from ``segment_anything``'s own
classes as ``segment_anything/build_sam.py::_build_sam`` builds them. The runners that serve them
(payloads, prompts, masks) are in :mod:`workloads.sam`.

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
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Iterable

import torch

from ipa_energy.errors import SpecError
from ipa_energy.spec import Accuracy, Resources, VariantSpec
from workloads.constants import MINI_CPU, TIERS

__all__ = [
    "ACCURACY_METRIC", "ACCURACY_SOURCE", "ARCHITECTURE", "BUILD_KEYS", "DEFAULT_MAX_PROMPTS", "FULL",
    "FULL_RESOURCES", "MINI", "RUNTIME_ARGS", "TASKS", "build_sam", "parameter_count", "sam_variants",
]

ARCHITECTURE = "segment_anything:sam"
TASKS = ("segment", "segment-detections")

# build_args keys that steer the runner, not the model constructor.
RUNTIME_ARGS = ("max_prompts",)
# Prompts (points, boxes or detections) one request may carry unless build_args say otherwise.
DEFAULT_MAX_PROMPTS = 64
# A full variant's replica (a mini one gets MINI_CPU).
FULL_RESOURCES = Resources(num_cpus=1, num_gpus=0.5)

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
    if tier not in TIERS:
        raise SpecError(f"tier {tier!r} is not a SAM tier; available: {sorted(TIERS)}")
    if task not in TASKS:
        raise SpecError(f"task {task!r} is not a SAM task; available: {list(TASKS)}")
    out = []
    for name, (stem, backbone, encoder, ap) in FULL.items():
        args: dict[str, Any] = {**_COMMON, **encoder, "max_prompts": DEFAULT_MAX_PROMPTS}
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
                resources=MINI_CPU if tier == "mini" else FULL_RESOURCES,
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


def parameter_count(module: torch.nn.Module, parts: Iterable[str] = ()) -> int:
    """Parameters of `module` (or of its named children `parts`)."""
    mods = [getattr(module, p) for p in parts] or [module]
    return sum(p.numel() for m in mods for p in m.parameters())

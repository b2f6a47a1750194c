"""The variant catalog: pipelines of real architectures with published accuracy.

Two tiers. `full`: the published architectures at their published sizes (for GPUs).
`mini`: scaled-down stand-ins of the same architectures (smaller input, fewer layers or
narrower) that run in tens to hundreds of milliseconds on one CPU core; each names the full
variant it stands for and carries that variant's published accuracy.

Accuracy sources: torchvision models read the figure torchvision ships with its published
weights (`weights.meta["_metrics"]`, the numbers of https://pytorch.org/vision/stable/models.html,
IMAGENET1K_V1 for ResNets — the figures IPA used); LLMs cite the Qwen2.5 technical report;
SAM cites `workloads.sam_models`. docs/accuracy-sources.md has the evidence for each.
"""

from __future__ import annotations

from functools import lru_cache

from ipa_energy.errors import SpecError
from ipa_energy.spec import Accuracy, PipelineSpec, Resources, StageSpec, VariantSpec
from workloads.constants import MINI_CPU, TIERS

__all__ = [
    "DETECTORS", "FULL", "MINI_DETECTORS", "QWEN25", "QWEN25_REPORT", "RESNETS",
    "TORCHVISION_DOCS", "classifier", "detector", "pipeline", "pipelines", "qwen25", "torchvision_accuracy",
]

TORCHVISION_DOCS = "https://pytorch.org/vision/stable/models.html"
FULL = Resources(num_cpus=1, num_gpus=0.25)
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

# torchvision detectors, cheapest first, with the constructor arguments of their mini
# stand-in: a smaller input and fewer region proposals. A zero score threshold keeps the
# top boxes even with random weights, so the next stage always has crops to classify.
DETECTORS: dict[str, dict] = {
    "ssdlite320_mobilenet_v3_large": {"score_thresh": 0.0},
    "fasterrcnn_mobilenet_v3_large_320_fpn": {"box_score_thresh": 0.0, "rpn_post_nms_top_n_test": 100},
    "fasterrcnn_mobilenet_v3_large_fpn": {"box_score_thresh": 0.0, "rpn_post_nms_top_n_test": 100, "min_size": 224, "max_size": 320},
    "fcos_resnet50_fpn": {"score_thresh": 0.0, "min_size": 160, "max_size": 224},
    "retinanet_resnet50_fpn": {"score_thresh": 0.0, "min_size": 160, "max_size": 224},
    "fasterrcnn_resnet50_fpn_v2": {"box_score_thresh": 0.0, "rpn_post_nms_top_n_test": 50, "min_size": 160, "max_size": 224},
}
MINI_DETECTORS = tuple(DETECTORS)[:4]

QWEN25_REPORT = "https://arxiv.org/abs/2412.15115"
# Published configs (Qwen2ForCausalLM) and MMLU of the base models, Qwen2.5 technical
# report Table 5 (0.5B–3B) and Table 4 (7B).
QWEN25: dict[str, tuple[dict, float, str]] = {
    "qwen2.5-0.5b": (dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                          num_key_value_heads=2, tie_word_embeddings=True, vocab_size=151936), 0.475, "Table 5"),
    "qwen2.5-1.5b": (dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                          num_key_value_heads=2, tie_word_embeddings=True, vocab_size=151936), 0.609, "Table 5"),
    "qwen2.5-3b": (dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                        num_key_value_heads=2, tie_word_embeddings=True, vocab_size=151936), 0.656, "Table 5"),
    "qwen2.5-7b": (dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                        num_key_value_heads=4, tie_word_embeddings=False, vocab_size=152064), 0.742, "Table 4"),
}


def torchvision_accuracy(model: str) -> Accuracy:
    """The published accuracy of `model`'s first (V1) torchvision weights."""
    import torchvision

    weights = next(iter(torchvision.models.get_model_weights(model)))
    ((dataset, metrics),) = weights.meta["_metrics"].items()
    if "acc@1" in metrics:
        value, metric = metrics["acc@1"], f"{dataset} top-1 ({weights})"
    else:
        value, metric = metrics["box_map"], f"{dataset} box mAP ({weights})"
    return Accuracy(value=round(value / 100, 5), metric=metric, source=f"{TORCHVISION_DOCS}; recipe {weights.meta['recipe']}")


def _name(model: str, tier: str) -> str:
    base = model.replace("_", "-")
    return base if tier == "full" else f"{base}-mini"


def classifier(model: str, tier: str, task: str = "classify") -> VariantSpec:
    """A ResNet; on whole images (`classify`, named with its input size) or on detected crops."""
    mini = tier == "mini"
    size = (64 if task == "classify-crops" else 112) if mini else 224
    name = model if task == "classify-crops" else f"{model}-{size}"
    return VariantSpec(
        name=_name(name, tier),
        task=task,
        family="resnet",
        architecture=f"torchvision:{model}",
        build_args={"input_size": size},
        accuracy=torchvision_accuracy(model),
        tier=tier,
        stands_for=f"torchvision {model} IMAGENET1K_V1 at 224 px" if mini else None,
        resources=MINI_CPU if mini else FULL,
        max_batch_size=64,
    )


def detector(model: str, tier: str, max_detections: int = 4) -> VariantSpec:
    mini = tier == "mini"
    args = dict(DETECTORS[model]) if mini else {}
    key = "box_detections_per_img" if "rcnn" in model else "detections_per_img"
    args[key] = max_detections
    return VariantSpec(
        name=_name(model, tier),
        task="detect",
        family="torchvision-detection",
        architecture=f"torchvision:{model}",
        build_args=args,
        accuracy=torchvision_accuracy(model),
        tier=tier,
        stands_for=f"torchvision {model} COCO_V1 at its published input size" if mini else None,
        resources=MINI_CPU if mini else FULL,
        max_batch_size=16,
    )


def qwen25(name: str, tier: str) -> VariantSpec:
    """Qwen2.5 base model: the published config, or for mini 1/8 of the width and ~1/7 of the depth."""
    from workloads.text import BYTE_VOCAB

    full, mmlu, table = QWEN25[name]
    config = dict(full, max_position_embeddings=32768, rope_theta=1_000_000.0)
    if tier == "mini":
        heads = full["num_attention_heads"]
        config.update(
            hidden_size=max(full["hidden_size"] // 8 // heads, 8) * heads,
            intermediate_size=full["intermediate_size"] // 8,
            num_hidden_layers=max(3, full["num_hidden_layers"] // 7),
            vocab_size=BYTE_VOCAB,
            tie_word_embeddings=True,
        )
    return VariantSpec(
        name=name if tier == "full" else f"{name}-mini",
        task="generate",
        family="qwen2.5",
        architecture="transformers:Qwen2Config",
        build_args=config,
        accuracy=Accuracy(value=mmlu, metric=f"MMLU, base model (Qwen2.5 technical report, {table})", source=QWEN25_REPORT),
        tier=tier,
        stands_for=(
            f"Qwen/{name.replace('qwen', 'Qwen').replace('b', 'B')} ({full['num_hidden_layers']} layers, "
            f"width {full['hidden_size']}, its tokenizer)" if tier == "mini" else None
        ),
        resources=MINI_CPU if tier == "mini" else Resources(num_cpus=1, num_gpus=1 if name == "qwen2.5-7b" else 0.5),
        max_batch_size=16,
    )


@lru_cache(maxsize=4)
def pipelines(tier: str = "mini") -> dict[str, PipelineSpec]:
    """Every pipeline of `tier` by name: video, classify, llm, sam, sam-grounded."""
    from workloads.sam_models import sam_variants  # lazy: it imports torch, and this module

    if tier not in TIERS:
        raise SpecError(f"unknown tier {tier!r}; available: {list(TIERS)}")
    detectors = tuple(detector(m, tier) for m in (MINI_DETECTORS if tier == "mini" else DETECTORS))
    video = PipelineSpec(
        name="video",
        description="IPA's video pipeline: object detector → classifier of each detected crop.",
        sla_ms=2000 if tier == "mini" else 500,
        stages=(
            StageSpec(name="detector", variants=detectors),
            StageSpec(name="classifier", variants=tuple(classifier(m, tier, "classify-crops") for m in RESNETS)),
        ),
    )
    classify = PipelineSpec(
        name="classify",
        description="Single-stage image classification.",
        sla_ms=1000 if tier == "mini" else 200,
        stages=(StageSpec(name="classifier", variants=tuple(classifier(m, tier) for m in RESNETS)),),
    )
    llm = PipelineSpec(
        name="llm",
        description="Text generation; max_new_tokens comes from the request.",
        sla_ms=3000 if tier == "mini" else 5000,
        stages=(StageSpec(name="generator", variants=tuple(qwen25(n, tier) for n in QWEN25)),),
    )
    sam = PipelineSpec(
        name="sam",
        description="One-shot segmentation with point and box prompts (Segment Anything).",
        sla_ms=3000 if tier == "mini" else 1000,
        stages=(StageSpec(name="segmenter", variants=sam_variants(tier, task="segment")),),
    )
    grounded = PipelineSpec(
        name="sam-grounded",
        description="Detector → Segment Anything prompted with the detected boxes.",
        sla_ms=4000 if tier == "mini" else 1500,
        stages=(
            StageSpec(name="detector", variants=detectors),
            StageSpec(name="segmenter", variants=sam_variants(tier, task="segment-detections")),
        ),
    )
    return {p.name: p for p in (video, classify, llm, sam, grounded)}


def pipeline(name: str, tier: str = "mini") -> PipelineSpec:
    known = pipelines(tier)
    if name not in known:
        raise SpecError(f"unknown pipeline {name!r} in tier {tier!r}; known: {sorted(known)}")
    return known[name]

"""The variant catalog: pipelines of real architectures with published accuracy.

Accuracy of torchvision models is read from the metadata torchvision ships with its
published weights (the figures of https://pytorch.org/vision/stable/models.html), so no
figure here is typed in by hand. Mini variants are scaled-down stand-ins (smaller input or
fewer layers) that run in tens of milliseconds on a CPU core; each names the full variant
it stands for and carries that variant's published accuracy.
"""

from __future__ import annotations

from functools import lru_cache

from ipa_energy.errors import SpecError
from ipa_energy.spec import Accuracy, PipelineSpec, Resources, StageSpec, VariantSpec

TORCHVISION_DOCS = "https://pytorch.org/vision/stable/models.html"
MINI_CPU = Resources(num_cpus=0.5)


def torchvision_accuracy(model: str) -> Accuracy:
    """The published accuracy of `model`'s first (default) torchvision weights."""
    import torchvision

    weights = next(iter(torchvision.models.get_model_weights(model)))
    (dataset, metrics), = weights.meta["_metrics"].items()
    if "acc@1" in metrics:
        value, metric = metrics["acc@1"], f"{dataset} top-1 ({weights})"
    else:
        value, metric = metrics["box_map"], f"{dataset} box mAP ({weights})"
    return Accuracy(value=round(value / 100, 5), metric=metric, source=f"{TORCHVISION_DOCS}; recipe {weights.meta['recipe']}")


def _classifier(model: str, input_size: int, tier: str, task: str = "classify") -> VariantSpec:
    suffix = "" if tier == "full" else "-mini"
    return VariantSpec(
        name=f"{model}{suffix}",
        task=task,
        family="resnet",
        architecture=f"torchvision:{model}",
        build_args={"input_size": input_size},
        accuracy=torchvision_accuracy(model),
        tier=tier,
        stands_for=f"{model} at 224 px" if tier == "mini" else None,
        resources=MINI_CPU if tier == "mini" else Resources(num_cpus=1),
        max_batch_size=32,
    )


def _detector(model: str, max_detections: int, tier: str) -> VariantSpec:
    # With random weights every score is tiny; a zero threshold keeps the top boxes so that
    # the next stage has crops to classify (with a checkpoint the threshold is the same).
    key = "detections_per_img" if model.startswith("ssd") else "box_detections_per_img"
    extra = {} if model.startswith("ssd") else {"box_score_thresh": 0.0}
    return VariantSpec(
        name=model.replace("_", "-") + ("" if tier == "full" else "-mini"),
        task="detect",
        family="torchvision-detection",
        architecture=f"torchvision:{model}",
        build_args={key: max_detections, **extra},
        accuracy=torchvision_accuracy(model),
        tier=tier,
        stands_for=f"{model} (same architecture, native 320 px input)" if tier == "mini" else None,
        resources=MINI_CPU if tier == "mini" else Resources(num_cpus=1),
        max_batch_size=16,
    )


SMOLLM2 = {
    # name: (published config of the full model, HellaSwag from its model card)
    "smollm2-135m": (dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                          num_key_value_heads=3), 0.421, "https://huggingface.co/HuggingFaceTB/SmolLM2-135M"),
    "smollm2-360m": (dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                          num_key_value_heads=5), 0.545, "https://huggingface.co/HuggingFaceTB/SmolLM2-360M"),
}


def _smollm2_mini(name: str, layers: int) -> VariantSpec:
    """SmolLM2's architecture at a quarter of the width, `layers` deep, byte vocabulary."""
    from workloads.text import BYTE_VOCAB

    full, hellaswag, card = SMOLLM2[name]
    config = dict(
        hidden_size=full["hidden_size"] // 4,
        intermediate_size=full["intermediate_size"] // 4,
        num_hidden_layers=layers,
        num_attention_heads=full["num_attention_heads"],
        num_key_value_heads=full["num_key_value_heads"],
        vocab_size=BYTE_VOCAB,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    )
    return VariantSpec(
        name=f"{name}-mini",
        task="generate",
        family="smollm2",
        architecture="transformers:LlamaConfig",
        build_args=config,
        accuracy=Accuracy(value=hellaswag, metric="HellaSwag (zero-shot, model card)", source=card),
        tier="mini",
        stands_for=f"{card.removeprefix('https://huggingface.co/')} "
        f"({full['num_hidden_layers']} layers, width {full['hidden_size']})",
        resources=MINI_CPU,
        max_batch_size=16,
    )


@lru_cache(maxsize=4)
def pipelines(tier: str = "mini") -> dict[str, PipelineSpec]:
    """Every pipeline of `tier` ('mini' for the CPU default and tests), by name."""
    if tier != "mini":
        raise SpecError(f"tier {tier!r} is not in the catalog yet; available: ['mini']")
    crop = 64
    classifiers = tuple(_classifier(m, crop, tier, "classify-crops") for m in ("resnet18", "resnet34", "resnet50"))
    video = PipelineSpec(
        name="video",
        description="IPA's video pipeline: object detector → classifier of each detected crop.",
        sla_ms=2000,
        stages=(
            StageSpec(
                name="detector",
                variants=tuple(
                    _detector(m, 4, tier)
                    for m in ("ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn")
                ),
            ),
            StageSpec(name="classifier", variants=classifiers),
        ),
    )
    classify = PipelineSpec(
        name="classify",
        description="Single-stage image classification.",
        sla_ms=1000,
        stages=(
            StageSpec(
                name="classifier",
                variants=tuple(_classifier(m, 112, tier) for m in ("resnet18", "resnet34", "resnet50")),
            ),
        ),
    )
    llm = PipelineSpec(
        name="llm",
        description="Text generation; max_new_tokens comes from the request.",
        sla_ms=3000,
        stages=(StageSpec(name="generator", variants=(_smollm2_mini("smollm2-135m", 3), _smollm2_mini("smollm2-360m", 4))),),
    )
    return {p.name: p for p in (video, classify, llm)}


def pipeline(name: str, tier: str = "mini") -> PipelineSpec:
    known = pipelines(tier)
    if name not in known:
        raise SpecError(f"unknown pipeline {name!r} in tier {tier!r}; known: {sorted(known)}")
    return known[name]

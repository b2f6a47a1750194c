"""Catalog figures come from published metadata; every mini variant runs a real forward pass."""

import pytest
import torch

from workloads import catalog, payloads
from workloads.tasks import build_runner
from workloads.text import ByteTokenizer

ALL_VARIANTS = {v.name: v for p in catalog.pipelines().values() for s in p.stages for v in s.variants}


def test_accuracy_is_the_published_torchvision_figure():
    import torchvision

    v = catalog.pipeline("classify").stage("classifier").variant("resnet18-112-mini")
    assert v.accuracy.value == pytest.approx(
        torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["_metrics"]["ImageNet-1K"]["acc@1"] / 100
    )
    assert "pytorch.org/vision" in v.accuracy.source and v.stands_for


@pytest.mark.parametrize("tier", ["mini", "full"])
def test_accuracy_grows_with_model_size_within_a_family(tier):
    for pipeline, stage in [("classify", "classifier"), ("llm", "generator")]:
        accs = [v.accuracy.value for v in catalog.pipeline(pipeline, tier).stage(stage).variants]
        assert accs == sorted(accs) and len(set(accs)) == len(accs), (pipeline, accs)


@pytest.mark.parametrize("tier", ["mini", "full"])
def test_a_variant_name_means_one_spec(tier):
    """Profiles are keyed by variant name: two different specs must not share one."""
    seen = {}
    for p in catalog.pipelines(tier).values():
        for s in p.stages:
            for v in s.variants:
                assert seen.setdefault(v.name, v) == v, v.name


def test_ladders_are_long_enough():
    full = catalog.pipelines("full")
    assert len(full["video"].stage("detector").variants) >= 4
    assert [v.name for v in full["video"].stage("classifier").variants] == list(catalog.RESNETS)
    assert len(full["llm"].stage("generator").variants) >= 4
    assert len(full["sam"].stage("segmenter").variants) == 3
    for p in catalog.pipelines("mini").values():
        for s in p.stages:
            for v in s.variants:
                assert v.tier == "mini" and v.stands_for and v.weights == "random"


def test_full_variants_construct_on_the_meta_device():
    """Every full architecture builds (no weights allocated: the 7B model would not fit here)."""
    import torch

    from workloads import models

    for p in catalog.pipelines("full").values():
        for s in p.stages:
            for v in s.variants:
                with torch.device("meta"):
                    if v.task == "generate":
                        model = models.build_causal_lm(v)
                    elif v.task.startswith("segment"):
                        from workloads import sam_models

                        model = sam_models.build_sam(v)
                    else:
                        model = models.build_torchvision(v)
                assert sum(p.numel() for p in model.parameters()) > 1e6, v.name


@pytest.mark.parametrize("name", sorted(ALL_VARIANTS))
def test_every_mini_variant_runs_a_batch(name):
    torch.set_num_threads(1)
    variant = ALL_VARIANTS[name]
    runner = build_runner(variant)
    batch = [payloads.warmup_payload(variant.task), payloads.warmup_payload(variant.task)]
    with torch.inference_mode():
        out = runner(batch)
    assert len(out) == 2
    produced = {"classify": "labels", "detect": "detections", "classify-crops": "crop_labels", "generate": "text",
                "segment": "masks", "segment-detections": "masks"}[variant.task]
    assert all(produced in o for o in out)
    if variant.task == "classify-crops":
        assert len(out[0]["crop_labels"]) == 1  # one label per box
    if variant.task == "detect":
        assert all(len(d["box"]) == 4 for d in out[0]["detections"])


def test_generation_respects_each_requests_token_budget():
    runner = build_runner(catalog.pipeline("llm").stage("generator").variants[0])
    with torch.inference_mode():
        out = runner([{"prompt": "a", "max_new_tokens": 2}, {"prompt": "longer prompt", "max_new_tokens": 5}])
    assert [o["new_tokens"] for o in out] == [2, 5]


def test_byte_tokenizer_round_trips_utf8():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("énergie ⚡")[1:]) == "énergie ⚡"


def test_byte_tokenizer_drops_ids_past_the_byte_range():
    # The full tier's Qwen models keep their published vocabulary (151936) with random weights
    # and this tokenizer, so they generate ids that are no byte: decode skips them.
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("ok")[1:] + [151935, 300]) == "ok"


def test_crop_classifier_clamps_boxes_outside_the_image():
    runner = build_runner(catalog.pipeline("video").stage("classifier").variants[0])
    image = payloads.synthetic_image(40, 40)
    with torch.inference_mode():
        out = runner([{"image": image, "detections": [{"box": [-10, -10, 500, 500]}, {"box": [39.5, 39.5, 39.9, 39.9]}]},
                      {"image": image, "detections": []}])
    assert len(out[0]["crop_labels"]) == 2 and out[1]["crop_labels"] == []

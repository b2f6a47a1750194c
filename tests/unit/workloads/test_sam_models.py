"""SAM models: variants carry the published figures, builders match segment_anything's."""

import pytest
import torch

from ipa_energy.errors import SpecError
from workloads import sam_models

MINI = {v.name: v for v in sam_models.sam_variants("mini")}
MINI_DET = {v.name: v for v in sam_models.sam_variants("mini", task="segment-detections")}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_variants_name_the_full_checkpoints_and_carry_their_accuracy():
    full = sam_models.sam_variants("full")
    assert [v.name for v in full] == ["sam-vit-b", "sam-vit-l", "sam-vit-h"]
    assert list(MINI) == ["sam-vit-b-mini", "sam-vit-l-mini", "sam-vit-h-mini"]
    for f, m in zip(full, MINI.values()):
        assert f.tier == "full" and f.resources.num_cpus == 1 and f.resources.num_gpus == 0.5
        assert m.tier == "mini" and m.resources.num_cpus == 0.5 and m.resources.num_gpus == 0
        assert m.accuracy == f.accuracy and m.stands_for.endswith("1024 px)")
        assert f.architecture == m.architecture == "segment_anything:sam"
        assert f.task == m.task == "segment"
    assert [v.stands_for.split()[0] for v in MINI.values()] == ["sam_vit_b_01ec64", "sam_vit_l_0b3195", "sam_vit_h_4b8939"]
    assert [v.task for v in MINI_DET.values()] == ["segment-detections"] * 3
    with pytest.raises(SpecError):
        sam_models.sam_variants("huge")
    with pytest.raises(SpecError):
        sam_models.sam_variants("mini", task="classify")


def test_accuracy_grows_b_l_h_on_one_metric():
    accs = [v.accuracy for v in MINI.values()]
    assert [a.value for a in accs] == [0.445, 0.486, 0.491]
    assert len({a.source for a in accs}) == 1 and all("COCO" in a.metric and "mask AP" in a.metric for a in accs)
    assert accs[0].value < accs[1].value < accs[2].value


@pytest.mark.parametrize("name", ["sam-vit-b", "sam-vit-l", "sam-vit-h"])
def test_full_builder_matches_segment_anything(name):
    """Same parameter names and shapes as segment_anything.build_sam_vit_*, built on the meta device."""
    from segment_anything import sam_model_registry

    variant = {v.name: v for v in sam_models.sam_variants("full")}[name]
    with torch.device("meta"):
        ours = sam_models.build_sam(variant)
        theirs = sam_model_registry[name.replace("sam-", "").replace("-", "_")]()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    # fp32 sizes of the released files: 375 MB, 1.25 GB, 2.56 GB.
    expected = {"sam-vit-b": 93_735_472, "sam-vit-l": 312_342_832, "sam-vit-h": 641_090_608}[name]
    assert sam_models.parameter_count(ours) == expected


def test_full_vit_b_builds_on_cpu():
    model = sam_models.build_sam(sam_models.sam_variants("full")[0])
    assert not model.training and model.image_encoder.img_size == 1024
    assert sam_models.parameter_count(model, ["image_encoder"]) == 89_670_912
    assert model.prompt_encoder.image_embedding_size == (64, 64)


def test_checkpoint_is_loaded_from_a_local_file(tmp_path):
    variant = MINI["sam-vit-b-mini"]
    torch.manual_seed(0)
    source = sam_models.build_sam(variant)
    path = tmp_path / "sam_mini.pth"
    torch.save(source.state_dict(), path)
    loaded = sam_models.build_sam(variant.model_copy(update={"checkpoint": str(path)}))
    for (k, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(SpecError):
        sam_models.build_sam(variant.model_copy(update={"checkpoint": str(tmp_path / "missing.pth")}))


def test_build_args_are_checked():
    variant = MINI["sam-vit-b-mini"]
    with pytest.raises(SpecError, match="unknown"):
        sam_models.build_sam(variant.model_copy(update={"build_args": {**variant.build_args, "depth": 3}}))
    with pytest.raises(SpecError, match="global_attn"):
        sam_models.build_sam(variant.model_copy(update={"build_args": {**variant.build_args, "encoder_global_attn_indexes": [9]}}))
    with pytest.raises(SpecError):
        sam_models.build_sam(variant.model_copy(update={"architecture": "torchvision:resnet18"}))

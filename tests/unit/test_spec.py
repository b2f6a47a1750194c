"""The data model: validation, plan checks, pipeline accuracy."""

import math

import pytest
from pydantic import ValidationError

from ipa_energy.errors import SpecError
from ipa_energy.spec import Accuracy, PipelineSpec, Plan, Resources, StagePlan, StageSpec, VariantSpec

ACC = Accuracy(value=0.7, metric="top-1", source="https://example.org/card")


def variant(name, task="classify", acc=0.7, **kw):
    return VariantSpec(name=name, task=task, family="f", architecture="torchvision:resnet18",
                       accuracy=ACC.model_copy(update={"value": acc}), **kw)


def two_stage():
    return PipelineSpec(
        name="video",
        sla_ms=500,
        stages=(
            StageSpec(name="detector", variants=(variant("det-a", "detect", 0.3), variant("det-b", "detect", 0.4))),
            StageSpec(name="classifier", variants=(variant("cls-a", "classify-crops", 0.7, max_batch_size=8),)),
        ),
    )


def test_input_keys_are_what_no_earlier_stage_produces():
    assert two_stage().input_keys == ("image",)


def test_stage_must_use_an_earlier_output():
    with pytest.raises(ValidationError, match="uses no output of an earlier stage"):
        PipelineSpec(name="p", sla_ms=1, stages=(
            StageSpec(name="a", variants=(variant("x"),)),
            StageSpec(name="b", variants=(variant("y"),)),
        ))


def test_stage_rejects_mixed_tasks_and_duplicate_variants():
    with pytest.raises(ValidationError, match="mixes tasks"):
        StageSpec(name="s", variants=(variant("a"), variant("b", "detect")))
    with pytest.raises(ValidationError, match="duplicate variant"):
        StageSpec(name="s", variants=(variant("a"), variant("a")))


def test_mini_variant_must_say_what_it_stands_for():
    with pytest.raises(ValidationError, match="must name the full variant"):
        variant("m", tier="mini")
    assert variant("m", tier="mini", stands_for="resnet18").weights == "random"
    assert variant("c", checkpoint="/x.pt").weights == "checkpoint"


@pytest.mark.parametrize("bad", [0, 1.5, -0.1])
def test_accuracy_is_a_fraction(bad):
    with pytest.raises(ValidationError):
        Accuracy(value=bad, metric="top-1", source="card")


def test_resources_fractional_gpu_and_ray_options():
    assert Resources(num_cpus=0.5, num_gpus=0.25, memory_mb=100).ray_actor_options() == {
        "num_cpus": 0.5, "num_gpus": 0.25, "memory": 100 * 1024 * 1024}
    with pytest.raises(ValidationError, match="whole number"):
        Resources(num_gpus=1.5)


def test_check_plan_and_accuracy():
    p = two_stage()
    plan = p.default_plan()
    p.check_plan(plan)
    assert math.isclose(p.accuracy(plan), 0.3 * 0.7)
    better = Plan(pipeline="video", stages={"detector": StagePlan(variant="det-b"), "classifier": StagePlan(variant="cls-a")})
    assert math.isclose(p.accuracy(better), 0.4 * 0.7)


@pytest.mark.parametrize(
    "stages, match",
    [
        ({"detector": StagePlan(variant="det-a")}, "must cover stages"),
        ({"detector": StagePlan(variant="nope"), "classifier": StagePlan(variant="cls-a")}, "no variant 'nope'"),
        ({"detector": StagePlan(variant="det-a"), "classifier": StagePlan(variant="cls-a", batch_size=16)}, "exceeds"),
    ],
)
def test_check_plan_rejects(stages, match):
    with pytest.raises(SpecError, match=match):
        two_stage().check_plan(Plan(pipeline="video", stages=stages))


def test_plan_for_another_pipeline_is_rejected():
    with pytest.raises(SpecError, match="not 'video'"):
        two_stage().check_plan(Plan(pipeline="other", stages={}))


def test_stage_plan_bounds():
    with pytest.raises(ValidationError):
        StagePlan(variant="a", replicas=0)
    with pytest.raises(ValidationError):
        StagePlan(variant="a", batch_size=0)

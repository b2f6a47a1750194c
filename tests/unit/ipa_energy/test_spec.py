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


# -- variant mix and autoscaling ---------------------------------------------------------------

MIX = [{"variant": "det-a", "share": 0.25}, {"variant": "det-b", "share": 0.75, "batch_size": 2, "replicas": 3}]


def test_mix_fills_the_primary_from_the_largest_share_and_round_trips():
    sp = StagePlan(mix=MIX)
    assert (sp.variant, sp.batch_size, sp.replicas) == ("det-b", 2, 3)
    assert sp.routes() == (("det-a", 0.25), ("det-b", 0.75))
    assert StagePlan.model_validate_json(sp.model_dump_json()) == sp
    # a plan without a mix or autoscaling serialises exactly as before these fields existed
    assert StagePlan(variant="a").model_dump() == {"variant": "a", "batch_size": 1, "replicas": 1,
                                                   "batch_wait_timeout_ms": 10.0}
    assert "mix" in sp.model_dump() and "autoscaling" not in sp.model_dump()


@pytest.mark.parametrize("kw, match", [
    ({"mix": [{"variant": "a", "share": 0.5}, {"variant": "b", "share": 0.4}]}, "sum to 0.9"),
    ({"mix": [{"variant": "a", "share": 0.5}, {"variant": "a", "share": 0.5}]}, "twice"),
    ({"variant": "c", "mix": [{"variant": "a", "share": 0.5}, {"variant": "b", "share": 0.5}]}, "not a member"),
    ({"variant": "a", "mix": [{"variant": "a", "share": 0.4}, {"variant": "b", "share": 0.6}]}, "largest share"),
    ({"variant": "a", "batch_size": 4, "mix": [{"variant": "a", "share": 1.0}]}, "mirror"),
    ({"mix": []}, "at least 1"),
    ({"mix": [{"variant": "a", "share": 0.0}, {"variant": "b", "share": 1.0}]}, "greater than 0"),
    ({"mix": [{"variant": "a", "share": 1.0}],
      "autoscaling": {"min_replicas": 1, "max_replicas": 2}}, "not to a mix"),
])
def test_mix_validation(kw, match):
    with pytest.raises(ValidationError, match=match):
        StagePlan(**kw)


def test_route_follows_the_shares():
    sp = StagePlan(mix=[{"variant": "a", "share": 0.2}, {"variant": "b", "share": 0.8}])
    assert [sp.route(u) for u in (0.0, 0.19, 0.2, 0.5, 0.999999)] == ["a", "a", "b", "b", "b"]
    assert StagePlan(variant="x").route(0.7) == "x"


def test_mixed_stage_accuracy_is_share_weighted_and_every_member_is_checked():
    p = two_stage()
    plan = Plan(pipeline="video", stages={"detector": StagePlan(mix=MIX), "classifier": StagePlan(variant="cls-a")})
    p.check_plan(plan)
    assert math.isclose(p.accuracy(plan), (0.25 * 0.3 + 0.75 * 0.4) * 0.7)
    bad = Plan(pipeline="video", stages={"detector": StagePlan(mix=[{"variant": "det-a", "share": 0.5},
                                                                     {"variant": "nope", "share": 0.5}]),
                                         "classifier": StagePlan(variant="cls-a")})
    with pytest.raises(SpecError, match="no variant 'nope'"):
        p.check_plan(bad)
    big = Plan(pipeline="video", stages={"detector": StagePlan(variant="det-a"), "classifier": StagePlan(
        mix=[{"variant": "cls-a", "share": 1.0, "batch_size": 16}])})
    with pytest.raises(SpecError, match="exceeds"):
        p.check_plan(big)


def test_autoscaling_bounds_and_serve_config():
    from ipa_energy.spec import Autoscaling

    a = Autoscaling(min_replicas=2, max_replicas=4, target_ongoing_requests=2, upscale_delay_s=3)
    assert a.serve_config(1) == {"min_replicas": 2, "max_replicas": 4, "initial_replicas": 2,
                                 "target_ongoing_requests": 2.0, "upscale_delay_s": 3}
    assert a.serve_config(9)["initial_replicas"] == 4 and a.serve_config(3)["initial_replicas"] == 3
    timed = a.model_copy(update={"look_back_period_s": 10.0, "metrics_interval_s": 1.0}).serve_config(1)
    assert (timed["look_back_period_s"], timed["metrics_interval_s"]) == (10.0, 1.0)
    from ray.serve.config import AutoscalingConfig
    AutoscalingConfig(**timed)  # Serve takes what we pass it
    for bad in ({"min_replicas": 3, "max_replicas": 2}, {"min_replicas": 0, "max_replicas": 2},
                {"max_replicas": 2, "target_ongoing_requests": 0}, {"max_replicas": 2, "look_back_period_s": 0}):
        with pytest.raises(ValidationError):
            Autoscaling(**bad)
    sp = StagePlan(variant="a", autoscaling=a)
    assert StagePlan.model_validate_json(sp.model_dump_json()) == sp

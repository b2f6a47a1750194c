"""Plan diffs and the make-before-break step sequence (no Ray)."""

from ipa_energy.spec import Autoscaling, Plan, StagePlan
from ipa_energy.diff import diff_plans, switches_variant
from serve_app.layout import deployment_name, layout, parse_name, targets, union
from serve_app.rollout import rollout


def plan(det="det-a", cls="cls-a", cls_batch=1, cls_replicas=1):
    return Plan(pipeline="video", stages={
        "detector": StagePlan(variant=det),
        "classifier": StagePlan(variant=cls, batch_size=cls_batch, replicas=cls_replicas),
    })


def test_diff_lists_each_changed_field():
    changes = diff_plans(plan(), plan(cls="cls-b", cls_batch=4))
    assert {(c.stage, c.field, c.old, c.new) for c in changes} == {
        ("classifier", "variant", "cls-a", "cls-b"), ("classifier", "batch_size", 1, 4)}
    assert diff_plans(plan(), plan()) == []
    assert switches_variant(plan(), plan(det="det-b"))
    assert len(diff_plans(None, plan())) == 2 * 4


CLS0 = deployment_name("video", "classifier", 0)  # the classifier's slot


def test_union_switches_a_slot_in_place_at_the_larger_replica_count():
    now, new = layout({"video": plan(cls_replicas=3)}), layout({"video": plan(cls="cls-b", cls_replicas=1)})
    both = union(now, new)
    assert set(both) == set(now) == set(new) == {"video.detector.0", CLS0}
    assert (both[CLS0].variant, both[CLS0].replicas) == ("cls-b", 3)
    assert both[CLS0].user_config == {"variant": "cls-b", "max_batch_size": 1, "batch_wait_timeout_s": 0.01}


def test_variant_switch_is_in_place_then_routed():
    cur, new = {"video": plan()}, {"video": plan(cls="cls-b", cls_batch=4)}
    steps = rollout(cur, new)
    assert [s.name for s in steps] == ["make", "switch"]  # one slot: nothing to break
    make, switch = steps
    # the running replicas switch in place while traffic keeps its routes...
    assert make.deployments[CLS0].variant == "cls-b" and make.routing == cur
    # ...which then follow the plan; the slot was never without a replica
    assert switch.deployments == make.deployments and switch.routing == new
    assert switch.deployments[CLS0].batch_size == 4


def test_a_slot_that_switches_and_grows_grows_first_with_the_variant_it_runs():
    cur, new = {"video": plan(cls_replicas=1)}, {"video": plan(cls="cls-b", cls_batch=2, cls_replicas=3)}
    steps = rollout(cur, new)
    assert [s.name for s in steps] == ["grow", "make", "switch"]
    grow, make, _ = steps
    # the new replicas start on the running variant: capacity never dips below the running plan's
    assert (grow.deployments[CLS0].variant, grow.deployments[CLS0].replicas, grow.deployments[CLS0].batch_size) == (
        "cls-a", 3, 1) and grow.routing == cur
    assert (make.deployments[CLS0].variant, make.deployments[CLS0].replicas) == ("cls-b", 3)
    # switching to fewer replicas needs no growth; the break shrinks afterwards
    assert [s.name for s in rollout({"video": plan(cls_replicas=3)}, {"video": plan(cls="cls-b")})] == [
        "make", "switch", "break"]


def shaped(pipeline: str, stage: str, variant: str) -> str:
    return "gpu1" if variant == "cls-big" else ""


def test_a_variant_of_another_shape_is_made_before_it_breaks():
    cur, new = {"video": plan()}, {"video": plan(cls="cls-big")}
    make, switch, brk = rollout(cur, new, shaped)
    big = deployment_name("video", "classifier", 0, "gpu1")
    assert big == "video.classifier.0-gpu1"
    assert {CLS0, big} <= set(make.deployments) and make.routing == cur
    assert switch.routing == new and CLS0 not in brk.deployments and big in brk.deployments
    assert targets(new["video"], shaped)["classifier"] == {"cls-big": big}


def test_batch_only_change_is_one_step_and_scale_down_two():
    cur = {"video": plan(cls_replicas=2)}
    assert [s.name for s in rollout(cur, {"video": plan(cls_batch=8, cls_replicas=2)})] == ["apply"]
    steps = rollout(cur, {"video": plan(cls_replicas=1)})
    assert [s.name for s in steps] == ["apply", "break"]
    assert steps[-1].deployments[CLS0].replicas == 1


def test_other_pipelines_are_untouched():
    other = Plan(pipeline="llm", stages={"generator": StagePlan(variant="g")})
    steps = rollout({"video": plan(), "llm": other}, {"video": plan(det="det-b"), "llm": other})
    g = deployment_name("llm", "generator", 0)
    assert all(s.deployments[g].variant == "g" for s in steps)


# -- variant mixes and autoscaling ---------------------------------------------------------------

def mixed(shares=(("cls-a", 0.7), ("cls-b", 0.3)), replicas=1):
    return Plan(pipeline="video", stages={
        "detector": StagePlan(variant="det-a"),
        "classifier": StagePlan(mix=[{"variant": v, "share": s, "replicas": replicas} for v, s in shares]),
    })


def test_layout_runs_every_member_of_a_mix_in_a_slot_of_its_own():
    deps = layout({"video": mixed(replicas=2)})
    classifier = {d.name: d.variant for d in deps.values() if d.stage == "classifier"}
    assert classifier == {CLS0: "cls-a", "video.classifier.1": "cls-b"}  # the largest share keeps slot 0
    assert all(d.replicas == 2 for d in deps.values() if d.stage == "classifier")
    assert targets(mixed())["classifier"] == {"cls-a": CLS0, "cls-b": "video.classifier.1"}


def test_adding_a_mix_member_is_make_before_switch_and_dropping_it_breaks_last():
    cur, new = {"video": plan()}, {"video": mixed()}
    steps = rollout(cur, new)
    assert [s.name for s in steps] == ["make", "switch"]  # cls-a stays in its slot: nothing to break
    b = deployment_name("video", "classifier", 1)
    assert b in steps[0].deployments and steps[0].routing == cur and steps[1].routing == new
    back = rollout(new, cur)
    assert [s.name for s in back] == ["make", "switch", "break"]
    assert b in back[1].deployments and b not in back[2].deployments and back[1].routing == cur
    # reweighting moves traffic too; the same mix again is one in-place step
    assert [s.name for s in rollout(new, {"video": mixed((("cls-a", 0.6), ("cls-b", 0.4)))})] == ["make", "switch"]
    assert [s.name for s in rollout(new, {"video": mixed(replicas=2)})] == ["apply"]


def test_diff_describes_mix_and_autoscaling_changes():
    changes = {c.field: c for c in diff_plans(plan(), mixed())}
    assert set(changes) == {"mix"}  # cls-a stays the primary, with the same settings
    assert changes["mix"].old is None
    assert str(changes["mix"]) == "video.classifier.mix: None → 70.0% cls-a×1@b1 + 30.0% cls-b×1@b1"
    assert switches_variant(plan(), mixed())
    assert len(diff_plans(None, mixed())) == 2 * 4 + 1
    scaled = Plan(pipeline="video", stages={**plan().stages, "classifier": StagePlan(
        variant="cls-a", autoscaling=Autoscaling(min_replicas=1, max_replicas=4, target_ongoing_requests=2))})
    (c,) = diff_plans(plan(), scaled)
    assert (c.field, c.old, c.new) == ("autoscaling", None, "1..4@2")


def test_autoscaled_deployment_passes_serve_its_config_and_keeps_it_through_a_union():
    auto = Autoscaling(min_replicas=1, max_replicas=4, target_ongoing_requests=2)
    scaled = Plan(pipeline="video", stages={**plan().stages, "classifier": StagePlan(
        variant="cls-a", replicas=6, autoscaling=auto)})
    dep = layout({"video": scaled})[CLS0]
    assert dep.replica_options == {"autoscaling_config": auto.serve_config(6)}
    assert dep.replica_options["autoscaling_config"]["initial_replicas"] == 4
    assert layout({"video": plan()})[dep.name].replica_options == {"num_replicas": 1}
    steps = rollout({"video": plan()}, {"video": scaled})
    assert [s.name for s in steps] == ["apply"] and steps[0].deployments[dep.name].autoscaling == auto


def test_converged_means_exact_count_or_any_count_within_autoscaling_bounds():
    from serve_app.controller import settled

    assert settled(2, "HEALTHY", {"RUNNING": 2})
    assert not settled(2, "HEALTHY", {"RUNNING": 3}) and not settled(2, "UPDATING", {"RUNNING": 2})
    assert not settled(2, "HEALTHY", {"RUNNING": 2, "STARTING": 1})
    assert settled((1, 4), "HEALTHY", {"RUNNING": 3}) and settled((1, 4), "UPSCALING", {"RUNNING": 1, "STARTING": 2})
    assert not settled((2, 4), "HEALTHY", {"RUNNING": 1}) and not settled((1, 4), "HEALTHY", {"RUNNING": 5})
    assert not settled((1, 4), "UPDATING", {"RUNNING": 2})


def test_a_slots_name_gives_its_stage_and_what_its_replicas_reserve():
    import pytest

    from serve_app.layout import slot_resources
    from workloads import catalog

    video = catalog.pipeline("video")
    assert parse_name(video, "video.classifier.1") == ("classifier", 1, "")
    assert parse_name(video, "video.detector.0-cpu1-gpu0.25") == ("detector", 0, "cpu1-gpu0.25")
    assert slot_resources(video, "video.classifier.0") == video.stage("classifier").variants[0].resources
    with pytest.raises(ValueError, match="not a stage deployment"):
        parse_name(video, "llm.generator.0")
    with pytest.raises(ValueError, match="resource shape"):
        slot_resources(video, "video.classifier.0-cpu9-gpu0")


def test_a_mix_keeps_its_members_in_their_slots_when_reweighted():
    a = targets(mixed((("cls-a", 0.5), ("cls-c", 0.3), ("cls-b", 0.2))))["classifier"]
    b = targets(mixed((("cls-a", 0.5), ("cls-c", 0.2), ("cls-b", 0.3))))["classifier"]
    assert a == b == {"cls-a": CLS0, "cls-b": "video.classifier.1", "cls-c": "video.classifier.2"}

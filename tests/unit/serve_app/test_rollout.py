"""Plan diffs and the make-before-break step sequence (no Ray)."""

from ipa_energy.spec import Autoscaling, Plan, StagePlan
from ipa_energy.diff import diff_plans, switches_variant
from serve_app.layout import deployment_name, layout, union
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


def test_union_keeps_both_variants_and_the_larger_replica_count():
    now, new = layout({"video": plan(cls_replicas=3)}), layout({"video": plan(cls="cls-b", cls_replicas=1)})
    both = union(now, new)
    assert set(both) == set(now) | set(new)
    assert both[deployment_name("video", "classifier", "cls-a")].replicas == 3


def test_variant_switch_is_make_switch_break():
    cur, new = {"video": plan()}, {"video": plan(cls="cls-b", cls_batch=4)}
    steps = rollout(cur, new)
    assert [s.name for s in steps] == ["make", "switch", "break"]
    make, switch, brk = steps
    old_dep, new_dep = deployment_name("video", "classifier", "cls-a"), deployment_name("video", "classifier", "cls-b")
    # Traffic keeps flowing to the old variant while the new one starts...
    assert {old_dep, new_dep} <= set(make.deployments) and make.routing == cur
    # ...moves only once both run...
    assert set(switch.deployments) == set(make.deployments) and switch.routing == new
    # ...and the old one is removed last.
    assert old_dep not in brk.deployments and new_dep in brk.deployments
    assert brk.deployments[new_dep].batch_size == 4


def test_batch_only_change_is_one_step_and_scale_down_two():
    cur = {"video": plan(cls_replicas=2)}
    assert [s.name for s in rollout(cur, {"video": plan(cls_batch=8, cls_replicas=2)})] == ["apply"]
    steps = rollout(cur, {"video": plan(cls_replicas=1)})
    assert [s.name for s in steps] == ["apply", "break"]
    assert steps[-1].deployments[deployment_name("video", "classifier", "cls-a")].replicas == 1


def test_other_pipelines_are_untouched():
    other = Plan(pipeline="llm", stages={"generator": StagePlan(variant="g")})
    steps = rollout({"video": plan(), "llm": other}, {"video": plan(det="det-b"), "llm": other})
    assert all(deployment_name("llm", "generator", "g") in s.deployments for s in steps)


# -- variant mixes and autoscaling ---------------------------------------------------------------

def mixed(shares=(("cls-a", 0.7), ("cls-b", 0.3)), replicas=1):
    return Plan(pipeline="video", stages={
        "detector": StagePlan(variant="det-a"),
        "classifier": StagePlan(mix=[{"variant": v, "share": s, "replicas": replicas} for v, s in shares]),
    })


def test_layout_runs_every_member_of_a_mix():
    deps = layout({"video": mixed(replicas=2)})
    assert {d.variant for d in deps.values() if d.stage == "classifier"} == {"cls-a", "cls-b"}
    assert all(d.replicas == 2 for d in deps.values() if d.stage == "classifier")


def test_adding_a_mix_member_is_make_before_switch_and_dropping_it_breaks_last():
    cur, new = {"video": plan()}, {"video": mixed()}
    steps = rollout(cur, new)
    assert [s.name for s in steps] == ["make", "switch"]  # cls-a stays: nothing to break
    b = deployment_name("video", "classifier", "cls-b")
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
    dep = layout({"video": scaled})[deployment_name("video", "classifier", "cls-a")]
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

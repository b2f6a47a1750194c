"""Plan diffs and the make-before-break step sequence (no Ray)."""

from ipa_energy.spec import Plan, StagePlan
from planner.diff import diff_plans, switches_variant
from serve_app.builder import deployment_name, layout, union
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

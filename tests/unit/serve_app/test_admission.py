"""serve_app.admission: a change's make-before-break peak against the cluster, resource by resource."""

from ipa_energy.spec import Autoscaling, Plan, StagePlan
from serve_app.admission import shortfalls
from serve_app.config import AppSpec
from serve_app.layout import layout, union
from workloads import catalog

SPEC = AppSpec(pipelines=(catalog.pipeline("classify"),), ingress_num_cpus=0.5, ingress_replicas=1)


def plan(variant: str, replicas: int = 1, **kw) -> dict[str, Plan]:
    return {"classify": Plan(pipeline="classify", stages={"classifier": StagePlan(variant=variant, replicas=replicas, **kw)})}


def mix(*members: tuple[str, float, int]) -> dict[str, Plan]:
    return {"classify": Plan(pipeline="classify", stages={"classifier": StagePlan(
        mix=[{"variant": v, "share": share, "replicas": n} for v, share, n in members])})}


def test_the_peak_counts_old_and_new_and_the_ingress():
    # a new mix member starts beside the running one: 2 + 2 mini replicas of 0.5 CPU, plus the ingress's 0.5
    old, new = plan("resnet18-112-mini", 2), mix(("resnet18-112-mini", 0.5, 2), ("resnet50-112-mini", 0.5, 2))
    peak = union(layout(old, SPEC.shape), layout(new, SPEC.shape))
    assert shortfalls(SPEC, peak, {"CPU": 2.5, "GPU": 0, "memory_mb": 1e6}, {}) == []
    (cpu,) = shortfalls(SPEC, peak, {"CPU": 2.0, "GPU": 0, "memory_mb": 1e6}, {})
    assert cpu.startswith("CPU:") and "needs 2.5" in cpu and "short by 0.5" in cpu


def test_a_variant_switched_in_place_counts_once_at_its_larger_replica_count():
    old, new = plan("resnet18-112-mini", 2), plan("resnet50-112-mini", 3)
    peak = union(layout(old, SPEC.shape), layout(new, SPEC.shape))  # one slot: 3 replicas, plus the ingress
    assert [d.variant for d in peak.values()] == ["resnet50-112-mini"]
    assert shortfalls(SPEC, peak, {"CPU": 2.0, "GPU": 0, "memory_mb": 1e6}, {}) == []
    (cpu,) = shortfalls(SPEC, peak, {"CPU": 1.5, "GPU": 0, "memory_mb": 1e6}, {})
    assert "needs 2" in cpu


def test_memory_counts_each_replica_and_autoscaling_its_maximum():
    memory = {"resnet18-112-mini": 300.0}
    auto = plan("resnet18-112-mini", 1, autoscaling=Autoscaling(min_replicas=1, max_replicas=5))
    (mem,) = shortfalls(SPEC, layout(auto), {"CPU": 100, "GPU": 0, "memory_mb": 1200.0}, memory)
    assert mem.startswith("memory_mb:") and "needs 1500" in mem and "short by 300" in mem
    assert shortfalls(SPEC, layout(plan("resnet18-112-mini", 4)), {"CPU": 100, "memory_mb": 1200.0}, memory) == []


def test_a_thousand_replicas_are_short_of_everything_on_a_small_host():
    missing = shortfalls(SPEC, layout(plan("resnet18-112-mini", 1000)), {"CPU": 2, "GPU": 0, "memory_mb": 16_000},
                         {"resnet18-112-mini": 250.0})
    assert [m.split(":")[0] for m in missing] == ["CPU", "memory_mb"]

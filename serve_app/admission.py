"""Admission of a plan change: it must fit the cluster before anything starts.

A change is made make-before-break, so for a while the app runs the old and the new
deployments together (:func:`serve_app.layout.union`): a slot that switches variant in place
counts once, at the larger of its two replica counts (its running replicas hold the old model
too while the new one builds: both count in memory); a new mix member or a variant of another
resource shape counts beside the old. That peak must fit what the cluster has, or Serve leaves
replicas pending forever and the change never converges:

* Ray's reservations: Σ replicas × num_cpus (num_gpus) of every stage deployment, plus the
  ingress replicas, against the cluster's logical CPUs (GPUs);
* memory: Σ replicas × the memory one replica adds (its profile's ``memory_mb_per_replica``,
  where this hardware has one), against the memory Ray gives actors.

An autoscaled deployment counts its maximum. :func:`shortfalls` names each resource that does
not fit and by how much; the plan controller refuses such a change with
:class:`~ipa_energy.errors.PlanRejected` (HTTP 422) in well under a second.
"""

from __future__ import annotations

from collections.abc import Mapping

from serve_app.config import AppSpec
from serve_app.layout import Layout

__all__ = ["cluster_totals", "replica_memory_mb", "shortfalls"]


def shortfalls(spec: AppSpec, peak: Layout, totals: Mapping[str, float], memory_mb: Mapping[str, float],
               running: Layout | None = None) -> list[str]:
    """What the `peak` layout needs beyond `totals` ({"CPU", "GPU", "memory_mb"}), one line per resource.

    `running`: the layout before the change; a replica of a slot that switches variant in place
    holds both models while the new one builds, so its old variant's memory counts too."""
    need = {"CPU": spec.ingress_replicas * spec.ingress_num_cpus, "GPU": 0.0, "memory_mb": 0.0}
    for d in peak.values():
        resources = spec.pipeline(d.pipeline).stage(d.stage).variant(d.variant).resources
        n = d.most_replicas
        need["CPU"] += n * resources.num_cpus
        need["GPU"] += n * resources.num_gpus
        need["memory_mb"] += n * memory_mb.get(d.variant, 0.0)
        old = (running or {}).get(d.name)
        if old is not None and old.variant != d.variant:
            need["memory_mb"] += old.most_replicas * memory_mb.get(old.variant, 0.0)
    out = []
    for resource, units in (("CPU", "logical CPUs"), ("GPU", "GPUs"), ("memory_mb", "MiB of memory")):
        have = float(totals.get(resource, 0.0))
        if need[resource] > have + 1e-9:
            out.append(f"{resource}: the change needs {need[resource]:g} {units} at its peak "
                       f"(old and new deployments together), the cluster has {have:g}: short by {need[resource] - have:g}")
    return out


def cluster_totals() -> dict[str, float]:
    """The live cluster's logical CPUs, GPUs and the memory Ray gives actors (MiB)."""
    import ray

    r = ray.cluster_resources()
    return {"CPU": float(r.get("CPU", 0.0)), "GPU": float(r.get("GPU", 0.0)),
            "memory_mb": float(r.get("memory", 0.0)) / 2**20}


def replica_memory_mb(spec: AppSpec) -> dict[str, float]:
    """Memory one replica adds (USS) for every variant the app serves, from the profiles the
    planner would use on this machine (none without profiles)."""
    from workloads.profile_store import PROFILES_DIR, ProfileStore, planning_hardware

    store = ProfileStore(PROFILES_DIR)
    try:
        hardware, _ = planning_hardware(store)
    except FileNotFoundError:
        return {}
    names = {v.name for p in spec.pipelines for s in p.stages for v in s.variants}
    return {p.variant: p.memory_mb_per_replica for p in store.load(hardware) if p.variant in names and p.memory_mb_per_replica}

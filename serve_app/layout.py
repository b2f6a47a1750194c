"""The desired state of the app's stage deployments: which (pipeline, stage, variant) runs how.

Pure data, no Ray: :func:`layout` turns plans into one :class:`StageDeployment` per member of a
stage's plan (one, or every member of a mix), :func:`union` is the make-before-break intermediate.

A stage deployment is a *slot* (``pipeline.stage.0``, ``.1`` for a mix's next member), not a
variant: the variant it runs is part of its ``user_config``. Switching a stage from one variant to
another therefore reconfigures the running replicas in place (each builds the new model in the
background while the old one serves, then swaps: well under a second for the mini models) instead
of starting new processes (a cold start: 4-5 s idle, 8-13 s on a busy 2-core host, mostly
importing torch and torchvision). Only a variant that reserves other resources than its stage's first
variant gets a slot of its own (``pipeline.stage.0-cpu1-gpu0.5``): Serve restarts replicas whose
resources change, so such a switch is made before it breaks, in two deployments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ipa_energy.spec import Autoscaling, PipelineSpec, Plan, Resources, StagePlan

__all__ = ["Layout", "QUEUED_BATCHES_PER_REPLICA", "Shape", "StageDeployment", "deployment_name", "layout",
           "members_in_slots", "no_shapes", "parse_name", "shape_of", "slot_resources", "targets", "union"]

#: Serve's per-caller queue bound of a stage deployment, in full batches per replica
QUEUED_BATCHES_PER_REPLICA = 64


#: (pipeline, stage, variant) → the variant's resource tag: "" when it reserves what its stage's
#: first variant does (every catalog stage), else a tag that gives it a slot of its own
Shape = Callable[[str, str, str], str]


def no_shapes(pipeline: str, stage: str, variant: str) -> str:
    """Every variant reserves the same resources (plans checked without an app spec)."""
    return ""


def shape_of(pipeline: PipelineSpec, stage: str, variant: str) -> str:
    """The resource tag of `variant` in `stage` of `pipeline` (see :data:`Shape`)."""
    spec = pipeline.stage(stage)
    r = spec.variant(variant).resources
    if r == spec.variants[0].resources:
        return ""
    tag = f"cpu{r.num_cpus:g}-gpu{r.num_gpus:g}"
    return tag + (f"-mem{r.memory_mb}" if r.memory_mb is not None else "")


def deployment_name(pipeline: str, stage: str, slot: int = 0, shape: str = "") -> str:
    return f"{pipeline}.{stage}.{slot}" + (f"-{shape}" if shape else "")


def parse_name(pipeline: PipelineSpec, name: str) -> tuple[str, int, str]:
    """(stage, slot, shape) of a stage deployment of `pipeline` (names may hold dots); ValueError if none."""
    for st in pipeline.stages:
        prefix = f"{pipeline.name}.{st.name}."
        if name.startswith(prefix):
            slot, _, shape = name.removeprefix(prefix).partition("-")
            if slot.isdigit():
                return st.name, int(slot), shape
    raise ValueError(f"{name!r} is not a stage deployment of pipeline {pipeline.name!r}")


def slot_resources(pipeline: PipelineSpec, name: str) -> Resources:
    """What one replica of the stage deployment `name` reserves (every variant of its shape alike)."""
    stage, _, shape = parse_name(pipeline, name)
    for v in pipeline.stage(stage).variants:
        if shape_of(pipeline, stage, v.name) == shape:
            return v.resources
    raise ValueError(f"{name!r}: no variant of stage {stage!r} has the resource shape {shape!r}")


def members_in_slots(sp: StagePlan):
    """A stage plan's members in slot order: the primary variant first (a mix keeps it in the slot
    the single variant had), then by name (a reweighting moves no variant between slots); so the
    order follows from the plan alone."""
    return sorted(sp.members(), key=lambda m: (m.variant != sp.variant, m.variant))


def targets(plan: Plan, shape: Shape = no_shapes) -> dict[str, dict[str, str]]:
    """Stage → variant → the deployment that serves it under `plan` (what the ingress calls)."""
    return {stage: {m.variant: deployment_name(plan.pipeline, stage, i, shape(plan.pipeline, stage, m.variant))
                    for i, m in enumerate(members_in_slots(sp))}
            for stage, sp in plan.stages.items()}


@dataclass(frozen=True)
class StageDeployment:
    """Desired state of one stage deployment (a slot) and the variant it runs."""

    pipeline: str
    stage: str
    variant: str
    replicas: int  # with autoscaling: the initial count (clamped into [min, max])
    batch_size: int
    batch_wait_timeout_ms: float
    autoscaling: Autoscaling | None = None
    slot: int = 0
    shape: str = ""

    @property
    def name(self) -> str:
        return deployment_name(self.pipeline, self.stage, self.slot, self.shape)

    @property
    def replica_options(self) -> dict:
        """Serve's `num_replicas`, or its `autoscaling_config` (Serve then owns the count)."""
        if self.autoscaling is None:
            return {"num_replicas": self.replicas}
        return {"autoscaling_config": self.autoscaling.serve_config(self.replicas)}

    @property
    def most_replicas(self) -> int:
        """The replicas it may run: the autoscaling maximum, else the planned count."""
        return self.autoscaling.max_replicas if self.autoscaling else self.replicas

    @property
    def max_queued_requests(self) -> int:
        """Serve's bound on calls queued at each caller for this deployment: a backstop behind
        the ingress's SLA shedding (serve_app.shedding), which refuses far earlier."""
        return QUEUED_BATCHES_PER_REPLICA * self.batch_size * self.most_replicas

    @property
    def user_config(self) -> dict:
        """What the replicas are reconfigured with in place: the variant and its batching."""
        return {"variant": self.variant, "max_batch_size": self.batch_size,
                "batch_wait_timeout_s": self.batch_wait_timeout_ms / 1000}


Layout = dict[str, StageDeployment]


def layout(plans: dict[str, Plan], shape: Shape = no_shapes) -> Layout:
    """The stage deployments that `plans` run: a slot per member of each stage's plan."""
    out: Layout = {}
    for plan in plans.values():
        for stage, sp in plan.stages.items():
            for i, m in enumerate(members_in_slots(sp)):
                d = StageDeployment(plan.pipeline, stage, m.variant, m.replicas, m.batch_size, m.batch_wait_timeout_ms,
                                    sp.autoscaling, slot=i, shape=shape(plan.pipeline, stage, m.variant))
                out[d.name] = d
    return out


def union(current: Layout, new: Layout) -> Layout:
    """Make-before-break intermediate: everything of both, the larger replica count, new variant
    and batching (a slot whose variant changes switches in place, its replicas serving throughout)."""
    out = dict(current)
    for name, d in new.items():
        if name in out:
            d = replace(d, replicas=max(d.replicas, out[name].replicas))
        out[name] = d
    return out

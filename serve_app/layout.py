"""The desired state of the app's stage deployments: which (pipeline, stage, variant) runs how.

Pure data, no Ray: :func:`layout` turns plans into one :class:`StageDeployment` per variant
(every member of a mix), :func:`union` is the make-before-break intermediate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ipa_energy.spec import Autoscaling, Plan

__all__ = ["Layout", "QUEUED_BATCHES_PER_REPLICA", "StageDeployment", "deployment_name", "layout", "union"]

#: Serve's per-caller queue bound of a stage deployment, in full batches per replica
QUEUED_BATCHES_PER_REPLICA = 64


def deployment_name(pipeline: str, stage: str, variant: str) -> str:
    return f"{pipeline}.{stage}.{variant}"


@dataclass(frozen=True)
class StageDeployment:
    """Desired state of one stage-variant deployment."""

    pipeline: str
    stage: str
    variant: str
    replicas: int  # with autoscaling: the initial count (clamped into [min, max])
    batch_size: int
    batch_wait_timeout_ms: float
    autoscaling: Autoscaling | None = None

    @property
    def name(self) -> str:
        return deployment_name(self.pipeline, self.stage, self.variant)

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
        return {"max_batch_size": self.batch_size, "batch_wait_timeout_s": self.batch_wait_timeout_ms / 1000}


Layout = dict[str, StageDeployment]


def layout(plans: dict[str, Plan]) -> Layout:
    """The stage deployments that `plans` run: one per variant, every member of a mix."""
    out: Layout = {}
    for plan in plans.values():
        for stage, sp in plan.stages.items():
            for m in sp.members():
                d = StageDeployment(plan.pipeline, stage, m.variant, m.replicas, m.batch_size,
                                    m.batch_wait_timeout_ms, sp.autoscaling)
                out[d.name] = d
    return out


def union(current: Layout, new: Layout) -> Layout:
    """Make-before-break intermediate: everything of both, the larger replica count, new batching."""
    out = dict(current)
    for name, d in new.items():
        if name in out:
            d = replace(d, replicas=max(d.replicas, out[name].replicas))
        out[name] = d
    return out

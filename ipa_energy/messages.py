"""What crosses the serving app's boundaries: a stage's answer, a pipeline's HTTP answer, the plan state.

Stage replicas answer the ingress with :class:`StageResult`; the ingress answers clients
with :class:`PipelineAnswer`; ``GET /v1/plan`` and the plan controller exchange
:class:`PlanState`; a plan change reports :class:`ApplyReport`. Each is dumped at the
boundary and validated on receipt.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ipa_energy.energy import BatchEnergy, RequestEnergy
from ipa_energy.spec import Accuracy, PipelineSpec, Plan, Resources

__all__ = [
    "ApplyReport", "ApplyStep", "Health", "PendingChange", "PipelineAnswer", "PipelineInfo", "PlanState", "Shed", "StageInfo",
    "StageResult", "VariantCard",
]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StageResult(_Message):
    """One request's answer from a stage replica."""

    output: dict[str, Any] = Field(description="Payload keys the stage produces (labels, detections, text, masks).")
    variant: str
    weights: Literal["checkpoint", "random"]
    replica: str
    batch_size: int = Field(ge=1, description="Requests in the batch this one ran in.")
    compute_ms: float = Field(ge=0, description="Wall time of the batch's forward pass (ms).")
    energy: BatchEnergy | None = Field(None, description="Energy charged per request; None before the node's rates are known.")


class PipelineAnswer(_Message):
    """``POST /v1/pipelines/{name}``: every stage's output and how it was served."""

    pipeline: str
    outputs: dict[str, dict[str, Any]]
    variants: dict[str, str] = Field(description="stage → variant that served the request.")
    weights: dict[str, Literal["checkpoint", "random"]]
    batch_sizes: dict[str, int]
    replicas: dict[str, str]
    latency_ms: dict[str, float] = Field(description="stage → ms from call to answer at the ingress; 'total' too.")
    compute_ms: dict[str, float] = Field(description="stage → forward-pass ms of the batch.")
    energy: RequestEnergy | None
    plan_version: int


class PendingChange(_Message):
    """A plan change the controller is applying (make-before-break), not yet converged."""

    version: int = Field(description="The version the plans will have once converged.")
    plans: dict[str, Plan]
    step: str = Field(description="The step in progress: grow, make, switch, break, apply, or rollback:<step>.")
    routed: bool = Field(description="Whether the ingress already routes requests by these plans.")
    since_s: float = Field(description="When the change started (Unix s).")


class PlanState(_Message):
    """The converged plans, and a change in progress apart (``GET /v1/plan``).

    `plans` is active only once every replica it needs runs; until then the change is
    `pending`. The ingress routes by :meth:`routing`.
    """

    version: int
    plans: dict[str, Plan]
    accuracy: dict[str, float] = Field(default_factory=dict, description="pipeline → accuracy of its plan.")
    pending: PendingChange | None = None

    def routing(self) -> tuple[int, dict[str, Plan]]:
        """(version, plans) requests are routed by: the pending plans once the switch is made."""
        if self.pending is not None and self.pending.routed:
            return self.pending.version, self.plans | self.pending.plans
        return self.version, self.plans


class ApplyStep(_Message):
    step: Literal["grow", "make", "switch", "break", "apply", "rollback"]
    seconds: float


class ApplyReport(_Message):
    """What a plan change did (``PUT /v1/plan``, ``serve_app.control.apply_plan``)."""

    version: int
    changes: list[str] = Field(default_factory=list)
    steps: list[ApplyStep] = Field(default_factory=list)
    seconds: float = 0.0


class Health(_Message):
    """``GET /healthz``."""

    status: Literal["ok"] = "ok"
    plan_version: int


class Shed(_Message):
    """A 503 the ingress answers at once, without queueing, when the plan cannot serve the
    offered load within the SLA (the ``Retry-After`` header carries `retry_after_s` too)."""

    error: str
    shed: Literal[True] = True
    pipeline: str
    stage: str = Field(description="The stage holding the most queued work (or whose bounded queue was full).")
    retry_after_s: int = Field(ge=1, description="When the queue is expected to have drained (s).")


class VariantCard(_Message):
    """A variant as clients see it: what it stands for, its weights, accuracy and resources."""

    name: str
    tier: Literal["mini", "full"]
    stands_for: str | None
    weights: Literal["checkpoint", "random"]
    accuracy: Accuracy
    resources: Resources


class StageInfo(_Message):
    name: str
    task: str
    variants: list[VariantCard]


class PipelineInfo(_Message):
    """``GET /v1/pipelines/{name}``: the pipeline, its request schema and its variants."""

    name: str
    description: str
    sla_ms: float
    request_schema: dict[str, Any] = Field(description="JSON schema of the request body.")
    stages: list[StageInfo]

    @classmethod
    def of(cls, pipeline: PipelineSpec, request_schema: dict[str, Any]) -> PipelineInfo:
        return cls(name=pipeline.name, description=pipeline.description, sla_ms=pipeline.sla_ms,
                   request_schema=request_schema,
                   stages=[StageInfo(name=s.name, task=s.task, variants=[
                       VariantCard(name=v.name, tier=v.tier, stands_for=v.stands_for, weights=v.weights,
                                   accuracy=v.accuracy, resources=v.resources) for v in s.variants])
                           for s in pipeline.stages])

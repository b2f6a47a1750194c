"""The one data model: pipeline → stage → variant → profile → plan.

Workloads produce :class:`VariantSpec` and :class:`Profile`; the planner turns them into a
:class:`Plan`; serve_app applies the plan; energy and experiments read all of them. Nothing
converts between parallel copies of these types.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from ipa_energy.energy import EnergyMethod
from ipa_energy.errors import SpecError

__all__ = [
    "NAME_PATTERN", "SHARE_TOL", "TASK_IO", "Accuracy", "Autoscaling", "PipelineSpec", "Plan", "Profile", "Resources",
    "StagePlan", "StageSpec", "Task", "VariantShare", "VariantSpec",
]

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.+-]{0,62}$"

Task = Literal["classify", "detect", "classify-crops", "generate", "segment", "segment-detections"]

# Which payload keys a task reads and which it adds. A pipeline's request must supply every
# key its stages read that no earlier stage produced (checked in PipelineSpec).
TASK_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "classify": (("image",), ("labels",)),
    "detect": (("image",), ("detections",)),
    "classify-crops": (("image", "detections"), ("crop_labels",)),
    "generate": (("prompt", "max_new_tokens"), ("text",)),
    "segment": (("image", "prompts"), ("masks",)),
    "segment-detections": (("image", "detections"), ("masks",)),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Model):
    """Resources of one replica, as Ray schedules them."""

    num_cpus: float = Field(1.0, ge=0, description="Logical CPUs per replica.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica; fractions share one GPU.")
    memory_mb: int | None = Field(None, ge=1, description="Memory reserved per replica (MiB).")

    @field_validator("num_gpus")
    @classmethod
    def _gpu_fraction(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError("num_gpus above 1 must be a whole number of GPUs")
        return v

    def ray_actor_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_mb is not None:
            opts["memory"] = self.memory_mb * 1024 * 1024
        return opts


class Accuracy(_Model):
    """A published accuracy figure and where it comes from."""

    value: float = Field(gt=0, le=1, description="Fraction in (0, 1], e.g. 0.6976 top-1.")
    metric: str = Field(description="What was measured, e.g. 'ImageNet-1k top-1'.")
    source: str = Field(description="Model card URL or paper the figure is taken from.")


class VariantSpec(_Model):
    """One model variant of a stage and how to build it."""

    name: str = Field(pattern=NAME_PATTERN)
    task: Task
    family: str = Field(description="Model family, e.g. 'resnet'; sizes within it are ranked.")
    architecture: str = Field(description="Builder id in workloads.models, e.g. 'torchvision:resnet18'.")
    build_args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the builder.")
    checkpoint: str | None = Field(None, description="Local checkpoint path or hub id; None = random weights.")
    accuracy: Accuracy
    tier: Literal["mini", "full"] = "full"
    stands_for: str | None = Field(None, description="For a mini variant: the full variant it stands in for.")
    resources: Resources = Field(default_factory=Resources)
    max_batch_size: int = Field(32, ge=1, description="Largest batch this variant accepts.")

    @property
    def weights(self) -> Literal["checkpoint", "random"]:
        return "random" if self.checkpoint is None else "checkpoint"

    @model_validator(mode="after")
    def _mini_names_what_it_stands_for(self) -> VariantSpec:
        if self.tier == "mini" and not self.stands_for:
            raise ValueError(f"mini variant {self.name!r} must name the full variant it stands for")
        return self


class StageSpec(_Model):
    """A pipeline stage: one task, several interchangeable variants."""

    name: str = Field(pattern=NAME_PATTERN)
    variants: tuple[VariantSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_task_unique_names(self) -> StageSpec:
        tasks = {v.task for v in self.variants}
        if len(tasks) != 1:
            raise ValueError(f"stage {self.name!r} mixes tasks {sorted(tasks)}")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"stage {self.name!r} has duplicate variant names")
        return self

    @property
    def task(self) -> str:
        return self.variants[0].task

    @property
    def consumes(self) -> tuple[str, ...]:
        return TASK_IO[self.task][0]

    @property
    def produces(self) -> tuple[str, ...]:
        return TASK_IO[self.task][1]

    def variant(self, name: str) -> VariantSpec:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"stage {self.name!r} has no variant {name!r}; known: {[v.name for v in self.variants]}")


class PipelineSpec(_Model):
    """Stages run in order; each reads keys of the request or of earlier stages' outputs."""

    name: str = Field(pattern=NAME_PATTERN)
    stages: tuple[StageSpec, ...] = Field(min_length=1)
    sla_ms: float = Field(gt=0, description="End-to-end latency objective (ms).")
    accuracy_combine: Literal["product"] = "product"
    description: str = ""

    @model_validator(mode="after")
    def _stages_chain(self) -> PipelineSpec:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline {self.name!r} has duplicate stage names")
        produced: set[str] = set(self.stages[0].produces)
        for stage in self.stages[1:]:
            if not produced & set(stage.consumes):
                raise ValueError(f"stage {stage.name!r} uses no output of an earlier stage")
            produced |= set(stage.produces)
        return self

    @property
    def input_keys(self) -> tuple[str, ...]:
        """Payload keys the request must provide (read by a stage, produced by none before it)."""
        keys: list[str] = []
        produced: set[str] = set()
        for stage in self.stages:
            keys += [k for k in stage.consumes if k not in produced and k not in keys]
            produced |= set(stage.produces)
        return tuple(keys)

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"pipeline {self.name!r} has no stage {name!r}")

    def default_plan(self) -> Plan:
        """The first variant of every stage, batch 1, one replica."""
        return Plan(
            pipeline=self.name,
            stages={s.name: StagePlan(variant=s.variants[0].name) for s in self.stages},
            policy="default",
        )

    def check_plan(self, plan: Plan) -> None:
        """Raise SpecError unless `plan` names exactly this pipeline's stages and known variants."""
        if plan.pipeline != self.name:
            raise SpecError(f"plan is for pipeline {plan.pipeline!r}, not {self.name!r}")
        want, got = {s.name for s in self.stages}, set(plan.stages)
        if want != got:
            raise SpecError(f"plan for {self.name!r} must cover stages {sorted(want)}, got {sorted(got)}")
        for stage in self.stages:
            for member in plan.stages[stage.name].members():  # every variant of a mix too
                try:
                    variant = stage.variant(member.variant)
                except KeyError as e:
                    raise SpecError(str(e.args[0])) from None
                if member.batch_size > variant.max_batch_size:
                    raise SpecError(
                        f"stage {stage.name!r}: batch_size {member.batch_size} exceeds {variant.name!r}'s "
                        f"max_batch_size {variant.max_batch_size}"
                    )

    def accuracy(self, plan: Plan) -> float:
        """Pipeline accuracy of a plan: the product of its stages' published accuracies.

        A stage with a variant mix counts the share-weighted mean of its members' accuracies
        (the expected accuracy of a request, as InfAdapter's objective has it).
        """
        return math.prod(
            sum(m.share * self.stage(s).variant(m.variant).accuracy.value for m in sp.members())
            for s, sp in plan.stages.items()
        )


class Profile(_Model):
    """Measured behaviour of one variant at one batch size on one hardware id."""

    variant: str
    batch_size: int = Field(ge=1)
    hardware: str = Field(description="Hardware id, e.g. 'cpu-2c-x86_64' or 'nvidia-h200'.")
    resources: Resources
    latency_p50_ms: float = Field(ge=0, description="Batch latency p50 (ms).")
    latency_p99_ms: float = Field(ge=0, description="Batch latency p99 (ms).")
    throughput_rps: float = Field(ge=0, description="Requests per second per replica.")
    energy_per_request_j: float = Field(ge=0, description="Dynamic energy per request (J).")
    idle_power_w: float = Field(ge=0, description="Idle power of the replica's allocation (W).")
    energy_method: EnergyMethod
    window_s: float = Field(gt=0, description="Length of the steady-state measurement window (s).")
    weights: Literal["checkpoint", "random"]
    measured_at: datetime
    fitted: bool = Field(False, description="True when interpolated from measured batch sizes, not measured.")
    # What a request and a replica consume (capacity planning). None: not known for this profile.
    cpu_s_per_request: float | None = Field(
        None, ge=0, description="CPU core-seconds one request consumes: process CPU time over the window / requests.")
    gpu_busy_s_per_request: float | None = Field(
        None, ge=0, description="GPU busy seconds one request consumes (None on a CPU).")
    gpu_memory_mb: float | None = Field(None, ge=0, description="Peak GPU memory of one replica (MiB).")
    memory_mb_per_replica: float | None = Field(
        None, ge=0, description="Memory one more replica adds, model loaded and warm: its unique set size (MiB).")
    cold_start_s: float | None = Field(
        None, ge=0, description="A new replica's start: process, imports, build, load and warm-up until its first answer (s).")
    demand: Literal["measured", "derived"] | None = Field(
        None, description="Where the demand fields come from: measured, or derived from throughput (profiles of "
                          "schema 1, which predate them).")


SHARE_TOL = 1e-4  # how far a mix's shares may sum from 1 (they come from float solvers and JSON)


class VariantShare(_Model):
    """One member of a stage's variant mix: its traffic share and its own deployment settings."""

    variant: str
    share: float = Field(gt=0, le=1, description="Fraction of the stage's requests routed to this variant.")
    batch_size: int = Field(1, ge=1, le=1024)
    replicas: int = Field(1, ge=1, le=1000)
    batch_wait_timeout_ms: float = Field(10.0, ge=0, le=10_000, description="Longest wait to fill a batch.")


class Autoscaling(_Model):
    """Ray Serve's own autoscaling of the stage's (single) variant, instead of a fixed count."""

    min_replicas: int = Field(1, ge=1, le=1000)
    max_replicas: int = Field(ge=1, le=1000)
    target_ongoing_requests: float = Field(2.0, gt=0, description="Serve's target of in-flight requests per replica.")
    upscale_delay_s: float | None = Field(None, ge=0, description="None: Serve's default.")
    downscale_delay_s: float | None = Field(None, ge=0, description="None: Serve's default.")
    look_back_period_s: float | None = Field(
        None, gt=0, description="Seconds Serve averages the in-flight requests over before deciding; None: Serve's "
        "default (30 s in Ray 2.60).")
    metrics_interval_s: float | None = Field(
        None, gt=0, description="Seconds between the handles' reports of in-flight requests to Serve's controller "
        "(deprecated by Serve, still what it pushes at in Ray 2.60); None: Serve's default (10 s).")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas {self.max_replicas} < min_replicas {self.min_replicas}")
        return self

    def clamp(self, replicas: int) -> int:
        return min(self.max_replicas, max(self.min_replicas, replicas))

    def serve_config(self, initial_replicas: int) -> dict[str, Any]:
        """Serve's `autoscaling_config`, starting at `initial_replicas` clamped into [min, max]."""
        out: dict[str, Any] = {
            "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
            "initial_replicas": self.clamp(initial_replicas), "target_ongoing_requests": self.target_ongoing_requests,
        }
        for key in ("upscale_delay_s", "downscale_delay_s", "look_back_period_s", "metrics_interval_s"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


class StagePlan(_Model):
    """What runs for one stage.

    Either one variant (`variant`, `batch_size`, `replicas`, `batch_wait_timeout_ms`), or a
    *mix* (InfAdapter): each request goes to one member, at random with probability = its
    share; every member is its own deployment. In a mix the primary fields mirror the member
    with the largest share (so code that reads only `variant` still sees the main variant);
    they may be left out and are then filled in from it. `autoscaling` hands the replica
    count of a single variant to Ray Serve (`replicas` is then the initial count).
    """

    variant: str
    batch_size: int = Field(1, ge=1, le=1024)
    replicas: int = Field(1, ge=1, le=1000)
    batch_wait_timeout_ms: float = Field(10.0, ge=0, le=10_000, description="Longest wait to fill a batch.")
    mix: tuple[VariantShare, ...] | None = Field(None, min_length=1, description="Variant mix with traffic shares.")
    autoscaling: Autoscaling | None = Field(None, description="Serve autoscaling instead of a fixed replica count.")

    @model_validator(mode="before")
    @classmethod
    def _primary_from_mix(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mix") and "variant" not in data:
            members = [m if isinstance(m, dict) else m.model_dump() for m in data["mix"]]
            top = max(members, key=lambda m: m["share"])
            data = {**{k: v for k, v in top.items() if k != "share"}, **data}
        return data

    @model_validator(mode="after")
    def _mix_is_consistent(self) -> StagePlan:
        if self.mix is None:
            return self
        if self.autoscaling is not None:
            raise ValueError("autoscaling applies to a single variant, not to a mix")
        names = [m.variant for m in self.mix]
        if len(set(names)) != len(names):
            raise ValueError(f"mix names a variant twice: {names}")
        total = sum(m.share for m in self.mix)
        if abs(total - 1.0) > SHARE_TOL:
            raise ValueError(f"mix shares sum to {total:.6g}, not 1")
        primary = next((m for m in self.mix if m.variant == self.variant), None)
        if primary is None:
            raise ValueError(f"primary variant {self.variant!r} is not a member of the mix {names}")
        if primary.share < max(m.share for m in self.mix) - 1e-12:
            raise ValueError(f"primary variant {self.variant!r} must be the mix member with the largest share")
        if (primary.batch_size, primary.replicas, primary.batch_wait_timeout_ms) != (
                self.batch_size, self.replicas, self.batch_wait_timeout_ms):
            raise ValueError("batch_size, replicas and batch_wait_timeout_ms must mirror the primary mix member")
        return self

    @model_serializer(mode="wrap")
    def _omit_unset_extensions(self, handler: Any) -> dict[str, Any]:
        # Plans without a mix or autoscaling serialise exactly as before these fields existed.
        data = handler(self)
        for key in ("mix", "autoscaling"):
            if key in data and data[key] is None:
                del data[key]
        return data

    def members(self) -> tuple[VariantShare, ...]:
        """The mix, or the single variant as a one-member mix with share 1."""
        if self.mix is not None:
            return self.mix
        return (VariantShare(variant=self.variant, share=1.0, batch_size=self.batch_size, replicas=self.replicas,
                             batch_wait_timeout_ms=self.batch_wait_timeout_ms),)

    def most_replicas(self, variant: str) -> int:
        """Replicas `variant` may run in this stage: the autoscaling maximum, else its planned count."""
        if self.autoscaling is not None:
            return self.autoscaling.max_replicas
        if self.mix is None:
            return self.replicas
        return next(m.replicas for m in self.mix if m.variant == variant)

    def routes(self) -> tuple[tuple[str, float], ...]:
        """(variant, share) pairs, sorted: equal routes send the same traffic to the same variants."""
        return tuple(sorted((m.variant, m.share) for m in self.members()))

    def route(self, u: float) -> str:
        """The variant a request with uniform draw `u` in [0, 1) goes to."""
        if self.mix is None:
            return self.variant
        for m in self.mix:
            u -= m.share
            if u < 0:
                return m.variant
        return self.mix[-1].variant  # shares summing to slightly under 1


class Plan(_Model):
    """Per stage of one pipeline: variant, batch size and replicas, plus why."""

    pipeline: str
    stages: dict[str, StagePlan]
    policy: str = "manual"
    predicted_load_rps: float | None = Field(None, ge=0)
    predicted_power_w: float | None = Field(None, ge=0)
    predicted_j_per_request: float | None = Field(None, ge=0)
    objective: dict[str, float] = Field(default_factory=dict, description="Objective terms by name.")
    solve_time_s: float | None = Field(None, ge=0)
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

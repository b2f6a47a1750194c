"""The program's options and objective terms: what a (variant, batch, replicas) choice costs and gives.

An :class:`Option` is one (variant, batch size) of a stage, read from its profile at the
planned load λ̂; :func:`choice_terms` and :func:`mix_terms` evaluate a choice — accuracy,
cost, power, batch, latency, capacity and the objective α·log-accuracy − β·cost − γ·P −
δ·Σ b. The program (:mod:`planner.optimizer`), InfAdapter's (:mod:`planner.infadapter`) and
the checks (:mod:`planner.checks`) all evaluate plans with these functions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from ipa_energy.spec import PipelineSpec, Plan, Profile, Resources, StagePlan, StageSpec, VariantSpec
from planner.capacity import cs2_from_profile, wait_p99_ms
from planner.constants import MAX_WAIT_MS

__all__ = [
    "IPA_LATENCY", "LatencyModel", "Option", "ProfileLookup", "Weights", "choice_terms", "fill_ms", "latency_parts",
    "mix_terms", "objective_value", "option", "plan_from_choice", "plan_members", "plan_with_terms", "resource_units",
    "stage_base_ms", "stage_capacity_rps", "stage_latency_ms", "stage_options", "with_wait",
]

ProfileLookup = Mapping[tuple[str, int], Profile]


class Weights(BaseModel):
    """Objective weights: max α·log-accuracy − β·cost − γ·power − δ·Σ batch (planner.optimizer explains the defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(1.0, ge=0, description="Per unit of log pipeline accuracy.")
    beta: float = Field(0.01, ge=0, description="Per resource unit (logical CPU or GPU) allocated.")
    gamma: float = Field(0.01, ge=0, description="Per watt of predicted power (0 = IPA); with gamma_relative set, "
                         "only where no IPA plan meets the load (nothing to set γ against).")
    delta: float = Field(1e-4, ge=0, description="Per unit of batch size, summed over stages.")
    gamma_relative: float | None = Field(
        0.1, ge=0, description="ipa-energy only: the energy weight as an elasticity, per unit of predicted power "
        "relative to IPA's plan at the same load and capacity (0.1: 10 % less power is worth 1 % of relative "
        "accuracy); each solve uses γ = gamma_relative / that plan's watts. None: gamma, per watt, as given.")
    accuracy_budget: float | None = Field(
        0.01, ge=0, le=1, description="ipa-energy only: the most pipeline accuracy (a fraction: 0.01 = one point) a "
        "plan may give up for energy against IPA's plan at the same load and capacity; None: γ alone decides.")
    accuracy_window_s: float | None = Field(
        600.0, gt=0, description="ipa-energy in the adaptation loop: the accuracy budget holds on average over the "
        "requests served, not plan by plan; an interval that gives up less than the budget banks the rest for a "
        "later one, and the bank holds at most the budget over this many seconds of requests (planner.loop). "
        "None: every plan within the budget on its own.")


@dataclass(frozen=True)
class Option:
    """One (variant, batch size) of a stage, read from its profile at a planned load."""

    variant: str
    batch: int
    latency_ms: float  # l99 + batch fill at λ̂
    throughput: float
    energy_j: float
    idle_w: float
    resources: float
    log_acc: float
    acc: float
    l99_ms: float = 0.0  # batch latency p99 alone
    service_ms: float = 0.0  # batch latency p50: the mean service time of a batch
    cs2: float = 0.0  # squared coefficient of variation of the batch time
    cpu_s: float = 0.0  # CPU core-seconds per request (0: unknown)
    memory_mb_per_replica: float = 0.0  # memory one more replica adds (USS; 0: unknown)
    cpus: float = 0.0  # logical CPUs a replica reserves (Ray's num_cpus: what placement packs nodes by)


@dataclass(frozen=True)
class LatencyModel:
    """How a stage's latency is predicted beyond IPA's p99 + batch fill.

    `queueing`: add the p99 wait for a free replica (planner.capacity.wait_p99_ms), and take
    the p99 of the parts' sum rather than the sum of their p99s (:func:`latency_parts`);
    `stretch`: the factor CPU contention stretches service times by at the planned node
    utilisation (planner.capacity.stretch; 1 = an idle node, as the profiles measured);
    `fill_factor`: batches fill at this share of the planned load (≤ 1: the rate observed now,
    when the plan is made ahead of a predicted rise). ``LatencyModel(queueing=False)`` is IPA's.
    """

    queueing: bool = True
    stretch: float = 1.0
    fill_factor: float = 1.0


IPA_LATENCY = LatencyModel(queueing=False)


def latency_parts(o: Option, lam: float, model: LatencyModel = IPA_LATENCY, fill: float | None = None
                  ) -> tuple[float, float]:
    """(head, tail²) of a stage's p99 latency (ms, ms²): with a p99 wait for a replica of w ms,
    the p99 is ``head + sqrt(tail² + w²)`` (:func:`with_wait`).

    A request's time at a stage is its batch's fill, its wait for a free replica and its
    batch's service. Under the queueing model, the p99 of that sum is the service's mean (its
    p50, stretched) plus the root-sum-square of the three parts' p99 excesses: the service's
    p99 − p50, the fill and the wait. The parts are not all at their p99 at once: a batch that
    waits long to fill finds its replica idle, and the requests that waited for a replica
    filled their batch meanwhile, so adding the three p99s overpredicted by 19–60 % at steady
    load (docs/plan-format.md, "Latency and capacity"). IPA's model (no queueing) adds the p99 and the fill,
    as the paper does: tail² is 0. `fill`: the fill time (ms) instead of the batch's at λ."""
    fill = fill_ms(o.batch, lam * model.fill_factor) if fill is None else fill
    if not model.queueing:
        return o.l99_ms * model.stretch + fill, 0.0
    service = o.service_ms * model.stretch
    spread = max(o.l99_ms - o.service_ms, 0.0) * model.stretch
    return service, spread * spread + fill * fill


def with_wait(head: float, tail2: float, wait_ms: float) -> float:
    """The p99 latency (ms) of a stage whose :func:`latency_parts` are (head, tail²), at a p99
    wait of `wait_ms` for a free replica."""
    return head + math.sqrt(tail2 + wait_ms * wait_ms)  # IPA's (tail² = 0): head + wait


def stage_latency_ms(o: Option, n: int, lam: float, model: LatencyModel = IPA_LATENCY,
                     fill: float | None = None) -> float:
    """p99 latency of a stage running `n` replicas of `o` at λ req/s (ms): the stretched service,
    the batch fill (`fill` ms if given) and, under the queueing model, the wait for a replica."""
    head, tail2 = latency_parts(o, lam, model, fill)
    wait = wait_p99_ms(n, lam, o.batch, o.service_ms * model.stretch, o.cs2) if model.queueing else 0.0
    return with_wait(head, tail2, wait)


def stage_base_ms(o: Option, lam: float, model: LatencyModel = IPA_LATENCY) -> float:
    """:func:`stage_latency_ms` without the wait for a replica: the same for every n, and the
    least latency any n gives."""
    return with_wait(*latency_parts(o, lam, model), 0.0)


def stage_capacity_rps(o: Option, n: int, model: LatencyModel = IPA_LATENCY) -> float:
    """Requests per second `n` replicas of `o` serve, their service stretched by contention."""
    return o.throughput * n / model.stretch


def fill_ms(b: int, lam: float) -> float:
    """Time to fill a batch of b at λ req/s (ms): IPA's batch-fill term (b−1)/λ."""
    if b <= 1:
        return 0.0
    return math.inf if lam <= 0 else 1000.0 * (b - 1) / lam


def resource_units(r: Resources) -> float:
    """IPA's cost unit: logical CPUs + GPUs (a GPU fraction counts its fraction)."""
    return float(r.num_cpus) + float(r.num_gpus)


def option(stage: StageSpec, variant: VariantSpec, b: int, prof: Profile, lam: float) -> Option:
    return Option(
        variant=variant.name, batch=b,
        latency_ms=prof.latency_p99_ms + fill_ms(b, lam),
        throughput=prof.throughput_rps, energy_j=prof.energy_per_request_j,
        idle_w=prof.idle_power_w, resources=resource_units(prof.resources),
        log_acc=math.log(variant.accuracy.value), acc=variant.accuracy.value,
        l99_ms=prof.latency_p99_ms, service_ms=prof.latency_p50_ms,
        cs2=cs2_from_profile(prof.latency_p50_ms, prof.latency_p99_ms),
        cpu_s=prof.cpu_s_per_request or 0.0, memory_mb_per_replica=prof.memory_mb_per_replica or 0.0,
        cpus=float(prof.resources.num_cpus),
    )


def stage_options(pipeline: PipelineSpec, profiles: ProfileLookup, batch_sizes: Sequence[int],
                  lam: float, allowed: Mapping[str, set[str]] | None = None) -> list[list[Option]]:
    out = []
    for stage in pipeline.stages:
        opts = []
        for v in stage.variants:
            if allowed is not None and v.name not in allowed.get(stage.name, set()):
                continue
            for b in batch_sizes:
                prof = profiles.get((v.name, b))
                if prof is None or b > v.max_batch_size:
                    continue
                opt = option(stage, v, b, prof, lam)
                if math.isfinite(opt.latency_ms):
                    opts.append(opt)
        out.append(opts)
    return out


def choice_terms(choice: Sequence[tuple[Option, int]], lam: float, weights: Weights,
                 model: LatencyModel = IPA_LATENCY) -> dict[str, float]:
    """Terms of one (option, replicas) per stage (IPA's program exactly under IPA_LATENCY)."""
    return mix_terms([[(o, n, 1.0)] for o, n in choice], lam, weights, model=model)


def mix_terms(stages: Sequence[Sequence[tuple[Option, int, float]]], lam: float, weights: Weights, *,
              linear_accuracy: bool = False, model: LatencyModel = IPA_LATENCY) -> dict[str, float]:
    """Objective terms of a plan whose stages run members (option, replicas, traffic share).

    Each member's option must be built at its own load share × λ̂ (its batch-fill time). A
    stage's accuracy is the share-weighted mean of its members'; its latency the slowest
    member's; its capacity the load at which the first member saturates. With one member of
    share 1 per stage this is IPA's program exactly. `linear_accuracy`: the objective counts
    α·accuracy (InfAdapter's) instead of α·log-accuracy. `model` adds the queueing wait and
    the contention stretch to latency and capacity; ``cpu_cores`` is what the plan's requests
    consume (Σ λ̂·share·CPU s per request).
    """
    stage_acc = [sum(sh * o.acc for o, _, sh in st) for st in stages]
    log_acc = sum(st[0][0].log_acc if len(st) == 1 and st[0][2] == 1.0 else math.log(a)
                  for st, a in zip(stages, stage_acc))
    accuracy = math.prod(stage_acc)
    members = [m for st in stages for m in st]
    cost = sum(o.resources * n for o, n, _ in members)
    power = sum(sh * lam * o.energy_j + o.idle_w * n for o, n, sh in members)
    batch = float(sum(o.batch for o, _, _ in members))
    obj = weights.alpha * (accuracy if linear_accuracy else log_acc) - weights.beta * cost \
        - weights.gamma * power - weights.delta * batch
    return {
        "accuracy": accuracy,
        "log_accuracy": log_acc,
        "cost": cost,
        "power_w": power,
        "batch": batch,
        "objective": obj,
        "latency_ms": sum(max(stage_latency_ms(o, n, sh * lam, model) for o, n, sh in st) for st in stages),
        "capacity_rps": min(stage_capacity_rps(o, n, model) / sh for o, n, sh in members),
        "cpu_cores": sum(sh * lam * o.cpu_s for o, _, sh in members),
    }


def objective_value(log_accuracy: float, cost: float, power_w: float, batch: float, weights: Weights) -> float:
    """α·log-accuracy − β·cost − γ·power − δ·Σ batch (the program's objective)."""
    return weights.alpha * log_accuracy - weights.beta * cost - weights.gamma * power_w - weights.delta * batch


def plan_members(pipeline: PipelineSpec, plan: Plan, profiles: ProfileLookup,
                 lam: float) -> list[list[tuple[Option, int, float]]]:
    """Per stage, (option at the member's load share, replicas, share) of every member."""
    out = []
    for st in pipeline.stages:
        out.append([(option(st, st.variant(m.variant), m.batch_size, profiles[(m.variant, m.batch_size)],
                            m.share * lam), m.replicas, m.share)
                    for m in plan.stages[st.name].members()])
    return out


def plan_from_choice(pipeline: PipelineSpec, choice: Sequence[tuple[Option, int]], lam: float, weights: Weights,
                     policy: str, feasible: bool, margin: float, t0: float,
                     model: LatencyModel = IPA_LATENCY) -> Plan:
    """The Plan of a choice (option, replicas) per stage, its batch wait the fill time at λ̂."""
    # the batch wait: the fill time at the rate batches fill now, which the latency constraint holds
    stages = {st.name: StagePlan(variant=o.variant, batch_size=o.batch, replicas=max(1, n),
                                 batch_wait_timeout_ms=round(min(fill_ms(o.batch, lam * model.fill_factor),
                                                                 MAX_WAIT_MS), 3))
              for st, (o, n) in zip(pipeline.stages, choice)}
    plan = Plan(pipeline=pipeline.name, stages=stages, policy=policy)
    return plan_with_terms(plan, choice_terms(choice, lam, weights, model), lam, feasible, margin, policy, t0)


def plan_with_terms(plan: Plan, terms: dict[str, float], lam: float, feasible: bool, margin: float,
                    policy: str, t0: float) -> Plan:
    """`plan` with its predictions and objective terms filled in."""
    terms = {**terms, "feasible": 1.0 if feasible else 0.0, "load_margin": float(margin)}
    return plan.model_copy(update={
        "policy": policy, "predicted_load_rps": max(lam, 0.0), "predicted_power_w": terms["power_w"],
        "predicted_j_per_request": terms["power_w"] / lam if lam > 0 else None,
        "objective": terms, "solve_time_s": time.perf_counter() - t0})


"""Checks of a plan against the program: every constraint recomputed from the profiles.

:func:`check_plan` lists what a plan violates (capacity, latency, replica cap) and, with
``check_predictions``, whether its predicted power, J/request and objective terms match a
recomputation; :func:`evaluate_plan` fills those predictions in for a given plan (the
``static`` policies, and plans made by hand).
"""

from __future__ import annotations

import math
import time

from ipa_energy.spec import PipelineSpec, Plan
from planner.candidates import packed_replicas
from planner.constants import LAT_TOL
from planner.terms import (
    IPA_LATENCY,
    LatencyModel,
    ProfileLookup,
    Weights,
    fill_ms,
    mix_terms,
    option,
    plan_members,
    plan_with_terms,
    stage_capacity_rps,
    stage_latency_ms,
)

__all__ = ["check_plan", "evaluate_plan", "is_feasible", "plan_model", "stage_p99_ms"]


def is_feasible(plan: Plan) -> bool:
    """False for a flagged best-effort plan (``objective["feasible"] == 0``)."""
    return plan.objective.get("feasible", 1.0) > 0.5


def plan_model(plan: Plan) -> LatencyModel:
    """The latency model a plan was made under (its objective terms say; IPA's when they don't)."""
    o = plan.objective
    return LatencyModel(queueing=o.get("queueing", 0.0) > 0.5, stretch=o.get("stretch", 1.0),
                        fill_factor=o.get("fill_factor", 1.0))


def stage_p99_ms(pipeline: PipelineSpec, plan: Plan, profiles: ProfileLookup, load: float) -> dict[str, float]:
    """stage → p99 latency the plan's model predicts at `load` req/s (ms): what the closed loop
    compares with the stage's observed p99. A batch waits at most its batch_wait_timeout to
    fill; a mix's stage takes its slowest member."""
    model = plan_model(plan)
    out = {}
    for st in pipeline.stages:
        worst = 0.0
        for m in plan.stages[st.name].members():
            prof = profiles.get((m.variant, m.batch_size))
            if prof is None:
                continue
            lam = m.share * load
            o = option(st, st.variant(m.variant), m.batch_size, prof, lam)
            fill = min(fill_ms(m.batch_size, lam * model.fill_factor), m.batch_wait_timeout_ms)
            worst = max(worst, stage_latency_ms(o, m.replicas, lam, model, fill))
        out[st.name] = worst
    return out


def evaluate_plan(pipeline: PipelineSpec, plan: Plan, profiles: ProfileLookup, load: float,
                  sla_ms: float | None = None, weights: Weights = Weights(), *, policy: str | None = None,
                  margin: float = 1.0, model: LatencyModel = IPA_LATENCY) -> Plan:
    """`plan` with its predicted load/power/objective terms filled in from `profiles` at `load`."""
    t0 = time.perf_counter()
    lam = float(load) * margin
    sla = pipeline.sla_ms if sla_ms is None else sla_ms
    policy = policy or plan.policy
    mixed = any(sp.mix is not None for sp in plan.stages.values())
    terms = mix_terms(plan_members(pipeline, plan, profiles, lam), lam, weights,
                      linear_accuracy=mixed and policy == "infadapter", model=model)
    terms |= {"queueing": 1.0 if model.queueing else 0.0, "stretch": model.stretch}
    feasible = not check_plan(pipeline, plan.model_copy(update={"objective": terms}), profiles, lam, sla,
                              check_predictions=False)
    return plan_with_terms(plan, terms, lam, feasible, margin, policy, t0)


def check_plan(pipeline: PipelineSpec, plan: Plan, profiles: ProfileLookup, load: float | None = None,
               sla_ms: float | None = None, *, max_replicas: int | None = None,
               check_predictions: bool = True, rel_tol: float = 1e-6) -> list[str]:
    """Every constraint of the program, recomputed from `profiles`; violations (empty = ok).

    `load` is the load the plan must serve, λ̂ (default ``plan.predicted_load_rps``); `sla_ms`
    defaults to ``pipeline.sla_ms``. With `check_predictions`, the plan's predicted power,
    J/request and objective terms must match the recomputation. A stage with a variant mix:
    each member must carry its share of λ̂ within the SLA (its batch fills at that share);
    the stage's latency is its slowest member's, its replicas count together against N.
    Latency and capacity follow the plan's own model (:func:`plan_model`: queueing wait,
    contention stretch); a plan made for a cluster must also fit its CPU cap
    (``objective["utilisation_cap"]`` × ``cores`` − the serving path's share − ``background_cores``)
    and, on several nodes, each replica its busy cores per reserved CPU
    (``objective["packed_cores_per_cpu"]``: planner.caps.Capacity.packed).
    """
    model = plan_model(plan)
    problems: list[str] = []
    lam = float(plan.predicted_load_rps or 0.0) if load is None else float(load)
    sla = pipeline.sla_ms if sla_ms is None else sla_ms
    if plan.pipeline != pipeline.name:
        return [f"plan is for {plan.pipeline!r}, not {pipeline.name!r}"]
    if set(plan.stages) != {s.name for s in pipeline.stages}:
        return [f"plan stages {sorted(plan.stages)} != pipeline stages {[s.name for s in pipeline.stages]}"]
    latency = 0.0
    power = 0.0
    log_acc = 0.0
    cpu = 0.0
    packed = plan.objective.get("packed_cores_per_cpu")
    for st in pipeline.stages:
        sp = plan.stages[st.name]
        # A mix: each member serves its share of the load (its own batch fill); a request
        # takes one member, so the stage's latency is the slowest member's.
        mixed = sp.mix is not None
        stage_lat, stage_acc, resolved = 0.0, 0.0, True
        for m in sp.members():
            where = f"{st.name}[{m.variant}]" if mixed else st.name
            lam_m = m.share * lam
            try:
                v = st.variant(m.variant)
            except KeyError:
                problems.append(f"{where}: unknown variant {m.variant!r}")
                resolved = False
                continue
            if m.batch_size > v.max_batch_size:
                problems.append(f"{where}: batch {m.batch_size} > max_batch_size {v.max_batch_size}")
            prof = profiles.get((m.variant, m.batch_size))
            if prof is None:
                problems.append(f"{where}: no profile for {m.variant} batch {m.batch_size}")
                resolved = False
                continue
            o = option(st, v, m.batch_size, prof, lam_m)
            cap = stage_capacity_rps(o, m.replicas, model)
            if cap < lam_m * (1 - (1e-6 if mixed else 1e-12)):  # a mix's shares are solver floats
                problems.append(f"{where}: capacity {cap:.4g} req/s < load {lam_m:.4g} req/s")
            stage_lat = max(stage_lat, stage_latency_ms(o, m.replicas, lam_m, model))
            power += lam_m * prof.energy_per_request_j + prof.idle_power_w * m.replicas
            cpu += lam_m * o.cpu_s
            if packed is not None and 1 <= m.replicas < packed_replicas(o, lam_m, packed):
                problems.append(f"{where}: {lam_m * o.cpu_s / m.replicas:.3g} busy cores per replica > "
                                f"{packed:.3g} × its {o.cpus:g} reserved CPUs (nodes are packed by reservation)")
            stage_acc += m.share * v.accuracy.value
        n = sum(m.replicas for m in sp.members())
        if resolved and (n < 1 or (max_replicas is not None and n > max_replicas)):
            problems.append(f"{st.name}: {n} replicas outside 1..{max_replicas}")
        latency += stage_lat
        if stage_acc > 0:
            log_acc += math.log(stage_acc)
    if latency > sla + LAT_TOL:
        what = "p99 + batch fill" + (" + wait" if model.queueing else "") + (" (stretched)" if model.stretch > 1 else "")
        problems.append(f"latency {latency:.4g} ms ({what}) > SLA {sla:.4g} ms")
    o = plan.objective
    if "utilisation_cap" in o and "cores" in o:
        allowed = o["utilisation_cap"] * o["cores"] - lam * o.get("serving_cpu_s", 0.0) - o.get("background_cores", 0.0)
        if cpu > allowed * (1 + 1e-9) + 1e-9:
            problems.append(f"CPU {cpu:.4g} cores > {allowed:.4g} cores allowed "
                            f"({o['utilisation_cap']:.0%} of {o['cores']:g} cores, less the serving path and background)")
    if check_predictions and not problems:
        def close(a: float | None, b: float) -> bool:
            return a is not None and abs(a - b) <= rel_tol * max(1.0, abs(b))
        if not close(plan.predicted_power_w, power):
            problems.append(f"predicted_power_w {plan.predicted_power_w} != recomputed {power:.6g}")
        if lam > 0 and not close(plan.predicted_j_per_request, power / lam):
            problems.append(f"predicted_j_per_request {plan.predicted_j_per_request} != {power / lam:.6g}")
        if "log_accuracy" in plan.objective and not close(plan.objective["log_accuracy"], log_acc):
            problems.append(f"log_accuracy {plan.objective['log_accuracy']} != {log_acc:.6g}")
        if "accuracy" in plan.objective and not close(plan.objective["accuracy"], pipeline.accuracy(plan)):
            problems.append(f"accuracy {plan.objective['accuracy']} != {pipeline.accuracy(plan):.6g}")
    return problems

"""The capacities a plan is held to: per node utilisation cap ρ, the CPU and memory the stages
may use and the latency model (contention stretch) that goes with it; and the objective terms
that record them in a plan (planner.checks reads them back). The program (planner.program)
solves at one capacity at a time; the optimizer and the joint plan try them in turn."""

from __future__ import annotations

from dataclasses import dataclass

from ipa_energy.cluster import ClusterSupply
from planner.capacity import stretch
from planner.constants import MEMORY_FRACTION, UTILISATION_GRID
from planner.terms import IPA_LATENCY, LatencyModel

__all__ = ["Capacity", "capacities", "capacity_terms", "fill_factor"]


@dataclass(frozen=True)
class Capacity:
    """What a plan may consume, and the latency model that goes with it.

    `cpu_cores`: CPU core-seconds per second the stages' requests may use (ρ × physical cores
    − the serving path's own share), None = not limited; `memory_mb`: resident memory the
    replicas may hold, None = not limited; `utilisation`: ρ, the node utilisation cap the
    latency model's contention stretch was computed at; `packed`: on a cluster of several
    nodes, the busy cores a replica may have per logical CPU it reserves (ρ less the node's
    cores busy outside the replicas, as a share of its cores), None = not limited.

    Why `packed`: Ray places replicas by their logical CPUs, and fills nodes before it starts
    more (the autoscaler adds a node only for a replica that fits nowhere), so the nodes in
    use are full of reservations, not of work. A replica of a mini variant reserves 0.5 CPU
    and keeps a whole core busy while it serves: four of them share a 2-core node. The
    cluster-wide bound (`cpu_cores`) counts every node's cores as if the work spread over all
    of them; at scale it does not, and a node's busy cores are Σ (busy cores ÷ reservation) ×
    reservation over its replicas. Holding every replica to ``busy ÷ reserved ≤ packed``
    holds every full node in use to ρ whatever mix of stages lands on it, with the share busy
    outside the replicas at its average over the nodes in use (ClusterSupply.outside_share).
    It takes a node's logical CPUs (what Ray packs by) to be its physical cores (what the
    supply counts), as cluster files and `ray start --num-cpus` set them here; on nodes whose
    Ray CPUs count hyper-threads the bound would be loose by that ratio. One node: the
    cluster-wide bound is that node's, exact, and `packed` is None.
    """

    model: LatencyModel = IPA_LATENCY
    cpu_cores: float | None = None
    memory_mb: float | None = None
    utilisation: float | None = None
    packed: float | None = None


def fill_factor(fill_rps: float | None, lam: float) -> float:
    """The share of λ̂ batches fill at now (the observed rate; 1 when not given)."""
    return 1.0 if fill_rps is None or lam <= 0 else min(1.0, max(fill_rps, 1e-9) / lam)


def capacity_terms(cap: Capacity, supply: ClusterSupply | None, serving_cpu_s: float) -> dict[str, float]:
    """The objective terms that record the capacity a plan is held to (planner.checks.plan_model
    and check_plan read them back)."""
    terms = {"queueing": 1.0 if cap.model.queueing else 0.0, "stretch": cap.model.stretch,
             "fill_factor": cap.model.fill_factor}
    if supply is not None and cap.utilisation is not None:
        terms |= {"utilisation_cap": cap.utilisation, "cores": supply.cores, "serving_cpu_s": serving_cpu_s,
                  "background_cores": supply.background_cores}
    if cap.packed is not None:
        terms["packed_cores_per_cpu"] = cap.packed
    return terms


def capacities(supply: ClusterSupply | None, lam: float, queueing: bool, serving_cpu_s: float,
               fill_factor: float = 1.0) -> list[Capacity]:
    """The capacities to try: one per node utilisation cap ρ of UTILISATION_GRID, or unlimited."""
    if supply is None:
        return [Capacity(model=LatencyModel(queueing=queueing, fill_factor=fill_factor))]
    cores = min(n.cores for n in supply.nodes)  # contention is per node: the smallest one stretches most
    outside = supply.outside_share  # of a node in use, busy outside the replicas
    out = []
    for rho in UTILISATION_GRID:
        # ρ caps the node's utilisation: background load (measured) takes its cores first
        cpu = rho * supply.cores - lam * serving_cpu_s - supply.background_cores
        packed = max(0.0, rho - outside) if len(supply.nodes) > 1 else None  # 0: no replica fits
        if cpu > 0:
            out.append(Capacity(model=LatencyModel(queueing=queueing, stretch=stretch(cores, rho), fill_factor=fill_factor),
                                cpu_cores=cpu, memory_mb=MEMORY_FRACTION * supply.memory_mb, utilisation=rho,
                                packed=packed))
    return out

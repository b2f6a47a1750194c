"""The cluster a simulation runs on: node types × counts, in the style of cluster.yaml.

A YAML file (``ipa-energy simulate --cluster FILE``)::

    hardware: cpu-amd-epyc-2c        # profiles to plan and serve with (workloads/profiles/<id>.json)
    idle_timeout_minutes: 10         # a node with no replica is released after this (as Ray's autoscaler)
    available_node_types:
      cpu-2c:
        count: 1000                  # nodes of this type (min_workers..max_workers: the most)
        min_workers: 1               # nodes never released
        resources: {CPU: 2, memory: 24GiB, GPU: 0, gpu_memory: 0}
        power: {idle_w: 2.4, tdp_w: 8}   # per node; default: from the profiles (see node_power)
        speed: 1.0                   # service times × this against the profiles' hardware

``CPU`` counts physical cores (the planner's unit, planner.capacity). Without a file the
cluster is this host: one node, its physical cores and memory.

The host section (``host:``) holds what a live app costs on top of the stages, measured on
this host (docs/simulator.md): the serving path's CPU per request, its latency, and how long a
Serve reconfigure and a Ray worker start take. They are properties of the software and the
host, the same for every trace.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ipa_energy.cluster import ClusterSupply, GpuSupply, NodeSupply
from ipa_energy.spec import PipelineSpec
from planner.constants import SERVING_CPU_S

__all__ = ["HostCosts", "NodeType", "SimCluster", "load_cluster", "node_power", "this_host"]

_MEMORY = re.compile(r"^\s*([0-9.]+)\s*([KMGT]i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1 / 2**20, "k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0**2}


def _mib(value) -> float:
    """`24GiB`, `512MiB`, `24G` or a number of bytes → MiB."""
    if isinstance(value, (int, float)):
        return float(value) / 2**20
    m = _MEMORY.match(str(value))
    if not m:
        raise ValueError(f"memory {value!r}: want a number of bytes or e.g. 24GiB")
    return float(m.group(1)) * _UNITS[(m.group(2) or "")[:1].lower()]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeType(_Model):
    name: str
    count: int = Field(ge=1, le=100_000, description="Nodes of this type the cluster may hold.")
    min_workers: int = Field(0, ge=0, description="Nodes of this type never released.")
    cores: float = Field(gt=0, description="Physical cores per node.")
    memory_mb: float = Field(gt=0, description="Memory per node (MiB).")
    gpus: int = Field(0, ge=0)
    gpu_memory_mb: float = Field(0.0, ge=0, description="Memory of each GPU (MiB).")
    idle_w: float | None = Field(None, ge=0, description="Node idle power (W); None: from the profiles.")
    speed: float = Field(1.0, gt=0, description="Service-time multiplier against the profiles' hardware.")

    @model_validator(mode="after")
    def _fits(self) -> "NodeType":
        if self.min_workers > self.count:
            raise ValueError(f"node type {self.name}: min_workers {self.min_workers} > count {self.count}")
        if self.gpus and not self.gpu_memory_mb:
            raise ValueError(f"node type {self.name}: {self.gpus} GPUs need resources.gpu_memory")
        return self


class HostCosts(_Model):
    """What serving costs beyond the stages' forward passes (measured on the 2-core host)."""

    background_cores: float = Field(0.0, ge=0, description="Cores busy outside the replicas whatever the load, per "
                                    "node: Ray's daemons, Serve's controller and proxy, the planner, a co-located "
                                    "experiment runner (fitted from live runs: sim.calibrate).")
    hidden_cores: float = Field(0.0, ge=0, description="Of `background_cores`, the cores a node's energy actor does "
                                "not see outside the replicas: it reads node CPU less the replica processes' own, and "
                                "part of the background runs in those processes (Serve's replica loop, batching, "
                                "(de)serialisation). They contend like the rest; the planner's supply reading leaves "
                                "them out, as live (fitted from live decisions: sim.calibrate).")
    serving_cpu_s: float = Field(SERVING_CPU_S, ge=0, description="Core-seconds per request outside the stages: "
                                 "ingress and HTTP proxy (planner.constants.SERVING_CPU_S).")
    loadgen_cpu_s: float = Field(0.0, ge=0, description="Core-seconds per request of a load generator on the first "
                                 "node (Locust on this host: see docs/simulator.md); 0 for a separate client.")
    overhead_ms: float = Field(8.0, ge=0, description="Latency a request pays outside the stages: HTTP proxy, ingress "
                               "and one handle hop per stage (ms, at no load).")
    reconfigure_s: float = Field(1.0, ge=0, description="Serve applying a new config before replicas start or switch (s).")
    worker_start_core_s: float = Field(3.0, ge=0, description="Core-seconds a Ray worker process takes to start, "
                                       "before the profiled cold start (imports, model build, warm-up).")
    switch_core_s: float = Field(1.0, ge=0, description="Core-seconds an in-place variant switch builds the new model "
                                 "for (serve_app.layout), serving the old one meanwhile.")
    warm_variants: bool = Field(True, description="Replicas keep their slot's other variants built (serve_app.warm): "
                                "after a replica is ready it builds them, `switch_core_s` each, on cores its node "
                                "leaves idle; a switch to a warm variant is a swap. False: every switch builds.")
    apply_timeout_s: float = Field(300.0, gt=0, description="A change that has not converged by then rolls back "
                                   "(serve_app.control.apply_plan's timeout).")
    planner_start_s: float = Field(0.0, ge=0, description="Seconds after second 0 of the trace at which the planner's "
                                   "first interval starts: its first decision comes an interval later. Live, the "
                                   "planner actor's start and Locust's put it 1.6-3.5 s late on this host "
                                   "(fitted from live decisions: sim.calibrate).")
    planner_lead_s: int = Field(0, ge=0, description="Whole seconds the planner's arrival history starts before "
                                "second 0 of the trace, with no arrivals in them: live, the experiment runner starts "
                                "the planner, then Locust (its import, then its 2 s lead before second 0), so the "
                                "first decisions see a ramp from 0 (its trend plans above the load).")

    @model_validator(mode="after")
    def _hidden_within_background(self) -> "HostCosts":
        if self.hidden_cores > self.background_cores:
            raise ValueError(f"host: hidden_cores {self.hidden_cores} > background_cores {self.background_cores} "
                             "(only part of the background can be hidden)")
        return self


class SimCluster(_Model):
    hardware: str = Field(description="Hardware id of the profiles every node serves with.")
    node_types: tuple[NodeType, ...] = Field(min_length=1)
    idle_timeout_s: float = Field(600.0, ge=0, description="A node with no replica is released after this (s).")
    host: HostCosts = Field(default_factory=HostCosts)
    source: str = "this host"

    @property
    def nodes(self) -> int:
        return sum(t.count for t in self.node_types)

    def supply(self) -> ClusterSupply:
        """Every node the cluster may hold, as the planner reads a live cluster's."""
        nodes = []
        for t in self.node_types:
            gpus = tuple(GpuSupply(index=i, memory_mb=t.gpu_memory_mb) for i in range(t.gpus))
            nodes += [NodeSupply(node_id=f"{t.name}-{i}", cores=t.cores, memory_mb=t.memory_mb, gpus=gpus)
                      for i in range(t.count)]
        return ClusterSupply(nodes=tuple(nodes), source=self.source)


def load_cluster(path: str | Path, hardware: str | None = None) -> SimCluster:
    """Read a cluster YAML (module docstring); ValueError names what is wrong."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cluster file {path}: {e}") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("available_node_types"), Mapping):
        raise ValueError(f"cluster file {path}: want a mapping with available_node_types")
    types = []
    for name, t in doc["available_node_types"].items():
        t = t or {}
        res = t.get("resources") or {}
        if "CPU" not in res or "memory" not in res:
            raise ValueError(f"cluster file {path}: node type {name} needs resources.CPU and resources.memory")
        power = t.get("power") or {}
        try:
            types.append(NodeType(
                name=str(name), count=int(t.get("count", t.get("max_workers", 1))), min_workers=int(t.get("min_workers", 0)),
                cores=float(res["CPU"]), memory_mb=_mib(res["memory"]), gpus=int(res.get("GPU", 0)),
                gpu_memory_mb=_mib(res["gpu_memory"]) if res.get("gpu_memory") else 0.0,
                idle_w=power.get("idle_w"), speed=float(t.get("speed", 1.0))))
        except (ValueError, TypeError) as e:
            raise ValueError(f"cluster file {path}: node type {name}: {e}") from None
    hw = hardware or doc.get("hardware")
    if not hw:
        raise ValueError(f"cluster file {path}: name the profiles' hardware id (hardware: ...)")
    try:
        return SimCluster(hardware=str(hw), node_types=tuple(types), idle_timeout_s=60.0 * float(doc.get("idle_timeout_minutes", 10)),
                          host=HostCosts.model_validate(doc.get("host") or {}), source=str(path))
    except ValueError as e:
        raise ValueError(f"cluster file {path}: {e}") from None


def this_host(hardware: str, host: HostCosts | None = None) -> SimCluster:
    """One node: this host's physical cores and memory, never released."""
    from energy.supply import host_supply

    node = host_supply("local")
    gpus = node.get("gpus") or []
    return SimCluster(hardware=hardware, node_types=(NodeType(
        name="local", count=1, min_workers=1, cores=node["cores"], memory_mb=node["memory_mb"], gpus=len(gpus),
        gpu_memory_mb=min((g["memory_mb"] for g in gpus), default=0.0)),),
                      host=host or HostCosts(), source="this host")


def node_power(node: NodeType, profiles: Mapping, pipeline: PipelineSpec) -> tuple[float, float]:
    """(idle W of a node, active J per busy core-second), from the profiles where the node type
    gives no idle power: each profile carries the idle power of its replica's share of the
    profiled node (Profile.idle_power_w for num_cpus of its cores) and its dynamic J per CPU second."""
    cpus = {v.name: v.resources.num_cpus for st in pipeline.stages for v in st.variants}
    measured = [p for p in profiles.values() if not p.fitted]
    idle_per_core = _median([p.idle_power_w / cpus[p.variant] for p in measured
                             if p.idle_power_w > 0 and cpus.get(p.variant)]) or 0.0
    active = _median([p.energy_per_request_j / p.cpu_s_per_request for p in measured if p.cpu_s_per_request]) or 0.0
    idle = node.idle_w if node.idle_w is not None else idle_per_core * node.cores
    return idle, active


def _median(values: list[float]) -> float | None:
    values = sorted(v for v in values if math.isfinite(v))
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

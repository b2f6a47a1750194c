"""The simulated app's parts (sim.engine moves them): requests, CPU jobs, replicas, stage slots,
nodes, plan changes, and what a profile says of a variant at a batch size."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from ipa_energy.spec import PipelineSpec, Plan, Profile
from serve_app.layout import QUEUED_BATCHES_PER_REPLICA
from sim.cluster import NodeType

__all__ = ["Change", "Finished", "Job", "Node", "Replica", "Request", "Slot", "cold_start_s", "profile_at",
           "replica_memory_mb", "slot_variants"]


def slot_variants(pipeline: PipelineSpec) -> dict[str, list[str]]:
    """variant → the variants its replicas may switch to in place (its stage's, of its shape: one
    slot, serve_app.layout), itself included, in catalog order."""
    return {v.name: [w.name for w in st.variants if w.resources == v.resources]
            for st in pipeline.stages for v in st.variants}


def profile_at(profiles: Mapping[tuple[str, int], Profile], sizes: list[int], variant: str,
               k: int) -> tuple[float, float, float, float]:
    """(p50 s, p99 s, J per request, CPU s per request) of `variant` at batch size `k`, from its
    profiled batch sizes `sizes` (sorted; between two of them: interpolated)."""
    lo = max((b for b in sizes if b <= k), default=sizes[0])
    hi = min((b for b in sizes if b >= k), default=sizes[-1])
    a, b = profiles[(variant, lo)], profiles[(variant, hi)]
    w = 0.0 if hi == lo else (k - lo) / (hi - lo)

    def mix(x, y):
        return x + w * (y - x)

    cpu_a = a.cpu_s_per_request if a.cpu_s_per_request is not None else a.latency_p50_ms / 1000 / lo
    cpu_b = b.cpu_s_per_request if b.cpu_s_per_request is not None else b.latency_p50_ms / 1000 / hi
    return (mix(a.latency_p50_ms, b.latency_p50_ms) / 1000, mix(a.latency_p99_ms, b.latency_p99_ms) / 1000,
            mix(a.energy_per_request_j, b.energy_per_request_j), mix(cpu_a, cpu_b))


def replica_memory_mb(profiles: Mapping[tuple[str, int], Profile], variant) -> float:
    """Memory one replica of `variant` (a VariantSpec) holds: profiled, else its reservation (MiB)."""
    p = next((p for (v, _), p in profiles.items() if v == variant.name and p.memory_mb_per_replica), None)
    return p.memory_mb_per_replica if p is not None else float(variant.resources.memory_mb or 0)


def cold_start_s(profiles: Mapping[tuple[str, int], Profile], variant: str) -> float:
    """The longest profiled cold start of `variant` (s; 0 when none is profiled)."""
    return max((p.cold_start_s or 0.0 for (v, _), p in profiles.items() if v == variant), default=0.0)


class Request:
    __slots__ = ("id", "scheduled", "sent", "stage", "variants", "energy", "call_start", "version", "queued_at", "ahead")

    def __init__(self, rid: int, t: float, version: int):
        self.id, self.scheduled, self.sent, self.stage = rid, t, t, 0
        self.variants: dict[str, str] = {}
        self.energy, self.call_start, self.version, self.queued_at = 0.0, t, version, t
        self.ahead = 0  # calls in flight to its stage's slot when its call was sent (the shedder learns from it)


class Job:
    __slots__ = ("kind", "replica", "reqs", "work", "demand", "started", "energy", "variant", "cancelled", "done_v")

    def __init__(self, kind, replica, work, demand, started, reqs=(), energy=0.0, variant=None):
        self.kind, self.replica, self.work, self.demand, self.started = kind, replica, work, demand, started
        self.reqs, self.energy, self.variant, self.cancelled, self.done_v = reqs, energy, variant, False, 0.0


class Replica:
    __slots__ = ("id", "slot", "node", "variant", "batch", "wait_s", "state", "pending", "ongoing", "busy",
                 "created", "switch", "timer", "cpus", "memory_mb", "gpus", "warm", "warming")

    def __init__(self, rid, slot, node, variant, batch, wait_s, created):
        self.id, self.slot, self.node, self.variant, self.batch, self.wait_s = rid, slot, node, variant, batch, wait_s
        self.state = "starting"  # → ready → draining → gone
        self.pending: deque = deque()
        self.ongoing, self.busy, self.created = 0, False, created
        self.switch: Job | None = None
        self.timer = 0  # the batch-wait timer that may start a batch (older ones are stale)
        self.cpus = self.memory_mb = self.gpus = 0.0
        self.warm: set[str] = set()  # variants built beside the one it serves (serve_app.warm)
        self.warming = 0.0  # core-seconds done on the next warm build


class Slot:
    """A stage deployment (serve_app.layout: pipeline.stage.<member>)."""

    __slots__ = ("name", "stage", "index", "replicas", "queue", "variant", "batch", "wait_s", "autoscaling", "scale_since")

    def __init__(self, name, stage, index):
        self.name, self.stage, self.index = name, stage, index
        self.replicas: list[Replica] = []
        self.queue: deque = deque()  # requests waiting for a replica under max_ongoing_requests
        self.variant, self.batch, self.wait_s, self.autoscaling, self.scale_since = "", 1, 0.0, None, None

    def serving(self) -> list[Replica]:
        return [r for r in self.replicas if r.state == "ready"]

    def max_queued(self) -> int:
        return QUEUED_BATCHES_PER_REPLICA * self.batch * max(1, len([r for r in self.replicas if r.state != "draining"]))


class Node:
    __slots__ = ("id", "type", "cores", "speed", "memory_mb", "gpus", "idle_w", "active_j", "kept", "active",
                 "empty_since", "started_ever", "v", "t", "rate", "jobs", "demand", "background", "loadgen", "version",
                 "cpus_used", "memory_used", "gpus_used", "idle_j", "other_j", "loadgen_j", "consumers_j", "seq")

    def __init__(self, nid: str, ntype: NodeType, idle_w: float, active_j: float, kept: bool):
        self.id, self.type, self.cores, self.speed = nid, ntype, ntype.cores, ntype.speed
        self.memory_mb, self.gpus, self.idle_w, self.active_j, self.kept = ntype.memory_mb, ntype.gpus, idle_w, active_j, kept
        self.active, self.empty_since, self.started_ever = kept, 0.0, kept
        self.v = self.t = 0.0
        self.rate = 1.0
        self.jobs: list = []  # heap of (virtual finish, seq, job)
        self.demand = self.background = self.loadgen = 0.0  # cores: all outside the replicas, the load generator's
        self.version = self.seq = 0
        self.cpus_used = self.memory_used = self.gpus_used = 0.0
        self.idle_j = self.other_j = self.loadgen_j = 0.0
        self.consumers_j: Counter = Counter()


@dataclass
class Finished:
    """A request the engine answered (or shed): what RequestRow needs."""

    scheduled: float
    sent: float
    finished: float
    status: int
    shed: bool
    version: int
    variants: dict[str, str]
    energy_j: float | None
    error: str = ""


@dataclass
class Change:
    plan: Plan
    started: float
    starting: list = field(default_factory=list)  # replicas being started
    switching: list = field(default_factory=list)  # replicas switching in place
    surplus: list = field(default_factory=list)  # replicas to drain once it converges
    grow_first: list = field(default_factory=list)  # (slot, member) that grow on their variant, then switch

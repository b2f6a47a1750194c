"""Scale mode's nodes: what the replicas reserve, the nodes per type that hold it, the nodes in
use and their release after the idle timeout, and the energy each node type accrued
(a mixin of :class:`sim.fluid.FluidEngine`, whose members, profiles and clock it uses)."""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["NodeGroup", "NodePlacement"]


@dataclass
class NodeGroup:
    """The nodes of one type, as the results see them (one energy window each)."""

    id: str
    cores: float
    memory_mb: float
    gpus: int
    count: int
    kept: int
    speed: float
    idle_w: float
    active_j: float
    active: int = 0
    started_ever: bool = False
    idle_j: float = 0.0
    other_j: float = 0.0
    loadgen_j: float = 0.0
    consumers_j: Counter = field(default_factory=Counter)
    _needed: deque = field(default_factory=deque)  # (second, nodes needed) over the idle timeout


class NodePlacement:
    """Where the replicas of :class:`~sim.fluid.FluidEngine` go, and what the node types hold."""

    def _reserved(self, extra: Mapping[str, int] | None = None) -> tuple[float, float, float]:
        """(CPUs, memory MiB, GPUs) the replicas reserve (and `extra` variant → replicas)."""
        cpus = memory = gpus = 0.0
        need = Counter(extra or {})
        for members in self.stages.values():
            for m in members:
                need[m.variant] += m.replicas()  # an in-place switch keeps the replica's shape
        for variant, n in need.items():
            res = self._variants[variant].resources
            cpus += n * res.num_cpus
            memory += n * self._memory(variant)
            gpus += n * res.num_gpus
        return cpus, memory, gpus

    def _nodes_for(self, reserved: tuple[float, float, float]) -> list[int] | None:
        """Nodes per type that hold `reserved`, types filled in file order (None: it does not fit)."""
        cpus, memory, gpus = reserved
        out = []
        for g in self.groups:
            per = [cpus / g.cores if g.cores else math.inf, memory / g.memory_mb if g.memory_mb else math.inf,
                   gpus / g.gpus if g.gpus else (0.0 if gpus <= 0 else math.inf)]
            need = math.ceil(max(per) - 1e-9) if max(per) > 0 else 0
            take = min(need, g.count)
            out.append(take)
            if take == need:
                return out + [0] * (len(self.groups) - len(out))
            share = take / need
            cpus, memory, gpus = cpus * (1 - share), memory * (1 - share), gpus * (1 - share)
        return None

    def _room(self, variant: str, wanted: int) -> int:
        """How many of `wanted` more replicas of `variant` the cluster holds (bisection)."""
        lo, hi = 0, wanted
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._fits(self._reserved({variant: mid})):
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _fits(self, reserved) -> bool:
        return self._nodes_for(reserved) is not None

    def _place(self, changed: bool = True) -> None:
        """Nodes in use follow the replicas; an emptied node is released after the idle timeout.
        `changed`: the replicas changed since the last call (else only releases are due)."""
        if changed or self._need is None:
            self._need = self._nodes_for(self._reserved()) or [g.count for g in self.groups]
        t = int(self.now)
        for g, n in zip(self.groups, self._need):
            q = g._needed
            if not changed and len(q) == 1 and q[0][1] == n:
                continue  # nothing to release
            while q and q[-1][1] <= n:
                q.pop()
            q.append((t, n))
            while q[0][0] < t - self.cluster.idle_timeout_s:
                q.popleft()
            g.active = max(g.kept, q[0][1], n)
            g.started_ever = g.started_ever or g.active > 0

    def active_nodes(self) -> int:
        return sum(g.active for g in self.groups)

    def outside_cores(self) -> float:
        """Cores busy outside the replicas per active node, as a node's energy actor reads them."""
        return max(0.0, self.outside - self.host.hidden_cores)

    def energy_since(self, g: NodeGroup) -> tuple[float, float, float, dict[str, float]]:
        """(idle J, other J, load generator J, deployment → J) accrued by `g`'s nodes, reset."""
        out = (g.idle_j, g.other_j, g.loadgen_j, dict(g.consumers_j))
        g.idle_j = g.other_j = g.loadgen_j = 0.0
        g.consumers_j = Counter()
        return out

"""What the machine can give, and what waiting for it costs: supply, utilisation, queueing delay.

Supply
------
A :class:`ClusterSupply` lists each node's *physical* cores, memory and GPUs (with their
memory): what replicas really consume, not Ray's logical CPUs. At decision time it comes from
the live cluster (:func:`supply_from_ray`: each node's energy actor reads its own host); offline
from this host (:func:`supply_of_this_host`) or a file (``ipa-energy plan --cluster FILE``).

Queueing
--------
A stage with n replicas, batch size b and batch service time S (ms) at arrival rate λ (req/s)
is an M/G/n queue of batches: batches arrive at λ/b, each replica serves 1000/S of them a
second, utilisation u = λ·S / (1000·b·n). A request's wait for a free replica, at the p99, is
Erlang C's tail with the Allen–Cunneen correction for non-exponential times::

    P(wait > t) = C(n, n·u) · exp(−(n·μ − λ/b)·t)         (M/M/n, μ = 1000/S batches/s)
    t99 = ln(C / 0.01) / (n·μ − λ/b)  if C > 0.01, else 0
    wait_p99 = t99 · (ca² + cs²) / 2

with ca² = 1/b (b Poisson arrivals make one batch: an Erlang-b gap) and cs² the squared
coefficient of variation of the batch time, from the profile's p50 and p99 (normal tail:
σ = (p99 − p50) / 2.326). :func:`wait_p99_ms` computes it; ``u ≥ 1`` waits forever.

Contention
----------
Replicas of a node share its cores. At node utilisation ρ (CPU-seconds demanded per second /
cores) a CPU burst finds every core busy with probability C(cores, ρ·cores) and then waits, on
average, 1/(cores·(1 − ρ)) of a burst: service times stretch by
:func:`stretch` = 1 + C(cores, ρ·cores) / (cores·(1 − ρ)). The planner searches ρ (the cap on
node utilisation) from the SLA: the highest ρ at which the stretched latencies still fit.
"""

from __future__ import annotations

import math

from ipa_energy.cluster import ClusterSupply, NodeSupply

__all__ = ["P99_Z", "cs2_from_profile", "erlang_c", "stretch", "supply_from_ray", "supply_of_this_host", "wait_p99_ms"]

#: standard normal quantile of 0.99 (the p99 from p50 and a normal tail)
P99_Z = 2.326


def supply_of_this_host() -> ClusterSupply:
    from energy.supply import host_supply

    return ClusterSupply(nodes=(NodeSupply.model_validate(host_supply("local")),), source="this host")


def supply_from_ray(timeout_s: float = 10.0) -> ClusterSupply:
    """Each alive node's own figures, read by its energy actor (which runs on that node)."""
    import ray

    from energy.actor import ensure_node_actors

    actors = ensure_node_actors()
    nodes = []
    for node_id, actor in actors.items():
        nodes.append(NodeSupply.model_validate(ray.get(actor.supply.remote(), timeout=timeout_s)))
    return ClusterSupply(nodes=tuple(nodes), source="ray")


# --------------------------------------------------------------------------------------------
# Queueing
# --------------------------------------------------------------------------------------------


def erlang_c(n: int, a: float) -> float:
    """P(an arrival waits) in M/M/n with offered load a = λ/μ Erlangs (1.0 when a ≥ n)."""
    if a <= 0:
        return 0.0
    if a >= n:
        return 1.0
    b = 1.0  # Erlang B by its stable recursion, then C from B
    for k in range(1, n + 1):
        b = a * b / (k + a * b)
    rho = a / n
    return b / (1.0 - rho + rho * b)


class WaitSeries:
    """:func:`wait_p99_ms` at increasing n for one stage (λ, b, service time, cs²), in O(1) per step.

    ``at(n)`` equals ``wait_p99_ms(n, lam, batch, service_ms, cs2, q)`` bit for bit: the same
    Erlang B recursion, carried from the previous n instead of restarted from 1 (which makes a
    scan over n quadratic on a cluster of thousands of replicas). n must not decrease.
    """

    def __init__(self, lam: float, batch: int, service_ms: float, cs2: float = 0.0, q: float = 0.99):
        self.lam, self.batch, self.service_ms, self.cs2, self.q = lam, batch, service_ms, cs2, q
        self._k, self._b = 0, 1.0

    def at(self, n: int) -> float:
        lam, batch, q = self.lam, self.batch, self.q
        if lam <= 0 or n < 1:
            return 0.0
        mu = 1000.0 / self.service_ms
        lam_b = lam / batch
        if lam_b >= n * mu:
            return math.inf
        a = lam_b / mu
        if n < self._k:
            raise ValueError(f"WaitSeries.at({n}) after at({self._k})")
        b = self._b
        for k in range(self._k + 1, n + 1):
            b = a * b / (k + a * b)
        self._k, self._b = n, b
        return _wait_ms(n, a, b, mu, lam_b, q, 1.0 / batch + self.cs2)


    def waits_from(self, n: int):
        """Yield ``at(n)``, ``at(n + 1)``, … (the same floats), without a method call and a range
        per step: the scan of :func:`planner.candidates._candidates` over n is the planner's hottest
        loop at scale."""
        lam, batch, q = self.lam, self.batch, self.q
        if lam <= 0:
            while True:
                yield 0.0
        while n < 1:
            yield 0.0
            n += 1
        if n < self._k:
            raise ValueError(f"WaitSeries.waits_from({n}) after at({self._k})")
        mu = 1000.0 / self.service_ms
        lam_b = lam / batch
        a = lam_b / mu
        spread = 1.0 / batch + self.cs2
        k, b = self._k, self._b
        while True:
            if lam_b >= n * mu:
                yield math.inf
            else:
                while k < n:
                    k += 1
                    b = a * b / (k + a * b)
                self._k, self._b = k, b
                yield _wait_ms(n, a, b, mu, lam_b, q, spread)
            n += 1


def _wait_ms(n: int, a: float, b: float, mu: float, lam_b: float, q: float, spread: float) -> float:
    """The q-quantile of the wait (ms) from Erlang B `b` at n servers and a Erlangs: Erlang C,
    then the exponential tail; `spread` = 1/batch + cs² (Kingman's variability factor × 2)."""
    if a <= 0:
        c = 0.0
    elif a >= n:
        c = 1.0
    else:
        rho = a / n
        c = b / (1.0 - rho + rho * b)
    if c <= 1.0 - q:
        return 0.0
    t = math.log(c / (1.0 - q)) / (n * mu - lam_b)
    return 1000.0 * t * spread / 2.0


def cs2_from_profile(p50_ms: float, p99_ms: float) -> float:
    """Squared coefficient of variation of a batch's time, from its p50 and p99 (normal tail)."""
    if p50_ms <= 0:
        return 0.0
    sigma = max(p99_ms - p50_ms, 0.0) / P99_Z
    return (sigma / p50_ms) ** 2


def wait_p99_ms(n: int, lam: float, batch: int, service_ms: float, cs2: float = 0.0, q: float = 0.99) -> float:
    """p99 of a request's wait for a free replica (ms); math.inf when the stage cannot keep up."""
    if lam <= 0 or n < 1:
        return 0.0
    mu = 1000.0 / service_ms  # batches per second per replica
    lam_b = lam / batch
    if lam_b >= n * mu:
        return math.inf
    c = erlang_c(n, lam_b / mu)
    if c <= 1.0 - q:
        return 0.0
    t = math.log(c / (1.0 - q)) / (n * mu - lam_b)
    return 1000.0 * t * (1.0 / batch + cs2) / 2.0


def stretch(cores: float, utilisation: float) -> float:
    """How much CPU contention stretches service times at node utilisation ρ (≥ 1; inf at ρ ≥ 1)."""
    if utilisation <= 0:
        return 1.0
    if utilisation >= 1:
        return math.inf
    c = max(1, int(round(cores)))
    return 1.0 + erlang_c(c, utilisation * c) / (c * (1.0 - utilisation))

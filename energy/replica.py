"""Energy accounting inside a replica: each batch is charged what it cost, per request.

A batch's CPU part = its CPU seconds × the node's active (idle excluded) energy per busy
CPU second; its GPU part = batch wall time × the replica's GPU share × the GPU's active
energy per busy second. Both rates come from the node's energy actor (refreshed in the
background every REFRESH_S, never on the request path; unused once older than STALE_S); per
request = the batch's energy ÷ its requests. Each part names its method, and the basis
(:data:`ipa_energy.energy.BASIS`) says that this is a marginal-rate allocation of measured (or
estimated) node energy. Rates arrive as a dumped :class:`EnergyRates`, validated here; a charge
is a :class:`BatchEnergy`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from ipa_energy.energy import BatchEnergy, EnergyPart, EnergyRates, join_methods

__all__ = ["RATES_TIMEOUT_S", "REFRESH_S", "STALE_S", "ReplicaEnergy"]

logger = logging.getLogger("ray.serve")

REFRESH_S = 2.0  # how often a replica asks its node's actor for rates (s)
STALE_S = 30.0  # rates older than this charge nothing (s)
RATES_TIMEOUT_S = 5.0  # how long a refresh waits for the actor (s)


class ReplicaEnergy:
    """A replica's link to its node's energy actor: registers, refreshes rates, charges batches."""

    def __init__(self, consumer: str, labels: dict[str, str], gpu_fraction: float, config: dict | None = None):
        import ray

        from energy.config import EnergyConfig

        self.gpu_share = min(gpu_fraction, 1.0)
        # Ray's GPU ids index the node's visible GPUs, as Zeus/NVML do when the node actor
        # sees the same CUDA_VISIBLE_DEVICES (the usual case); ids that are not indices
        # (UUIDs, MIG) get no GPU part rather than a wrong one.
        ids = [str(i) for i in ray.get_gpu_ids()] if gpu_fraction > 0 else []
        self.gpu_devices = [f"gpu:{i}" for i in ids if i.isdigit()]
        self.rates: EnergyRates | None = None
        self._refreshed = 0.0
        self._refreshing: asyncio.Task | None = None
        self.consumer, self.labels = consumer, dict(labels)
        try:
            self._config = EnergyConfig.model_validate(config) if config else None
            self.actor = self._register()
        except Exception as e:  # serving never depends on telemetry
            logger.warning("energy accounting off for %s: %s", consumer, e)
            self.actor = None

    def _register(self):
        """The node's energy actor (started if it is not running), with this replica registered."""
        from energy.actor import node_actor

        actor = node_actor(config=self._config)
        actor.register.remote(self.consumer, os.getpid(), self.labels, [int(d[4:]) for d in self.gpu_devices],
                              self.gpu_share)
        return actor

    def relabel(self, labels: dict[str, str]) -> None:
        """New labels for what this replica's energy is attributed to from now on (a variant switch)."""
        self.labels = dict(labels)
        if self.actor is not None:
            try:
                self.actor.relabel.remote(self.consumer, labels)
            except Exception as e:  # serving never depends on telemetry
                logger.warning("energy labels of %s not updated: %s", self.consumer, e)

    def maybe_refresh(self) -> None:
        """Schedule a rates refresh if they are stale (call from the replica's event loop)."""
        if self.actor is None or time.monotonic() - self._refreshed < REFRESH_S:
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshed = time.monotonic()
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        from ray.exceptions import ActorDiedError

        try:
            self.rates = EnergyRates.model_validate(await asyncio.wait_for(self.actor.rates.remote(), RATES_TIMEOUT_S))
        except ActorDiedError as e:
            # the node's actor died: start the next one (it goes on from its journal) and register again
            logger.warning("energy actor gone (%s); registering with its successor", type(e).__name__)
            try:
                self.actor = await asyncio.to_thread(self._register)
            except Exception as e2:
                logger.warning("energy actor not restarted: %s", e2)
        except Exception as e:
            logger.warning("energy rates unavailable: %s", e)

    def charge(self, cpu_s: float, wall_s: float, requests: int, now: float | None = None) -> BatchEnergy | None:
        """Energy per request of a batch (J), by part with its method; None without fresh rates."""
        if self.gpu_devices and self.actor is not None:  # GPU busy time feeds attribution, rates or not
            self.actor.report_busy.remote(self.consumer, wall_s)
        rates = self.rates
        if rates is None or requests <= 0 or (now or time.time()) - rates.time_s > STALE_S:
            return None
        methods = rates.methods
        cpu_method = next((m for d, m in methods.items() if not d.startswith("gpu:")), None)
        parts: dict[str, EnergyPart] = {}
        if cpu_method is not None:
            parts["cpu"] = EnergyPart(j=cpu_s * rates.j_per_cpu_s / requests, method=cpu_method)
        for d in self.gpu_devices:
            if d in rates.gpu_j_per_busy_s:
                parts[d] = EnergyPart(j=wall_s * self.gpu_share * rates.gpu_j_per_busy_s[d] / requests, method=methods[d])
        if not parts:
            return None
        return BatchEnergy(j=sum(p.j for p in parts.values()), parts=parts,
                           method=join_methods(p.method for p in parts.values()))

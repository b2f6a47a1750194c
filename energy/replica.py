"""Energy accounting inside a replica: each batch is charged what it cost, per request.

A batch's CPU part = its CPU seconds × the node's active energy per busy CPU second; its
GPU part = batch wall time × the replica's GPU fraction × the GPU's active power. Both
rates come from the node's energy actor (refreshed in the background, never on the
request path); per request = the batch's energy ÷ its requests. Each part names its method.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

logger = logging.getLogger("ray.serve")

REFRESH_S = 2.0


class ReplicaEnergy:
    def __init__(self, consumer: str, labels: dict[str, str], gpu_fraction: float):
        import ray

        from energy.actor import node_actor

        self.gpu_fraction = gpu_fraction
        self.gpu_devices = [f"gpu:{i}" for i in ray.get_gpu_ids()] if gpu_fraction > 0 else []
        self.rates: dict[str, Any] | None = None
        self._refreshed = 0.0
        self._refreshing: asyncio.Task | None = None
        try:
            self.actor = node_actor()
            self.actor.register.remote(consumer, os.getpid(), labels, [int(d[4:]) for d in self.gpu_devices], gpu_fraction)
        except Exception as e:  # serving never depends on telemetry
            logger.warning("energy accounting off for %s: %s", consumer, e)
            self.actor = None
        self.consumer = consumer

    def maybe_refresh(self) -> None:
        """Schedule a rates refresh if they are stale (call from the replica's event loop)."""
        if self.actor is None or time.monotonic() - self._refreshed < REFRESH_S:
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshed = time.monotonic()
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            self.rates = await asyncio.wait_for(self.actor.rates.remote(), 5)
        except Exception as e:
            logger.warning("energy rates unavailable: %s", e)

    def charge(self, cpu_s: float, wall_s: float, requests: int) -> dict | None:
        """Energy per request of a batch (J), by part with its method; None before the first rates."""
        rates = self.rates
        if not rates or requests <= 0:
            return None
        methods = rates["methods"]
        cpu_method = next((m for d, m in methods.items() if not d.startswith("gpu:")), "tdp-estimate")
        parts = {"cpu": {"j": cpu_s * rates["j_per_cpu_s"] / requests, "method": cpu_method}}
        if self.gpu_devices:
            gpu_w = sum(rates["gpu_active_w"].get(d, 0.0) for d in self.gpu_devices)
            parts["gpu"] = {"j": wall_s * self.gpu_fraction * gpu_w / requests,
                            "method": methods.get(self.gpu_devices[0], "tdp-estimate")}
            if self.actor is not None:
                self.actor.report_busy.remote(self.consumer, wall_s)
        return {"j": sum(p["j"] for p in parts.values()), "parts": parts,
                "method": "+".join(sorted({p["method"] for p in parts.values()}))}

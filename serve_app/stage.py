"""One deployment per (pipeline, stage, variant): a model replica with dynamic batching."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray import serve

from ipa_energy.spec import VariantSpec
from workloads import images


@serve.deployment(max_ongoing_requests=16, graceful_shutdown_timeout_s=60)
class StageReplica:
    """Runs one variant; `@serve.batch` groups concurrent requests up to the plan's batch size."""

    def __init__(self, pipeline: str, stage: str, variant: dict[str, Any]):
        import torch

        from workloads.payloads import warmup_payload
        from workloads.tasks import build_runner

        self.variant = VariantSpec.model_validate(variant)
        self.replica = serve.get_replica_context().replica_id.unique_id
        # Pin torch to the replica's CPU share so replicas on one node don't oversubscribe it.
        torch.set_num_threads(max(1, int(self.variant.resources.num_cpus)))
        self._torch = torch
        self.runner = build_runner(self.variant)
        self._run([warmup_payload(self.variant.task)])  # ready means warm

    def reconfigure(self, config: dict[str, Any]) -> None:
        self._batched.set_max_batch_size(int(config["max_batch_size"]))
        self._batched.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))

    def _run(self, payloads: list[dict]) -> list[dict]:
        start = time.perf_counter()
        with self._torch.inference_mode():
            outputs = self.runner(payloads)
        compute_ms = (time.perf_counter() - start) * 1000
        return [
            {"output": out, "variant": self.variant.name, "weights": self.variant.weights,
             "replica": self.replica, "batch_size": len(payloads), "compute_ms": round(compute_ms, 3)}
            for out in outputs
        ]

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def _batched(self, payloads: list[dict]) -> list[dict]:
        # The model runs in a worker thread so the replica keeps answering health checks.
        return await asyncio.to_thread(self._run, payloads)

    async def __call__(self, payload: dict) -> dict:
        # Decode per request, before batching, so that one bad image fails only its request.
        if isinstance(payload.get("image"), bytes):
            payload = {**payload, "image": await asyncio.to_thread(images.decode, payload["image"])}
        return await self._batched(payload)

"""One deployment per (pipeline, stage, variant): a model replica with dynamic batching."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray import serve
from ray.serve import metrics

from energy.replica import ReplicaEnergy
from ipa_energy.errors import PayloadError
from ipa_energy.messages import StageResult
from ipa_energy.spec import VariantSpec
from workloads import images

__all__ = ["StageReplica"]


@serve.deployment(max_ongoing_requests=16, graceful_shutdown_timeout_s=60)
class StageReplica:
    """Runs one variant; `@serve.batch` groups concurrent requests up to the plan's batch size."""

    def __init__(self, pipeline: str, stage: str, variant: dict[str, Any], energy: dict | None = None):
        import torch

        from workloads.payloads import warmup_payload
        from workloads.tasks import build_runner

        self.variant = VariantSpec.model_validate(variant)
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self.labels = {"pipeline": pipeline, "stage": stage, "variant": self.variant.name}
        self.energy = ReplicaEnergy(
            consumer=self.replica,
            labels={"app": context.app_name, "deployment": context.deployment, **self.labels},
            gpu_fraction=self.variant.resources.num_gpus,
            config=energy,
        )
        self.request_joules = metrics.Counter(
            "ipa_energy_request_joules", "Energy charged to requests (J)", tag_keys=("pipeline", "stage", "variant", "method")
        )
        self.requests = metrics.Counter("ipa_energy_requests", "Requests served", tag_keys=("pipeline", "stage", "variant"))
        # Pin torch to the replica's CPU share so replicas on one node don't oversubscribe it.
        torch.set_num_threads(max(1, int(self.variant.resources.num_cpus)))
        self._torch = torch
        self.runner = build_runner(self.variant)
        with torch.inference_mode():
            self.runner([warmup_payload(self.variant.task)])  # ready means warm

    def reconfigure(self, config: dict[str, Any]) -> None:
        self._batched.set_max_batch_size(int(config["max_batch_size"]))
        self._batched.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))

    def _run(self, payloads: list[dict]) -> list[dict | PayloadError]:
        """A batch in the worker thread: decode each payload, then one forward pass.

        Decoding here costs one thread hop per batch instead of one more per request; a
        payload that does not decode fails alone (its PayloadError takes its place), not the
        batch it joined.
        """
        ready, failed = [], {}
        for i, payload in enumerate(payloads):
            try:
                image = payload.get("image")
                ready.append({**payload, "image": images.decode(image)} if isinstance(image, bytes) else payload)
            except PayloadError as e:
                failed[i] = e
        results = iter(self._forward(ready) if ready else ())
        return [failed[i] if i in failed else next(results) for i in range(len(payloads))]

    def _forward(self, payloads: list[dict]) -> list[dict]:
        start, cpu_start = time.perf_counter(), time.process_time()
        with self._torch.inference_mode():
            outputs = self.runner(payloads)
        wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        energy = self.energy.charge(cpu_s, wall_s, len(payloads))
        if energy is not None:
            self.request_joules.inc(energy.j * len(payloads), tags={**self.labels, "method": energy.method})
        self.requests.inc(len(payloads), tags=self.labels)
        # dumped here, validated by the ingress (ipa_energy.messages.StageResult)
        return [
            StageResult(output=out, variant=self.variant.name, weights=self.variant.weights, replica=self.replica,
                        batch_size=len(payloads), compute_ms=round(wall_s * 1000, 3), energy=energy).model_dump()
            for out in outputs
        ]

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def _batched(self, payloads: list[dict]) -> list[dict | PayloadError]:
        # The model runs in a worker thread so the replica keeps answering health checks.
        return await asyncio.to_thread(self._run, payloads)

    async def __call__(self, payload: dict) -> dict:
        self.energy.maybe_refresh()
        if self.variant.task in ("segment", "segment-detections"):
            from workloads.sam import validate_payload

            validate_payload(self.variant, payload)  # prompts: a bad one never joins a batch
        result = await self._batched(payload)
        if isinstance(result, PayloadError):
            raise result
        return result

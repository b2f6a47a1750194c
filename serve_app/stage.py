"""One deployment per stage slot (serve_app.layout): a model replica with dynamic batching that
switches variant in place when its `user_config` names another one."""

from __future__ import annotations

import asyncio
import time
from collections import deque
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
    """Runs the variant its `user_config` names, out of `variants` (those its slot may run: one
    resource shape); `@serve.batch` groups concurrent requests up to the plan's batch size."""

    def __init__(self, pipeline: str, stage: str, variants: dict[str, dict[str, Any]], energy: dict | None = None):
        import torch

        self.variants = {name: VariantSpec.model_validate(v) for name, v in variants.items()}
        if not self.variants:
            raise ValueError(f"stage {pipeline}.{stage}: a slot with no variant to run")
        resources = next(iter(self.variants.values())).resources  # one shape per slot
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self.variant: VariantSpec | None = None
        self.runner = None
        self.labels = {"pipeline": pipeline, "stage": stage, "variant": ""}
        self._energy_labels = {"app": context.app_name, "deployment": context.deployment, "pipeline": pipeline,
                               "stage": stage}
        self.energy = ReplicaEnergy(consumer=self.replica, labels=self._energy_labels,
                                    gpu_fraction=resources.num_gpus, config=energy)
        self.request_joules = metrics.Counter(
            "ipa_energy_request_joules", "Energy charged to requests (J)", tag_keys=("pipeline", "stage", "variant", "method")
        )
        self.requests = metrics.Counter("ipa_energy_requests", "Requests served", tag_keys=("pipeline", "stage", "variant"))
        # Pin torch to the replica's CPU share so replicas on one node don't oversubscribe it.
        torch.set_num_threads(max(1, int(resources.num_cpus)))
        self._torch = torch
        self.switches: deque[tuple[str, float]] = deque(maxlen=100)  # (variant, seconds to build and warm it up)

    def _load(self, variant: VariantSpec):
        """Build `variant`'s model and warm it up (ready means warm)."""
        from workloads.payloads import warmup_payload
        from workloads.tasks import build_runner

        runner = build_runner(variant)
        with self._torch.inference_mode():
            runner([warmup_payload(variant.task)])
        return runner

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve calls this at start and whenever the plan changes this slot's user_config.

        A new variant is built and warmed up in a worker thread while the current one keeps
        serving; the swap is one assignment, so a batch already running finishes on the model
        it started with and no request waits for a cold start."""
        name = config["variant"]
        if name not in self.variants:
            raise ValueError(f"variant {name!r} is not one this slot runs: {sorted(self.variants)}")
        if self.variant is None or self.variant.name != name:
            variant, start = self.variants[name], time.perf_counter()
            runner = await asyncio.to_thread(self._load, variant)
            self.runner, self.variant = runner, variant
            self.labels = {**self.labels, "variant": name}
            self.energy.relabel({**self._energy_labels, "variant": name})
            self.switches.append((name, round(time.perf_counter() - start, 3)))
        self._batched.set_max_batch_size(int(config["max_batch_size"]))
        self._batched.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))

    def running(self) -> dict:
        """The variant this replica runs and the in-place switches it made: (variant, seconds)."""
        return {"variant": self.variant.name if self.variant else None, "switches": list(self.switches)}

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
        # the model and labels as they are now: a switch in place does not touch a running batch
        runner, variant, labels = self.runner, self.variant, self.labels
        results = iter(self._forward(runner, variant, labels, ready) if ready else ())
        return [failed[i] if i in failed else next(results) for i in range(len(payloads))]

    def _forward(self, runner, variant: VariantSpec, labels: dict, payloads: list[dict]) -> list[dict]:
        start, cpu_start = time.perf_counter(), time.process_time()
        with self._torch.inference_mode():
            outputs = runner(payloads)
        wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        energy = self.energy.charge(cpu_s, wall_s, len(payloads))
        if energy is not None:
            self.request_joules.inc(energy.j * len(payloads), tags={**labels, "method": energy.method})
        self.requests.inc(len(payloads), tags=labels)
        # dumped here, validated by the ingress (ipa_energy.messages.StageResult)
        return [
            StageResult(output=out, variant=variant.name, weights=variant.weights, replica=self.replica,
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

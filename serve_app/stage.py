"""One deployment per stage slot (serve_app.layout): a model replica with dynamic batching that
switches variant in place when its `user_config` names another one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, NamedTuple

from ray import serve
from ray.serve import metrics

from energy.replica import ReplicaEnergy
from ipa_energy.errors import PayloadError
from ipa_energy.messages import StageResult
from ipa_energy.spec import VariantSpec
from serve_app.arrivals import arrivals_actor
from serve_app.warm import WarmModels
from workloads import images

__all__ = ["StageReplica"]

logger = logging.getLogger("ray.serve")


class _Active(NamedTuple):
    """What a replica serves with, swapped as one: a batch takes both or neither of a switch."""

    runner: Any
    variant: VariantSpec


@serve.deployment(max_ongoing_requests=16, graceful_shutdown_timeout_s=60)
class StageReplica:
    """Runs the variant its `user_config` names, out of `variants` (those its slot may run: one
    resource shape); `@serve.batch` groups concurrent requests up to the plan's batch size.
    With `warm`, it keeps the slot's other variants built (serve_app.warm): a switch is a swap."""

    def __init__(self, pipeline: str, stage: str, variants: dict[str, dict[str, Any]], energy: dict | None = None,
                 warm: bool = True):
        import psutil
        import torch

        # from the process's birth: the worker start and the imports count in a cold start too
        self._born = psutil.Process().create_time()
        self.cold_start_s: float | None = None  # process start → first variant warm (s)

        self.variants = {name: VariantSpec.model_validate(v) for name, v in variants.items()}
        if not self.variants:
            raise ValueError(f"stage {pipeline}.{stage}: a slot with no variant to run")
        self.resources = next(iter(self.variants.values())).resources  # one shape per slot
        context = serve.get_replica_context()
        self.replica, self.app, self.deployment = context.replica_id.unique_id, context.app_name, context.deployment
        self.pipeline, self.stage = pipeline, stage
        self._energy_config = energy
        self.energy: ReplicaEnergy | None = None  # registered once the first variant is loaded (its label)
        self.active: _Active | None = None
        self.wanted: tuple[str, int, float] | None = None  # (variant, max batch size, batch wait s) last asked for
        self.failed: dict[str, str] = {}  # variant → why it did not load here
        self._building: asyncio.Task | None = None
        # GPU slots keep none: fractional-GPU replicas are placed by GPU memory (serve_app.warm)
        self.warm = WarmModels(lambda name: self._load(self.variants[name]),
                               busy=lambda: self._building is not None and not self._building.done()) \
            if warm and len(self.variants) > 1 and not self.resources.num_gpus else None
        self._warming: asyncio.Task | None = None
        self.request_joules = metrics.Counter(
            "ipa_energy_request_joules", "Energy charged to requests (J)", tag_keys=("pipeline", "stage", "variant", "method")
        )
        self.requests = metrics.Counter("ipa_energy_requests", "Requests served", tag_keys=("pipeline", "stage", "variant"))
        # Pin torch to the replica's CPU share so replicas on one node don't oversubscribe it.
        torch.set_num_threads(max(1, int(self.resources.num_cpus)))
        self._torch = torch
        self.switches: deque[tuple[str, float]] = deque(maxlen=100)  # (variant, seconds to build and warm it up)

    @property
    def variant(self) -> VariantSpec | None:
        return self.active.variant if self.active else None

    def _load(self, variant: VariantSpec):
        """Build `variant`'s model and warm it up (ready means warm)."""
        from workloads.payloads import warmup_payload
        from workloads.tasks import build_runner

        runner = build_runner(variant)
        with self._torch.inference_mode():
            runner([warmup_payload(variant.task)])
        return runner

    def _labels(self, variant: str) -> dict[str, str]:
        return {"pipeline": self.pipeline, "stage": self.stage, "variant": variant}

    def _activate(self, name: str, runner, batching: tuple[int, float]) -> None:
        self.active = _Active(runner, self.variants[name])
        energy_labels = {"app": self.app, "deployment": self.deployment, **self._labels(name)}
        if self.energy is None:
            self.energy = ReplicaEnergy(consumer=self.replica, labels=energy_labels,
                                        gpu_fraction=self.resources.num_gpus, config=self._energy_config)
        else:
            self.energy.relabel(energy_labels)
        self._batching(batching)

    def _batching(self, batching: tuple[int, float]) -> None:
        self._batched.set_max_batch_size(batching[0])
        self._batched.set_batch_wait_timeout_s(batching[1])

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve calls this at start and whenever the plan changes this slot's user_config.

        At start the variant is loaded before the replica reports ready (ready means warm; a
        variant that fails to load fails the start). Afterwards a new variant is built and
        warmed up in the background and this returns at once: Serve routes no request to a
        replica while its reconfigure runs, so the replica keeps serving the variant it has
        until the new one swaps in. A variant that fails to load leaves it serving the one it
        has; either outcome goes to the app's registry (serve_app.arrivals), where the plan
        controller waits for it before it moves traffic or rolls back."""
        name = config["variant"]
        if name not in self.variants:
            raise ValueError(f"variant {name!r} is not one this slot runs: {sorted(self.variants)}")
        batching = (int(config["max_batch_size"]), float(config["batch_wait_timeout_s"]))
        self.wanted = (name, *batching)
        if self.active is None:
            runner = await asyncio.to_thread(self._load, self.variants[name])
            self._activate(name, runner, batching)
            self.cold_start_s = round(time.time() - self._born, 3)
            self._report()
            if self.warm is not None:  # after ready: the cold start does not wait for them
                self._warming = asyncio.get_running_loop().create_task(
                    self.warm.fill(list(self.variants), lambda: self.variant.name if self.variant else None))
        elif self.active.variant.name == name:
            self._batching(batching)  # a switch still building is no longer wanted: it will not swap
            self._report()
        elif self._swap(name, batching):
            self._report()
        elif self._building is None or self._building.done():
            self._building = asyncio.get_running_loop().create_task(self._switch())
            self._report()  # a switch under way shows in the registry: wanted ≠ variant

    def _swap(self, name: str, batching: tuple[int, float]) -> bool:
        """Switch to `name` at once if it is warm (the variant left stays warm); False: it is not."""
        runner = self.warm.take(name) if self.warm is not None else None
        if runner is None:
            return False
        old = self.active
        self._activate(name, runner, batching)
        self.warm.keep(old.variant.name, old.runner)
        self.switches.append((name, 0.0))
        return True

    async def _switch(self) -> None:
        """Build what is wanted until it is what runs (the wish may change while a model builds)."""
        while self.wanted is not None and self.active is not None and self.wanted[0] != self.active.variant.name:
            name = self.wanted[0]
            if self._swap(name, self.wanted[1:]):  # warmed while this waited
                continue
            start = time.perf_counter()
            try:
                runner = await asyncio.to_thread(self._load, self.variants[name])
            except Exception as e:  # keep serving what runs; the controller rolls the change back
                logger.exception("replica %s: variant %s did not load; still serving %s", self.replica, name,
                                 self.active.variant.name)
                self.failed[name] = f"{type(e).__name__}: {e}"
                break
            if self.wanted[0] == name:
                old = self.active
                self._activate(name, runner, self.wanted[1:])
                if self.warm is not None:
                    self.warm.keep(old.variant.name, old.runner)
                self.failed.pop(name, None)
                self.switches.append((name, round(time.perf_counter() - start, 3)))
            elif self.warm is not None:  # wanted no longer, but built: warm for next time
                self.warm.keep(name, runner)
        self._report()

    def _report(self) -> None:
        """Tell the app's registry what this replica runs, what it was asked for and what failed."""
        try:
            arrivals_actor(self.app).report_replica.remote(self.deployment, self.replica, self.running())
        except Exception as e:  # the controller then waits for a report that does not come, and rolls back
            logger.warning("replica %s: state not reported: %s", self.replica, e)

    def check_health(self) -> None:
        """Serve's periodic health check (every 10 s): report again, so a registry that restarted
        (serve_app.arrivals; its replica states are in memory) knows this replica within one
        period. Otherwise a plan change waiting for this replica's variant would wait forever.
        Warm models are dropped here if the node's memory has run short since."""
        if self.warm is not None:
            self.warm.evict()
        self._report()

    def running(self) -> dict:
        """The variant this replica runs, the one it was last asked for, the variants that failed to
        load here (variant → why), the in-place switches it made: (variant, seconds; 0 for a warm
        swap), its cold start: seconds from its process's start until its first variant was
        warm, and the variants it keeps warm beside it (serve_app.warm)."""
        return {"variant": self.variant.name if self.variant else None,
                "wanted": self.wanted[0] if self.wanted else None,
                "failed": dict(self.failed), "switches": list(self.switches), "cold_start_s": self.cold_start_s,
                "warm": sorted(self.warm.runners) if self.warm is not None else []}

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
        # the model as it is now: a switch in place does not touch a running batch
        runner, variant = self.active
        results = iter(self._forward(runner, variant, ready) if ready else ())
        return [failed[i] if i in failed else next(results) for i in range(len(payloads))]

    def _forward(self, runner, variant: VariantSpec, payloads: list[dict]) -> list[dict]:
        labels = self._labels(variant.name)
        warm_start = self.warm.cpu_s() if self.warm is not None else 0.0
        start, cpu_start = time.perf_counter(), time.process_time()
        with self._torch.inference_mode():
            outputs = runner(payloads)
        wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        if self.warm is not None:  # a warm build in its own thread meanwhile is not this batch's
            cpu_s = max(0.0, cpu_s - (self.warm.cpu_s() - warm_start))
        energy = self.energy.charge(cpu_s, wall_s, len(payloads))
        if energy is not None and energy.j > 0:  # Ray's Counter refuses 0, which failed the request (a zero rate: CI, an energy actor restart)
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

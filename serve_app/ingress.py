"""The HTTP front door: validates requests and walks them through the pipeline's stages.

No `from __future__ import annotations`: FastAPI reads the route signatures at run time.
"""


import asyncio
import hmac
import logging
import math
import random
import time
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.exceptions import RayActorError
from ray.serve import metrics
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

import ipa_energy
from energy.actor import ensure_node_actors
from ipa_energy.energy import EnergyReport, NodeEnergyReport
from ipa_energy.errors import PayloadError, SpecError
from ipa_energy.messages import ApplyReport, Health, PipelineAnswer, PipelineInfo, PlanState, Shed, StageResult
from ipa_energy.spec import PipelineSpec, Plan
from serve_app.arrivals import ArrivalCounter, Pusher, arrivals_actor
from serve_app.config import AppSpec
from serve_app.constants import ARRIVAL_PUSH_S, ARRIVALS_HISTORY_S, INLINE_PARSE_BYTES, LATENCY_BUCKETS_MS, NODE_WATCH_S
from serve_app.in_flight import InFlight, Place
from serve_app.layout import targets
from serve_app.request_energy import RequestEnergyBook, pipeline_energy
from serve_app.requests import check_body_size, load_json, parse_body, request_model
from serve_app.timings import StageTimings

__all__ = ["Ingress", "api"]

logger = logging.getLogger("ray.serve")

api = FastAPI(
    title="ipa-energy",
    version=ipa_energy.__version__,
    description="Model pipelines served with IPA-style adaptation and energy telemetry.",
)


@api.exception_handler(PayloadError)
async def _payload_error(_: Request, exc: PayloadError) -> JSONResponse:
    return JSONResponse(exc.to_json(), status_code=exc.status_code)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _json(model) -> Response:
    """A model as the HTTP answer (serialised by pydantic in one pass, not field by field)."""
    return Response(model.model_dump_json(), media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing it as soon as it grows past `limit` (chunked uploads too)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadError(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@serve.deployment(max_ongoing_requests=256, graceful_shutdown_timeout_s=60)
@serve.ingress(api)
class Ingress:
    def __init__(self, spec: dict, controller: DeploymentHandle, stages: dict[str, Any]):
        self.spec = AppSpec.model_validate(spec)
        self.pipelines = {p.name: p for p in self.spec.pipelines}
        self.schemas = {p.name: request_model(p) for p in self.spec.pipelines}
        self.controller = controller
        context = serve.get_replica_context()
        self.app_name = context.app_name
        # Picks the member of a variant mix per request; seeded per replica (reproducible).
        self._rng = random.Random(context.replica_id.unique_id)
        self.state = PlanState(version=0, plans={})  # converged plans, and a pending change apart
        self.plans: dict[str, Plan] = {}  # what requests are routed by
        self.targets: dict[str, dict[str, dict[str, str]]] = {}  # pipeline → stage → variant → deployment
        self.plan_version = 0
        self._handles: dict[str, DeploymentHandle] = {}
        self.energy_book = RequestEnergyBook(self.spec.energy.carbon_g)  # what this replica answered
        self._energy_pushed: dict | None = None  # the book as the arrivals actor last got it
        self.in_flight = InFlight(self.spec.ingress_replicas)  # calls in flight, admitted requests, the shedder
        self.arrivals = ArrivalCounter(self.pipelines)
        self.timings = StageTimings(ARRIVALS_HISTORY_S)  # what each stage variant achieved, for the planner
        self._pusher = Pusher(self.arrivals, context.replica_id.unique_id, self.timings)
        self._energy_actors = self._start_energy_actors()
        # Serve adds application, deployment and replica tags to these (docs/observability.md)
        self._slo = metrics.Counter("ipa_energy_slo_requests", "Requests within (met) or over (missed) the pipeline's SLA, "
                                    "counted once per stage", tag_keys=("pipeline", "stage", "variant", "slo"))
        self._shed = metrics.Counter("ipa_energy_shed_requests", "Requests refused at once (503) because the plan "
                                     "could not serve them within the SLA", tag_keys=("pipeline", "stage"))
        self._retries = metrics.Counter("ipa_energy_stage_retries", "Stage calls sent again because the replica died or "
                                        "was unreachable before it answered", tag_keys=("pipeline", "stage"))
        self._latency = metrics.Histogram("ipa_energy_pipeline_latency_ms", "End-to-end latency at the ingress (ms)",
                                          boundaries=list(LATENCY_BUCKETS_MS), tag_keys=("pipeline",))
        self._node_watch: asyncio.Task | None = None
        self._arrival_push: asyncio.Task | None = None

    async def _watch_nodes(self, period_s: float = NODE_WATCH_S) -> None:
        """Start energy actors on nodes that join after the app started."""
        while True:
            await asyncio.sleep(period_s)
            self._energy_actors = await asyncio.to_thread(self._start_energy_actors)

    async def _push_arrivals(self) -> None:
        """Send this replica's per-second counts to the app's arrivals actor (the planner
        reads the sum over all ingress replicas there; see serve_app.arrivals)."""
        actor = None
        while True:
            await asyncio.sleep(ARRIVAL_PUSH_S)
            try:
                actor = actor or await asyncio.to_thread(arrivals_actor, self.app_name)
                reply = await asyncio.wait_for(actor.update.remote(*self._pusher.payload(time.time())), 10)
                self._pusher.acknowledge(reply)
                dump = self.energy_book.dump()
                if dump and (dump != self._energy_pushed or self._pusher.incarnation is None):  # new, or a new actor
                    await asyncio.wait_for(actor.report_energy.remote(self._pusher.replica, dump), 10)
                    self._energy_pushed = dump
            except Exception as e:  # serving never depends on the count; resend everything next time
                logger.debug("arrival counts not pushed: %s", e)
                self._pusher.acknowledge(None)
                actor = None

    async def _app_energy_totals(self) -> dict[str, dict]:
        """Requests and energy per pipeline over every ingress replica (this one's own: up to now);
        this replica's alone if the arrivals actor does not answer."""
        mine = self.energy_book.dump()
        try:
            actor = await asyncio.to_thread(arrivals_actor, self.app_name)
            await asyncio.wait_for(actor.report_energy.remote(self._pusher.replica, mine), 10)
            return await asyncio.wait_for(actor.energy_totals.remote(), 10)
        except Exception as e:
            logger.warning("energy totals of the other ingress replicas not read: %s", e)
            return mine

    def _start_energy_actors(self) -> dict:
        try:
            return ensure_node_actors(self.spec.energy)
        except Exception as e:  # serving never depends on telemetry
            logger.warning("energy actors not started: %s", e)
            return {}

    def reconfigure(self, config: dict) -> None:
        self.state = PlanState.model_validate(config)  # serve_app.builder.routing_config
        self.plan_version, self.plans = self.state.routing()
        self.targets = {name: targets(plan, self.spec.shape) for name, plan in self.plans.items()}

    def _handle(self, name: str) -> DeploymentHandle:
        if name not in self._handles:
            # Stage calls go over Serve's inter-deployment gRPC rather than Ray object refs
            # (`_by_reference=False`, as Serve's throughput-optimized mode does): a stage hop
            # costs ~3 ms instead of ~5 ms on a small host (bench/overhead.py).
            handle = serve.get_deployment_handle(name, self.app_name)
            self._handles[name] = handle.options(_by_reference=False)
        return self._handles[name]

    # -- read-only -------------------------------------------------------------------

    @api.get("/healthz", response_model=Health)
    async def healthz(self) -> Response:
        return _json(Health(plan_version=self.plan_version))

    @api.get("/v1/pipelines", response_model=list[PipelineInfo])
    async def list_pipelines(self) -> list[PipelineInfo]:
        return [self._describe(name) for name in self.pipelines]

    @api.get("/v1/pipelines/{name}", response_model=PipelineInfo)
    async def describe_pipeline(self, name: str):
        if name not in self.pipelines:
            return self._unknown(name)
        return _json(self._describe(name))

    @api.get("/v1/plan", response_model=PlanState)
    async def get_plan(self) -> Response:
        state = self.state
        return _json(state.model_copy(update={
            "accuracy": {name: self.pipelines[name].accuracy(p) for name, p in state.plans.items()}}))

    @api.get("/v1/energy", response_model=EnergyReport)
    async def get_energy(self) -> Response:
        """Node energy by device and method, attribution by deployment, J/request by pipeline."""
        self._energy_actors = await asyncio.to_thread(self._start_energy_actors)  # nodes that joined since too
        config = self.spec.energy
        nodes: list[NodeEnergyReport | dict[str, str]] = []
        for node_id, actor in self._energy_actors.items():
            try:
                node = NodeEnergyReport.model_validate(await asyncio.wait_for(actor.summary.remote(), 10))
            except Exception as e:
                nodes.append({"node_id": node_id, "error": f"{type(e).__name__}: {e}"})
                continue
            for device in node.devices.values():
                device.carbon_g = config.carbon_g(device.energy_j)
            nodes.append(node)
        pipelines = pipeline_energy(await self._app_energy_totals(), config.carbon_g)
        return _json(EnergyReport(carbon={"g_per_kwh": config.carbon_g_per_kwh, "pue": config.pue},
                                  pipelines=pipelines, nodes=nodes))

    def _count_arrival(self, pipeline: str) -> None:
        self.arrivals.count(pipeline, time.time())
        if self._arrival_push is None:
            self._arrival_push = asyncio.get_running_loop().create_task(self._push_arrivals())

    def in_flight_to(self, deployments: list[str]) -> int:
        """Calls this replica has sent to `deployments` and not yet got back (the plan controller
        drains them before it removes a deployment)."""
        return self.in_flight.in_flight_to(deployments)

    def current(self) -> dict:
        """For the plan controller: the converged plans and any pending change (a dumped PlanState)."""
        return self.state.model_dump(mode="json")

    # -- changing the plan ----------------------------------------------------------------

    @api.put("/v1/plan")
    async def put_plan(self, request: Request, authorization: str | None = Header(None)):
        token = self.spec.control_token
        if token is None:
            return _error(403, "plan changes over HTTP are disabled: start the app with token=... or $IPA_ENERGY_TOKEN")
        if authorization is None or not hmac.compare_digest(authorization, f"Bearer {token}"):
            return _error(401, "missing or wrong bearer token")
        body = await _read_body(request, self.spec.limits.max_body_bytes)
        raw = load_json(body, self.spec.limits)  # 422 for what is not JSON, or nests too deep for the decoder
        try:
            items = raw if isinstance(raw, list) else [raw]
            plans = [Plan.model_validate(p) for p in items]
        except ValueError as e:
            return _error(422, f"body is not a Plan or a list of Plans: {e}")
        try:
            report = ApplyReport.model_validate(await self.controller.apply.remote([p.model_dump(mode="json") for p in plans]))
        except Exception as e:  # Ray wraps the controller's SpecError / PlanApplyError
            cause = getattr(e, "cause", None) or e
            return _error(422 if isinstance(cause, SpecError) else 409, f"plan not applied: {cause}")
        return _json(report)

    # -- serving ----------------------------------------------------------------------

    @api.post(
        "/v1/pipelines/{name}",
        response_model=PipelineAnswer,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    async def run(self, name: str, request: Request):
        arrived = time.perf_counter()
        if self._node_watch is None:
            self._node_watch = asyncio.get_running_loop().create_task(self._watch_nodes())
        pipeline = self.pipelines.get(name)
        if pipeline is None:
            return self._unknown(name)
        self._count_arrival(name)  # offered load, shed or not: the planner plans for it
        # A variant mix: one member per stage, at random with probability = its share.
        draws = [self._rng.random() for _ in pipeline.stages]
        verdict = self.in_flight.judge(pipeline, self.plans[name], self.targets[name], draws)
        if verdict.shed:  # before reading the body: a refusal costs next to nothing
            return self._refuse(pipeline, verdict.stage, verdict.retry_after_s,
                                f"the plan cannot serve this request within the SLA ({pipeline.sla_ms:g} ms): about "
                                f"{verdict.expected_s * 1000:.0f} ms of work is queued ahead of it")
        first = pipeline.stages[0].name
        place = self.in_flight.admit(self.targets[name][first][self.plans[name].stages[first].route(draws[0])])
        try:
            return await self._serve(pipeline, request, draws, arrived, place)
        finally:
            place.release()

    async def _serve(self, pipeline: PipelineSpec, request: Request, draws: list[float], arrived: float,
                     place: Place) -> Response:
        """An admitted request: read and check its body, then call the stages in turn. Until its
        first call starts it holds its `place` among the admitted, which that call releases."""
        name = pipeline.name
        limits = self.spec.limits
        check_body_size(request.headers.get("content-length"), limits)
        body = await _read_body(request, limits.max_body_bytes)
        if len(body) <= INLINE_PARSE_BYTES:
            payload = parse_body(self.schemas[name], body, limits)
        else:  # checking a large image's structure is CPU work: keep the event loop free
            payload = await asyncio.to_thread(parse_body, self.schemas[name], body, limits)

        start = time.perf_counter()
        deadline = arrived + pipeline.sla_ms / 1000
        results: dict[str, StageResult] = {}
        latency: dict[str, float] = {}
        for stage, u in zip(pipeline.stages, draws):
            # Read the plan per stage: after a switch, no new call goes to a draining variant.
            variant = self.plans[name].stages[stage.name].route(u)
            t0 = time.perf_counter()
            target = self.targets[name][stage.name][variant]
            # in flight from here on (wherever the plan sent it meanwhile), no longer only admitted
            with self.in_flight.calling(target, place) as ahead:
                try:
                    reply = await self._call(pipeline, stage.name, target, {k: payload[k] for k in stage.consumes}, deadline)
                except BackPressureError as e:  # the stage's bounded queue is full
                    return self._refuse(pipeline, stage.name, max(1, math.ceil(e.retry_after_s or 1)),
                                        f"stage {stage.name!r} ({variant}) has a full queue ({e.num_queued_requests} queued)")
                except Exception as e:
                    cause = getattr(e, "cause", None)  # what the replica raised, unwrapped
                    if isinstance(cause, PayloadError):  # e.g. pixels that do not decode
                        return JSONResponse(cause.to_json(), status_code=cause.status_code)
                    logger.exception("stage %s of %s failed", stage.name, name)
                    self._count_slo(pipeline, {**{s: r.variant for s, r in results.items()}, stage.name: variant}, met=False)
                    return _error(503, f"stage {stage.name!r} ({variant}) failed: {type(e).__name__}: {cause or e}")
            result = results[stage.name] = StageResult.model_validate(reply)
            latency[stage.name] = round((time.perf_counter() - t0) * 1000, 3)
            self.in_flight.learn(self.plans[name].stages[stage.name], variant, target, ahead, result,
                                 latency[stage.name] / 1000)
            # by the variant that served it: a slot switching in place may still answer with the old one
            self.timings.record(name, stage.name, result.variant, time.time(), result.compute_ms, result.batch_size,
                                latency[stage.name])
            payload.update(result.output)
        latency["total"] = round((time.perf_counter() - start) * 1000, 3)
        self._latency.observe(latency["total"], tags={"pipeline": name})
        self._count_slo(pipeline, {s: r.variant for s, r in results.items()}, met=latency["total"] <= pipeline.sla_ms)
        return _json(PipelineAnswer(
            pipeline=name,
            outputs={s: r.output for s, r in results.items()},
            variants={s: r.variant for s, r in results.items()},
            weights={s: r.weights for s, r in results.items()},
            batch_sizes={s: r.batch_size for s, r in results.items()},
            replicas={s: r.replica for s, r in results.items()},
            latency_ms=latency,
            compute_ms={s: r.compute_ms for s, r in results.items()},
            energy=self.energy_book.charge(name, {s: r.energy for s, r in results.items()}),
            plan_version=self.plan_version,
        ))

    async def _call(self, pipeline: PipelineSpec, stage: str, target: str, payload: dict, deadline: float) -> dict:
        """One stage call, sent once more when its replica died or could not be reached before it
        answered and the SLA deadline has not passed: inference is idempotent, and Serve's router
        no longer picks a replica it saw die (or waits for its replacement)."""
        handle = self._handle(target)
        try:
            return await handle.remote(payload)
        except Exception as e:
            lost = isinstance(e, RayActorError) or isinstance(getattr(e, "cause", None), RayActorError)
            if not lost or time.perf_counter() >= deadline:
                raise
            logger.warning("stage %s of %s: replica lost (%s); sending the call again", stage, pipeline.name,
                           type(e).__name__)
            self._retries.inc(tags={"pipeline": pipeline.name, "stage": stage})
            return await handle.remote(payload)

    def _refuse(self, pipeline: PipelineSpec, stage: str, retry_after_s: int, why: str) -> Response:
        """A fast 503 with Retry-After (ipa_energy.messages.Shed); an SLO miss, counted apart."""
        self._shed.inc(tags={"pipeline": pipeline.name, "stage": stage})
        self._count_slo(pipeline, {}, met=False)
        body = Shed(error=why, pipeline=pipeline.name, stage=stage, retry_after_s=retry_after_s)
        return Response(body.model_dump_json(), status_code=503, media_type="application/json",
                        headers={"Retry-After": str(retry_after_s)})

    def _count_slo(self, pipeline: PipelineSpec, variants: dict[str, str], met: bool) -> None:
        """One count per stage, so that Σ by pipeline is exact and Σ by variant gives attainment per variant."""
        for stage in pipeline.stages:
            self._slo.inc(tags={"pipeline": pipeline.name, "stage": stage.name,
                                "variant": variants.get(stage.name, "(not reached)"), "slo": "met" if met else "missed"})

    def _unknown(self, name: str) -> JSONResponse:
        return _error(404, f"unknown pipeline {name!r}; served: {sorted(self.pipelines)}")

    def _describe(self, name: str) -> PipelineInfo:
        return PipelineInfo.of(self.pipelines[name], self.schemas[name].model_json_schema())

"""Outside baselines on the running app: an InfAdapter variant mix, Serve's own autoscaling,
and the planner's arrival counts summed over several ingress replicas."""

import asyncio
import collections
import time

import pytest
import ray
from ray import serve
from ray.serve.context import _get_global_client

from ipa_energy.spec import Autoscaling, Plan, StagePlan
from loadgen.driver import closed_loop, summarize
from serve_app import control
from ipa_energy import RAY_NAMESPACE as NAMESPACE
from serve_app.arrivals import actor_name, arrivals_actor
from serve_app.layout import deployment_name
from serve_app.config import AppSpec
from tests.integration.conftest import LIMITS
from workloads import catalog, payloads

pytestmark = pytest.mark.integration


def drive(url: str, clients: int = 4, duration_s: float = 8.0):
    bodies = [payloads.image_request(seed=s) for s in range(4)]
    return asyncio.run(closed_loop(url, lambda i: bodies[i % 4], clients=clients, duration_s=duration_s))


def test_a_variant_mix_splits_traffic_then_returns_to_one_variant(base_url, http):
    _, plans = control.current_plans()
    before = plans["classify"]
    a = before.stages["classifier"].variant
    b = "resnet34-112-mini" if a != "resnet34-112-mini" else "resnet18-112-mini"
    mix = Plan(pipeline="classify", policy="infadapter", stages={"classifier": StagePlan(
        mix=[{"variant": a, "share": 0.5}, {"variant": b, "share": 0.5}])})
    report = control.apply_plan(mix)
    assert [s.step for s in report.steps][:2] == ["make", "switch"]  # b is up before traffic moves
    records = drive(f"{base_url}/v1/pipelines/classify")
    stats = summarize(records)
    used = collections.Counter(r.variants.get("classifier") for r in records if r.status == 200)
    assert stats["failed"] == 0, [r.error for r in records if r.status != 200][:3]
    assert stats["requests"] >= 24 and used[a] > 0 and used[b] > 0, used
    spec = catalog.pipeline("classify")
    assert http.get("/v1/plan").json()["accuracy"]["classify"] == pytest.approx(spec.accuracy(mix))

    report = control.apply_plan(before)
    assert [s.step for s in report.steps] == ["make", "switch", "break"]  # b (slot 1) drains last
    assert deployment_name("classify", "classifier", 1) not in serve.status().applications["ipa"].deployments
    r = http.post("/v1/pipelines/classify", json=payloads.image_request())
    assert r.status_code == 200 and r.json()["variants"]["classifier"] == a


def test_serve_autoscaling_plan_is_applied_and_serves(base_url):
    _, plans = control.current_plans()
    before = plans["classify"]
    variant = before.stages["classifier"].variant
    auto = Autoscaling(min_replicas=1, max_replicas=2, target_ongoing_requests=1, upscale_delay_s=1, downscale_delay_s=5)
    plan = Plan(pipeline="classify", policy="serve-autoscaling",
                stages={"classifier": StagePlan(variant=variant, autoscaling=auto)})
    report = control.apply_plan(plan)
    assert [s.step for s in report.steps][0] == "apply"  # same variant: in place
    name = deployment_name("classify", "classifier", 0)
    details = _get_global_client().get_serve_details()["applications"]["ipa"]["deployments"][name]
    config = details["deployment_config"]["autoscaling_config"]
    assert (config["min_replicas"], config["max_replicas"], config["target_ongoing_requests"]) == (1, 2, 1)
    stats = summarize(drive(f"{base_url}/v1/pipelines/classify", clients=6))
    assert stats["failed"] == 0 and stats["requests"] > 0
    running = serve.status().applications["ipa"].deployments[name].replica_states.get("RUNNING", 0)
    assert 1 <= running <= 2
    # back to a fixed count: converges to exactly that
    report = control.apply_plan(before)
    details = _get_global_client().get_serve_details()["applications"]["ipa"]["deployments"][name]
    assert details["deployment_config"].get("autoscaling_config") is None
    assert serve.status().applications["ipa"].deployments[name].replica_states == {
        "RUNNING": before.stages["classifier"].replicas}
    print(f"\nserve autoscaling: {stats['requests']} requests, 0 failed, {running} replica(s) running under load")


def test_arrivals_are_summed_over_ingress_replicas(base_url):
    app = "arrivals2"
    spec = AppSpec(pipelines=(catalog.pipeline("classify"),), limits=LIMITS, ingress_replicas=2)
    control.deploy(spec, name=app, route_prefix=f"/{app}")
    try:
        sent = drive(f"{base_url}/{app}/v1/pipelines/classify", clients=8, duration_s=6)
        assert summarize(sent)["failed"] == 0
        counter = arrivals_actor(app)
        deadline = time.time() + 15
        while time.time() < deadline:  # pushes are once a second, and history holds complete seconds
            if sum(ray.get(counter.history.remote("classify", 60))) >= len(sent):
                break
            time.sleep(0.5)
        assert sum(ray.get(counter.history.remote("classify", 60))) == len(sent)
        shares = ray.get(counter.by_replica.remote("classify"))
        assert len([n for n in shares.values() if n]) == 2, shares  # both replicas took requests
    finally:
        serve.delete(app)
        ray.kill(ray.get_actor(actor_name(app), namespace=NAMESPACE), no_restart=True)

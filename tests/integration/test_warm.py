"""Warm variants on a live app (serve_app.warm): a replica builds its slot's other variants, and a
switch to one of them swaps at once, under load, with no request lost."""

import time

import pytest
import ray
from ray import serve

from loadgen.driver import summarize
from serve_app import control
from serve_app.arrivals import actor_name, arrivals_actor
from serve_app.config import AppSpec
from serve_app.layout import deployment_name
from ipa_energy import RAY_NAMESPACE as NAMESPACE
from tests.integration.conftest import LIMITS
from tests.integration.test_policies import drive
from workloads import catalog

pytestmark = pytest.mark.integration


def test_a_switch_to_a_warm_variant_is_a_swap(base_url):
    app = "warm"
    pipeline = catalog.pipeline("classify")
    spec = AppSpec(pipelines=(pipeline,), limits=LIMITS, ingress_replicas=1)
    assert spec.warm_variants  # the default
    control.deploy(spec, name=app, route_prefix=f"/{app}")
    try:
        plan = control.plan_state(app).plans["classify"]
        running = plan.stages["classifier"].variant
        others = {v.name for v in pipeline.stage("classifier").variants} - {running}
        name = deployment_name("classify", "classifier", 0)
        registry = arrivals_actor(app)
        deadline = time.monotonic() + 120  # the builds run at nice 19 on a host the other tests keep busy
        states = {}
        while time.monotonic() < deadline:
            states = ray.get(registry.replicas.remote([name]))[name]
            if states and all(set(s["warm"]) == others for s in states.values()):
                break
            time.sleep(1)
        assert states and all(set(s["warm"]) == others for s in states.values()), states
        new = sorted(others)[0]
        switched = plan.model_copy(update={"stages": {"classifier": plan.stages["classifier"].model_copy(
            update={"variant": new})}})
        url = f"{base_url}/{app}/v1/pipelines/classify"
        report = control.apply_plan(switched, app_name=app)
        sent = drive(url, clients=4, duration_s=3)
        assert summarize(sent)["failed"] == 0
        assert {r.variants["classifier"] for r in sent if r.status == 200} == {new}
        states = ray.get(registry.replicas.remote([name]))[name]
        for s in states.values():
            assert s["variant"] == new and tuple(s["switches"][-1]) == (new, 0.0)  # swapped, nothing built
            assert running in s["warm"] and new not in s["warm"]  # the variant left stays warm
        back = control.apply_plan(plan, app_name=app)
        assert all(tuple(s["switches"][-1]) == (running, 0.0) for s in ray.get(registry.replicas.remote([name]))[name].values())
        print(f"\nwarm switches: {running} → {new} in {report.seconds:.2f} s, back in {back.seconds:.2f} s")
    finally:
        serve.delete(app)
        ray.kill(ray.get_actor(actor_name(app), namespace=NAMESPACE), no_restart=True)

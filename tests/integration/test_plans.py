"""Plan changes on the running app: make-before-break under load, HTTP control, rollback."""

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import ray
from ray import serve

from ipa_energy.errors import PlanApplyError, PlanRejected, SpecError
from ipa_energy.spec import Plan, StagePlan
from loadgen.driver import closed_loop, summarize
from serve_app import control
from serve_app.layout import deployment_name
from tests.integration.conftest import TOKEN
from workloads import payloads

pytestmark = pytest.mark.integration


def video_plan(classifier: str, batch: int = 1, detector: str = "ssdlite320-mobilenet-v3-large-mini") -> Plan:
    return Plan(pipeline="video", stages={
        "detector": StagePlan(variant=detector),
        "classifier": StagePlan(variant=classifier, batch_size=batch),
    })


def replica_of(http, stage: str) -> str:
    return http.post("/v1/pipelines/video", json=payloads.image_request()).json()["replicas"][stage]


def test_variant_switch_under_8_clients_loses_no_request(base_url, http):
    detector_before = replica_of(http, "detector")
    deadline = time.monotonic() + 300  # a change an earlier test's planner started may still be converging
    while control.plan_state().pending is not None and time.monotonic() < deadline:
        time.sleep(1)
    version_before, plans = control.current_plans()
    old = plans["video"].stages["classifier"].variant
    new = "resnet34-mini" if old != "resnet34-mini" else "resnet18-mini"
    bodies = [payloads.image_request(seed=s) for s in range(4)]
    report, seen = {}, []

    def change():
        time.sleep(3)
        report.update(control.apply_plan(video_plan(new, batch=4)).model_dump())

    def watch():  # what GET /v1/plan says while the change runs
        with httpx.Client(base_url=base_url, timeout=30) as client:
            while changer.is_alive() or not seen:
                seen.append(client.get("/v1/plan").json())
                time.sleep(0.2)

    changer = threading.Thread(target=change)
    watcher = threading.Thread(target=watch)
    changer.start()
    watcher.start()
    url = f"{base_url}/v1/pipelines/video"
    records = asyncio.run(closed_loop(url, lambda i: bodies[i % 4], clients=8, duration_s=25))
    while changer.is_alive():  # starting the new replica can outlast 25 s on 2 busy cores: keep the load on
        records += asyncio.run(closed_loop(url, lambda i: bodies[i % 4], clients=8, duration_s=5))
    records += asyncio.run(closed_loop(url, lambda i: bodies[i % 4], clients=8, duration_s=5))
    changer.join()
    watcher.join()

    # active only once converged: while pending, the old version is shown with the change apart
    pending = [st for st in seen if st["pending"]]
    assert pending and all(st["version"] == version_before for st in pending)
    assert {st["pending"]["plans"]["video"]["stages"]["classifier"]["variant"] for st in pending} == {new}
    assert {st["pending"]["step"] for st in pending} <= {"make", "switch"}
    final = http.get("/v1/plan").json()
    assert final["version"] == version_before + 1 and final["pending"] is None
    stats = summarize(records)
    assert stats["failed"] == 0, [r.error for r in records if r.status != 200][:3]
    assert [s["step"] for s in report["steps"]] == ["make", "switch"]  # one slot, switched in place
    assert report["version"] == version_before + 1
    used = {r.variants["classifier"] for r in records if r.status == 200}  # shed requests reach no stage
    assert used == {old, new}, "load must span the switch"
    # The detector was not part of the change: same replica, not restarted.
    assert replica_of(http, "detector") == detector_before
    assert http.get("/v1/plan").json()["plans"]["video"]["stages"]["classifier"]["batch_size"] == 4
    print(f"\nplan change under 8 clients: {report['seconds']:.1f} s, steps {report['steps']}, "
          f"{stats['requests']} requests, 0 failed, {stats['shed']} shed, p50 {stats['p50_ms']:.0f} ms, p99 {stats['p99_ms']:.0f} ms")


def test_put_plan_needs_the_token_and_a_valid_plan(http):
    plan = video_plan("resnet34-mini", batch=2).model_dump(mode="json")
    assert http.put("/v1/plan", json=plan).status_code == 401
    assert http.put("/v1/plan", json=plan, headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bad = video_plan("resnet999-mini").model_dump(mode="json")
    r = http.put("/v1/plan", json=bad, headers=auth)
    assert r.status_code == 422 and "no variant 'resnet999-mini'" in r.json()["error"]
    assert http.put("/v1/plan", content=b"{", headers=auth).status_code == 422
    r = http.put("/v1/plan", json=plan, headers=auth)
    assert r.status_code == 200, r.text
    assert [s["step"] for s in r.json()["steps"]] == ["apply"]  # batch size only: in place
    assert http.get("/v1/plan").json()["plans"]["video"]["stages"]["classifier"]["batch_size"] == 2
    again = http.put("/v1/plan", json=plan, headers=auth).json()
    assert again["changes"] == [] and again["steps"] == []


def test_a_plan_that_does_not_fit_the_cluster_is_refused_at_once(http):
    version, plans = control.current_plans()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    huge = video_plan("resnet18-mini").model_copy(update={"stages": {
        **video_plan("resnet18-mini").stages,
        "classifier": StagePlan(variant="resnet18-mini", replicas=1000)}})
    t0 = time.monotonic()
    r = http.put("/v1/plan", json=huge.model_dump(mode="json"), headers=auth)
    seconds = time.monotonic() - t0
    assert r.status_code == 422 and "does not fit the cluster" in r.json()["error"], r.text
    assert "CPU" in r.json()["error"] and "short by" in r.json()["error"]
    assert seconds < 1.0, seconds
    with pytest.raises(PlanRejected, match="short by"):
        control.apply_plan(huge)
    assert control.current_plans() == (version, plans)  # nothing changed, nothing pending
    assert http.post("/v1/pipelines/video", json=payloads.image_request()).status_code == 200


def test_unknown_pipeline_plan_is_a_spec_error():
    with pytest.raises(SpecError, match="unknown pipeline"):
        control.apply_plan(Plan(pipeline="ghost", stages={"s": StagePlan(variant="v")}))


def test_a_variant_that_cannot_load_rolls_back(http):
    version, plans = control.current_plans()
    before = http.post("/v1/pipelines/fragile", json=payloads.image_request()).json()["replicas"]["classifier"]
    with pytest.raises(PlanApplyError, match="still on v.*broken-mini did not load"):
        control.apply_plan(Plan(pipeline="fragile", stages={"classifier": StagePlan(variant="broken-mini")}), timeout_s=120)
    assert control.current_plans()[0] == version
    r = http.post("/v1/pipelines/fragile", json=payloads.image_request())
    assert r.status_code == 200 and r.json()["variants"]["classifier"] == plans["fragile"].stages["classifier"].variant
    # the failed switch was tried in place, in the background: the replica kept serving, never restarted
    assert r.json()["replicas"]["classifier"] == before
    # the slot was switched back in place (the replicas that failed to switch were replaced)
    status = serve.status().applications["ipa"].deployments[deployment_name("fragile", "classifier", 0)]
    assert str(status.status.value) == "HEALTHY"


def test_serve_run_cli_serves_the_app(cluster):
    address = ray.get_runtime_context().gcs_address
    cmd = [str(Path(sys.executable).parent / "serve"), "run", "--non-blocking", "--address", address,
           "--name", "cli", "--route-prefix", "/cli", "serve_app:app", "pipelines=classify"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    try:
        assert done.returncode == 0, done.stderr[-2000:]
        with httpx.Client(base_url=cluster, timeout=60) as client:
            r = client.post("/cli/v1/pipelines/classify", json=payloads.image_request())
            assert r.status_code == 200 and r.json()["variants"] == {"classifier": "resnet18-112-mini"}
            assert client.post("/cli/v1/pipelines/classify", content=b"[").status_code == 422
    finally:
        serve.delete("cli")

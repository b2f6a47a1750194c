"""Parts that die under load: nothing the app accepted is lost."""

import asyncio
import threading
import time

import httpx
import pytest
import ray

from ipa_energy.state import RayStore
from loadgen.driver import closed_loop, summarize
from planner.actor import start_planner, stop_planner
from serve_app import control
from tests.integration.conftest import METRICS_PORT
from workloads import payloads

pytestmark = pytest.mark.integration


def serving_replica(http, pipeline: str, stage: str) -> str:
    r = http.post(f"/v1/pipelines/{pipeline}", json=payloads.image_request())
    assert r.status_code == 200, r.text
    return r.json()["replicas"][stage]


def replica_actor(replica_id: str):
    """The Serve replica actor whose id is `replica_id` (named SERVE_REPLICA::app#deployment#id)."""
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].endswith("#" + replica_id):
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise LookupError(f"no actor for replica {replica_id}")


def retry_counts(pipeline: str) -> float:
    """ray_ipa_energy_stage_retries_total of `pipeline`, summed over its series (Prometheus text)."""
    text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("ray_ipa_energy_stage_retries_total{") and f'pipeline="{pipeline}"' in line)


def killed_under_load(base_url: str, actor, duration_s: float, no_restart: bool = True) -> tuple[list, float]:
    """4 closed-loop classify clients for `duration_s`, with `actor` killed 3 s in: (records, kill time)."""
    killed: dict[str, float] = {}

    def kill():
        time.sleep(3)
        killed["at"] = time.time()
        ray.kill(actor, no_restart=no_restart)

    killer = threading.Thread(target=kill)
    killer.start()
    bodies = [payloads.image_request(seed=s) for s in range(4)]
    records = asyncio.run(closed_loop(f"{base_url}/v1/pipelines/classify", lambda i: bodies[i % 4], clients=4,
                                      duration_s=duration_s))
    killer.join()
    return records, killed["at"]


def test_a_stage_replica_killed_under_load_loses_no_request(base_url, http):
    deadline = time.monotonic() + 300  # a change an earlier test's planner started may still be converging
    while control.plan_state().pending is not None and time.monotonic() < deadline:
        time.sleep(1)
    victim = serving_replica(http, "classify", "classifier")
    records, killed_at = killed_under_load(base_url, replica_actor(victim), duration_s=20)
    stats = summarize(records)
    assert stats["failed"] == 0, [(r.status, r.error) for r in records if r.status != 200 and not r.shed][:3]
    answered_after = sorted(r.finished_s for r in records if r.status == 200 and r.sent_s > killed_at)
    assert answered_after, "the app must answer after the kill"
    assert serving_replica(http, "classify", "classifier") != victim  # Serve replaced it
    # the calls in flight on the dead replica were sent again, and counted
    wait_until = time.monotonic() + 30
    while not (retries := retry_counts("classify")):
        assert time.monotonic() < wait_until, "no stage retry was counted"
        time.sleep(1)
    print(f"\nstage replica killed under 4 clients: {stats['requests']} requests, 0 failed, {stats['shed']} shed, "
          f"recovery (kill → first answer to a request sent after it) {answered_after[0] - killed_at:.1f} s, "
          f"p99 {stats['p99_ms']:.0f} ms, {retries:g} stage calls sent again")


def _named(prefix: str, namespace: str | None = None):
    """The first live named actor whose name starts with `prefix` (in `namespace`, if given)."""
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(prefix) and namespace in (None, actor["namespace"]):
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise LookupError(f"no actor named {prefix}…")


def _serve_replica_of(deployment: str):
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if f"#{deployment}#" in actor["name"]:
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise LookupError(f"no replica of {deployment}")


# What dies, and whether Ray brings that same actor back (no_restart=False) or something else
# replaces it (Serve a replica). The energy actor has a test of its own below.
KILLS = {
    "plan controller": (lambda: _serve_replica_of("PlanController"), True),
    "arrivals actor": (lambda: _named("arrivals-ipa"), False),
    "Serve controller": (lambda: _named("SERVE_CONTROLLER_ACTOR", "serve"), False),
}


@pytest.mark.parametrize("part", list(KILLS))
def test_a_control_part_killed_under_load_loses_no_request(base_url, http, part):
    find, no_restart = KILLS[part]
    records, killed_at = killed_under_load(base_url, find(), duration_s=12, no_restart=no_restart)
    stats = summarize(records)
    assert stats["failed"] == 0, [(r.status, r.error) for r in records if r.status != 200 and not r.shed][:3]
    answered_after = sorted(r.finished_s for r in records if r.status == 200 and r.sent_s > killed_at)
    assert answered_after, f"the app must answer after the {part} was killed"
    # it is back (or replaced) and the app's control path works: the plan reads, the planner's inputs too
    deadline = time.monotonic() + 60
    while True:
        try:
            find()
            state = control.plan_state()
            break
        except Exception:
            assert time.monotonic() < deadline, f"{part} did not come back"
            time.sleep(1)
    assert "classify" in state.plans
    # and a plan change still goes through (it waits for every replica's report to the registry)
    plan = state.plans["classify"]
    stage = plan.stages["classifier"]
    other = plan.model_copy(update={"stages": {"classifier": stage.model_copy(
        update={"batch_size": 2 if stage.batch_size != 2 else 1})}})
    for p in (other, plan):
        report = control.apply_plan(p, timeout_s=60)
        assert report.changes, report
    print(f"\n{part} killed under 4 clients: {stats['requests']} requests, 0 failed, {stats['shed']} shed, "
          f"first answer to a request sent after the kill {answered_after[0] - killed_at:.1f} s later")


def test_a_planner_killed_under_load_resumes_its_decision_log(base_url):
    planner = start_planner("ipa", "classify", policy="ipa-energy", interval_s=2.0, predictor="reactive", max_replicas=2)
    try:
        deadline = time.monotonic() + 120
        while len(before := ray.get(planner.decisions.remote(), timeout=60)) < 2:
            assert time.monotonic() < deadline, "the planner made no decision"
            time.sleep(1)
        records, killed_at = killed_under_load(base_url, planner, duration_s=12, no_restart=False)
        deadline = time.monotonic() + 120
        while True:
            after = ray.get(planner.decisions.remote(), timeout=330)
            if any(d["time_s"] > killed_at for d in after):
                break
            assert time.monotonic() < deadline, "the restarted planner made no decision"
            time.sleep(1)
    finally:
        stop_planner("ipa", "classify")
    stats = summarize(records)
    assert stats["failed"] == 0, [(r.status, r.error) for r in records if r.status != 200 and not r.shed][:3]
    times = [d["time_s"] for d in after]
    # every decision made before the kill is still in the log, none twice, and the log goes on
    assert times[:len(before)] == [d["time_s"] for d in before]
    assert times == sorted(set(times)), "a decision was logged twice or out of order"
    assert not RayStore().keys("planner/ipa/classify/"), "a stopped planner's journal is cleared"
    print(f"\nplanner killed under 4 clients: {stats['requests']} requests, 0 failed; {len(before)} decisions before "
          f"the kill, all kept, {sum(t > killed_at for t in times)} made after it by the restarted planner")


def test_energy_totals_go_on_across_an_energy_actor_restart(base_url, http):
    (before,) = http.get("/v1/energy").json()["nodes"]
    records, killed_at = killed_under_load(base_url, _named("energy-node-"), duration_s=12)
    stats = summarize(records)
    assert stats["failed"] == 0, [(r.status, r.error) for r in records if r.status != 200 and not r.shed][:3]
    (after,) = http.get("/v1/energy").json()["nodes"]  # the ingress starts the next actor if no replica has
    assert after["restarts"] == before["restarts"] + 1 and after["start_s"] == before["start_s"]
    # totals since start never go down: the successor went on from the journal
    for device, d in before["devices"].items():
        assert after["devices"][device]["energy_j"] > d["energy_j"], device
    for consumer, j in before["attributed_j"].items():
        assert after["attributed_j"][consumer] >= j, consumer
    assert after["idle_j"] >= before["idle_j"] and after["other_j"] >= before["other_j"]
    assert 0 < after["unmetered_s"] < 30
    # the replicas that served meanwhile are still metered (taken back from the checkpoint)
    assert any(c.get("running") and c.get("pipeline") == "classify" for c in after["consumers"].values()), after["consumers"]
    print(f"\nenergy node actor killed under 4 clients: {stats['requests']} requests, 0 failed; node energy "
          f"{sum(d['energy_j'] for d in before['devices'].values()):.0f} J before → "
          f"{sum(d['energy_j'] for d in after['devices'].values()):.0f} J after, {after['unmetered_s']:.1f} s unmetered")

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
from serve_app.arrivals import arrivals_actor
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


def killed_under_load(base_url: str, actor, duration_s: float, no_restart: bool = True,
                      when=lambda: time.sleep(3)) -> tuple[list, float]:
    """4 closed-loop classify clients for `duration_s`, with `actor` killed once `when()` returns
    (default: 3 s in): (records, kill time)."""
    killed: dict[str, float] = {}

    def kill():
        when()
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
    if not answered_after:  # the load ended first: on a slow host the only replica's replacement takes longer
        # (meanwhile every request is shed at once, which the test above allows); it must come back
        deadline = time.monotonic() + 120
        while http.post("/v1/pipelines/classify", json=payloads.image_request(seed=0)).status_code != 200:
            assert time.monotonic() < deadline, "the app must answer after the kill"
            time.sleep(1)
        answered_after = [time.time()]
    assert serving_replica(http, "classify", "classifier") != victim  # Serve replaced it
    # the calls in flight on the dead replica were sent again, and counted
    wait_until = time.monotonic() + 30
    while not (retries := retry_counts("classify")):
        assert time.monotonic() < wait_until, "no stage retry was counted"
        time.sleep(1)
    print(f"\nstage replica killed under 4 clients: {stats['requests']} requests, 0 failed, {stats['shed']} shed, "
          f"recovery (kill → first answer to a request sent after it) {answered_after[0] - killed_at:.1f} s, "
          f"p99 {stats['p99_ms']:.0f} ms, {retries:g} stage calls sent again")


def test_an_ingress_replica_killed_under_load_fails_at_most_the_requests_in_flight_on_it(base_url, http):
    """Two ingress replicas (the default): the proxy routes new requests to the live one while
    Serve replaces the dead one; only what the dead one held can be lost (docs/faults.md)."""
    victim_name = _replicas_of("Ingress")[0]
    victim = ray.get_actor(victim_name, namespace="serve")
    records, killed_at = killed_under_load(base_url, victim, duration_s=15)
    stats = summarize(records)
    failed = [r for r in records if r.status != 200 and not r.shed]
    in_flight = [r for r in records if r.sent_s <= killed_at < r.finished_s]
    # a request is in flight on the victim until Ray has killed it, a moment after ray.kill returns
    assert all(r.sent_s <= killed_at + KILL_TAKES_S for r in failed), [(r.sent_s - killed_at, r.status, r.error)
                                                                       for r in failed]
    assert len(failed) <= len(in_flight) + 4, (len(failed), len(in_flight))  # 4 clients: one request each
    answered_after = sorted(r.finished_s for r in records if r.status == 200 and r.sent_s > killed_at + KILL_TAKES_S)
    assert answered_after, "the app must answer after the kill"
    deadline = time.monotonic() + 60
    while victim_name in (now := _replicas_of("Ingress")) or len(now) < 2:  # Serve replaced it
        assert time.monotonic() < deadline, "the ingress replica was not replaced"
        time.sleep(1)
    print(f"\ningress replica killed under 4 clients: {stats['requests']} requests, {len(failed)} failed "
          f"({sorted({(r.status, r.error[:60]) for r in failed})}), {len(in_flight)} in flight at the kill; "
          f"first answer to a request sent after it {answered_after[0] - killed_at:.1f} s later")


#: how long after `ray.kill` returns a request may still reach the killed replica (s)
KILL_TAKES_S = 1.0


def _replicas_of(deployment: str) -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if f"#{deployment}#" in a["name"]]


def test_a_stage_replica_killed_in_the_middle_of_a_variant_switch(base_url, http, app_spec):
    plan = control.plan_state().plans["classify"]
    stage = plan.stages["classifier"]
    shape = app_spec.shape("classify", "classifier", stage.variant)
    new = next(v.name for v in app_spec.pipeline("classify").stage("classifier").variants
               if v.name != stage.variant and app_spec.shape("classify", "classifier", v.name) == shape)
    switched = plan.model_copy(update={"stages": {"classifier": stage.model_copy(update={"variant": new})}})
    victim = serving_replica(http, "classify", "classifier")
    (name,) = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith("#" + victim)]
    deployment = name.split("#")[-2]
    outcome: dict = {}

    def switch():
        try:
            outcome["report"] = control.apply_plan(switched, timeout_s=120)
        except Exception as e:
            outcome["error"] = e

    switching = threading.Thread(target=switch)

    def mid_switch():  # the switch started on the victim: asked for the new variant, not serving it yet
        time.sleep(2)
        switching.start()
        registry = arrivals_actor("ipa")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = ray.get(registry.replicas.remote([deployment]))[deployment].get(victim, {})
            if state.get("wanted") == new and state.get("variant") != new:
                outcome["caught"] = state
                return
            time.sleep(0.02)

    try:
        records, killed_at = killed_under_load(base_url, replica_actor(victim), duration_s=20, when=mid_switch)
        stats = summarize(records)
        assert "caught" in outcome, "the kill did not come in the middle of the switch"
        assert stats["failed"] == 0, [(r.status, r.error) for r in records if r.status != 200 and not r.shed][:3]
        assert "error" not in outcome, outcome.get("error")
        assert outcome["report"].changes  # the change completed on the replica that replaced the victim
        assert control.plan_state().plans["classify"].stages["classifier"].variant == new
        assert serving_replica(http, "classify", "classifier") != victim
    finally:
        if switching.ident is not None:
            switching.join()
        control.apply_plan(plan, timeout_s=120)  # the plan the other tests expect
    print(f"\nstage replica killed while switching {stage.variant} → {new}: {stats['requests']} requests, 0 failed; "
          f"the change completed in {outcome['report'].seconds:.1f} s")


def _named(prefix: str, namespace: str | None = None):
    """The first live named actor whose name starts with `prefix` (in `namespace`, if given)."""
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(prefix) and namespace in (None, actor["namespace"]):
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise LookupError(f"no actor named {prefix}…")


def _serve_replica_of(deployment: str):
    for name in _replicas_of(deployment):
        return ray.get_actor(name, namespace="serve")
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
        deadline = time.monotonic() + 180
        while True:
            try:
                after = ray.get(planner.decisions.remote(), timeout=330)
            except ray.exceptions.ActorUnavailableError:  # still restarting (slow on a busy host)
                after = []
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
          f"{sum(d['energy_j'] for d in after['devices'].values()):.0f} J after "
          f"({'+'.join(sorted({d['method'] for d in after['devices'].values()}))}, since the node's energy service "
          f"started), {after['unmetered_s']:.1f} s unmetered")

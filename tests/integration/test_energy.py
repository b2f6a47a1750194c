"""Energy telemetry of the running app: labelled estimates here, attribution, export."""

import time

import httpx
import pytest

from tests.integration.conftest import METRICS_PORT
from workloads import payloads

pytestmark = pytest.mark.integration


def consumers_by_pipeline(energy: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for node in energy["nodes"]:
        for consumer, joules in node["attributed_j"].items():
            pipeline = node["consumers"].get(consumer, {}).get("pipeline")
            if pipeline:
                out[pipeline] = out.get(pipeline, 0.0) + joules
    return out


def test_busy_replica_is_charged_idle_replica_is_not(http):
    before = consumers_by_pipeline(http.get("/v1/energy").json())
    body = payloads.image_request(seed=1)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:  # keep the classify replica busy; llm stays idle
        assert http.post("/v1/pipelines/classify", json=body).status_code == 200
    time.sleep(1.5)  # one more sampling interval
    after = consumers_by_pipeline(http.get("/v1/energy").json())
    busy = after["classify"] - before.get("classify", 0.0)
    idle = after.get("llm", 0.0) - before.get("llm", 0.0)
    assert busy > 0.5, after
    assert idle < 0.1 * busy, (busy, idle)


def test_every_figure_is_labelled_tdp_estimate_here(http):
    body = payloads.image_request(seed=2)
    for _ in range(30):  # until the replica has its first rates (refreshed every 2 s)
        r = http.post("/v1/pipelines/classify", json=body).json()
        if r["energy"] is not None:
            break
        time.sleep(0.3)
    energy = r["energy"]
    assert energy["method"] == "tdp-estimate" and energy["j"] > 0 and energy["carbon_g"] > 0
    assert energy["stages"]["classifier"]["method"] == "tdp-estimate"

    report = http.get("/v1/energy").json()
    assert report["unit"] == "J" and report["carbon"]["g_per_kwh"] > 0
    classify = report["pipelines"]["classify"]
    assert classify["methods"] == ["tdp-estimate"] and classify["j_per_request"] > 0
    (node,) = report["nodes"]
    assert {d["method"] for d in node["devices"].values()} == {"tdp-estimate"}
    assert node["overhead_cpu_percent_of_node"] < 5
    assert all(d["measured"] is False for d in node["devices"].values())
    total = sum(node["attributed_j"].values()) + node["other_j"] + node["idle_j"]
    measured = sum(d["energy_j"] for d in node["devices"].values())
    assert total == pytest.approx(measured, rel=1e-6)  # the same span: since the actor started


def test_prometheus_endpoint_has_the_energy_series():
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
        if "ipa_energy_node_power_watts" in text and "ipa_energy_request_joules" in text:
            break
        assert time.monotonic() < deadline, "energy series missing from the metrics endpoint"
        time.sleep(1)
    assert 'method="tdp-estimate"' in text

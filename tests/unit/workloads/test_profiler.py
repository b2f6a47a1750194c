"""The offline profiler (profiler, steady_state, payloads.payload_for) and profiles at rest (profile_store)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from datetime import datetime, timezone

import numpy as np
import pytest

from energy.meters.base import Meter, Sample
from ipa_energy.errors import SpecError
from ipa_energy.spec import Profile, Resources
from workloads import catalog, profile_store, profiler, steady_state
from workloads.payloads import payload_for
from workloads.profile_store import ProfileStore, fit_latency, format_table, hardware_id, predict_profile
from workloads.profiler import profile_missing, profile_variant

POWER_W, IDLE_W = 40.0, 10.0
FAST = dict(warmup_s=0.2, window_s=0.5, drain_s=0.05, min_batches=5, idle_s=0.2)


class FakeMeter(Meter):
    """Cumulative energy growing at a fixed power; optionally knows its idle power."""

    def __init__(self, power_w: float = POWER_W, idle_w: float | None = IDLE_W, method: str = "rapl-sysfs"):
        self.power_w, self.method, self.t0 = power_w, method, time.time()
        self.samples = 0
        if idle_w is not None:
            self.idle_power_w = lambda: {"cpu:0": idle_w}

    def devices(self) -> list[str]:
        return ["cpu:0"]

    def sample(self) -> Sample:
        self.samples += 1
        now = time.time()
        return Sample(time_s=now, energy_j={"cpu:0": self.power_w * (now - self.t0)}, method=self.method)


def resnet18():
    """The cheapest classifier of the mini catalog (resnet18 at 112 px)."""
    (v,) = [v for v in catalog.pipeline("classify").stage("classifier").variants if v.name.startswith("resnet18")]
    return v


def first_variant(task: str):
    return next(v for p in catalog.pipelines().values() for s in p.stages for v in s.variants if v.task == task)


@pytest.fixture(scope="module")
def measured() -> list[Profile]:
    meter = FakeMeter()
    profiles = profile_variant(resnet18(), [1, 2, resnet18().max_batch_size + 1], meters=[meter], hardware="cpu-test-1c", **FAST)
    assert meter.samples > 2  # sampled between batches too, not only at the window's edges
    return profiles


# -- hardware id ---------------------------------------------------------------------------------


def test_hardware_id_format_is_stable():
    hw = hardware_id()
    assert re.fullmatch(r"cpu-[a-z0-9]+(-[a-z0-9]+)*-\d+c", hw), hw
    assert hw.endswith(f"-{os.cpu_count()}c") and hw == hardware_id("cpu")


def test_hardware_id_slugs_cpu_and_gpu_names(monkeypatch):
    import energy.meters.tdp_tables

    monkeypatch.setattr(energy.meters.tdp_tables, "host_cpu_model", lambda: "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz")
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert hardware_id("cpu") == "cpu-intel-xeon-platinum-8480plus-16c"
    monkeypatch.setattr(profile_store, "_gpu_name", lambda i: "NVIDIA H200")
    assert hardware_id("cuda:0") == "gpu-nvidia-h200"
    with pytest.raises(ValueError):
        hardware_id("tpu")


# -- payloads --------------------------------------------------------------------------------------


def test_payloads_follow_the_variants_task_and_resolution():
    classify = resnet18()
    size = classify.build_args["input_size"]
    assert payload_for(classify, 0)["image"].shape == (size, size, 3)
    assert payload_for(classify, 0, image_size=64)["image"].shape == (64, 64, 3)
    assert payload_for(first_variant("detect"), 0)["image"].shape == (320, 320, 3)
    crops = payload_for(first_variant("classify-crops"), 3)
    assert crops["image"].shape == (320, 320, 3) and len(crops["detections"]) == 4
    for det in crops["detections"]:
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 320
    gen = payload_for(first_variant("generate"), 1)
    assert len(gen["prompt"].split()) == 32 and gen["max_new_tokens"] == 16
    assert payload_for(first_variant("generate"), 1, max_new_tokens=4)["max_new_tokens"] == 4
    np.testing.assert_array_equal(payload_for(classify, 5)["image"], payload_for(classify, 5)["image"])


def test_payloads_for_segmentation_and_unknown_tasks():
    seg = resnet18().model_copy(update={"task": "segment", "build_args": {"input_size": 256}})
    body = payload_for(seg, 0)
    assert body["image"].shape == (256, 256, 3) and body["prompts"]["boxes"] == []
    (x, y, label), = body["prompts"]["points"]
    assert 0 <= x < 256 and 0 <= y < 256 and label == 1
    seg_dets = payload_for(seg.model_copy(update={"task": "segment-detections"}), 0)
    assert len(seg_dets["detections"]) == 4 and seg_dets["image"].shape == (256, 256, 3)
    with pytest.raises(SpecError, match="no profiling payload"):
        payload_for(resnet18().model_copy(update={"task": "translate"}), 0)


def test_crop_payloads_run_through_the_real_crop_classifier():
    import torch

    from workloads.tasks import build_runner

    variant = first_variant("classify-crops")
    with torch.inference_mode():
        out = build_runner(variant)([payload_for(variant, s) for s in range(2)])
    assert [len(o["crop_labels"]) for o in out] == [4, 4]


@pytest.mark.parametrize("task", ["segment", "segment-detections"])
def test_sam_payloads_run_through_the_real_segmenter(task):
    import torch

    from workloads.tasks import build_runner

    try:
        variant = first_variant(task)
    except StopIteration:
        pytest.skip(f"no {task} variant in the catalog")
    body = payload_for(variant, 0)
    size = variant.build_args["img_size"]
    assert body["image"].shape == (size, size, 3)
    with torch.inference_mode():
        (out,) = build_runner(variant)([body])
    assert len(out["masks"]) == (1 if task == "segment" else 4)


# -- profiling -------------------------------------------------------------------------------------


def test_profiles_are_valid_and_sane(measured):
    assert [p.batch_size for p in measured] == [1, 2]  # above max_batch_size: skipped
    for p in measured:
        p = Profile.model_validate_json(p.model_dump_json())
        assert p.variant == resnet18().name and p.hardware == "cpu-test-1c"
        assert p.weights == "random" and p.energy_method == "rapl-sysfs"
        assert p.resources == resnet18().resources
        assert 0 < p.latency_p50_ms <= p.latency_p99_ms < 2000
        assert p.window_s >= FAST["window_s"]
        assert (datetime.now(timezone.utc) - p.measured_at).total_seconds() < 60
        # saturated single replica: throughput ≈ batch / batch latency
        assert p.throughput_rps == pytest.approx(p.batch_size / (p.latency_p50_ms / 1000), rel=0.5)
        # requests in the window are whole batches, at least 5 of them
        requests = p.throughput_rps * p.window_s
        assert requests == pytest.approx(round(requests)) and round(requests) % p.batch_size == 0
        assert round(requests) >= 5 * p.batch_size


def test_profiles_record_what_a_request_and_a_replica_consume(measured):
    for p in measured:
        assert p.demand == "measured" and p.gpu_busy_s_per_request is None and p.gpu_memory_mb is None
        # one torch thread, busy for the whole batch: ≈ 1 core-second per second of batch time
        # (process CPU time, so meter sampling and Python overhead count too)
        assert 0.5 < p.cpu_s_per_request * p.throughput_rps < 1.6, (p.cpu_s_per_request, p.throughput_rps)
    cold, rss = {p.cold_start_s for p in measured}, {p.memory_mb_per_replica for p in measured}
    assert len(cold) == len(rss) == 1, "one replica's start and memory, whatever the batch size"
    # a fresh interpreter imports torch and builds the model: seconds, not milliseconds
    assert 0.5 < cold.pop() < 300 and rss.pop() > 50


def test_dynamic_energy_is_window_energy_minus_idle(measured):
    for p in measured:
        requests = round(p.throughput_rps * p.window_s)
        expected = (POWER_W - IDLE_W) * p.window_s / requests
        assert p.energy_per_request_j == pytest.approx(expected, rel=0.05)
        # idle of the allocation: node idle × num_cpus / os.cpu_count()
        assert p.idle_power_w == pytest.approx(IDLE_W * 0.5 / os.cpu_count())


def test_idle_is_measured_when_the_meter_does_not_know_it():
    # A meter without idle_power_w(): idle is measured before profiling (sleep + sample). At a
    # constant power, idle equals load, so no dynamic energy is left.
    meter = FakeMeter(idle_w=None)
    idle, source = steady_state.node_idle_power([meter], idle_s=0.1)
    assert idle["cpu:0"] == pytest.approx(POWER_W, rel=1e-6) and source == {"cpu:0": "measured"}
    calls = []
    (p,) = profile_variant(resnet18(), [1], meters=[meter], hardware="cpu-test-1c",
                           runner=lambda batch: calls.append(len(batch)) or [{}] * len(batch),
                           **{**FAST, "warmup_s": 0.05, "window_s": 0.1})
    assert p.energy_per_request_j == pytest.approx(0.0, abs=1e-3)
    assert p.idle_power_w == pytest.approx(POWER_W * 0.5 / os.cpu_count(), rel=1e-3)
    assert len(calls) >= 6 and set(calls) == {1}


def test_energy_method_is_honest_about_estimates():
    assert steady_state.energy_method([FakeMeter(method="zeus-rapl")], None) == "zeus-rapl"
    mixed = [FakeMeter(method="rapl-sysfs"), FakeMeter(method="tdp-estimate")]
    assert steady_state.energy_method(mixed, None) == "tdp-estimate"


def test_num_threads_follow_the_replica_and_are_restored():
    import torch

    seen = []
    before = torch.get_num_threads()
    variant = resnet18().model_copy(update={"resources": Resources(num_cpus=2)})
    profile_variant(variant, [1], meters=[FakeMeter()], hardware="cpu-test-1c",
                    runner=lambda b: seen.append(torch.get_num_threads()) or [{}] * len(b),
                    **{**FAST, "warmup_s": 0.0, "window_s": 0.02, "idle_s": 0.0})
    assert set(seen) == {2} and torch.get_num_threads() == before


def test_device_must_match_resources():
    with pytest.raises(ValueError, match="does not match"):
        profile_variant(resnet18(), [1], meters=[FakeMeter()], device="cuda:0", hardware="gpu-x")


# -- latency fit -----------------------------------------------------------------------------------


def _synthetic(batches, a=0.5, c=3.0, d=10.0, energy=lambda b: 2.0 / b) -> list[Profile]:
    out = []
    for b in batches:
        lat = a * b * b + c * b + d
        out.append(Profile(variant="v", batch_size=b, hardware="cpu-test-1c", resources=Resources(),
                           latency_p50_ms=lat, latency_p99_ms=1.5 * lat, throughput_rps=b / lat * 1000,
                           energy_per_request_j=energy(b), idle_power_w=1.0, energy_method="rapl-sysfs",
                           window_s=5.0 + b, weights="random", measured_at=datetime.now(timezone.utc)))
    return out


def test_quadratic_fit_is_exact_on_quadratic_data():
    profiles = _synthetic([1, 2, 4, 8])
    assert fit_latency(profiles) == pytest.approx((0.5, 3.0, 10.0))
    assert fit_latency(profiles, "p99") == pytest.approx((0.75, 4.5, 15.0))
    assert fit_latency(_synthetic([2, 4])) == pytest.approx((0.0, 6.0, 6.0))  # two points: a line
    assert fit_latency(_synthetic([4])) == pytest.approx((0.0, 0.0, 30.0))


def test_predict_profile_interpolates_and_marks_fitted():
    profiles = _synthetic([1, 2, 4, 8])
    same, fitted = predict_profile(profiles, 4)
    assert not fitted and same == profiles[2]
    p, fitted = predict_profile(profiles, 3)
    assert fitted and isinstance(p, Profile) and p.batch_size == 3
    assert p.latency_p50_ms == pytest.approx(0.5 * 9 + 9 + 10)
    assert p.latency_p99_ms == pytest.approx(1.5 * 23.5)
    assert p.throughput_rps == pytest.approx(3 / 23.5 * 1000)
    assert p.energy_per_request_j == pytest.approx((1.0 + 0.5) / 2)  # linear between b=2 and b=4
    assert p.window_s == profiles[1].window_s  # nearest measured (tie 2 vs 4 → the smaller)
    big, fitted = predict_profile(profiles, 16)
    assert fitted and big.latency_p50_ms == pytest.approx(0.5 * 256 + 48 + 10)
    assert big.energy_per_request_j == pytest.approx(profiles[-1].energy_per_request_j)  # clamped
    assert big.window_s == profiles[-1].window_s


def test_predict_profile_interpolates_the_demand_and_keeps_replica_figures():
    profiles = [p.model_copy(update={"cpu_s_per_request": 0.1 / p.batch_size, "memory_mb_per_replica": 300.0 + p.batch_size,
                                     "cold_start_s": 4.0, "demand": "measured"}) for p in _synthetic([1, 2, 4, 8])]
    p, fitted = predict_profile(profiles, 3)
    assert fitted and p.cpu_s_per_request == pytest.approx((0.05 + 0.025) / 2)  # linear between b=2 and b=4
    assert p.memory_mb_per_replica == 302.0 and p.cold_start_s == 4.0  # of the nearest measured size (tie → the smaller)
    big, _ = predict_profile(profiles, 16)
    assert big.cpu_s_per_request == pytest.approx(0.1 / 8)  # clamped, never extrapolated
    unknown, _ = predict_profile(_synthetic([1, 2, 4, 8]), 3)
    assert unknown.cpu_s_per_request is None  # not measured: stays unknown


def test_schema_1_files_are_migrated_with_derived_demand(tmp_path, caplog):
    old = [p.model_dump(mode="json", exclude={"cpu_s_per_request", "gpu_busy_s_per_request", "gpu_memory_mb",
                                             "memory_mb_per_replica", "cold_start_s", "demand"})
           for p in _synthetic([1, 2]) for p in [p.model_copy(update={"hardware": "cpu-old-2c"})]]
    (tmp_path / "cpu-old-2c.json").write_text(json.dumps({"hardware": "cpu-old-2c", "schema_version": 1, "profiles": old}))
    store = ProfileStore(tmp_path, hardware="cpu-old-2c")
    with caplog.at_level("WARNING"):
        loaded = store.load()
    assert "schema 1" in caplog.text and "ipa-energy profile --force" in caplog.text
    for p in loaded:
        threads = max(1, int(p.resources.num_cpus))
        assert p.demand == "derived" and p.cpu_s_per_request == pytest.approx(threads / p.throughput_rps)
        assert p.memory_mb_per_replica is None and p.cold_start_s is None
    store.put(loaded[:1])  # writing goes out in the current schema, migrated rows included
    assert json.loads((tmp_path / "cpu-old-2c.json").read_text())["schema_version"] == 2
    (tmp_path / "cpu-new-2c.json").write_text(json.dumps({"hardware": "cpu-new-2c", "schema_version": 7, "profiles": []}))
    with pytest.raises(ValueError, match="schema_version 7"):
        store.load("cpu-new-2c")


def test_fit_refuses_mixed_series():
    mixed = _synthetic([1, 2]) + [_synthetic([4])[0].model_copy(update={"variant": "w"})]
    with pytest.raises(ValueError, match="mix"):
        fit_latency(mixed)


# -- storage ---------------------------------------------------------------------------------------


def test_store_round_trip_merges_and_replaces(tmp_path, measured):
    store = ProfileStore(tmp_path, hardware="cpu-test-1c")
    assert store.load_all() == [] and store.get(resnet18().name, 1) is None
    store.put(measured)
    doc = json.loads((tmp_path / "cpu-test-1c.json").read_text())
    assert doc["hardware"] == "cpu-test-1c" and doc["schema_version"] == 2 and len(doc["profiles"]) == 2
    assert store.get(resnet18(), 1) == measured[0] and store.has(resnet18().name, 2)
    newer = measured[0].model_copy(update={"latency_p50_ms": 1.0, "latency_p99_ms": 1.0})
    other_hw = measured[1].model_copy(update={"hardware": "gpu-test"})
    store.put([newer, other_hw])
    assert store.get(resnet18().name, 1).latency_p50_ms == 1.0 and len(store.load()) == 2
    assert store.has(resnet18().name, 2, hardware="gpu-test") and len(store.load_all()) == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_profile_missing_is_idempotent_and_force_remeasures(tmp_path, monkeypatch):
    built = []

    def fake_build(variant):
        built.append(variant.name)
        return lambda batch: [{"labels": []} for _ in batch]

    monkeypatch.setattr(profiler, "build_runner", fake_build)
    store = ProfileStore(tmp_path, hardware="cpu-test-1c")
    events = []
    kw = dict(meters=[FakeMeter()], warmup_s=0.0, window_s=0.02, drain_s=0.0, idle_s=0.0, cold_start=False)
    first = profile_missing([resnet18()], [1, 2, resnet18().max_batch_size + 1], store, progress=events.append, **kw)
    assert [p.batch_size for p in first] == [1, 2] and built == [resnet18().name]
    assert [(e.batch_size, e.status) for e in events] == [(resnet18().max_batch_size + 1, "too-large"), (1, "measured"), (2, "measured")]
    assert [e.done for e in events] == [1, 2, 3] and {e.total for e in events} == {3}
    events.clear()
    assert profile_missing([resnet18()], [1, 2], store, progress=events.append, **kw) == []
    assert built == [resnet18().name] and {e.status for e in events} == {"exists"}
    again = profile_missing([resnet18()], [2], store, force=True, **kw)
    assert len(again) == 1 and built == [resnet18().name] * 2
    assert store.get(resnet18().name, 2) == again[0]


def test_concurrent_puts_leave_a_valid_file(tmp_path):
    store = ProfileStore(tmp_path, hardware="cpu-test-1c")
    profiles = _synthetic([1, 2, 4, 8])
    threads = [threading.Thread(target=store.put, args=([p],)) for p in profiles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= len(store.load()) <= 4  # last writer wins, but the file always parses


# -- table -----------------------------------------------------------------------------------------


def test_format_table_has_every_column(measured):
    from rich.console import Console

    table = format_table(measured)
    assert [c.header for c in table.columns] == ["variant", "batch", "p50 ms", "p99 ms", "req/s", "J/request",
                                                 "idle W", "method", "weights", "window s"]
    assert table.row_count == 2
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert resnet18().name in text and "rapl-sysfs" in text

"""Loading a run folder and its headline figures, checked by hand on the synthetic experiment."""

import json

import pytest

from experiments.schema import EnergyWindow, ReplicaSample, RunSummary
from experiments.summary import (
    IncompleteRunError, RunFormatError, energy_coverage, load_run, summarize_run, time_weighted_cost,
    window_energy, write_summary,
)
from tests.fixtures.make_synthetic import T0, make_synthetic
from tests.unit.experiments.conftest import SYNTHETIC


def _window(start, end, joules, node="n", method="tdp-estimate"):
    return EnergyWindow(node_id=node, start_s=T0 + start, end_s=T0 + end, method=method, energy_j={"cpu:0": joules})


def _set_status(run_dir, status):
    meta = json.loads((run_dir / "run.json").read_text())
    meta["status"] = status
    (run_dir / "run.json").write_text(json.dumps(meta))


def test_fixture_is_what_the_generator_writes(tmp_path):
    made = make_synthetic(tmp_path / "synthetic")
    files = sorted(p.relative_to(SYNTHETIC) for p in SYNTHETIC.rglob("*") if p.is_file() and p.name != "summary.json")
    assert files == sorted(p.relative_to(made) for p in made.rglob("*") if p.is_file())
    for f in files:
        assert (made / f).read_bytes() == (SYNTHETIC / f).read_bytes(), f"regenerate: tests/fixtures/make_synthetic.py ({f})"


def test_ipa_run_figures_by_hand(synthetic):
    s = summarize_run(load_run(synthetic / "ipa"))
    assert (s.requests, s.failed, s.duration_s) == (10, 1, 20.0)
    assert s.throughput_rps == pytest.approx(9 / 20)
    assert s.p50_ms == pytest.approx(250.0)  # median of 9 answered
    assert s.p99_ms == pytest.approx(600 + 0.92 * 400)  # numpy linear: index 0.99 × 8 = 7.92
    assert s.slo_attainment == pytest.approx(7 / 10)  # 7 answered ≤ 500 ms of 10 sent
    assert s.accuracy == pytest.approx((5 * 0.5 * 0.7 + 4 * 0.8 * 0.9) / 9)
    assert s.cost_units == pytest.approx(1.5)  # 1.0 for 10 s, 2.0 for 10 s; the 4.0 before t0 doesn't count
    assert s.j_per_request == pytest.approx(5.5 / 8) and s.j_per_request_method == "tdp-estimate"
    assert s.energy_j == pytest.approx(100 * 2 / 5 + 3 * 60 + 40 * 3 / 5)  # both straddling windows pro rata
    assert s.mean_power_w == pytest.approx(244 / 20)
    assert s.carbon_g == pytest.approx(244 * 400 * 1.5 / 3.6e6)
    assert (s.energy_method, s.plan_changes, s.weights) == ("tdp-estimate", 2, "random")
    assert s.p99_prediction_error == pytest.approx(0.2) and s.p99_predictions == 2 * len(load_run(synthetic / "ipa").decisions)


def test_ipa_energy_run(synthetic):
    s = summarize_run(load_run(synthetic / "ipa-energy"))
    assert (s.p50_ms, s.p99_ms, s.slo_attainment, s.failed) == (300.0, 300.0, 1.0, 0)
    assert s.accuracy == pytest.approx(0.45) and s.j_per_request == pytest.approx(0.4)
    assert s.energy_j == pytest.approx(160.0) and s.plan_changes == 1


def test_window_energy_clips_straddling_and_counts_overlap_once():
    assert window_energy([_window(-3, 2, 100)], T0, T0 + 20) == pytest.approx(40)
    assert window_energy([_window(18, 23, 50)], T0, T0 + 20) == pytest.approx(20)
    # a node bracketing windows by its samples can overlap them: [0, 10] and [8, 12] share [8, 10]
    assert window_energy([_window(0, 10, 100), _window(8, 12, 40)], T0, T0 + 20) == pytest.approx(100 + 20)
    # other nodes and other meters add up
    two = [_window(0, 10, 100), _window(0, 10, 30, node="m"), _window(0, 10, 7, method="zeus-nvml")]
    assert window_energy(two, T0, T0 + 10) == pytest.approx(137)
    assert window_energy([_window(30, 40, 5)], T0, T0 + 20) is None


def test_time_weighted_cost():
    samples = [ReplicaSample(time_s=T0 + t, replicas={}, cost_units=c) for t, c in ((-5, 4), (5, 1), (15, 3))]
    assert time_weighted_cost(samples, T0, T0 + 20) == pytest.approx((4 * 5 + 1 * 10 + 3 * 5) / 20)
    assert time_weighted_cost([], T0, T0 + 20) is None


def test_energy_coverage(synthetic):
    run = load_run(synthetic / "ipa")
    assert energy_coverage(run) == pytest.approx(1.0)
    run.energy = [_window(0, 5, 10)]
    assert energy_coverage(run) == pytest.approx(0.25)


def test_malformed_rows_name_file_and_line(synthetic):
    requests = synthetic / "ipa" / "requests.jsonl"
    good = requests.read_text()
    requests.write_text(good + '{"sent_s": 1, "finished_s": 2, "latency_ms": "fast", "status": 200}\n')
    with pytest.raises(RunFormatError, match=r"requests\.jsonl:11: latency_ms: .*number"):
        load_run(synthetic / "ipa")
    requests.write_text(good + "{not json\n")
    with pytest.raises(RunFormatError, match=r"requests\.jsonl:11: not JSON"):
        load_run(synthetic / "ipa")
    decisions = synthetic / "ipa" / "decisions.jsonl"
    decisions.write_text('{"time_s": 1}\n')
    requests.write_text(good)
    with pytest.raises(RunFormatError, match=r"decisions\.jsonl:1: .*Field required"):
        load_run(synthetic / "ipa")


def test_missing_optional_files_and_empty_run(synthetic):
    run_dir = synthetic / "ipa"
    for name in ("decisions.jsonl", "energy.jsonl", "replicas.jsonl"):
        (run_dir / name).unlink()
    (run_dir / "requests.jsonl").write_text("")
    run = load_run(run_dir)
    assert run.missing == ["decisions.jsonl", "energy.jsonl", "replicas.jsonl"]
    s = summarize_run(run)
    assert (s.requests, s.throughput_rps, s.slo_attainment, s.plan_changes) == (0, 0.0, None, 0)
    assert s.p50_ms is s.accuracy is s.cost_units is s.j_per_request is s.energy_j is s.carbon_g is None


def test_partial_runs_refused_unless_accepted(synthetic):
    run_dir = synthetic / "ipa"
    _set_status(run_dir, "running")
    with pytest.raises(IncompleteRunError, match="status is 'running'"):
        load_run(run_dir)
    with (run_dir / "requests.jsonl").open("a") as f:
        f.write('{"sent_s": 1000030.0, "fini')  # the writer stopped mid-line
    assert len(load_run(run_dir, allow_partial=True).requests) == 10


def test_write_summary(synthetic):
    path = write_summary(synthetic / "ipa")
    assert path == synthetic / "ipa" / "summary.json"
    assert RunSummary.model_validate_json(path.read_text()).energy_j == pytest.approx(244.0)


def test_shed_requests_count_apart_and_system_energy_leaves_the_load_generator_out(synthetic):
    run = load_run(synthetic / "ipa-energy")
    before = summarize_run(run)
    first = run.requests[0]
    run.requests.append(first.model_copy(update={"status": 503, "shed": True, "latency_ms": 3.0}))
    run.requests.append(first.model_copy(update={"status": 503, "error": "stage failed", "latency_ms": 3.0}))
    loadgen = EnergyWindow(node_id="n", start_s=T0, end_s=T0 + 20, method="tdp-estimate", energy_j={"cpu:0": 50.0},
                           consumers_j={"loadgen:123": 30.0, "classify.s.v#1": 15.0}, other_j=5.0)
    run.energy.append(loadgen)
    s = summarize_run(run)
    assert (s.requests, s.shed, s.failed) == (before.requests + 2, 1, before.failed + 1)
    assert s.slo_attainment == pytest.approx(before.slo_attainment * before.requests / s.requests)  # shed = a miss
    assert s.energy_j == pytest.approx(before.energy_j + 50) and s.loadgen_energy_j == pytest.approx(30)
    answered = sum(r.status == 200 for r in run.requests)
    assert s.system_j_per_request == pytest.approx((s.energy_j - 30) / answered)
    assert s.j_per_request == before.j_per_request  # dynamic J/request: answered requests only

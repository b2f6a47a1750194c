"""`ipa-energy simulate` end to end: the real planner on the simulated clock, the experiments'
schema on disk, the report reading it; no Ray."""

import json

import numpy as np
import pytest

from cli.main import main
from experiments.summary import load_run, summarize_run
from ipa_energy.energy import is_measured, is_simulated
from loadgen import traces

ARGS = ["simulate", "--pipeline", "classify", "--policies", "ipa,ipa-energy,static-max-accuracy", "--trace", "bursty",
        "--offset", "340", "--seconds", "90", "--rate-factor", "0.3", "--drain", "20"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main([*ARGS, "--out", str(out), "--name", "s", "--report"]) == 0
    return out / "s"


def test_every_policy_writes_a_complete_run_the_report_reads(simulated):
    trace = traces.parse_trace("bursty", 90, rate_factor=0.3, offset_s=340)
    scheduled = int(traces.counts(traces.rates(trace)).sum())
    for policy in ("ipa", "ipa-energy", "static-max-accuracy"):
        run = load_run(simulated / policy)
        assert run.meta.status == "complete" and any("simulated" in n for n in run.meta.notes)
        assert len(run.requests) == scheduled  # every request sent is in the record, answered or not
        s = json.loads((simulated / policy / "summary.json").read_text())
        assert s == json.loads(summarize_run(run).model_dump_json())
        assert is_simulated(s["energy_method"]) and is_simulated(s["j_per_request_method"])
        assert not is_measured(s["energy_method"])
        assert s["energy_j"] > 0 and s["j_per_request"] > 0 and s["system_j_per_request"] > s["j_per_request"]
        assert s["energy_coverage"] == pytest.approx(1.0, abs=0.05)
    report = (simulated / "report" / "report.md").read_text()
    assert "Simulated" in report


def test_the_planner_policies_run_the_real_loop(simulated):
    for policy in ("ipa", "ipa-energy"):
        run = load_run(simulated / policy)
        assert len(run.decisions) >= 8  # every 10 s of the 90 s window and the drain, at least
        assert all(d.policy == policy and is_simulated(d.energy_method) for d in run.decisions)
        assert all(d.corrections for d in run.decisions[1:])  # the closed loop saw the replicas' timings
    static = load_run(simulated / "static-max-accuracy")
    assert static.decisions == [] and len({r.plan_version for r in static.requests}) == 1


def test_a_rerun_keeps_complete_runs_and_redoes_an_interrupted_one(simulated, tmp_path):
    import shutil

    copy = tmp_path / "s"
    shutil.copytree(simulated, copy)
    meta = json.loads((copy / "ipa" / "run.json").read_text())
    meta["status"] = "running"  # as a simulation killed mid-run leaves it
    (copy / "ipa" / "run.json").write_text(json.dumps(meta))
    before = (copy / "ipa-energy" / "run.json").read_text()
    assert main([*ARGS, "--out", str(tmp_path), "--name", "s"]) == 0
    assert (copy / "ipa-energy" / "run.json").read_text() == before  # complete: kept
    assert load_run(copy / "ipa").meta.status == "complete"


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "cluster.yaml"
    bad.write_text("available_node_types: {n: {resources: {CPU: 2}}}\n")
    assert main([*ARGS, "--out", str(tmp_path), "--cluster", str(bad)]) == 2
    assert "resources.CPU and resources.memory" in capsys.readouterr().err
    assert main(["simulate", "--pipeline", "classify", "--policies", "nope", "--out", str(tmp_path)]) == 2


def test_scale_mode_over_hours_writes_counted_rows_and_a_report_over_days(tmp_path):
    # 7 h of a day-shaped trace (a CSV) in scale mode: rows per 10 minutes; a planner policy and a static one
    seconds = 7 * 3600
    rates = 6 + 4 * np.sin(np.arange(seconds) / 3600.0)
    csv = tmp_path / "day.csv"
    csv.write_text("second,rps\n" + "".join(f"{i},{r:.3f}\n" for i, r in enumerate(rates)))
    args = ["simulate", "--pipeline", "classify", "--policies", "ipa-energy,static-min-energy", "--trace", str(csv),
            "--aggregate", "600", "--interval", "600", "--out", str(tmp_path), "--name", "long", "--report"]
    assert main(args) == 0
    scheduled = int(traces.counts(traces.rates(traces.parse_trace(str(csv)))).sum())
    for policy in ("ipa-energy", "static-min-energy"):
        run = load_run(tmp_path / "long" / policy)
        assert sum(r.count for r in run.requests) == scheduled
        assert len(run.requests) <= 42 * 10  # a few rows per 10-minute bucket, not one per request
        assert any("scale mode" in n for n in run.meta.notes)
        s = summarize_run(run)
        assert s.requests == scheduled and s.slo_attainment is not None and is_simulated(s.energy_method)
        assert all(r.nodes is not None and r.nodes >= 1 for r in run.replicas)
    assert len(load_run(tmp_path / "long" / "ipa-energy").decisions) >= 42  # one per 600 s interval
    report = (tmp_path / "long" / "report" / "report.md").read_text()
    assert "long-days.png" in report and (tmp_path / "long" / "report" / "long-days.png").is_file()


@pytest.mark.skipif(not traces.DEFAULT_TRACE.is_file(), reason="the Twitter trace is not in shared/data")
def test_the_whole_twitter_trace_is_a_trace():
    t = traces.parse_trace("full", rate_factor=2.0)
    assert t.kind == "twitter" and t.name == "full" and t.seconds == len(traces.load_trace(damping=1.0))
    assert traces.rates(traces.parse_trace("full", 10, offset_s=5))[0] == traces.load_trace()[5]
    with pytest.raises(ValueError, match="past the end"):
        traces.parse_trace("full", offset_s=10**8)


def test_the_planner_runs_on_the_live_clock_its_phase_its_unix_seconds_and_its_lead(tmp_path):
    """Live, the ingress counts arrivals per Unix second, the planner's first interval starts when its
    actor does, and its history began before Locust's second 0 (sim.fidelity reproduces a live run's)."""
    from planner.trend import trend_rps
    from sim.run import SimConfig, simulate_run

    trace = traces.parse_trace("bursty", 40, rate_factor=0.3, offset_s=370)
    cfg = SimConfig(name="clock", pipeline="classify", policies=["ipa"], trace=trace, drain_s=5,
                    load_start_s=1_000_000.5, planner_start_s=2.3, planner_lead_s=4)
    simulate_run(cfg, "ipa", tmp_path / "ipa")
    run = load_run(tmp_path / "ipa")
    assert run.meta.load_start_s == 1_000_000.5 and run.meta.planner_history_from_s == 1_000_000 - 4
    from sim.fidelity import planner_lead, planner_start
    assert planner_lead(run) == 4 and planner_start(run) == pytest.approx(2.3)  # read back as from a live run
    first = run.decisions[0]
    assert first.time_s - run.meta.load_start_s == pytest.approx(12.3)
    # the history the planner read: 4 s of nothing, then the arrivals per whole Unix second
    sent = np.array([r.sent_s for r in run.requests])
    seconds = np.arange(1_000_000, int(first.time_s))
    counts = np.array([np.sum((sent >= s) & (sent < s + 1)) for s in seconds], dtype=float)
    history = np.concatenate([np.zeros(4), counts])
    assert first.floor_rps == counts[-10:].max()
    assert first.observed_rps == pytest.approx(counts[-10:].mean())
    assert first.planned_rps == pytest.approx(max(first.predicted_rps, first.floor_rps, trend_rps(history, first.horizon_s)))
    # a second run with the trace's own seconds (phase 0) and no lead reads another history
    simulate_run(cfg.model_copy(update={"load_start_s": 1_000_000.0, "planner_lead_s": 0}), "ipa", tmp_path / "ipa0")
    assert load_run(tmp_path / "ipa0").decisions[0].planned_rps != first.planned_rps


def test_scale_mode_steps_whole_seconds_whatever_the_planner_timing(tmp_path):
    """Scale mode's flows move in whole seconds: a fractional planner start or interval (a cluster
    file fitted to a live host) must not stall its clock; its planner starts at second 0."""
    import signal

    from sim.run import SimConfig, simulate_run

    cluster = tmp_path / "host.yaml"
    cluster.write_text("hardware: cpu-amd-epyc-2c\nhost:\n  planner_start_s: 1.6\n  planner_lead_s: 3\n"
                       "available_node_types:\n  local:\n    count: 1\n    min_workers: 1\n"
                       "    resources: {CPU: 2.0, memory: 24000MiB}\n")
    trace = traces.parse_trace("bursty", 60, rate_factor=0.3, offset_s=340)
    cfg = SimConfig(name="scale", pipeline="classify", policies=["ipa-energy"], trace=trace, cluster=cluster,
                    aggregate_s=10, interval_s=2.5, drain_s=5)

    def stalled(*_):
        raise TimeoutError("the scale-mode clock stalled")
    signal.signal(signal.SIGALRM, stalled)
    signal.alarm(120)
    try:
        simulate_run(cfg, "ipa-energy", tmp_path / "run")
    finally:
        signal.alarm(0)
    run = load_run(tmp_path / "run")
    assert run.meta.status == "complete" and run.meta.planner_history_from_s == int(run.meta.load_start_s)
    assert len(run.decisions) >= 20  # every 2.5 s of the 60 s window, at whole seconds

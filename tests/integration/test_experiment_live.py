"""A short live experiment: Locust replays a Twitter slice against two policies; the report builds."""

import json

import pytest
from rich.console import Console

from experiments.report import build_report
from experiments.runner import ExperimentConfig, run_experiment
from experiments.summary import load_run, summarize_run
from loadgen.traces import twitter
from serve_app import control
from workloads import catalog

pytestmark = pytest.mark.integration


def test_short_experiment_records_every_request_and_reports(base_url, tmp_path):
    trace = twitter("bursty", 15, offset_s=385, rate_factor=0.1, seed=7)  # rising from ~1 to ~2.5 req/s
    cfg = ExperimentConfig(name="live", pipeline="classify", policies=["ipa-energy", "static-min-energy"], trace=trace,
                           out=tmp_path, url=base_url, interval_s=4.0, predictor="reactive", max_replicas=1,
                           drain_s=30, settle_s=1.0)
    try:
        exp_dir = run_experiment(cfg, Console(quiet=True))
    finally:
        control.apply_plan(catalog.pipeline("classify").default_plan())
    runs = {p: load_run(exp_dir / p) for p in cfg.policies}
    scheduled = sum(int(line.split(",")[1]) for line in (exp_dir / "ipa-energy" / "load.csv").read_text().splitlines()[1:])
    assert scheduled >= 20
    for policy, run in runs.items():
        s = summarize_run(run)
        assert run.meta.status == "complete" and run.meta.load_start_s > run.meta.started_at
        assert s.requests == scheduled, policy  # every arrival of the trace is in the record
        assert s.failed == 0, [r.error for r in run.requests if r.status != 200][:3]
        assert s.energy_method == "tdp-estimate" and s.energy_j and s.energy_j > 0
        assert s.requests_with_energy > 0 and s.j_per_request_method == "tdp-estimate"
        assert run.replicas and all(r.cost_units > 0 for r in run.replicas[1:])
    assert runs["ipa-energy"].decisions and runs["ipa-energy"].meta.policy_kind == "planner"
    assert not runs["static-min-energy"].decisions
    # the static run keeps one variant, the one with the least J/request
    served = {v for r in runs["static-min-energy"].requests for v in r.variants.values()}
    assert served == {"resnet18-112-mini"}
    # idempotent: a second call keeps complete runs
    before = (exp_dir / "ipa-energy" / "run.json").read_text()
    run_experiment(cfg, Console(quiet=True))
    assert (exp_dir / "ipa-energy" / "run.json").read_text() == before
    report = build_report([exp_dir], tmp_path / "report")
    text = report.read_text()
    assert "| ipa-energy" in text and "| static-min-energy" in text and "not a measurement" in text
    assert json.loads((exp_dir / "ipa-energy" / "summary.json").read_text())["requests"] == scheduled

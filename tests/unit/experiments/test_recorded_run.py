"""The report builds from a real recorded run (tests/fixtures/runs/recorded; see its README.md)."""

import shutil
from pathlib import Path

import pytest

from experiments.report import build_report
from experiments.summary import load_run, summarize_run

RECORDED = Path(__file__).resolve().parents[2] / "fixtures" / "runs" / "recorded"


@pytest.fixture
def recorded(tmp_path) -> Path:
    return Path(shutil.copytree(RECORDED, tmp_path / "recorded"))


def test_recorded_runs_are_complete_and_whole(recorded):
    for policy in ("ipa", "ipa-energy"):
        run = load_run(recorded / policy)
        scheduled = sum(n for _, n in run.load)
        s = summarize_run(run)
        assert s.requests == scheduled > 0  # every arrival of the trace was recorded
        assert run.meta.policy_kind == "planner" and run.decisions
        assert s.energy_method == "tdp-estimate" and s.energy_coverage is not None and s.energy_coverage > 0.95
        assert s.requests_with_energy > 0 and s.accuracy is not None


def test_report_builds_from_the_recorded_run(recorded, tmp_path):
    text = build_report([recorded], tmp_path / "report").read_text()
    assert "| ipa* |" in text and "| ipa-energy* |" in text and "ipa-energy / ipa J/request" in text
    assert "not a measurement" in text
    for png in ("recorded-timeseries.png", "recorded-latency-cdf.png", "recorded-energy-accuracy.png"):
        assert (tmp_path / "report" / png).stat().st_size > 5000
